package smtpsend

import (
	"context"
	"io"
	"log"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/emailqos/emailqosreceiver/internal/steps"
	"github.com/emailqos/emailqosreceiver/internal/transport"
)

// dsnBackend records the DSN parameters the server decoded and, through
// wireListener, the command lines as they came over the wire.
type dsnBackend struct {
	mu   sync.Mutex
	mail []smtp.MailOptions
	rcpt []smtp.RcptOptions
}

func (b *dsnBackend) NewSession(*smtp.Conn) (smtp.Session, error) { return &dsnSession{b: b}, nil }

type dsnSession struct{ b *dsnBackend }

func (s *dsnSession) Mail(_ string, o *smtp.MailOptions) error {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	s.b.mail = append(s.b.mail, *o)
	return nil
}

func (s *dsnSession) Rcpt(_ string, o *smtp.RcptOptions) error {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	s.b.rcpt = append(s.b.rcpt, *o)
	return nil
}

func (s *dsnSession) Data(r io.Reader) error { _, err := io.Copy(io.Discard, r); return err }
func (s *dsnSession) Reset()                 {}
func (s *dsnSession) Logout() error          { return nil }

// wireListener keeps a copy of everything clients send.
type wireListener struct {
	net.Listener
	mu  sync.Mutex
	buf strings.Builder
}

func (l *wireListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &wireConn{Conn: c, l: l}, nil
}

func (l *wireListener) text() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

type wireConn struct {
	net.Conn
	l *wireListener
}

func (c *wireConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.l.mu.Lock()
	c.l.buf.Write(p[:n])
	c.l.mu.Unlock()
	return n, err
}

func startDSNServer(t *testing.T, be *dsnBackend, dsn bool) (string, *wireListener) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	wl := &wireListener{Listener: l}
	s := smtp.NewServer(be)
	s.Domain = "mx.test"
	s.EnableDSN = dsn
	s.ErrorLog = log.New(io.Discard, "", 0)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(wl)
	}()
	t.Cleanup(func() {
		_ = s.Close()
		<-done
	})
	return l.Addr().String(), wl
}

func dsnSend(t *testing.T, addr string, dsn *DSN) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	opts := Options{Endpoint: transport.Endpoint{Address: addr, Security: transport.None}, DSN: dsn}
	msg := Message{From: "alice@a.test", To: []string{"bob@b.test", "carol@c.test"}, Data: testMsg.Data}
	_, err := Send(ctx, opts, msg, &steps.Recorder{})
	return err
}

func TestDSNParameters(t *testing.T) {
	// '+', '=' and a space must go out xtext-encoded (RFC 3461 section 4).
	const envid = "eqabc+def=g h"
	for _, tc := range []struct {
		name      string
		advertise bool
		dsn       *DSN
		want      bool
	}{
		{"offered and asked", true, &DSN{EnvelopeID: envid}, true},
		{"offered, off by default", true, nil, false},
		{"asked, not offered", false, &DSN{EnvelopeID: envid}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := &dsnBackend{}
			addr, wire := startDSNServer(t, be, tc.advertise)
			require.NoError(t, dsnSend(t, addr, tc.dsn))
			be.mu.Lock()
			defer be.mu.Unlock()
			require.Len(t, be.mail, 1)
			require.Len(t, be.rcpt, 2)
			sent := wire.text()
			if !tc.want {
				assert.Empty(t, be.mail[0].Return)
				assert.Empty(t, be.mail[0].EnvelopeID)
				for _, r := range be.rcpt {
					assert.Empty(t, r.Notify)
				}
				for _, p := range []string{"RET=", "ENVID=", "NOTIFY="} {
					assert.NotContains(t, sent, p)
				}
				return
			}
			assert.Equal(t, smtp.DSNReturnHeaders, be.mail[0].Return)
			assert.Equal(t, envid, be.mail[0].EnvelopeID, "decoded by the server")
			for _, r := range be.rcpt {
				assert.Equal(t, []smtp.DSNNotify{smtp.DSNNotifyFailure, smtp.DSNNotifyDelayed}, r.Notify)
			}
			assert.Regexp(t, `(?m)^MAIL FROM:<alice@a.test> .*RET=HDRS ENVID=eqabc\+2Bdef\+3Dg\+20h\r$`, sent)
			assert.Contains(t, sent, "RCPT TO:<bob@b.test> NOTIFY=FAILURE,DELAY")
			assert.Contains(t, sent, "RCPT TO:<carol@c.test> NOTIFY=FAILURE,DELAY")
		})
	}
}

func TestDSNEnvelopeIDRefused(t *testing.T) {
	be := &dsnBackend{}
	addr, wire := startDSNServer(t, be, true)
	for _, id := range []string{"bad\r\nRCPT TO:<x@evil.test>", "caf\u00e9", strings.Repeat("a", 101), strings.Repeat("+", 34)} {
		err := dsnSend(t, addr, &DSN{EnvelopeID: id})
		se := requireFail(t, err, steps.CodeSMTPSend, steps.TypeConfig, steps.SMTPSubmit)
		assert.Contains(t, se.Error(), "dsn envelope id")
	}
	assert.Empty(t, wire.text(), "refused before connecting")
	// The limit is on the encoded form: 100 plain characters pass.
	require.NoError(t, dsnSend(t, addr, &DSN{EnvelopeID: strings.Repeat("a", 100)}))
}
