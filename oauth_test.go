package emailqosreceiver

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/receiver/receivertest"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/emailqos/emailqosreceiver/internal/faultnet"
	"github.com/emailqos/emailqosreceiver/internal/mailtest"
	"github.com/emailqos/emailqosreceiver/internal/metadata"
	"github.com/emailqos/emailqosreceiver/internal/oauthtest"
)

const (
	oauthClientID     = "emailqos-probe-app"
	oauthClientSecret = "s3cret-client-Vq81xZ"
	// oauthTokenMark is in every access token the test endpoint issues, so
	// that a leak of any of them is found even if it was never presented.
	oauthTokenMark = "Kf3pW9"
)

// tokenEndpoint is a client_credentials token endpoint on loopback
// (oauthtest) that issues counter-numbered tokens ("tok-1-…", "tok-2-…")
// valid for lifetime, refuses any other client or grant while writing the
// secrets it was sent back in every form, and, as BearerCheck of the mail
// server, accepts a token only if it issued it to alice and it has not
// expired yet.
type tokenEndpoint struct {
	*oauthtest.Endpoint

	mu     sync.Mutex
	secret string // the client secret the endpoint accepts
	fail   string // RFC 6749 error code answered with 400 instead of a token
}

func newTokenEndpoint(t *testing.T, lifetime time.Duration) *tokenEndpoint {
	t.Helper()
	e := &tokenEndpoint{Endpoint: oauthtest.New(t), secret: oauthClientSecret}
	e.SetExpiresIn(lifetime)
	e.SetTokenFormat("tok-%d-" + oauthTokenMark)
	e.SetRespond(e.respond)
	return e
}

func (e *tokenEndpoint) respond(w http.ResponseWriter, r *http.Request, form url.Values) {
	reply := func(status int, body any) { oauthtest.WriteJSON(w, status, body) }
	if r.Method != http.MethodPost || form.Get("grant_type") != "client_credentials" {
		// A refresh grant gets its refresh token and client secret back.
		reply(http.StatusBadRequest, map[string]string{"error": "unsupported_grant_type",
			"error_description": echoText(form.Get("refresh_token")) + " " + echoText(form.Get("client_secret"))})
		return
	}
	id, secret, basic := r.BasicAuth()
	if !basic {
		id, secret = form.Get("client_id"), form.Get("client_secret")
	}

	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case id != oauthClientID || secret != e.secret:
		// Like Entra, echo what was sent, and worse: encoded, lower-cased
		// and in parts, in every field. The receiver must print none of it.
		reply(http.StatusUnauthorized, map[string]string{
			"error":             "invalid_client",
			"error_description": "client secret " + secret + " is not valid for " + id + ": " + echoText(secret),
			"error_uri":         "https://login.example/error?secret=" + url.QueryEscape(echoText(secret)),
		})
	case e.fail != "":
		reply(http.StatusBadRequest, map[string]string{
			"error":             e.fail,
			"error_description": "request by " + id + " refused (secret " + secret + ") " + echoText(secret),
		})
	default:
		e.Issue(w)
	}
}

// echoForms are the ways a token endpoint could write a secret back:
// as sent, URL-encoded, base64 (alone and as the form field it came in),
// hex, lower- and upper-cased, and its halves and middle part.
func echoForms(secret string) []string {
	if len(secret) < 8 {
		return nil
	}
	n := len(secret)
	return []string{secret, url.QueryEscape(secret), hex.EncodeToString([]byte(secret)),
		base64.StdEncoding.EncodeToString([]byte(secret)), base64.RawURLEncoding.EncodeToString([]byte(secret)),
		base64.StdEncoding.EncodeToString([]byte("client_secret=" + url.QueryEscape(secret))),
		strings.ToLower(secret), strings.ToUpper(secret), secret[:n/2], secret[n/2:], secret[n/4 : 3*n/4]}
}

func echoText(secret string) string { return strings.Join(echoForms(secret), " ") }

// check is the mail server's BearerCheck.
func (e *tokenEndpoint) check(user, token string) bool {
	return e.Check(token) && user == alice
}

func (e *tokenEndpoint) set(f func(e *tokenEndpoint)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	f(e)
}

// oauthScraper is a started scraper whose logs are recorded.
type oauthScraper struct {
	*emailqosScraper
	logs    *observer.ObservedLogs
	scraped []pmetric.Metrics
}

