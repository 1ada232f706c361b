package mailtest

import (
	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-sasl"

	"github.com/emailqos/emailqosreceiver/internal/saslx"
)

// bearerOK reports whether token signs user (a username or an address) in,
// per Options.BearerCheck. Unknown users are refused without asking.
func (s *Server) bearerOK(user, token string) bool {
	return s.opts.BearerCheck != nil && s.lookup(user) != nil && s.opts.BearerCheck(user, token)
}

// saslErrors replaces every error of a SASL exchange (a refused token, a
// malformed response) with the protocol's authentication failure, so that
// the client gets the usual reply (SMTP 535 5.7.8, IMAP NO
// [AUTHENTICATIONFAILED]) rather than a temporary error or an internal
// server error, and no library text reaches the wire.
type saslErrors struct {
	sasl.Server
	fail error
}

func (s saslErrors) Next(response []byte) ([]byte, bool, error) {
	challenge, done, err := s.Server.Next(response)
	if err != nil {
		return nil, true, s.fail
	}
	return challenge, done, nil
}

// imapSASLSession adds AUTHENTICATE XOAUTH2 to a session when
// Options.BearerCheck is set. imapserver then announces exactly the
// mechanisms listed here, so PLAIN is served here too.
type imapSASLSession struct {
	*imapSession
	s *Server
}

var _ imapserver.SessionSASL = (*imapSASLSession)(nil)

func (x *imapSASLSession) AuthenticateMechanisms() []string {
	return []string{sasl.Plain, saslx.XOAuth2}
}

func (x *imapSASLSession) Authenticate(mech string) (sasl.Server, error) {
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(identity, username, password string) error {
			if identity != "" && identity != username {
				return &imap.Error{
					Type: imap.StatusResponseTypeNo,
					Code: imap.ResponseCodeAuthorizationFailed,
					Text: "SASL identity not supported",
				}
			}
			return x.Login(username, password)
		}), nil
	case saslx.XOAuth2:
		return saslErrors{saslx.NewXOAUTH2Server(x.bearer), imapserver.ErrAuthFailed}, nil
	}
	return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Text: "SASL mechanism not supported"}
}

// bearer checks the token and, when it is good, logs the memory session in
// as the account it names, with the account's own credentials.
func (x *imapSASLSession) bearer(user, token string) error {
	if !x.s.bearerOK(user, token) {
		return imapserver.ErrAuthFailed
	}
	a := x.s.lookup(user)
	return x.Login(a.Username, a.Password)
}
