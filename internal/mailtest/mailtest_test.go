package mailtest

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/emailqos/emailqosreceiver/internal/saslx"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	alice   = "alice@a.test"
	alicePW = "alice-pw"
	bob     = "bob@b.test"
	bobUser = "bob" // bob logs in with a username that is not his address
	bobPW   = "bob-pw"

	wait = 2 * time.Second
)

func start(t *testing.T, opts Options) *Server {
	t.Helper()
	opts.Users = append(opts.Users,
		User{Address: alice, Password: alicePW},
		User{Address: bob, Username: bobUser, Password: bobPW})
	s, err := Start(opts)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

type mode string

const (
	plain    mode = "plain"
	startTLS mode = "starttls"
	implicit mode = "tls"
)

func dialSMTP(t *testing.T, s *Server, m mode) (*smtp.Client, error) {
	t.Helper()
	var (
		c   *smtp.Client
		err error
	)
	switch m {
	case plain:
		c, err = smtp.Dial(s.SMTPAddr())
	case startTLS:
		c, err = smtp.DialStartTLS(s.SMTPAddr(), s.ClientTLSConfig())
	case implicit:
		c, err = smtp.DialTLS(s.SMTPSAddr(), s.ClientTLSConfig())
	}
	if err != nil {
		return nil, err
	}
	c.CommandTimeout = wait
	c.SubmissionTimeout = wait
	t.Cleanup(func() { c.Close() })
	return c, nil
}

func mustSMTP(t *testing.T, s *Server, m mode) *smtp.Client {
	t.Helper()
	c, err := dialSMTP(t, s, m)
	require.NoError(t, err)
	return c
}

func testMessage(subject string) []byte {
	return []byte("From: <" + alice + ">\r\nTo: <" + bob + ">\r\nSubject: " + subject +
		"\r\nMessage-ID: <" + subject + "@a.test>\r\n\r\nHello.\r\n")
}

// submit runs one transaction on an authenticated client.
func submit(c *smtp.Client, from, to string, msg []byte) error {
	if err := c.Mail(from, nil); err != nil {
		return err
	}
	if err := c.Rcpt(to, nil); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(msg); err != nil {
		return err
	}
	return w.Close()
}

func sendAs(t *testing.T, s *Server, m mode, auth sasl.Client, to string, msg []byte) {
	t.Helper()
	c := mustSMTP(t, s, m)
	require.NoError(t, c.Auth(auth))
	require.NoError(t, submit(c, alice, to, msg))
	require.NoError(t, c.Quit())
}

func dialIMAP(t *testing.T, s *Server, m mode, h *imapclient.UnilateralDataHandler) (*imapclient.Client, error) {
	t.Helper()
	opts := &imapclient.Options{
		TLSConfig:             s.ClientTLSConfig(),
		UnilateralDataHandler: h,
		Dialer:                &net.Dialer{Timeout: wait},
	}
	var (
		c   *imapclient.Client
		err error
	)
	switch m {
	case plain:
		c, err = imapclient.DialInsecure(s.IMAPAddr(), opts)
	case startTLS:
		c, err = imapclient.DialStartTLS(s.IMAPAddr(), opts)
	case implicit:
		c, err = imapclient.DialTLS(s.IMAPSAddr(), opts)
	}
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	return c, nil
}

func loginIMAP(t *testing.T, s *Server, m mode, user, pw string, h *imapclient.UnilateralDataHandler) *imapclient.Client {
	t.Helper()
	c, err := dialIMAP(t, s, m, h)
	require.NoError(t, err)
	require.NoError(t, c.Login(user, pw).Wait())
	_, err = c.Select("INBOX", nil).Wait()
	require.NoError(t, err)
	return c
}

func waitMessages(t *testing.T, s *Server, user string, n int) []Message {
	t.Helper()
	var msgs []Message
	require.Eventually(t, func() bool {
		var err error
		msgs, err = s.Mailbox(user)
		require.NoError(t, err)
		return len(msgs) == n
	}, wait, 5*time.Millisecond)
	return msgs
}

func smtpCode(t *testing.T, err error) (int, smtp.EnhancedCode) {
	t.Helper()
	var se *smtp.SMTPError
	require.ErrorAs(t, err, &se)
	return se.Code, se.EnhancedCode
}

func TestSendAndReceive(t *testing.T) {
	for _, tc := range []struct {
		mode  mode
		tls   bool
		auth  func(user, pw string) sasl.Client
		proto string
	}{
		{plain, false, func(u, p string) sasl.Client { return sasl.NewPlainClient("", u, p) }, "ESMTPA"},
		{plain, true, func(u, p string) sasl.Client { return sasl.NewLoginClient(u, p) }, "ESMTPA"},
		{startTLS, true, func(u, p string) sasl.Client { return sasl.NewLoginClient(u, p) }, "ESMTPSA"},
		{implicit, true, func(u, p string) sasl.Client { return sasl.NewPlainClient("", u, p) }, "ESMTPSA"},
	} {
		t.Run(fmt.Sprintf("%s/tls=%v", tc.mode, tc.tls), func(t *testing.T) {
			s := start(t, Options{TLS: tc.tls})
			msg := testMessage("m1")
			sendAs(t, s, tc.mode, tc.auth(alice, alicePW), bob, msg)

			c := loginIMAP(t, s, tc.mode, bobUser, bobPW, nil)
			require.Eventually(t, func() bool {
				require.NoError(t, c.Noop().Wait())
				return c.Mailbox().NumMessages == 1
			}, wait, 5*time.Millisecond)
			body := &imap.FetchItemBodySection{Peek: true}
			bufs, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{body}}).Collect()
			require.NoError(t, err)
			require.Len(t, bufs, 1)
			raw := string(bufs[0].FindBodySection(body))
			assert.True(t, strings.HasPrefix(raw, "Return-Path: <"+alice+">\r\nReceived: from "), raw)
			assert.Contains(t, raw, "by "+Domain+" with "+tc.proto+" id ")
			assert.Contains(t, raw, "for <"+bob+">;")
			assert.True(t, strings.HasSuffix(raw, "\r\n"+string(msg)), raw)
			assert.Equal(t, 1, s.Deliveries())
		})
	}
}

