package oauth

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emailqos/emailqosreceiver/internal/oauthtest"
)

func TestMicrosoftClientSecret(t *testing.T) {
	e := newTokenEndpoint(t)
	s := mustSource(t, microsoftSecretConfig(e))
	tok, exp, err := s.Token(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if tok != "access-token-1" {
		t.Fatalf("token %q", tok)
	}
	if d := time.Until(exp); d < 59*time.Minute || d > 61*time.Minute {
		t.Fatalf("expiry in %v, want ~1h", d)
	}
	if p := e.Paths()[0]; p != "/contoso.onmicrosoft.com/oauth2/v2.0/token" {
		t.Fatalf("path %q", p)
	}
	f := e.LastForm(t)
	want := url.Values{
		"grant_type":    {"client_credentials"},
		"scope":         {DefaultMicrosoftScope},
		"client_id":     {testClientID},
		"client_secret": {testClientSecret},
	}
	if f.Encode() != want.Encode() {
		t.Fatalf("form %v, want %v", f, want)
	}
	if st := s.State(); !st.Acquired || !st.Expiry.Equal(exp) || st.LastError != "" {
		t.Fatalf("state %+v", st)
	}
}

func TestMicrosoftCertificate(t *testing.T) {
	e := newTokenEndpoint(t)
	key := testKey(t, 0)
	certFile, keyFile, der := writeCert(t, key, key)
	tokenURL := e.URL + "/tenant/oauth2/v2.0/token"
	clock := newFakeClock()
	s := mustSource(t, Config{
		Provider: ProviderMicrosoft, ClientID: testClientID, TokenURL: tokenURL,
		CertificateFile: certFile, PrivateKeyFile: keyFile,
		Scopes: []string{"https://outlook.office365.us/.default"},
	})
	s.now = clock.Now
	if _, _, err := s.Token(t.Context()); err != nil {
		t.Fatal(err)
	}
	f := e.LastForm(t)
	if f.Get("grant_type") != "client_credentials" || f.Get("client_id") != testClientID ||
		f.Get("scope") != "https://outlook.office365.us/.default" || f.Has("client_secret") {
		t.Fatalf("form %v", f)
	}
	if f.Get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
		t.Fatalf("client_assertion_type %q", f.Get("client_assertion_type"))
	}
	first := f.Get("client_assertion")
	header, claims := verifyJWT(t, first, &key.PublicKey)
	if header["alg"] != "RS256" || header["typ"] != "JWT" || header["x5t"] != thumbprint(der) {
		t.Fatalf("header %v (x5t want %s)", header, thumbprint(der))
	}
	now := float64(clock.Now().Unix())
	if claims["aud"] != tokenURL || claims["iss"] != testClientID || claims["sub"] != testClientID {
		t.Fatalf("claims %v", claims)
	}
	if exp, _ := claims["exp"].(float64); exp <= now || exp > now+600 {
		t.Fatalf("exp %v, now %v", claims["exp"], now)
	}
	if nbf, _ := claims["nbf"].(float64); nbf > now {
		t.Fatalf("nbf %v after now %v", nbf, now)
	}
	if jti, _ := claims["jti"].(string); len(jti) < 16 {
		t.Fatalf("jti %q", jti)
	}

	// Each request carries a fresh assertion (new jti).
	clock.Advance(58 * time.Minute)
	if _, _, err := s.Token(t.Context()); err != nil {
		t.Fatal(err)
	}
	_, claims2 := verifyJWT(t, e.LastForm(t).Get("client_assertion"), &key.PublicKey)
	if claims2["jti"] == claims["jti"] {
		t.Fatal("jti reused")
	}
}

func TestGoogleServiceAccount(t *testing.T) {
	e := newTokenEndpoint(t)
	key := testKey(t, 1)
	tokenURL := e.URL + "/token"
	s := mustSource(t, Config{
		Provider:              ProviderGoogleServiceAccount,
		ServiceAccountKeyFile: writeSAKey(t, key, "service_account", tokenURL),
		Subject:               testSubject,
	})
	tok, _, err := s.Token(t.Context())
	if err != nil || tok == "" {
		t.Fatalf("%q %v", tok, err)
	}
	f := e.LastForm(t)
	if f.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
		t.Fatalf("grant_type %q", f.Get("grant_type"))
	}
	header, claims := verifyJWT(t, f.Get("assertion"), &key.PublicKey)
	if header["alg"] != "RS256" || header["kid"] != "kid-1" {
		t.Fatalf("header %v", header)
	}
	if claims["iss"] != testSAEmail || claims["sub"] != testSubject ||
		claims["scope"] != DefaultGoogleScope || claims["aud"] != tokenURL {
		t.Fatalf("claims %v", claims)
	}

	// TokenURL overrides the key's token_uri.
	e2 := newTokenEndpoint(t)
	s2 := mustSource(t, Config{
		Provider:              ProviderGoogleServiceAccount,
		ServiceAccountKeyFile: writeSAKey(t, key, "service_account", "https://oauth2.googleapis.com/token"),
		Subject:               testSubject,
		TokenURL:              e2.URL + "/alt",
	})
	if _, _, err := s2.Token(t.Context()); err != nil || e2.Hits() != 1 {
		t.Fatalf("override: hits %d, err %v", e2.Hits(), err)
	}
}

