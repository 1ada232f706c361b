package imapwatch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"go.uber.org/goleak"

	"github.com/emailqos/emailqosreceiver/internal/faultnet"
	"github.com/emailqos/emailqosreceiver/internal/saslx"
	"github.com/emailqos/emailqosreceiver/internal/steps"
	"github.com/emailqos/emailqosreceiver/internal/transport"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func requireStepErr(t *testing.T, err error, code int, typ string) *steps.Error {
	t.Helper()
	var se *steps.Error
	if !errors.As(err, &se) {
		t.Fatalf("error %v (%T) is not a *steps.Error", err, err)
	}
	if se.Code != code || se.Type != typ {
		t.Fatalf("got code %d type %q (%v), want code %d type %q", se.Code, se.Type, se, code, typ)
	}
	return se
}

func open(t *testing.T, ts *testServer, method Method, rec *steps.Recorder) *Session {
	t.Helper()
	s, err := Open(ctxTimeout(t, time.Minute), ts.options(method), rec)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

// appendLater delivers msg after d, as the MTA would while Wait runs.
func appendLater(t *testing.T, ts *testServer, d time.Duration, msg []byte) (uid func() (imap.UID, time.Time, time.Time), wait func()) {
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
		data, err := ts.user.Append("INBOX", bytes.NewReader(msg), &imap.AppendOptions{})
		after = time.Now()
		if err != nil {
			t.Error(err)
			return
		}
		u = data.UID
	}()
	t.Cleanup(wg.Wait)
	return func() (imap.UID, time.Time, time.Time) { wg.Wait(); return u, before, after }, wg.Wait
}

// checkSeen checks an arrival against the append that happened between
// before and after: IDLE within a few ms of it, a poll window covering it.
func checkSeen(t *testing.T, arr Arrival, before, after time.Time) {
	t.Helper()
	// IDLE's window ends at the announcement, which this server sends at
	// once; it starts at the last check, since the server's delay in
	// announcing is not the client's to know (issue 17).
	if hi := arr.SeenAt.Add(arr.Uncertainty); arr.Method == MethodIdle && hi.Sub(after) > 25*time.Millisecond {
		t.Fatalf("IDLE saw it %v after the append (±%v)", arr.SeenAt.Sub(after), arr.Uncertainty)
	}
	if lo, hi := arr.SeenAt.Add(-arr.Uncertainty), arr.SeenAt.Add(arr.Uncertainty); hi.Before(before) || lo.After(after) {
		t.Fatalf("window [%v, %v] misses the append [%v, %v]", lo, hi, before, after)
	}
}

