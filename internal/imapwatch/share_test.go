package imapwatch

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/emailqos/emailqosreceiver/internal/steps"
)

func openShared(t *testing.T, ts *testServer, method Method, rec *steps.Recorder) *Member {
	t.Helper()
	m, err := OpenShared(ctxTimeout(t, time.Minute), ts.options(method), rec)
	if err != nil {
		t.Fatalf("OpenShared: %v", err)
	}
	return m
}

// A probe whose message the session examined before its wait began (a
// server that delivers before the 250 reply, while another probe's wait
// leads) still gets it, with its window clamped to its own end of DATA;
// the other probe's wait is not disturbed; the members' commands add up
// to the session's; the session logs out with its last member only.
func TestSharedClaimBeforeWait(t *testing.T) {
	ts := newTestServer(t, serverOpts{})
	var rec1, rec2 steps.Recorder
	m1 := openShared(t, ts, MethodPoll, &rec1)
	s := m1.Session()
	m2, err := s.Join(&rec2, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m2.baseline < m1.baseline {
		t.Fatalf("baseline %d below the session's %d", m2.baseline, m1.baseline)
	}

	// m1 waits (and leads) for a probe that never comes.
	done := make(chan error, 1)
	go func() {
		_, err := m1.WaitAfter(ctxTimeout(t, 1500*time.Millisecond), time.Now(), tokenFor(t), nil)
		done <- err
	}()
	token := tokenFor(t)
	dataEnd := time.Now()
	if _, err := ts.user.Append("INBOX", bytes.NewReader(probeMessage(token, "")), &imap.AppendOptions{}); err != nil {
		t.Fatal(err)
	}
	// m1's polls examine it and keep it for m2, whose wait has not begun.
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.share.mu.Lock()
		n := len(s.share.unclaimed)
		s.share.mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the leader never examined the message")
		}
		time.Sleep(5 * time.Millisecond)
	}
	examined := time.Now()
	// Its floor is its own end of DATA, later than m1's: the window the
	// leader observed is clamped to it.
	arr, err := m2.WaitAfter(ctxTimeout(t, 5*time.Second), dataEnd, token, nil)
	if err != nil {
		t.Fatalf("m2: %v", err)
	}
	lo, hi := arr.SeenAt.Add(-arr.Uncertainty), arr.SeenAt.Add(arr.Uncertainty)
	if lo.Before(dataEnd) || hi.After(examined) {
		t.Fatalf("window %v-%v, not inside its end of DATA %v and the examination %v", lo, hi, dataEnd, examined)
	}
	if err := m2.DeleteFrom(context.Background(), arr.Folder, arr.UID); err != nil {
		t.Fatalf("delete of a claimed probe: %v", err)
	}
	if err := <-done; err == nil {
		t.Fatal("m1 found a probe that was never sent")
	} else {
		requireStepErr(t, err, steps.CodeSearch, steps.TypeNotFound)
	}
	if err := m1.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s.closed {
		t.Fatal("logged out while a member remains")
	}
	if _, err := s.Join(&steps.Recorder{}, nil); err != nil {
		t.Fatalf("join while a member remains: %v", err)
	}
	// That third member leaves too; m2 is last and logs out.
	s.share.mu.Lock()
	s.share.members--
	s.share.pendingDone()
	s.share.mu.Unlock()
	if err := m2.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !s.closed {
		t.Fatal("the last member did not log out")
	}
	if _, err := s.Join(&steps.Recorder{}, nil); err != ErrSessionClosed {
		t.Fatalf("join after logout: %v", err)
	}
	if got, want := m1.Commands()+m2.Commands(), s.Commands(); got != want {
		t.Fatalf("members' commands %d + %d, session's %d", m1.Commands(), m2.Commands(), want)
	}
	if m2.Commands() == 0 {
		t.Fatal("m2's delete and logout not counted as its own")
	}
	for _, tm := range rec2.Timings() {
		if tm.Step == steps.IMAPLogin {
			t.Fatal("a member that joined reports a login")
		}
	}
	if !hasTiming(&rec2, steps.IMAPLogout) || hasTiming(&rec1, steps.IMAPLogout) {
		t.Fatal("the logout belongs to the last member")
	}
}

func hasTiming(rec *steps.Recorder, step string) bool {
	for _, tm := range rec.Timings() {
		if tm.Step == step {
			return true
		}
	}
	return false
}
