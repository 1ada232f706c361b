//go:build e2e && image

package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The image tests run the container image `make image` built (EMAILQOS_IMAGE)
// with podman, as `make image-e2e` does: with the project's containers.conf
// (CONTAINERS_CONF), runc and host networking (see
// packaging/container/containers.conf).

// podman runs podman with a bound, returning its combined output.
func podman(t *testing.T, within time.Duration, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	out, err := exec.CommandContext(ctx, "podman", args...).CombinedOutput()
	return string(out), err
}

func imageUnderTest(t *testing.T) string {
	t.Helper()
	img := os.Getenv("EMAILQOS_IMAGE")
	require.NotEmpty(t, img, "EMAILQOS_IMAGE must name the image (make image-e2e sets it)")
	require.NotEmpty(t, os.Getenv("CONTAINERS_CONF"), "CONTAINERS_CONF must name packaging/container/containers.conf (make image-e2e sets it)")
	return img
}

// The image is what the issue asks for: a non-root numeric user, the
// default config path, OCI labels.
func TestImageMetadata(t *testing.T) {
	img := imageUnderTest(t)
	out, err := podman(t, time.Minute, "image", "inspect", img)
	require.NoError(t, err, out)
	var inspect []struct {
		Size   int64
		Config struct {
			User       string
			Entrypoint []string
			Cmd        []string
			Labels     map[string]string
		}
	}
	require.NoError(t, json.Unmarshal([]byte(out), &inspect))
	require.Len(t, inspect, 1)
	cfg := inspect[0].Config
	assert.Equal(t, "10001:10001", cfg.User)
	assert.Equal(t, []string{"/otelcol-emailqos"}, cfg.Entrypoint)
	assert.Equal(t, []string{"--config", "/etc/otelcol-emailqos/config.yaml"}, cfg.Cmd)
	assert.NotEmpty(t, cfg.Labels["org.opencontainers.image.version"])
	assert.Equal(t, "https://github.com/emailqos/emailqosreceiver", cfg.Labels["org.opencontainers.image.source"])
	assert.Regexp(t, regexp.MustCompile(`^[0-9a-f]{40}$`), cfg.Labels["org.opencontainers.image.revision"])
	if head, err := exec.Command("git", "rev-parse", "HEAD").Output(); err == nil {
		assert.Equal(t, strings.TrimSpace(string(head)), cfg.Labels["org.opencontainers.image.revision"], "the image is of this checkout")
	}
	t.Logf("image %s: %d bytes (%.1f MB)", img, inspect[0].Size, float64(inspect[0].Size)/1e6)
	assert.Less(t, inspect[0].Size, int64(200e6), "a minimal image: the binary and CA certificates")

	// The image's own binary validates its default configuration.
	out, err = podman(t, time.Minute, "run", "--rm", "--runtime", "runc", "--network", "host",
		"-e", "EMAILQOS_ADDRESS=probe@example.org", "-e", "EMAILQOS_PASSWORD=x",
		"-e", "EMAILQOS_SMTP_ENDPOINT=mail.example.org:465", "-e", "EMAILQOS_IMAP_ENDPOINT=mail.example.org:993",
		img, "validate", "--config", "/etc/otelcol-emailqos/config.yaml")
	assert.NoError(t, err, "validate in the image:\n%s", out)
}

func waitPort(t *testing.T, addr string, within time.Duration) {
	t.Helper()
	require.Eventually(t, func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, within, 100*time.Millisecond, "%s accepts connections", addr)
}

// The image, run by podman with its default configuration, probes the demo
// mail system (cmd/emailqos-demo) and serves the round-trip series on its
// Prometheus exporter; its health_check answers.
func TestImageProbesDemoMailSystem(t *testing.T) {
	img := imageUnderTest(t)
	demo := os.Getenv("EMAILQOS_DEMO")
	require.NotEmpty(t, demo, "EMAILQOS_DEMO must name the built emailqos-demo (make image-e2e sets it)")

	smtpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	imapAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	demoCmd := exec.CommandContext(ctx, demo, "-smtp", smtpAddr, "-imap", imapAddr, "-delay", "50ms")
	demoOut := &syncBuffer{}
	demoCmd.Stdout, demoCmd.Stderr = demoOut, demoOut
	require.NoError(t, demoCmd.Start())
	t.Cleanup(func() {
		_ = demoCmd.Process.Kill()
		_ = demoCmd.Wait()
	})
	waitPort(t, smtpAddr, 30*time.Second)
	waitPort(t, imapAddr, 30*time.Second)

	promAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	healthAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	var suffix [4]byte
	_, _ = rand.Read(suffix[:])
	name := "emailqos-e2e-" + hex.EncodeToString(suffix[:])
	const password = "alice-demo-password" // the demo mail system's account
	run := exec.CommandContext(ctx, "podman", "run", "--rm", "--name", name,
		"--runtime", "runc", "--network", "host",
		"-e", "EMAILQOS_ADDRESS=alice@demo.test",
		"-e", "EMAILQOS_PASSWORD="+password,
		"-e", "EMAILQOS_SMTP_ENDPOINT="+smtpAddr, "-e", "EMAILQOS_SMTP_SECURITY=none",
		"-e", "EMAILQOS_IMAP_ENDPOINT="+imapAddr, "-e", "EMAILQOS_IMAP_SECURITY=none",
		"-e", "EMAILQOS_COLLECTION_INTERVAL=5s", "-e", "EMAILQOS_DELIVERY_TIMEOUT=10s",
		"-e", "EMAILQOS_PROMETHEUS_ENDPOINT="+promAddr,
		"-e", "EMAILQOS_HEALTH_ENDPOINT="+healthAddr,
		img)
	out := &syncBuffer{}
	run.Stdout, run.Stderr = out, out
	require.NoError(t, run.Start())
	t.Cleanup(func() {
		// podman stop sends SIGTERM to the collector and waits for it.
		if o, err := podman(t, 30*time.Second, "stop", "-t", "10", name); err != nil {
			t.Logf("podman stop: %v: %s", err, o)
		}
		_ = run.Wait()
		if t.Failed() {
			t.Logf("container output:\n%s", out.String())
			t.Logf("demo mail system output:\n%s", demoOut.String())
		}
	})

	assert.Eventually(t, func() bool {
		resp, err := http.Get("http://" + healthAddr + "/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, time.Minute, 200*time.Millisecond, "health_check answers 200")

	var text string
	require.Eventually(t, func() bool {
		text, _ = scrape("http://" + promAddr + "/metrics")
		return len(series(text, "emailqos_roundtrip_duration_seconds")) >= 1
	}, 90*time.Second, 500*time.Millisecond, "the Prometheus exporter serves the round-trip series")
	rt := series(text, "emailqos_roundtrip_duration_seconds")
	require.Len(t, rt, 1)
	assert.Contains(t, rt[0], `emailqos_direction="mail:mail"`)
	assert.Contains(t, rt[0], `emailqos_error_code="0"`, "the probe succeeded: %s", rt[0])
	var v float64
	_, err := fmt.Sscanf(rt[0][strings.LastIndex(rt[0], " ")+1:], "%g", &v)
	require.NoError(t, err)
	assert.Greater(t, v, 0.05, "the round trip includes the 50ms delivery delay: %s", rt[0])
	assert.Less(t, v, 10.0, rt[0])
	for _, s := range series(text, "emailqos_success") {
		assert.True(t, strings.HasSuffix(s, " 1"), s)
	}
	assert.NotContains(t, text, password)
	assert.NotContains(t, out.String(), password, "no password in the container's output")
}
