package pop3watch

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/emailqos/emailqosreceiver/internal/learn"
	"github.com/emailqos/emailqosreceiver/internal/pop3test"
	"github.com/emailqos/emailqosreceiver/internal/transport"
)

// snapshotErrors runs n waits against e, each for a probe delivered at a
// known instant 60-140ms after the end of its (notional) DATA, on a
// direction whose arrivals were learned there, so that the polls are dense.
// Every reported window must hold the delivery; it returns the signed
// errors (reported - delivered).
func snapshotErrors(t *testing.T, e *env, n int) []time.Duration {
	t.Helper()
	opts := e.options(transport.None)
	opts.Learner = &learn.Learner{}
	opts.Learner.Observe(60*time.Millisecond, 140*time.Millisecond)
	var errs []time.Duration
	for i := 0; i < n; i++ {
		s := openSession(t, opts, nil)
		p, raw := e.probe(t, e.key)
		floor := time.Now()
		delivered := e.addLater(t, 60*time.Millisecond+rand.N(80*time.Millisecond), raw)
		arr, err := s.WaitAfter(ctxTimeout(t, 5*time.Second), floor, p.Token, e.accept(p, nil))
		if err != nil {
			t.Fatalf("probe %d: Wait: %v", i, err)
		}
		before, after := delivered()
		checkWindow(t, arr, before, after)
		errs = append(errs, arr.SeenAt.Sub(before.Add(after.Sub(before)/2)))
		if err := s.Close(ctxTimeout(t, 5*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	return errs
}

// Issue 17: every POP3 session sees the maildrop as it was when the session
// entered the TRANSACTION state (RFC 1939 section 8), anywhere between the
// last authentication line and its +OK; a slow login (here 40ms) must not
// push the delivery outside the reported window, wherever the server takes
// its snapshot.
func TestArrivalWindowHoldsSnapshot(t *testing.T) {
	for _, tc := range []struct {
		name  string
		first bool
	}{
		{"snapshot at +OK", false},
		{"snapshot at PASS", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, pop3test.Options{AuthDelay: 40 * time.Millisecond, SnapshotFirst: tc.first})
			snapshotErrors(t, e, 6)
		})
	}
}
