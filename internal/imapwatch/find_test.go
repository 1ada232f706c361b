package imapwatch

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/emailqos/emailqosreceiver/internal/steps"
)

// ownProbe marks the messages the tests' accept functions take as their own,
// standing in for a verified HMAC.
const ownProbe = "X-Test-Own: yes\r\n"

// tokenBatch: more tokens than the old OR trees held in one search.
const tokenBatch = 32

func acceptOwn(calls *atomic.Int32) func([]byte) bool {
	return func(h []byte) bool {
		if calls != nil {
			calls.Add(1)
		}
		return bytes.Contains(h, []byte(ownProbe))
	}
}

func eqToken(i int) string { return fmt.Sprintf("eqtoken%03dx", i) }

func TestFindProbesByToken(t *testing.T) {
	ts := newTestServer(t, serverOpts{})
	userDeleted, _, _ := ts.appendMsg("INBOX", []byte("Subject: user's\r\n\r\nx\r\n"), imap.FlagDeleted)
	own, _, _ := ts.appendMsg("INBOX", probeMessage(eqToken(1), ownProbe))
	forged, _, _ := ts.appendMsg("INBOX", probeMessage(eqToken(1), ""), imap.FlagSeen)
	superstring, _, _ := ts.appendMsg("INBOX", probeMessage("x"+eqToken(1), ownProbe))
	other, _, _ := ts.appendMsg("INBOX", probeMessage(eqToken(2), ownProbe))
	s := open(t, ts, MethodIdle, nil)
	var rec steps.Recorder
	s.rec = &rec

	uids, err := s.FindProbes(ctxTimeout(t, 5*time.Second), []string{eqToken(1), eqToken(3)}, 10, acceptOwn(nil))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(uids, []imap.UID{own}) {
		t.Fatalf("found %v, want only %d", uids, own)
	}
	// A stranger in the set refuses the whole request.
	for _, u := range []imap.UID{forged, superstring, other, userDeleted} {
		requireStepErr(t, s.DeleteUIDs(ctxTimeout(t, 5*time.Second), []imap.UID{own, u}), steps.CodeCleanup, steps.TypeConfig)
	}
	if _, ok := ts.inspect("INBOX")[own]; !ok {
		t.Fatal("a refused request touched the probe")
	}
	if err := s.DeleteUIDs(ctxTimeout(t, 5*time.Second), uids); err != nil {
		t.Fatal(err)
	}
	left := ts.inspect("INBOX")
	if _, ok := left[own]; ok || len(left) != 4 {
		t.Fatalf("mailbox now %v", left)
	}
	if !slices.Equal(left[userDeleted], []imap.Flag{imap.FlagDeleted}) || !slices.Equal(left[forged], []imap.Flag{imap.FlagSeen}) ||
		len(left[superstring]) != 0 || len(left[other]) != 0 {
		t.Fatalf("flags changed: %v", left)
	}
	if n := ts.plainExpunges.Load(); n != 0 {
		t.Fatalf("%d plain EXPUNGE sent", n)
	}
	if len(rec.Timings()) != 0 {
		t.Fatalf("housekeeping was timed as probe steps: %v", rec.Timings())
	}
}

func TestFindProbesAnyToken(t *testing.T) {
	ts := newTestServer(t, serverOpts{})
	var own []imap.UID
	for i := range 5 {
		u, _, _ := ts.appendMsg("INBOX", probeMessage(eqToken(i), ownProbe))
		own = append(own, u)
	}
	ts.appendMsg("INBOX", probeMessage("xeqnotaprefix", ownProbe))
	ts.appendMsg("INBOX", []byte("Subject: emailqos probe eqsubjectonly\r\n\r\nX-Emailqos-Token: eqinbody\r\n"))
	s := open(t, ts, MethodPoll, nil)

	var calls atomic.Int32
	uids, err := s.FindProbes(ctxTimeout(t, 5*time.Second), nil, 3, acceptOwn(&calls))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(uids, own[:3]) {
		t.Fatalf("found %v, want the three oldest of %v", uids, own)
	}
	if n := calls.Load(); n != 3 {
		t.Fatalf("accept called %d times: only headers carrying a probe token are offered", n)
	}
	uids, err = s.FindProbes(ctxTimeout(t, 5*time.Second), nil, 100, acceptOwn(&calls))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(uids, own) {
		t.Fatalf("found %v, want %v", uids, own)
	}
	if err := s.DeleteUIDs(ctxTimeout(t, 5*time.Second), uids); err != nil {
		t.Fatal(err)
	}
	if left := ts.inspect("INBOX"); len(left) != 2 {
		t.Fatalf("mailbox now %v", left)
	}
}

