package smtpsend

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/emailqos/emailqosreceiver/internal/saslx"
	"github.com/emailqos/emailqosreceiver/internal/steps"
	"github.com/emailqos/emailqosreceiver/internal/transcript"
	"github.com/emailqos/emailqosreceiver/internal/transport"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	user     = "alice@a.test"
	password = "s3cret-Pa55word"
)

var testMsg = Message{
	From: user,
	To:   []string{"bob@b.test"},
	Data: []byte("From: <alice@a.test>\r\nTo: <bob@b.test>\r\nSubject: t\r\n\r\nhello\r\n.line starting with a dot\r\n"),
}

// certs is a self-signed certificate for 127.0.0.1 and the client
// configuration trusting it.
var certs = sync.OnceValues(func() (*tls.Config, *x509.CertPool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "smtpsend test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		panic(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, pool
})

// backend is a small SMTP backend that records what it was asked.
type backend struct {
	mechs   []string
	rcptErr error
	// dataGate, when set, holds the reply to DATA until it is closed.
	dataGate chan struct{}

	mu       sync.Mutex
	commands []string
	data     []string
}

func (b *backend) record(cmd string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.commands = append(b.commands, cmd)
}

func (b *backend) seen() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.commands...)
}

func (b *backend) NewSession(*smtp.Conn) (smtp.Session, error) { return &session{b: b}, nil }

func (b *backend) check(u, p string) error {
	if u == user && p == password {
		return nil
	}
	return smtp.ErrAuthFailed
}

type session struct{ b *backend }

func (s *session) AuthMechanisms() []string { return s.b.mechs }

func (s *session) Auth(mech string) (sasl.Server, error) {
	s.b.record("AUTH " + mech)
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(_, u, p string) error { return s.b.check(u, p) }), nil
	case sasl.Login:
		return &loginServer{check: s.b.check}, nil
	case saslx.XOAuth2:
		return saslx.NewXOAUTH2Server(func(u, token string) error {
			if u == user && token == validToken {
				return nil
			}
			return errors.New("invalid token")
		}), nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

func (s *session) Mail(from string, _ *smtp.MailOptions) error {
	s.b.record("MAIL " + from)
	return nil
}

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.b.record("RCPT " + to)
	return s.b.rcptErr
}

func (s *session) Data(r io.Reader) error {
	body, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if s.b.dataGate != nil {
		<-s.b.dataGate
	}
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	s.b.data = append(s.b.data, string(body))
	return nil
}

func (s *session) Reset()        {}
func (s *session) Logout() error { return nil }

// loginServer is the server side of LOGIN, which go-sasl lacks.
type loginServer struct {
	check func(u, p string) error
	step  int
	user  string
}

func (s *loginServer) Next(resp []byte) ([]byte, bool, error) {
	s.step++
	switch s.step {
	case 1:
		if resp == nil {
			return []byte("Username:"), false, nil
		}
		s.step, s.user = 2, string(resp)
		return []byte("Password:"), false, nil
	case 2:
		s.user = string(resp)
		return []byte("Password:"), false, nil
	case 3:
		return nil, true, s.check(s.user, string(resp))
	}
	return nil, true, errors.New("unexpected response")
}

type serverOpts struct {
	security     transport.Security
	offerTLS     bool // STARTTLS offered on a plain listener
	insecureAuth bool
	smtputf8     bool // SMTPUTF8 offered
}

// startServer runs a go-smtp server on loopback until the test ends.
func startServer(t testing.TB, be *backend, o serverOpts) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srvTLS, _ := certs()
	s := smtp.NewServer(be)
	s.Domain = "mx.test"
	s.AllowInsecureAuth = o.insecureAuth
	s.EnableSMTPUTF8 = o.smtputf8
	s.ErrorLog = log.New(io.Discard, "", 0)
	switch {
	case o.security == transport.TLS:
		l = tls.NewListener(l, srvTLS)
	case o.offerTLS:
		s.TLSConfig = srvTLS
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(l)
	}()
	t.Cleanup(func() {
		_ = s.Close()
		<-done
	})
	return l.Addr().String()
}