func TestUsernameDiffersFromAddress(t *testing.T) {
	s := start(t, Options{})
	sendAs(t, s, plain, sasl.NewPlainClient("", bobUser, bobPW), alice, testMessage("m2"))
	waitMessages(t, s, alice, 1)

	c := mustSMTP(t, s, plain)
	code, ec := smtpCode(t, c.Auth(sasl.NewPlainClient("", bob, bobPW)))
	assert.Equal(t, 535, code, "SMTP AUTH takes the username, not the address")
	assert.Equal(t, smtp.EnhancedCode{5, 7, 8}, ec)
}

func TestIdleAndNoopSeeDeliveries(t *testing.T) {
	s := start(t, Options{})
	exists := make(chan uint32, 8)
	idler := loginIMAP(t, s, plain, alice, alicePW, &imapclient.UnilateralDataHandler{
		Mailbox: func(d *imapclient.UnilateralDataMailbox) {
			if d.NumMessages != nil {
				exists <- *d.NumMessages
			}
		},
	})
	assert.True(t, idler.Caps().Has(imap.CapIdle))
	poller := loginIMAP(t, s, plain, alice, alicePW, nil)

	idle, err := idler.Idle()
	require.NoError(t, err)
	sendAs(t, s, plain, sasl.NewPlainClient("", alice, alicePW), alice, testMessage("m3"))
	select {
	case n := <-exists:
		assert.Equal(t, uint32(1), n)
	case <-time.After(wait):
		t.Fatal("no EXISTS during IDLE")
	}

	require.NoError(t, s.Append(alice, testMessage("seeded"), nil))
	select {
	case n := <-exists:
		assert.Equal(t, uint32(2), n, "Append is announced too")
	case <-time.After(wait):
		t.Fatal("no EXISTS for Append during IDLE")
	}
	require.NoError(t, idle.Close())
	require.NoError(t, idle.Wait())

	require.NoError(t, poller.Noop().Wait())
	assert.Equal(t, uint32(2), poller.Mailbox().NumMessages)
}

func TestRejectAuth(t *testing.T) {
	s := start(t, Options{RejectAuth: true})
	for _, auth := range []sasl.Client{sasl.NewPlainClient("", alice, alicePW), sasl.NewLoginClient(alice, alicePW)} {
		c := mustSMTP(t, s, plain)
		code, ec := smtpCode(t, c.Auth(auth))
		assert.Equal(t, 535, code)
		assert.Equal(t, smtp.EnhancedCode{5, 7, 8}, ec)
	}
}

