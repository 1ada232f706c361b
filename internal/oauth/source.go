package oauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	"golang.org/x/oauth2/google"
)

const (
	// maxRefreshMargin and refreshFraction: refresh when the remaining
	// lifetime drops below min(5 min, 10% of the lifetime), so an hour-long
	// token is renewed 5 min early and a short one still gets most of its use.
	maxRefreshMargin = 5 * time.Minute
	refreshFraction  = 10
	// defaultLifetime is assumed when the endpoint omits expires_in; an
	// hour matches Entra and Google and forces a periodic re-check.
	defaultLifetime = time.Hour
	// defaultRequestTimeout bounds a token request whose ctx has no deadline.
	defaultRequestTimeout = 30 * time.Second
	// maxResponseBytes caps a token endpoint's response body; a real one
	// is a few KB. It must stay below x/oauth2's own 1 MiB cut
	// (internal/token.go and jwt/jwt.go: io.LimitReader(body, 1<<20)),
	// which truncates silently: going over ours is an error instead.
	maxResponseBytes = 512 << 10
	// maxHeaderBytes caps the response headers of the default transport
	// (net/http allows 10 MB).
	maxHeaderBytes = 64 << 10
)

// Source hands out access tokens for one Config. It is safe for concurrent
// use; concurrent callers needing a new token share one request.
//
// Context handling: x/oauth2 TokenSources capture a context at construction
// and (in the jwt flow) send requests without any context. Source therefore
// does not keep an x/oauth2 TokenSource; each refresh builds a one-shot
// request from the provider's config (clientcredentials.Config.Token,
// oauth2.Config.TokenSource, jwt.Config.TokenSource) with a context carrying
// a per-call *http.Client whose transport cancels the request when the
// caller's ctx ends. Caching is done here, with our clock and refresh margin.
type Source struct {
	fetch   func(ctx context.Context) (*oauth2.Token, error)
	hc      *http.Client
	red     *redactor
	now     func() time.Time // injectable for tests
	timeout time.Duration

	mu        sync.Mutex
	token     string
	expiry    time.Time
	refreshAt time.Time
	inflight  *call
	lastErr   *Error
}

type call struct {
	done        chan struct{}
	token       string
	expiry      time.Time
	err         error
	ctxCanceled bool // the leader's ctx ended: waiters with live contexts retry
}

// State is a snapshot for health reporting. LastError is classified and
// redacted; it is empty after a successful refresh.
type State struct {
	Acquired      bool // a token is cached and not yet expired
	Expiry        time.Time
	LastError     string
	LastErrorType string
}

