package pop3test_test

import (
	"crypto/tls"
	"encoding/base64"
	"net"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/emailqos/emailqosreceiver/internal/pop3test"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// These tests speak raw POP3 with net/textproto so that the server is
// checked independently of the client package.

type rawConn struct {
	t  *testing.T
	c  net.Conn
	tp *textproto.Conn
}

func start(t *testing.T, opts pop3test.Options) *pop3test.Server {
	t.Helper()
	if opts.Users == nil {
		opts.Users = map[string]string{"alice": "secret"}
	}
	s, err := pop3test.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

func dial(t *testing.T, addr string, cfg *tls.Config) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if cfg != nil {
		c = tls.Client(c, cfg)
	}
	// A deadline keeps a broken server from hanging the test.
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	r := &rawConn{t: t, c: c, tp: textproto.NewConn(c)}
	r.expect("+OK")
	return r
}

func (r *rawConn) line() string {
	r.t.Helper()
	l, err := r.tp.ReadLine()
	if err != nil {
		r.t.Fatalf("read: %v", err)
	}
	return l
}

func (r *rawConn) expect(prefix string) string {
	r.t.Helper()
	l := r.line()
	if !strings.HasPrefix(l, prefix) {
		r.t.Fatalf("got %q, want prefix %q", l, prefix)
	}
	return l
}

// do sends a command and checks the status line's prefix.
func (r *rawConn) do(cmd, want string) string {
	r.t.Helper()
	if err := r.tp.PrintfLine("%s", cmd); err != nil {
		r.t.Fatal(err)
	}
	return r.expect(want)
}

// multi sends a command expecting a multi-line +OK response and returns its
// lines still dot-stuffed.
func (r *rawConn) multi(cmd string) []string {
	r.t.Helper()
	r.do(cmd, "+OK")
	var out []string
	for {
		l := r.line()
		if l == "." {
			return out
		}
		out = append(out, l)
	}
}

func (r *rawConn) login() {
	r.t.Helper()
	r.do("USER alice", "+OK")
	r.do("PASS secret", "+OK")
}

func TestCAPA(t *testing.T) {
	srvCfg, _, err := pop3test.SelfSignedTLS()
	if err != nil {
		t.Fatal(err)
	}
	s := start(t, pop3test.Options{TLSConfig: srvCfg, SASL: true, BearerCheck: func(string, string) bool { return false }})
	r := dial(t, s.Addr(), nil)
	caps := strings.Join(r.multi("CAPA"), "\n")
	for _, want := range []string{"TOP", "UIDL", "USER", "STLS", "SASL PLAIN XOAUTH2 OAUTHBEARER"} {
		if !strings.Contains(caps, want) {
			t.Errorf("CAPA %q lacks %q", caps, want)
		}
	}
	r.login()
	if caps := strings.Join(r.multi("CAPA"), "\n"); strings.Contains(caps, "STLS") || strings.Contains(caps, "SASL") {
		t.Errorf("CAPA after login still offers login capabilities: %q", caps)
	}

	plain := start(t, pop3test.Options{NoCAPA: true})
	dial(t, plain.Addr(), nil).do("CAPA", "-ERR")
	if s.TLSAddr() == "" || plain.TLSAddr() != "" {
		t.Errorf("TLSAddr = %q, %q", s.TLSAddr(), plain.TLSAddr())
	}
}

func TestLoginAndState(t *testing.T) {
	s := start(t, pop3test.Options{})
	r := dial(t, s.Addr(), nil)
	r.do("STAT", "-ERR")
	r.do("PASS secret", "-ERR")
	r.do("USER alice", "+OK")
	r.do("PASS wrong", "-ERR [AUTH]")
	r.do("USER bob", "+OK")
	r.do("PASS secret", "-ERR [AUTH]")
	r.login()
	r.do("USER alice", "-ERR")
	r.do("FOO", "-ERR")
	r.do("NOOP", "+OK")
	r.do("QUIT", "+OK")
}

func TestSnapshotDeleteAndUpdate(t *testing.T) {
	s := start(t, pop3test.Options{})
	s.Add("alice", []byte("Subject: one\n\nbody one\n"))
	s.Add("alice", []byte("Subject: two\r\n\r\nbody two\r\n"))

	a := dial(t, s.Addr(), nil)
	a.login()
	s.Add("alice", []byte("Subject: three\n\nlate\n"))
	if got := a.do("STAT", "+OK"); got != "+OK 2 52" {
		t.Errorf("STAT in old session = %q, want the login snapshot", got)
	}
	uids := a.multi("UIDL")
	if len(uids) != 2 {
		t.Fatalf("UIDL = %q", uids)
	}
	a.do("DELE 1", "+OK")
	a.do("DELE 1", "-ERR")
	a.do("RETR 1", "-ERR")
	a.do("STAT", "+OK 1 ")
	a.do("RSET", "+OK")
	a.do("STAT", "+OK 2 ")
	a.do("DELE 9", "-ERR")
	a.do("DELE 2", "+OK")
	if len(s.Messages("alice")) != 3 {
		t.Fatal("DELE took effect before QUIT")
	}
	a.do("QUIT", "+OK")

	msgs := s.Messages("alice")
	if len(msgs) != 2 || !strings.Contains(string(msgs[0]), "one") || !strings.Contains(string(msgs[1]), "three") {
		t.Fatalf("after QUIT: %q", msgs)
	}
	b := dial(t, s.Addr(), nil)
	b.login()
	if got := b.multi("UIDL"); len(got) != 2 || !strings.HasSuffix(got[0], strings.Fields(uids[0])[1]) {
		t.Errorf("UIDL in new session = %q; first uid must stay %q", got, uids[0])
	}
}

func TestDropWithoutQuitKeepsMessages(t *testing.T) {
	s := start(t, pop3test.Options{})
	s.Add("alice", []byte("Subject: x\n\nx\n"))
	r := dial(t, s.Addr(), nil)
	r.login()
	r.do("DELE 1", "+OK")
	r.c.Close()
	// A new session is only served once the old one is gone or not; either
	// way the deletion must not have been applied.
	n := dial(t, s.Addr(), nil)
	n.login()
	n.do("STAT", "+OK 1 ")
	if len(s.Messages("alice")) != 1 {
		t.Fatal("message deleted without QUIT")
	}
}

func TestFailDeleAndQuit(t *testing.T) {
	s := start(t, pop3test.Options{FailDele: true})
	s.Add("alice", []byte("a\n"))
	r := dial(t, s.Addr(), nil)
	r.login()
	r.do("DELE 1", "-ERR [SYS/TEMP]")

	q := start(t, pop3test.Options{FailQuit: true})
	q.Add("alice", []byte("a\n"))
	r = dial(t, q.Addr(), nil)
	r.login()
	r.do("DELE 1", "+OK")
	r.do("QUIT", "-ERR")
	if len(q.Messages("alice")) != 1 {
		t.Fatal("failed QUIT applied deletions")
	}
}

func TestTopDotStuffing(t *testing.T) {
	s := start(t, pop3test.Options{})
	s.Add("alice", []byte("Subject: dots\n\n.hidden\n..two\n.\nlast\n"))
	r := dial(t, s.Addr(), nil)
	r.login()
	got := r.multi("TOP 1 3")
	want := []string{"Subject: dots", "", "..hidden", "...two", ".."}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("TOP = %q, want %q", got, want)
	}
	if got := r.multi("TOP 1 0"); len(got) != 2 {
		t.Errorf("TOP 1 0 = %q", got)
	}
	if got := r.multi("RETR 1"); len(got) != 6 {
		t.Errorf("RETR = %q", got)
	}
	r.do("TOP 1", "-ERR")
	r.do("LIST 1", "+OK 1 ")
}