// oauthSetup runs mailtest with XOAUTH2 checked by e and configures one
// roundtrip account "o365" (alice) that signs in with OAuth only: the
// receiver does not know alice's password.
func oauthSetup(t *testing.T, e *tokenEndpoint, tokenURL string, timeout time.Duration) (*oauthScraper, *mailtest.Server) {
	t.Helper()
	srv := startMail(t, mailtest.Options{BearerCheck: e.check})
	acct := mailAccount(srv, alice, "")
	acct.OAuth = &OAuthConfig{
		Provider:     "client_credentials",
		ClientID:     oauthClientID,
		ClientSecret: configopaqueString(oauthClientSecret),
		TokenURL:     tokenURL,
		Scopes:       []string{"mail.probe"},
	}
	cfg := testConfig(map[string]AccountConfig{"o365": acct})
	cfg.Timeout = timeout
	cfg.DeliveryTimeout = timeout - time.Second
	cfg.Roundtrip = []RoundtripConfig{{Account: "o365"}}
	require.NoError(t, confmap.Validate(cfg))

	core, logs := observer.New(zap.DebugLevel)
	settings := receivertest.NewNopSettings(metadata.Type)
	settings.Logger = zap.New(core)
	lifetime, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s := newScraper(cfg, settings, lifetime)
	require.NoError(t, s.start(context.Background(), componenttest.NewNopHost()))
	return &oauthScraper{emailqosScraper: s, logs: logs}, srv
}

// oauthResult is one scrape's outcome for the probe and for the token.
type oauthResult struct {
	code, success  int64
	errType        string
	valid          int64
	expiry         float64
	tokenErrType   string
	tokenResources int
	elapsed        time.Duration
}

func (s *oauthScraper) scrapeOnce(t *testing.T) oauthResult {
	t.Helper()
	start := time.Now()
	md, err := s.scrape(context.Background())
	require.NoError(t, err)
	res := oauthResult{elapsed: time.Since(start)}
	s.scraped = append(s.scraped, md)

	probeRM, ok := resources(t, filterTargets(md))["o365"]
	require.True(t, ok, "the probe is reported")
	code, ok := gauge(t, probeRM, "emailqos.error_code")
	require.True(t, ok)
	res.code = code.IntValue()
	assert.Equal(t, res.code, attr(probeRM, "emailqos.error_code").Int())
	succ, _ := gauge(t, probeRM, "emailqos.success")
	res.success = succ.IntValue()
	res.errType = attr(probeRM, "error.type").Str()

	for i := 0; i < md.ResourceMetrics().Len(); i++ {
		rm := md.ResourceMetrics().At(i)
		if attr(rm, "emailqos.account").Str() != "o365" {
			continue
		}
		res.tokenResources++
		valid, ok := gauge(t, rm, "emailqos.oauth.token.valid")
		require.True(t, ok)
		res.valid = valid.IntValue()
		exp, ok := gauge(t, rm, "emailqos.oauth.token.expiry")
		require.True(t, ok)
		res.expiry = exp.DoubleValue()
		res.tokenErrType = attr(rm, "error.type").Str()
	}
	assert.Equal(t, 1, res.tokenResources, "the token state is reported once")
	return res
}

// assertNoSecrets checks that neither the client secret nor any token the
// endpoint issued appears in a log entry (probe errors included: they are
// logged with the probe failure) or anywhere in the scraped metrics.
func (s *oauthScraper) assertNoSecrets(t *testing.T, e *tokenEndpoint) {
	t.Helper()
	secrets := append(echoForms(oauthClientSecret), oauthTokenMark)
	secrets = append(secrets, e.Tokens()...)
	for _, entry := range s.logs.All() {
		text := entry.Message + " " + fmt.Sprint(entry.ContextMap())
		for _, secret := range secrets {
			assert.NotContains(t, text, secret, "log entry %q", entry.Message)
		}
		if entry.Message == "probe failed" {
			assert.Contains(t, entry.ContextMap(), "error", "probe errors are logged, so checked here")
		}
	}
	for i, md := range s.scraped {
		b, err := (&pmetric.JSONMarshaler{}).MarshalMetrics(md)
		require.NoError(t, err)
		for _, secret := range secrets {
			assert.NotContains(t, string(b), secret, "scrape %d", i+1)
		}
	}
}

