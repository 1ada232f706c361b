// Package oauthtest is an OAuth2 token endpoint on loopback for tests. It
// records every request (form, headers, path), answers with a fresh bearer
// token or with a response the test sets, and checks the tokens it issued,
// as a mail server's or an API's bearer check: a token is good if this
// endpoint issued it and it has not expired yet.
package oauthtest // import "github.com/emailqos/emailqosreceiver/internal/oauthtest"

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"
)

// Responder answers a token request in place of Endpoint's default (Issue).
// form is the request's parsed POST form.
type Responder func(w http.ResponseWriter, r *http.Request, form url.Values)

// Endpoint is a token endpoint on an httptest server.
type Endpoint struct {
	*httptest.Server

	mu        sync.Mutex
	hits      int
	forms     []url.Values
	headers   []http.Header
	paths     []string
	respond   Responder
	expiresIn time.Duration
	format    string
	issued    []string
	expiry    map[string]time.Time
	presented []string
}

// New starts an endpoint that issues "access-token-1", "access-token-2"...
// valid for an hour, and stops it when the test ends.
func New(t testing.TB) *Endpoint {
	t.Helper()
	e := &Endpoint{expiresIn: time.Hour, format: "access-token-%d", expiry: map[string]time.Time{}}
	e.Server = httptest.NewServer(http.HandlerFunc(e.serve))
	t.Cleanup(e.Close)
	return e
}

func (e *Endpoint) serve(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		e.mu.Lock()
		e.hits++
		e.mu.Unlock()
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	e.mu.Lock()
	e.hits++
	e.forms = append(e.forms, r.PostForm)
	e.headers = append(e.headers, r.Header.Clone())
	e.paths = append(e.paths, r.URL.Path)
	respond := e.respond
	e.mu.Unlock()
	if respond != nil {
		respond(w, r, r.PostForm)
		return
	}
	e.Issue(w)
}

// Issue answers with a new token, numbered in issue order and valid for
// the endpoint's lifetime (expires_in in whole seconds).
func (e *Endpoint) Issue(w http.ResponseWriter) {
	e.mu.Lock()
	tok := fmt.Sprintf(e.format, len(e.issued)+1)
	e.issued = append(e.issued, tok)
	e.expiry[tok] = time.Now().Add(e.expiresIn)
	expiresIn := int64(e.expiresIn / time.Second)
	e.mu.Unlock()
	WriteJSON(w, http.StatusOK, map[string]any{
		"access_token": tok,
		"token_type":   "Bearer",
		"expires_in":   expiresIn,
	})
}

// SetRespond replaces the default answer; nil restores it.
func (e *Endpoint) SetRespond(f Responder) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.respond = f
}

// SetExpiresIn sets the lifetime of the tokens issued from now on.
func (e *Endpoint) SetExpiresIn(d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.expiresIn = d
}

// SetTokenFormat sets the tokens' form: a fmt format with one %d, the
// token's number.
func (e *Endpoint) SetTokenFormat(format string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.format = format
}

// Hits is the number of requests received.
func (e *Endpoint) Hits() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.hits
}

// Forms are the requests' POST forms, in order.
func (e *Endpoint) Forms() []url.Values {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]url.Values(nil), e.forms...)
}

// Headers are the requests' headers, in order.
func (e *Endpoint) Headers() []http.Header {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]http.Header(nil), e.headers...)
}

// Paths are the requests' URL paths, in order.
func (e *Endpoint) Paths() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.paths...)
}

// LastForm is the last request's form; the test fails if there was none.
func (e *Endpoint) LastForm(t testing.TB) url.Values {
	t.Helper()
	forms := e.Forms()
	if len(forms) == 0 {
		t.Fatal("token endpoint was not called")
	}
	return forms[len(forms)-1]
}

// Check reports whether token was issued here and has not expired; every
// token checked is recorded (Presented).
func (e *Endpoint) Check(token string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.presented = append(e.presented, token)
	exp, ok := e.expiry[token]
	return ok && time.Now().Before(exp)
}

// Presented are the tokens given to Check, in order.
func (e *Endpoint) Presented() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.presented...)
}

// Tokens are the tokens issued, in order.
func (e *Endpoint) Tokens() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.issued...)
}

// WaitExpired sleeps until every token issued so far has expired, with a
// margin for the response's transit to the client, whose clock started
// later.
func (e *Endpoint) WaitExpired() {
	e.mu.Lock()
	var last time.Time
	for _, exp := range e.expiry {
		if exp.After(last) {
			last = exp
		}
	}
	e.mu.Unlock()
	time.Sleep(time.Until(last) + 200*time.Millisecond)
}

// WriteJSON answers with status and v as JSON.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// Error answers with an RFC 6749 §5.2 error response.
func Error(status int, code, desc string) Responder {
	return func(w http.ResponseWriter, _ *http.Request, _ url.Values) {
		WriteJSON(w, status, map[string]string{"error": code, "error_description": desc})
	}
}