// NewSource validates c, loads key files and prepares the token request. It
// makes no network call. httpClient may be nil (a default client is used);
// its Transport, Jar and redirect policy are used for token requests.
func NewSource(ctx context.Context, c Config, httpClient *http.Client) (*Source, error) {
	_ = ctx // reserved: construction does no I/O beyond reading local files
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if httpClient == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxResponseHeaderBytes = maxHeaderBytes
		httpClient = &http.Client{Transport: t}
	}
	s := &Source{hc: httpClient, red: &redactor{}, now: time.Now, timeout: defaultRequestTimeout}
	s.red.add(c.ClientSecret, c.RefreshToken)
	tokenURL := c.tokenURL()
	scopes := c.scopes()
	params := url.Values{}
	for k, v := range c.EndpointParams {
		params[k] = append([]string(nil), v...)
	}

	switch c.Provider {
	case ProviderMicrosoft, ProviderClientCredentials:
		// Entra documents credentials in the form body; for the generic
		// provider let x/oauth2 probe header then body.
		style := oauth2.AuthStyleAutoDetect
		if c.Provider == ProviderMicrosoft {
			style = oauth2.AuthStyleInParams
		}
		if c.ClientSecret != "" {
			cc := &clientcredentials.Config{
				ClientID: c.ClientID, ClientSecret: c.ClientSecret, TokenURL: tokenURL,
				Scopes: scopes, EndpointParams: params, AuthStyle: style,
			}
			s.fetch = cc.Token
			break
		}
		cred, keyPEM, err := loadCertCredential(c.CertificateFile, c.PrivateKeyFile)
		s.red.addPEM(keyPEM)
		if err != nil {
			return nil, err
		}
		s.fetch = func(ctx context.Context) (*oauth2.Token, error) {
			// A fresh assertion per request: each has its own jti and exp.
			a, err := cred.assertion(c.ClientID, tokenURL, s.now())
			if err != nil {
				return nil, err
			}
			s.red.set("client_assertion", a)
			p := url.Values{}
			for k, v := range params {
				p[k] = v
			}
			p.Set("client_assertion_type", clientAssertionType)
			p.Set("client_assertion", a)
			cc := &clientcredentials.Config{
				ClientID: c.ClientID, TokenURL: tokenURL, Scopes: scopes,
				EndpointParams: p, AuthStyle: oauth2.AuthStyleInParams,
			}
			return cc.Token(ctx)
		}

	case ProviderGoogleServiceAccount:
		keyJSON, err := os.ReadFile(c.ServiceAccountKeyFile)
		if err != nil {
			return nil, fmt.Errorf("service_account_key_file: cannot read file: %w", pathless(err))
		}
		var key struct {
			Type        string `json:"type"`
			ClientEmail string `json:"client_email"`
			PrivateKey  string `json:"private_key"`
		}
		if json.Unmarshal(keyJSON, &key) != nil {
			return nil, errors.New("service_account_key_file: not a JSON key file")
		}
		s.red.addPEM(key.PrivateKey)
		switch {
		case key.Type != "service_account":
			return nil, fmt.Errorf("service_account_key_file: type is %q, want \"service_account\"", limit(key.Type, 40))
		case key.ClientEmail == "":
			return nil, errors.New("service_account_key_file: client_email missing")
		}
		// x/oauth2 parses the key only when signing; check it now so a bad
		// key is a configuration error rather than a runtime one.
		if _, err := parseRSAKey([]byte(key.PrivateKey)); err != nil {
			return nil, fmt.Errorf("service_account_key_file: private_key: %w", err)
		}
		jc, err := google.JWTConfigFromJSON(keyJSON, scopes...)
		if err != nil {
			// Its messages may quote file contents; keep ours generic.
			return nil, errors.New("service_account_key_file: cannot parse key file")
		}
		jc.Subject = c.Subject
		if c.TokenURL != "" {
			jc.TokenURL = c.TokenURL
		} else if err := checkURL(jc.TokenURL); err != nil {
			// The key file names the endpoint; it gets the secret-bearing
			// assertion, so it follows the same https rule as token_url.
			return nil, fmt.Errorf("service_account_key_file: token_uri %v", err)
		}
		s.fetch = func(ctx context.Context) (*oauth2.Token, error) {
			return jc.TokenSource(ctx).Token()
		}

	case ProviderGoogleRefreshToken:
		oc := &oauth2.Config{
			ClientID: c.ClientID, ClientSecret: c.ClientSecret,
			Endpoint: oauth2.Endpoint{TokenURL: tokenURL, AuthStyle: oauth2.AuthStyleInParams},
		}
		refresh := c.RefreshToken // only the single-flight leader touches it
		s.fetch = func(ctx context.Context) (*oauth2.Token, error) {
			t, err := oc.TokenSource(ctx, &oauth2.Token{RefreshToken: refresh}).Token()
			if err == nil && t.RefreshToken != "" && t.RefreshToken != refresh {
				// The endpoint rotated the refresh token: the old one may
				// now be dead, so keep the new one (in memory only).
				refresh = t.RefreshToken
				s.red.set("refresh_token", refresh)
			}
			return t, err
		}
	}
	return s, nil
}

// Token returns a valid access token and its expiry, fetching a new one when
// none is cached or the cached one is within the refresh margin. Every HTTP
// request is bounded by ctx (and by 30 s when ctx has no deadline). If a
// refresh fails while the cached token is still valid, the cached token is
// returned and the failure is only recorded in State.
func (s *Source) Token(ctx context.Context) (string, time.Time, error) {
	for {
		s.mu.Lock()
		if s.token != "" && s.now().Before(s.refreshAt) {
			tok, exp := s.token, s.expiry
			s.mu.Unlock()
			return tok, exp, nil
		}
		if c := s.inflight; c != nil {
			s.mu.Unlock()
			select {
			case <-c.done:
				if c.ctxCanceled && ctx.Err() == nil {
					continue // the leader gave up, not the endpoint: try ourselves
				}
				return c.token, c.expiry, c.err
			case <-ctx.Done():
				return "", time.Time{}, classify(ctx.Err(), ctx, nil, s.red.apply)
			}
		}
		c := &call{done: make(chan struct{})}
		s.inflight = c
		s.mu.Unlock()
		s.lead(ctx, c)
		return c.token, c.expiry, c.err
	}
}

