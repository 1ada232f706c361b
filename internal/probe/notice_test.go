package probe

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/emailqos/emailqosreceiver/internal/imapwatch"
	"github.com/emailqos/emailqosreceiver/internal/mailtest"
	"github.com/emailqos/emailqosreceiver/internal/probemsg"
	"github.com/emailqos/emailqosreceiver/internal/steps"
)

// notice fills one of internal/dsn's sample templates (their README says
// what each is modelled on) with msg, a probe as delivered: its header
// block, the whole message, its token as the envelope id.
func notice(t testing.TB, name string, msg []byte) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "dsn", "testdata", name+".eml.tmpl"))
	require.NoError(t, err)
	msg = bytes.ReplaceAll(msg, []byte("\r\n"), []byte("\n"))
	msg = bytes.ReplaceAll(msg, []byte("\n"), []byte("\r\n"))
	header, _, _ := bytes.Cut(msg, []byte("\r\n\r\n"))
	token := ""
	if vs := probemsg.TokenValues(append(header, "\r\n"...)); len(vs) > 0 {
		token = vs[0]
	}
	s := strings.ReplaceAll(string(b), "\r\n", "\n")
	s = strings.ReplaceAll(s, "\n", "\r\n")
	s = strings.ReplaceAll(s, "{{HEADERS}}", string(header)+"\r\n")
	s = strings.ReplaceAll(s, "{{MESSAGE}}", string(msg))
	s = strings.ReplaceAll(s, "{{TOKEN}}", token)
	s = strings.ReplaceAll(s, "{{ENVID}}", token)
	return []byte(s)
}

// forged is msg with its MAC replaced: a notice quoting the probe's token
// that nobody holding the key wrote.
func forged(msg []byte) []byte {
	lines := strings.Split(string(msg), "\r\n")
	for i, l := range lines {
		if strings.HasPrefix(strings.ToLower(l), strings.ToLower(probemsg.MACHeader)+":") {
			lines[i] = probemsg.MACHeader + ": AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
		}
	}
	return []byte(strings.Join(lines, "\r\n"))
}

// notProbe is an ordinary message someone else sent.
var notProbe = []byte("From: carol@c.test\r\nTo: alice@a.test\r\nSubject: lunch\r\nMessage-Id: <1@c.test>\r\n\r\nhello\r\n")

// bounceServer is the mail system with a hop that refuses every message to
// bob after accepting it: the sending side's bounce, built from the probe
// with tmpl, lands in from's mailbox (in folder, "" for INBOX), beside a
// bounce about a message that is not a probe and a forged notice, planted
// at the same instant. The probe itself is dropped.
type bounceServer struct {
	*mailtest.Server
	mu      sync.Mutex
	planted [][]byte
}

func startBounce(t *testing.T, tmpl, from, folder string, opts mailtest.Options) *bounceServer {
	bs := &bounceServer{}
	opts.OnDeliver = func(rcpt string, msg []byte) error {
		plant := [][]byte{notice(t, tmpl, notProbe), notice(t, tmpl, forged(msg))}
		bs.mu.Lock()
		bs.planted = append(bs.planted, plant...)
		bs.mu.Unlock()
		for _, m := range append(plant, notice(t, tmpl, msg)) {
			var err error
			if folder == "" {
				err = bs.Append(from, m, nil)
			} else {
				err = bs.AppendTo(from, folder, m, nil)
			}
			if err != nil {
				return err
			}
		}
		return errors.New("refused by the next hop")
	}
	bs.Server = startMail(t, opts)
	return bs
}

// raw lists the messages of user's folder ("" INBOX).
func raw(t *testing.T, s *mailtest.Server, user, folder string) [][]byte {
	var msgs []mailtest.Message
	var err error
	if folder == "" {
		msgs, err = s.Mailbox(user)
	} else {
		msgs, err = s.Folder(user, folder)
	}
	require.NoError(t, err)
	out := make([][]byte, len(msgs))
	for i, m := range msgs {
		out[i] = m.Raw
	}
	return out
}

