//go:build e2e

package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/emailqos/emailqosreceiver/internal/gmailapitest"
	"github.com/emailqos/emailqosreceiver/internal/graphtest"
	"github.com/emailqos/emailqosreceiver/internal/mailtest"
)

// The API transports (issue 18) in the built collector: a Graph-to-Graph
// round trip, a Gmail API round trip, mixed transits with an SMTP/IMAP
// account, and each failure code, against the in-process fakes, which the
// collector reaches through each account's transport::base_url on loopback.

const (
	apiClientSecret = "e2e-api-secret-Zq7L2x"
	apiTokenMark    = "Wt4nB8"
)

// clientCredentials is a token endpoint issuing marked tokens to the one
// client it knows; issued lists them, to look for leaks.
func clientCredentials(t *testing.T) (string, func() []string) {
	t.Helper()
	var mu sync.Mutex
	var issued []string
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		w.Header().Set("Content-Type", "application/json")
		if r.PostForm.Get("client_secret") != apiClientSecret {
			w.WriteHeader(http.StatusUnauthorized)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": "invalid_client"})
			return
		}
		tok := fmt.Sprintf("tok-%d-%s", n.Add(1), apiTokenMark)
		mu.Lock()
		issued = append(issued, tok)
		mu.Unlock()
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": 3600})
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/token", func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), issued...)
	}
}

