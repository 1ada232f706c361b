//go:build integration

package integration

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-smtp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/emailqos/emailqosreceiver/internal/probe"
	"github.com/emailqos/emailqosreceiver/internal/probemsg"
	"github.com/emailqos/emailqosreceiver/internal/steps"
	"github.com/emailqos/emailqosreceiver/internal/transport"
)

// hop is an SMTP server standing in for the next hop of a.test's mail to
// b.test (scripts/mailstack.sh relay): it answers every RCPT TO with reply
// while refuse is set, and counts the attempts. It never accepts a message.
type hop struct {
	reply    *smtp.SMTPError
	refuse   atomic.Bool
	attempts atomic.Int32
}

type hopSession struct{ h *hop }

func (h *hop) NewSession(*smtp.Conn) (smtp.Session, error) { return hopSession{h}, nil }
func (s hopSession) Reset()                                {}
func (s hopSession) Logout() error                         { return nil }
func (s hopSession) Mail(string, *smtp.MailOptions) error  { return nil }
func (s hopSession) Rcpt(string, *smtp.RcptOptions) error {
	s.h.attempts.Add(1)
	return s.h.reply
}
func (s hopSession) Data(io.Reader) error { return errors.New("no recipient") }

// startHop serves h on a loopback port and routes a.test's mail for b.test
// through it until the test ends.
func startHop(t *testing.T, h *hop) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := smtp.NewServer(h)
	srv.Domain = "hop.test"
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = srv.Serve(l) }()
	mailstack(t, "relay", "a", l.Addr().String())
	t.Cleanup(func() {
		mailstack(t, "relay", "a", "off")
		_ = srv.Close()
		wg.Wait()
	})
}

// mailstack runs scripts/mailstack.sh on the running stack.
func mailstack(t *testing.T, args ...string) {
	t.Helper()
	args = append(args, env(t, "EMAILQOS_MAILSTACK_DIR"))
	out, err := exec.Command(filepath.Join("..", "..", "scripts", "mailstack.sh"), args...).CombinedOutput()
	require.NoError(t, err, "mailstack.sh %v: %s", args, out)
}

// postfixA runs a postfix command on a.test's instance.
func postfixA(t *testing.T, cmd string, args ...string) {
	t.Helper()
	conf := filepath.Join(env(t, "EMAILQOS_MAILSTACK_DIR"), "a", "postfix")
	out, err := exec.Command(cmd, append([]string{"-c", conf}, args...)...).CombinedOutput()
	require.NoError(t, err, "%s %v: %s", cmd, args, out)
}

// notice fills internal/dsn's Postfix sample with msg's header block.
func notice(t *testing.T, msg []byte) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "dsn", "testdata", "postfix-failed.eml.tmpl"))
	require.NoError(t, err)
	header, _, _ := bytes.Cut(msg, []byte("\r\n\r\n"))
	token := ""
	if vs := probemsg.TokenValues(append(header, "\r\n"...)); len(vs) > 0 {
		token = vs[0]
	}
	s := strings.ReplaceAll(string(b), "\r\n", "\n")
	s = strings.ReplaceAll(s, "\n", "\r\n")
	s = strings.ReplaceAll(s, "{{HEADERS}}", string(header)+"\r\n")
	s = strings.ReplaceAll(s, "{{TOKEN}}", token)
	s = strings.ReplaceAll(s, "{{ENVID}}", token)
	return []byte(s)
}

// rawInbox returns every message of probe@a.test's INBOX, whole.
func rawInbox(t *testing.T) [][]byte {
	t.Helper()
	c := dialIMAP(t, "a")
	defer c.Close()
	_, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait()
	require.NoError(t, err)
	// UID FETCH 1:* is answered OK on an empty mailbox too.
	msgs, err := c.Fetch(imap.UIDSet{imap.UIDRange{Start: 1, Stop: 0}},
		&imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{{Peek: true}}}).Collect()
	require.NoError(t, err)
	var out [][]byte
	for _, m := range msgs {
		for _, b := range m.BodySection {
			out = append(out, b.Bytes)
		}
	}
	return out
}

