package mailtest

import (
	"crypto/tls"
	"crypto/x509"

	"github.com/emailqos/emailqosreceiver/internal/testpki"
)

// tlsServerName is the name clients verify; the certificate also carries
// ::1 and localhost so other loopback spellings work too.
const tlsServerName = "127.0.0.1"

type certs struct {
	caPEM  []byte
	pool   *x509.CertPool
	server tls.Certificate
}

// newCerts makes a throwaway CA and a server certificate it signed, in memory.
func newCerts() (*certs, error) {
	ca, err := testpki.NewCA("mailtest throwaway CA")
	if err != nil {
		return nil, err
	}
	server, err := ca.Issue(tlsServerName, "::1", "localhost")
	if err != nil {
		return nil, err
	}
	return &certs{caPEM: ca.PEM, pool: ca.Pool(), server: server}, nil
}

func (c *certs) serverConfig() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{c.server}, MinVersion: tls.VersionTLS12}
}

func (c *certs) clientConfig() *tls.Config {
	return &tls.Config{RootCAs: c.pool, ServerName: tlsServerName, MinVersion: tls.VersionTLS12}
}