func TestWrongPasswordAndNoAuth(t *testing.T) {
	s := start(t, Options{})
	c := mustSMTP(t, s, plain)
	code, _ := smtpCode(t, c.Auth(sasl.NewPlainClient("", alice, "nope")))
	assert.Equal(t, 535, code)

	c = mustSMTP(t, s, plain)
	code, ec := smtpCode(t, c.Mail(alice, nil))
	assert.Equal(t, 530, code, "only authenticated sessions may send")
	assert.Equal(t, smtp.EnhancedCode{5, 7, 0}, ec)
}

func TestRecipients(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		to   string
		code int
		ec   smtp.EnhancedCode
	}{
		{"unknown", Options{}, "nobody@a.test", 550, smtp.EnhancedCode{5, 1, 1}},
		{"RejectRcpt", Options{RejectRcpt: true}, bob, 550, smtp.EnhancedCode{5, 1, 1}},
		{"DeferRcpt", Options{DeferRcpt: true}, bob, 450, smtp.EnhancedCode{4, 2, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := start(t, tc.opts)
			c := mustSMTP(t, s, plain)
			require.NoError(t, c.Auth(sasl.NewPlainClient("", alice, alicePW)))
			require.NoError(t, c.Mail(alice, nil))
			code, ec := smtpCode(t, c.Rcpt(tc.to, nil))
			assert.Equal(t, tc.code, code)
			assert.Equal(t, tc.ec, ec)
		})
	}
}

func TestBlackhole(t *testing.T) {
	var delivered atomic.Bool
	s := start(t, Options{Blackhole: true, OnDeliver: func(string, []byte) error {
		delivered.Store(true)
		return nil
	}})
	sendAs(t, s, plain, sasl.NewPlainClient("", alice, alicePW), bob, testMessage("m4"))
	time.Sleep(100 * time.Millisecond)
	assert.False(t, delivered.Load())
	assert.Zero(t, s.Deliveries())
	msgs, err := s.Mailbox(bob)
	require.NoError(t, err)
	assert.Empty(t, msgs)
}

func TestExpunge(t *testing.T) {
	for _, fail := range []bool{false, true} {
		t.Run(fmt.Sprintf("FailExpunge=%v", fail), func(t *testing.T) {
			s := start(t, Options{FailExpunge: fail})
			for range 2 {
				require.NoError(t, s.Append(alice, testMessage("doomed"), []imap.Flag{imap.FlagDeleted}))
			}
			c := loginIMAP(t, s, plain, alice, alicePW, nil)
			uidErr := c.UIDExpunge(imap.UIDSetNum(1)).Close()
			allErr := c.Expunge().Close()
			msgs, err := s.Mailbox(alice)
			require.NoError(t, err)
			if !fail {
				require.NoError(t, uidErr)
				require.NoError(t, allErr)
				assert.Empty(t, msgs)
				return
			}
			for _, err := range []error{uidErr, allErr} {
				var ie *imap.Error
				require.ErrorAs(t, err, &ie)
				assert.Equal(t, imap.StatusResponseTypeNo, ie.Type)
			}
			assert.Len(t, msgs, 2, "the messages stay")
		})
	}
}

