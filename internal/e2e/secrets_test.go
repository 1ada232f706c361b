//go:build e2e

package e2e

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/emailqos/emailqosreceiver/internal/mailtest"
)

// encodedForms are the ways a secret presented for user could leak: plain,
// base64 of it and of the SASL payloads carrying it (PLAIN, XOAUTH2,
// OAUTHBEARER; LOGIN sends it alone), URL-encoded and JSON-escaped.
func encodedForms(user, secret string) []string {
	forms := []string{secret, url.QueryEscape(secret), url.PathEscape(secret)}
	js, _ := json.Marshal(secret)
	forms = append(forms, strings.Trim(string(js), `"`))
	for _, p := range []string{
		secret,
		"\x00" + user + "\x00" + secret,
		"user=" + user + "\x01auth=Bearer " + secret + "\x01\x01",
		"n,a=" + user + ",\x01auth=Bearer " + secret + "\x01\x01",
	} {
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
			forms = append(forms, enc.EncodeToString([]byte(p)))
		}
	}
	return forms
}

// leaks returns the forms of the secrets found in text.
func leaks(text string, secrets map[string][2]string) []string {
	var found []string
	for name, us := range secrets {
		for _, f := range encodedForms(us[0], us[1]) {
			if strings.Contains(text, f) {
				found = append(found, name+" as "+f)
			}
		}
	}
	return found
}

// echoForms are what a token endpoint may write back of a secret besides
// encodedForms: lower- and upper-cased, hex, and its halves and middle.
func echoForms(secret string) []string {
	n := len(secret)
	return []string{strings.ToLower(secret), strings.ToUpper(secret), hex.EncodeToString([]byte(secret)),
		base64.StdEncoding.EncodeToString([]byte("client_secret=" + url.QueryEscape(secret))),
		secret[:n/2], secret[n/2:], secret[n/4 : 3*n/4]}
}

