package oauth

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emailqos/emailqosreceiver/internal/oauthtest"
)

// heapBound is the heap high-water mark allowed while a hostile endpoint
// is fetched from. Measured: at most 1.7 MiB with the budgets (2.9 MiB
// under -race); without them 40 MiB for an endless header line and 17.7 MiB
// for endless header lines (net/http's default 10 MB header limit).
const heapBound = 16 << 20

// peakHeap runs f while sampling the live heap every millisecond and
// returns the highest sample.
func peakHeap(t *testing.T, f func()) uint64 {
	t.Helper()
	runtime.GC()
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	var peak atomic.Uint64
	read := func() {
		metrics.Read(sample)
		if v := sample[0].Value.Uint64(); v > peak.Load() {
			peak.Store(v)
		}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			read()
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	f()
	close(done)
	wg.Wait()
	read()
	return peak.Load()
}

// listenOn listens on a loopback address of its own, so that a redirect
// can point at "another host".
func listenOn(t *testing.T, host string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", host+":0")
	if err != nil {
		t.Fatalf("listen on %s: %v", host, err)
	}
	return ln
}

// redirectTarget is a server that must never be reached: it counts the
// connections it accepts.
type redirectTarget struct {
	*httptest.Server
	conns atomic.Int32
}

func newRedirectTarget(t *testing.T, host string, useTLS bool) *redirectTarget {
	t.Helper()
	rt := &redirectTarget{}
	rt.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		oauthtest.WriteJSON(w, 200, map[string]any{"access_token": "stolen", "expires_in": 3600})
	}))
	rt.Listener = listenOn(t, host)
	rt.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			rt.conns.Add(1)
		}
	}
	if useTLS {
		rt.StartTLS()
	} else {
		rt.Start()
	}
	t.Cleanup(rt.Close)
	return rt
}

// TestRedirectsRefused: an https token endpoint answering any redirect,
// to plain http or to another host, ends the request as token_unavailable
// naming the endpoint and the status; the target gets no connection, so
// neither the client secret, the refresh token nor the assertion reaches it.
func TestRedirectsRefused(t *testing.T) {
	targets := map[string]*redirectTarget{
		"plain http, same host":    newRedirectTarget(t, "127.0.0.1", false),
		"plain http, another host": newRedirectTarget(t, "127.0.0.2", false),
		"https, another host":      newRedirectTarget(t, "127.0.0.2", true),
	}
	var location atomic.Value
	var status atomic.Int32
	var hits atomic.Int32
	endpoint := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_ = r.ParseForm()
		w.Header().Set("Location", location.Load().(string))
		w.WriteHeader(int(status.Load()))
		fmt.Fprintf(w, `{"access_token":"from-redirect-body","expires_in":3600}`)
	}))
	t.Cleanup(endpoint.Close)
	saKey := writeSAKey(t, testKey(t, 1), "service_account", endpoint.URL+"/sa/token")
	configs := map[string]Config{
		"microsoft": {Provider: ProviderMicrosoft, TenantID: "contoso.onmicrosoft.com", ClientID: testClientID,
			ClientSecret: testClientSecret, AuthorityHost: endpoint.URL},
		"google_refresh_token": {Provider: ProviderGoogleRefreshToken, ClientID: testClientID,
			ClientSecret: testClientSecret, RefreshToken: testRefreshToken, TokenURL: endpoint.URL + "/google/token"},
		"google_service_account": {Provider: ProviderGoogleServiceAccount, ServiceAccountKeyFile: saKey, Subject: testSubject},
	}
	host := strings.TrimPrefix(endpoint.URL, "https://")
	for _, code := range []int{301, 302, 303, 307, 308} {
		for tname, target := range targets {
			for pname, c := range configs {
				t.Run(fmt.Sprintf("%d to %s, %s", code, tname, pname), func(t *testing.T) {
					status.Store(int32(code))
					location.Store(target.URL + "/steal?client_secret=" + url.QueryEscape(testClientSecret))
					before := hits.Load()
					s, err := NewSource(t.Context(), c, endpoint.Client())
					if err != nil {
						t.Fatal(err)
					}
					ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
					defer cancel()
					tok, _, err := s.Token(ctx)
					if err == nil {
						t.Fatalf("token %q accepted from a redirect", tok)
					}
					oe := errorType(t, err)
					if oe.Type != ErrorUnavailable || oe.HTTPStatus != code {
						t.Fatalf("%+v: %v", oe, err)
					}
					msg := err.Error()
					if !strings.Contains(msg, host+"/") || !strings.Contains(msg, fmt.Sprintf("HTTP %d", code)) ||
						!strings.Contains(msg, "redirect") {
						t.Fatalf("the error does not name the endpoint, the status and the redirect: %q", msg)
					}
					for _, leak := range []string{"steal", "client_secret", strings.TrimPrefix(target.URL, "http://"), "?"} {
						if strings.Contains(msg, leak) {
							t.Fatalf("the error quotes the Location or a query (%q): %q", leak, msg)
						}
					}
					if n := hits.Load() - before; n != 1 {
						t.Fatalf("endpoint asked %d times", n)
					}
					if n := target.conns.Load(); n != 0 {
						t.Fatalf("the redirect target got %d connections", n)
					}
					if st := s.State(); st.Acquired || st.LastErrorType != ErrorUnavailable {
						t.Fatalf("state %+v", st)
					}
				})
			}
		}
	}
}