func clientTLS() *tls.Config {
	_, pool := certs()
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

func options(addr string, sec transport.Security) Options {
	return Options{
		Endpoint:           transport.Endpoint{Address: addr, Security: sec, TLSConfig: clientTLS()},
		Auth:               saslx.Credentials{Username: user, Password: password},
		AllowPlaintextAuth: sec == transport.None,
	}
}

func stepNames(rec *steps.Recorder) []string {
	var out []string
	for _, tm := range rec.Timings() {
		out = append(out, tm.Step)
	}
	return out
}

// requireFail checks a failure's code, type and step and that the password
// is nowhere in it.
func requireFail(t *testing.T, err error, code int, typ, step string) *steps.Error {
	t.Helper()
	var se *steps.Error
	require.ErrorAs(t, err, &se)
	assert.Equal(t, code, se.Code, "code of %v", err)
	assert.Equal(t, typ, se.Type, "type of %v", err)
	assert.Equal(t, step, se.Step, "step of %v", err)
	assert.NotContains(t, err.Error(), password)
	return se
}

func TestSendSucceeds(t *testing.T) {
	for _, tc := range []struct {
		name  string
		srv   serverOpts
		sec   transport.Security
		mechs []string
		steps []string
	}{
		{"none", serverOpts{security: transport.None, insecureAuth: true}, transport.None, []string{sasl.Plain, sasl.Login},
			[]string{steps.SMTPConnect, steps.SMTPEHLO, steps.SMTPAuth, steps.SMTPSubmit, steps.SMTPQuit}},
		{"starttls", serverOpts{offerTLS: true}, transport.STARTTLS, []string{sasl.Plain},
			[]string{steps.SMTPConnect, steps.SMTPEHLO, steps.SMTPTLS, steps.SMTPAuth, steps.SMTPSubmit, steps.SMTPQuit}},
		{"tls", serverOpts{security: transport.TLS}, transport.TLS, []string{sasl.Plain},
			[]string{steps.SMTPConnect, steps.SMTPTLS, steps.SMTPEHLO, steps.SMTPAuth, steps.SMTPSubmit, steps.SMTPQuit}},
		{"login only", serverOpts{security: transport.TLS}, transport.TLS, []string{sasl.Login},
			[]string{steps.SMTPConnect, steps.SMTPTLS, steps.SMTPEHLO, steps.SMTPAuth, steps.SMTPSubmit, steps.SMTPQuit}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := &backend{mechs: tc.mechs}
			addr := startServer(t, be, tc.srv)
			rec := &steps.Recorder{}
			start := time.Now()
			res, err := Send(context.Background(), options(addr, tc.sec), testMsg, rec)
			end := time.Now()
			require.NoError(t, err)
			assert.False(t, res.AcceptedAt.Before(start))
			assert.False(t, res.AcceptedAt.After(end))
			assert.NotEmpty(t, res.Reply)
			assert.Equal(t, tc.steps, stepNames(rec))
			for _, tm := range rec.Timings() {
				assert.Positive(t, tm.Duration, tm.Step)
			}
			assert.Equal(t, []string{"AUTH " + tc.mechs[0], "MAIL " + user, "RCPT bob@b.test"}, be.seen())
			be.mu.Lock()
			defer be.mu.Unlock()
			require.Len(t, be.data, 1)
			assert.Contains(t, be.data[0], "\r\n.line starting with a dot\r\n", "dot-stuffing undone by the server")
		})
	}
}

func TestSendWithoutAuth(t *testing.T) {
	be := &backend{}
	addr := startServer(t, be, serverOpts{})
	opts := options(addr, transport.None)
	opts.Auth = saslx.Credentials{}
	rec := &steps.Recorder{}
	_, err := Send(context.Background(), opts, testMsg, rec)
	require.NoError(t, err)
	assert.NotContains(t, stepNames(rec), steps.SMTPAuth)
	assert.Equal(t, []string{"MAIL " + user, "RCPT bob@b.test"}, be.seen())
}

func TestConnectionRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	_, err = Send(context.Background(), options(addr, transport.None), testMsg, &steps.Recorder{})
	requireFail(t, err, steps.CodeSMTPConnect, steps.TypeConnect, steps.SMTPConnect)
}

// scripted runs a fake server whose single connection is handled by fn.
func scripted(t *testing.T, fn func(c net.Conn, r *bufio.Reader)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	wg.Go(func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		fn(c, bufio.NewReader(c))
	})
	t.Cleanup(func() {
		_ = l.Close()
		wg.Wait()
	})
	return l.Addr().String()
}

func TestSilentServerTimesOut(t *testing.T) {
	addr := scripted(t, func(c net.Conn, _ *bufio.Reader) {
		_, _ = io.Copy(io.Discard, c) // never greets; returns when the client closes
	})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Send(ctx, options(addr, transport.None), testMsg, &steps.Recorder{})
	assert.Less(t, time.Since(start), time.Second)
	requireFail(t, err, steps.CodeSMTPConnect, steps.TypeTimeout, steps.SMTPConnect)
}

func TestCanceled(t *testing.T) {
	addr := scripted(t, func(c net.Conn, _ *bufio.Reader) { _, _ = io.Copy(io.Discard, c) })
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err := Send(ctx, options(addr, transport.None), testMsg, &steps.Recorder{})
	requireFail(t, err, steps.CodeSMTPConnect, steps.TypeCanceled, steps.SMTPConnect)
}

func TestGreetingRefused(t *testing.T) {
	addr := scripted(t, func(c net.Conn, _ *bufio.Reader) {
		_, _ = io.WriteString(c, "554 5.7.1 go away\r\n")
	})
	_, err := Send(context.Background(), options(addr, transport.None), testMsg, &steps.Recorder{})
	requireFail(t, err, steps.CodeSMTPConnect, steps.TypeRejected, steps.SMTPConnect)
}

func TestStalledDataReplyEndsAtDeadline(t *testing.T) {
	gate := make(chan struct{})
	be := &backend{mechs: []string{sasl.Plain}, dataGate: gate}
	addr := startServer(t, be, serverOpts{insecureAuth: true})
	t.Cleanup(func() { close(gate) }) // runs before the server closes
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Send(ctx, options(addr, transport.None), testMsg, &steps.Recorder{})
	assert.Less(t, time.Since(start), time.Second, "go-smtp's 12-minute submission timeout does not outlast ctx")
	requireFail(t, err, steps.CodeSMTPSend, steps.TypeTimeout, steps.SMTPSubmit)
}

func TestStartTLSMissing(t *testing.T) {
	be := &backend{mechs: []string{sasl.Plain}}
	addr := startServer(t, be, serverOpts{insecureAuth: true}) // offers AUTH in clear, no STARTTLS
	_, err := Send(context.Background(), options(addr, transport.STARTTLS), testMsg, &steps.Recorder{})
	requireFail(t, err, steps.CodeSMTPConnect, steps.TypeTLS, steps.SMTPTLS)
	assert.Empty(t, be.seen(), "no AUTH or MAIL reached the server")

	after := make(chan string, 1)
	addr = scripted(t, func(c net.Conn, r *bufio.Reader) {
		_, _ = io.WriteString(c, "220 mx.test ESMTP\r\n")
		_, _ = r.ReadString('\n')
		_, _ = io.WriteString(c, "250-mx.test\r\n250 AUTH PLAIN\r\n")
		rest, _ := io.ReadAll(r)
		after <- string(rest)
	})
	_, err = Send(context.Background(), options(addr, transport.STARTTLS), testMsg, &steps.Recorder{})
	requireFail(t, err, steps.CodeSMTPConnect, steps.TypeTLS, steps.SMTPTLS)
	assert.Empty(t, <-after, "nothing at all was sent after EHLO")
}