func TestGoogleRefreshToken(t *testing.T) {
	e := newTokenEndpoint(t)
	clock := newFakeClock()
	s := mustSource(t, Config{
		Provider: ProviderGoogleRefreshToken, ClientID: testClientID, ClientSecret: testClientSecret,
		RefreshToken: testRefreshToken, TokenURL: e.URL + "/token",
	})
	s.now = clock.Now
	// First response rotates the refresh token.
	e.SetRespond(func(w http.ResponseWriter, _ *http.Request, _ url.Values) {
		oauthtest.WriteJSON(w, http.StatusOK, map[string]any{
			"access_token": "ya29.first", "expires_in": 3599, "refresh_token": "1//rotated-refresh-token",
		})
	})
	if tok, _, err := s.Token(t.Context()); err != nil || tok != "ya29.first" {
		t.Fatalf("%q %v", tok, err)
	}
	f := e.LastForm(t)
	want := url.Values{
		"grant_type": {"refresh_token"}, "refresh_token": {testRefreshToken},
		"client_id": {testClientID}, "client_secret": {testClientSecret},
	}
	if f.Encode() != want.Encode() {
		t.Fatalf("form %v", f)
	}
	e.SetRespond(nil)
	clock.Advance(time.Hour)
	if _, _, err := s.Token(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := e.LastForm(t).Get("refresh_token"); got != "1//rotated-refresh-token" {
		t.Fatalf("second refresh used %q, want the rotated token", got)
	}
}

func TestGenericClientCredentials(t *testing.T) {
	e := newTokenEndpoint(t)
	s := mustSource(t, Config{
		Provider: ProviderClientCredentials, ClientID: testClientID, ClientSecret: testClientSecret,
		TokenURL: e.URL + "/oauth/token", Scopes: []string{"mail.read", "mail.send"},
		EndpointParams: map[string][]string{"audience": {"https://mail.example"}},
	})
	if _, _, err := s.Token(t.Context()); err != nil {
		t.Fatal(err)
	}
	f := e.LastForm(t)
	if f.Get("grant_type") != "client_credentials" || f.Get("scope") != "mail.read mail.send" || f.Get("audience") != "https://mail.example" {
		t.Fatalf("form %v", f)
	}
	// Auto-detect tries HTTP Basic first.
	if u, p, ok := (&http.Request{Header: e.Headers()[0]}).BasicAuth(); !ok || u != testClientID || p != testClientSecret {
		t.Fatalf("basic auth %q %v", u, ok)
	}
}

func TestTokenIsCached(t *testing.T) {
	e := newTokenEndpoint(t)
	s := mustSource(t, microsoftSecretConfig(e))
	t1, x1, err := s.Token(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t2, x2, err := s.Token(t.Context())
	if err != nil || t1 != t2 || !x1.Equal(x2) {
		t.Fatalf("second call: %q %v %v", t2, x2, err)
	}
	if n := e.Hits(); n != 1 {
		t.Fatalf("endpoint hit %d times", n)
	}
}

func TestRefreshBeforeExpiry(t *testing.T) {
	for _, tc := range []struct {
		expiresIn    int64
		cachedUntil  time.Duration // still cached just before this
		refreshAfter time.Duration
	}{
		{3600, 54 * time.Minute, 55*time.Minute + time.Second}, // margin 5 min
		{60, 53 * time.Second, 55 * time.Second},               // margin 10% = 6 s
	} {
		e := newTokenEndpoint(t)
		e.SetExpiresIn(time.Duration(tc.expiresIn) * time.Second)
		clock := newFakeClock()
		s := mustSource(t, microsoftSecretConfig(e))
		s.now = clock.Now
		t1, _, err := s.Token(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		clock.Advance(tc.cachedUntil)
		if t2, _, _ := s.Token(t.Context()); t2 != t1 || e.Hits() != 1 {
			t.Fatalf("expires_in %d: refreshed too early (hits %d)", tc.expiresIn, e.Hits())
		}
		clock.Advance(tc.refreshAfter - tc.cachedUntil)
		t3, exp, err := s.Token(t.Context())
		if err != nil || t3 == t1 || e.Hits() != 2 {
			t.Fatalf("expires_in %d: not refreshed: %q %v hits %d", tc.expiresIn, t3, err, e.Hits())
		}
		if d := exp.Sub(clock.Now()); d < time.Duration(tc.expiresIn-2)*time.Second {
			t.Fatalf("new expiry only %v ahead", d)
		}
	}
}

func TestFailedEarlyRefreshKeepsValidToken(t *testing.T) {
	e := newTokenEndpoint(t)
	clock := newFakeClock()
	s := mustSource(t, microsoftSecretConfig(e))
	s.now = clock.Now
	t1, x1, err := s.Token(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	e.SetRespond(oauthtest.Error(http.StatusServiceUnavailable, "temporarily_unavailable", "try later"))
	clock.Advance(57 * time.Minute) // inside the margin, before expiry
	t2, x2, err := s.Token(t.Context())
	if err != nil || t2 != t1 || !x2.Equal(x1) {
		t.Fatalf("got %q %v %v, want cached token", t2, x2, err)
	}
	st := s.State()
	if !st.Acquired || st.LastErrorType != ErrorUnavailable || st.LastError == "" {
		t.Fatalf("state %+v", st)
	}
	clock.Advance(4 * time.Minute) // now expired
	if _, _, err := s.Token(t.Context()); err == nil {
		t.Fatal("expired token returned")
	}
	if st := s.State(); st.Acquired {
		t.Fatalf("state %+v", st)
	}
	e.SetRespond(nil)
	if _, _, err := s.Token(t.Context()); err != nil {
		t.Fatal(err)
	}
	if st := s.State(); !st.Acquired || st.LastError != "" || st.LastErrorType != "" {
		t.Fatalf("state after recovery %+v", st)
	}
}

func errorType(t *testing.T, err error) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not *Error", err, err)
	}
	return e
}

func TestClassification(t *testing.T) {
	for _, tc := range []struct {
		name    string
		respond func(http.ResponseWriter, *http.Request, url.Values)
		want    string
	}{
		{"revoked secret", oauthtest.Error(400, "invalid_client", "AADSTS7000215: Invalid client secret provided."), ErrorRejected},
		{"unauthorized client", oauthtest.Error(400, "unauthorized_client", "AADSTS700016: Application not found"), ErrorRejected},
		{"expired refresh token", oauthtest.Error(400, "invalid_grant", "Token has been expired or revoked."), ErrorRejected},
		{"wrong scope", oauthtest.Error(400, "invalid_scope", "AADSTS1002012: The provided value for scope is not valid."), ErrorScope},
		{"server error", oauthtest.Error(500, "server_error", "boom"), ErrorUnavailable},
		{"bare 503", func(w http.ResponseWriter, _ *http.Request, _ url.Values) {
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
		}, ErrorUnavailable},
		{"bare 401", func(w http.ResponseWriter, _ *http.Request, _ url.Values) {
			http.Error(w, "nope", http.StatusUnauthorized)
		}, ErrorRejected},
		{"no access token", func(w http.ResponseWriter, _ *http.Request, _ url.Values) {
			oauthtest.WriteJSON(w, 200, map[string]any{"token_type": "Bearer"})
		}, ErrorUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTokenEndpoint(t)
			e.SetRespond(tc.respond)
			s := mustSource(t, microsoftSecretConfig(e))
			_, _, err := s.Token(t.Context())
			if err == nil {
				t.Fatal("no error")
			}
			oe := errorType(t, err)
			if oe.Type != tc.want {
				t.Fatalf("type %q, want %q (%v)", oe.Type, tc.want, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("message %q lacks type", err)
			}
			st := s.State()
			if st.Acquired || st.LastErrorType != tc.want || st.LastError != err.Error() {
				t.Fatalf("state %+v", st)
			}
		})
	}
}

func TestGoogleJWTErrorIsClassified(t *testing.T) {
	// x/oauth2's jwt flow does not parse error bodies; we do.
	e := newTokenEndpoint(t)
	e.SetRespond(oauthtest.Error(400, "invalid_scope", "bad scope"))
	s := mustSource(t, Config{
		Provider:              ProviderGoogleServiceAccount,
		ServiceAccountKeyFile: writeSAKey(t, testKey(t, 1), "service_account", e.URL),
		Subject:               testSubject,
	})
	_, _, err := s.Token(t.Context())
	if oe := errorType(t, err); oe.Type != ErrorScope || oe.Code != "invalid_scope" || oe.HTTPStatus != 400 {
		t.Fatalf("%+v", oe)
	}
}

func closedPortURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr + "/token"
}

func TestEndpointDown(t *testing.T) {
	s := mustSource(t, Config{
		Provider: ProviderMicrosoft, ClientID: testClientID, ClientSecret: testClientSecret,
		TokenURL: closedPortURL(t),
	})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	start := time.Now()
	_, _, err := s.Token(ctx)
	if oe := errorType(t, err); oe.Type != ErrorUnavailable {
		t.Fatalf("%v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v", d)
	}
}

// TestHangingEndpointHonoursDeadline covers both request paths: x/oauth2's
// client-credentials flow (ctx on the request) and its jwt flow (no ctx on
// the request; our transport must cancel it).
func TestHangingEndpointHonoursDeadline(t *testing.T) {
	release := make(chan struct{})
	e := newTokenEndpoint(t)
	e.SetRespond(func(http.ResponseWriter, *http.Request, url.Values) {
		<-release
	})
	t.Cleanup(func() { close(release) })

	configs := map[string]Config{
		"client_credentials": microsoftSecretConfig(e),
		"jwt": {
			Provider:              ProviderGoogleServiceAccount,
			ServiceAccountKeyFile: writeSAKey(t, testKey(t, 1), "service_account", e.URL),
			Subject:               testSubject,
		},
	}
	for name, c := range configs {
		s := mustSource(t, c)
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		start := time.Now()
		_, _, err := s.Token(ctx)
		d := time.Since(start)
		cancel()
		oe := errorType(t, err)
		if oe.Type != ErrorUnavailable || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("%s: %v (%+v)", name, err, oe)
		}
		if d > 2*time.Second {
			t.Fatalf("%s: returned after %v, deadline was 200ms", name, d)
		}
	}
}