func TestDisableIDLE(t *testing.T) {
	for _, tc := range []struct {
		mode mode
		tls  bool
	}{{plain, false}, {startTLS, true}, {implicit, true}} {
		t.Run(string(tc.mode), func(t *testing.T) {
			s := start(t, Options{DisableIDLE: true, TLS: tc.tls})
			c, err := dialIMAP(t, s, tc.mode, nil)
			require.NoError(t, err)
			require.NoError(t, c.Login(alice, alicePW).Wait())
			caps, err := c.Capability().Wait()
			require.NoError(t, err)
			assert.True(t, caps.Has(imap.CapIMAP4rev1))
			assert.False(t, caps.Has(imap.CapIdle), "%v", caps)
			assert.False(t, c.Caps().Has(imap.CapIdle))
			assert.True(t, caps.Has(imap.CapUIDPlus))
			_, err = c.Select("INBOX", nil).Wait()
			require.NoError(t, err)

			_, err = c.Idle()
			assert.Error(t, err, "IDLE is not accepted either")
			require.NoError(t, c.Noop().Wait(), "the session survives")

			// Protocol look-alikes inside literals must pass untouched.
			tricky := []byte("Subject: x\r\n\r\na1 IDLE\r\n* CAPABILITY IMAP4rev1 IDLE\r\n* OK [CAPABILITY IDLE] {3}\r\n")
			ac := c.Append("INBOX", int64(len(tricky)), nil)
			_, err = ac.Write(tricky)
			require.NoError(t, err)
			require.NoError(t, ac.Close())
			_, err = ac.Wait()
			require.NoError(t, err)
			body := &imap.FetchItemBodySection{Peek: true}
			bufs, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{body}}).Collect()
			require.NoError(t, err)
			require.Len(t, bufs, 1)
			assert.Equal(t, tricky, bufs[0].FindBodySection(body))
			msgs, err := s.Mailbox(alice)
			require.NoError(t, err)
			require.Len(t, msgs, 1)
			assert.Equal(t, tricky, msgs[0].Raw)
			require.NoError(t, c.Logout().Wait())
		})
	}
}

func TestDisableSTARTTLS(t *testing.T) {
	for _, disable := range []bool{false, true} {
		t.Run(fmt.Sprintf("DisableSTARTTLS=%v", disable), func(t *testing.T) {
			s := start(t, Options{TLS: true, DisableSTARTTLS: disable})

			c := mustSMTP(t, s, plain)
			require.NoError(t, c.Hello("client.test"))
			offered, _ := c.Extension("STARTTLS")
			assert.Equal(t, !disable, offered)
			ic, err := dialIMAP(t, s, plain, nil)
			require.NoError(t, err)
			assert.Equal(t, !disable, ic.Caps().Has(imap.CapStartTLS))

			_, smtpErr := dialSMTP(t, s, startTLS)
			_, imapErr := dialIMAP(t, s, startTLS, nil)
			if disable {
				assert.Error(t, smtpErr)
				assert.Error(t, imapErr)
			} else {
				assert.NoError(t, smtpErr)
				assert.NoError(t, imapErr)
			}

			// Implicit TLS is unaffected.
			sendAs(t, s, implicit, sasl.NewPlainClient("", alice, alicePW), alice, testMessage("m5"))
			loginIMAP(t, s, implicit, alice, alicePW, nil)
		})
	}
}

func TestStopIMAP(t *testing.T) {
	for _, opts := range []Options{{}, {DisableIDLE: true, TLS: true}} {
		t.Run(fmt.Sprintf("DisableIDLE=%v", opts.DisableIDLE), func(t *testing.T) {
			s := start(t, opts)
			c := loginIMAP(t, s, plain, alice, alicePW, nil)
			idler := loginIMAP(t, s, plain, bobUser, bobPW, nil)
			if !opts.DisableIDLE {
				_, err := idler.Idle()
				require.NoError(t, err)
			}
			s.StopIMAP()
			for _, c := range []*imapclient.Client{c, idler} {
				select {
				case <-c.Closed():
				case <-time.After(wait):
					t.Fatal("open IMAP session survived StopIMAP")
				}
			}
			assert.Error(t, c.Noop().Wait())
			_, err := net.DialTimeout("tcp", s.IMAPAddr(), wait)
			assert.Error(t, err)

			// SMTP keeps working and the mailbox stays readable.
			sendAs(t, s, plain, sasl.NewPlainClient("", alice, alicePW), alice, testMessage("m6"))
			waitMessages(t, s, alice, 1)
		})
	}
}

func TestStopSMTP(t *testing.T) {
	s := start(t, Options{TLS: true})
	c := mustSMTP(t, s, plain)
	require.NoError(t, c.Hello("client.test"))
	s.StopSMTP()
	assert.Error(t, c.Noop())
	for _, addr := range []string{s.SMTPAddr(), s.SMTPSAddr()} {
		_, err := net.DialTimeout("tcp", addr, wait)
		assert.Error(t, err)
	}
	loginIMAP(t, s, plain, alice, alicePW, nil)
}