// failing fronts base with a proxy answering 403 to every request matching
// method and path suffix (Gmail API errors carry no links, so a proxy does
// not disturb the rest).
func failing(t *testing.T, base, method, suffix string) string {
	t.Helper()
	u, err := url.Parse(base)
	require.NoError(t, err)
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == method && strings.HasSuffix(r.URL.Path, suffix) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write([]byte(`{"error":{"code":403,"status":"PERMISSION_DENIED","errors":[{"reason":"insufficientPermissions"}]}}`))
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestCollectorAPITransports(t *testing.T) {
	bin := collectorBinary(t)
	tokenURL, issued := clientCredentials(t)

	const (
		o365   = "probe@m365.test"
		stray  = "stray@m365.test" // no such mailbox: Graph send fails
		gws    = "probe@gws.test"
		gwsOut = "outside@gws.test" // outside the delegation: Gmail send fails
		dove   = "probe@dovecot.test"
	)
	// The main Graph tenant, shared with mailtest for the mixed transits.
	var gr *graphtest.Server
	srv, err := mailtest.Start(mailtest.Options{
		Users: []mailtest.User{{Address: dove, Password: "dove-pw"}, {Address: o365, Password: "unused-pw"}},
		OnDeliver: func(rcpt string, raw []byte) error {
			if rcpt == o365 {
				if err := gr.Deliver(rcpt, raw); err != nil {
					return err
				}
				return errors.New("handed to the Graph fake")
			}
			return nil
		},
	})
	require.NoError(t, err)
	defer srv.Close()
	gr = graphtest.New(graphtest.Options{Users: []string{o365}, DeliveryDelay: 50 * time.Millisecond, VisibilityLag: 50 * time.Millisecond,
		Route: func(rcpt string, raw []byte) bool { return srv.Append(rcpt, raw, nil) == nil }})
	defer gr.Close()
	// Tenants for the failures.
	grAuth := graphtest.New(graphtest.Options{Users: []string{o365}, Token: "not-what-the-endpoint-issues"})
	defer grAuth.Close()
	grSlow := graphtest.New(graphtest.Options{Users: []string{o365}, DeliveryDelay: time.Hour})
	defer grSlow.Close()
	gm := gmailapitest.New(gmailapitest.Options{Users: []string{gws}, DeliveryDelay: 50 * time.Millisecond, VisibilityLag: 50 * time.Millisecond})
	defer gm.Close()
	gmNoDelete := gmailapitest.New(gmailapitest.Options{Users: []string{gws}})
	defer gmNoDelete.Close()
	gmThrottled := gmailapitest.New(gmailapitest.Options{Users: []string{gws}})
	defer gmThrottled.Close()
	gmThrottled.Throttle(1<<20, 429, "rateLimitExceeded", time.Hour)

	account := func(api, addr, base string) string {
		provider := "client_credentials"
		return fmt.Sprintf(`
        address: %s
        transport: { send: %s, read: %s, base_url: %q }
        oauth:
          provider: %s
          client_id: emailqos-e2e
          client_secret: ${env:E2E_API_SECRET}
          token_url: %q
          scopes: [mail.probe]`, addr, api, api, base, provider, tokenURL)
	}
	promPort := freePort(t)
	config := fmt.Sprintf(`
receivers:
  emailqos:
    collection_interval: 3s
    initial_delay: 0s
    delivery_timeout: 3s
    timeout: 8s
    poll_interval: 200ms
    accounts:
      o365:%s
      o365stray:%s
      o365auth:%s
      o365slow:%s
      gws:%s
      gwsout:%s
      gwsnodelete:%s
      gwsthrottled:%s
      dovecot:
        address: %s
        password: ${env:E2E_DOVE_PASSWORD}
        smtp: { endpoint: %s, security: none }
        imap: { endpoint: %s, security: none }
    roundtrip:
      - account: o365
      - account: gws
      - account: o365auth
      - account: o365slow
      - account: gwsnodelete
      - account: gwsthrottled
    transit:
      directions: [dovecot:o365, o365:dovecot, o365stray:o365, gwsout:gws]
exporters:
  prometheus:
    endpoint: 127.0.0.1:%d
    resource_to_telemetry_conversion:
      enabled: true
service:
  telemetry:
    metrics:
      level: none
    logs:
      level: debug
  pipelines:
    metrics:
      receivers: [emailqos]
      exporters: [prometheus]
`,
		account("graph", o365, gr.URL()), account("graph", stray, gr.URL()),
		account("graph", o365, grAuth.URL()), account("graph", o365, grSlow.URL()),
		account("gmail_api", gws, gm.URL()), account("gmail_api", gwsOut, gm.URL()),
		account("gmail_api", gws, failing(t, gmNoDelete.URL(), http.MethodDelete, "")),
		account("gmail_api", gws, gmThrottled.URL()),
		dove, srv.SMTPAddr(), srv.IMAPAddr(), promPort)
	c := startCollector(t, bin, config, "E2E_API_SECRET="+apiClientSecret, "E2E_DOVE_PASSWORD=dove-pw")

	want := map[string]struct {
		code, typ string
	}{
		"o365":           {"0", ""},
		"gws":            {"0", ""},
		"dovecot:o365":   {"0", ""},
		"o365:dovecot":   {"0", ""},
		"o365stray:o365": {"2", "rejected"},
		"gwsout:gws":     {"2", "rejected"},
		"o365auth":       {"3", "auth"},
		"gwsthrottled":   {"3", "throttled"},
		"o365slow":       {"4", "not_found"},
		"gwsnodelete":    {"5", "auth"},
	}
	promURL := fmt.Sprintf("http://127.0.0.1:%d/metrics", promPort)
	codeOf := regexp.MustCompile(`emailqos_error_code="(-?\d+)"`)
	typeOf := regexp.MustCompile(`error_type="([a-z_]*)"`)
	targetOf := regexp.MustCompile(`emailqos_target="([^"]+)"`)
	got := map[string][2]string{}
	var text string
	require.Eventually(t, func() bool {
		text, _ = scrape(promURL)
		for _, line := range series(text, "emailqos_success") {
			tm, cm := targetOf.FindStringSubmatch(line), codeOf.FindStringSubmatch(line)
			if tm == nil || cm == nil {
				continue
			}
			typ := ""
			if m := typeOf.FindStringSubmatch(line); m != nil {
				typ = m[1]
			}
			got[tm[1]] = [2]string{cm[1], typ}
		}
		for target := range want {
			if _, ok := got[target]; !ok {
				return false
			}
		}
		return true
	}, 60*time.Second, 300*time.Millisecond, "every target reported")
	for target, w := range want {
		assert.Equal(t, [2]string{w.code, w.typ}, got[target], target)
	}
	// The steps of the API transports are in the step metric.
	steps := strings.Join(series(text, "emailqos_step_duration_seconds"), "\n")
	for _, s := range []string{"graph.send", "graph.list", "graph.delete", "gmailapi.send", "gmailapi.list", "gmailapi.delete"} {
		assert.Contains(t, steps, `step="`+s+`"`)
	}
	c.stop(t, 15*time.Second)

	// No secret or token anywhere the collector wrote.
	out := c.output.String()
	tokens := issued()
	require.NotEmpty(t, tokens)
	for _, s := range append(tokens, apiClientSecret, apiTokenMark, "dove-pw") {
		assert.NotContains(t, out, s, "collector output")
		assert.NotContains(t, text, s, "Prometheus output")
	}
}
