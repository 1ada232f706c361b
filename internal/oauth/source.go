package oauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
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
		httpClient = &http.Client{}
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
				return "", time.Time{}, classify(ctx.Err(), ctx, s.red.apply)
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
		err = classify(ctxErr, ctx, s.red.apply)
		return
	}
	callCtx, cancel := s.callContext(ctx)
	defer cancel()
	tok, err = s.fetch(callCtx)
	fetched = time.Now()
	switch {
	case err != nil:
		err = classify(err, callCtx, s.red.apply)
	case tok == nil || tok.AccessToken == "":
		err = &Error{Type: ErrorUnavailable, Description: "token endpoint returned no access_token"}
	}
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
// the configured client whose transport ties each request to that context.
// x/oauth2's client-credentials and refresh flows already attach ctx to the
// request; its jwt flow does not, which the transport makes up for.
func (s *Source) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	cancel := context.CancelFunc(func() {})
	if _, ok := ctx.Deadline(); !ok && s.timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, s.timeout)
	}
	hc := *s.hc
	base := hc.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	hc.Transport = &boundTransport{base: base, ctx: ctx}
	return context.WithValue(ctx, oauth2.HTTPClient, &hc), cancel
}

type boundTransport struct {
	base http.RoundTripper
	ctx  context.Context
}

func (t *boundTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	// Keep the request's own context (http.Client.Timeout lives there) and
	// also end it when the call context ends. The call context is always
	// cancelled when Token returns, which releases the AfterFunc.
	ctx, cancel := context.WithCancel(r.Context())
	context.AfterFunc(t.ctx, cancel)
	return t.base.RoundTrip(r.WithContext(ctx))
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
