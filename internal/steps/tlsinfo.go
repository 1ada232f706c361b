package steps

import (
	"crypto/tls"
	"time"
)

// TLS is what one TLS handshake of a probe showed.
type TLS struct {
	// Protocol is smtp, imap or pop3.
	Protocol string
	// Version is the negotiated version (tls.VersionTLS12, ...).
	Version uint16
	// NotAfter is the end of the server's leaf certificate's validity.
	NotAfter time.Time
	// Unverified is true when certificate verification was skipped
	// (insecure_skip_verify): an expired certificate is then still seen.
	Unverified bool
}

// VersionNumber is Version as the number a metric carries: 1.0, 1.1, 1.2
// or 1.3; 0 for anything else.
func (t TLS) VersionNumber() float64 {
	switch t.Version {
	case tls.VersionTLS10:
		return 1.0
	case tls.VersionTLS11:
		return 1.1
	case tls.VersionTLS12:
		return 1.2
	case tls.VersionTLS13:
		return 1.3
	}
	return 0
}
