//go:build rules

// Unit tests of deploy/prometheus/emailqos-alerts.yaml with `promtool test
// rules` (Debian package prometheus; `make rules-test` installs it). The
// scenarios below are probe timelines; the test turns them into the series
// the collector's Prometheus exporter writes (resource attributes as labels
// with resource_to_telemetry_conversion, a new series per error code or
// placement, each dropped metric_expiration after its last update, which a
// scrape sees as a staleness marker), writes a promtool test file under
// _build/rules-test/ and runs promtool on it. Every scenario runs under the
// exporter's default metric_expiration (5m) and examples/prometheus.yaml's
// (15m), with 5m probes and 1m scrapes and evaluations.
package opsassets

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

const (
	collection = 5 * time.Minute
	scrape     = time.Minute
	// done is when a probe's result is exported, after its collection
	// starts; a lost probe (code 4) waits delivery_timeout (2m) first.
	done     = 20 * time.Second
	doneLost = 2*time.Minute + 20*time.Second
)

// expirations: the exporter's default and examples/prometheus.yaml's.
var expirations = []time.Duration{5 * time.Minute, 15 * time.Minute}

// dir is one probe target as its resource attributes name it.
type dir struct{ target, sender, receiver, kind, instance string }

var (
	demo  = dir{"mail", "mail", "mail", "roundtrip", "collector-a:8889"}
	trans = dir{"mail:gmail", "mail", "gmail", "transit", "collector-a:8889"}
	other = dir{"mail", "mail", "mail", "roundtrip", "collector-b:8889"}
)

func (d dir) direction() string { return d.sender + ":" + d.receiver }

// res is the result of one probe; nil in a timeline means no probe.
type res struct {
	code      int
	etype     string
	placement string // inbox, junk, missing or "" (not found or failed earlier)
	latency   float64
	total     float64
	auth      map[string]string // method -> verdict
	late      float64
	certLeft  float64 // seconds, for protocols smtp and imap
	tlsVer    float64
}

func ok() *res { return &res{placement: "inbox", latency: 5, total: 8} }
func slow(latency float64) *res {
	return &res{placement: "inbox", latency: latency, total: latency + 3}
}
func fail(code int, etype string) *res {
	r := &res{code: code, etype: etype}
	if code == 4 {
		r.placement = "missing"
	}
	if code == 5 {
		r.placement, r.latency, r.total = "inbox", 5, 8
	}
	return r
}
func junk() *res { return &res{placement: "junk", latency: 5, total: 8} }
func authRes(method, verdict string) *res {
	r := ok()
	r.auth = map[string]string{"spf": "pass", "dkim": "pass", "dmarc": "pass"}
	r.auth[method] = verdict
	return r
}
func withTLS(certDays, version float64) *res {
	r := ok()
	r.certLeft, r.tlsVer = certDays*86400, version
	return r
}
func lateFound(n float64) *res { r := ok(); r.late = n; return r }

// repeat returns n copies of r (the same pointer: results are read only).
func repeat(n int, r *res) []*res {
	out := make([]*res, n)
	for i := range out {
		out[i] = r
	}
	return out
}