func TestFindsProbe(t *testing.T) {
	for _, tc := range []struct {
		name     string
		method   Method
		security transport.Security
		want     Method
	}{
		// auto idles, but polls densely (precise) where arrivals are
		// expected: with no history, the first 2s after the send.
		{"auto", MethodAuto, transport.None, MethodPrecise},
		{"idle-tls", MethodIdle, transport.TLS, MethodIdle},
		{"idle-starttls", MethodIdle, transport.STARTTLS, MethodIdle},
		{"poll", MethodPoll, transport.None, MethodPoll},
		{"precise", MethodPrecise, transport.None, MethodPrecise},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t, serverOpts{security: tc.security})
			var rec steps.Recorder
			s := open(t, ts, tc.method, &rec)
			if s.method != tc.want && !(tc.method == MethodAuto && s.method == MethodIdle) {
				t.Fatalf("method resolved to %q, want %q", s.method, tc.want)
			}
			token := tokenFor(t)
			delay := time.Duration(0)
			if tc.want != MethodIdle && tc.method != MethodAuto {
				delay = 150 * time.Millisecond // into the thinner part of the schedule
			}
			appended, _ := appendLater(t, ts, delay, probeMessage(token, ""))

			arr, err := s.Wait(ctxTimeout(t, 5*time.Second), token, func(h []byte) bool {
				return bytes.Contains(h, []byte("Subject: emailqos probe"))
			})
			if err != nil {
				t.Fatalf("Wait: %v", err)
			}
			uid, before, after := appended()
			if arr.UID != uid || arr.Method != tc.want {
				t.Fatalf("got UID %d by %q, want %d by %q", arr.UID, arr.Method, uid, tc.want)
			}
			if !bytes.Contains(arr.Header, []byte("X-Emailqos-Token: "+token)) {
				t.Fatalf("header not returned: %q", arr.Header)
			}
			checkSeen(t, arr, before, after)
			if tc.want != MethodIdle && (arr.Uncertainty <= 0 || arr.Uncertainty > s.opts.PollInterval) {
				t.Fatalf("poll uncertainty %v out of (0, %v]", arr.Uncertainty, s.opts.PollInterval)
			}
			if flags := ts.inspect("INBOX")[uid]; len(flags) != 0 {
				t.Fatalf("probe flags changed to %v", flags)
			}
			timings := map[string]bool{}
			for _, tm := range rec.Timings() {
				timings[tm.Step] = true
			}
			for _, step := range []string{steps.IMAPConnect, steps.IMAPLogin, steps.IMAPSelect, steps.DeliveryWait, steps.IMAPSearch, steps.IMAPFetch} {
				if !timings[step] {
					t.Errorf("step %s not recorded", step)
				}
			}
			if err := s.Delete(ctxTimeout(t, 5*time.Second), arr.UID); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			if err := s.Close(ctxTimeout(t, 5*time.Second)); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if _, ok := ts.inspect("INBOX")[uid]; ok {
				t.Fatal("probe not deleted")
			}
		})
	}
}

func TestIgnoresMessagesBelowBaseline(t *testing.T) {
	ts := newTestServer(t, serverOpts{})
	token := tokenFor(t)
	old, _, _ := ts.appendMsg("INBOX", probeMessage(token, ""))
	s := open(t, ts, MethodAuto, nil)
	ts.appendMsg("INBOX", []byte("Subject: unrelated\r\n\r\nhello\r\n"))

	start := time.Now()
	_, err := s.Wait(ctxTimeout(t, 300*time.Millisecond), token, nil)
	requireStepErr(t, err, steps.CodeSearch, steps.TypeNotFound)
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Wait returned after %v", d)
	}

	uid, _, _ := ts.appendMsg("INBOX", probeMessage(token, ""))
	arr, err := s.Wait(ctxTimeout(t, 5*time.Second), token, nil)
	if err != nil {
		t.Fatal(err)
	}
	if arr.UID != uid || arr.UID == old {
		t.Fatalf("found UID %d, want %d (old probe %d)", arr.UID, uid, old)
	}
}

func TestCandidatesEnforceBaseline(t *testing.T) {
	// "UID 5:*" on a mailbox whose highest UID is 3 matches UID 3.
	data := &imap.SearchData{All: imap.UIDSet{{Start: 3, Stop: 5}, {Start: 9, Stop: 9}}}
	got, more := candidates(data, 5, map[imap.UID]struct{}{9: {}}, 10)
	if len(got) != 1 || got[0] != 5 || more {
		t.Fatalf("got %v %v", got, more)
	}
	got, more = candidates(&imap.SearchData{All: imap.UIDSet{{Start: 1, Stop: 100}}}, 1, nil, 3)
	if len(got) != 3 || !more {
		t.Fatalf("got %v %v", got, more)
	}
	if got, _ := candidates(&imap.SearchData{All: imap.UIDSet{{Start: 4294967290, Stop: 4294967295}}}, 1, nil, 100); len(got) != 6 {
		t.Fatalf("got %v", got)
	}
}

