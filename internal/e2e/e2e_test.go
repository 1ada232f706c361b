//go:build e2e

// Package e2e runs the built otelcol-emailqos binary with a YAML config, as a
// user would, and checks what comes out of its Prometheus and OTLP
// exporters. Run it with `make e2e` (part of `make test`), which builds the
// binary and passes its path in EMAILQOS_COLLECTOR.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
	_ "google.golang.org/grpc/encoding/gzip" // the OTLP exporter compresses with gzip by default

	"github.com/emailqos/emailqosreceiver/internal/mailtest"
)

func collectorBinary(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("EMAILQOS_COLLECTOR")
	require.NotEmpty(t, bin, "EMAILQOS_COLLECTOR must name the built otelcol-emailqos binary (make e2e sets it)")
	abs, err := filepath.Abs(bin)
	require.NoError(t, err)
	_, err = os.Stat(abs)
	require.NoError(t, err, "the collector binary must be built first (make build)")
	return abs
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// otlpSink is an OTLP/gRPC metrics endpoint that keeps what it receives.
type otlpSink struct {
	pmetricotlp.UnimplementedGRPCServer
	mu  sync.Mutex
	got []pmetric.Metrics
}

func (s *otlpSink) Export(_ context.Context, req pmetricotlp.ExportRequest) (pmetricotlp.ExportResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	md := pmetric.NewMetrics()
	req.Metrics().CopyTo(md)
	s.got = append(s.got, md)
	return pmetricotlp.NewExportResponse(), nil
}

// resources returns the resource attributes of every emailqos resource
// received, keyed by direction.
func (s *otlpSink) directions() map[string]map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]map[string]any{}
	for _, md := range s.got {
		for i := 0; i < md.ResourceMetrics().Len(); i++ {
			attrs := md.ResourceMetrics().At(i).Resource().Attributes().AsRaw()
			if dir, ok := attrs["emailqos.direction"].(string); ok {
				out[dir] = attrs
			}
		}
	}
	return out
}

// traceSink is an OTLP/gRPC traces endpoint that keeps what it receives.
type traceSink struct {
	ptraceotlp.UnimplementedGRPCServer
	mu  sync.Mutex
	got []ptrace.Traces
}

func (s *traceSink) Export(_ context.Context, req ptraceotlp.ExportRequest) (ptraceotlp.ExportResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	td := ptrace.NewTraces()
	req.Traces().CopyTo(td)
	s.got = append(s.got, td)
	return ptraceotlp.NewExportResponse(), nil
}

// probeTraces returns, per direction, the span names of each probe's trace
// received (one entry per trace ID).
func (s *traceSink) probeTraces() map[string][][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	byTrace := map[string][]string{}
	dirOf := map[string]string{}
	for _, td := range s.got {
		for i := 0; i < td.ResourceSpans().Len(); i++ {
			rs := td.ResourceSpans().At(i)
			dir, _ := rs.Resource().Attributes().Get("emailqos.direction")
			for j := 0; j < rs.ScopeSpans().Len(); j++ {
				spans := rs.ScopeSpans().At(j).Spans()
				for k := 0; k < spans.Len(); k++ {
					id := spans.At(k).TraceID().String()
					byTrace[id] = append(byTrace[id], spans.At(k).Name())
					dirOf[id] = dir.Str()
				}
			}
		}
	}
	out := map[string][][]string{}
	for id, names := range byTrace {
		out[dirOf[id]] = append(out[dirOf[id]], names)
	}
	return out
}

func startOTLP(t *testing.T) (string, *otlpSink) {
	addr, sink, _ := startOTLPWithTraces(t)
	return addr, sink
}

func startOTLPWithTraces(t *testing.T) (string, *otlpSink, *traceSink) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := grpc.NewServer()
	sink := &otlpSink{}
	pmetricotlp.RegisterGRPCServer(srv, sink)
	traces := &traceSink{}
	ptraceotlp.RegisterGRPCServer(srv, traces)
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	return l.Addr().String(), sink, traces
}