func TestConcurrentCallsShareOneRequest(t *testing.T) {
	e := newTokenEndpoint(t)
	gate := make(chan struct{})
	e.SetRespond(func(w http.ResponseWriter, _ *http.Request, _ url.Values) {
		<-gate
		oauthtest.WriteJSON(w, 200, map[string]any{"access_token": "shared", "expires_in": 3600})
	})
	s := mustSource(t, microsoftSecretConfig(e))

	const n = 20
	var started, done sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		started.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			started.Done()
			tok, _, err := s.Token(t.Context())
			if err == nil && tok != "shared" {
				err = errors.New("wrong token " + tok)
			}
			errs <- err
		}()
	}
	started.Wait()
	// Let every goroutine reach Token and queue behind the request.
	deadline := time.Now().Add(2 * time.Second)
	for e.Hits() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	close(gate)
	done.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if h := e.Hits(); h != 1 {
		t.Fatalf("endpoint hit %d times", h)
	}
}

func TestWaiterRetriesWhenLeaderGivesUp(t *testing.T) {
	e := newTokenEndpoint(t)
	first := make(chan struct{})
	var once sync.Once
	e.SetRespond(func(w http.ResponseWriter, r *http.Request, _ url.Values) {
		if e.Hits() == 1 {
			once.Do(func() { close(first) })
			<-r.Context().Done() // hang until the leader's ctx ends
			return
		}
		oauthtest.WriteJSON(w, 200, map[string]any{"access_token": "second", "expires_in": 3600})
	})
	s := mustSource(t, microsoftSecretConfig(e))

	leaderCtx, cancelLeader := context.WithCancel(t.Context())
	leaderErr := make(chan error, 1)
	go func() { _, _, err := s.Token(leaderCtx); leaderErr <- err }()
	<-first
	waiter := make(chan string, 1)
	go func() { tok, _, _ := s.Token(t.Context()); waiter <- tok }()
	time.Sleep(20 * time.Millisecond) // let the waiter queue
	cancelLeader()
	if err := <-leaderErr; err == nil {
		t.Fatal("leader succeeded")
	}
	select {
	case tok := <-waiter:
		if tok != "second" {
			t.Fatalf("waiter got %q", tok)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waiter stuck")
	}
}

func TestWaiterHonoursOwnDeadline(t *testing.T) {
	e := newTokenEndpoint(t)
	release := make(chan struct{})
	e.SetRespond(func(w http.ResponseWriter, _ *http.Request, _ url.Values) {
		<-release
		oauthtest.WriteJSON(w, 200, map[string]any{"access_token": "late", "expires_in": 3600})
	})
	s := mustSource(t, microsoftSecretConfig(e))
	go s.Token(t.Context()) //nolint:errcheck // leader, released below
	for e.Hits() == 0 {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, err := s.Token(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Fatalf("waiter: %v after %v", err, time.Since(start))
	}
	close(release)
}
