package faultnet

import "github.com/emailqos/emailqosreceiver/internal/testpki"

// CA is a throwaway certificate authority for TLS faults: a client that
// trusts it sees a certificate for another host name when the server's was
// issued for one; a client that does not sees a certificate from an unknown
// authority.
type CA = testpki.CA

// NewCA makes a CA valid for a week.
func NewCA(name string) (*CA, error) { return testpki.NewCA(name) }

// NotTLS is a Fault.Prefix that is not a TLS record: a client expecting a
// TLS handshake fails on it (a plaintext service on a TLS port).
var NotTLS = []byte("220 this port does not speak TLS\r\n")