// TestBounces: a transit whose next hop refuses the probe (554) is bounced
// by a.test's Postfix; the probe reports it within 5 s of the send, and the
// notice is gone afterwards, while a bounce about a message that is not a
// probe and a forged notice (a probe token under a wrong MAC) planted in
// the same mailbox stay byte-identical. A hop that defers for longer than
// delay_warning_time yields a delay notice, counted, and the probe is
// delivered once the hop lets it through.
func TestBounces(t *testing.T) {
	t.Run("rejecting hop", func(t *testing.T) {
		startHop(t, &hop{reply: &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "refused by policy"}})
		s, r := account(t, "a", transport.TLS), account(t, "b", transport.TLS)

		// Planted: a Postfix bounce about an ordinary message, and one
		// quoting a probe of this very key whose MAC was tampered with.
		p, err := probemsg.New(s.Address, r.Address, "a:b", time.Now())
		require.NoError(t, err)
		forged := bytes.Replace(p.Build(r.MACKey), []byte(probemsg.MACHeader+": "), []byte(probemsg.MACHeader+": 00"), 1)
		planted := [][]byte{
			notice(t, []byte("From: colleague@a.test\r\nTo: user@b.test\r\nSubject: hello\r\nMessage-ID: <not-a-probe@a.test>\r\n\r\nhi\r\n")),
			notice(t, forged),
		}
		c := dialIMAP(t, "a")
		for _, m := range planted {
			cmd := c.Append("INBOX", int64(len(m)), nil)
			_, err := cmd.Write(m)
			require.NoError(t, err)
			require.NoError(t, cmd.Close())
			_, err = cmd.Wait()
			require.NoError(t, err)
		}
		require.NoError(t, c.Close())
		before := rawInbox(t)

		tg := target(s, r)
		tg.DSN = true
		tg.DeliveryTimeout = 15 * time.Second
		res := probe.Run(context.Background(), tg, nil)
		require.Error(t, res.Err)
		assert.Equal(t, steps.CodeSearch, res.Code, "%v", res.Err)
		assert.Equal(t, steps.TypeBounced, res.ErrorType, "%v", res.Err)
		assert.Regexp(t, `^5\.\d{1,3}\.\d{1,3}$`, res.SMTPReply.Enhanced)
		assert.Equal(t, 554, res.SMTPReply.Code)
		for _, tm := range res.Timings {
			if tm.Step == steps.DeliveryWait {
				assert.Less(t, tm.Duration, 5*time.Second, "bounce reported after the delivery wait ran %s", tm.Duration)
				t.Logf("bounced %s after the send (status %s, reply %d)", tm.Duration, res.SMTPReply.Enhanced, res.SMTPReply.Code)
			}
		}
		assert.Equal(t, before, rawInbox(t), "the probe's notice is removed; the planted ones stay byte-identical")
		// The planted notices are the user's: removed here, by the test.
		cleanupPlanted(t, planted)
	})

	t.Run("deferring hop", func(t *testing.T) {
		postfixA(t, "postconf", "-e", "delay_warning_time=2s")
		postfixA(t, "postfix", "reload")
		t.Cleanup(func() {
			postfixA(t, "postconf", "-X", "delay_warning_time")
			postfixA(t, "postfix", "reload")
		})
		h := &hop{reply: &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "try again later"}}
		startHop(t, h)
		s, r := account(t, "a", transport.TLS), account(t, "b", transport.TLS)
		tg := target(s, r)
		tg.DSN = true
		tg.DeliveryTimeout = 50 * time.Second
		tg.Timeout = 80 * time.Second

		// The hop lets the probe through (routing goes back to b.test's MX)
		// once Postfix has sent the delay notice (it logs "sender delay
		// notification" at the deferral after delay_warning_time), and
		// Dovecot had the time to announce it.
		ctx, cancel := context.WithTimeout(context.Background(), tg.Timeout)
		defer cancel()
		dir, logFile := env(t, "EMAILQOS_MAILSTACK_DIR"), env(t, "EMAILQOS_A_POSTFIX_LOG")
		warned := func() int {
			b, _ := os.ReadFile(logFile)
			return bytes.Count(b, []byte("sender delay notification"))
		}
		before := warned()
		released := make(chan struct{})
		go func() {
			defer close(released)
			for warned() == before {
				select {
				case <-ctx.Done():
					return
				case <-time.After(100 * time.Millisecond):
				}
			}
			time.Sleep(2 * time.Second)
			// Not require: this is not the test's goroutine.
			for _, cmd := range [][]string{
				{filepath.Join("..", "..", "scripts", "mailstack.sh"), "relay", "a", "off", dir},
				{"postqueue", "-c", filepath.Join(dir, "a", "postfix"), "-f"},
			} {
				if out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput(); err != nil {
					t.Errorf("%v: %v: %s", cmd, err, out)
				}
			}
		}()
		res := probe.Run(ctx, tg, nil)
		cancel()
		<-released
		require.NoError(t, res.Err)
		assert.True(t, res.Delivered)
		t.Logf("delivered after %s with %d delay notice(s), %d hop attempts", res.DeliveryLatency, res.DelayNotices, h.attempts.Load())
		// A notice that raced the delivery is counted by the next run.
		next := probe.Run(context.Background(), tg, nil)
		require.NoError(t, next.Err)
		assert.GreaterOrEqual(t, res.DelayNotices+next.DelayNotices, 1, "the delay notice is counted")
		t.Logf("next run: %d delay notice(s)", next.DelayNotices)
		for _, m := range rawInbox(t) {
			assert.NotContains(t, string(m), "Delayed Mail", "the delay notice is removed")
		}
	})
}

// cleanupPlanted removes the planted notices by Message-Id, so that later
// tests see the mailbox as before.
func cleanupPlanted(t *testing.T, planted [][]byte) {
	t.Helper()
	c := dialIMAP(t, "a")
	defer c.Close()
	_, err := c.Select("INBOX", nil).Wait()
	require.NoError(t, err)
	data, err := c.UIDSearch(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Message-Id", Value: "4R1x2Y3Z4bz9sWr@mx.a.test"}}}, nil).Wait()
	require.NoError(t, err)
	uids := data.AllUIDs()
	require.Len(t, uids, len(planted))
	require.NoError(t, c.Store(imap.UIDSetNum(uids...), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagDeleted}, Silent: true}, nil).Close())
	require.NoError(t, c.UIDExpunge(imap.UIDSetNum(uids...)).Close())
}