// collector is a running otelcol-emailqos process.
type collector struct {
	cmd    *exec.Cmd
	output *syncBuffer
	done   chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startCollector(t *testing.T, bin, config string, env ...string) *collector {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	require.NoError(t, os.WriteFile(path, []byte(config), 0o600))
	c := &collector{cmd: exec.Command(bin, "--config", path), output: &syncBuffer{}, done: make(chan error, 1)}
	c.cmd.Env = append(os.Environ(), env...)
	c.cmd.Stdout, c.cmd.Stderr = c.output, c.output
	require.NoError(t, c.cmd.Start())
	go func() { c.done <- c.cmd.Wait() }()
	t.Cleanup(func() {
		if c.cmd.ProcessState == nil {
			_ = c.cmd.Process.Kill()
			<-c.done
		}
		if t.Failed() {
			t.Logf("collector output:\n%s", c.output.String())
		}
	})
	return c
}

// stop sends SIGTERM and waits for a clean exit.
func (c *collector) stop(t *testing.T, within time.Duration) {
	t.Helper()
	require.NoError(t, c.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-c.done:
		assert.NoError(t, err, "the collector exits cleanly on SIGTERM")
	case <-time.After(within):
		t.Fatalf("the collector did not stop within %s", within)
	}
}

func scrape(url string) (string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// series returns the sample lines of a metric family.
func series(text, name string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, name+"{") || strings.HasPrefix(line, name+" ") {
			out = append(out, line)
		}
	}
	return out
}

