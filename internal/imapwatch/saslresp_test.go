package imapwatch

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emailqos/emailqosreceiver/internal/saslx"
	"github.com/emailqos/emailqosreceiver/internal/steps"
	"github.com/emailqos/emailqosreceiver/internal/transport"
)

// scriptedServer is a line-by-line IMAP server for the login phase, strict
// the way Dovecot 2.3 is: a SASL continuation response must be base64, so
// "=" gets "BAD Invalid base64 data in continued response". XOAUTH2 always
// fails with Google's JSON error challenge; LOGIN gets loginReply. It
// records every line the client sends.
type scriptedServer struct {
	addr       string
	loginReply string // after the tag, e.g. "NO [LIMIT] ..."
	greeting   string // instead of the OK greeting, e.g. "* BYE ..."

	mu    sync.Mutex
	lines []string
}

func startScripted(t *testing.T, sec transport.Security, loginReply string) *scriptedServer {
	return startScriptedGreeting(t, sec, loginReply, "")
}

func startScriptedGreeting(t *testing.T, sec transport.Security, loginReply, greeting string) *scriptedServer {
	t.Helper()
	cert, _ := testCert(t)
	tlsConf := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ss := &scriptedServer{addr: l.Addr().String(), loginReply: loginReply, greeting: greeting}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				ss.serve(c, sec, tlsConf)
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
	return ss
}

func (ss *scriptedServer) sent() []string {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return append([]string(nil), ss.lines...)
}

func (ss *scriptedServer) serve(c net.Conn, sec transport.Security, tlsConf *tls.Config) {
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if sec == transport.TLS {
		c = tls.Server(c, tlsConf)
	}
	caps := "IMAP4rev1 SASL-IR AUTH=XOAUTH2"
	if sec == transport.STARTTLS {
		caps = "IMAP4rev1 STARTTLS LOGINDISABLED"
	}
	r := bufio.NewReader(c)
	w := func(s string) { _, _ = c.Write([]byte(s + "\r\n")) }
	if ss.greeting != "" {
		w(ss.greeting)
		return
	}
	w("* OK [CAPABILITY " + caps + "] scripted ready")
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		ss.mu.Lock()
		ss.lines = append(ss.lines, line)
		ss.mu.Unlock()
		tag, rest, _ := strings.Cut(line, " ")
		verb, _, _ := strings.Cut(rest, " ")
		switch strings.ToUpper(verb) {
		case "CAPABILITY":
			w("* CAPABILITY " + caps)
			w(tag + " OK done")
		case "STARTTLS":
			w(tag + " OK begin TLS")
			tc := tls.Server(c, tlsConf)
			if tc.Handshake() != nil {
				return
			}
			c, r = tc, bufio.NewReader(tc)
			caps = "IMAP4rev1 SASL-IR AUTH=XOAUTH2"
		case "AUTHENTICATE":
			w("+ " + base64.StdEncoding.EncodeToString([]byte(`{"status":"401","schemes":"Bearer","scope":"https://mail.google.com/"}`)))
			resp, err := r.ReadString('\n')
			if err != nil {
				return
			}
			resp = strings.TrimRight(resp, "\r\n")
			ss.mu.Lock()
			ss.lines = append(ss.lines, resp)
			ss.mu.Unlock()
			if _, err := base64.StdEncoding.DecodeString(resp); err != nil {
				w(tag + " BAD Invalid base64 data in continued response")
			} else {
				w(tag + " NO [AUTHENTICATIONFAILED] Authentication failed")
			}
		case "LOGIN":
			w(tag + " " + ss.loginReply)
		case "LOGOUT":
			w("* BYE bye")
			w(tag + " OK done")
			return
		default:
			w(tag + " BAD unexpected")
		}
	}
}

func scriptedOptions(ss *scriptedServer, sec transport.Security) Options {
	_, pool := testCert(nil)
	o := Options{
		Endpoint:     transport.Endpoint{Address: ss.addr, Security: sec, TLSConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}},
		Credentials:  saslx.Credentials{Username: testUser, Password: testPassword},
		Method:       MethodPoll,
		PollInterval: 100 * time.Millisecond,
	}
	if sec == transport.None {
		o.AllowPlaintextAuth = true
	}
	return o
}