func TestStartTLSRefused(t *testing.T) {
	addr := scripted(t, func(c net.Conn, r *bufio.Reader) {
		_, _ = io.WriteString(c, "220 mx.test ESMTP\r\n")
		_, _ = r.ReadString('\n')
		_, _ = io.WriteString(c, "250-mx.test\r\n250 STARTTLS\r\n")
		_, _ = r.ReadString('\n')
		_, _ = io.WriteString(c, "454 4.7.0 TLS not available\r\n")
		_, _ = r.ReadString('\n')
	})
	_, err := Send(context.Background(), options(addr, transport.STARTTLS), testMsg, &steps.Recorder{})
	requireFail(t, err, steps.CodeSMTPConnect, steps.TypeTLS, steps.SMTPTLS)
}

func TestStartTLSInjectionRefused(t *testing.T) {
	lines := make(chan string, 4)
	addr := scripted(t, func(c net.Conn, r *bufio.Reader) {
		_, _ = io.WriteString(c, "220 mx.test ESMTP\r\n")
		_, _ = r.ReadString('\n')
		_, _ = io.WriteString(c, "250-mx.test\r\n250 STARTTLS\r\n")
		l, _ := r.ReadString('\n')
		lines <- l
		_, _ = io.WriteString(c, "220 go ahead\r\n250-mx.test\r\n250 AUTH PLAIN\r\n")
		l, _ = r.ReadString('\n')
		lines <- l
	})
	_, err := Send(context.Background(), options(addr, transport.STARTTLS), testMsg, &steps.Recorder{})
	requireFail(t, err, steps.CodeSMTPConnect, steps.TypeTLS, steps.SMTPTLS)
	assert.Equal(t, "STARTTLS\r\n", <-lines)
	assert.Empty(t, <-lines, "nothing was sent after the tainted reply")
}

func TestUnknownCA(t *testing.T) {
	for _, sec := range []transport.Security{transport.TLS, transport.STARTTLS} {
		t.Run(string(sec), func(t *testing.T) {
			be := &backend{mechs: []string{sasl.Plain}}
			addr := startServer(t, be, serverOpts{security: sec, offerTLS: true})
			opts := options(addr, sec)
			opts.Endpoint.TLSConfig = &tls.Config{RootCAs: x509.NewCertPool(), MinVersion: tls.VersionTLS12}
			_, err := Send(context.Background(), opts, testMsg, &steps.Recorder{})
			requireFail(t, err, steps.CodeSMTPConnect, steps.TypeTLS, steps.SMTPTLS)
			assert.Empty(t, be.seen())
		})
	}
}

func TestAuthRejected(t *testing.T) {
	for _, mech := range []string{sasl.Plain, sasl.Login} {
		t.Run(mech, func(t *testing.T) {
			be := &backend{mechs: []string{mech}}
			addr := startServer(t, be, serverOpts{security: transport.TLS})
			opts := options(addr, transport.TLS)
			opts.Auth.Username = "mallory@a.test"
			rec := &steps.Recorder{}
			_, err := Send(context.Background(), opts, testMsg, rec)
			requireFail(t, err, steps.CodeSMTPSend, steps.TypeAuth, steps.SMTPAuth)
			assert.Equal(t, []string{"AUTH " + mech}, be.seen())
			assert.Contains(t, stepNames(rec), steps.SMTPQuit, "a refused client still says goodbye")
		})
	}
}

func TestAuthNotOffered(t *testing.T) {
	be := &backend{}
	addr := startServer(t, be, serverOpts{security: transport.TLS})
	_, err := Send(context.Background(), options(addr, transport.TLS), testMsg, &steps.Recorder{})
	requireFail(t, err, steps.CodeSMTPSend, steps.TypeAuth, steps.SMTPAuth)
	assert.Empty(t, be.seen())
}

