package probe

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/emailqos/emailqosreceiver/internal/faultnet"
	"github.com/emailqos/emailqosreceiver/internal/mailtest"
	"github.com/emailqos/emailqosreceiver/internal/pop3test"
	"github.com/emailqos/emailqosreceiver/internal/steps"
	"github.com/emailqos/emailqosreceiver/internal/transport"
)

// servedNotAfter is the expiry of the certificate the implicit-TLS server
// at addr presents.
func servedNotAfter(t *testing.T, addr string) time.Time {
	t.Helper()
	d := &tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	return c.(*tls.Conn).ConnectionState().PeerCertificates[0].NotAfter
}

// tlsByProtocol indexes a probe's handshakes by protocol.
func tlsByProtocol(r Result) map[string]steps.TLS {
	out := map[string]steps.TLS{}
	for _, h := range r.TLS {
		out[h.Protocol] = h
	}
	return out
}

func TestTLSOfEveryHandshakeInResult(t *testing.T) {
	srv := startMail(t, mailtest.Options{TLS: true})
	notAfter := servedNotAfter(t, srv.SMTPSAddr())
	for _, tc := range []struct {
		name       string
		sec        transport.Security
		smtp, imap string
	}{
		{"starttls", transport.STARTTLS, srv.SMTPAddr(), srv.IMAPAddr()},
		{"tls", transport.TLS, srv.SMTPSAddr(), srv.IMAPSAddr()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := account(srv, "a", alice, "alice-pw", "auto")
			a.SMTP = transport.Endpoint{Address: tc.smtp, Security: tc.sec, TLSConfig: srv.ClientTLSConfig()}
			a.IMAP = transport.Endpoint{Address: tc.imap, Security: tc.sec, TLSConfig: srv.ClientTLSConfig()}
			r := Run(context.Background(), target(a, a), nil)
			require.NoError(t, r.Err)
			got := tlsByProtocol(r)
			require.Len(t, got, 2, "%+v", r.TLS)
			for _, proto := range []string{"smtp", "imap"} {
				assert.Equal(t, uint16(tls.VersionTLS13), got[proto].Version, proto)
				assert.True(t, notAfter.Equal(got[proto].NotAfter), "%s: NotAfter %v, served %v", proto, got[proto].NotAfter, notAfter)
				assert.False(t, got[proto].Unverified, proto)
			}
			assert.Zero(t, r.SMTPReply)
		})
	}
}

func TestTLSOfPOP3InResult(t *testing.T) {
	ca, err := faultnet.NewCA("probe test CA")
	require.NoError(t, err)
	srvCfg, err := ca.ServerConfig("127.0.0.1")
	require.NoError(t, err)
	srvCfg.MaxVersion = tls.VersionTLS12
	leaf, err := x509.ParseCertificate(srvCfg.Certificates[0].Certificate[0])
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(ca.PEM))

	srv, pop := startPOP3(t, pop3test.Options{TLSConfig: srvCfg})
	for _, tc := range []struct {
		name string
		sec  transport.Security
		addr string
	}{
		{"stls", transport.STARTTLS, pop.Addr()},
		{"tls", transport.TLS, pop.TLSAddr()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := pop3Account(srv, pop)
			a.POP3 = transport.Endpoint{Address: tc.addr, Security: tc.sec,
				TLSConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
			r := Run(context.Background(), target(a, a), nil)
			require.NoError(t, r.Err)
			// SMTP is plain here: only POP3 used TLS.
			require.Len(t, r.TLS, 1, "%+v", r.TLS)
			assert.Equal(t, "pop3", r.TLS[0].Protocol)
			assert.Equal(t, uint16(tls.VersionTLS12), r.TLS[0].Version)
			assert.True(t, leaf.NotAfter.Equal(r.TLS[0].NotAfter))
		})
	}
}

func TestPlainProbeHasNoTLS(t *testing.T) {
	srv := startMail(t, mailtest.Options{})
	a := account(srv, "a", alice, "alice-pw", "auto")
	r := Run(context.Background(), target(a, a), nil)
	require.NoError(t, r.Err)
	assert.Empty(t, r.TLS)
}

func TestSMTPReplyInResult(t *testing.T) {
	srv := startMail(t, mailtest.Options{RejectRcpt: true})
	a := account(srv, "a", alice, "alice-pw", "auto")
	r := Run(context.Background(), target(a, a), nil)
	require.Error(t, r.Err)
	assert.Equal(t, steps.TypeRejected, r.ErrorType)
	assert.Equal(t, steps.Reply{Code: 550, Enhanced: "5.1.1"}, r.SMTPReply)
}