func TestOAuthRoundtrip(t *testing.T) {
	t.Parallel()
	e := newTokenEndpoint(t, time.Hour)
	s, srv := oauthSetup(t, e, e.URL, 4*time.Second)

	for i := range 2 {
		res := s.scrapeOnce(t)
		assert.Zero(t, res.code, "scrape %d: %+v", i+1, res)
		assert.Equal(t, int64(1), res.success)
		assert.Empty(t, res.errType)
		assert.Equal(t, int64(1), res.valid)
		assert.InDelta(t, 3600, res.expiry, 60)
		assert.Empty(t, res.tokenErrType)
	}
	assert.Equal(t, 1, e.Hits(), "one token serves IMAP, SMTP and the token metric, across scrapes")
	assert.Equal(t, 2, srv.Deliveries())
	shown := e.Presented()
	assert.Len(t, shown, 4, "each probe signs in to IMAP and SMTP with the token")
	for _, tok := range shown {
		assert.Equal(t, "tok-1-"+oauthTokenMark, tok)
	}
	s.assertNoSecrets(t, e)
}

func TestOAuthRefreshAndRevocation(t *testing.T) {
	t.Parallel()
	// expires_in 1: the source refreshes 10% of the lifetime early, and the
	// mail server refuses a token once its second is up.
	e := newTokenEndpoint(t, time.Second)
	s, _ := oauthSetup(t, e, e.URL, 4*time.Second)

	res := s.scrapeOnce(t)
	require.Zero(t, res.code, "%+v", res)
	assert.Equal(t, int64(1), res.valid)
	first := e.Presented()
	require.NotEmpty(t, first)

	e.WaitExpired()
	res = s.scrapeOnce(t)
	assert.Zero(t, res.code, "an expired token is replaced: %+v", res)
	assert.Equal(t, int64(1), res.success)
	assert.Equal(t, int64(1), res.valid)
	assert.Greater(t, res.expiry, 0.0)
	assert.LessOrEqual(t, res.expiry, 1.0)
	second := e.Presented()[len(first):]
	require.GreaterOrEqual(t, len(second), 2, "IMAP and SMTP signed in again")
	for _, tok := range second {
		assert.NotContains(t, first, tok, "the second scrape uses a new token")
	}
	assert.GreaterOrEqual(t, len(e.Tokens()), 2)

	// The client secret is revoked (the endpoint now wants another one).
	e.set(func(e *tokenEndpoint) { e.secret = "rotated-secret-value" })
	e.WaitExpired()
	shownBefore := len(e.Presented())
	res = s.scrapeOnce(t)
	assert.Equal(t, int64(3), res.code, "the reader signs in first: %+v", res)
	assert.Equal(t, "token_rejected", res.errType)
	assert.Zero(t, res.success)
	assert.Zero(t, res.valid)
	assert.Zero(t, res.expiry)
	assert.Equal(t, "token_rejected", res.tokenErrType)
	assert.Len(t, e.Presented(), shownBefore, "an expired token is never presented")
	s.assertNoSecrets(t, e)
}

func TestOAuthTokenFailures(t *testing.T) {
	t.Parallel()
	closedPort := func(t *testing.T) string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		addr := l.Addr().String()
		require.NoError(t, l.Close())
		return "http://" + addr + "/token"
	}
	for _, tc := range []struct {
		name     string
		fail     string                  // endpoint error code
		tokenURL func(*testing.T) string // nil: the test endpoint
		wantType string
	}{
		{name: "client secret revoked", fail: "invalid_client", wantType: "token_rejected"},
		{name: "wrong scope", fail: "invalid_scope", wantType: "token_scope"},
		{name: "endpoint down", tokenURL: closedPort, wantType: "token_unavailable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newTokenEndpoint(t, time.Hour)
			e.set(func(e *tokenEndpoint) { e.fail = tc.fail })
			url := e.URL
			if tc.tokenURL != nil {
				url = tc.tokenURL(t)
			}
			const timeout = 3 * time.Second
			s, srv := oauthSetup(t, e, url, timeout)

			res := s.scrapeOnce(t)
			assert.Less(t, res.elapsed, timeout, "the scrape returns within the probe timeout")
			assert.Equal(t, int64(3), res.code, "the reader signs in first: %+v", res)
			assert.Equal(t, tc.wantType, res.errType)
			assert.Zero(t, res.success)
			assert.Zero(t, res.valid)
			assert.Zero(t, res.expiry)
			assert.Equal(t, tc.wantType, res.tokenErrType)
			assert.Empty(t, e.Presented(), "nothing reached the mail server")
			assert.Zero(t, srv.Deliveries())
			if tc.tokenURL == nil {
				assert.Positive(t, e.Hits())
			}
			s.assertNoSecrets(t, e)
		})
	}
}

