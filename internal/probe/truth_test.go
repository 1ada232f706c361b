//go:build !race

// Like precision_test.go, these measure timing, which the race detector
// distorts; make precision runs them.

package probe

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/emailqos/emailqosreceiver/internal/imapwatch"
	"github.com/emailqos/emailqosreceiver/internal/mailtest"
	"github.com/emailqos/emailqosreceiver/internal/pop3test"
)

// Issue 17: against servers whose timing misleads a client, every reported
// delivery latency holds the truth within its uncertainty. The truth is
// mailtest's OnVisible instant (taken right after the append) minus the
// instant the probe read the 250 reply; 2ms allow for the server's own
// goroutine switch between the append and that instant.
const truthSlack = 2 * time.Millisecond

// checkTruth runs n probes of tg and checks each against the truth; it
// returns the errors |reported - true|.
func checkTruth(t *testing.T, tg *Target, vis *visibility, n int) (errs []time.Duration, results []Result) {
	t.Helper()
	vis.mu.Lock()
	base := len(vis.at)
	vis.mu.Unlock()
	for i := 1; i <= n; i++ {
		r := Run(context.Background(), tg, nil)
		require.NoError(t, r.Err, "probe %d", i)
		truth := vis.last(t, base+i).Sub(r.AcceptedAt)
		e := r.DeliveryLatency - truth
		if e < 0 {
			e = -e
		}
		assert.LessOrEqual(t, e, r.Uncertainty+truthSlack,
			"probe %d by %s: reported %s ±%s, truth %s", i, r.Method, r.DeliveryLatency, r.Uncertainty, truth)
		assert.GreaterOrEqual(t, r.DeliveryLatency, time.Duration(0))
		errs = append(errs, e)
		results = append(results, r)
	}
	return errs, results
}

// A server that delivers before its 250 reply (maddy): the window starts at
// the end of DATA, and the latency is 0 with an uncertainty that covers the
// whole window, never 0 ± 0.
func TestTruthEarlyExists(t *testing.T) {
	for _, method := range []imapwatch.Method{"auto", "idle", "poll", "precise"} {
		t.Run(string(method), func(t *testing.T) {
			vis := &visibility{}
			srv := startMail(t, mailtest.Options{ReplyAfterDelivery: 30 * time.Millisecond, OnVisible: vis.record})
			a := account(srv, "a", alice, "alice-pw", method)
			_, results := checkTruth(t, target(a, a), vis, 3)
			for _, r := range results {
				assert.True(t, r.BeforeReply, "seen before the 250 reply")
				assert.Zero(t, r.DeliveryLatency)
				assert.GreaterOrEqual(t, r.Uncertainty, 25*time.Millisecond, "the reply came 30ms after the delivery")
			}
		})
	}
}

// A server that holds IDLE notifications (Dovecot's 0.5 s, here 300ms):
// IDLE's window covers the hold; auto, once it has learned where this
// direction's arrivals fall, polls there and is as exact as precise.
func TestTruthLateIdle(t *testing.T) {
	for _, method := range []imapwatch.Method{"idle", "auto"} {
		t.Run(string(method), func(t *testing.T) {
			vis := &visibility{}
			srv := startMail(t, mailtest.Options{IdleHold: 300 * time.Millisecond,
				DeliveryDelay: 40 * time.Millisecond, OnVisible: vis.record})
			a := account(srv, "a", alice, "alice-pw", method)
			tg := target(a, a)
			tg.PollInterval = 2 * time.Second // IDLE is not re-issued during a probe
			errs, results := checkTruth(t, tg, vis, 6)
			if method == "auto" {
				// After the first probe, every arrival falls in the learned
				// dense window.
				for i, r := range results[1:] {
					assert.Equal(t, imapwatch.MethodPrecise, r.Method, "probe %d", i+2)
				}
				assert.Less(t, percentile(errs[1:], 0.5), 10*time.Millisecond)
			} else {
				for _, r := range results {
					assert.Equal(t, imapwatch.MethodIdle, r.Method)
					assert.Greater(t, r.Uncertainty, 100*time.Millisecond, "the 300ms hold is inside the window")
				}
			}
		})
	}
}

// A server whose IDLE never pushes (Cyrus without idled): the arrival shows
// only when IDLE is ended (every PollInterval here), its window is honest,
// and after two such arrivals the IDLE is reported as not pushing; auto then
// polls the mailbox instead of idling.
func TestTruthIdleNeverPushes(t *testing.T) {
	vis := &visibility{}
	srv := startMail(t, mailtest.Options{Personality: mailtest.PersonalityFakeIdle, DeliveryDelay: 20 * time.Millisecond, OnVisible: vis.record})
	a := account(srv, "a", alice, "alice-pw", "idle")
	tg := target(a, a)
	tg.PollInterval = 2500 * time.Millisecond // IDLE re-issued this often
	_, results := checkTruth(t, tg, vis, 2)
	assert.False(t, results[0].IdleNoPush, "one silent arrival is not yet proof")
	assert.True(t, results[1].IdleNoPush, "two silent arrivals and no announcement")

	// The same direction in auto mode no longer idles.
	a.Detection = imapwatch.MethodAuto
	tg.PollInterval = 200 * time.Millisecond
	_, results = checkTruth(t, tg, vis, 1)
	// Polled (densely, where it is expected, or on the poll schedule).
	assert.NotEqual(t, imapwatch.MethodIdle, results[0].Method)
	assert.True(t, results[0].IdleNoPush)
}

// poll and POP3 keep their backoff for a direction's first probe, then poll
// densely where its arrivals fell: the later probes are exact, and no probe
// is clamped to 0 (the window starts at the end of DATA).
func TestTruthPollLearnsWhereArrivalsFall(t *testing.T) {
	const delay = 300 * time.Millisecond
	t.Run("poll", func(t *testing.T) {
		vis := &visibility{}
		srv := startMail(t, mailtest.Options{DeliveryDelay: delay, OnVisible: vis.record})
		a := account(srv, "a", alice, "alice-pw", "poll")
		tg := target(a, a)
		tg.PollInterval = 2 * time.Second
		errs, results := checkTruth(t, tg, vis, 5)
		for _, r := range results {
			assert.Equal(t, imapwatch.MethodPoll, r.Method)
			assert.GreaterOrEqual(t, r.DeliveryLatency, delay/2, "not clamped")
		}
		assert.Less(t, percentile(errs[1:], 0.5), 10*time.Millisecond, "polled every 10ms where arrivals fall")
	})
	t.Run("pop3", func(t *testing.T) {
		pop, err := pop3test.Start(pop3test.Options{Users: map[string]string{alice: "alice-pw"}})
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, pop.Close()) })
		vis := &visibility{}
		srv := startMail(t, mailtest.Options{
			DeliveryDelay: delay,
			OnDeliver: func(rcpt string, msg []byte) error {
				pop.Add(rcpt, msg)
				vis.record(rcpt, time.Now())
				return errDelivered
			},
		})
		a := pop3Account(srv, pop)
		tg := target(a, a)
		tg.PollInterval = 2 * time.Second
		errs, results := checkTruth(t, tg, vis, 5)
		for _, r := range results {
			assert.GreaterOrEqual(t, r.DeliveryLatency, delay/2, "not clamped")
		}
		assert.Less(t, percentile(errs[1:], 0.5), 20*time.Millisecond, "polled every 25ms where arrivals fall")
	})
}
