package opsassets

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

const root = "../.."

func readFile(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, rel))
	require.NoError(t, err)
	return b
}

func receiverMetrics(t *testing.T) map[string]Metric {
	t.Helper()
	m, err := PrometheusMetrics(readFile(t, "metadata.yaml"))
	require.NoError(t, err)
	return m
}

func TestPrometheusMetricsFromMetadata(t *testing.T) {
	m := receiverMetrics(t)
	// Spot checks of the exporter's naming, confirmed against its real
	// output by the e2e suite (TestExporterNamesMatchMetadata).
	for name, labels := range map[string][]string{
		"emailqos_roundtrip_duration_seconds": {"emailqos_direction", "emailqos_error_code", "error_type", "emailqos_probe_kind"},
		"emailqos_step_duration_seconds":      {"step", "emailqos_direction"},
		"emailqos_delivery_latency_seconds":   {"emailqos_direction"},
		"emailqos_error_code":                 {"emailqos_direction"},
		"emailqos_success":                    {"emailqos_error_code"},
		"emailqos_probes_late":                {"emailqos_target"},
		"emailqos_oauth_token_expiry_seconds": {"emailqos_account", "error_type"},
	} {
		require.Contains(t, m, name)
		for _, l := range labels {
			assert.True(t, m[name].Labels[l], "%s has label %s", name, l)
		}
	}
	assert.False(t, m["emailqos_roundtrip_duration_seconds"].Labels["step"], "step is a datapoint attribute of step.duration only")
	for name, metric := range m {
		assert.True(t, strings.HasPrefix(name, "emailqos_"), name)
		assert.True(t, metric.Labels["emailqos_direction"] && metric.Labels["job"], name)
	}
}

func TestUnitSuffixes(t *testing.T) {
	md := []byte(`
metrics:
  a.time: {enabled: true, unit: s, gauge: {}}
  b.count: {enabled: true, unit: "{message}", sum: {monotonic: true}}
  c.ratio: {enabled: true, unit: "1", gauge: {}}
  c.value: {enabled: true, unit: "1", gauge: {}}
  c.sum: {enabled: true, unit: "1", sum: {monotonic: false}}
  d.size: {enabled: true, unit: By, gauge: {}}
  e.rate: {enabled: true, unit: By/s, gauge: {}}
  f.off: {enabled: false, unit: s, gauge: {}}
  g.done_seconds: {enabled: true, unit: s, gauge: {}}
`)
	m, err := PrometheusMetrics(md)
	require.NoError(t, err)
	assert.Equal(t, []string{"a_time_seconds", "b_count_total", "c_ratio", "c_sum", "c_value_ratio", "d_size_bytes", "e_rate_bytes_per_seconds", "g_done_seconds"}, Names(m))

	_, err = PrometheusMetrics([]byte(`metrics: {x: {enabled: true, unit: furlong, gauge: {}}}`))
	assert.ErrorContains(t, err, `unit "furlong"`)
}

func TestParse(t *testing.T) {
	q, err := Parse(`avg_over_time((max by (emailqos_direction) (emailqos_delivery_latency_seconds{step="x", emailqos_direction=~"$direction"}) > bool 30)[6h:5m]) > 0.1
		and on (emailqos_account) sum without(job) (rate(emailqos_x_total[$__rate_interval] offset 5m)) # emailqos_comment`)
	require.NoError(t, err)
	assert.Equal(t, []Selector{
		{Metric: "emailqos_delivery_latency_seconds", Labels: []string{"step", "emailqos_direction"}},
		{Metric: "emailqos_x_total"},
	}, q.Selectors)
	assert.Equal(t, []string{"emailqos_direction", "emailqos_account", "job"}, q.Grouping)

	q, err = Parse(`label_values(emailqos_success{emailqos_probe_kind="transit"}, emailqos_direction)`)
	require.NoError(t, err)
	assert.Equal(t, []Selector{{Metric: "emailqos_success", Labels: []string{"emailqos_probe_kind"}}}, q.Selectors)
	assert.Equal(t, []string{"emailqos_direction"}, q.Grouping)

	_, err = Parse(`{__name__="x"}`)
	assert.Error(t, err)
	_, err = Parse(`x{a="b}`)
	assert.Error(t, err)
}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

var templateLabel = regexp.MustCompile(`\$labels\.([A-Za-z_][A-Za-z0-9_]*)`)

