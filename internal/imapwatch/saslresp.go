package imapwatch

import (
	"bytes"
	"errors"
	"net"
	"sync/atomic"

	"github.com/emersion/go-sasl"
)

// emptyRespConn sits between imapclient and a connection whose plaintext it
// carries, to send an empty SASL response as RFC 3501 section 6.2.2 (and
// RFC 9051) has it: an empty line. imapclient v2.0.0-beta.8 writes it as
// "=", the RFC 4959 marker of an empty *initial* response, which is not
// base64 in a continuation; Dovecot 2.3 answers "BAD Invalid base64 data"
// (go-imap issue #760). The empty response is what XOAUTH2 sends after the
// server's error challenge (Google's XOAUTH2 protocol documentation), so a
// refused token was typed rejected instead of auth.
type emptyRespConn struct {
	net.Conn
	// armed: the next write is a SASL response that the mechanism made
	// empty; set by imapSASL just before imapclient writes it.
	armed atomic.Bool
}

func (c *emptyRespConn) Write(p []byte) (int, error) {
	if c.armed.Swap(false) && bytes.Equal(p, []byte("=\r\n")) {
		if _, err := c.Conn.Write([]byte("\r\n")); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// errEmptyResponse ends an exchange whose empty response cannot be written
// as an empty line: after STARTTLS, imapclient writes through its own TLS
// connection, which emptyRespConn cannot reach. Abandoning the exchange
// (the connection is then closed) is better than sending "=".
var errEmptyResponse = errors.New("imap: SASL exchange abandoned: this IMAP client cannot send an empty response after STARTTLS")

// imapSASL arms fix for each empty response of the mechanism.
type imapSASL struct {
	sasl.Client
	fix *emptyRespConn // nil after STARTTLS
}

func (m imapSASL) Next(challenge []byte) ([]byte, error) {
	resp, err := m.Client.Next(challenge)
	if err != nil || len(resp) != 0 {
		return resp, err
	}
	if m.fix == nil {
		return nil, errEmptyResponse
	}
	m.fix.armed.Store(true)
	return resp, nil
}