// TestOAuthTokenEndpointHung: an endpoint that accepts the connection and
// never answers must not hold the scrape past the probe timeout either.
func TestOAuthTokenEndpointHung(t *testing.T) {
	t.Parallel()
	e := newTokenEndpoint(t, time.Hour)
	const timeout = 2 * time.Second
	s, _ := oauthSetup(t, e, "http://"+faultnet.BlackHole(t)+"/token", timeout)

	res := s.scrapeOnce(t)
	assert.Less(t, res.elapsed, timeout+time.Second, "the scrape returns within the probe timeout")
	assert.Equal(t, int64(3), res.code, "%+v", res)
	// The probe's own deadline passed while it waited for the token.
	assert.Contains(t, []string{"timeout", "token_unavailable"}, res.errType)
	assert.Zero(t, res.valid)
	assert.Equal(t, "token_unavailable", res.tokenErrType)
	s.assertNoSecrets(t, e)
}

// TestOAuthTokenEndpointHostile: a token endpoint that redirects (to plain
// http on another host) or answers without end fails the probe at sign-in
// as token_unavailable within the probe timeout + 1 s; the redirect target
// gets no connection, so the client secret never reaches it.
func TestOAuthTokenEndpointHostile(t *testing.T) {
	t.Parallel()
	var targetConns atomic.Int64
	target := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token":"tok-stolen","expires_in":3600}`))
	}))
	l, err := net.Listen("tcp", "127.0.0.2:0")
	require.NoError(t, err)
	target.Listener = l
	target.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			targetConns.Add(1)
		}
	}
	target.Start()
	t.Cleanup(target.Close)

	endless := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		chunk := []byte(strings.Repeat("A", 32<<10))
		_, _ = w.Write([]byte(`{"access_token":"`))
		for r.Context().Err() == nil {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}
	cases := map[string]struct {
		handler http.HandlerFunc
		want    string
	}{
		"endless body": {endless, "larger than 512 KiB"},
	}
	for _, code := range []int{301, 302, 303, 307, 308} {
		cases[fmt.Sprintf("redirect %d", code)] = struct {
			handler http.HandlerFunc
			want    string
		}{func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, target.URL+"/token?client_secret="+url.QueryEscape(oauthClientSecret), code)
		}, fmt.Sprintf("HTTP %d: a redirect", code)}
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newTokenEndpoint(t, time.Hour)
			hostile := httptest.NewServer(tc.handler)
			t.Cleanup(hostile.Close)
			const timeout = 3 * time.Second
			s, srv := oauthSetup(t, e, hostile.URL+"/tenant/token", timeout)

			res := s.scrapeOnce(t)
			assert.Less(t, res.elapsed, timeout+time.Second, "the scrape returns within the probe timeout + 1 s")
			assert.Equal(t, int64(3), res.code, "the reader signs in first: %+v", res)
			assert.Equal(t, "token_unavailable", res.errType)
			assert.Zero(t, res.valid)
			assert.Equal(t, "token_unavailable", res.tokenErrType)
			assert.Empty(t, e.Presented(), "nothing reached the mail server")
			assert.Zero(t, srv.Deliveries())
			var logged bool
			for _, entry := range s.logs.All() {
				if entry.Message != "probe failed" {
					continue
				}
				msg := fmt.Sprint(entry.ContextMap()["error"])
				logged = true
				assert.Contains(t, msg, strings.TrimPrefix(hostile.URL, "http://")+"/tenant/token", "the error names the endpoint")
				assert.Contains(t, msg, tc.want)
				assert.NotContains(t, msg, "127.0.0.2", "the error does not quote the Location")
			}
			assert.True(t, logged, "the failure is logged")
			s.assertNoSecrets(t, e)
		})
	}
	t.Cleanup(func() {
		assert.Zero(t, targetConns.Load(), "the redirect target got a connection")
	})
}