func TestCredentialsWithheldInClear(t *testing.T) {
	be := &backend{mechs: []string{sasl.Plain}}
	addr := startServer(t, be, serverOpts{insecureAuth: true})
	opts := options(addr, transport.None)
	opts.AllowPlaintextAuth = false
	_, err := Send(context.Background(), opts, testMsg, &steps.Recorder{})
	requireFail(t, err, steps.CodeSMTPSend, steps.TypeAuth, steps.SMTPAuth)
	assert.Contains(t, err.Error(), "withheld")
	assert.Empty(t, be.seen())
}

func TestRecipientRefused(t *testing.T) {
	for _, tc := range []struct {
		code int
		typ  string
	}{{550, steps.TypeRejected}, {450, steps.TypeDeferred}} {
		t.Run(tc.typ, func(t *testing.T) {
			be := &backend{mechs: []string{sasl.Plain}, rcptErr: &smtp.SMTPError{
				Code: tc.code, EnhancedCode: smtp.EnhancedCode{tc.code / 100, 1, 1}, Message: "no such user"}}
			addr := startServer(t, be, serverOpts{security: transport.TLS})
			_, err := Send(context.Background(), options(addr, transport.TLS), testMsg, &steps.Recorder{})
			requireFail(t, err, steps.CodeSMTPSend, tc.typ, steps.SMTPSubmit)
		})
	}
}

func TestQuitFailureAfterAcceptanceSucceeds(t *testing.T) {
	addr := scripted(t, func(c net.Conn, r *bufio.Reader) {
		_, _ = io.WriteString(c, "220 mx.test ESMTP\r\n")
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return
			}
			switch cmd := strings.ToUpper(strings.TrimSpace(l)); {
			case strings.HasPrefix(cmd, "EHLO"):
				_, _ = io.WriteString(c, "250 mx.test\r\n")
			case cmd == "DATA":
				_, _ = io.WriteString(c, "354 go on\r\n")
				for l != ".\r\n" {
					if l, err = r.ReadString('\n'); err != nil {
						return
					}
				}
				_, _ = io.WriteString(c, "250 2.0.0 queued as 42\r\n")
			case cmd == "QUIT":
				return // hangs up without a reply
			default:
				_, _ = io.WriteString(c, "250 ok\r\n")
			}
		}
	})
	opts := options(addr, transport.None)
	opts.Auth = saslx.Credentials{}
	rec := &steps.Recorder{}
	res, err := Send(context.Background(), opts, testMsg, rec)
	require.NoError(t, err)
	assert.Equal(t, "2.0.0 queued as 42", res.Reply)
	assert.Contains(t, stepNames(rec), steps.SMTPQuit)
}

func TestInvalidInput(t *testing.T) {
	for name, msg := range map[string]Message{
		"no recipients":  {From: user, Data: testMsg.Data},
		"crlf in sender": {From: user + "\r\nRCPT TO:<x@y.test>", To: testMsg.To, Data: testMsg.Data},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Send(context.Background(), options("127.0.0.1:1", transport.None), msg, &steps.Recorder{})
			requireFail(t, err, steps.CodeSMTPSend, steps.TypeConfig, steps.SMTPSubmit)
		})
	}
}

// A UTF-8 address the server cannot carry is the target's configuration at
// fault, not the server's: typed config, and no MAIL FROM is sent. With
// SMTPUTF8 offered the same message goes through.
func TestUTF8AddressWithoutSMTPUTF8IsConfig(t *testing.T) {
	msg := testMsg
	msg.To = []string{"jörg@b.test"}
	for _, offered := range []bool{false, true} {
		t.Run(fmt.Sprintf("smtputf8=%v", offered), func(t *testing.T) {
			be := &backend{mechs: []string{sasl.Plain}}
			addr := startServer(t, be, serverOpts{insecureAuth: true, smtputf8: offered})
			_, err := Send(context.Background(), options(addr, transport.None), msg, &steps.Recorder{})
			if offered {
				require.NoError(t, err)
				assert.Contains(t, be.seen(), "RCPT jörg@b.test")
				return
			}
			se := requireFail(t, err, steps.CodeSMTPSend, steps.TypeConfig, steps.SMTPSubmit)
			assert.Contains(t, se.Error(), "SMTPUTF8")
			assert.Equal(t, []string{"AUTH PLAIN"}, be.seen(), "nothing of the envelope was sent")
		})
	}
}

