package transport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/emailqos/emailqosreceiver/internal/faultnet"
	"github.com/emailqos/emailqosreceiver/internal/steps"
)

// tlsServer serves srvCfg on loopback: every connection completes the
// handshake (or fails it) and is held until the client closes it. It
// returns the address and the served leaf certificate.
func tlsServer(t *testing.T, srvCfg *tls.Config) (string, *x509.Certificate) {
	t.Helper()
	leaf, err := x509.ParseCertificate(srvCfg.Certificates[0].Certificate[0])
	require.NoError(t, err)
	l, err := tls.Listen("tcp", "127.0.0.1:0", srvCfg)
	require.NoError(t, err)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				_, _ = io.Copy(io.Discard, c)
			})
		}
	})
	t.Cleanup(func() { _ = l.Close(); wg.Wait() })
	return l.Addr().String(), leaf
}

func testCA(t *testing.T) (*faultnet.CA, *x509.CertPool) {
	t.Helper()
	ca, err := faultnet.NewCA("transport test CA")
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(ca.PEM))
	return ca, pool
}

func dial(t *testing.T, ep Endpoint, rec *steps.Recorder) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, ep, steps.IMAPConnect, steps.IMAPTLS, rec)
	if err == nil {
		c.Close()
	}
	return err
}

func TestDialRecordsTLS(t *testing.T) {
	ca, pool := testCA(t)
	for _, tc := range []struct {
		name      string
		serverMax uint16
		client    *tls.Config
		want      uint16
		insecure  bool
	}{
		{"tls1.3", 0, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, tls.VersionTLS13, false},
		{"tls1.2", tls.VersionTLS12, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, tls.VersionTLS12, false},
		{"insecure_skip_verify", tls.VersionTLS12, nil, tls.VersionTLS12, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srvCfg, err := ca.ServerConfig("127.0.0.1")
			require.NoError(t, err)
			srvCfg.MaxVersion = tc.serverMax
			addr, leaf := tlsServer(t, srvCfg)
			client := tc.client
			if client == nil {
				// Unknown CA, verification skipped (insecure_skip_verify).
				client = &tls.Config{InsecureSkipVerify: true}
			}
			rec := &steps.Recorder{}
			require.NoError(t, dial(t, Endpoint{Address: addr, Security: TLS, TLSConfig: client}, rec))
			got := rec.TLS()
			require.Len(t, got, 1)
			assert.Equal(t, "imap", got[0].Protocol)
			assert.Equal(t, tc.want, got[0].Version)
			assert.True(t, leaf.NotAfter.Equal(got[0].NotAfter), "NotAfter %v, served %v", got[0].NotAfter, leaf.NotAfter)
			assert.Equal(t, tc.insecure, got[0].Unverified)
		})
	}
}

func TestDialRecordsNothingWithoutTLS(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	go func() {
		if c, err := l.Accept(); err == nil {
			c.Close()
		}
	}()
	rec := &steps.Recorder{}
	require.NoError(t, dial(t, Endpoint{Address: l.Addr().String(), Security: None}, rec))
	assert.Empty(t, rec.TLS())
}

func TestDialRecordsNothingWhenVerificationFails(t *testing.T) {
	ca, _ := testCA(t)
	srvCfg, err := ca.ServerConfig("127.0.0.1")
	require.NoError(t, err)
	addr, _ := tlsServer(t, srvCfg)
	rec := &steps.Recorder{}
	err = dial(t, Endpoint{Address: addr, Security: TLS,
		TLSConfig: &tls.Config{RootCAs: x509.NewCertPool(), MinVersion: tls.VersionTLS12}}, rec)
	require.Error(t, err)
	assert.Equal(t, steps.TypeTLS, steps.Classify(err))
	assert.Empty(t, rec.TLS(), "a certificate that failed verification is not reported")
}

func TestRecordingTLSConfigKeepsOwnCheck(t *testing.T) {
	ca, pool := testCA(t)
	srvCfg, err := ca.ServerConfig("127.0.0.1")
	require.NoError(t, err)
	addr, _ := tlsServer(t, srvCfg)
	refuse := errors.New("pinned certificate mismatch")
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12,
		VerifyConnection: func(tls.ConnectionState) error { return refuse }}
	rec := &steps.Recorder{}
	err = dial(t, Endpoint{Address: addr, Security: TLS, TLSConfig: cfg}, rec)
	require.ErrorIs(t, err, refuse)
	assert.Empty(t, rec.TLS())
}
