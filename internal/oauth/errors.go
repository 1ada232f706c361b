package oauth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/oauth2"
)

// Error types, as reported in State.LastErrorType and Error.Type.
const (
	// ErrorRejected: the endpoint refused the credentials or grant
	// (invalid_client, unauthorized_client, invalid_grant, ...): revoked or
	// expired secret/certificate, expired refresh token, missing consent.
	// Retrying will not help.
	ErrorRejected = "token_rejected"
	// ErrorScope: the requested scope is invalid for this client.
	ErrorScope = "token_scope"
	// ErrorUnavailable: network failure, timeout, 5xx, or an unusable
	// response. Retrying may help.
	ErrorUnavailable = "token_unavailable"
)

// Error is a classified token acquisition failure. Its message holds only
// the endpoint (host and path), the HTTP status, the endpoint's error code
// when it is one of a fixed set, and a description of our own: never text
// the endpoint wrote (error_description, error_uri, body), which may echo
// the credentials in any encoding.
type Error struct {
	Type        string // ErrorRejected, ErrorScope or ErrorUnavailable
	Endpoint    string // host/path of the token endpoint, when a request was made
	Code        string // RFC 6749 "error" from the endpoint, if in knownCodes
	HTTPStatus  int    // 0 when no HTTP response was received
	Description string // ours: what went wrong, never endpoint text
	// Err is the underlying transport/context error, for errors.Is (e.g.
	// context.DeadlineExceeded). Endpoint responses are not kept: their
	// bodies are free text.
	Err error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("oauth: " + e.Type + ": ")
	subject := "token endpoint"
	if e.Endpoint != "" {
		subject += " " + e.Endpoint
	}
	if e.HTTPStatus != 0 {
		fmt.Fprintf(&b, "%s returned HTTP %d", subject, e.HTTPStatus)
		if e.Code != "" {
			b.WriteString(" " + e.Code)
		}
	} else if e.Endpoint != "" {
		b.WriteString("token request to " + e.Endpoint + " failed")
	} else {
		b.WriteString("token request failed")
	}
	if e.Description != "" {
		b.WriteString(": " + e.Description)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// knownCodes are the error codes kept from a response: RFC 6749 §5.2 (token
// endpoint) and §4.1.2.1 (access_denied, server_error,
// temporarily_unavailable), and OpenID Connect Core §3.1.2.6's
// interaction_required and consent_required, which Entra ID returns. Any
// other value is dropped: it is endpoint text.
var knownCodes = map[string]bool{
	"invalid_request": true, "invalid_client": true, "invalid_grant": true,
	"unauthorized_client": true, "unsupported_grant_type": true, "invalid_scope": true,
	"access_denied": true, "server_error": true, "temporarily_unavailable": true,
	"interaction_required": true, "consent_required": true,
}

// classify turns a failure from x/oauth2 into an *Error. callCtx is the
// context the request ran under, so a deadline is reported as such even
// where x/oauth2 flattens the transport error into a string (jwt flow); rec
// (nil when no request was made) holds what the transport saw. Nothing of
// err's text is kept but what describeTransport picks for Go's own
// network errors, which is redacted all the same.
func classify(err error, callCtx context.Context, rec *callRecord, redact func(string) string) *Error {
	ep, status, refused, terr := rec.snapshot()
	if refused != nil {
		c := *refused
		return &c
	}
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		e := &Error{Endpoint: ep, Code: re.ErrorCode}
		if re.Response != nil {
			e.HTTPStatus = re.Response.StatusCode
		}
		if e.Code == "" {
			// The jwt flow does not parse error bodies.
			e.Code = parseErrorCode(re.Body)
		}
		if !knownCodes[e.Code] {
			e.Code = ""
		}
		e.Type = typeFor(e.Code, e.HTTPStatus)
		return e
	}
	e := &Error{Type: ErrorUnavailable, Endpoint: ep, Err: err}
	if terr != nil {
		e.Err = terr
	}
	if cerr := callCtx.Err(); cerr != nil {
		// Keep the context error in the chain for errors.Is.
		e.Err = fmt.Errorf("%w: %w", cerr, e.Err)
		e.Description = "no answer in time"
		if errors.Is(cerr, context.Canceled) {
			e.Description = "cancelled"
		}
		return e
	}
	if terr != nil {
		e.Description = limit(firstLine(redact(describeTransport(terr))), 300)
		return e
	}
	// x/oauth2 could not use a response it read: not JSON nor a form,
	// or a success without the fields of one.
	e.HTTPStatus = status
	e.Description = "not a usable token response"
	return e
}

// describeTransport names a transport failure in our own words: net/http's
// messages can quote what the endpoint sent ("malformed HTTP response %q")
// and url.Error quotes the URL.
func describeTransport(err error) string {
	var (
		dnsErr  *net.DNSError
		certErr *tls.CertificateVerificationError
		hostErr x509.HostnameError
		authErr x509.UnknownAuthorityError
		invErr  x509.CertificateInvalidError
		recErr  tls.RecordHeaderError
		alert   tls.AlertError
		netErr  net.Error
		opErr   *net.OpError
	)
	msg := err.Error()
	switch {
	case errors.As(err, &dnsErr):
		return "cannot resolve the host name"
	case errors.As(err, &certErr), errors.As(err, &hostErr), errors.As(err, &authErr), errors.As(err, &invErr):
		return "TLS certificate not accepted"
	case errors.As(err, &recErr):
		return "TLS handshake failed: the endpoint does not answer in TLS"
	case errors.As(err, &alert):
		return "TLS handshake failed"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed by the endpoint"
	case errors.As(err, &netErr) && netErr.Timeout():
		return "timed out"
	case strings.Contains(msg, "server response headers exceeded"):
		return fmt.Sprintf("response headers larger than %d KiB", maxHeaderBytes>>10)
	case strings.Contains(msg, "malformed HTTP"):
		return "the answer is not HTTP"
	case errors.As(err, &opErr) && opErr.Op == "dial":
		return "cannot connect"
	}
	return "transport error"
}

func typeFor(code string, status int) string {
	switch code {
	case "invalid_scope":
		return ErrorScope
	case "invalid_client", "unauthorized_client", "invalid_grant", "access_denied",
		"unsupported_grant_type", "invalid_request", "consent_required", "interaction_required":
		return ErrorRejected
	case "temporarily_unavailable", "server_error":
		return ErrorUnavailable
	}
	if status >= 500 || status == http.StatusTooManyRequests || status == http.StatusRequestTimeout || status == 0 {
		return ErrorUnavailable
	}
	return ErrorRejected
}

// parseErrorCode extracts the RFC 6749 §5.2 "error" field from a JSON or
// form body.
func parseErrorCode(body []byte) string {
	var j struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &j) == nil {
		return j.Error
	}
	if v, err := url.ParseQuery(string(body)); err == nil {
		return v.Get("error")
	}
	return ""
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		return s[:i]
	}
	return s
}