func TestRedact(t *testing.T) {
	a := saslx.Credentials{Username: user, Password: password}
	err := transcript.RedactError(errors.New("server said: "+password), a.Username, a.Password)
	assert.NotContains(t, err.Error(), password)
	orig := errors.New("plain")
	assert.Same(t, orig, transcript.RedactError(orig, a.Username, a.Password))
	err = transcript.RedactError(errors.New("echo: "+validToken), user, validToken)
	assert.NotContains(t, err.Error(), validToken)
}

const validToken = "ya29.valid-bearer-token"

func TestSendWithOAuthToken(t *testing.T) {
	tokenErr := errors.New("endpoint down")
	for _, tc := range []struct {
		name     string
		token    string
		tokenErr error
		wantType string
	}{
		{"valid token", validToken, nil, ""},
		{"token refused by the server", "ya29.revoked-token", nil, steps.TypeAuth},
		{"token endpoint failing", "", tokenErr, steps.TypeTokenUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := &backend{mechs: []string{sasl.Plain, saslx.XOAuth2}}
			addr := startServer(t, be, serverOpts{security: transport.TLS})
			opts := options(addr, transport.TLS)
			opts.Auth = saslx.Credentials{Username: user, Token: func(context.Context) (string, error) { return tc.token, tc.tokenErr },
				TokenType: func(err error) string {
					assert.ErrorIs(t, err, tokenErr)
					return steps.TypeTokenUnavailable
				}}
			_, err := Send(context.Background(), opts, testMsg, &steps.Recorder{})
			if tc.wantType == "" {
				require.NoError(t, err)
				assert.Equal(t, "AUTH XOAUTH2", be.seen()[0], "XOAUTH2 is preferred when offered")
				return
			}
			se := requireFail(t, err, steps.CodeSMTPSend, tc.wantType, steps.SMTPAuth)
			assert.NotContains(t, se.Error(), "ya29.revoked-token")
		})
	}
}

func BenchmarkSend(b *testing.B) {
	be := &backend{mechs: []string{sasl.Plain}}
	addr := startServer(b, be, serverOpts{insecureAuth: true})
	opts := options(addr, transport.None)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Send(context.Background(), opts, testMsg, &steps.Recorder{}); err != nil {
			b.Fatal(err)
		}
	}
}

// TestNoCancelAfterFinalAuthReply: after a final 535 the exchange is over;
// go-smtp would send the SASL cancel "*" as a new command line, which RFC
// 4954 section 4 allows only in answer to a 334 challenge. The transcript
// shows the client's next line is QUIT.
func TestNoCancelAfterFinalAuthReply(t *testing.T) {
	for _, mech := range []string{sasl.Plain, sasl.Login} {
		t.Run(mech, func(t *testing.T) {
			be := &backend{mechs: []string{mech}}
			addr := startServer(t, be, serverOpts{security: transport.TLS})
			opts := options(addr, transport.TLS)
			opts.Auth.Username = "mallory@a.test"
			opts.Transcript = transcript.New(time.Now())
			_, err := Send(context.Background(), opts, testMsg, &steps.Recorder{})
			requireFail(t, err, steps.CodeSMTPSend, steps.TypeAuth, steps.SMTPAuth)
			lines := opts.Transcript.Lines()
			i := slices.IndexFunc(lines, func(l string) bool { return strings.Contains(l, "S: 535") })
			require.GreaterOrEqual(t, i, 0, "no 535 in %q", lines)
			var after []string
			for _, l := range lines[i+1:] {
				if strings.Contains(l, "C: ") {
					after = append(after, l[strings.Index(l, "C: ")+3:])
				}
			}
			assert.Equal(t, []string{"QUIT"}, after, "client lines after 535 in %q", lines)
			assert.NotContains(t, strings.Join(lines, "\n"), "5.5.4 AUTH already ended", "the local reply never reaches the transcript")
		})
	}
}

