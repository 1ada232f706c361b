package imapwatch

import (
	"context"
	"testing"
	"time"

	"github.com/emailqos/emailqosreceiver/internal/learn"
)

// Issue 17: auto starts no IDLE that its dense polls would end within
// minIdleLead (a direction not learned yet, or one whose arrivals come at
// once), and still idles before a dense window that starts later.
func TestAutoIdlesOnlyWhenWorthIt(t *testing.T) {
	ts := newTestServer(t, serverOpts{})
	for _, tc := range []struct {
		name     string
		lo, hi   time.Duration // learned arrivals; 0, 0: none
		wantIdle bool
	}{
		{"not learned", 0, 0, false},
		{"arrivals at once", 2 * time.Millisecond, 5 * time.Millisecond, false},
		{"arrivals after 1.5s", 1500 * time.Millisecond, 1600 * time.Millisecond, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := ts.options(MethodAuto)
			opts.Learner = &learn.Learner{}
			if tc.hi > 0 {
				opts.Learner.Observe(tc.lo, tc.hi)
			}
			s, err := Open(ctxTimeout(t, time.Minute), opts, nil)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer s.Close(context.Background())
			if idling := s.idle != nil; idling != tc.wantIdle {
				t.Fatalf("IDLE running after Open: %v, want %v", idling, tc.wantIdle)
			}
		})
	}
}

// With the probe there at once, auto costs what precise costs: no IDLE
// started before the send and ended by the first dense poll.
func TestAutoCommandsAtOnceLikePrecise(t *testing.T) {
	ts := newTestServer(t, serverOpts{})
	cost := func(method Method) int {
		s := open(t, ts, method, nil)
		token := tokenFor(t)
		ts.appendMsg("INBOX", probeMessage(token, ""))
		if _, err := s.WaitAfter(ctxTimeout(t, 5*time.Second), time.Now(), token, nil); err != nil {
			t.Fatalf("%s: Wait: %v", method, err)
		}
		if err := s.Close(ctxTimeout(t, 5*time.Second)); err != nil {
			t.Fatal(err)
		}
		return s.Commands()
	}
	auto, precise := cost(MethodAuto), cost(MethodPrecise)
	t.Logf("commands: auto %d, precise %d", auto, precise)
	if auto > precise {
		t.Fatalf("auto sent %d commands, precise %d", auto, precise)
	}
}