// checkRules returns every problem of the alerting rules against metrics.
func checkRules(t *testing.T, rulesYAML []byte, metrics map[string]Metric) []string {
	t.Helper()
	var rf ruleFile
	require.NoError(t, yaml.Unmarshal(rulesYAML, &rf))
	require.NotEmpty(t, rf.Groups)
	var problems []string
	for _, g := range rf.Groups {
		require.NotEmpty(t, g.Rules, g.Name)
		for _, r := range g.Rules {
			where := g.Name + "/" + r.Alert + r.Record
			problems = append(problems, Check(where, r.Expr, metrics)...)
			labels := LabelsOf(r.Expr, metrics)
			for _, text := range r.Annotations {
				for _, m := range templateLabel.FindAllStringSubmatch(text, -1) {
					if !labels[m[1]] {
						problems = append(problems, where+": annotation uses $labels."+m[1]+", which its metrics do not carry")
					}
				}
			}
		}
	}
	return problems
}

func TestAlertRules(t *testing.T) {
	rules := readFile(t, "deploy/prometheus/emailqos-alerts.yaml")
	assert.Empty(t, checkRules(t, rules, receiverMetrics(t)))

	var rf ruleFile
	require.NoError(t, yaml.Unmarshal(rules, &rf))
	alerts := map[string]bool{}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			assert.NotEmpty(t, r.Alert, "alerting rules only")
			assert.False(t, alerts[r.Alert], "alert %s defined twice", r.Alert)
			alerts[r.Alert] = true
			assert.NotEmpty(t, r.For, r.Alert)
			assert.Contains(t, []string{"critical", "warning", "info"}, r.Labels["severity"], r.Alert)
			assert.NotEmpty(t, r.Annotations["summary"], r.Alert)
		}
	}
	// The conditions operators asked for are covered: a failing direction
	// (sending, mailbox or delivery: one alert whatever the cause), cleanup,
	// slow delivery, late probes, OAuth2 tokens, TLS downgrades and missing
	// data.
	for _, a := range []string{"EmailQoSProbeFailing", "EmailQoSCleanupFailing",
		"EmailQoSDeliverySlow", "EmailQoSProbesArrivingLate", "EmailQoSOAuthTokenInvalid", "EmailQoSOAuthTokenExpiring",
		"EmailQoSTLSVersionLow", "EmailQoSDirectionNotReporting", "EmailQoSCollectorNotReporting"} {
		assert.True(t, alerts[a], "alert %s", a)
	}

	// Every alert says what to check first and links its section of
	// TROUBLESHOOTING.md, which exists.
	anchors := markdownAnchors(string(readFile(t, "TROUBLESHOOTING.md")))
	const base = "https://github.com/emailqos/emailqosreceiver/blob/main/TROUBLESHOOTING.md#"
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			assert.Contains(t, r.Annotations["description"], "Check first:", r.Alert)
			link := r.Annotations["runbook_url"]
			if assert.True(t, strings.HasPrefix(link, base), "%s: runbook_url %q", r.Alert, link) {
				assert.True(t, anchors[strings.TrimPrefix(link, base)], "%s: TROUBLESHOOTING.md has no section #%s", r.Alert, strings.TrimPrefix(link, base))
			}
		}
	}

	// promtool, when installed (Debian package prometheus), checks the
	// syntax fully.
	if promtool, err := exec.LookPath("promtool"); err == nil {
		out, err := exec.Command(promtool, "check", "rules", filepath.Join(root, "deploy/prometheus/emailqos-alerts.yaml")).CombinedOutput()
		assert.NoError(t, err, "promtool check rules:\n%s", out)
	} else {
		t.Log("promtool not installed: syntax not checked by promtool")
	}
}

var nonAnchor = regexp.MustCompile(`[^a-z0-9 _-]`)

// markdownAnchors returns the anchors GitHub gives the headings of a
// Markdown document (lower case, punctuation dropped, spaces to hyphens).
func markdownAnchors(md string) map[string]bool {
	out := map[string]bool{}
	for _, line := range strings.Split(md, "\n") {
		if !strings.HasPrefix(line, "#") {
			continue
		}
		title := strings.TrimSpace(strings.TrimLeft(line, "#"))
		out[strings.ReplaceAll(nonAnchor.ReplaceAllString(strings.ToLower(title), ""), " ", "-")] = true
	}
	return out
}

type panel struct {
	Type    string  `json:"type"`
	Title   string  `json:"title"`
	Panels  []panel `json:"panels"`
	Targets []struct {
		Expr         string `json:"expr"`
		LegendFormat string `json:"legendFormat"`
	} `json:"targets"`
}

var legendLabel = regexp.MustCompile(`\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}`)