func TestCollectorProbesAndExports(t *testing.T) {
	bin := collectorBinary(t)
	srv, err := mailtest.Start(mailtest.Options{
		DeliveryDelay: 30 * time.Millisecond,
		Users: []mailtest.User{
			{Address: "probe@gmail.test", Password: "gmail-pw"},
			{Address: "probe@o365.test", Password: "o365-pw"},
		},
	})
	require.NoError(t, err)
	defer srv.Close()
	otlpAddr, sink, traces := startOTLPWithTraces(t)
	promPort := freePort(t)

	config := fmt.Sprintf(`
receivers:
  emailqos:
    collection_interval: 2s
    initial_delay: 0s
    delivery_timeout: 5s
    poll_interval: 500ms
    accounts:
      gmail:
        address: probe@gmail.test
        password: ${env:E2E_GMAIL_PASSWORD}
        smtp: { endpoint: %[1]s, security: none }
        imap: { endpoint: %[2]s, security: none }
      o365:
        address: probe@o365.test
        password: ${env:E2E_O365_PASSWORD}
        smtp: { endpoint: %[1]s, security: none }
        imap: { endpoint: %[2]s, security: none }
    roundtrip:
      - account: gmail
    transit:
      directions: [gmail:o365, o365:gmail]
processors:
  batch:
    timeout: 200ms
exporters:
  prometheus:
    endpoint: 127.0.0.1:%[3]d
    resource_to_telemetry_conversion:
      enabled: true
  otlp_grpc:
    endpoint: %[4]s
    tls:
      insecure: true
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    metrics:
      receivers: [emailqos]
      processors: [batch]
      exporters: [prometheus, otlp_grpc]
    traces:
      receivers: [emailqos]
      processors: [batch]
      exporters: [otlp_grpc]
`, srv.SMTPAddr(), srv.IMAPAddr(), promPort, otlpAddr)
	c := startCollector(t, bin, config, "E2E_GMAIL_PASSWORD=gmail-pw", "E2E_O365_PASSWORD=o365-pw")

	url := fmt.Sprintf("http://127.0.0.1:%d/metrics", promPort)
	var text string
	require.Eventually(t, func() bool {
		text, _ = scrape(url)
		return len(series(text, "emailqos_transit_duration_seconds")) >= 2 &&
			len(series(text, "emailqos_roundtrip_duration_seconds")) >= 1
	}, 30*time.Second, 200*time.Millisecond, "the Prometheus endpoint serves the probe series")

	transit := series(text, "emailqos_transit_duration_seconds")
	var dirs []string
	for _, line := range transit {
		for _, d := range []string{"gmail:o365", "o365:gmail"} {
			if strings.Contains(line, `emailqos_direction="`+d+`"`) {
				dirs = append(dirs, d)
			}
		}
		assert.Contains(t, line, `emailqos_error_code="0"`)
		assert.Contains(t, line, `emailqos_probe_kind="transit"`)
		var v float64
		_, err := fmt.Sscanf(line[strings.LastIndex(line, " ")+1:], "%g", &v)
		require.NoError(t, err)
		assert.Greater(t, v, 0.02, "transit time includes the 30ms delivery delay: %s", line)
		assert.Less(t, v, 5.0, line)
	}
	assert.ElementsMatch(t, []string{"gmail:o365", "o365:gmail"}, dirs, "two directions give two series")
	for _, name := range []string{"emailqos_delivery_latency_seconds", "emailqos_step_duration_seconds", "emailqos_error_code", "emailqos_success"} {
		assert.NotEmpty(t, series(text, name), name)
	}
	assert.NotContains(t, text, "gmail-pw")
	assert.NotContains(t, c.output.String(), "gmail-pw", "no password in the collector's output")

	require.Eventually(t, func() bool { return len(sink.directions()) >= 3 }, 30*time.Second, 200*time.Millisecond,
		"the OTLP exporter delivers all three directions")
	got := sink.directions()
	assert.Equal(t, "transit", got["gmail:o365"]["emailqos.probe.kind"])
	assert.Equal(t, "o365", got["gmail:o365"]["emailqos.receiver"])
	assert.Equal(t, "roundtrip", got["gmail:gmail"]["emailqos.probe.kind"])
	assert.EqualValues(t, 0, got["o365:gmail"]["emailqos.error_code"])

	// The same receiver in a traces pipeline: a trace per probe, with a span
	// per step under the probe's root span.
	require.Eventually(t, func() bool { return len(traces.probeTraces()) >= 3 }, 30*time.Second, 200*time.Millisecond,
		"the OTLP exporter delivers a trace for each direction")
	// Not imap.login: the probes of one mailbox share its session
	// (share_session), and only the one that opened it has the login.
	for dir, probes := range traces.probeTraces() {
		for _, names := range probes {
			assert.Contains(t, names, "emailqos.probe", dir)
			for _, step := range []string{"smtp.connect", "smtp.submit", "delivery.wait", "imap.delete"} {
				assert.Contains(t, names, step, "%s: %v", dir, names)
			}
		}
	}

	c.stop(t, 10*time.Second)
}

func TestConfigErrorExitsNonZero(t *testing.T) {
	bin := collectorBinary(t)
	c := startCollector(t, bin, `
receivers:
  emailqos:
    accounts:
      demo:
        address: alice@demo.test
        password: pw
        smtp: { endpoint: 127.0.0.1:2525, security: TLS }
        imap: { endpoint: 127.0.0.1:1143, security: none }
    roundtrip:
      - name: broken
        account: nosuch
exporters:
  debug:
service:
  pipelines:
    metrics:
      receivers: [emailqos]
      exporters: [debug]
`)
	select {
	case err := <-c.done:
		require.Error(t, err, "a config error makes the collector exit non-zero")
	case <-time.After(30 * time.Second):
		t.Fatal("the collector did not exit on a config error")
	}
	out := c.output.String()
	// The collector composes each sub-config's path (receivers::<id>::...);
	// lines of the receiver's own error name their path from the receiver.
	assert.Contains(t, out, `roundtrip::0::account: unknown account "nosuch" for target broken`)
	assert.Contains(t, out, `receivers::emailqos::accounts::demo::smtp: security: "TLS" is ambiguous`)
	assert.Equal(t, 1, strings.Count(out, "is ambiguous"), "reported once:\n%s", out)
}