func assertBounced(t *testing.T, res Result, status string, reply int, within time.Duration) {
	t.Helper()
	require.Error(t, res.Err)
	assert.Equal(t, steps.CodeSearch, res.Code, res.Err)
	assert.Equal(t, steps.TypeBounced, res.ErrorType, res.Err)
	assert.Equal(t, steps.Reply{Code: reply, Enhanced: status}, res.SMTPReply)
	assert.Less(t, res.Total, within, "a bounce ends the probe before the delivery timeout")
	require.NotEmpty(t, res.Notices)
	last := res.Notices[len(res.Notices)-1]
	assert.Equal(t, "failed", last.Action)
	assert.Equal(t, status, last.Status)
	assert.Empty(t, res.Placement)
}

// TestBounceTransit: a transit whose next hop refuses the probe is bounced
// within a second or two of the send (the delivery timeout is 5 s), with
// the notice's status and reply code; the notice is removed from the
// sender's mailbox, a bounce about another message and a forged one stay
// byte-identical. Every provider's format is recognised.
func TestBounceTransit(t *testing.T) {
	for _, tc := range []struct {
		tmpl, status string
		reply        int
	}{
		{"postfix-failed", "5.7.1", 554},
		{"gmail-failed", "5.1.1", 550},
		{"exchange-failed", "5.1.10", 550},
	} {
		t.Run(tc.tmpl, func(t *testing.T) {
			srv := startBounce(t, tc.tmpl, alice, "", mailtest.Options{})
			a := account(srv.Server, "a", alice, "alice-pw", imapwatch.MethodIdle)
			b := account(srv.Server, "b", bob, "bob-pw", imapwatch.MethodIdle)
			tg := target(a, b)
			tg.DSN = true
			res := Run(context.Background(), tg, nil)
			assertBounced(t, res, tc.status, tc.reply, 4*time.Second)
			srv.mu.Lock()
			planted := srv.planted
			srv.mu.Unlock()
			assert.Equal(t, planted, raw(t, srv.Server, alice, ""), "only the probe's notice is removed")
			assert.Empty(t, raw(t, srv.Server, bob, ""))
		})
	}
}

// TestBounceRoundtrip: the same in the receiver's own session.
func TestBounceRoundtrip(t *testing.T) {
	srv := startBounce(t, "gmail-failed", alice, "", mailtest.Options{})
	a := account(srv.Server, "a", alice, "alice-pw", imapwatch.MethodIdle)
	tg := target(a, a)
	tg.DSN = true
	res := Run(context.Background(), tg, nil)
	assertBounced(t, res, "5.1.1", 550, 4*time.Second)
	srv.mu.Lock()
	planted := srv.planted
	srv.mu.Unlock()
	assert.Equal(t, planted, raw(t, srv.Server, alice, ""))
}

// TestBounceInJunk: a notice filed as spam is found in the junk folder,
// and removed from there.
func TestBounceInJunk(t *testing.T) {
	srv := startBounce(t, "postfix-failed", alice, "Junk", mailtest.Options{})
	a := account(srv.Server, "a", alice, "alice-pw", imapwatch.MethodIdle)
	a.JunkFolders = []string{"Junk"}
	b := account(srv.Server, "b", bob, "bob-pw", imapwatch.MethodIdle)
	tg := target(a, b)
	tg.DSN = true
	res := Run(context.Background(), tg, nil)
	assertBounced(t, res, "5.7.1", 554, 4*time.Second)
	srv.mu.Lock()
	planted := srv.planted
	srv.mu.Unlock()
	assert.Equal(t, planted, raw(t, srv.Server, alice, "Junk"))
}

// TestBounceIgnoredWithoutDSN: with dsn off the sender's mailbox is not
// read: the probe is not found, and the notice stays.
func TestBounceIgnoredWithoutDSN(t *testing.T) {
	srv := startBounce(t, "postfix-failed", alice, "", mailtest.Options{})
	a := account(srv.Server, "a", alice, "alice-pw", imapwatch.MethodIdle)
	b := account(srv.Server, "b", bob, "bob-pw", imapwatch.MethodIdle)
	tg := target(a, b)
	tg.DeliveryTimeout = time.Second
	res := Run(context.Background(), tg, nil)
	assert.Equal(t, steps.TypeNotFound, res.ErrorType, res.Err)
	assert.Len(t, raw(t, srv.Server, alice, ""), 3)
	assert.Empty(t, res.Notices)
}