func TestSkipsLookalikes(t *testing.T) {
	ts := newTestServer(t, serverOpts{})
	token := tokenFor(t)
	s := open(t, ts, MethodIdle, nil)
	lookalike, _, _ := ts.appendMsg("INBOX", probeMessage(token, "X-Lookalike: yes\r\n"))
	longer, _, _ := ts.appendMsg("INBOX", probeMessage(token+"-longer", ""))
	probe, _, _ := ts.appendMsg("INBOX", probeMessage(token, ""))

	var mu sync.Mutex
	calls := map[string]int{}
	accept := func(h []byte) bool {
		mu.Lock()
		defer mu.Unlock()
		look := bytes.Contains(h, []byte("X-Lookalike"))
		calls[map[bool]string{true: "lookalike", false: "probe"}[look]]++
		return !look
	}
	arr, err := s.Wait(ctxTimeout(t, 5*time.Second), token, accept)
	if err != nil {
		t.Fatal(err)
	}
	if arr.UID != probe {
		t.Fatalf("found %d, want %d", arr.UID, probe)
	}
	if calls["lookalike"] != 1 || calls["probe"] != 1 {
		t.Fatalf("accept calls %v", calls)
	}
	err = s.Delete(ctxTimeout(t, 5*time.Second), lookalike)
	requireStepErr(t, err, steps.CodeCleanup, steps.TypeConfig)
	if err := s.Delete(ctxTimeout(t, 5*time.Second), probe); err != nil {
		t.Fatal(err)
	}
	left := ts.inspect("INBOX")
	for _, uid := range []imap.UID{lookalike, longer} {
		flags, ok := left[uid]
		if !ok || len(flags) != 0 {
			t.Fatalf("look-alike %d touched: present %v flags %v", uid, ok, flags)
		}
	}
}

func TestAutoFallsBackToPoll(t *testing.T) {
	ts := newTestServer(t, serverOpts{hideIdle: true})
	s := open(t, ts, MethodAuto, nil)
	if s.method != MethodPoll {
		t.Fatalf("method %q, want poll", s.method)
	}
	_, err := Open(ctxTimeout(t, 5*time.Second), ts.options(MethodIdle), nil)
	requireStepErr(t, err, steps.CodeMailboxConnect, steps.TypeConfig)

	token := tokenFor(t)
	appendLater(t, ts, 50*time.Millisecond, probeMessage(token, ""))
	arr, err := s.Wait(ctxTimeout(t, 5*time.Second), token, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Inside auto's dense window (2s with no history): a precise poll.
	if arr.Method != MethodPrecise {
		t.Fatalf("seen by %q", arr.Method)
	}
}

func TestWaitDeadline(t *testing.T) {
	for _, m := range []Method{MethodIdle, MethodPoll} {
		t.Run(string(m), func(t *testing.T) {
			ts := newTestServer(t, serverOpts{})
			s := open(t, ts, m, nil)
			start := time.Now()
			_, err := s.Wait(ctxTimeout(t, 200*time.Millisecond), tokenFor(t), nil)
			requireStepErr(t, err, steps.CodeSearch, steps.TypeNotFound)
			if d := time.Since(start); d < 190*time.Millisecond || d > 400*time.Millisecond {
				t.Fatalf("Wait returned after %v", d)
			}

			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			_, err = s.Wait(ctx, tokenFor(t), nil)
			requireStepErr(t, err, steps.CodeSearch, steps.TypeCanceled)

			// The session is still usable after a deadline.
			if err := s.Close(ctxTimeout(t, 5*time.Second)); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(ctxTimeout(t, 5*time.Second)); err != nil {
				t.Fatalf("second Close: %v", err)
			}
		})
	}
}

func TestBadPassword(t *testing.T) {
	ts := newTestServer(t, serverOpts{security: transport.TLS})
	opts := ts.options(MethodAuto)
	opts.Password = "wrong-" + testPassword
	_, err := Open(ctxTimeout(t, 5*time.Second), opts, nil)
	requireStepErr(t, err, steps.CodeMailboxConnect, steps.TypeAuth)
	if strings.Contains(err.Error(), opts.Password) {
		t.Fatalf("password in error %q", err)
	}
}

func TestOAuthBearerLogin(t *testing.T) {
	const good = "ya29.good-token"
	for _, tc := range []struct {
		name     string
		token    string
		tokenErr error
		wantType string
	}{
		{"valid token", good, nil, ""},
		{"token refused", "ya29.revoked", nil, steps.TypeAuth},
		{"token endpoint down", "", errors.New("down"), steps.TypeTokenUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t, serverOpts{security: transport.TLS, bearer: good})
			opts := ts.options(MethodPoll)
			opts.Password = ""
			opts.Token = func(context.Context) (string, error) { return tc.token, tc.tokenErr }
			s, err := Open(ctxTimeout(t, 5*time.Second), opts, nil)
			if tc.wantType == "" {
				if err != nil {
					t.Fatal(err)
				}
				if err := s.Close(context.Background()); err != nil {
					t.Fatal(err)
				}
				return
			}
			requireStepErr(t, err, steps.CodeMailboxConnect, tc.wantType)
			if strings.Contains(err.Error(), "ya29.revoked") {
				t.Fatalf("token in error %q", err)
			}
		})
	}
}