func seq(parts ...[]*res) []*res {
	var out []*res
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func one(r *res) []*res { return []*res{r} }

// tok is one collection of an account's OAuth2 token.
type tok struct {
	valid  bool
	etype  string
	expiry float64
}

// point is one exported value: series labels (with __name__) and value.
type point struct {
	labels map[string]string
	value  float64
}

func (d dir) resource(r *res) map[string]string {
	l := map[string]string{
		"job": "emailqos", "instance": d.instance,
		"otel_scope_name": "github.com/emailqos/emailqosreceiver", "otel_scope_version": "0.1.0",
		"emailqos_target": d.target, "emailqos_direction": d.direction(), "emailqos_probe_kind": d.kind,
		"emailqos_sender": d.sender, "emailqos_receiver": d.receiver,
		"emailqos_error_code": strconv.Itoa(r.code),
	}
	if r.etype != "" {
		l["error_type"] = r.etype
	}
	if r.placement != "" {
		l["emailqos_placement"] = r.placement
	}
	return l
}

func with(base map[string]string, kv ...string) map[string]string {
	l := map[string]string{}
	for k, v := range base {
		l[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		l[kv[i]] = kv[i+1]
	}
	return l
}

// points are what one probe result exports (metadata.yaml: which metrics a
// probe reports in which case).
func (d dir) points(r *res) []point {
	base := d.resource(r)
	success := 0.0
	if r.code == 0 {
		success = 1
	}
	ps := []point{
		{with(base, "__name__", "emailqos_success"), success},
		{with(base, "__name__", "emailqos_error_code"), float64(r.code)},
	}
	delivered := r.placement == "inbox" || r.placement == "junk"
	if delivered {
		j := 0.0
		if r.placement == "junk" {
			j = 1
		}
		total := "emailqos_roundtrip_duration_seconds"
		if d.kind == "transit" {
			total = "emailqos_transit_duration_seconds"
		}
		ps = append(ps,
			point{with(base, "__name__", "emailqos_delivery_latency_seconds"), r.latency},
			point{with(base, "__name__", "emailqos_delivery_junk"), j},
			point{with(base, "__name__", total), r.total},
			point{with(base, "__name__", "emailqos_probes_late"), r.late},
		)
		methods := make([]string, 0, len(r.auth))
		for m := range r.auth {
			methods = append(methods, m)
		}
		sort.Strings(methods)
		for _, m := range methods {
			ps = append(ps, point{with(base, "__name__", "emailqos_auth_result", "auth_method", m, "auth_result", r.auth[m]), 1})
		}
	}
	if r.certLeft != 0 {
		for _, p := range []string{"smtp", "imap"} {
			ps = append(ps,
				point{with(base, "__name__", "emailqos_tls_certificate_time_left_seconds", "protocol", p), r.certLeft},
				point{with(base, "__name__", "emailqos_tls_version", "protocol", p), r.tlsVer})
		}
	}
	return ps
}

func tokenPoints(account, instance string, t tok) []point {
	base := map[string]string{
		"job": "emailqos", "instance": instance,
		"otel_scope_name": "github.com/emailqos/emailqosreceiver", "otel_scope_version": "0.1.0",
		"emailqos_account": account,
	}
	if t.etype != "" {
		base["error_type"] = t.etype
	}
	v := 0.0
	if t.valid {
		v = 1
	}
	return []point{
		{with(base, "__name__", "emailqos_oauth_token_valid"), v},
		{with(base, "__name__", "emailqos_oauth_token_expiry_seconds"), t.expiry},
	}
}

// check is one expectation at minute `at` of the scenario.
type check struct {
	at     int    // minutes
	fire   bool   // exactly one alert of the rule firing for the subject; else none
	never  int    // with fire false: none firing at any evaluation of the last `never` minutes
	labels string // with fire: the subject's label matchers, e.g. emailqos_direction="mail:mail"
}

// scenario is one case of one rule under one metric_expiration.
type scenario struct {
	alert    string
	kind     string // sustained, single, changing, recovery, missing, threshold
	name     string
	minutes  int
	probes   map[dir][]*res
	tokens   map[string][]tok // account -> per collection
	checks   []check
	expiries []time.Duration // nil: both
}

// series renders the exporter's output for the scenario as promtool input
// series: a value per scrape, `stale` at the first scrape after the
// exporter dropped a series, `_` while it is absent.
func (s scenario) series(expiration time.Duration) []inputSeries {
	type update struct {
		at time.Duration
		v  float64
	}
	updates := map[string][]update{}
	add := func(at time.Duration, ps []point) {
		for _, p := range ps {
			k := render(p.labels)
			updates[k] = append(updates[k], update{at, p.v()})
		}
	}
	for d, rs := range s.probes {
		for k, r := range rs {
			if r == nil {
				continue
			}
			at := time.Duration(k)*collection + done
			if r.code == 4 {
				at = time.Duration(k)*collection + doneLost
			}
			add(at, d.points(r))
		}
	}
	for acct, ts := range s.tokens {
		for k, t := range ts {
			add(time.Duration(k)*collection+done, tokenPoints(acct, demo.instance, t))
		}
	}
	var out []inputSeries
	for k, us := range updates {
		sort.SliceStable(us, func(i, j int) bool { return us[i].at < us[j].at })
		var vals []string
		present := false
		for m := 0; m <= s.minutes; m++ {
			t := time.Duration(m) * scrape
			var last *update
			for i := range us {
				if us[i].at <= t {
					last = &us[i]
				}
			}
			switch {
			case last != nil && t < last.at+expiration:
				vals = append(vals, strconv.FormatFloat(last.v, 'g', -1, 64))
				present = true
			case present:
				vals = append(vals, "stale")
				present = false
			default:
				vals = append(vals, "_")
			}
		}
		out = append(out, inputSeries{Series: k, Values: strings.Join(vals, " ")})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Series < out[j].Series })
	return out
}

func (p point) v() float64 { return p.value }

func render(l map[string]string) string {
	keys := make([]string, 0, len(l))
	for k := range l {
		if k != "__name__" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%q", k, l[k])
	}
	return l["__name__"] + "{" + strings.Join(parts, ",") + "}"
}

type inputSeries struct {
	Series string `yaml:"series"`
	Values string `yaml:"values"`
}

type exprTest struct {
	Expr       string      `yaml:"expr"`
	EvalTime   string      `yaml:"eval_time"`
	ExpSamples []expSample `yaml:"exp_samples,omitempty"`
}

type expSample struct {
	Labels string  `yaml:"labels"`
	Value  float64 `yaml:"value"`
}

type testGroup struct {
	Name        string        `yaml:"name"`
	Interval    string        `yaml:"interval"`
	InputSeries []inputSeries `yaml:"input_series"`
	ExprTests   []exprTest    `yaml:"promql_expr_test"`
}

type testFile struct {
	RuleFiles          []string    `yaml:"rule_files"`
	EvaluationInterval string      `yaml:"evaluation_interval"`
	Tests              []testGroup `yaml:"tests"`
}

func (s scenario) group(expiration time.Duration) testGroup {
	g := testGroup{
		Name:        fmt.Sprintf("%s %s (%s) metric_expiration=%s", s.alert, s.kind, s.name, expiration),
		Interval:    "1m",
		InputSeries: s.series(expiration),
	}
	for _, c := range s.checks {
		at := fmt.Sprintf("%dm", c.at)
		if c.fire {
			g.ExprTests = append(g.ExprTests, exprTest{
				Expr:       fmt.Sprintf(`count by (alertname) (ALERTS{alertname=%q, alertstate="firing", %s})`, s.alert, c.labels),
				EvalTime:   at,
				ExpSamples: []expSample{{Labels: fmt.Sprintf(`{alertname=%q}`, s.alert), Value: 1}},
			})
			continue
		}
		window := c.never
		if window == 0 {
			window = 1
		}
		g.ExprTests = append(g.ExprTests, exprTest{
			Expr:     fmt.Sprintf(`max_over_time(ALERTS{alertname=%q, alertstate="firing"}[%dm])`, s.alert, window),
			EvalTime: at,
		})
	}
	return g
}

// dirLabels matches one direction's alert.
func dirLabels(d dir) string {
	return fmt.Sprintf(`emailqos_direction=%q, instance=%q`, d.direction(), d.instance)
}

// e5 and e15 pick a value per metric_expiration.
func pick(expiration time.Duration, e5, e15 int) int {
	if expiration == 5*time.Minute {
		return e5
	}
	return e15
}

// scenarios returns every case for one metric_expiration. Minute m of a
// scenario is m*1m; probe k is exported at k*5m+20s (+2m for a lost probe).
func scenarios(e time.Duration) []scenario {
	var out []scenario
	healthy := repeat(12, ok()) // an hour of history

	// --- EmailQoSProbeFailing: codes 1-4 of a direction.
	// Failures start at probe 12 (minute 60); the success of probe 11
	// lingers until 55+E.
	first := 60
	fires := first + pick(e, 9, 19) // documented: ~9m / ~19m after the first failure
	out = append(out,
		scenario{alert: "EmailQoSProbeFailing", kind: "sustained", name: "code 2 auth for 40m, then healthy",
			minutes: 120, probes: map[dir][]*res{demo: seq(healthy, repeat(8, fail(2, "auth")), repeat(4, ok()))},
			checks: []check{{at: fires - 2, never: fires - 2}, {at: fires + 1, fire: true, labels: dirLabels(demo)}, {at: 99, fire: true, labels: dirLabels(demo)}}},
		scenario{alert: "EmailQoSProbeFailing", kind: "single", name: "one failed probe between successes, each code",
			minutes: 120, probes: map[dir][]*res{demo: seq(healthy, one(fail(1, "connect")), repeat(3, ok()), one(fail(3, "auth")), repeat(3, ok()), one(fail(4, "not_found")), repeat(3, ok()))},
			checks: []check{{at: 120, never: 120}}},
		scenario{alert: "EmailQoSProbeFailing", kind: "changing", name: "codes 3,4,3,4 for 40m",
			minutes: 110, probes: map[dir][]*res{demo: seq(healthy, []*res{fail(3, "auth"), fail(4, "not_found"), fail(3, "timeout"), fail(4, "not_found"), fail(3, "auth"), fail(4, "not_found"), fail(3, "auth"), fail(4, "not_found")}, repeat(2, ok()))},
			checks: []check{{at: fires + 1, fire: true, labels: dirLabels(demo)}, {at: 95, fire: true, labels: dirLabels(demo)}}},
		scenario{alert: "EmailQoSProbeFailing", kind: "changing", name: "codes 1,2,1,2 for 40m",
			minutes: 110, probes: map[dir][]*res{demo: seq(healthy, []*res{fail(1, "connect"), fail(2, "rejected"), fail(1, "tls"), fail(2, "auth"), fail(1, "connect"), fail(2, "deferred"), fail(1, "timeout"), fail(2, "auth")}, repeat(2, ok()))},
			checks: []check{{at: fires + 1, fire: true, labels: dirLabels(demo)}, {at: 95, fire: true, labels: dirLabels(demo)}}},
		scenario{alert: "EmailQoSProbeFailing", kind: "recovery", name: "healthy again at minute 100, failed series lingering",
			minutes: 125, probes: map[dir][]*res{demo: seq(healthy, repeat(8, fail(3, "auth")), repeat(5, ok()))},
			// probe 20 (minute 100:20) succeeds: cleared at the next scrape
			// and evaluation, while the code 3 series lingers until 95+E.
			checks: []check{{at: 100, fire: true, labels: dirLabels(demo)}, {at: 102, never: 1}, {at: 125, never: 23}}},
		scenario{alert: "EmailQoSProbeFailing", kind: "missing", name: "the collector stops while failing",
			minutes: 130, probes: map[dir][]*res{demo: seq(healthy, repeat(6, fail(4, "not_found")))},
			// last failed probe exported at 87:20; its series drops at 87:20+E,
			// the 5m window ends 5m later: cleared, no false recovery either.
			checks: []check{{at: 88, fire: true, labels: dirLabels(demo)}, {at: 88 + pick(e, 5, 15) + 6, never: 1}}},
		scenario{alert: "EmailQoSProbeFailing", kind: "threshold", name: "two consecutive failed probes",
			minutes: 90, probes: map[dir][]*res{demo: seq(healthy, repeat(2, fail(2, "auth")), repeat(6, ok()))},
		},
	)
	// Two consecutive failures fire under 5m, not under 15m; four fire
	// under 15m, three do not.
	out[len(out)-1].checks = nil
	if e == 5*time.Minute {
		out[len(out)-1].checks = []check{{at: 70, fire: true, labels: dirLabels(demo)}, {at: 90, never: 15}}
	} else {
		out[len(out)-1].checks = []check{{at: 90, never: 90}}
		out = append(out,
			scenario{alert: "EmailQoSProbeFailing", kind: "threshold", name: "three consecutive failed probes",
				minutes: 100, probes: map[dir][]*res{demo: seq(healthy, repeat(3, fail(2, "auth")), repeat(6, ok()))},
				checks: []check{{at: 100, never: 100}}},
			scenario{alert: "EmailQoSProbeFailing", kind: "threshold", name: "four consecutive failed probes",
				minutes: 100, probes: map[dir][]*res{demo: seq(healthy, repeat(4, fail(2, "auth")), repeat(6, ok()))},
				checks: []check{{at: 80, fire: true, labels: dirLabels(demo)}, {at: 100, never: 15}}})
	}
	return out
}

func TestAlertRulesWithPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	require.NoError(t, err, "promtool is needed (Debian package prometheus): run `make rules-test`, which installs it")

	rulesPath, err := filepath.Abs(filepath.Join(root, "deploy/prometheus/emailqos-alerts.yaml"))
	require.NoError(t, err)
	var rf ruleFile
	require.NoError(t, yaml.Unmarshal(readFile(t, "deploy/prometheus/emailqos-alerts.yaml"), &rf))

	outDir := filepath.Join(root, "_build", "rules-test")
	require.NoError(t, os.MkdirAll(outDir, 0o755))

	covered := map[string]map[string]bool{} // alert -> kind@expiration
	for _, e := range expirations {
		tf := testFile{RuleFiles: []string{rulesPath}, EvaluationInterval: "1m"}
		for _, s := range scenarios(e) {
			tf.Tests = append(tf.Tests, s.group(e))
			if covered[s.alert] == nil {
				covered[s.alert] = map[string]bool{}
			}
			covered[s.alert][s.kind+"@"+e.String()] = true
		}
		b, err := yaml.Marshal(tf)
		require.NoError(t, err)
		file := filepath.Join(outDir, fmt.Sprintf("emailqos-alerts-expiration-%s.test.yaml", e))
		require.NoError(t, os.WriteFile(file, b, 0o644))
		out, err := exec.Command(promtool, "test", "rules", file).CombinedOutput()
		assert.NoError(t, err, "promtool test rules %s:\n%s", file, out)
		t.Logf("promtool test rules %s: %d test groups passed", file, len(tf.Tests))
	}

	// Every rule has every kind of case under both expirations.
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			for _, kind := range []string{"sustained", "single", "changing", "recovery", "missing", "threshold"} {
				for _, e := range expirations {
					assert.True(t, covered[r.Alert][kind+"@"+e.String()], "%s: no %s case with metric_expiration %s", r.Alert, kind, e)
				}
			}
		}
	}
}
