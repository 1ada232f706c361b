//go:build e2e && demoui

// The demo as a newcomer sees it (`make demo-ui-test`): scripts/run-demo.sh
// runs the demo mail system, the built collector and a Prometheus with the
// shipped alert rules; the mail system starts refusing SMTP logins, headless
// Chromium opens Prometheus's alerts page and the expected alert must be
// firing there (screenshot kept in _build/demo-ui/). The Grafana
// dashboard's queries are run against the same Prometheus.
//
// Time is scaled down 30 times so that the test takes about a minute: 10s
// probes instead of 5m, metric_expiration 10s instead of 5m, 2s scrapes and
// evaluations instead of 1m, and every duration of the shipped rules (range
// windows, subquery steps, `for:`) divided by 30. Thresholds are unchanged.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const timeScale = 30

var (
	ruleWindow = regexp.MustCompile(`\[(\d+[smh])(?::(\d+[smh]))?\]`)
	ruleFor    = regexp.MustCompile(`(?m)^([ \t]+for: )(\d+[smh])[ \t]*$`)
)

func scaled(d string) string {
	v, err := time.ParseDuration(d)
	if err != nil {
		panic(err) // the regexps only match valid durations
	}
	return strconv.FormatInt(int64(v/timeScale/time.Second), 10) + "s"
}

// scaleRules divides every duration of a rule file by timeScale.
func scaleRules(rules string) string {
	rules = ruleWindow.ReplaceAllStringFunc(rules, func(m string) string {
		sub := ruleWindow.FindStringSubmatch(m)
		if sub[2] == "" {
			return "[" + scaled(sub[1]) + "]"
		}
		return "[" + scaled(sub[1]) + ":" + scaled(sub[2]) + "]"
	})
	return ruleFor.ReplaceAllStringFunc(rules, func(m string) string {
		sub := ruleFor.FindStringSubmatch(m)
		return sub[1] + scaled(sub[2])
	})
}

func TestScaleRules(t *testing.T) {
	assert.Equal(t, "max_over_time(x[10s]) [120s] y[720s:2s]\n        for: 16s\n",
		scaleRules("max_over_time(x[5m]) [1h] y[6h:1m]\n        for: 8m\n"))
}

// promAPI queries Prometheus's HTTP API; nil data on any error.
func promAPI(ctx context.Context, base, path string, q url.Values) (json.RawMessage, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path+"?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, err
	}
	if body.Status != "success" {
		return nil, fmt.Errorf("%s: %s", path, body.Error)
	}
	return body.Data, nil
}

type promAlert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	State       string            `json:"state"`
}