// TestDelayNotice: a delay notice is counted, removed, and the probe keeps
// waiting and is delivered.
func TestDelayNotice(t *testing.T) {
	var srv *mailtest.Server
	srv = startMail(t, mailtest.Options{OnDeliver: func(rcpt string, msg []byte) error {
		if err := srv.Append(alice, notice(t, "postfix-delayed", msg), nil); err != nil {
			return err
		}
		time.Sleep(500 * time.Millisecond) // still being retried
		return nil
	}})
	a := account(srv, "a", alice, "alice-pw", imapwatch.MethodIdle)
	b := account(srv, "b", bob, "bob-pw", imapwatch.MethodIdle)
	tg := target(a, b)
	tg.DSN = true
	res := Run(context.Background(), tg, nil)
	require.NoError(t, res.Err)
	assert.True(t, res.Delivered)
	assert.Equal(t, 1, res.DelayNotices)
	require.Len(t, res.Notices, 1)
	assert.Equal(t, "delayed", res.Notices[0].Action)
	assert.Equal(t, "4.3.0", res.Notices[0].Status)
	assert.Empty(t, raw(t, srv, alice, ""), "the delay notice is cleaned up")
}

// TestLateBounce: a bounce arriving after its probe was reported not found
// is counted at the next run and removed; the next run's own probe is
// unaffected.
func TestLateBounce(t *testing.T) {
	var srv *mailtest.Server
	var mu sync.Mutex
	var first []byte
	srv = startMail(t, mailtest.Options{OnDeliver: func(rcpt string, msg []byte) error {
		mu.Lock()
		defer mu.Unlock()
		if first == nil {
			first = msg
			return errors.New("held in the queue") // bounced later
		}
		return nil
	}})
	a := account(srv, "a", alice, "alice-pw", imapwatch.MethodIdle)
	b := account(srv, "b", bob, "bob-pw", imapwatch.MethodIdle)
	tg := target(a, b)
	tg.DSN = true
	tg.DeliveryTimeout = 500 * time.Millisecond
	tg.OrphanAge = time.Hour
	res := Run(context.Background(), tg, nil)
	require.Equal(t, steps.TypeNotFound, res.ErrorType, res.Err)

	mu.Lock()
	require.NoError(t, srv.Append(alice, notice(t, "postfix-failed", first), nil))
	mu.Unlock()
	tg.DeliveryTimeout = 5 * time.Second
	res = Run(context.Background(), tg, nil)
	require.NoError(t, res.Err)
	assert.Equal(t, 1, res.LateBounces)
	assert.Empty(t, raw(t, srv, alice, ""))

	res = Run(context.Background(), tg, nil)
	require.NoError(t, res.Err)
	assert.Zero(t, res.LateBounces, "counted once")
}

// TestNoticeSweep: verified notices about probes older than the orphan age
// are swept from the sender's mailbox; a young one, one about another
// key's probe and a forged one stay.
func TestNoticeSweep(t *testing.T) {
	srv := startMail(t, mailtest.Options{})
	a := account(srv, "a", alice, "alice-pw", imapwatch.MethodIdle)
	b := account(srv, "b", bob, "bob-pw", imapwatch.MethodIdle)
	a.SweepInterval = time.Hour
	b.SweepInterval = time.Hour
	tg := target(a, b)
	tg.DSN = true
	tg.OrphanAge = 24 * time.Hour

	probeMsg := func(age time.Duration, key []byte) []byte {
		p, err := probemsg.New(alice, bob, tg.Name, time.Now().Add(-age))
		require.NoError(t, err)
		return p.Build(key)
	}
	old := notice(t, "postfix-failed", probeMsg(48*time.Hour, b.MACKey))
	keep := [][]byte{
		notice(t, "postfix-failed", probeMsg(time.Hour, b.MACKey)),
		notice(t, "postfix-failed", probeMsg(48*time.Hour, []byte("another key"))),
		notice(t, "postfix-failed", forged(probeMsg(48*time.Hour, b.MACKey))),
		notProbe,
	}
	require.NoError(t, srv.Append(alice, old, nil))
	for _, m := range keep {
		require.NoError(t, srv.Append(alice, m, nil))
	}
	res := Run(context.Background(), tg, nil)
	require.NoError(t, res.Err)
	assert.Equal(t, 1, res.SweptNotices)
	assert.Equal(t, keep, raw(t, srv, alice, ""))
}

