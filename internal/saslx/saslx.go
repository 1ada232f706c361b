// Package saslx adds the bearer-token SASL mechanisms the probe needs on top
// of github.com/emersion/go-sasl: an XOAUTH2 client and server (go-sasl has
// none), an OAUTHBEARER client that finishes the exchange the way RFC 7628
// asks, and Pick, which chooses between them from what a server offers.
//
// Error challenges: with both mechanisms a server that rejects the token
// sends a JSON error as a challenge and expects one more (dummy) client
// response before it sends the final failure. The clients here reply with
// that dummy response and a nil error, because returning an error from Next
// makes go-imap v2 abandon the command without cancelling it, leaving the
// server waiting for a response line. (XOAUTH2's dummy response is empty;
// go-imap writes an empty response as "=", which imapwatch puts right on
// the wire: see its emptyRespConn.) The JSON details are kept on the client;
// Explain attaches them to the protocol error the SMTP/IMAP/POP3 client
// finally returns.
package saslx

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/emersion/go-sasl"
)

// TokenSource yields OAuth2 bearer tokens. Its errors are classified by the
// TokenType of the Credentials that hold it.
type TokenSource func(ctx context.Context) (string, error)

// Credentials sign a probe in to a mail server (SMTP, IMAP or POP3): with
// Username and Password, or, when Token is set, with an OAuth2 bearer token
// instead of the password.
type Credentials struct {
	Username, Password string
	// Token is asked for a token at every login, reconnects included: one
	// may expire while a probe waits. The token is sent with XOAUTH2 or
	// OAUTHBEARER, whichever the server offers, or Mechanism when set.
	Token     TokenSource
	Mechanism string
	// TokenType classifies a Token error into an error type.
	TokenType func(error) string
}

// Mechanism names.
const (
	XOAuth2     = "XOAUTH2"
	OAuthBearer = sasl.OAuthBearer
)

// BearerError is the JSON error a server sends as a SASL challenge when it
// rejects a bearer token (same shape for XOAUTH2 and OAUTHBEARER). It never
// holds the token.
type BearerError struct {
	Mechanism string `json:"-"`
	Status    string `json:"status"`
	Schemes   string `json:"schemes,omitempty"`
	Scope     string `json:"scope,omitempty"`
}

func (e *BearerError) Error() string {
	var b strings.Builder
	b.WriteString("saslx: ")
	if e.Mechanism != "" {
		b.WriteString(e.Mechanism + " ")
	}
	b.WriteString("token rejected by server")
	var details []string
	if e.Status != "" {
		details = append(details, "status="+e.Status)
	}
	if e.Scope != "" {
		details = append(details, "scope="+e.Scope)
	}
	if len(details) > 0 {
		b.WriteString(" (" + strings.Join(details, ", ") + ")")
	}
	return b.String()
}

// parseChallenge decodes an error challenge. A challenge that is not JSON
// still yields a BearerError (with no status) so the failure is reported; its
// raw bytes are not echoed because nothing bounds what a server puts there.
func parseChallenge(mech string, challenge []byte) *BearerError {
	be := &BearerError{}
	if err := json.Unmarshal(challenge, be); err != nil {
		be = &BearerError{}
	}
	be.Mechanism = mech
	be.Status = limit(be.Status, 64)
	be.Schemes = limit(be.Schemes, 64)
	be.Scope = limit(be.Scope, 512)
	return be
}