// checkDashboard returns every problem of the dashboard's queries against
// metrics, and the number of queries checked.
func checkDashboard(t *testing.T, dashJSON []byte, metrics map[string]Metric) ([]string, int) {
	t.Helper()
	var d struct {
		Panels     []panel `json:"panels"`
		Templating struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	require.NoError(t, json.Unmarshal(dashJSON, &d))
	var problems []string
	n := 0
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			walk(p.Panels)
			for i, tg := range p.Targets {
				n++
				where := p.Title + " #" + string(rune('A'+i))
				problems = append(problems, Check(where, tg.Expr, metrics)...)
				labels := LabelsOf(tg.Expr, metrics)
				for _, m := range legendLabel.FindAllStringSubmatch(tg.LegendFormat, -1) {
					if !labels[m[1]] {
						problems = append(problems, where+": legend uses "+m[1]+", which its metrics do not carry")
					}
				}
			}
			if p.Type != "row" && p.Type != "text" && len(p.Targets) == 0 {
				problems = append(problems, p.Title+": panel without queries")
			}
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			require.NoError(t, json.Unmarshal(v.Query, &q.Query), "variable %s", v.Name)
		}
		n++
		problems = append(problems, Check("variable "+v.Name, q.Query, metrics)...)
	}
	return problems, n
}

func TestDashboard(t *testing.T) {
	problems, n := checkDashboard(t, readFile(t, "deploy/grafana/emailqos-dashboard.json"), receiverMetrics(t))
	assert.Empty(t, problems)
	assert.Greater(t, n, 10)

	// The panels asked for: round trip and transit per direction, the
	// per-step breakdown and the error codes over time.
	dash := string(readFile(t, "deploy/grafana/emailqos-dashboard.json"))
	for _, want := range []string{
		"max by (emailqos_direction) (emailqos_roundtrip_duration_seconds",
		"max by (emailqos_direction) (emailqos_transit_duration_seconds",
		"max by (step) (emailqos_step_duration_seconds",
		"max by (emailqos_direction) (emailqos_error_code",
	} {
		assert.Contains(t, dash, want)
	}
}

// The checks must fail when the receiver renames a metric or an attribute
// the assets use.
func TestChecksCatchRenames(t *testing.T) {
	md := string(readFile(t, "metadata.yaml"))
	rules := readFile(t, "deploy/prometheus/emailqos-alerts.yaml")
	dash := readFile(t, "deploy/grafana/emailqos-dashboard.json")

	t.Run("metric renamed", func(t *testing.T) {
		require.Contains(t, md, "\n  emailqos.delivery.latency:\n")
		renamed, err := PrometheusMetrics([]byte(strings.Replace(md, "\n  emailqos.delivery.latency:\n", "\n  emailqos.delivery.lag:\n", 1)))
		require.NoError(t, err)
		require.Contains(t, renamed, "emailqos_delivery_lag_seconds")

		problems := checkRules(t, rules, renamed)
		require.NotEmpty(t, problems)
		assert.Contains(t, strings.Join(problems, "\n"), "metric emailqos_delivery_latency_seconds is not emitted by the receiver")
		problems, _ = checkDashboard(t, dash, renamed)
		assert.Contains(t, strings.Join(problems, "\n"), "Delivery latency #A: metric emailqos_delivery_latency_seconds is not emitted")
	})
	t.Run("unit changed", func(t *testing.T) {
		changed := regexp.MustCompile(`(?s)(emailqos\.transit\.duration:.*?unit: )s\n`).ReplaceAllString(md, "${1}ms\n")
		m, err := PrometheusMetrics([]byte(changed))
		require.NoError(t, err)
		require.Contains(t, m, "emailqos_transit_duration_milliseconds")
		problems, _ := checkDashboard(t, dash, m)
		assert.Contains(t, strings.Join(problems, "\n"), "metric emailqos_transit_duration_seconds is not emitted")
	})
	t.Run("attribute renamed", func(t *testing.T) {
		require.Contains(t, md, "\n  emailqos.direction:\n")
		renamed, err := PrometheusMetrics([]byte(strings.Replace(md, "\n  emailqos.direction:\n", "\n  emailqos.path:\n", 1)))
		require.NoError(t, err)
		problems := checkRules(t, rules, renamed)
		joined := strings.Join(problems, "\n")
		assert.Contains(t, joined, "groups or joins by emailqos_direction, which none of its metrics carries")
		assert.Contains(t, joined, "annotation uses $labels.emailqos_direction")
		problems, _ = checkDashboard(t, dash, renamed)
		assert.Contains(t, strings.Join(problems, "\n"), "emailqos_success has no label emailqos_direction")
	})
}
