package steps

import (
	"crypto/tls"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestRecorderKeepsLastHandshakePerProtocol(t *testing.T) {
	rec := &Recorder{}
	first := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	rec.AddTLS(TLS{Protocol: "smtp", Version: tls.VersionTLS13, NotAfter: first})
	rec.AddTLS(TLS{Protocol: "imap", Version: tls.VersionTLS12, NotAfter: first})
	// A reconnect to the IMAP server, which meanwhile renewed its certificate.
	rec.AddTLS(TLS{Protocol: "imap", Version: tls.VersionTLS13, NotAfter: first.AddDate(0, 3, 0)})
	assert.Equal(t, []TLS{
		{Protocol: "smtp", Version: tls.VersionTLS13, NotAfter: first},
		{Protocol: "imap", Version: tls.VersionTLS13, NotAfter: first.AddDate(0, 3, 0)},
	}, rec.TLS())

	var none *Recorder
	none.AddTLS(TLS{Protocol: "pop3"})
	assert.Empty(t, none.TLS())
}

func TestVersionNumber(t *testing.T) {
	for v, want := range map[uint16]float64{
		tls.VersionTLS10: 1.0, tls.VersionTLS11: 1.1, tls.VersionTLS12: 1.2, tls.VersionTLS13: 1.3,
		0x0300: 0, 0: 0,
	} {
		assert.Equal(t, want, TLS{Version: v}.VersionNumber(), "version %#04x", v)
	}
}

func TestProtocol(t *testing.T) {
	assert.Equal(t, "smtp", Protocol(SMTPTLS))
	assert.Equal(t, "imap", Protocol(IMAPConnect))
	assert.Equal(t, "pop3", Protocol(POP3TLS))
}
