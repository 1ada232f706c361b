package smtpsend

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"testing"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/emailqos/emailqosreceiver/internal/steps"
	"github.com/emailqos/emailqosreceiver/internal/transport"
)

func servedLeaf(t *testing.T) *x509.Certificate {
	t.Helper()
	srvTLS, _ := certs()
	leaf, err := x509.ParseCertificate(srvTLS.Certificates[0].Certificate[0])
	require.NoError(t, err)
	return leaf
}

func TestTLSHandshakeRecorded(t *testing.T) {
	leaf := servedLeaf(t)
	for _, tc := range []struct {
		name string
		srv  serverOpts
		sec  transport.Security
	}{
		{"starttls", serverOpts{offerTLS: true}, transport.STARTTLS},
		{"tls", serverOpts{security: transport.TLS}, transport.TLS},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := startServer(t, &backend{mechs: []string{sasl.Plain}}, tc.srv)
			rec := &steps.Recorder{}
			_, err := Send(context.Background(), options(addr, tc.sec), testMsg, rec)
			require.NoError(t, err)
			got := rec.TLS()
			require.Len(t, got, 1)
			assert.Equal(t, "smtp", got[0].Protocol)
			assert.Equal(t, uint16(tls.VersionTLS13), got[0].Version)
			assert.True(t, leaf.NotAfter.Equal(got[0].NotAfter), "NotAfter %v, served %v", got[0].NotAfter, leaf.NotAfter)
			assert.False(t, got[0].Unverified)
		})
	}
	t.Run("starttls tls1.2 unverified", func(t *testing.T) {
		addr := startServer(t, &backend{mechs: []string{sasl.Plain}}, serverOpts{offerTLS: true})
		opts := options(addr, transport.STARTTLS)
		opts.Endpoint.TLSConfig = &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12}
		rec := &steps.Recorder{}
		_, err := Send(context.Background(), opts, testMsg, rec)
		require.NoError(t, err)
		got := rec.TLS()
		require.Len(t, got, 1)
		assert.Equal(t, uint16(tls.VersionTLS12), got[0].Version)
		assert.True(t, got[0].Unverified)
	})
	t.Run("none", func(t *testing.T) {
		addr := startServer(t, &backend{mechs: []string{sasl.Plain}}, serverOpts{insecureAuth: true})
		rec := &steps.Recorder{}
		_, err := Send(context.Background(), options(addr, transport.None), testMsg, rec)
		require.NoError(t, err)
		assert.Empty(t, rec.TLS(), "nothing is recorded for a plain connection")
	})
}

func TestReplyCodesKept(t *testing.T) {
	for _, tc := range []struct {
		name     string
		be       *backend
		user     string
		step     string
		typ      string
		code     int
		enhanced string
	}{
		{"auth", &backend{mechs: []string{sasl.Plain}}, "mallory@a.test", steps.SMTPAuth, steps.TypeAuth, 535, "5.7.8"},
		{"rcpt rejected", &backend{mechs: []string{sasl.Plain}, rcptErr: &smtp.SMTPError{
			Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user bob@b.test"}},
			user, steps.SMTPSubmit, steps.TypeRejected, 550, "5.1.1"},
		{"rcpt deferred without enhanced code", &backend{mechs: []string{sasl.Plain}, rcptErr: &smtp.SMTPError{
			Code: 451, EnhancedCode: smtp.NoEnhancedCode, Message: "greylisted, try again later"}},
			user, steps.SMTPSubmit, steps.TypeDeferred, 451, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := startServer(t, tc.be, serverOpts{security: transport.TLS})
			opts := options(addr, transport.TLS)
			opts.Auth.Username = tc.user
			_, err := Send(context.Background(), opts, testMsg, &steps.Recorder{})
			se := requireFail(t, err, steps.CodeSMTPSend, tc.typ, tc.step)
			assert.Equal(t, steps.Reply{Code: tc.code, Enhanced: tc.enhanced}, se.Reply)
		})
	}
}

func TestReplyCodesOfRepliesReadDirectly(t *testing.T) {
	t.Run("greeting", func(t *testing.T) {
		addr := scripted(t, func(c net.Conn, _ *bufio.Reader) {
			_, _ = io.WriteString(c, "554 5.7.1 go away\r\n")
		})
		_, err := Send(context.Background(), options(addr, transport.None), testMsg, &steps.Recorder{})
		se := requireFail(t, err, steps.CodeSMTPConnect, steps.TypeRejected, steps.SMTPConnect)
		assert.Equal(t, steps.Reply{Code: 554, Enhanced: "5.7.1"}, se.Reply)
	})
	t.Run("starttls refused", func(t *testing.T) {
		addr := scripted(t, func(c net.Conn, r *bufio.Reader) {
			_, _ = io.WriteString(c, "220 mx.test ESMTP\r\n")
			_, _ = r.ReadString('\n')
			_, _ = io.WriteString(c, "250-mx.test\r\n250 STARTTLS\r\n")
			_, _ = r.ReadString('\n')
			_, _ = io.WriteString(c, "454 TLS not available due to temporary reason\r\n")
			_, _ = r.ReadString('\n')
		})
		_, err := Send(context.Background(), options(addr, transport.STARTTLS), testMsg, &steps.Recorder{})
		se := requireFail(t, err, steps.CodeSMTPConnect, steps.TypeTLS, steps.SMTPTLS)
		assert.Equal(t, steps.Reply{Code: 454}, se.Reply)
	})
	t.Run("no reply behind a network failure", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		addr := l.Addr().String()
		require.NoError(t, l.Close())
		_, err = Send(context.Background(), options(addr, transport.None), testMsg, &steps.Recorder{})
		se := requireFail(t, err, steps.CodeSMTPConnect, steps.TypeConnect, steps.SMTPConnect)
		assert.Zero(t, se.Reply)
	})
}