// redactor replaces every known secret in a message. Values shorter than 6
// characters are skipped: they would mangle ordinary words. Static secrets
// come from the configuration; rotating ones (access token, client
// assertion, rotated refresh token) keep only their latest value per kind so
// the list does not grow over a long run. Shared by the refreshing goroutine
// and readers, hence the lock.
type redactor struct {
	mu      sync.RWMutex
	static  []string
	current map[string]string
}

// add registers static secrets, with their URL-encoded forms (how they
// travel in a token request body an endpoint might echo).
func (r *redactor) add(ss ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range ss {
		if len(s) >= 6 {
			r.static = append(r.static, s)
			if q := url.QueryEscape(s); q != s {
				r.static = append(r.static, q)
			}
		}
	}
}

// set records the latest value of a rotating secret.
func (r *redactor) set(kind, value string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.current == nil {
		r.current = map[string]string{}
	}
	r.current[kind] = value
}

// addPEM registers a PEM document and each of its base64 lines, so a
// fragment of a key is redacted too.
func (r *redactor) addPEM(pemText string) {
	r.add(pemText)
	for _, line := range strings.Split(pemText, "\n") {
		line = strings.TrimSpace(line)
		if len(line) >= 16 && !strings.HasPrefix(line, "-----") {
			r.add(line)
		}
	}
}

// jwtRE matches compact JWS/JWT strings: assertions we did not build
// ourselves (x/oauth2's jwt flow) and JWT access tokens.
var jwtRE = regexp.MustCompile(`eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*`)

func (r *redactor) apply(s string) string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, sec := range r.static {
		s = strings.ReplaceAll(s, sec, "[REDACTED]")
	}
	for _, sec := range r.current {
		if len(sec) >= 6 {
			s = strings.ReplaceAll(s, sec, "[REDACTED]")
			s = strings.ReplaceAll(s, url.QueryEscape(sec), "[REDACTED]")
		}
	}
	return jwtRE.ReplaceAllString(s, "[REDACTED]")
}
