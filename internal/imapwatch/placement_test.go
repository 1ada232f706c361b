package imapwatch

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/emailqos/emailqosreceiver/internal/steps"
)

// junkServer is a test server with a junk folder holding some user mail:
// one ordinary message and one flagged \Deleted, which only the user may
// expunge.
func junkServer(t *testing.T, folder string) (*testServer, []imap.UID) {
	t.Helper()
	ts := newTestServer(t, serverOpts{})
	if err := ts.user.Create(folder, nil); err != nil {
		t.Fatal(err)
	}
	a, _, _ := ts.appendMsg(folder, []byte("Subject: user's spam\r\n\r\nx\r\n"))
	b, _, _ := ts.appendMsg(folder, []byte("Subject: user's deleted spam\r\n\r\nx\r\n"), imap.FlagDeleted)
	return ts, []imap.UID{a, b}
}

func openJunk(t *testing.T, ts *testServer, method Method, pollEvery time.Duration, junk []string, discover bool) *Session {
	t.Helper()
	o := ts.options(method)
	o.PollInterval, o.JunkFolders, o.DiscoverJunk = pollEvery, junk, discover
	s, err := Open(ctxTimeout(t, time.Minute), o, &steps.Recorder{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close(ctxTimeout(t, 5*time.Second)) })
	return s
}

// appendToLater delivers msg into mailbox after d.
func appendToLater(t *testing.T, ts *testServer, mailbox string, d time.Duration, msg []byte) func() (imap.UID, time.Time, time.Time) {
	var (
		wg            sync.WaitGroup
		u             imap.UID
		before, after time.Time
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		time.Sleep(d)
		before = time.Now()
		data, err := ts.user.Append(mailbox, bytes.NewReader(msg), &imap.AppendOptions{})
		after = time.Now()
		if err != nil {
			t.Error(err)
			return
		}
		u = data.UID
	}()
	t.Cleanup(wg.Wait)
	return func() (imap.UID, time.Time, time.Time) { wg.Wait(); return u, before, after }
}

func TestProbeFoundInJunk(t *testing.T) {
	for _, method := range []Method{MethodIdle, MethodPoll, MethodPrecise} {
		t.Run(string(method), func(t *testing.T) {
			ts, userJunk := junkServer(t, "Junk")
			inboxMail, _, _ := ts.appendMsg("INBOX", []byte("Subject: user's\r\n\r\nx\r\n"), imap.FlagDeleted)
			s := openJunk(t, ts, method, 100*time.Millisecond, nil, true)
			if len(s.junk) != 1 || s.junk[0].name != "Junk" {
				t.Fatalf("junk folders %+v", s.junk)
			}
			token := tokenFor(t)
			// A look-alike in the junk folder: same token, refused by accept.
			ts.appendMsg("Junk", probeMessage(token, "X-Fake: 1\r\n"))
			appended := appendToLater(t, ts, "Junk", 150*time.Millisecond, probeMessage(token, ""))

			before := s.Commands()
			arr, err := s.Wait(ctxTimeout(t, 10*time.Second), token, func(h []byte) bool {
				return !bytes.Contains(h, []byte("X-Fake"))
			})
			if err != nil {
				t.Fatalf("Wait: %v", err)
			}
			uid, appendStart, appendEnd := appended()
			if arr.Placement != PlacementJunk || arr.Folder != "Junk" || arr.UID != uid || arr.Method != MethodPoll {
				t.Fatalf("arrival %+v, want UID %d in Junk by poll", arr, uid)
			}
			checkSeen(t, arr, appendStart, appendEnd)
			if arr.Uncertainty <= 0 {
				t.Fatalf("uncertainty %v: a STATUS poll has a window", arr.Uncertainty)
			}
			// STATUS rounds, one EXAMINE, SEARCH and FETCH: a handful per
			// second of waiting, plus the NOOPs of poll and precise.
			if n := s.Commands() - before; method != MethodPrecise && n > 20 {
				t.Fatalf("%d commands for the wait", n)
			}

			if err := s.DeleteFrom(ctxTimeout(t, 5*time.Second), arr.Folder, arr.UID); err != nil {
				t.Fatalf("DeleteFrom: %v", err)
			}
			left := ts.inspect("Junk")
			if _, ok := left[uid]; ok {
				t.Fatal("probe still in Junk")
			}
			for _, u := range userJunk {
				if _, ok := left[u]; !ok {
					t.Fatalf("user's junk message %d removed", u)
				}
			}
			if len(left) != 3 {
				t.Fatalf("Junk holds %d messages, want the user's 2 and the look-alike", len(left))
			}
			if inbox := ts.inspect("INBOX"); len(inbox) != 1 || inbox[inboxMail] == nil {
				t.Fatalf("INBOX touched: %v", inbox)
			}
			if n := ts.plainExpunges.Load(); n != 0 {
				t.Fatalf("%d plain EXPUNGE sent", n)
			}
			// The watched mailbox is selected again for what follows.
			if _, err := s.FindProbes(ctxTimeout(t, 5*time.Second), nil, 10, func([]byte) bool { return true }); err != nil {
				t.Fatalf("FindProbes after a junk cleanup: %v", err)
			}
			if s.selected != "INBOX" {
				t.Fatalf("selected %q", s.selected)
			}
			// A junk UID is not an inbox UID.
			requireStepErr(t, s.Delete(ctxTimeout(t, 5*time.Second), arr.UID), steps.CodeCleanup, steps.TypeConfig)
		})
	}
}