// echoingTokenEndpoint refuses every token request (invalid_client, or
// invalid_grant for a refresh grant) and writes the credentials it got back
// in every field, in all their encodedForms and echoForms.
func echoingTokenEndpoint(t *testing.T) (tokenURL string, calls *atomic.Int64) {
	t.Helper()
	calls = &atomic.Int64{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		_ = r.ParseForm()
		var echo []string
		for _, field := range []string{"client_secret", "refresh_token"} {
			if v := r.PostForm.Get(field); len(v) >= 8 {
				echo = append(echo, encodedForms(r.PostForm.Get("client_id"), v)...)
				echo = append(echo, echoForms(v)...)
			}
		}
		text := strings.Join(echo, " ")
		code := "invalid_client"
		if r.PostForm.Get("grant_type") == "refresh_token" {
			code = "invalid_grant"
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_ = json.NewEncoder(w).Encode(map[string]string{
			"error": code, "error_description": "AADSTS7000215: Invalid client secret provided: " + text,
			"error_uri": "https://login.example/error?e=" + url.QueryEscape(text), "trace": text,
		})
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/tenant/oauth2/v2.0/token", calls
}

// get fetches a page and fails the test unless it answers 200 with a body.
func get(t *testing.T, u string) string {
	t.Helper()
	resp, err := http.Get(u)
	require.NoError(t, err, u)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err, u)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", u, b)
	require.NotEmpty(t, strings.TrimSpace(string(b)), "%s answers a page", u)
	return string(b)
}

// TestNoSecretsInCollectorSurfaces runs the built collector with debug
// logs, every transcript on, zpages and the Prometheus exporter, with
// probes that succeed (over STARTTLS) and probes that fail at sign-in, and
// looks for every secret in every zpages page, the Prometheus output and
// the process's output.
func TestNoSecretsInCollectorSurfaces(t *testing.T) {
	bin := collectorBinary(t)
	const (
		goodUser, goodPW = "probe@good.test", "E2eG00dPwXq71"
		badUser, badPW   = "probe@bad.test", "E2eBadAcctPwTt9"
		wrongPW          = "E2eWr0ngPwZk42"
		probeSecret      = "E2eProbeS3cretLm5"
		oauthSecret      = "E2eOAuthCl1entSecretQw8"
		googleSecret     = "E2eG00gleCl1entSecretJk3"
		refreshToken     = "1//E2eRefreshT0kenVb6"
	)
	srv, err := mailtest.Start(mailtest.Options{TLS: true, Users: []mailtest.User{
		{Address: goodUser, Password: goodPW}, {Address: badUser, Password: badPW},
	}})
	require.NoError(t, err)
	defer srv.Close()
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(caFile, srv.CACertPEM(), 0o600))
	promPort, zPort := freePort(t), freePort(t)
	tokenURL, tokenCalls := echoingTokenEndpoint(t)

	config := fmt.Sprintf(`
receivers:
  emailqos:
    collection_interval: 2s
    initial_delay: 0s
    delivery_timeout: 4s
    poll_interval: 500ms
    probe_secret: ${env:E2E_PROBE_SECRET}
    accounts:
      good:
        address: %[1]s
        password: ${env:E2E_GOOD_PW}
        smtp: { endpoint: %[3]s, security: starttls, tls: { ca_file: %[5]s } }
        imap: { endpoint: %[4]s, security: starttls, tls: { ca_file: %[5]s } }
      bad:
        address: %[2]s
        password: ${env:E2E_WRONG_PW}
        smtp: { endpoint: %[3]s, security: starttls, tls: { ca_file: %[5]s } }
        imap: { endpoint: %[4]s, security: starttls, tls: { ca_file: %[5]s } }
      badsmtp:
        address: %[1]s
        password: ${env:E2E_WRONG_PW}
        smtp: { endpoint: %[3]s, security: starttls, tls: { ca_file: %[5]s } }
        imap: { endpoint: %[4]s, security: starttls, tls: { ca_file: %[5]s } }
      o365:
        address: %[1]s
        oauth:
          provider: client_credentials
          client_id: e2e-probe-app
          client_secret: ${env:E2E_OAUTH_SECRET}
          token_url: %[8]s
        smtp: { endpoint: %[3]s, security: starttls, tls: { ca_file: %[5]s } }
        imap: { endpoint: %[4]s, security: starttls, tls: { ca_file: %[5]s } }
      gmail:
        address: %[1]s
        oauth:
          provider: google_refresh_token
          client_id: e2e-probe-app
          client_secret: ${env:E2E_GOOGLE_SECRET}
          refresh_token: ${env:E2E_REFRESH_TOKEN}
          token_url: %[8]s
        smtp: { endpoint: %[3]s, security: starttls, tls: { ca_file: %[5]s } }
        imap: { endpoint: %[4]s, security: starttls, tls: { ca_file: %[5]s } }
    roundtrip:
      - account: good
      - account: bad
      - account: o365
      - account: gmail
    transit:
      directions: [good:bad, badsmtp:good]
    transcript:
      targets: ["*"]
      lines: 30
exporters:
  prometheus:
    endpoint: 127.0.0.1:%[6]d
    resource_to_telemetry_conversion:
      enabled: true
extensions:
  zpages:
    endpoint: 127.0.0.1:%[7]d
    expvar:
      enabled: true
service:
  extensions: [zpages]
  telemetry:
    logs:
      level: debug
    # A tracer provider with a processor, so that zpages serves tracez;
    # the console exporter puts the collector's own spans on stdout too.
    traces:
      level: basic
      processors:
        - simple:
            exporter:
              console: {}
    metrics:
      level: none
  pipelines:
    metrics:
      receivers: [emailqos]
      exporters: [prometheus]
`, goodUser, badUser, srv.SMTPAddr(), srv.IMAPAddr(), caFile, promPort, zPort, tokenURL)
	c := startCollector(t, bin, config,
		"E2E_GOOD_PW="+goodPW, "E2E_WRONG_PW="+wrongPW, "E2E_PROBE_SECRET="+probeSecret,
		"E2E_OAUTH_SECRET="+oauthSecret, "E2E_GOOGLE_SECRET="+googleSecret, "E2E_REFRESH_TOKEN="+refreshToken)

	promURL := fmt.Sprintf("http://127.0.0.1:%d/metrics", promPort)
	var prom string
	require.Eventually(t, func() bool {
		prom, _ = scrape(promURL)
		codes := series(prom, "emailqos_error_code")
		return len(codes) >= 5 && strings.Contains(prom, `emailqos_direction="good:good"`) &&
			strings.Contains(prom, `emailqos_direction="o365:o365"`) && strings.Contains(prom, `emailqos_direction="gmail:gmail"`) &&
			strings.Contains(prom, `emailqos_direction="bad:bad"`) &&
			strings.Contains(prom, `emailqos_direction="badsmtp:good"`)
	}, 30*time.Second, 200*time.Millisecond, "the probes ran")
	for _, line := range series(prom, "emailqos_error_code") {
		switch {
		case strings.Contains(line, `emailqos_direction="good:good"`):
			assert.Contains(t, line, `emailqos_error_code="0"`, line)
		case strings.Contains(line, `emailqos_direction="bad:bad"`):
			assert.Contains(t, line, `emailqos_error_code="3"`, "a wrong password fails at IMAP login: %s", line)
		case strings.Contains(line, `emailqos_direction="badsmtp:good"`):
			assert.Contains(t, line, `emailqos_error_code="2"`, "a wrong password fails at SMTP AUTH: %s", line)
		case strings.Contains(line, `emailqos_direction="o365:o365"`), strings.Contains(line, `emailqos_direction="gmail:gmail"`):
			assert.Contains(t, line, `emailqos_error_code="3"`, "a refused token fails at IMAP sign-in: %s", line)
			assert.Contains(t, line, `error_type="token_rejected"`, line)
		}
	}
	assert.GreaterOrEqual(t, tokenCalls.Load(), int64(2), "both OAuth accounts asked the token endpoint")
	// The transcripts are logged: the scan below covers them.
	require.Eventually(t, func() bool {
		out := c.output.String()
		return strings.Contains(out, "probe transcript") && strings.Contains(out, "probe failed")
	}, 20*time.Second, 200*time.Millisecond, "transcripts and the failure are logged")

	base := fmt.Sprintf("http://127.0.0.1:%d/debug/", zPort)
	pages := map[string]string{"prometheus": prom}
	for _, p := range []string{"servicez", "pipelinez", "extensionz", "featurez", "tracez", "expvarz",
		"pipelinez?pipelinenamez=metrics&componentnamez=emailqos&componentkindz=receiver",
		"extensionz?extensionnamez=zpages"} {
		pages[p] = get(t, base+p)
	}
	assert.Contains(t, pages["servicez"], "otelcol-emailqos", "servicez describes the distribution")
	assert.Contains(t, pages["pipelinez"], "emailqos", "pipelinez lists the receiver")

	c.stop(t, 10*time.Second)
	out := c.output.String()
	pages["stdout/stderr"] = out
	assert.Contains(t, out, "/tenant/oauth2/v2.0/token returned HTTP 400 invalid_client", "the token errors are logged, so scanned")
	assert.Contains(t, out, "/tenant/oauth2/v2.0/token returned HTTP 400 invalid_grant", "the token errors are logged, so scanned")
	assert.Contains(t, out, "[redacted]", "the transcripts show where credentials were")
	assert.Contains(t, out, "C: T", "IMAP lines after STARTTLS are in the transcript")
	assert.Contains(t, out, "smtp C: AUTH PLAIN [redacted]", "SMTP lines after STARTTLS are in the transcript")
	if os.Getenv("E2E_SHOW_TRANSCRIPT") != "" {
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, "probe failed") {
				t.Log(line)
			}
		}
	}

	secrets := map[string][2]string{
		"good password":  {goodUser, goodPW},
		"bad password":   {badUser, badPW},
		"wrong password": {badUser, wrongPW},
		"probe_secret":   {"", probeSecret},
	}
	secrets["oauth client secret"] = [2]string{"e2e-probe-app", oauthSecret}
	secrets["google client secret"] = [2]string{"e2e-probe-app", googleSecret}
	secrets["refresh token"] = [2]string{goodUser, refreshToken}
	for name, text := range pages {
		assert.Empty(t, leaks(text, secrets), "%s", name)
		for _, sec := range []string{oauthSecret, googleSecret, refreshToken} {
			for _, f := range echoForms(sec) {
				assert.NotContains(t, text, f, "%s: the token endpoint's echo of a secret", name)
			}
		}
	}
	// The scan finds what it looks for.
	planted := "AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00"+badUser+"\x00"+wrongPW))
	assert.NotEmpty(t, leaks(planted, secrets), "a planted secret is found")
}
