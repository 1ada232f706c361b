package oauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"

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

// Error is a classified token acquisition failure. Its message holds only the
// endpoint's error code, HTTP status and (redacted, truncated) description.
type Error struct {
	Type        string // ErrorRejected, ErrorScope or ErrorUnavailable
	Code        string // RFC 6749 "error" from the endpoint, if any
	HTTPStatus  int    // 0 when no HTTP response was received
	Description string // endpoint's error_description or transport error, redacted
	// Err is the underlying transport/context error, for errors.Is (e.g.
	// context.DeadlineExceeded). Endpoint responses are not kept: their
	// bodies are free text.
	Err error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("oauth: " + e.Type + ": ")
	if e.HTTPStatus != 0 {
		fmt.Fprintf(&b, "token endpoint returned HTTP %d", e.HTTPStatus)
		if e.Code != "" {
			b.WriteString(" " + e.Code)
		}
	} else {
		b.WriteString("token request failed")
	}
	if e.Description != "" {
		b.WriteString(": " + e.Description)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// classify turns a failure from x/oauth2 into an *Error. callCtx is the
// context the request ran under, so a deadline is reported as such even
// where x/oauth2 flattens the transport error into a string (jwt flow).
func classify(err error, callCtx context.Context, redact func(string) string) *Error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		e := &Error{Code: re.ErrorCode, Description: re.ErrorDescription}
		if re.Response != nil {
			e.HTTPStatus = re.Response.StatusCode
		}
		if e.Code == "" {
			// The jwt flow does not parse error bodies.
			e.Code, e.Description = parseErrorBody(re.Body)
		}
		e.Type = typeFor(e.Code, e.HTTPStatus)
		// Redact before truncating so no secret is cut into an unmatched prefix.
		e.Code = limit(errorCode(redact(e.Code)), 64)
		e.Description = limit(firstLine(redact(e.Description)), 300)
		return e
	}
	e := &Error{Type: ErrorUnavailable, Err: err}
	if cerr := callCtx.Err(); cerr != nil {
		// Keep the context error in the chain for errors.Is.
		e.Err = fmt.Errorf("%w: %w", cerr, err)
	}
	// Strip any URL query a transport error echoes (url.Error quotes the URL).
	e.Description = limit(firstLine(stripQueries(redact(err.Error()))), 300)
	return e
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

// parseErrorBody extracts RFC 6749 §5.2 fields from a JSON or form body.
func parseErrorBody(body []byte) (code, desc string) {
	var j struct {
		Error            string `json:"error"`
		ErrorDescription string `json:"error_description"`
	}
	if json.Unmarshal(body, &j) == nil {
		return j.Error, j.ErrorDescription
	}
	if v, err := url.ParseQuery(string(body)); err == nil {
		return v.Get("error"), v.Get("error_description")
	}
	return "", ""
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		return s[:i]
	}
	return s
}

func stripQueries(s string) string {
	for {
		i := strings.Index(s, "?")
		if i < 0 {
			return s
		}
		j := strings.IndexAny(s[i:], "\" ")
		if j < 0 {
			return s[:i]
		}
		s = s[:i] + s[i+j:]
	}
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

// errorCode keeps only the characters RFC 6749 allows in an "error" code
// (printable ASCII without '"' and '\\'), so an endpoint cannot break a log
// line with it.
func errorCode(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e || r == '"' || r == '\\' {
			return -1
		}
		return r
	}, s)
}