func TestSTLSAndImplicitTLS(t *testing.T) {
	srvCfg, cliCfg, err := pop3test.SelfSignedTLS()
	if err != nil {
		t.Fatal(err)
	}
	s := start(t, pop3test.Options{TLSConfig: srvCfg})
	r := dial(t, s.Addr(), nil)
	r.do("STLS", "+OK")
	tc := tls.Client(r.c, cliCfg)
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	r = &rawConn{t: t, c: tc, tp: textproto.NewConn(tc)}
	if caps := r.multi("CAPA"); strings.Contains(strings.Join(caps, " "), "STLS") {
		t.Errorf("STLS still offered over TLS: %q", caps)
	}
	r.do("STLS", "-ERR")
	r.login()

	it := dial(t, s.TLSAddr(), cliCfg)
	it.do("STLS", "-ERR")
	it.login()

	no := start(t, pop3test.Options{TLSConfig: srvCfg, DisableSTLS: true})
	dial(t, no.Addr(), nil).do("STLS", "-ERR")
}

func TestAuthPlain(t *testing.T) {
	s := start(t, pop3test.Options{SASL: true})
	ir := base64.StdEncoding.EncodeToString([]byte("\x00alice\x00secret"))
	r := dial(t, s.Addr(), nil)
	r.do("AUTH PLAIN "+ir, "+OK")

	// Without an initial response the server sends an empty challenge.
	r = dial(t, s.Addr(), nil)
	r.do("AUTH PLAIN", "+ ")
	r.do(ir, "+OK")

	r = dial(t, s.Addr(), nil)
	r.do("AUTH PLAIN", "+ ")
	r.do("*", "-ERR")
	r.do("AUTH PLAIN "+base64.StdEncoding.EncodeToString([]byte("\x00alice\x00nope")), "-ERR [AUTH]")
	r.do("AUTH PLAIN !!!", "-ERR")
	r.do("AUTH CRAM-MD5", "-ERR")
	r.do("AUTH XOAUTH2", "-ERR") // no BearerCheck

	off := start(t, pop3test.Options{})
	dial(t, off.Addr(), nil).do("AUTH PLAIN "+ir, "-ERR")
}

