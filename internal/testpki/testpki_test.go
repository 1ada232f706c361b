package testpki

import (
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// handshake runs a TLS handshake over loopback, bounded in time.
func handshake(t *testing.T, server, client *tls.Config) error {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_ = tls.Server(c, server).Handshake()
	}()
	c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	require.NoError(t, err)
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	err = tls.Client(c, client).Handshake()
	c.Close()
	<-done
	return err
}

func TestVerification(t *testing.T) {
	ca, err := NewCA("test CA")
	require.NoError(t, err)
	other, err := NewCA("other CA")
	require.NoError(t, err)
	srv, err := ca.ServerConfig("127.0.0.1", "localhost")
	require.NoError(t, err)

	assert.NoError(t, handshake(t, srv, ca.ClientConfig("127.0.0.1")))
	assert.NoError(t, handshake(t, srv, ca.ClientConfig("localhost")))

	err = handshake(t, srv, other.ClientConfig("127.0.0.1"))
	var unknown x509UnknownAuthority
	assert.ErrorAs(t, err, &unknown, "a certificate from an unknown CA")

	err = handshake(t, srv, ca.ClientConfig("mail.example"))
	var host x509Hostname
	assert.ErrorAs(t, err, &host, "a certificate for another host")

	cert, err := ca.Issue("mail.example")
	require.NoError(t, err)
	assert.Equal(t, []string{"mail.example"}, cert.Leaf.DNSNames)
	assert.Contains(t, string(ca.PEM), "BEGIN CERTIFICATE")
}
