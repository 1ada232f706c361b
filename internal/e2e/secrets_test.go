//go:build e2e

package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
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
	)
	srv, err := mailtest.Start(mailtest.Options{TLS: true, Users: []mailtest.User{
		{Address: goodUser, Password: goodPW}, {Address: badUser, Password: badPW},
	}})
	require.NoError(t, err)
	defer srv.Close()
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(caFile, srv.CACertPEM(), 0o600))
	promPort, zPort := freePort(t), freePort(t)

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
    roundtrip:
      - account: good
      - account: bad
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
`, goodUser, badUser, srv.SMTPAddr(), srv.IMAPAddr(), caFile, promPort, zPort)
	c := startCollector(t, bin, config,
		"E2E_GOOD_PW="+goodPW, "E2E_WRONG_PW="+wrongPW, "E2E_PROBE_SECRET="+probeSecret)

	promURL := fmt.Sprintf("http://127.0.0.1:%d/metrics", promPort)
	var prom string
	require.Eventually(t, func() bool {
		prom, _ = scrape(promURL)
		codes := series(prom, "emailqos_error_code")
		return len(codes) >= 3 && strings.Contains(prom, `emailqos_direction="good:good"`) &&
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
		}
	}
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
	for name, text := range pages {
		assert.Empty(t, leaks(text, secrets), "%s", name)
	}
	// The scan finds what it looks for.
	planted := "AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00"+badUser+"\x00"+wrongPW))
	assert.NotEmpty(t, leaks(planted, secrets), "a planted secret is found")
}