func TestProbeMovedFromJunk(t *testing.T) {
	ts, _ := junkServer(t, "Spam")
	if err := ts.user.Create("Archive", nil); err != nil {
		t.Fatal(err)
	}
	s := openJunk(t, ts, MethodIdle, 100*time.Millisecond, []string{"Spam"}, false)
	token := tokenFor(t)
	uid, _, _ := ts.appendMsg("Spam", probeMessage(token, ""))
	arr, err := s.Wait(ctxTimeout(t, 10*time.Second), token, nil)
	if err != nil || arr.Placement != PlacementJunk || arr.UID != uid {
		t.Fatalf("Wait: %+v %v", arr, err)
	}
	requireStepErr(t, s.MoveFrom(ctxTimeout(t, 5*time.Second), "Spam", uid, "Spam"), steps.CodeCleanup, steps.TypeConfig)
	if err := s.MoveFrom(ctxTimeout(t, 5*time.Second), "Spam", uid, "Archive"); err != nil {
		t.Fatal(err)
	}
	if len(ts.inspect("Archive")) != 1 || len(ts.inspect("Spam")) != 2 {
		t.Fatal("probe not moved alone")
	}
}

func TestInboxPlacementCost(t *testing.T) {
	cost := func(t *testing.T, junk []string, discover bool) (int, int32, int32) {
		ts, _ := junkServer(t, "Junk")
		// No STATUS round during the wait: the probe is there at once and
		// the next round is 10s away.
		s := openJunk(t, ts, MethodIdle, 10*time.Second, junk, discover)
		token := tokenFor(t)
		uid, _, _ := ts.appendMsg("INBOX", probeMessage(token, ""))
		arr, err := s.Wait(ctxTimeout(t, 5*time.Second), token, nil)
		if err != nil || arr.UID != uid || arr.Placement != PlacementInbox || arr.Folder != "INBOX" {
			t.Fatalf("Wait: %+v %v", arr, err)
		}
		if err := s.DeleteFrom(ctxTimeout(t, 5*time.Second), arr.Folder, arr.UID); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(ctxTimeout(t, 5*time.Second)); err != nil {
			t.Fatal(err)
		}
		return s.Commands(), ts.statuses.Load(), ts.lists.Load()
	}
	off, offStatus, offList := cost(t, []string{}, false)
	named, namedStatus, namedList := cost(t, []string{"Junk"}, false)
	found, foundStatus, foundList := cost(t, nil, true)
	t.Logf("IMAP commands per inbox probe: %d without placement, %d with a named junk folder, %d with discovery", off, named, found)
	if offStatus != 0 || offList != 0 {
		t.Fatalf("placement off: %d STATUS, %d LIST", offStatus, offList)
	}
	if namedStatus != 1 || namedList != 0 || named != off+1 {
		t.Fatalf("named: %d commands (%d STATUS, %d LIST), want %d", named, namedStatus, namedList, off+1)
	}
	if foundStatus != 1 || foundList != 1 || found != off+2 {
		t.Fatalf("discovery: %d commands (%d STATUS, %d LIST), want %d", found, foundStatus, foundList, off+2)
	}
}

func TestJunkDiscoveryByName(t *testing.T) {
	ts := newTestServer(t, serverOpts{})
	for _, n := range []string{"Archive", "spam", "[Gmail]/Spam"} {
		if err := ts.user.Create(n, nil); err != nil {
			t.Fatal(err)
		}
	}
	s := openJunk(t, ts, MethodIdle, time.Second, nil, true)
	var got []string
	for _, f := range s.junk {
		got = append(got, f.name)
	}
	if len(got) != 2 || got[0] != "spam" || got[1] != "[Gmail]/Spam" {
		t.Fatalf("discovered %q", got)
	}
}

