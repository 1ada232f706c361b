package pop3_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"go.uber.org/goleak"

	"github.com/emailqos/emailqosreceiver/internal/pop3"
	"github.com/emailqos/emailqosreceiver/internal/pop3test"
	"github.com/emailqos/emailqosreceiver/internal/steps"
	"github.com/emailqos/emailqosreceiver/internal/transport"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	user = "alice"
	pass = "s3cret-Pa55"
)

func startServer(t testing.TB, opts pop3test.Options) *pop3test.Server {
	t.Helper()
	if opts.Users == nil {
		opts.Users = map[string]string{user: pass}
	}
	s, err := pop3test.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// connect dials addr with the connection bound to a test-scoped context, as
// the probe does, and reads the greeting.
func connect(t testing.TB, addr string, security transport.Security, cfg *tls.Config) *pop3.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	conn, err := transport.Dial(ctx, transport.Endpoint{Address: addr, Security: security, TLSConfig: cfg},
		"pop3.connect", "pop3.tls", &steps.Recorder{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c, err := pop3.NewClient(conn)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func tlsConfigs(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	server, client, err := pop3test.SelfSignedTLS()
	if err != nil {
		t.Fatal(err)
	}
	return server, client
}

func msg(subject, body string) []byte {
	return []byte("Subject: " + subject + "\r\nFrom: probe@example.com\r\n\r\n" + body)
}

func TestPlainUserPassSession(t *testing.T) {
	s := startServer(t, pop3test.Options{})
	s.Add(user, msg("one", "line 1\r\nline 2\r\nline 3\r\n"))
	s.Add(user, msg("two", "x\r\n"))
	c := connect(t, s.Addr(), transport.None, nil)

	caps, err := c.Capabilities()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"USER", "UIDL", "TOP"} {
		if _, ok := caps[k]; !ok {
			t.Errorf("capability %s missing from %v", k, caps)
		}
	}
	if _, ok := caps["STLS"]; ok {
		t.Error("STLS offered by a server without TLS")
	}
	if err := c.User(user, pass); err != nil {
		t.Fatal(err)
	}
	n, size, err := c.Stat()
	if err != nil || n != 2 || size <= 0 {
		t.Fatalf("Stat = %d, %d, %v", n, size, err)
	}
	ids, err := c.UIDL()
	if err != nil || len(ids) != 2 || ids[0].Num != 1 || ids[1].Num != 2 || ids[0].UID == ids[1].UID {
		t.Fatalf("UIDL = %+v, %v", ids, err)
	}
	top, err := c.Top(1, 1)
	if err != nil {
		t.Fatal(err)
	}
	if want := "Subject: one\r\nFrom: probe@example.com\r\n\r\nline 1\r\n"; string(top) != want {
		t.Errorf("Top = %q, want %q", top, want)
	}
	if err := c.Noop(); err != nil {
		t.Fatal(err)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	// CAPA USER PASS STAT UIDL TOP NOOP QUIT
	if got := c.Commands(); got != 8 {
		t.Errorf("Commands = %d, want 8", got)
	}
	if err := c.Noop(); err == nil {
		t.Error("Noop after Quit succeeded")
	}
}

func TestWrongPassword(t *testing.T) {
	s := startServer(t, pop3test.Options{})
	c := connect(t, s.Addr(), transport.None, nil)
	err := c.User(user, "wrong-"+pass)
	var perr *pop3.Error
	if !errors.As(err, &perr) || perr.Command != "PASS" || perr.Code() != "AUTH" {
		t.Fatalf("User = %v, want -ERR [AUTH] to PASS", err)
	}
	if strings.Contains(err.Error(), pass) {
		t.Errorf("error reveals the password: %v", err)
	}
	if got := pop3.ErrorType(err); got != steps.TypeAuth {
		t.Errorf("ErrorType = %q", got)
	}
	// A -ERR leaves the session usable.
	if err := c.User(user, pass); err != nil {
		t.Fatal(err)
	}
}

// A user name or password that cannot be sent is refused before anything
// goes out, typed config (the account's configuration), never protocol, and
// without quoting the argument.
func TestUnsendableArgumentIsConfig(t *testing.T) {
	s := startServer(t, pop3test.Options{})
	c := connect(t, s.Addr(), transport.None, nil)
	for _, args := range [][2]string{{"al\x00ice", pass}, {user + "\r\nQUIT", pass}, {user, "pw\nDELE 1"}} {
		err := c.User(args[0], args[1])
		if err == nil {
			t.Fatalf("User(%q) succeeded", args[0])
		}
		if got := pop3.ErrorType(err); got != steps.TypeConfig {
			t.Errorf("User(%q): ErrorType = %q, want config (%v)", args[0], got, err)
		}
		if strings.Contains(err.Error(), "DELE") || strings.Contains(err.Error(), "QUIT") {
			t.Errorf("error quotes the argument: %v", err)
		}
	}
	// Nothing was sent: the session still logs in.
	if err := c.User(user, pass); err != nil {
		t.Fatal(err)
	}
}

func TestSTLS(t *testing.T) {
	srvCfg, cliCfg := tlsConfigs(t)
	s := startServer(t, pop3test.Options{TLSConfig: srvCfg})
	s.Add(user, msg("tls", "body\r\n"))
	c := connect(t, s.Addr(), transport.STARTTLS, nil)
	caps, err := c.Capabilities()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := caps["STLS"]; !ok {
		t.Fatalf("STLS not offered: %v", caps)
	}
	if err := c.StartTLS(cliCfg); err != nil {
		t.Fatal(err)
	}
	caps, err = c.Capabilities()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := caps["STLS"]; ok {
		t.Error("capabilities were not re-read after STLS")
	}
	if err := c.StartTLS(cliCfg); err == nil {
		t.Error("second StartTLS succeeded")
	}
	if err := c.User(user, pass); err != nil {
		t.Fatal(err)
	}
	if ids, err := c.UIDL(); err != nil || len(ids) != 1 {
		t.Fatalf("UIDL = %v, %v", ids, err)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
}

func TestSTLSUntrustedCertificate(t *testing.T) {
	srvCfg, _ := tlsConfigs(t)
	s := startServer(t, pop3test.Options{TLSConfig: srvCfg})
	c := connect(t, s.Addr(), transport.STARTTLS, nil)
	err := c.StartTLS(&tls.Config{ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
	if err == nil {
		t.Fatal("handshake with an untrusted certificate succeeded")
	}
	if got := pop3.ErrorType(err); got != steps.TypeTLS {
		t.Errorf("ErrorType(%v) = %q, want tls", err, got)
	}
	if err := c.User(user, pass); err == nil {
		t.Error("credentials sent after a failed handshake")
	}
}

func TestSTLSRefused(t *testing.T) {
	srvCfg, cliCfg := tlsConfigs(t)
	s := startServer(t, pop3test.Options{TLSConfig: srvCfg, DisableSTLS: true})
	c := connect(t, s.Addr(), transport.STARTTLS, nil)
	err := c.StartTLS(cliCfg)
	var perr *pop3.Error
	if !errors.As(err, &perr) || perr.Command != "STLS" || pop3.ErrorType(err) != steps.TypeTLS {
		t.Fatalf("StartTLS = %v", err)
	}
}

func TestImplicitTLS(t *testing.T) {
	srvCfg, cliCfg := tlsConfigs(t)
	s := startServer(t, pop3test.Options{TLSConfig: srvCfg})
	s.Add(user, msg("implicit", "body\r\n"))
	c := connect(t, s.TLSAddr(), transport.TLS, cliCfg)
	if err := c.StartTLS(cliCfg); err == nil {
		t.Error("StartTLS over implicit TLS succeeded")
	}
	if err := c.User(user, pass); err != nil {
		t.Fatal(err)
	}
	if n, _, err := c.Stat(); err != nil || n != 1 {
		t.Fatalf("Stat = %d, %v", n, err)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
}

func TestAuthPlain(t *testing.T) {
	s := startServer(t, pop3test.Options{SASL: true})
	c := connect(t, s.Addr(), transport.None, nil)
	caps, err := c.Capabilities()
	if err != nil || !contains(caps["SASL"], "PLAIN") {
		t.Fatalf("SASL capability = %v, %v", caps["SASL"], err)
	}
	err = c.Auth(sasl.NewPlainClient("", user, "bad"))
	var perr *pop3.Error
	if !errors.As(err, &perr) || perr.Command != "AUTH" || pop3.ErrorType(err) != steps.TypeAuth {
		t.Fatalf("Auth with a bad password = %v", err)
	}
	if err := c.Auth(sasl.NewPlainClient("", user, pass)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Stat(); err != nil {
		t.Fatal(err)
	}
}

// xoauth2 is Google's XOAUTH2 mechanism, which go-sasl no longer ships.
type xoauth2 struct{ user, token string }

func (x xoauth2) Start() (string, []byte, error) {
	return "XOAUTH2", []byte("user=" + x.user + "\x01auth=Bearer " + x.token + "\x01\x01"), nil
}

// Next answers the server's JSON error with the empty response it expects.
func (x xoauth2) Next([]byte) ([]byte, error) { return []byte{}, nil }

func TestAuthBearer(t *testing.T) {
	good := strings.Repeat("t", 400) // long enough to push the AUTH line past 255 octets
	s := startServer(t, pop3test.Options{SASL: true, BearerCheck: func(u, tok string) bool {
		return u == user && tok == good
	}})
	for _, tc := range []struct {
		name string
		mech func(token string) sasl.Client
	}{
		{"XOAUTH2", func(tok string) sasl.Client { return xoauth2{user, tok} }},
		{"OAUTHBEARER", func(tok string) sasl.Client {
			return sasl.NewOAuthBearerClient(&sasl.OAuthBearerOptions{Username: user, Token: tok})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, tok := range []string{"short", good} {
				c := connect(t, s.Addr(), transport.None, nil)
				err := c.Auth(tc.mech("wrong-" + tok))
				if err == nil || pop3.ErrorType(err) != steps.TypeAuth {
					t.Fatalf("Auth with a bad token = %v (%s)", err, pop3.ErrorType(err))
				}
				if strings.Contains(err.Error(), tok) {
					t.Errorf("error reveals the token: %v", err)
				}
				// The session survives a refused AUTH.
				if err := c.Auth(tc.mech(tok)); (err == nil) != (tok == good) {
					t.Fatalf("Auth(%d-octet token) = %v", len(tok), err)
				}
			}
		})
	}
}

func TestDeleteThenQuitRemovesExactlyThatMessage(t *testing.T) {
	s := startServer(t, pop3test.Options{})
	for i := 1; i <= 3; i++ {
		s.Add(user, msg(fmt.Sprint("m", i), "body\r\n"))
	}
	c := connect(t, s.Addr(), transport.None, nil)
	if err := c.User(user, pass); err != nil {
		t.Fatal(err)
	}
	ids, err := c.UIDL()
	if err != nil || len(ids) != 3 {
		t.Fatalf("UIDL = %v, %v", ids, err)
	}
	top, err := c.Top(ids[1].Num, 0)
	if err != nil || !strings.Contains(string(top), "Subject: m2") {
		t.Fatalf("Top = %q, %v", top, err)
	}
	if err := c.Dele(ids[1].Num); err != nil {
		t.Fatal(err)
	}
	if len(s.Messages(user)) != 3 {
		t.Fatal("deleted before QUIT")
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	got := s.Messages(user)
	if len(got) != 2 || !strings.Contains(string(got[0]), "m1") || !strings.Contains(string(got[1]), "m3") {
		t.Fatalf("maildrop after QUIT: %q", got)
	}

	c = connect(t, s.Addr(), transport.None, nil)
	if err := c.User(user, pass); err != nil {
		t.Fatal(err)
	}
	after, err := c.UIDL()
	if err != nil || len(after) != 2 || after[0].UID != ids[0].UID || after[1].UID != ids[2].UID {
		t.Fatalf("UIDL after delete = %v, %v; before %v", after, err, ids)
	}
}

func TestDeleteWithoutQuitKeepsMessage(t *testing.T) {
	s := startServer(t, pop3test.Options{})
	s.Add(user, msg("keep", "body\r\n"))
	c := connect(t, s.Addr(), transport.None, nil)
	if err := c.User(user, pass); err != nil {
		t.Fatal(err)
	}
	if err := c.Dele(1); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c = connect(t, s.Addr(), transport.None, nil)
	if err := c.User(user, pass); err != nil {
		t.Fatal(err)
	}
	if n, _, err := c.Stat(); err != nil || n != 1 || len(s.Messages(user)) != 1 {
		t.Fatalf("Stat = %d, %v: the deletion of a session without QUIT was applied", n, err)
	}
}

func TestFailQuit(t *testing.T) {
	s := startServer(t, pop3test.Options{FailQuit: true})
	s.Add(user, msg("stays", "body\r\n"))
	c := connect(t, s.Addr(), transport.None, nil)
	if err := c.User(user, pass); err != nil {
		t.Fatal(err)
	}
	if err := c.Dele(1); err != nil {
		t.Fatal(err)
	}
	err := c.Quit()
	var perr *pop3.Error
	if !errors.As(err, &perr) || perr.Command != "QUIT" || pop3.ErrorType(err) != steps.TypeUnavailable {
		t.Fatalf("Quit = %v", err)
	}
	if len(s.Messages(user)) != 1 {
		t.Fatal("deletion applied despite -ERR to QUIT")
	}
}

func TestFailDele(t *testing.T) {
	s := startServer(t, pop3test.Options{FailDele: true})
	s.Add(user, msg("stays", "body\r\n"))
	c := connect(t, s.Addr(), transport.None, nil)
	if err := c.User(user, pass); err != nil {
		t.Fatal(err)
	}
	var perr *pop3.Error
	if err := c.Dele(1); !errors.As(err, &perr) || perr.Command != "DELE" {
		t.Fatalf("Dele = %v", err)
	}
	if err := c.Dele(0); err == nil {
		t.Fatal("Dele(0) succeeded")
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
}

func TestNoCAPA(t *testing.T) {
	s := startServer(t, pop3test.Options{NoCAPA: true})
	s.Add(user, msg("old", "body\r\n"))
	c := connect(t, s.Addr(), transport.None, nil)
	caps, err := c.Capabilities()
	if err != nil || caps == nil || len(caps) != 0 {
		t.Fatalf("Capabilities = %v, %v; want an empty map", caps, err)
	}
	if err := c.User(user, pass); err != nil {
		t.Fatal(err)
	}
	if ids, err := c.UIDL(); err != nil || len(ids) != 1 {
		t.Fatalf("UIDL = %v, %v", ids, err)
	}
}

func TestDotUnstuffing(t *testing.T) {
	s := startServer(t, pop3test.Options{})
	body := ".starts with a dot\r\n..two dots\r\n.\r\nafter a lone dot\r\n"
	s.Add(user, msg("dots", body))
	c := connect(t, s.Addr(), transport.None, nil)
	if err := c.User(user, pass); err != nil {
		t.Fatal(err)
	}
	top, err := c.Top(1, 4)
	if err != nil {
		t.Fatal(err)
	}
	if want := string(msg("dots", body)); string(top) != want {
		t.Errorf("Top = %q, want %q", top, want)
	}
}

// rawServer serves one connection with fn and stops it when the test ends.
func rawServer(t *testing.T, fn func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		fn(c)
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

func TestOversizeLine(t *testing.T) {
	long := strings.Repeat("a", pop3.MaxLineLength+1)
	addr := rawServer(t, func(c net.Conn) {
		fmt.Fprintf(c, "+OK %s\r\n", long)
		c.Read(make([]byte, 1)) // wait for the client to hang up
	})
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = pop3.NewClient(conn)
	if !errors.Is(err, pop3.ErrLineTooLong) || pop3.ErrorType(err) != steps.TypeProtocol {
		t.Fatalf("NewClient = %v, want ErrLineTooLong", err)
	}
}

func TestStalledServerEndsWithContext(t *testing.T) {
	stop := make(chan struct{})
	addr := rawServer(t, func(c net.Conn) {
		c.Write([]byte("+OK ready\r\n"))
		<-stop // read nothing, answer nothing
	})
	defer close(stop)

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	conn := transport.Bind(ctx, raw)
	defer conn.Close()
	c, err := pop3.NewClient(conn)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, _, err = c.Stat()
	if err == nil {
		t.Fatal("Stat on a stalled server succeeded")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Stat returned after %v", d)
	}
	if f := steps.Fail(ctx, "pop3.stat", pop3.ErrorType(err), err); f.Type != steps.TypeTimeout {
		t.Errorf("failure type = %q, want timeout", f.Type)
	}
}

func TestErrorGreeting(t *testing.T) {
	addr := rawServer(t, func(c net.Conn) {
		c.Write([]byte("-ERR [SYS/TEMP] too many connections\r\n"))
	})
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = pop3.NewClient(conn)
	var perr *pop3.Error
	if !errors.As(err, &perr) || perr.Command != "" || pop3.ErrorType(err) != steps.TypeUnavailable {
		t.Fatalf("NewClient = %v", err)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func BenchmarkUIDL10000(b *testing.B) {
	s := startServer(b, pop3test.Options{})
	raw := msg("bench", "body\r\n")
	for range 10000 {
		s.Add(user, raw)
	}
	c := connect(b, s.Addr(), transport.None, nil)
	if err := c.User(user, pass); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		ids, err := c.UIDL()
		if err != nil || len(ids) != 10000 {
			b.Fatalf("UIDL = %d ids, %v", len(ids), err)
		}
	}
}