func TestDeliveryHooks(t *testing.T) {
	const delay = 50 * time.Millisecond
	held := make(chan []byte, 1)
	release := make(chan struct{})
	visible := make(chan time.Time, 1)
	s := start(t, Options{
		DeliveryDelay: delay,
		OnDeliver: func(rcpt string, msg []byte) error {
			assert.Equal(t, bob, rcpt)
			held <- msg
			<-release
			return nil
		},
		OnVisible: func(rcpt string, at time.Time) {
			assert.Equal(t, bob, rcpt)
			visible <- at
		},
	})
	before := time.Now()
	sendAs(t, s, plain, sasl.NewPlainClient("", alice, alicePW), bob, testMessage("m7"))

	var msg []byte
	select {
	case msg = <-held:
	case <-time.After(wait):
		t.Fatal("OnDeliver not called")
	}
	assert.GreaterOrEqual(t, time.Since(before), delay)
	assert.True(t, bytes.HasPrefix(msg, []byte("Return-Path: ")))
	msgs, err := s.Mailbox(bob)
	require.NoError(t, err)
	assert.Empty(t, msgs, "held by OnDeliver")

	released := time.Now()
	close(release)
	select {
	case at := <-visible:
		assert.False(t, at.Before(released))
		msgs := waitMessages(t, s, bob, 1)
		assert.Equal(t, msg, msgs[0].Raw)
		assert.Equal(t, 1, s.Deliveries())
	case <-time.After(wait):
		t.Fatal("OnVisible not called")
	}
}

func TestOnDeliverErrorDrops(t *testing.T) {
	called := make(chan struct{})
	s := start(t, Options{OnDeliver: func(string, []byte) error {
		close(called)
		return errors.New("lost")
	}})
	sendAs(t, s, plain, sasl.NewPlainClient("", alice, alicePW), bob, testMessage("m8"))
	select {
	case <-called:
	case <-time.After(wait):
		t.Fatal("OnDeliver not called")
	}
	time.Sleep(20 * time.Millisecond)
	assert.Zero(t, s.Deliveries())
	msgs, err := s.Mailbox(bob)
	require.NoError(t, err)
	assert.Empty(t, msgs)
}

func TestAppendMailboxRoundTrip(t *testing.T) {
	s := start(t, Options{})
	first := []byte("From: x@y.test\r\nSubject: one\r\n\r\nordinary\r\n")
	second := []byte("Subject: two\r\n\r\n\x00binary-ish \xff\r\n")
	require.NoError(t, s.Append(bob, first, []imap.Flag{imap.FlagSeen, imap.FlagFlagged}))
	require.NoError(t, s.Append(bobUser, second, nil))

	msgs, err := s.Mailbox(bobUser)
	require.NoError(t, err)
	require.Len(t, msgs, 2)
	assert.Equal(t, imap.UID(1), msgs[0].UID)
	assert.Equal(t, imap.UID(2), msgs[1].UID)
	assert.Equal(t, first, msgs[0].Raw)
	assert.Equal(t, second, msgs[1].Raw)
	assert.ElementsMatch(t, []imap.Flag{imap.FlagSeen, imap.FlagFlagged}, msgs[0].Flags)
	assert.Empty(t, msgs[1].Flags)
	assert.False(t, msgs[0].InternalDate.IsZero())

	other, err := s.Mailbox(alice)
	require.NoError(t, err)
	assert.Empty(t, other)
	assert.Error(t, s.Append("nobody", first, nil))
	_, err = s.Mailbox("nobody")
	assert.Error(t, err)
}

func TestTLSMaterial(t *testing.T) {
	s := start(t, Options{})
	assert.Nil(t, s.CACertPEM())
	assert.Nil(t, s.ClientTLSConfig())
	assert.Empty(t, s.SMTPSAddr())
	assert.Empty(t, s.IMAPSAddr())

	s = start(t, Options{TLS: true})
	block, _ := pem.Decode(s.CACertPEM())
	require.NotNil(t, block)
	ca, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	assert.True(t, ca.IsCA)
	cfg := s.ClientTLSConfig()
	require.NotNil(t, cfg)
	// A client that only knows the host from the address verifies too.
	cfg.ServerName = ""
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: wait}, "tcp", s.IMAPSAddr(), cfg)
	require.NoError(t, err)
	require.NoError(t, conn.Close())
	for _, addr := range []string{s.SMTPAddr(), s.SMTPSAddr(), s.IMAPAddr(), s.IMAPSAddr()} {
		host, _, err := net.SplitHostPort(addr)
		require.NoError(t, err)
		assert.Equal(t, "127.0.0.1", host)
	}
}