func TestFindProbesManyTokens(t *testing.T) {
	ts := newTestServer(t, serverOpts{})
	var tokens []string
	var want []imap.UID
	for i := range 2*tokenBatch + 3 {
		tokens = append(tokens, eqToken(i))
		u, _, _ := ts.appendMsg("INBOX", probeMessage(eqToken(i), ownProbe))
		want = append(want, u)
		ts.appendMsg("INBOX", []byte(fmt.Sprintf("Subject: ordinary %d\r\n\r\nx\r\n", i)))
	}
	s := open(t, ts, MethodPoll, nil)
	uids, err := s.FindProbes(ctxTimeout(t, 5*time.Second), tokens, 1000, acceptOwn(nil))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(uids, want) {
		t.Fatalf("found %d of %d", len(uids), len(want))
	}
	// "Probes" does not exist yet: created on the server's TRYCREATE.
	if err := s.MoveUIDs(ctxTimeout(t, 5*time.Second), uids, "Probes"); err != nil {
		t.Fatal(err)
	}
	if n, m := len(ts.inspect("INBOX")), len(ts.inspect("Probes")); n != len(want) || m != len(want) {
		t.Fatalf("INBOX %d, Probes %d", n, m)
	}
}

func TestDeleteUIDsWithoutUIDPlus(t *testing.T) {
	t.Run("move-to-trash", func(t *testing.T) {
		ts := newTestServer(t, serverOpts{caps: imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapMove: {}}})
		if err := ts.user.Create("Trash", nil); err != nil {
			t.Fatal(err)
		}
		flagged, _, _ := ts.appendMsg("INBOX", []byte("Subject: user's\r\n\r\nx\r\n"), imap.FlagDeleted)
		ts.appendMsg("INBOX", probeMessage(eqToken(1), ownProbe))
		ts.appendMsg("INBOX", probeMessage(eqToken(2), ownProbe))
		s := open(t, ts, MethodPoll, nil)
		uids, err := s.FindProbes(ctxTimeout(t, 5*time.Second), nil, 10, acceptOwn(nil))
		if err != nil || len(uids) != 2 {
			t.Fatalf("found %v, %v", uids, err)
		}
		if err := s.DeleteUIDs(ctxTimeout(t, 5*time.Second), uids); err != nil {
			t.Fatal(err)
		}
		if inbox := ts.inspect("INBOX"); len(inbox) != 1 || inbox[flagged] == nil {
			t.Fatalf("inbox now %v", inbox)
		}
		if trash := ts.inspect("Trash"); len(trash) != 2 {
			t.Fatalf("trash now %v", trash)
		}
	})
	t.Run("neither", func(t *testing.T) {
		ts := newTestServer(t, serverOpts{caps: imap.CapSet{imap.CapIMAP4rev1: {}}})
		u, _, _ := ts.appendMsg("INBOX", probeMessage(eqToken(1), ownProbe))
		s := open(t, ts, MethodPoll, nil)
		uids, err := s.FindProbes(ctxTimeout(t, 5*time.Second), nil, 10, acceptOwn(nil))
		if err != nil || !slices.Equal(uids, []imap.UID{u}) {
			t.Fatalf("found %v, %v", uids, err)
		}
		requireStepErr(t, s.DeleteUIDs(ctxTimeout(t, 5*time.Second), uids), steps.CodeCleanup, steps.TypeConfig)
		if flags, ok := ts.inspect("INBOX")[u]; !ok || len(flags) != 0 {
			t.Fatalf("probe touched: %v %v", ok, flags)
		}
		if n := ts.plainExpunges.Load(); n != 0 {
			t.Fatalf("%d plain EXPUNGE sent", n)
		}
	})
}

