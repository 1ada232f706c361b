//go:build !race

// The race detector slows every goroutine switch by an unpredictable amount,
// which is what this test measures; it runs without it (make test runs it
// in a step of its own).

package probe

import (
	"context"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/emailqos/emailqosreceiver/internal/imapwatch"
	"github.com/emailqos/emailqosreceiver/internal/mailtest"
)

// visibility records the true instant each delivery became visible, as the
// in-process server reports it right after the append.
type visibility struct {
	mu sync.Mutex
	at []time.Time
}

func (v *visibility) record(_ string, at time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.at = append(v.at, at)
}

// last returns the nth visibility instant. The server records it right
// after the append returns, so a reader woken by the append may finish its
// probe first: wait a little for the record.
func (v *visibility) last(t *testing.T, n int) time.Time {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		v.mu.Lock()
		got := len(v.at)
		if got >= n || time.Now().After(deadline) {
			defer v.mu.Unlock()
			require.Len(t, v.at, n, "one delivery per probe")
			return v.at[n-1]
		}
		v.mu.Unlock()
		time.Sleep(time.Millisecond)
	}
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[int(p*float64(len(s)-1))]
}

// TestDetectionPrecision compares the delivery latency the probe reports with
// the true one, against a server that announces arrivals at once and holds
// each message for a random 5-40ms before it becomes visible.
func TestDetectionPrecision(t *testing.T) {
	tests := []struct {
		method imapwatch.Method
		probes int
	}{
		{"auto", 100},
		{"idle", 100},
		{"poll", 50},
		{"precise", 50},
	}
	for _, tt := range tests {
		t.Run(string(tt.method), func(t *testing.T) {
			vis := &visibility{}
			srv := startMail(t, mailtest.Options{
				OnDeliver: func(string, []byte) error {
					time.Sleep(time.Duration(5+rand.IntN(35)) * time.Millisecond)
					return nil
				},
				OnVisible: vis.record,
			})
			a := account(srv, "a", alice, "alice-pw", tt.method)
			tg := target(a, a)
			tg.PollInterval = 500 * time.Millisecond

			var errs []time.Duration
			var worstOutside time.Duration
			for i := 1; i <= tt.probes; i++ {
				r := Run(context.Background(), tg, nil)
				require.NoError(t, r.Err, "probe %d", i)
				visibleAt := vis.last(t, i)
				truth := visibleAt.Sub(r.AcceptedAt)
				e := r.DeliveryLatency - truth
				if e < 0 {
					e = -e
				}
				errs = append(errs, e)
				// Over polling the true instant must lie within the reported
				// window; 2ms allow for the server's own goroutine switch
				// between the append and the instant it reports.
				if out := e - r.Uncertainty; out > worstOutside {
					worstOutside = out
				}
			}
			median, p99, worst := percentile(errs, 0.5), percentile(errs, 0.99), slices.Max(errs)
			t.Logf("%s: %d probes: |reported - true delivery latency| median %s, p99 %s, worst %s; worst excess over the reported uncertainty %s",
				tt.method, tt.probes, median, p99, worst, worstOutside)
			switch tt.method {
			case "auto":
				// Polled every 10ms where this direction's arrivals are
				// expected, learned from the earlier probes.
				assert.Less(t, median, 10*time.Millisecond)
			}
			// Over every method, IDLE included (its window runs from the
			// end of DATA to the announcement), the truth is inside.
			assert.LessOrEqual(t, worstOutside, 2*time.Millisecond, "the true arrival lies within the reported uncertainty")
		})
	}
}