func TestLoopbackOnly(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "192.0.2.1:25", "[::]:0", "example.com:25", "nonsense"} {
		_, err := Start(Options{SMTPListen: addr})
		assert.Error(t, err, addr)
		_, err = Start(Options{IMAPListen: addr})
		assert.Error(t, err, addr)
	}
	s, err := Start(Options{SMTPListen: "localhost:0", IMAPListen: "[::1]:0"})
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	require.NoError(t, s.Close())
}

func TestStartRejectsBadUsers(t *testing.T) {
	_, err := Start(Options{Users: []User{{Password: "x"}}})
	assert.Error(t, err)
	_, err = Start(Options{Users: []User{{Address: alice}, {Address: strings.ToUpper(alice)}}})
	assert.Error(t, err)
}

func TestCloseIsIdempotent(t *testing.T) {
	s, err := Start(Options{TLS: true, DisableIDLE: true})
	require.NoError(t, err)
	s.StopIMAP()
	s.StopSMTP()
	s.StopIMAP()
	require.NoError(t, s.Close())
	require.NoError(t, s.Close())
	_, err = s.Mailbox(alice)
	assert.Error(t, err)
}

func TestStripIDLE(t *testing.T) {
	for in, want := range map[string]string{
		"* CAPABILITY IMAP4rev1 IDLE UNSELECT\r\n":               "* CAPABILITY IMAP4rev1 UNSELECT\r\n",
		"a1 OK [CAPABILITY IMAP4rev1 IDLE MOVE] Logged in\r\n":   "a1 OK [CAPABILITY IMAP4rev1 MOVE] Logged in\r\n",
		"* OK [CAPABILITY IMAP4rev1 idle] IMAP server ready\r\n": "* OK [CAPABILITY IMAP4rev1] IMAP server ready\r\n",
		"* 1 FETCH (BODY[] {12}\r\n":                             "* 1 FETCH (BODY[] {12}\r\n",
		"a2 NO [CAPABILITY IDLE] odd\r\n":                        "a2 NO [CAPABILITY IDLE] odd\r\n",
		"* LIST () \"/\" \"x [CAPABILITY IDLE]\"\r\n":            "* LIST () \"/\" \"x [CAPABILITY IDLE]\"\r\n",
	} {
		assert.Equal(t, want, string(stripIDLE([]byte(in))), in)
	}
	for in, want := range map[string]int64{"a APPEND INBOX {12}\r\n": 12, "x {5+}\r\n": 5, "y ~{7}\r\n": 7} {
		n, ok := literalSize([]byte(in))
		assert.True(t, ok, in)
		assert.Equal(t, want, n)
	}
	for _, in := range []string{"a NOOP\r\n", "a OK {x}\r\n", "a OK done\r\n"} {
		_, ok := literalSize([]byte(in))
		assert.False(t, ok, in)
	}
}