// TestXOAUTH2RefusedTokenIsAuth: after the server's JSON error challenge the
// client answers with an empty line (RFC 3501 section 6.2.2; Google's XOAUTH2
// documentation), not "=", which a strict server such as Dovecot refuses as
// invalid base64; the refusal is typed auth. After STARTTLS the client
// cannot write the empty line and abandons the exchange instead: still
// auth, and still no "=".
func TestXOAUTH2RefusedTokenIsAuth(t *testing.T) {
	for _, sec := range []transport.Security{transport.None, transport.TLS, transport.STARTTLS} {
		t.Run(string(sec), func(t *testing.T) {
			ss := startScripted(t, sec, "NO unused")
			opts := scriptedOptions(ss, sec)
			opts.Password = ""
			opts.Token = func(context.Context) (string, error) { return "ya29.refused-token", nil }
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := Open(ctx, opts, nil)
			requireStepErr(t, err, steps.CodeMailboxConnect, steps.TypeAuth)
			if strings.Contains(err.Error(), "ya29.refused-token") {
				t.Fatalf("token in error %q", err)
			}
			lines := ss.sent()
			auth := -1
			for i, l := range lines {
				if strings.Contains(l, "AUTHENTICATE XOAUTH2") {
					auth = i
				}
			}
			if auth < 0 {
				t.Fatalf("no AUTHENTICATE in %q", lines)
			}
			after := lines[auth+1:]
			for _, l := range after {
				if l == "=" {
					t.Fatalf("client answered the error challenge with %q: %q", l, lines)
				}
			}
			if sec != transport.STARTTLS && (len(after) == 0 || after[0] != "") {
				t.Fatalf("want an empty line after the challenge, client sent %q", after)
			}
		})
	}
}

// TestLoginRefusalTypes: a refused LOGIN is typed by its RFC 5530 response
// code, so that a connection limit or a server outage does not read as bad
// credentials; a refusal without a telling code stays auth.
func TestLoginRefusalTypes(t *testing.T) {
	for _, tc := range []struct{ reply, want string }{
		{"NO [LIMIT] Maximum number of connections from user+IP exceeded (mail_max_userip_connections=10)", steps.TypeLimit},
		{"NO Maximum number of connections from user+IP exceeded (mail_max_userip_connections=10)", steps.TypeLimit},
		{"NO [UNAVAILABLE] Maximum number of connections from user+IP exceeded (mail_max_userip_connections=1)", steps.TypeLimit},
		{"NO [OVERQUOTA] Quota exceeded", steps.TypeLimit},
		{"NO [UNAVAILABLE] Temporary authentication failure. [host:2026-12-05 18:00:00]", steps.TypeUnavailable},
		{"BAD [UNAVAILABLE] backend down", steps.TypeUnavailable},
		{"NO [INUSE] Mailbox is locked by another session", steps.TypeInUse},
		{"NO [PRIVACYREQUIRED] Use TLS first", steps.TypeTLS},
		{"NO [AUTHENTICATIONFAILED] Authentication failed.", steps.TypeAuth},
		{"NO [AUTHORIZATIONFAILED] Not allowed to use this mailbox", steps.TypeAuth},
		{"NO [EXPIRED] Password expired", steps.TypeAuth},
		{"NO [CONTACTADMIN] Account locked", steps.TypeAuth},
		{"NO [ALERT] Invalid credentials", steps.TypeAuth},
		{"NO Login failed", steps.TypeAuth},
	} {
		t.Run(tc.reply, func(t *testing.T) {
			ss := startScripted(t, transport.None, tc.reply)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := Open(ctx, scriptedOptions(ss, transport.None), nil)
			se := requireStepErr(t, err, steps.CodeMailboxConnect, tc.want)
			if se.Step != steps.IMAPLogin {
				t.Fatalf("step %q", se.Step)
			}
		})
	}
}

// TestGreetingRefusalTypes: a server that refuses the connection in its
// greeting (BYE) is typed by the same codes, at imap.connect.
func TestGreetingRefusalTypes(t *testing.T) {
	for _, tc := range []struct{ greeting, want string }{
		{"* BYE Maximum number of connections from user+IP exceeded (mail_max_userip_connections=10)", steps.TypeLimit},
		{"* BYE [UNAVAILABLE] Server shutting down", steps.TypeUnavailable},
		{"* BYE go away", steps.TypeRejected},
	} {
		t.Run(tc.greeting, func(t *testing.T) {
			ss := startScriptedGreeting(t, transport.None, "NO unused", tc.greeting)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := Open(ctx, scriptedOptions(ss, transport.None), nil)
			se := requireStepErr(t, err, steps.CodeMailboxConnect, tc.want)
			if se.Step != steps.IMAPConnect {
				t.Fatalf("step %q", se.Step)
			}
		})
	}
}
