package imapwatch

import (
	"slices"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/emailqos/emailqosreceiver/internal/steps"
)

func TestFindProbesInJunk(t *testing.T) {
	ts, user := junkServer(t, "Junk")
	own, _, _ := ts.appendMsg("Junk", probeMessage(eqToken(1), ownProbe))
	forged, _, _ := ts.appendMsg("Junk", probeMessage(eqToken(2), ""), imap.FlagSeen)
	inboxOwn, _, _ := ts.appendMsg("INBOX", probeMessage(eqToken(3), ownProbe))
	s := openJunk(t, ts, MethodPoll, time.Minute, []string{"Junk"}, false)
	var rec steps.Recorder
	s.rec = &rec
	if got := s.JunkFolders(); !slices.Equal(got, []string{"Junk"}) {
		t.Fatalf("JunkFolders = %v", got)
	}

	_, err := s.FindProbesIn(ctxTimeout(t, 5*time.Second), "Trash", nil, 10, acceptOwn(nil))
	requireStepErr(t, err, steps.CodeSearch, steps.TypeConfig)
	uids, err := s.FindProbesIn(ctxTimeout(t, 5*time.Second), "Junk", nil, 10, acceptOwn(nil))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(uids, []imap.UID{own}) {
		t.Fatalf("found %v, want only %d", uids, own)
	}
	// Found in junk: removable from junk only, and only with no stranger.
	requireStepErr(t, s.DeleteUIDs(ctxTimeout(t, 5*time.Second), uids), steps.CodeCleanup, steps.TypeConfig)
	for _, u := range append([]imap.UID{forged}, user...) {
		requireStepErr(t, s.DeleteUIDsFrom(ctxTimeout(t, 5*time.Second), "Junk", []imap.UID{own, u}), steps.CodeCleanup, steps.TypeConfig)
	}
	if len(ts.inspect("Junk")) != 4 || len(ts.inspect("INBOX")) != 1 {
		t.Fatal("a refused request touched a message")
	}
	if err := s.DeleteUIDsFrom(ctxTimeout(t, 5*time.Second), "Junk", uids); err != nil {
		t.Fatal(err)
	}
	left := ts.inspect("Junk")
	if _, ok := left[own]; ok || len(left) != 3 {
		t.Fatalf("junk now %v", left)
	}
	if len(left[user[0]]) != 0 || !slices.Equal(left[user[1]], []imap.Flag{imap.FlagDeleted}) || !slices.Equal(left[forged], []imap.Flag{imap.FlagSeen}) {
		t.Fatalf("flags changed: %v", left)
	}

	// The watched mailbox is selected again for its own search.
	uids, err = s.FindProbes(ctxTimeout(t, 5*time.Second), nil, 10, acceptOwn(nil))
	if err != nil || !slices.Equal(uids, []imap.UID{inboxOwn}) {
		t.Fatalf("FindProbes after junk: %v, %v", uids, err)
	}
	if n := ts.plainExpunges.Load(); n != 0 {
		t.Fatalf("%d plain EXPUNGE sent", n)
	}
	if len(rec.Timings()) != 0 {
		t.Fatalf("housekeeping was timed as probe steps: %v", rec.Timings())
	}
}