func TestBearerCheck(t *testing.T) {
	const good, bad = "good-token-1", "bad-token-2"
	for _, opts := range []Options{{}, {DisableIDLE: true, TLS: true}} {
		t.Run(fmt.Sprintf("DisableIDLE=%v", opts.DisableIDLE), func(t *testing.T) {
			var calls atomic.Int64
			opts.BearerCheck = func(user, token string) bool {
				calls.Add(1)
				return token == good
			}
			s := start(t, opts)

			// SMTP: XOAUTH2 is offered next to the password mechanisms.
			c := mustSMTP(t, s, plain)
			require.NoError(t, c.Hello("client.test"))
			_, mechs := c.Extension("AUTH")
			assert.ElementsMatch(t, []string{"PLAIN", "LOGIN", "XOAUTH2"}, strings.Fields(mechs))
			require.NoError(t, c.Auth(saslx.NewXOAUTH2Client(alice, good)))
			require.NoError(t, submit(c, alice, bob, testMessage("oauth1")))
			require.NoError(t, c.Quit())
			waitMessages(t, s, bob, 1)

			// A refused token: the JSON challenge, then 535 5.7.8, and no
			// mail may be sent on that session.
			c = mustSMTP(t, s, plain)
			client := saslx.NewXOAUTH2Client(alice, bad)
			err := c.Auth(client)
			code, ec := smtpCode(t, err)
			assert.Equal(t, 535, code)
			assert.Equal(t, smtp.EnhancedCode{5, 7, 8}, ec)
			assert.NotContains(t, err.Error(), bad)
			if be := saslx.ServerError(client); assert.NotNil(t, be) {
				assert.Equal(t, "401", be.Status)
			}
			code, _ = smtpCode(t, c.Mail(alice, nil))
			assert.Equal(t, 530, code)

			// Passwords keep working.
			sendAs(t, s, plain, sasl.NewPlainClient("", alice, alicePW), bob, testMessage("pw"))
			waitMessages(t, s, bob, 2)

			// IMAP: AUTHENTICATE XOAUTH2 logs the session in as the user,
			// named by username or by address.
			for _, user := range []string{bobUser, bob} {
				ic, err := dialIMAP(t, s, plain, nil)
				require.NoError(t, err)
				assert.True(t, ic.Caps().Has("AUTH=XOAUTH2"), "%v", ic.Caps())
				assert.True(t, ic.Caps().Has("AUTH=PLAIN"), "%v", ic.Caps())
				require.NoError(t, ic.Authenticate(saslx.NewXOAUTH2Client(user, good)))
				sel, err := ic.Select("INBOX", nil).Wait()
				require.NoError(t, err)
				assert.Equal(t, uint32(2), sel.NumMessages, "%s sees bob's mailbox", user)
				require.NoError(t, ic.Logout().Wait())
			}

			// A refused token is NO [AUTHENTICATIONFAILED]; the session
			// stays usable and unauthenticated.
			ic, err := dialIMAP(t, s, plain, nil)
			require.NoError(t, err)
			client = saslx.NewXOAUTH2Client(bob, bad)
			err = ic.Authenticate(client)
			var ie *imap.Error
			require.ErrorAs(t, err, &ie)
			assert.Equal(t, imap.StatusResponseTypeNo, ie.Type)
			assert.Equal(t, imap.ResponseCodeAuthenticationFailed, ie.Code)
			assert.NotContains(t, err.Error(), bad)
			assert.NotNil(t, saslx.ServerError(client))
			_, err = ic.Select("INBOX", nil).Wait()
			assert.Error(t, err, "not signed in")
			require.NoError(t, ic.Authenticate(sasl.NewPlainClient("", bobUser, bobPW)), "PLAIN still works")
			_, err = ic.Select("INBOX", nil).Wait()
			require.NoError(t, err)
			require.NoError(t, ic.Logout().Wait())
			loginIMAP(t, s, plain, alice, alicePW, nil) // and LOGIN too

			// An unknown user is refused without asking BearerCheck.
			before := calls.Load()
			c = mustSMTP(t, s, plain)
			code, _ = smtpCode(t, c.Auth(saslx.NewXOAUTH2Client("nobody@a.test", good)))
			assert.Equal(t, 535, code)
			ic, err = dialIMAP(t, s, plain, nil)
			require.NoError(t, err)
			assert.Error(t, ic.Authenticate(saslx.NewXOAUTH2Client("nobody@a.test", good)))
			assert.Equal(t, before, calls.Load())
		})
	}
}

func TestBearerCheckRejectAuthAndOff(t *testing.T) {
	s := start(t, Options{RejectAuth: true, BearerCheck: func(string, string) bool { return true }})
	c := mustSMTP(t, s, plain)
	code, ec := smtpCode(t, c.Auth(saslx.NewXOAUTH2Client(alice, "any-token")))
	assert.Equal(t, 535, code, "RejectAuth refuses XOAUTH2 too")
	assert.Equal(t, smtp.EnhancedCode{5, 7, 8}, ec)

	// Without BearerCheck nothing changes: no XOAUTH2 anywhere.
	s = start(t, Options{})
	c = mustSMTP(t, s, plain)
	require.NoError(t, c.Hello("client.test"))
	_, mechs := c.Extension("AUTH")
	assert.Equal(t, "PLAIN LOGIN", mechs)
	code, _ = smtpCode(t, c.Auth(saslx.NewXOAUTH2Client(alice, "any-token")))
	assert.Equal(t, 504, code)
	ic, err := dialIMAP(t, s, plain, nil)
	require.NoError(t, err)
	assert.Equal(t, []string{"PLAIN"}, ic.Caps().AuthMechanisms())
	assert.Error(t, ic.Authenticate(saslx.NewXOAUTH2Client(alice, "any-token")))
}