// TestEveryRequestIsHTTPS: the transport refuses a request to plain http
// on a non-loopback host before anything is sent, whatever asked for it;
// the key file's token_uri follows the token_url rule.
func TestEveryRequestIsHTTPS(t *testing.T) {
	var sent atomic.Int32
	base := roundTripFunc(func(*http.Request) (*http.Response, error) {
		sent.Add(1)
		return nil, errors.New("must not be called")
	})
	rec := &callRecord{}
	bt := &boundTransport{base: base, ctx: t.Context(), rec: rec}
	req, err := http.NewRequest(http.MethodPost, "http://login.example.net/tenant/token?client_secret=x", strings.NewReader("client_secret=x"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bt.RoundTrip(req); err == nil || sent.Load() != 0 {
		t.Fatalf("plain http request made (err %v, sent %d)", err, sent.Load())
	}
	e := classify(errors.New("oauth2: flattened"), t.Context(), rec, (&redactor{}).apply)
	if e.Type != ErrorUnavailable || !strings.Contains(e.Error(), "login.example.net/tenant/token") ||
		!strings.Contains(e.Error(), "https") || strings.Contains(e.Error(), "client_secret") {
		t.Fatalf("%v", e)
	}

	saKey := writeSAKey(t, testKey(t, 1), "service_account", "http://oauth2.example.net/token")
	_, err = NewSource(t.Context(), Config{Provider: ProviderGoogleServiceAccount, ServiceAccountKeyFile: saKey, Subject: testSubject}, nil)
	if err == nil || !strings.Contains(err.Error(), "token_uri") || !strings.Contains(err.Error(), "https") {
		t.Fatalf("http token_uri accepted: %v", err)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// rawEndpoint accepts connections on loopback and hands each to serve after
// reading the request head, for answers net/http would not write.
func rawEndpoint(t *testing.T, serve func(c net.Conn)) string {
	t.Helper()
	ln := listenOn(t, "127.0.0.1")
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				// The client ends the connection (or the test does): a
				// stuck server must not outlive the test.
				stop := context.AfterFunc(t.Context(), func() { c.Close() })
				defer stop()
				serve(c)
			}()
		}
	}()
	return "http://" + ln.Addr().String() + "/tenant/oauth2/v2.0/token"
}

// writeForever writes chunk until the client goes away.
func writeForever(c net.Conn, head string, chunk []byte, pause time.Duration) {
	if _, err := io.WriteString(c, head); err != nil {
		return
	}
	for {
		if _, err := c.Write(chunk); err != nil {
			return
		}
		if pause > 0 {
			time.Sleep(pause)
		}
	}
}

// TestHostileResponses: a huge, endless or slow response ends the request
// as token_unavailable, within the caller's deadline, with the heap's
// high-water mark under heapBound.
func TestHostileResponses(t *testing.T) {
	big := []byte(strings.Repeat("A", 32<<10))
	tokenHead := `{"access_token":"`
	cases := []struct {
		name  string
		serve func(c net.Conn)
		want  string // in the error
		slow  bool   // ends by the deadline
	}{
		{"Content-Length 1 GiB", func(c net.Conn) {
			writeForever(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n"+tokenHead, big, 0)
		}, "response larger than 512 KiB", false},
		{"endless chunked body", func(c net.Conn) {
			chunk := []byte(fmt.Sprintf("%x\r\n%s\r\n", len(big), big))
			writeForever(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n", chunk, 0)
		}, "response larger than 512 KiB", false},
		{"endless body, no length", func(c net.Conn) {
			writeForever(c, "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{\"error\":\"", big, 0)
		}, "response larger than 512 KiB", false},
		{"endless header line", func(c net.Conn) {
			writeForever(c, "HTTP/1.1 200 OK\r\nX-Pad: ", big, 0)
		}, "response headers larger than 64 KiB", false},
		{"endless headers", func(c net.Conn) {
			writeForever(c, "HTTP/1.1 200 OK\r\n", []byte("X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"), 0)
		}, "response headers larger than 64 KiB", false},
		{"endless slow body", func(c net.Conn) {
			writeForever(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"+tokenHead, []byte("A"), 20*time.Millisecond)
		}, "no answer in time", true},
		{"slow status line", func(c net.Conn) {
			writeForever(c, "", []byte("H"), 100*time.Millisecond)
		}, "no answer in time", true},
		{"not HTTP", func(c net.Conn) {
			_, _ = io.WriteString(c, "220 smtp.example ESMTP "+testClientSecret+"\r\n")
		}, "the answer is not HTTP", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tokenURL := rawEndpoint(t, tc.serve)
			s := mustSource(t, Config{Provider: ProviderMicrosoft, ClientID: testClientID,
				ClientSecret: testClientSecret, TokenURL: tokenURL})
			const deadline = time.Second
			var err error
			var elapsed time.Duration
			peak := peakHeap(t, func() {
				ctx, cancel := context.WithTimeout(t.Context(), deadline)
				defer cancel()
				start := time.Now()
				_, _, err = s.Token(ctx)
				elapsed = time.Since(start)
			})
			t.Logf("%s: %v after %v, heap high-water mark %.1f MiB", tc.name, err, elapsed.Round(time.Millisecond), float64(peak)/(1<<20))
			if err == nil {
				t.Fatal("token accepted")
			}
			oe := errorType(t, err)
			if oe.Type != ErrorUnavailable || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want %s with %q, got %v", ErrorUnavailable, tc.want, err)
			}
			if !strings.Contains(err.Error(), "/tenant/oauth2/v2.0/token") {
				t.Fatalf("the error does not name the endpoint: %v", err)
			}
			if strings.Contains(err.Error(), testClientSecret) || strings.Contains(err.Error(), "AAAA") {
				t.Fatalf("endpoint text in the error: %v", err)
			}
			if tc.slow != errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("deadline in the chain: %v, want %v", errors.Is(err, context.DeadlineExceeded), tc.slow)
			}
			// Generous: the machine is shared; without the deadline these
			// never end.
			if elapsed > deadline+time.Second {
				t.Fatalf("returned after %v, deadline %v", elapsed, deadline)
			}
			if peak > heapBound {
				t.Fatalf("heap high-water mark %d MiB, bound %d MiB", peak>>20, heapBound>>20)
			}
		})
	}
}

// TestResponseAtBudget: the budget is for the whole body, and a response
// of exactly that size is still read (so the cap does not cut a real one).
func TestResponseAtBudget(t *testing.T) {
	tok := map[string]any{"access_token": "padded-token", "token_type": "Bearer", "expires_in": 3600}
	b, err := json.Marshal(tok)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		size int
		ok   bool
	}{{maxResponseBytes, true}, {maxResponseBytes + 1, false}} {
		body := string(b) + strings.Repeat(" ", tc.size-len(b))
		for _, chunked := range []bool{false, true} {
			e := newTokenEndpoint(t)
			e.SetRespond(func(w http.ResponseWriter, _ *http.Request, _ url.Values) {
				w.Header().Set("Content-Type", "application/json")
				if !chunked {
					w.Header().Set("Content-Length", fmt.Sprint(len(body)))
				}
				_, _ = io.WriteString(w, body)
			})
			s := mustSource(t, microsoftSecretConfig(e))
			got, _, err := s.Token(t.Context())
			switch {
			case tc.ok && (err != nil || got != "padded-token"):
				t.Fatalf("%d bytes (chunked %v): %q %v", tc.size, chunked, got, err)
			case !tc.ok && (err == nil || !strings.Contains(err.Error(), "larger than 512 KiB")):
				t.Fatalf("%d bytes (chunked %v) accepted: %q %v", tc.size, chunked, got, err)
			}
		}
	}
}