// lead performs the refresh for c and publishes the outcome; the deferred
// part runs even if fetch panics so waiters are never stranded.
func (s *Source) lead(ctx context.Context, c *call) {
	var (
		tok     *oauth2.Token
		err     error
		fetched time.Time
	)
	defer func() {
		s.mu.Lock()
		now := s.now()
		switch {
		case err == nil:
			lifetime := defaultLifetime
			if !tok.Expiry.IsZero() {
				// Expiry is on the wall clock; carry the lifetime over to
				// ours so tests can drive time.
				lifetime = tok.Expiry.Sub(fetched)
			}
			s.token, s.expiry = tok.AccessToken, now.Add(lifetime)
			s.refreshAt = s.expiry.Add(-refreshMargin(lifetime))
			s.red.set("access_token", tok.AccessToken)
			s.lastErr = nil
			c.token, c.expiry = s.token, s.expiry
		case s.token != "" && now.Before(s.expiry):
			// Early refresh failed but the token still works: use it.
			s.lastErr = asError(err)
			c.token, c.expiry = s.token, s.expiry
		default:
			s.lastErr = asError(err)
			c.err = s.lastErr
			c.ctxCanceled = ctx.Err() != nil
		}
		s.inflight = nil
		s.mu.Unlock()
		close(c.done)
	}()

	if ctxErr := ctx.Err(); ctxErr != nil {
		err = classify(ctxErr, ctx, nil, s.red.apply)
		return
	}
	callCtx, rec, cancel := s.callContext(ctx)
	defer cancel()
	tok, err = s.fetch(callCtx)
	fetched = time.Now()
	if err != nil {
		err = classify(err, callCtx, rec, s.red.apply)
		return
	}
	if tok == nil || tok.AccessToken == "" {
		e := rec.invalid("no access_token in the response")
		// An error code in a 200 answer: x/oauth2's jwt flow does not
		// look for one (its other flows do).
		if tok != nil {
			if code, _ := tok.Extra("error").(string); knownCodes[code] {
				e.Code, e.Type, e.Description = code, typeFor(code, e.HTTPStatus), ""
			}
		}
		err = e
		return
	}
	lifetime, why := lifetimeOf(tok, fetched)
	if why != "" {
		err = rec.invalid(why)
		return
	}
	// Carry the expiry over to tok.Expiry, which the deferred part reads.
	tok.Expiry = fetched.Add(lifetime)
}

// lifetimeOf reads expires_in from the response. RFC 6749 §5.1 makes it
// RECOMMENDED, not required: without it the token is assumed valid for
// defaultLifetime (and refreshed before that). A value of zero or below, or
// one that is not a number, makes the response unusable: such a token
// would be fetched again at every use.
func lifetimeOf(tok *oauth2.Token, fetched time.Time) (time.Duration, string) {
	var secs float64
	switch v := tok.Extra("expires_in").(type) {
	case nil:
		// Absent (JSON), or null. The jwt flow may have an expiry from
		// an id_token instead.
		if !tok.Expiry.IsZero() {
			if d := tok.Expiry.Sub(fetched); d > 0 {
				return d, ""
			}
			return 0, "the token has already expired"
		}
		return defaultLifetime, ""
	case string:
		// Form-encoded responses (absent: ""), and JSON strings, which
		// x/oauth2 accepts too.
		if strings.TrimSpace(v) == "" {
			return defaultLifetime, ""
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			return 0, "expires_in is not a number"
		}
		secs = f
	case float64:
		secs = v
	case int64:
		secs = float64(v)
	case json.Number:
		f, err := v.Float64()
		if err != nil {
			return 0, "expires_in is not a number"
		}
		secs = f
	default:
		return 0, "expires_in is not a number"
	}
	switch {
	case !(secs > 0): // also NaN
		return 0, "expires_in is zero or below"
	case secs < 1:
		return 0, "expires_in is below one second"
	}
	// x/oauth2 clamps JSON values to MaxInt32 seconds (68 years); keep
	// the same ceiling so the Duration cannot overflow.
	return time.Duration(min(secs, math.MaxInt32)) * time.Second, ""
}

func asError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Type: ErrorUnavailable, Description: "token request failed"}
}

func refreshMargin(lifetime time.Duration) time.Duration {
	return min(maxRefreshMargin, lifetime/refreshFraction)
}

// callContext derives the context for one token request: bounded by ctx
// (plus a default timeout) and carrying, under oauth2.HTTPClient, a copy of
// the configured client whose transport ties each request to that context,
// refuses redirects and plain http, caps the response and records what it
// saw in the returned callRecord. x/oauth2's client-credentials and refresh
// flows already attach ctx to the request; its jwt flow does not, which the
// transport makes up for.
func (s *Source) callContext(ctx context.Context) (context.Context, *callRecord, context.CancelFunc) {
	cancel := context.CancelFunc(func() {})
	if _, ok := ctx.Deadline(); !ok && s.timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, s.timeout)
	}
	rec := &callRecord{}
	hc := *s.hc
	base := hc.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	hc.Transport = &boundTransport{base: base, ctx: ctx, rec: rec}
	// The transport already refuses every 3xx; this covers a response it
	// did not see as one (and documents the rule where net/http looks).
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return errRedirect }
	return context.WithValue(ctx, oauth2.HTTPClient, &hc), rec, cancel
}

var errRedirect = errors.New("redirect refused")