func TestAuthBearer(t *testing.T) {
	s := start(t, pop3test.Options{SASL: true, BearerCheck: func(user, token string) bool {
		return user == "alice" && token == "tok"
	}})
	enc := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	r := dial(t, s.Addr(), nil)
	r.do("AUTH XOAUTH2 "+enc("user=alice\x01auth=Bearer tok\x01\x01"), "+OK")
	r = dial(t, s.Addr(), nil)
	r.do("AUTH OAUTHBEARER "+enc("n,a=alice,\x01host=x\x01auth=Bearer tok\x01\x01"), "+OK")

	r = dial(t, s.Addr(), nil)
	r.do("AUTH OAUTHBEARER "+enc("n,a=alice,\x01auth=Bearer bad\x01\x01"), "+ ")
	r.do(enc("\x01"), "-ERR [AUTH]")
	r.do("AUTH XOAUTH2 "+enc("user=alice\x01auth=Bearer bad\x01\x01"), "+ ")
	r.do("", "-ERR [AUTH]")
}

func TestLongLineEndsSession(t *testing.T) {
	s := start(t, pop3test.Options{})
	r := dial(t, s.Addr(), nil)
	r.do("USER "+strings.Repeat("a", 70<<10), "-ERR line too long")
	if _, err := r.tp.ReadLine(); err == nil {
		t.Fatal("session still open after an oversize line")
	}
}

func TestCloseWithOpenSessions(t *testing.T) {
	srvCfg, _, err := pop3test.SelfSignedTLS()
	if err != nil {
		t.Fatal(err)
	}
	s, err := pop3test.Start(pop3test.Options{TLSConfig: srvCfg})
	if err != nil {
		t.Fatal(err)
	}
	idle := dial(t, s.Addr(), nil)
	// A client that never starts its handshake on the implicit-TLS port.
	c, err := net.Dial("tcp", s.TLSAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	done := make(chan error, 1)
	go func() { done <- s.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close hangs with open sessions")
	}
	if _, err := idle.tp.ReadLine(); err == nil {
		t.Fatal("session survived Close")
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
