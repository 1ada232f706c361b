package pop3watch

import (
	"math/rand/v2"
	"sync/atomic"
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
// last authentication line and its +OK, or, as Dovecot does, at the first
// command after it; a slow login (here 40ms) must not push the delivery
// outside the reported window, wherever the server takes its snapshot.
func TestArrivalWindowHoldsSnapshot(t *testing.T) {
	for _, tc := range []struct {
		name  string
		first bool
		lazy  bool
	}{
		{"snapshot at +OK", false, false},
		{"snapshot at PASS", true, false},
		{"snapshot at the first command (Dovecot)", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, pop3test.Options{AuthDelay: 40 * time.Millisecond, SnapshotFirst: tc.first, SnapshotLazy: tc.lazy})
			snapshotErrors(t, e, 6)
		})
	}
}

// Dovecot 2.3 lists a message delivered after its +OK to PASS, in the UIDL
// that follows: the window must reach the UIDL reply. Here the message is
// added exactly then, as the server reads the first poll's UIDL.
func TestArrivalWindowLazySnapshot(t *testing.T) {
	var (
		e             *env
		armed         atomic.Bool
		raw           []byte
		before, after time.Time
	)
	e = newEnv(t, pop3test.Options{SnapshotLazy: true, OnCommand: func(verb, _ string) {
		if verb == "UIDL" && armed.CompareAndSwap(true, false) {
			before = time.Now()
			e.srv.Add(testUser, raw)
			after = time.Now()
		}
	}})
	s := openSession(t, e.options(transport.None), nil)
	p, msg := e.probe(t, e.key)
	raw = msg
	floor := time.Now()
	armed.Store(true)
	arr, err := s.WaitAfter(ctxTimeout(t, 5*time.Second), floor, p.Token, e.accept(p, nil))
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if armed.Load() {
		t.Fatal("the probe was not added by the poll's UIDL")
	}
	checkWindow(t, arr, before, after)
}