// TestCancelGuardLetsRealCancelThrough: a "*" answering an outstanding 334
// is the SASL cancel and goes out; one after a final reply does not, and
// go-smtp reads a local reply instead of waiting for the server.
func TestCancelGuardLetsRealCancelThrough(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	g := &cancelGuard{Conn: client}
	g.arm(true)
	got := make(chan string, 4)
	go func() {
		buf := make([]byte, 64)
		for {
			n, err := server.Read(buf)
			if err != nil {
				close(got)
				return
			}
			got <- string(buf[:n])
		}
	}()
	read := func(reply string) {
		go func() { _, _ = server.Write([]byte(reply)) }()
		buf := make([]byte, len(reply))
		_, err := io.ReadFull(g, buf)
		require.NoError(t, err)
	}
	read("334 \r\n")
	_, err := g.Write([]byte("*\r\n"))
	require.NoError(t, err)
	assert.Equal(t, "*\r\n", <-got, "a cancel answering 334 goes out")

	read("535-5.7.8 first\r\n535 5.7.8 Authentication failed\r\n")
	_, err = g.Write([]byte("*\r\n"))
	require.NoError(t, err)
	buf := make([]byte, 128)
	n, err := g.Read(buf)
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(string(buf[:n]), "501 "), "local reply %q", buf[:n])
	_, err = g.Write([]byte("QUIT\r\n"))
	require.NoError(t, err)
	assert.Equal(t, "QUIT\r\n", <-got, "the withheld cancel never reached the server")
}

// The caller learns of the acceptance before QUIT (issue 17: the wait for
// the message starts then, QUIT runs meanwhile), and DataEnd, the earliest
// instant the message can exist, precedes the 250 reply.
func TestAcceptedBeforeQuit(t *testing.T) {
	const replyDelay, quitDelay = 50 * time.Millisecond, 300 * time.Millisecond
	addr := scripted(t, func(c net.Conn, r *bufio.Reader) {
		_, _ = io.WriteString(c, "220 scripted ESMTP\r\n")
		inData := false
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			switch {
			case inData:
				if line == ".\r\n" {
					inData = false
					time.Sleep(replyDelay)
					_, _ = io.WriteString(c, "250 2.0.0 queued\r\n")
				}
			case strings.HasPrefix(line, "EHLO"):
				_, _ = io.WriteString(c, "250 scripted\r\n")
			case strings.HasPrefix(line, "DATA"):
				inData = true
				_, _ = io.WriteString(c, "354 go ahead\r\n")
			case strings.HasPrefix(line, "QUIT"):
				time.Sleep(quitDelay)
				_, _ = io.WriteString(c, "221 bye\r\n")
				return
			default:
				_, _ = io.WriteString(c, "250 ok\r\n")
			}
		}
	})
	opts := options(addr, transport.None)
	opts.Auth = saslx.Credentials{}
	var got Result
	var calledAt time.Time
	opts.Accepted = func(r Result) { got, calledAt = r, time.Now() }
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := Send(ctx, opts, testMsg, &steps.Recorder{})
	returned := time.Now()
	require.NoError(t, err)
	assert.Equal(t, res, got, "the callback gets the result Send returns")
	assert.GreaterOrEqual(t, returned.Sub(calledAt), quitDelay-10*time.Millisecond, "called before QUIT's reply")
	assert.False(t, res.DataEnd.IsZero())
	assert.GreaterOrEqual(t, res.AcceptedAt.Sub(res.DataEnd), replyDelay-5*time.Millisecond, "DataEnd is before the 250 reply")
}