func TestRefusesPlaintextCredentials(t *testing.T) {
	ts := newTestServer(t, serverOpts{})
	opts := ts.options(MethodAuto)
	opts.AllowPlaintextAuth = false
	_, err := Open(ctxTimeout(t, 5*time.Second), opts, nil)
	requireStepErr(t, err, steps.CodeMailboxConnect, steps.TypeAuth)
	if n := ts.logins.Load(); n != 0 {
		t.Fatalf("%d LOGIN sent", n)
	}
}

func TestSTARTTLSNotOffered(t *testing.T) {
	ts := newTestServer(t, serverOpts{security: transport.STARTTLS, noStartTLS: true})
	_, err := Open(ctxTimeout(t, 5*time.Second), ts.options(MethodAuto), nil)
	se := requireStepErr(t, err, steps.CodeMailboxConnect, steps.TypeTLS)
	if se.Step != steps.IMAPTLS {
		t.Fatalf("step %q", se.Step)
	}
	if n := ts.logins.Load(); n != 0 {
		t.Fatalf("%d LOGIN sent in clear", n)
	}
}

func TestTLSUntrustedCertificate(t *testing.T) {
	ts := newTestServer(t, serverOpts{security: transport.TLS})
	opts := ts.options(MethodAuto)
	opts.Endpoint.TLSConfig = nil // system roots do not know the test CA
	_, err := Open(ctxTimeout(t, 5*time.Second), opts, nil)
	requireStepErr(t, err, steps.CodeMailboxConnect, steps.TypeTLS)
}

func TestBlackHole(t *testing.T) {
	for _, sec := range []transport.Security{transport.None, transport.STARTTLS, transport.TLS} {
		t.Run(string(sec), func(t *testing.T) {
			addr := faultnet.BlackHole(t)
			opts := Options{Endpoint: transport.Endpoint{Address: addr, Security: sec}, Credentials: saslx.Credentials{Username: "u", Password: "p"}, AllowPlaintextAuth: true}
			start := time.Now()
			_, err := Open(ctxTimeout(t, 200*time.Millisecond), opts, nil)
			requireStepErr(t, err, steps.CodeMailboxConnect, steps.TypeTimeout)
			if d := time.Since(start); d > 500*time.Millisecond {
				t.Fatalf("Open returned after %v", d)
			}
		})
	}
}