func TestJunkFolderMissing(t *testing.T) {
	ts := newTestServer(t, serverOpts{})
	s := openJunk(t, ts, MethodIdle, 100*time.Millisecond, []string{"Nope", "INBOX"}, false)
	if len(s.junk) != 0 {
		t.Fatalf("watching %+v", s.junk)
	}
	if n := ts.statuses.Load(); n != 1 {
		t.Fatalf("%d STATUS: the watched mailbox is never a junk folder, a missing one is asked once", n)
	}
	token := tokenFor(t)
	appendToLater(t, ts, "INBOX", 1200*time.Millisecond, probeMessage(token, ""))
	arr, err := s.Wait(ctxTimeout(t, 10*time.Second), token, nil)
	if err != nil || arr.Placement != PlacementInbox {
		t.Fatalf("Wait: %+v %v", arr, err)
	}
	if n := ts.statuses.Load(); n != 1 {
		t.Fatalf("%d STATUS after the wait", n)
	}
}

func TestJunkFolderVanishes(t *testing.T) {
	ts, _ := junkServer(t, "Junk")
	s := openJunk(t, ts, MethodPoll, 100*time.Millisecond, []string{"Junk"}, false)
	if err := ts.user.Delete("Junk"); err != nil {
		t.Fatal(err)
	}
	token := tokenFor(t)
	appended := appendToLater(t, ts, "INBOX", 1500*time.Millisecond, probeMessage(token, ""))
	arr, err := s.Wait(ctxTimeout(t, 10*time.Second), token, nil)
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	uid, before, after := appended()
	if arr.UID != uid || arr.Placement != PlacementInbox {
		t.Fatalf("arrival %+v", arr)
	}
	checkSeen(t, arr, before, after)
	if len(s.junk) != 0 {
		t.Fatal("a folder STATUS refuses is still watched")
	}
}

// Mail arriving in the junk folder sends the session there and back; the
// watched mailbox's baseline and arrival timing survive the trip.
func TestInboxArrivalAfterJunkExcursion(t *testing.T) {
	for _, method := range []Method{MethodIdle, MethodPoll} {
		t.Run(string(method), func(t *testing.T) {
			ts, _ := junkServer(t, "Junk")
			s := openJunk(t, ts, method, 100*time.Millisecond, []string{"Junk"}, false)
			token := tokenFor(t)
			// Foreign mail in both folders before the first STATUS round,
			// then the probe in INBOX after it.
			ts.appendMsg("Junk", []byte("Subject: more spam\r\n\r\nx\r\n"))
			ts.appendMsg("INBOX", []byte("Subject: ham\r\n\r\nx\r\n"))
			selects := ts.selects.Load()
			appended := appendToLater(t, ts, "INBOX", 1500*time.Millisecond, probeMessage(token, ""))
			arr, err := s.Wait(ctxTimeout(t, 10*time.Second), token, nil)
			if err != nil {
				t.Fatalf("Wait: %v", err)
			}
			uid, before, after := appended()
			if arr.UID != uid || arr.Placement != PlacementInbox {
				t.Fatalf("arrival %+v, want %d", arr, uid)
			}
			checkSeen(t, arr, before, after)
			if ts.selects.Load() == selects {
				t.Fatal("the junk folder was never examined")
			}
		})
	}
}

// When the delivery timeout expires the junk folders are looked at once
// more, so that a probe filed there since the last round is not lost.
func TestJunkLastLookAtDeadline(t *testing.T) {
	ts, _ := junkServer(t, "Junk")
	s := openJunk(t, ts, MethodIdle, 30*time.Second, []string{"Junk"}, false)
	token := tokenFor(t)
	uid, _, _ := ts.appendMsg("Junk", probeMessage(token, ""))
	arr, err := s.Wait(ctxTimeout(t, 300*time.Millisecond), token, nil)
	if err != nil || arr.UID != uid || arr.Placement != PlacementJunk {
		t.Fatalf("Wait: %+v %v", arr, err)
	}
	if err := s.DeleteFrom(ctxTimeout(t, 5*time.Second), arr.Folder, arr.UID); err != nil {
		t.Fatal(err)
	}
}

func TestMissingEverywhere(t *testing.T) {
	ts, _ := junkServer(t, "Junk")
	s := openJunk(t, ts, MethodIdle, 100*time.Millisecond, []string{"Junk"}, false)
	token := tokenFor(t)
	ts.appendMsg("Junk", probeMessage(tokenFor(t), ""))
	_, err := s.Wait(ctxTimeout(t, 1500*time.Millisecond), token, nil)
	requireStepErr(t, err, steps.CodeSearch, steps.TypeNotFound)
	// The session is still usable on the watched mailbox.
	if _, err := s.FindProbes(ctxTimeout(t, 5*time.Second), nil, 10, func([]byte) bool { return true }); err != nil {
		t.Fatal(err)
	}
}