func firing(ctx context.Context, base string) ([]promAlert, error) {
	data, err := promAPI(ctx, base, "/api/v1/alerts", nil)
	if err != nil {
		return nil, err
	}
	var d struct {
		Alerts []promAlert `json:"alerts"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, err
	}
	var out []promAlert
	for _, a := range d.Alerts {
		if a.State == "firing" {
			out = append(out, a)
		}
	}
	return out, nil
}

func TestDemoAlertsUI(t *testing.T) {
	collector := collectorBinary(t)
	root, err := filepath.Abs("../..")
	require.NoError(t, err)
	demoBin := filepath.Join(root, "_build", "emailqos-demo")
	require.FileExists(t, demoBin, "make build builds the demo mail system")
	chromium, err := exec.LookPath("chromium")
	require.NoError(t, err, "chromium is needed (Debian package chromium; make demo-ui-test installs it)")
	_, err = exec.LookPath("prometheus")
	require.NoError(t, err, "prometheus is needed (Debian package prometheus; make demo-ui-test installs it)")

	artifacts := filepath.Join(root, "_build", "demo-ui")
	require.NoError(t, os.RemoveAll(artifacts))
	require.NoError(t, os.MkdirAll(artifacts, 0o755))
	dir := t.TempDir()

	smtpPort, imapPort, exporterPort, promPort := freePort(t), freePort(t), freePort(t), freePort(t)
	ca := filepath.Join(dir, "ca.pem")
	config := fmt.Sprintf(`receivers:
  emailqos:
    collection_interval: 10s
    initial_delay: 1s
    delivery_timeout: 4s
    poll_interval: 1s
    accounts:
      demo:
        address: alice@demo.test
        password: ${env:EMAILQOS_DEMO_ALICE_PASSWORD}
        smtp: { endpoint: 127.0.0.1:%[1]d, security: starttls, tls: { ca_file: %[3]s } }
        imap: { endpoint: 127.0.0.1:%[2]d, security: starttls, tls: { ca_file: %[3]s } }
      example:
        address: bob@example.test
        password: bob-demo-password
        smtp: { endpoint: 127.0.0.1:%[1]d, security: starttls, tls: { ca_file: %[3]s } }
        imap: { endpoint: 127.0.0.1:%[2]d, security: starttls, tls: { ca_file: %[3]s } }
    roundtrip:
      - account: demo
      - account: example
    transit:
      directions: [demo:example]
exporters:
  prometheus:
    endpoint: 127.0.0.1:%[4]d
    metric_expiration: 10s
    resource_to_telemetry_conversion: { enabled: true }
service:
  pipelines:
    metrics: { receivers: [emailqos], exporters: [prometheus] }
  telemetry:
    metrics: { level: none }
`, smtpPort, imapPort, ca, exporterPort)
	configPath := filepath.Join(dir, "demo.yaml")
	require.NoError(t, os.WriteFile(configPath, []byte(config), 0o600))
	shipped, err := os.ReadFile(filepath.Join(root, "deploy/prometheus/emailqos-alerts.yaml"))
	require.NoError(t, err)
	rulesPath := filepath.Join(artifacts, "emailqos-alerts.scaled.yaml")
	require.NoError(t, os.WriteFile(rulesPath, []byte(scaleRules(string(shipped))), 0o644))

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	logFile, err := os.Create(filepath.Join(artifacts, "run-demo.log"))
	require.NoError(t, err)
	defer logFile.Close()
	cmd := exec.Command("bash", filepath.Join(root, "scripts", "run-demo.sh"))
	cmd.Dir = root
	cmd.Env = append(os.Environ(),
		"DIST_BIN="+collector, "DEMO_BIN="+demoBin, "CONFIG="+configPath, "RULES="+rulesPath,
		"SMTP_PORT="+strconv.Itoa(smtpPort), "IMAP_PORT="+strconv.Itoa(imapPort),
		"PROM_PORT="+strconv.Itoa(exporterPort), "PROMETHEUS_PORT="+strconv.Itoa(promPort),
		"PROM_DIR="+filepath.Join(dir, "prometheus"),
		"SCRAPE_INTERVAL=2s", "EVAL_INTERVAL=2s",
		"DEMO_TLS=1", "DEMO_CA="+ca,
		// A verdict the dashboard shows as not passing (arc=none) and no
		// alert reads (only dmarc, spf and dkim do).
		"DEMO_AUTH_RESULTS=spf=pass smtp.mailfrom=demo.test; dkim=pass header.d=demo.test; dmarc=pass header.from=demo.test; arc=none",
		// Healthy first, so that the dashboard has latency data too.
		"DEMO_FAULT=smtp-auth", "DEMO_FAULT_AFTER=25s",
	)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	start := time.Now()
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		// run-demo.sh stops its processes on SIGTERM; the whole group is
		// killed if it has not within 30s.
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
			t.Error("run-demo.sh did not stop within 30s of SIGTERM")
		}
	}()

	base := fmt.Sprintf("http://127.0.0.1:%d", promPort)
	// The failing login makes every direction fail with code 2: the one
	// alert of each direction must be EmailQoSProbeFailing.
	var got []promAlert
	for {
		select {
		case err := <-exited:
			exited <- err
			log, _ := os.ReadFile(logFile.Name())
			t.Fatalf("run-demo.sh exited early (%v):\n%s", err, log)
		default:
		}
		got, err = firing(ctx, base)
		perDirection := map[string]int{}
		for _, a := range got {
			if a.Labels["alertname"] == "EmailQoSProbeFailing" {
				perDirection[a.Labels["emailqos_direction"]]++
			}
		}
		if perDirection["demo:demo"] == 1 && perDirection["example:example"] == 1 && perDirection["demo:example"] == 1 {
			break
		}
		if ctx.Err() != nil {
			log, _ := os.ReadFile(logFile.Name())
			t.Fatalf("EmailQoSProbeFailing not firing once for each of the three directions within the deadline (last: %v, %v); run-demo.sh:\n%s", got, err, log)
		}
		time.Sleep(2 * time.Second)
	}
	t.Logf("EmailQoSProbeFailing firing %.0fs after the start (fault after 25s)", time.Since(start).Seconds())
	byName := map[string]int{}
	for _, a := range got {
		byName[a.Labels["alertname"]]++
		// The annotations render, and say what to check first.
		for k, v := range a.Annotations {
			assert.NotContains(t, v, "error expanding", "%s %s", a.Labels["alertname"], k)
			assert.NotContains(t, v, "<no value>", "%s %s", a.Labels["alertname"], k)
		}
		assert.Contains(t, a.Annotations["description"], "Check first:", a.Labels["alertname"])
		if a.Labels["alertname"] == "EmailQoSProbeFailing" {
			assert.Equal(t, "Email probe "+a.Labels["emailqos_direction"]+" fails (error code 2)", a.Annotations["summary"])
		}
	}
	// Besides, the demo's throwaway certificates expire within 14 days.
	assert.Equal(t, map[string]int{"EmailQoSProbeFailing": 3, "EmailQoSCertificateExpiring": 4}, byName,
		"one alert per direction (3), one per account and protocol for the certificates (2 accounts x smtp, imap)")

	// Every shipped rule is loaded and evaluates without error.
	data, err := promAPI(ctx, base, "/api/v1/rules", nil)
	require.NoError(t, err)
	var rules struct {
		Groups []struct {
			Rules []struct {
				Name   string `json:"name"`
				Health string `json:"health"`
				Error  string `json:"lastError"`
			} `json:"rules"`
		} `json:"groups"`
	}
	require.NoError(t, json.Unmarshal(data, &rules))
	loaded := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			loaded++
			assert.Equal(t, "ok", r.Health, "%s: %s", r.Name, r.Error)
		}
	}
	assert.Equal(t, strings.Count(string(shipped), "\n      - alert: "), loaded, "rules loaded")

	// The alerts page in headless Chromium: screenshot, and the page's DOM
	// names the alert as firing.
	chrome := func(args ...string) []byte {
		cctx, ccancel := context.WithTimeout(ctx, 90*time.Second)
		defer ccancel()
		all := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
			"--disable-background-networking", "--disable-component-update", "--disable-sync",
			"--user-data-dir=" + t.TempDir(), "--window-size=1400,2000"}, args...)
		c := exec.CommandContext(cctx, chromium, all...)
		var stdout, stderr bytes.Buffer
		c.Stdout, c.Stderr = &stdout, &stderr
		require.NoError(t, c.Run(), "chromium %v:\n%s", args, stderr.String())
		return stdout.Bytes()
	}
	page := base + "/classic/alerts"
	shot := filepath.Join(artifacts, "alerts.png")
	chrome("--screenshot="+shot, page)
	png, err := os.ReadFile(shot)
	require.NoError(t, err, "chromium wrote no screenshot")
	require.True(t, bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")), "screenshot is a PNG")
	require.Greater(t, len(png), 10000, "screenshot is not blank")
	dom := string(chrome("--dump-dom", page))
	require.NoError(t, os.WriteFile(filepath.Join(artifacts, "alerts.html"), []byte(dom), 0o644))
	assert.Contains(t, dom, "EmailQoSProbeFailing")
	assert.Regexp(t, `(?s)EmailQoSProbeFailing.*firing`, dom)
	t.Logf("screenshot: %s (%d bytes)", shot, len(png))

	// The dashboard's queries over the test's span, as Grafana would draw
	// them: each returns data for the demo.
	noDemoData := map[string]string{
		"Token valid":  "the demo has no OAuth2 account",
		"Token expiry": "the demo has no OAuth2 account",
		// Shown with `make run DEMO_FAULT=bounce`; this run's fault is a
		// refused sign-in.
		"Bounces and delay notices": "this demo run's fault is not a bounce",
	}
	dash, err := os.ReadFile(filepath.Join(root, "deploy/grafana/emailqos-dashboard.json"))
	require.NoError(t, err)
	var d struct {
		Panels []dashPanel `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(dash, &d))
	queried := 0
	var walk func([]dashPanel)
	walk = func(ps []dashPanel) {
		for _, p := range ps {
			walk(p.Panels)
			for _, tg := range p.Targets {
				expr := strings.ReplaceAll(tg.Expr, "$direction", ".*")
				data, err := promAPI(ctx, base, "/api/v1/query_range", url.Values{
					"query": {expr}, "start": {strconv.FormatInt(start.Unix(), 10)},
					"end": {strconv.FormatInt(time.Now().Unix(), 10)}, "step": {"2"},
				})
				if !assert.NoError(t, err, "panel %q: %s", p.Title, expr) {
					continue
				}
				queried++
				var r struct {
					Result []json.RawMessage `json:"result"`
				}
				require.NoError(t, json.Unmarshal(data, &r))
				if reason, ok := noDemoData[p.Title]; ok {
					t.Logf("panel %q: %d series (%s)", p.Title, len(r.Result), reason)
					continue
				}
				assert.NotEmpty(t, r.Result, "panel %q returns no data for the demo: %s", p.Title, expr)
			}
		}
	}
	walk(d.Panels)
	assert.Greater(t, queried, 10)
}

type dashPanel struct {
	Title   string      `json:"title"`
	Panels  []dashPanel `json:"panels"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}