// TestExpiresIn: zero or below, or not a number, is an unusable response
// (not a token valid for no time, fetched again at every use); absent, the
// token is taken as valid for an hour (RFC 6749 §5.1 makes expires_in
// RECOMMENDED only).
func TestExpiresIn(t *testing.T) {
	type expiresCase struct {
		name     string
		form     bool
		body     string
		lifetime time.Duration // 0: an error
		want     string
	}
	cases := []expiresCase{
		{"json 0", false, `{"access_token":"t1","expires_in":0}`, 0, "expires_in is zero or below"},
		{"json -1", false, `{"access_token":"t1","expires_in":-1}`, 0, "expires_in is zero or below"},
		{"json -3600", false, `{"access_token":"t1","expires_in":-3600}`, 0, "expires_in is zero or below"},
		{"json string 0", false, `{"access_token":"t1","expires_in":"0"}`, 0, "expires_in is zero or below"},
		{"json 0.5", false, `{"access_token":"t1","expires_in":0.5}`, 0, "not a usable token response"},
		{"json not a number", false, `{"access_token":"t1","expires_in":"soon"}`, 0, "not a usable token response"},
		{"form 0", true, `access_token=t1&expires_in=0`, 0, "expires_in is zero or below"},
		{"form -5", true, `access_token=t1&expires_in=-5`, 0, "expires_in is zero or below"},
		{"form not a number", true, `access_token=t1&expires_in=soon`, 0, "expires_in is not a number"},
		{"json 600", false, `{"access_token":"t1","expires_in":600}`, 600 * time.Second, ""},
		{"json string 600", false, `{"access_token":"t1","expires_in":"600"}`, 600 * time.Second, ""},
		{"form 600", true, `access_token=t1&expires_in=600`, 600 * time.Second, ""},
		{"json absent", false, `{"access_token":"t1"}`, time.Hour, ""},
		{"json null", false, `{"access_token":"t1","expires_in":null}`, time.Hour, ""},
		{"form absent", true, `access_token=t1`, time.Hour, ""},
		{"form 0.5", true, `access_token=t1&expires_in=0.5`, 0, "expires_in is below one second"},
	}
	// x/oauth2's jwt flow reads JSON only, with expires_in a number.
	jwtCases := map[string]bool{"json 0": true, "json -1": true, "json -3600": true, "json 600": true, "json absent": true, "json null": true}
	for _, flow := range []string{ProviderMicrosoft, ProviderGoogleRefreshToken, ProviderGoogleServiceAccount} {
		for _, tc := range cases {
			if flow == ProviderGoogleServiceAccount && !jwtCases[tc.name] {
				continue
			}
			t.Run(flow+", "+tc.name, func(t *testing.T) { testExpiresIn(t, flow, tc.form, tc.body, tc.lifetime, tc.want) })
		}
	}
}