func limit(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// bearerState records the server's error challenge; it is shared by both
// client mechanisms and read back by Explain/ServerError.
type bearerState struct {
	mu     sync.Mutex
	mech   string
	failed *BearerError
	seen   int // challenges seen, so an empty one is answered only first
}

func (s *bearerState) serverError() *BearerError {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed
}

// onChallenge handles a non-empty challenge: the first is the JSON error and
// gets the dummy response; any further one is a protocol violation.
func (s *bearerState) onChallenge(challenge, dummy []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen++
	if s.failed != nil {
		return nil, s.failed
	}
	s.failed = parseChallenge(s.mech, challenge)
	return dummy, nil
}

type xoauth2Client struct {
	bearerState
	username, token string
}

// NewXOAUTH2Client returns a client for Google's/Microsoft's XOAUTH2
// mechanism. The initial response is
// "user=<username>\x01auth=Bearer <token>\x01\x01". On an error challenge
// it answers with an empty response (as the mechanism requires) and records
// the JSON status/scope for Explain.
func NewXOAUTH2Client(username, token string) sasl.Client {
	return &xoauth2Client{bearerState: bearerState{mech: XOAuth2}, username: username, token: token}
}

func (c *xoauth2Client) initialResponse() []byte {
	return []byte("user=" + c.username + "\x01auth=Bearer " + c.token + "\x01\x01")
}

func (c *xoauth2Client) Start() (string, []byte, error) {
	if err := checkCredentials(XOAuth2, c.username, c.token, true); err != nil {
		return "", nil, err
	}
	return XOAuth2, c.initialResponse(), nil
}

func (c *xoauth2Client) Next(challenge []byte) ([]byte, error) {
	// An empty challenge means the server did not take an initial response
	// (e.g. POP3 without SASL-IR): send it now, once.
	if len(challenge) == 0 {
		c.mu.Lock()
		c.seen++
		first := c.seen == 1
		c.mu.Unlock()
		if first {
			return c.initialResponse(), nil
		}
		return nil, sasl.ErrUnexpectedServerChallenge
	}
	return c.onChallenge(challenge, []byte{})
}

type oauthBearerClient struct {
	bearerState
	inner           sasl.Client
	username, token string
}

// NewOAuthBearerClient returns an RFC 7628 OAUTHBEARER client. The initial
// response comes from go-sasl; unlike go-sasl's client, an error challenge is
// answered with the %x01 dummy response RFC 7628 §3.2.3 requires (see the
// package comment) and recorded for Explain.
func NewOAuthBearerClient(username, token string) sasl.Client {
	return &oauthBearerClient{
		bearerState: bearerState{mech: OAuthBearer},
		inner:       sasl.NewOAuthBearerClient(&sasl.OAuthBearerOptions{Username: username, Token: token}),
		username:    username,
		token:       token,
	}
}

func (c *oauthBearerClient) Start() (string, []byte, error) {
	if err := checkCredentials(OAuthBearer, c.username, c.token, false); err != nil {
		return "", nil, err
	}
	// go-sasl writes the GS2 authzid unescaped; ',' and '=' would corrupt it.
	if strings.ContainsAny(c.username, ",=") {
		return "", nil, errors.New("saslx: OAUTHBEARER username must not contain ',' or '='")
	}
	return c.inner.Start()
}

func (c *oauthBearerClient) Next(challenge []byte) ([]byte, error) {
	if len(challenge) == 0 {
		_, ir, err := c.inner.Start()
		c.mu.Lock()
		c.seen++
		first := c.seen == 1
		c.mu.Unlock()
		if first && err == nil {
			return ir, nil
		}
		return nil, sasl.ErrUnexpectedServerChallenge
	}
	return c.onChallenge(challenge, []byte{0x01})
}

// checkCredentials rejects values that would break the \x01-delimited
// framing. Messages name the problem, never the value.
func checkCredentials(mech, username, token string, needUser bool) error {
	switch {
	case token == "":
		return fmt.Errorf("saslx: %s: empty token", mech)
	case needUser && username == "":
		return fmt.Errorf("saslx: %s: empty username", mech)
	case strings.ContainsAny(token, "\x01\r\n"):
		return fmt.Errorf("saslx: %s: token contains control characters", mech)
	case strings.ContainsAny(username, "\x01\r\n"):
		return fmt.Errorf("saslx: %s: username contains control characters", mech)
	}
	return nil
}

// ServerError returns the error the server sent as a challenge to a client
// made by this package, or nil if there was none (or c is another client).
func ServerError(c sasl.Client) *BearerError {
	if s, ok := c.(interface{ serverError() *BearerError }); ok {
		return s.serverError()
	}
	return nil
}

// Explain returns err annotated with the JSON error the server sent during
// the exchange on c (status, scope), so a caller can report why the token was
// refused: `if err := conn.Auth(c); err != nil { return saslx.Explain(c, err) }`.
// The result wraps both err and the *BearerError. err is returned unchanged
// when there is nothing to add.
func Explain(c sasl.Client, err error) error {
	if err == nil {
		return nil
	}
	be := ServerError(c)
	if be == nil {
		return err
	}
	return &explained{auth: err, server: be}
}

type explained struct {
	auth   error
	server *BearerError
}

func (e *explained) Error() string   { return e.server.Error() + ": " + e.auth.Error() }
func (e *explained) Unwrap() []error { return []error{e.auth, e.server} }

// Pick chooses the bearer mechanism for a server advertising offered
// (mechanism names, case-insensitive; IMAP's "AUTH=" prefix is accepted).
// prefer ("XOAUTH2" or "OAUTHBEARER", case-insensitive) forces that mechanism
// even if it is not advertised, since some servers (POP3 without CAPA SASL)
// do not list what they accept. With prefer empty, XOAUTH2 wins when offered
// because both Gmail and Microsoft 365 accept it while Microsoft does not
// accept OAUTHBEARER; if nothing is advertised XOAUTH2 is tried.
func Pick(offered []string, username, token string, prefer string) (sasl.Client, string, error) {
	mech := strings.ToUpper(strings.TrimSpace(prefer))
	switch mech {
	case XOAuth2, OAuthBearer:
	case "":
		has := map[string]bool{}
		for _, m := range offered {
			m = strings.ToUpper(strings.TrimSpace(m))
			has[strings.TrimPrefix(m, "AUTH=")] = true
		}
		switch {
		case has[XOAuth2]:
			mech = XOAuth2
		case has[OAuthBearer]:
			mech = OAuthBearer
		case len(offered) == 0:
			mech = XOAuth2
		default:
			return nil, "", fmt.Errorf("saslx: server offers neither %s nor %s (offered: %s)",
				XOAuth2, OAuthBearer, limit(strings.Join(offered, " "), 200))
		}
	default:
		return nil, "", fmt.Errorf("saslx: unsupported mechanism %q (want %s or %s)", limit(prefer, 40), XOAuth2, OAuthBearer)
	}
	if mech == XOAuth2 {
		if err := checkCredentials(mech, username, token, true); err != nil {
			return nil, "", err
		}
		return NewXOAUTH2Client(username, token), mech, nil
	}
	if err := checkCredentials(mech, username, token, false); err != nil {
		return nil, "", err
	}
	return NewOAuthBearerClient(username, token), mech, nil
}

// NewXOAUTH2Server returns the server side of XOAUTH2 for test servers.
// check decides whether the token is good; its error is returned to the
// protocol server after the client's dummy response and should not contain
// the token. If check returns a *BearerError its Status/Schemes/Scope form
// the JSON challenge; otherwise status 401, scheme Bearer is sent.
func NewXOAUTH2Server(check func(user, token string) error) sasl.Server {
	return &xoauth2Server{check: check}
}

type xoauth2Server struct {
	check   func(user, token string) error
	done    bool
	failErr error // set after the error challenge; returned on the next step
}

var errMalformed = errors.New("saslx: malformed XOAUTH2 response")

func (s *xoauth2Server) Next(response []byte) ([]byte, bool, error) {
	if s.failErr != nil {
		err := s.failErr
		s.failErr, s.done = nil, true
		if len(response) != 0 {
			return nil, true, errors.New("saslx: expected empty response after XOAUTH2 error challenge")
		}
		return nil, true, err
	}
	if s.done {
		return nil, true, sasl.ErrUnexpectedClientResponse
	}
	if response == nil {
		// No initial response: ask for it with an empty challenge.
		return []byte{}, false, nil
	}
	user, token, ok := parseXOAUTH2(response)
	if !ok {
		s.done = true
		return nil, true, errMalformed
	}
	if err := s.check(user, token); err != nil {
		be := &BearerError{Status: "401", Schemes: "Bearer"}
		var custom *BearerError
		if errors.As(err, &custom) {
			be = &BearerError{Status: custom.Status, Schemes: custom.Schemes, Scope: custom.Scope}
		}
		blob, merr := json.Marshal(be)
		if merr != nil {
			s.done = true
			return nil, true, err
		}
		s.failErr = err
		return blob, false, nil
	}
	s.done = true
	return nil, true, nil
}

// parseXOAUTH2 splits "user=U\x01auth=Bearer T\x01\x01".
func parseXOAUTH2(b []byte) (user, token string, ok bool) {
	if !bytes.HasSuffix(b, []byte("\x01\x01")) {
		return "", "", false
	}
	fields := bytes.Split(b[:len(b)-2], []byte{0x01})
	if len(fields) != 2 || !bytes.HasPrefix(fields[0], []byte("user=")) || !bytes.HasPrefix(fields[1], []byte("auth=")) {
		return "", "", false
	}
	user = string(fields[0][len("user="):])
	auth := string(fields[1][len("auth="):])
	const scheme = "bearer "
	if len(auth) <= len(scheme) || !strings.EqualFold(auth[:len(scheme)], scheme) || user == "" {
		return "", "", false
	}
	return user, auth[len(scheme):], true
}
