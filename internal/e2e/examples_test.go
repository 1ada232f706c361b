//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/emailqos/emailqosreceiver/internal/mailtest"
	"github.com/emailqos/emailqosreceiver/internal/opsassets"
)

var exampleEnvRef = regexp.MustCompile(`\$\{(?:env:)?([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}`)

// Every file in examples/ is a configuration the built collector accepts.
func TestExamplesValidate(t *testing.T) {
	bin := collectorBinary(t)
	files, err := filepath.Glob("../../examples/*.yaml")
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(files), 8)
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			raw, err := os.ReadFile(file)
			require.NoError(t, err)
			env := os.Environ()
			for _, m := range exampleEnvRef.FindAllStringSubmatch(string(raw), -1) {
				v := "dummy-" + strings.ToLower(m[1])
				if strings.HasSuffix(m[1], "_FILE") {
					// A path the validation checks exists.
					v = filepath.Join(t.TempDir(), "key.json")
					require.NoError(t, os.WriteFile(v, []byte("{}"), 0o600))
				}
				env = append(env, m[1]+"="+v)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "validate", "--config", file)
			cmd.Env = env
			out, err := cmd.CombinedOutput()
			assert.NoError(t, err, "otelcol-emailqos validate --config %s:\n%s", file, out)
		})
	}
}

// promLabelNames returns the label names of a sample line.
func promLabelNames(line string) []string {
	open, end := strings.IndexByte(line, '{'), strings.LastIndexByte(line, '}')
	if open < 0 || end < open {
		return nil
	}
	var names []string
	for _, m := range regexp.MustCompile(`([A-Za-z_][A-Za-z0-9_]*)="(?:[^"\\]|\\.)*"`).FindAllStringSubmatch(line[open+1:end], -1) {
		names = append(names, m[1])
	}
	return names
}

// The names and labels deploy/ relies on, derived from metadata.yaml, are
// the ones the real Prometheus exporter serves: every metric the receiver
// declares appears, and each of its series carries only labels the
// derivation knows.
func TestExporterNamesMatchMetadata(t *testing.T) {
	bin := collectorBinary(t)
	md, err := os.ReadFile("../../metadata.yaml")
	require.NoError(t, err)
	derived, err := opsassets.PrometheusMetrics(md)
	require.NoError(t, err)

	const token = "e2e-bearer-token"
	srv, err := mailtest.Start(mailtest.Options{
		Users: []mailtest.User{
			{Address: "probe@pw.test", Password: "pw-secret"},
			{Address: "probe@oauth.test", Password: "unused-oauth-pw"},
		},
		BearerCheck: func(_, tok string) bool { return tok == token },
		// The receiving side's verdicts, for emailqos.auth.result.
		AuthResults: "spf=pass smtp.mailfrom=pw.test; dkim=pass header.d=pw.test; dmarc=pass header.from=pw.test",
	})
	require.NoError(t, err)
	defer srv.Close()
	tokens := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":%q,"token_type":"Bearer","expires_in":3600}`, token)
	}))
	defer tokens.Close()
	// A TLS mail system that refuses every recipient: its probes report
	// the TLS handshakes and the SMTP reply code.
	rej, err := mailtest.Start(mailtest.Options{TLS: true, RejectRcpt: true,
		Users: []mailtest.User{{Address: "probe@rej.test", Password: "rej-secret"}}})
	require.NoError(t, err)
	defer rej.Close()
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(caFile, rej.CACertPEM(), 0o600))
	// A greylisting mail system: its first recipient is deferred, the
	// retried submission accepted (retry_deferred).
	grey, err := mailtest.Start(mailtest.Options{GreylistRcpts: 1,
		Users: []mailtest.User{{Address: "probe@grey.test", Password: "grey-secret"}}})
	require.NoError(t, err)
	defer grey.Close()
	promPort := freePort(t)

	config := fmt.Sprintf(`
receivers:
  emailqos:
    collection_interval: 2s
    initial_delay: 0s
    delivery_timeout: 5s
    poll_interval: 500ms
    retry_deferred: true
    accounts:
      pw:
        address: probe@pw.test
        password: ${env:E2E_PW_PASSWORD}
        smtp: { endpoint: %[1]s, security: none }
        imap: { endpoint: %[2]s, security: none }
      oauth:
        address: probe@oauth.test
        oauth:
          provider: client_credentials
          token_url: %[3]s/token
          client_id: e2e-client
          client_secret: ${env:E2E_CLIENT_SECRET}
        smtp: { endpoint: %[1]s, security: none }
        imap: { endpoint: %[2]s, security: none }
      rej:
        address: probe@rej.test
        password: rej-secret
        smtp: { endpoint: %[5]s, security: tls, tls: { ca_file: %[7]s } }
        imap: { endpoint: %[6]s, security: starttls, tls: { ca_file: %[7]s } }
      grey:
        address: probe@grey.test
        password: grey-secret
        smtp: { endpoint: %[8]s, security: none }
        imap: { endpoint: %[9]s, security: none }
    roundtrip:
      - account: pw
      - account: rej
      - account: grey
    transit:
      directions: [pw:oauth]
exporters:
  prometheus:
    endpoint: 127.0.0.1:%[4]d
    resource_to_telemetry_conversion:
      enabled: true
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    metrics:
      receivers: [emailqos]
      exporters: [prometheus]
`, srv.SMTPAddr(), srv.IMAPAddr(), tokens.URL, promPort, rej.SMTPSAddr(), rej.IMAPAddr(), caFile, grey.SMTPAddr(), grey.IMAPAddr())
	c := startCollector(t, bin, config, "E2E_PW_PASSWORD=pw-secret", "E2E_CLIENT_SECRET=client-secret")

	url := fmt.Sprintf("http://127.0.0.1:%d/metrics", promPort)
	var text string
	missing := func() []string {
		var out []string
		for _, name := range opsassets.Names(derived) {
			if len(series(text, name)) == 0 {
				out = append(out, name)
			}
		}
		return out
	}
	ok := assert.Eventually(t, func() bool {
		text, _ = scrape(url)
		return len(missing()) == 0
	}, 30*time.Second, 200*time.Millisecond, "every metric of metadata.yaml is served under its derived name")
	if !ok {
		var served []string
		for _, line := range strings.Split(text, "\n") {
			if strings.HasPrefix(line, "# TYPE ") {
				served = append(served, strings.Fields(line)[2])
			}
		}
		sort.Strings(served)
		t.Fatalf("not served: %v\nserved: %v", missing(), served)
	}
	for _, name := range opsassets.Names(derived) {
		for _, line := range series(text, name) {
			for _, l := range promLabelNames(line) {
				assert.True(t, derived[name].Labels[l], "%s: label %s is not derived from metadata.yaml: %s", name, l, line)
			}
		}
	}
	// The labels the rules and the dashboard use most.
	assert.Contains(t, strings.Join(series(text, "emailqos_step_duration_seconds"), "\n"), `step="smtp.submit"`)
	assert.Contains(t, strings.Join(series(text, "emailqos_success"), "\n"), `emailqos_direction="pw:oauth"`)
	assert.Contains(t, strings.Join(series(text, "emailqos_oauth_token_valid"), "\n"), `emailqos_account="oauth"`)
	assert.NotContains(t, text, "pw-secret")
	assert.NotContains(t, text, "client-secret")
	assert.NotContains(t, text, token)
	c.stop(t, 10*time.Second)
}