func TestReconnect(t *testing.T) {
	for _, m := range []Method{MethodIdle, MethodPoll} {
		t.Run(string(m), func(t *testing.T) {
			ts := newTestServer(t, serverOpts{})
			s := open(t, ts, m, nil)
			token := tokenFor(t)
			go func() {
				time.Sleep(100 * time.Millisecond)
				ts.dropAll()
			}()
			appended, _ := appendLater(t, ts, 200*time.Millisecond, probeMessage(token, ""))
			arr, err := s.Wait(ctxTimeout(t, 5*time.Second), token, nil)
			if err != nil {
				t.Fatal(err)
			}
			uid, before, after := appended()
			if arr.UID != uid {
				t.Fatalf("found %d, want %d", arr.UID, uid)
			}
			checkSeen(t, arr, before, after)
			if n := ts.logins.Load(); n != 2 {
				t.Fatalf("%d logins, want 2", n)
			}
			if err := s.Delete(ctxTimeout(t, 5*time.Second), arr.UID); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestReconnectFails(t *testing.T) {
	ts := newTestServer(t, serverOpts{})
	s := open(t, ts, MethodIdle, nil)
	go func() {
		time.Sleep(50 * time.Millisecond)
		_ = ts.srv.Close()
		ts.dropAll()
	}()
	_, err := s.Wait(ctxTimeout(t, 5*time.Second), tokenFor(t), nil)
	requireStepErr(t, err, steps.CodeMailboxConnect, steps.TypeConnect)
	if err := s.Close(ctxTimeout(t, time.Second)); err != nil {
		t.Fatalf("Close after failure: %v", err)
	}
}

func TestDelayedSearchHits(t *testing.T) {
	ts := newTestServer(t, serverOpts{})
	s := open(t, ts, MethodIdle, nil)
	token := tokenFor(t)
	ts.hideHits.Store(true)
	uid, before, after := ts.appendMsg("INBOX", probeMessage(token, ""))
	time.AfterFunc(300*time.Millisecond, func() { ts.hideHits.Store(false) })
	arr, err := s.Wait(ctxTimeout(t, 5*time.Second), token, nil)
	if err != nil {
		t.Fatal(err)
	}
	if arr.UID != uid || arr.Method != MethodIdle {
		t.Fatalf("got %d by %q", arr.UID, arr.Method)
	}
	// Visible when EXISTS came, not when the index caught up.
	if arr.SeenAt.Before(before) || arr.SeenAt.Sub(after) > 25*time.Millisecond {
		t.Fatalf("SeenAt %v after the append", arr.SeenAt.Sub(after))
	}
}

func TestIdleRefresh(t *testing.T) {
	ts := newTestServer(t, serverOpts{})
	s := open(t, ts, MethodIdle, nil)
	s.idleRefresh = 20 * time.Millisecond
	before := s.Commands()
	token := tokenFor(t)
	appended, _ := appendLater(t, ts, 200*time.Millisecond, probeMessage(token, ""))
	arr, err := s.Wait(ctxTimeout(t, 5*time.Second), token, nil)
	if err != nil {
		t.Fatal(err)
	}
	uid, appendStart, appendEnd := appended()
	if arr.UID != uid {
		t.Fatalf("found %d, want %d", arr.UID, uid)
	}
	// Idle, or poll when it landed while IDLE was being re-issued.
	checkSeen(t, arr, appendStart, appendEnd)
	// SEARCH and FETCH, plus IDLE re-issued about every 20ms.
	if n := s.Commands() - before; n < 5 {
		t.Fatalf("only %d commands: IDLE not re-issued", n)
	}
}

func TestIdleNeverAnnounces(t *testing.T) {
	// The IDLE refresh (every PollInterval) is the safety net: the answer to
	// DONE reports the message, a command response, so it carries a window.
	ts := newTestServer(t, serverOpts{silentIdle: true})
	s := open(t, ts, MethodIdle, nil)
	token := tokenFor(t)
	appended, _ := appendLater(t, ts, 30*time.Millisecond, probeMessage(token, ""))
	arr, err := s.Wait(ctxTimeout(t, 5*time.Second), token, nil)
	if err != nil {
		t.Fatal(err)
	}
	uid, before, after := appended()
	if arr.UID != uid || arr.Method != MethodPoll {
		t.Fatalf("got %d by %q", arr.UID, arr.Method)
	}
	checkSeen(t, arr, before, after)
	if arr.Uncertainty > s.opts.PollInterval {
		t.Fatalf("uncertainty %v", arr.Uncertainty)
	}
}

func TestDeleteKeepsUserDeletedMessages(t *testing.T) {
	ts := newTestServer(t, serverOpts{})
	flagged, _, _ := ts.appendMsg("INBOX", []byte("Subject: user's\r\n\r\nx\r\n"), imap.FlagDeleted)
	s := open(t, ts, MethodAuto, nil)
	token := tokenFor(t)
	uid, _, _ := ts.appendMsg("INBOX", probeMessage(token, ""))
	flagged2, _, _ := ts.appendMsg("INBOX", []byte("Subject: user's too\r\n\r\nx\r\n"), imap.FlagDeleted)
	arr, err := s.Wait(ctxTimeout(t, 5*time.Second), token, nil)
	if err != nil {
		t.Fatal(err)
	}
	var rec steps.Recorder
	s.rec = &rec
	if err := s.Delete(ctxTimeout(t, 5*time.Second), arr.UID); err != nil {
		t.Fatal(err)
	}
	if len(rec.Timings()) != 1 || rec.Timings()[0].Step != steps.IMAPDelete {
		t.Fatalf("timings %v", rec.Timings())
	}
	left := ts.inspect("INBOX")
	if _, ok := left[uid]; ok {
		t.Fatal("probe still there")
	}
	for _, u := range []imap.UID{flagged, flagged2} {
		if _, ok := left[u]; !ok {
			t.Fatalf("user's \\Deleted message %d expunged", u)
		}
	}
	if n := ts.plainExpunges.Load(); n != 0 {
		t.Fatalf("%d plain EXPUNGE sent", n)
	}
	// Deleted: no longer ours to touch.
	requireStepErr(t, s.Delete(ctxTimeout(t, 5*time.Second), arr.UID), steps.CodeCleanup, steps.TypeConfig)
}

func TestDeleteWithoutUIDPlus(t *testing.T) {
	t.Run("move-to-trash", func(t *testing.T) {
		ts := newTestServer(t, serverOpts{caps: imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapMove: {}}})
		if err := ts.user.Create("Trash", nil); err != nil {
			t.Fatal(err)
		}
		flagged, _, _ := ts.appendMsg("INBOX", []byte("Subject: user's\r\n\r\nx\r\n"), imap.FlagDeleted)
		s := open(t, ts, MethodAuto, nil)
		token := tokenFor(t)
		ts.appendMsg("INBOX", probeMessage(token, ""))
		arr, err := s.Wait(ctxTimeout(t, 5*time.Second), token, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Delete(ctxTimeout(t, 5*time.Second), arr.UID); err != nil {
			t.Fatal(err)
		}
		inbox := ts.inspect("INBOX")
		if _, ok := inbox[arr.UID]; ok || len(inbox) != 1 || inbox[flagged] == nil {
			t.Fatalf("inbox now %v", inbox)
		}
		if trash := ts.inspect("Trash"); len(trash) != 1 {
			t.Fatalf("trash now %v", trash)
		}
	})
	t.Run("neither", func(t *testing.T) {
		ts := newTestServer(t, serverOpts{caps: imap.CapSet{imap.CapIMAP4rev1: {}}})
		s := open(t, ts, MethodAuto, nil)
		token := tokenFor(t)
		uid, _, _ := ts.appendMsg("INBOX", probeMessage(token, ""))
		arr, err := s.Wait(ctxTimeout(t, 5*time.Second), token, nil)
		if err != nil {
			t.Fatal(err)
		}
		requireStepErr(t, s.Delete(ctxTimeout(t, 5*time.Second), arr.UID), steps.CodeCleanup, steps.TypeConfig)
		if flags, ok := ts.inspect("INBOX")[uid]; !ok || len(flags) != 0 {
			t.Fatalf("probe touched: %v %v", ok, flags)
		}
		if n := ts.plainExpunges.Load(); n != 0 {
			t.Fatalf("%d plain EXPUNGE sent", n)
		}
	})
}

func TestExpungeFails(t *testing.T) {
	ts := newTestServer(t, serverOpts{})
	s := open(t, ts, MethodAuto, nil)
	token := tokenFor(t)
	ts.appendMsg("INBOX", probeMessage(token, ""))
	arr, err := s.Wait(ctxTimeout(t, 5*time.Second), token, nil)
	if err != nil {
		t.Fatal(err)
	}
	ts.failExpunge.Store(true)
	requireStepErr(t, s.Delete(ctxTimeout(t, 5*time.Second), arr.UID), steps.CodeCleanup, steps.TypeRejected)
	if err := s.Close(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func TestMove(t *testing.T) {
	for _, caps := range []imap.CapSet{
		{imap.CapIMAP4rev1: {}, imap.CapMove: {}},
		{imap.CapIMAP4rev1: {}, imap.CapUIDPlus: {}},
	} {
		ts := newTestServer(t, serverOpts{caps: caps})
		if err := ts.user.Create("Probes", nil); err != nil {
			t.Fatal(err)
		}
		s := open(t, ts, MethodAuto, nil)
		token := tokenFor(t)
		ts.appendMsg("INBOX", probeMessage(token, ""))
		arr, err := s.Wait(ctxTimeout(t, 5*time.Second), token, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Move(ctxTimeout(t, 5*time.Second), arr.UID, "Probes"); err != nil {
			t.Fatal(err)
		}
		if len(ts.inspect("INBOX")) != 0 || len(ts.inspect("Probes")) != 1 {
			t.Fatalf("not moved with %v", caps)
		}
	}
	ts := newTestServer(t, serverOpts{caps: imap.CapSet{imap.CapIMAP4rev1: {}}})
	s := open(t, ts, MethodAuto, nil)
	token := tokenFor(t)
	ts.appendMsg("INBOX", probeMessage(token, ""))
	arr, err := s.Wait(ctxTimeout(t, 5*time.Second), token, nil)
	if err != nil {
		t.Fatal(err)
	}
	requireStepErr(t, s.Move(ctxTimeout(t, 5*time.Second), arr.UID, "Probes"), steps.CodeCleanup, steps.TypeConfig)
}

func TestCommandsCount(t *testing.T) {
	ts := newTestServer(t, serverOpts{})
	s := open(t, ts, MethodPoll, nil)
	check := func(stage string) {
		t.Helper()
		if got, want := s.Commands(), int(ts.commands.Load()); got != want || got == 0 {
			t.Fatalf("after %s: Commands() = %d, server read %d", stage, got, want)
		}
	}
	check("Open")
	token := tokenFor(t)
	appendLater(t, ts, 100*time.Millisecond, probeMessage(token, ""))
	arr, err := s.Wait(ctxTimeout(t, 5*time.Second), token, nil)
	if err != nil {
		t.Fatal(err)
	}
	check("Wait")
	if err := s.Delete(ctxTimeout(t, 5*time.Second), arr.UID); err != nil {
		t.Fatal(err)
	}
	check("Delete")
	if err := s.Close(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	check("Close")
}

func TestInvalidOptions(t *testing.T) {
	_, err := Open(context.Background(), Options{Credentials: saslx.Credentials{Username: "u"}}, nil)
	requireStepErr(t, err, steps.CodeMissingParams, steps.TypeConfig)
	_, err = Open(context.Background(), Options{Endpoint: transport.Endpoint{Address: "127.0.0.1:1", Security: transport.TLS}, Credentials: saslx.Credentials{Username: "u"}, Method: "push"}, nil)
	requireStepErr(t, err, steps.CodeInvalidInstance, steps.TypeConfig)
}

func BenchmarkProbe(b *testing.B) {
	ts := newTestServer(b, serverOpts{})
	opts := ts.options(MethodIdle)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s, err := Open(ctx, opts, nil)
		if err != nil {
			b.Fatal(err)
		}
		token := "bench-" + time.Now().Format("150405.000000000")
		ts.appendMsg("INBOX", probeMessage(token, ""))
		arr, err := s.Wait(ctx, token, nil)
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Delete(ctx, arr.UID); err != nil {
			b.Fatal(err)
		}
		if err := s.Close(ctx); err != nil {
			b.Fatal(err)
		}
		cancel()
	}
}

// A server whose SEARCH ignores custom headers (Stalwart, reportedly Gmail
// and Yahoo) or refuses them: the probe is found by its fetched header.
func TestFindsProbeWithoutHeaderSearch(t *testing.T) {
	for _, bad := range []bool{false, true} {
		t.Run(fmt.Sprintf("bad=%v", bad), func(t *testing.T) {
			ts := newTestServer(t, serverOpts{})
			ts.noHeaderSearch.Store(!bad)
			ts.badHeaderSearch.Store(bad)
			s := open(t, ts, MethodIdle, nil)
			token := tokenFor(t)
			ts.appendMsg("INBOX", probeMessage(tokenFor(t), "")) // another probe
			ts.appendMsg("INBOX", []byte("Subject: user mail\r\n\r\nhi\r\n"))
			appended, _ := appendLater(t, ts, 50*time.Millisecond, probeMessage(token, ""))
			arr, err := s.Wait(ctxTimeout(t, 5*time.Second), token, nil)
			if err != nil {
				t.Fatalf("Wait: %v", err)
			}
			uid, before, after := appended()
			if arr.UID != uid || arr.Method != MethodIdle {
				t.Fatalf("got UID %d by %q, want %d by idle", arr.UID, arr.Method, uid)
			}
			checkSeen(t, arr, before, after)
		})
	}
}

// More messages arrive during one wait than one round examines: they are
// examined in batches, oldest first, and a header search, where it works,
// picks the probe first.
func TestFloodAboveBaseline(t *testing.T) {
	for _, headerSearch := range []bool{true, false} {
		t.Run(fmt.Sprintf("headersearch=%v", headerSearch), func(t *testing.T) {
			ts := newTestServer(t, serverOpts{})
			ts.noHeaderSearch.Store(!headerSearch)
			s := open(t, ts, MethodPoll, nil)
			token := tokenFor(t)
			for i := range 3*maxHits + 5 {
				ts.appendMsg("INBOX", []byte(fmt.Sprintf("Subject: flood %d\r\n\r\nx\r\n", i)))
			}
			uid, _, _ := ts.appendMsg("INBOX", probeMessage(token, ""))
			before := s.Commands()
			arr, err := s.Wait(ctxTimeout(t, 10*time.Second), token, nil)
			if err != nil {
				t.Fatalf("Wait: %v", err)
			}
			if arr.UID != uid {
				t.Fatalf("got UID %d, want %d", arr.UID, uid)
			}
			cmds := s.Commands() - before
			if headerSearch && cmds > 6 {
				t.Fatalf("%d commands with a working header search, want the accelerator to find it at once", cmds)
			}
			if !headerSearch && cmds < 8 {
				t.Fatalf("%d commands: four batches of headers should have been fetched", cmds)
			}
			t.Logf("%d commands", cmds)
		})
	}
}

// Moving probes to a folder that does not exist yet: the server answers
// NO [TRYCREATE]; the folder is created once and the move goes through.
func TestMoveCreatesMissingFolder(t *testing.T) {
	for _, caps := range []imap.CapSet{
		{imap.CapIMAP4rev1: {}, imap.CapMove: {}},
		{imap.CapIMAP4rev1: {}, imap.CapUIDPlus: {}},
	} {
		ts := newTestServer(t, serverOpts{caps: caps})
		s := open(t, ts, MethodAuto, nil)
		user, _, _ := ts.appendMsg("INBOX", []byte("Subject: user's\r\n\r\nx\r\n"))
		for i := range 2 {
			token := tokenFor(t)
			ts.appendMsg("INBOX", probeMessage(token, ""))
			arr, err := s.Wait(ctxTimeout(t, 5*time.Second), token, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Move(ctxTimeout(t, 5*time.Second), arr.UID, "Probes/emailqos"); err != nil {
				t.Fatalf("move %d with %v: %v", i, caps, err)
			}
		}
		if inbox := ts.inspect("INBOX"); len(inbox) != 1 || !hasUID(inbox, user) {
			t.Fatalf("inbox now %v with %v", inbox, caps)
		}
		if n := len(ts.inspect("Probes/emailqos")); n != 2 {
			t.Fatalf("%d probes moved with %v", n, caps)
		}
	}
}

func hasUID(m map[imap.UID][]imap.Flag, uid imap.UID) bool {
	_, ok := m[uid]
	return ok
}