func TestFindProbesRefusals(t *testing.T) {
	ts := newTestServer(t, serverOpts{})
	ts.appendMsg("INBOX", probeMessage(eqToken(1), ownProbe))
	s := open(t, ts, MethodPoll, nil)
	_, err := s.FindProbes(ctxTimeout(t, 5*time.Second), nil, 10, nil)
	requireStepErr(t, err, steps.CodeSearch, steps.TypeConfig)
	_, err = s.FindProbes(ctxTimeout(t, 5*time.Second), []string{"two words"}, 10, acceptOwn(nil))
	requireStepErr(t, err, steps.CodeSearch, steps.TypeConfig)
	if uids, err := s.FindProbes(ctxTimeout(t, 5*time.Second), []string{}, 10, acceptOwn(nil)); err != nil || len(uids) != 0 {
		t.Fatalf("no tokens found %v, %v", uids, err)
	}
	if err := s.Close(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	_, err = s.FindProbes(ctxTimeout(t, 5*time.Second), nil, 10, acceptOwn(nil))
	requireStepErr(t, err, steps.CodeSearch, steps.TypeConfig)
}

// A connection lost before the housekeeping is re-established (same
// UIDVALIDITY) and the search goes on.
func TestFindProbesReconnects(t *testing.T) {
	ts := newTestServer(t, serverOpts{})
	u, _, _ := ts.appendMsg("INBOX", probeMessage(eqToken(1), ownProbe))
	s := open(t, ts, MethodPoll, nil)
	ts.dropAll()
	// The loss is noticed by the first command, which fails; the next call
	// reconnects.
	if _, err := s.FindProbes(ctxTimeout(t, 5*time.Second), nil, 10, acceptOwn(nil)); err == nil {
		t.Log("the loss was noticed before the search")
	}
	uids, err := s.FindProbes(ctxTimeout(t, 5*time.Second), nil, 10, acceptOwn(nil))
	if err != nil || !slices.Equal(uids, []imap.UID{u}) {
		t.Fatalf("found %v, %v", uids, err)
	}
	if err := s.DeleteUIDs(ctxTimeout(t, 5*time.Second), uids); err != nil {
		t.Fatal(err)
	}
}

// subjectProbe is a probe whose Subject carries its token, as probemsg
// builds them.
func subjectProbe(token string) []byte {
	return []byte("From: sender@example.com\r\nTo: " + testUser + "\r\nSubject: emailqos probe " + token +
		"\r\nX-Emailqos-Token: " + token + "\r\n" + ownProbe + "\r\nbody\r\n")
}

// Housekeeping where header search finds nothing: the first probe found
// teaches the account to search by subject; where every text search is
// refused (BAD), it falls back to a date-window scan.
func TestHousekeepingSearchFallbacks(t *testing.T) {
	t.Run("learned-subject", func(t *testing.T) {
		ts := newTestServer(t, serverOpts{})
		ts.noHeaderSearch.Store(true) // X-Emailqos-Token unsearchable...
		var hint SearchHint
		o := ts.options(MethodPoll)
		o.Search = &hint
		orphan, _, _ := ts.appendMsg("INBOX", subjectProbe(eqToken(1)))
		s, err := Open(ctxTimeout(t, 5*time.Second), o, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close(context.Background())
		// ...but the server does search Subject: let it, for this one.
		ts.noHeaderSearch.Store(false)
		ts.subjectOnly.Store(true)
		token := eqToken(2)
		ts.appendMsg("INBOX", subjectProbe(token))
		if _, err := s.Wait(ctxTimeout(t, 5*time.Second), token, nil); err != nil {
			t.Fatal(err)
		}
		if m := hint.Mode(); m != SearchSubject {
			t.Fatalf("learned %v, want subject", m)
		}
		uids, err := s.FindProbes(ctxTimeout(t, 5*time.Second), nil, 10, acceptOwn(nil))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(uids, orphan) {
			t.Fatalf("found %v, want the orphan %d", uids, orphan)
		}
	})
	t.Run("refused-to-scan", func(t *testing.T) {
		ts := newTestServer(t, serverOpts{})
		ts.badHeaderSearch.Store(true)
		var hint SearchHint
		o := ts.options(MethodPoll)
		o.Search = &hint
		ts.appendMsg("INBOX", []byte("Subject: user's\r\n\r\nx\r\n"))
		orphan, _, _ := ts.appendMsg("INBOX", subjectProbe(eqToken(3)))
		s, err := Open(ctxTimeout(t, 5*time.Second), o, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close(context.Background())
		uids, err := s.FindProbes(ctxTimeout(t, 5*time.Second), []string{eqToken(3)}, 10, acceptOwn(nil))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(uids, []imap.UID{orphan}) {
			t.Fatalf("found %v, want %d", uids, orphan)
		}
		if m := hint.Mode(); m != SearchScan {
			t.Fatalf("mode %v after two refusals, want scan", m)
		}
	})
}
