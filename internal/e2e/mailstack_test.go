//go:build e2e && integration

package e2e

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func stackEnv(t *testing.T, name string) string {
	t.Helper()
	v := os.Getenv(name)
	require.NotEmpty(t, v, "%s is not set: run through `make integration`", name)
	return v
}

// TestCollectorAgainstMailstack runs the built collector against the real
// Postfix/Dovecot domains of scripts/mailstack.sh, over implicit TLS with the
// stack's own CA, and checks both exporters.
func TestCollectorAgainstMailstack(t *testing.T) {
	bin := collectorBinary(t)
	otlpAddr, sink := startOTLP(t)
	promPort := freePort(t)
	ca := stackEnv(t, "EMAILQOS_CA_FILE")
	account := func(d string) string {
		D := strings.ToUpper(d)
		return fmt.Sprintf(`
      %[1]s:
        address: %[2]s
        password: ${env:EMAILQOS_%[3]s_PROBE_PASS}
        smtp:
          endpoint: %[4]s
          security: tls
          tls: { ca_file: %[6]s }
        imap:
          endpoint: %[5]s
          security: ssl
          tls: { ca_file: %[6]s }`, d, stackEnv(t, "EMAILQOS_"+D+"_PROBE_ADDR"), D,
			stackEnv(t, "EMAILQOS_"+D+"_SMTPS"), stackEnv(t, "EMAILQOS_"+D+"_IMAPS"), ca)
	}
	config := fmt.Sprintf(`
receivers:
  emailqos:
    collection_interval: 5s
    initial_delay: 0s
    delivery_timeout: 20s
    poll_interval: 1s
    accounts:%s%s
    roundtrip:
      - account: a
      - account: b
    transit:
      mesh: [a, b]
exporters:
  prometheus:
    endpoint: 127.0.0.1:%d
    resource_to_telemetry_conversion:
      enabled: true
  otlp_grpc:
    endpoint: %s
    tls:
      insecure: true
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    metrics:
      receivers: [emailqos]
      exporters: [prometheus, otlp_grpc]
`, account("a"), account("b"), promPort, otlpAddr)
	c := startCollector(t, bin, config)

	url := fmt.Sprintf("http://127.0.0.1:%d/metrics", promPort)
	var text string
	require.Eventually(t, func() bool {
		text, _ = scrape(url)
		return len(series(text, "emailqos_transit_duration_seconds")) >= 2 &&
			len(series(text, "emailqos_roundtrip_duration_seconds")) >= 2
	}, 60*time.Second, 250*time.Millisecond, "the Prometheus endpoint serves round-trip and transit series")

	for _, name := range []string{"emailqos_transit_duration_seconds", "emailqos_roundtrip_duration_seconds", "emailqos_delivery_latency_seconds"} {
		for _, line := range series(text, name) {
			assert.Contains(t, line, `emailqos_error_code="0"`, line)
			var v float64
			_, err := fmt.Sscanf(line[strings.LastIndex(line, " ")+1:], "%g", &v)
			require.NoError(t, err)
			if name == "emailqos_delivery_latency_seconds" {
				// A round trip on loopback can be visible before the 250
				// reached us: 0, with an uncertainty covering the reply.
				assert.GreaterOrEqual(t, v, 0.0, line)
			} else {
				assert.Greater(t, v, 0.0, line)
			}
			assert.Less(t, v, 20.0, line)
		}
	}
	for _, dir := range []string{"a:b", "b:a"} {
		assert.Contains(t, strings.Join(series(text, "emailqos_transit_duration_seconds"), "\n"), `emailqos_direction="`+dir+`"`)
	}
	smtpTLS, imapTLS := 0, 0
	for _, line := range series(text, "emailqos_step_duration_seconds") {
		switch {
		case strings.Contains(line, `step="smtp.tls"`):
			smtpTLS++
		case strings.Contains(line, `step="imap.tls"`):
			imapTLS++
		}
	}
	assert.GreaterOrEqual(t, smtpTLS, 4, "the SMTP TLS handshakes of four probes are timed")
	// The probes reading one mailbox share its session (share_session):
	// one probe per mailbox reports the session's handshake.
	assert.GreaterOrEqual(t, imapTLS, 2, "the IMAP TLS handshake of each mailbox's session is timed")

	require.Eventually(t, func() bool { return len(sink.directions()) >= 4 }, 60*time.Second, 250*time.Millisecond,
		"the OTLP exporter delivers all four directions")
	got := sink.directions()
	assert.Equal(t, "transit", got["a:b"]["emailqos.probe.kind"])
	assert.Equal(t, "b", got["a:b"]["emailqos.receiver"])
	assert.EqualValues(t, 0, got["b:a"]["emailqos.error_code"])
	assert.NotContains(t, c.output.String(), stackEnv(t, "EMAILQOS_A_PROBE_PASS"))

	c.stop(t, 10*time.Second)
}
