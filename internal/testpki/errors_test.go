package testpki

import "crypto/x509"

type (
	x509UnknownAuthority = x509.UnknownAuthorityError
	x509Hostname         = x509.HostnameError
)
