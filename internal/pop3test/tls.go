package pop3test

import (
	"crypto/tls"

	"github.com/emailqos/emailqosreceiver/internal/testpki"
)

// SelfSignedTLS makes a throw-away certificate for 127.0.0.1 and localhost
// and returns a server configuration holding it and a client configuration
// that trusts only its issuer, so tests exercise real certificate
// verification.
func SelfSignedTLS() (server, client *tls.Config, err error) {
	ca, err := testpki.NewCA("pop3test throwaway CA")
	if err != nil {
		return nil, nil, err
	}
	server, err = ca.ServerConfig("127.0.0.1", "localhost")
	if err != nil {
		return nil, nil, err
	}
	return server, ca.ClientConfig("127.0.0.1"), nil
}