func testExpiresIn(t *testing.T, flow string, form bool, body string, lifetime time.Duration, want string) {
	e := newTokenEndpoint(t)
	e.SetRespond(func(w http.ResponseWriter, _ *http.Request, _ url.Values) {
		ct := "application/json"
		if form {
			ct = "application/x-www-form-urlencoded"
		}
		w.Header().Set("Content-Type", ct)
		_, _ = io.WriteString(w, body)
	})
	c := microsoftSecretConfig(e)
	switch flow {
	case ProviderGoogleRefreshToken:
		c = Config{Provider: flow, ClientID: testClientID, ClientSecret: testClientSecret,
			RefreshToken: testRefreshToken, TokenURL: e.URL + "/token"}
	case ProviderGoogleServiceAccount:
		c = Config{Provider: flow, ServiceAccountKeyFile: writeSAKey(t, testKey(t, 1), "service_account", e.URL+"/token"),
			Subject: testSubject}
	}
	clock := newFakeClock()
	s := mustSource(t, c)
	s.now = clock.Now
	tok, exp, err := s.Token(t.Context())
	if lifetime == 0 {
		if err == nil {
			t.Fatalf("token %q accepted, expiry in %v", tok, exp.Sub(clock.Now()))
		}
		oe := errorType(t, err)
		if oe.Type != ErrorUnavailable || oe.HTTPStatus != 200 || !strings.Contains(err.Error(), want) {
			t.Fatalf("%+v: %v", oe, err)
		}
		if st := s.State(); st.Acquired || st.LastErrorType != ErrorUnavailable {
			t.Fatalf("state %+v", st)
		}
		return
	}
	if err != nil || tok != "t1" {
		t.Fatalf("%q %v", tok, err)
	}
	if d := exp.Sub(clock.Now()); d > lifetime || d < lifetime-2*time.Second {
		t.Fatalf("expiry in %v, want %v", d, lifetime)
	}
	// Cached: the endpoint is not asked at every use.
	for range 3 {
		if _, _, err := s.Token(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if n := e.Hits(); n != 1 {
		t.Fatalf("endpoint asked %d times", n)
	}
}
