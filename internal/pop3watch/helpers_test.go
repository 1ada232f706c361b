package pop3watch

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emailqos/emailqosreceiver/internal/faultnet"
	"github.com/emailqos/emailqosreceiver/internal/pop3test"
	"github.com/emailqos/emailqosreceiver/internal/probemsg"
	"github.com/emailqos/emailqosreceiver/internal/saslx"
	"github.com/emailqos/emailqosreceiver/internal/steps"
	"github.com/emailqos/emailqosreceiver/internal/transport"
)

const (
	testUser     = "probe@example.test"
	testPassword = "pw-Zq8!hunter2-secret"
	testSender   = "sender@example.test"
)

// env is a pop3test server with one user, and the key its probes are
// signed with.
type env struct {
	srv       *pop3test.Server
	clientTLS *tls.Config
	key       []byte
	proxy     *proxy // in front of the plain listener, when asked for
}

func newEnv(t testing.TB, o pop3test.Options) *env {
	t.Helper()
	if o.Users == nil {
		o.Users = map[string]string{testUser: testPassword}
	}
	serverTLS, clientTLS, err := pop3test.SelfSignedTLS()
	if err != nil {
		t.Fatal(err)
	}
	if o.TLSConfig == nil {
		o.TLSConfig = serverTLS
	}
	srv, err := pop3test.Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return &env{srv: srv, clientTLS: clientTLS, key: probemsg.DeriveKey([]byte("test secret"), testUser)}
}

// withProxy routes plain connections through a recording proxy.
func (e *env) withProxy(t testing.TB) *env {
	e.proxy = newProxy(t, e.srv.Addr())
	return e
}

func (e *env) options(sec transport.Security) Options {
	addr := e.srv.Addr()
	if e.proxy != nil {
		addr = e.proxy.addr()
	}
	if sec == transport.TLS {
		addr = e.srv.TLSAddr()
	}
	return Options{
		Endpoint:           transport.Endpoint{Address: addr, Security: sec, TLSConfig: e.clientTLS},
		Credentials:        saslx.Credentials{Username: testUser, Password: testPassword},
		AllowPlaintextAuth: sec == transport.None,
		PollInterval:       time.Second,
	}
}

// probe makes a probe signed with key.
func (e *env) probe(t testing.TB, key []byte) (probemsg.Probe, []byte) {
	t.Helper()
	p, err := probemsg.New(testSender, testUser, "pop3watch test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return p, p.Build(key)
}

// accept takes only p itself, verified with the env's key, counting calls.
func (e *env) accept(p probemsg.Probe, calls *atomic.Int32) func([]byte) bool {
	return func(h []byte) bool {
		if calls != nil {
			calls.Add(1)
		}
		got, err := probemsg.Parse(h, e.key)
		return err == nil && got.Token == p.Token && got.SentAt.Equal(p.SentAt)
	}
}

// addLater delivers raw after d, as the MTA would while Wait runs; the
// returned function waits for it and gives the instants around it.
func (e *env) addLater(t testing.TB, d time.Duration, raw []byte) func() (before, after time.Time) {
	var (
		wg            sync.WaitGroup
		before, after time.Time
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		time.Sleep(d)
		before = time.Now()
		e.srv.Add(testUser, raw)
		after = time.Now()
	}()
	t.Cleanup(wg.Wait)
	return func() (time.Time, time.Time) { wg.Wait(); return before, after }
}

func (e *env) messages() [][]byte { return e.srv.Messages(testUser) }

func (e *env) has(raw []byte) int {
	n := 0
	for _, m := range e.messages() {
		if bytes.Equal(m, raw) {
			n++
		}
	}
	return n
}

func foreign(subject string) []byte {
	return []byte("From: someone@example.test\r\nTo: " + testUser + "\r\nSubject: " + subject + "\r\n\r\nnot a probe\r\n")
}

func openSession(t testing.TB, opts Options, rec *steps.Recorder) *Session {
	t.Helper()
	s, err := Open(ctxTimeout(t, time.Minute), opts, rec)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
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

// checkWindow checks that the arrival's window covers the Add that happened
// between before and after.
func checkWindow(t *testing.T, arr Arrival, before, after time.Time) {
	t.Helper()
	lo, hi := arr.SeenAt.Add(-arr.Uncertainty), arr.SeenAt.Add(arr.Uncertainty)
	if hi.Before(before) || lo.After(after) {
		t.Fatalf("window [%v, %v] misses the delivery [%v, %v]", lo.Format(time.StampMicro), hi.Format(time.StampMicro),
			before.Format(time.StampMicro), after.Format(time.StampMicro))
	}
}

// proxy is a faultnet proxy in front of the server that records what
// clients send, so tests can check what went over the wire in clear.
type proxy struct{ *faultnet.Proxy }

func newProxy(t testing.TB, target string) *proxy {
	t.Helper()
	return &proxy{faultnet.ProxyT(t, target)}
}

func (p *proxy) addr() string { return p.Addr() }

// stall makes new connections go nowhere: accepted, never answered.
func (p *proxy) stall(t testing.TB) {
	t.Helper()
	if err := p.Set(faultnet.Fault{Silent: true}); err != nil {
		t.Fatal(err)
	}
}

// lines returns the lines clients sent so far.
func (p *proxy) lines() []string {
	return strings.Split(strings.TrimSuffix(string(p.Sent()), "\r\n"), "\r\n")
}

// verbs counts the commands clients sent, by upper-case verb.
func (p *proxy) verbs() map[string]int {
	out := map[string]int{}
	for _, l := range p.lines() {
		if l == "" {
			continue
		}
		verb, _, _ := strings.Cut(l, " ")
		out[strings.ToUpper(verb)]++
	}
	return out
}