type boundTransport struct {
	base http.RoundTripper
	ctx  context.Context
	rec  *callRecord
}

func (t *boundTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	ep := endpointName(r.URL)
	t.rec.setEndpoint(ep)
	// Checked on every request actually made, not only on the configured
	// URL: it carries the client secret, refresh token or assertion.
	if err := checkURL(r.URL.String()); err != nil {
		if r.Body != nil {
			_ = r.Body.Close()
		}
		return nil, t.rec.refuse(&Error{Type: ErrorUnavailable, Endpoint: ep, Description: err.Error()})
	}
	// Keep the request's own context (http.Client.Timeout lives there) and
	// also end it when the call context ends. The call context is always
	// cancelled when Token returns, which releases the AfterFunc.
	ctx, cancel := context.WithCancel(r.Context())
	context.AfterFunc(t.ctx, cancel)
	resp, err := t.base.RoundTrip(r.WithContext(ctx))
	if err != nil {
		t.rec.fail(err)
		return nil, err
	}
	switch {
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		// Token endpoints are not redirected in practice, and following
		// one would re-send the credentials (a 307/308 re-POSTs the body)
		// to wherever the Location points. Its body and Location are
		// not read.
		_ = resp.Body.Close()
		return nil, t.rec.refuse(&Error{Type: ErrorUnavailable, Endpoint: ep, HTTPStatus: resp.StatusCode,
			Description: "a redirect; token requests never follow redirects"})
	case resp.ContentLength > maxResponseBytes:
		_ = resp.Body.Close()
		return nil, t.rec.refuse(overBudget(ep, resp.StatusCode))
	}
	resp.Body = &budgetBody{rc: resp.Body, left: maxResponseBytes, rec: t.rec, ep: ep, status: resp.StatusCode}
	t.rec.setStatus(resp.StatusCode)
	return resp, nil
}

func overBudget(ep string, status int) *Error {
	return &Error{Type: ErrorUnavailable, Endpoint: ep, HTTPStatus: status,
		Description: fmt.Sprintf("response larger than %d KiB", maxResponseBytes>>10)}
}

// budgetBody ends a response body at maxResponseBytes with an error (that
// x/oauth2 reports as a string; the callRecord keeps the cause).
type budgetBody struct {
	rc     io.ReadCloser
	left   int64
	rec    *callRecord
	ep     string
	status int
}

func (b *budgetBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// A body of exactly the budget is fine: look for one byte more.
		var one [1]byte
		n, err := b.rc.Read(one[:])
		if n > 0 {
			return 0, b.rec.refuse(overBudget(b.ep, b.status))
		}
		return 0, err
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	if err != nil && err != io.EOF {
		b.rec.fail(err)
	}
	return n, err
}

func (b *budgetBody) Close() error { return b.rc.Close() }

// callRecord notes what the transport saw during one token request.
// x/oauth2 flattens transport and body errors into strings (fmt %v), so
// classify takes the cause from here, never from those strings.
type callRecord struct {
	mu       sync.Mutex
	endpoint string // host/path of the last request made
	status   int
	refused  *Error // a rule of ours ended the request
	err      error  // the first transport or body read error
}

func (r *callRecord) setEndpoint(ep string) {
	r.mu.Lock()
	r.endpoint = ep
	r.mu.Unlock()
}

func (r *callRecord) setStatus(status int) {
	r.mu.Lock()
	r.status = status
	r.mu.Unlock()
}

func (r *callRecord) refuse(e *Error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.refused == nil {
		r.refused = e
	}
	return e
}

func (r *callRecord) fail(err error) {
	r.mu.Lock()
	if r.err == nil {
		r.err = err
	}
	r.mu.Unlock()
}

// snapshot returns the record's fields; r may be nil (no request made).
func (r *callRecord) snapshot() (endpoint string, status int, refused *Error, err error) {
	if r == nil {
		return "", 0, nil, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.endpoint, r.status, r.refused, r.err
}

// invalid types a 2xx response that is not a usable token.
func (r *callRecord) invalid(why string) *Error {
	ep, status, _, _ := r.snapshot()
	return &Error{Type: ErrorUnavailable, Endpoint: ep, HTTPStatus: status, Description: why}
}

// endpointName is how errors name a token endpoint: host and path, never
// the query (or user info).
func endpointName(u *url.URL) string {
	if u == nil {
		return ""
	}
	return limit(u.Host+u.EscapedPath(), 200)
}

// State reports the cached token's status and the last refresh error.
func (s *Source) State() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := State{Expiry: s.expiry, Acquired: s.token != "" && s.now().Before(s.expiry)}
	if s.lastErr != nil {
		st.LastError = s.lastErr.Error()
		st.LastErrorType = s.lastErr.Type
	}
	return st
}