// TestBounceAmongHostileNotices: the sender's mailbox fills, as the probe
// is sent, with 40 reports that are not the probe's (truncated, not a
// delivery report, over the 1 MiB cap): the probe's own bounce is still
// found and reported well before the delivery timeout, and none of the
// others is touched.
func TestBounceAmongHostileNotices(t *testing.T) {
	var srv *mailtest.Server
	var mu sync.Mutex
	var planted [][]byte
	srv = startMail(t, mailtest.Options{OnDeliver: func(rcpt string, msg []byte) error {
		real := notice(t, "postfix-failed", msg)
		mu.Lock()
		defer mu.Unlock()
		for i := range 40 {
			var m []byte
			switch i % 3 {
			case 0: // truncated in the middle of the report
				m = real[:len(real)/2]
			case 1: // a report of another type
				m = bytes.Replace(notice(t, "postfix-failed", notProbe), []byte("report-type=delivery-status"), []byte("report-type=disposition-notification"), 1)
			default: // over the size cap, quoting the probe
				m = append(bytes.Clone(real), bytes.Repeat([]byte("x"), 1<<20)...)
			}
			planted = append(planted, m)
			if err := srv.Append(alice, m, nil); err != nil {
				return err
			}
		}
		if err := srv.Append(alice, real, nil); err != nil {
			return err
		}
		return errors.New("refused by the next hop")
	}})
	a := account(srv, "a", alice, "alice-pw", imapwatch.MethodIdle)
	b := account(srv, "b", bob, "bob-pw", imapwatch.MethodIdle)
	tg := target(a, b)
	tg.DSN = true
	res := Run(context.Background(), tg, nil)
	assertBounced(t, res, "5.7.1", 554, 4*time.Second)
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, planted, raw(t, srv, alice, ""))
}

// TestDelayNoticeAfterDelivery: a delay notice that arrives after its
// probe was found (the race seen on the real stack) is counted at the next
// run and removed, not left in the mailbox; a delivered probe is looked for
// only until then.
func TestDelayNoticeAfterDelivery(t *testing.T) {
	var srv *mailtest.Server
	var mu sync.Mutex
	filed := make(chan struct{})
	first := true
	srv = startMail(t, mailtest.Options{OnDeliver: func(rcpt string, msg []byte) error {
		mu.Lock()
		defer mu.Unlock()
		if first {
			first = false
			go func() {
				defer close(filed)
				time.Sleep(300 * time.Millisecond) // after the run ended
				assert.NoError(t, srv.Append(alice, notice(t, "postfix-delayed", msg), nil))
			}()
		}
		return nil
	}})
	a := account(srv, "a", alice, "alice-pw", imapwatch.MethodIdle)
	b := account(srv, "b", bob, "bob-pw", imapwatch.MethodIdle)
	tg := target(a, b)
	tg.DSN = true
	tg.OrphanAge = time.Hour
	res := Run(context.Background(), tg, nil)
	require.NoError(t, res.Err)
	assert.Zero(t, res.DelayNotices)
	<-filed
	require.Len(t, raw(t, srv, alice, ""), 1)

	res = Run(context.Background(), tg, nil)
	require.NoError(t, res.Err)
	assert.Equal(t, 1, res.DelayNotices, "counted at the next run")
	assert.Empty(t, raw(t, srv, alice, ""), "and removed")
	tg.mu.Lock()
	n := len(tg.lateNotices)
	tg.mu.Unlock()
	assert.Equal(t, 1, n, "only the last run's probe is still looked for")
}

// TestDSNOnEveryPersonality: watching for notices never fails a probe,
// whatever the server: one that refuses the header search for notices
// (noheadersearch, m365) still has its probe found, without notices.
func TestDSNOnEveryPersonality(t *testing.T) {
	for _, p := range []mailtest.Personality{"", mailtest.PersonalityGmail, mailtest.PersonalityM365, mailtest.PersonalityNoHeaderSearch} {
		t.Run(string(p), func(t *testing.T) {
			srv := startMail(t, mailtest.Options{Personality: p, DeliveryDelay: 200 * time.Millisecond, SearchLag: 100 * time.Millisecond})
			a := account(srv, "a", alice, "alice-pw", imapwatch.MethodIdle)
			tg := target(a, a)
			tg.DSN = true
			res := Run(context.Background(), tg, nil)
			require.NoError(t, res.Err)
			assert.True(t, res.Delivered)
		})
	}
}
