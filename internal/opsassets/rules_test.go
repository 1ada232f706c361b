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
		"otel_scope_name": "github.com/emailqos/emailqosreceiver", "otel_scope_version": "0.1.0-dev",
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
		"otel_scope_name": "github.com/emailqos/emailqosreceiver", "otel_scope_version": "0.1.0-dev",
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
	labels string // the subject's label matchers, e.g. emailqos_direction="mail:mail"
}

// scenario is one case of one rule under one metric_expiration.
type scenario struct {
	alert   string
	kind    string // sustained, single, changing, recovery, missing, threshold
	name    string
	minutes int
	probes  map[dir][]*res
	tokens  map[string][]tok // account -> per collection
	every   time.Duration    // collection_interval; 0: 5m
	checks  []check
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
	every := s.every
	if every == 0 {
		every = collection
	}
	for d, rs := range s.probes {
		for k, r := range rs {
			if r == nil {
				continue
			}
			at := time.Duration(k)*every + done
			if r.code == 4 && r.etype != "bounced" {
				// A bounce ends the probe in seconds, not at the timeout.
				at = time.Duration(k)*every + doneLost
			}
			add(at, d.points(r))
		}
	}
	for acct, ts := range s.tokens {
		for k, t := range ts {
			add(time.Duration(k)*every+done, tokenPoints(acct, demo.instance, t))
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
				Expr:       fmt.Sprintf(`count by (alertname) (ALERTS{alertname=%q, alertstate="firing"%s})`, s.alert, comma(c.labels)),
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
			Expr:     fmt.Sprintf(`max_over_time(ALERTS{alertname=%q, alertstate="firing"%s}[%dm])`, s.alert, comma(c.labels), window),
			EvalTime: at,
		})
	}
	return g
}

func comma(labels string) string {
	if labels == "" {
		return ""
	}
	return ", " + labels
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
			checks: []check{{at: 88, fire: true, labels: dirLabels(demo)}, {at: 88 + pick(e, 5, 15) + 7, never: 1}}},
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

	// 1m probes (the measurements): the last success (59:20)
	// expires at 59:20+E.
	var alt32 []*res
	for i := 0; i < 40; i++ {
		alt32 = append(alt32, []*res{fail(3, "auth"), fail(2, "auth")}[i%2])
	}
	start1 := 60 + pick(e, 5, 15)
	out = append(out,
		scenario{alert: "EmailQoSProbeFailing", kind: "changing", name: "1m probes: codes 3,2,3,2 for 40m, then healthy", every: time.Minute,
			minutes: 115, probes: map[dir][]*res{demo: seq(repeat(60, ok()), alt32, repeat(15, ok()))},
			checks: []check{{at: start1 + 6, never: start1 + 6}, {at: start1 + 9, fire: true, labels: dirLabels(demo)}, {at: 99, fire: true, labels: dirLabels(demo)}, {at: 102, never: 1}}},
		scenario{alert: "EmailQoSProbeFailing", kind: "single", name: "1m probes: one failed probe of each code", every: time.Minute,
			minutes: 100, probes: map[dir][]*res{demo: seq(repeat(60, ok()), one(fail(1, "connect")), repeat(9, ok()), one(fail(2, "auth")), repeat(9, ok()), one(fail(3, "auth")), repeat(19, ok()))},
			checks: []check{{at: 100, never: 100}}},
	)

	out = append(out, stateful(e, "EmailQoSCleanupFailing", 20, ok(), fail(5, "rejected"), fail(5, "protocol"), demo)...)
	out = append(out, stateful(e, "EmailQoSTargetInvalid", 8, ok(), fail(-1, "config"), fail(-2, "config"), demo)...)
	out = append(out, stateful(e, "EmailQoSProbesBounced", 8, ok(), &res{code: 4, etype: "bounced"}, &res{code: 4, etype: "bounced", placement: "junk"}, trans)...)
	out = append(out, stateful(e, "EmailQoSProbesInJunk", 8, ok(), junk(), &res{code: 5, etype: "rejected", placement: "junk", latency: 5, total: 8}, trans)...)
	out = append(out, stateful(e, "EmailQoSAuthenticationFailing", 8, authRes("dmarc", "pass"), authRes("dmarc", "fail"), authRes("dmarc", "none"), trans)...)
	out = append(out, oauthInvalid(e)...)
	out = append(out, reporting(e)...)
	out = append(out, latency(e)...)
	out = append(out, budget(e)...)
	out = append(out, late(e)...)
	out = append(out, tlsRules(e)...)
	out = append(out, oauthExpiring(e)...)
	return out
}

// timeline turns a pattern into probe results: g good, a and b the two
// bad results (different series identities), - no probe.
func timeline(pattern string, good, a, b *res) []*res {
	var out []*res
	for _, c := range pattern {
		switch c {
		case 'g':
			out = append(out, good)
		case 'a':
			out = append(out, a)
		case 'b':
			out = append(out, b)
		default:
			out = append(out, nil)
		}
	}
	return out
}

func times(n int, s string) string { return strings.Repeat(s, n) }

// stateful covers a rule that reads a state from series whose identity
// changes with the cause (a failed state "a" or "b" against a good state
// that clears it), with `for: forMin` minutes. History: 12 good probes;
// the bad state starts with probe 12 (minute 60). The good series of probe
// 11 (55:20) is gone from the scrape at minute 56+E, where the rule starts
// being true; it fires forMin later. k bad probes in a row keep it true up
// to minute 60+5k, so the shortest run that fires is
// ceil((56+E+forMin-60)/5).
func stateful(e time.Duration, alert string, forMin int, good, a, b *res, d dir) []scenario {
	em := int(e / time.Minute)
	start := 56 + em
	fires := start + forMin
	n := (fires + 2 - 60 + 4) / 5 // bad probes to be firing at fires+1
	kmin := (start + forMin - 60 + 4) / 5
	history := times(12, "g")
	mk := func(p string) map[dir][]*res { return map[dir][]*res{d: timeline(p, good, a, b)} }
	end := 60 + 5*n
	alt := ""
	for i := 0; i < n; i++ {
		alt += string("ab"[i%2])
	}
	l := dirLabels(d)
	return []scenario{
		{alert: alert, kind: "sustained", name: fmt.Sprintf("%d bad probes", n), minutes: end + 15,
			probes: mk(history + times(n, "a") + "ggg"),
			checks: []check{{at: fires - 1, never: fires - 1, labels: l}, {at: fires + 1, fire: true, labels: l}, {at: end, fire: true, labels: l}}},
		{alert: alert, kind: "single", name: "one bad probe between good ones, twice", minutes: 120,
			probes: mk(history + "agggbggggggg"), checks: []check{{at: 120, never: 120, labels: l}}},
		{alert: alert, kind: "changing", name: "the cause alternates every probe", minutes: end + 15,
			probes: mk(history + alt + "ggg"),
			checks: []check{{at: fires + 1, fire: true, labels: l}, {at: end, fire: true, labels: l}}},
		{alert: alert, kind: "recovery", name: "good again while the bad series linger", minutes: end + 30,
			probes: mk(history + times(n, "a") + times(6, "g")),
			checks: []check{{at: end, fire: true, labels: l}, {at: end + 2, never: 1, labels: l}, {at: end + 30, never: 28, labels: l}}},
		{alert: alert, kind: "missing", name: "the collector stops while bad", minutes: end + em + 20,
			// the last bad series is dropped at end-5+E and leaves the 5m
			// window 5m later: the rule is false again, without a good probe.
			probes: mk(history + times(n, "a")),
			checks: []check{{at: end, fire: true, labels: l}, {at: end - 5 + em + 8, never: 1, labels: l}}},
		{alert: alert, kind: "threshold", name: fmt.Sprintf("%d bad probes in a row fire", kmin), minutes: 60 + 5*kmin + 20,
			probes: mk(history + times(kmin, "a") + times(4, "g")),
			checks: []check{{at: 60 + 5*kmin, fire: true, labels: l}, {at: 60 + 5*kmin + 20, never: 15, labels: l}}},
		{alert: alert, kind: "threshold", name: fmt.Sprintf("%d bad probes in a row do not", kmin-1), minutes: 60 + 5*kmin + 20,
			probes: mk(history + times(kmin-1, "a") + times(5, "g")),
			checks: []check{{at: 60 + 5*kmin + 20, never: 60 + 5*kmin + 20, labels: l}}},
	}
}

func TestAlertRulesWithPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	require.NoError(t, err, "promtool is needed (Debian package prometheus): run `make rules-test`, which installs it")

	// Each alert is tested alone (a rule file holding only it), so that a
	// case sees its own rule and promtool evaluates one rule, not all.
	var raw struct {
		Groups []struct {
			Name  string           `yaml:"name"`
			Rules []map[string]any `yaml:"rules"`
		} `yaml:"groups"`
	}
	require.NoError(t, yaml.Unmarshal(readFile(t, "deploy/prometheus/emailqos-alerts.yaml"), &raw))
	outDir, err := filepath.Abs(filepath.Join(root, "_build", "rules-test"))
	require.NoError(t, err)
	require.NoError(t, os.RemoveAll(outDir))
	require.NoError(t, os.MkdirAll(outDir, 0o755))
	var alerts []string
	for _, g := range raw.Groups {
		for _, r := range g.Rules {
			name, _ := r["alert"].(string)
			require.NotEmpty(t, name)
			alerts = append(alerts, name)
			b, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": g.Name, "rules": []any{r}}}})
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(filepath.Join(outDir, name+".rules.yaml"), b, 0o644))
		}
	}

	kinds := []string{"sustained", "single", "changing", "recovery", "missing", "threshold"}
	for _, e := range expirations {
		byAlert := map[string][]scenario{}
		for _, s := range scenarios(e) {
			byAlert[s.alert] = append(byAlert[s.alert], s)
		}
		for _, alert := range alerts {
			t.Run(fmt.Sprintf("%s/metric_expiration=%s", alert, e), func(t *testing.T) {
				cases := byAlert[alert]
				have := map[string]bool{}
				tf := testFile{RuleFiles: []string{alert + ".rules.yaml"}, EvaluationInterval: "1m"}
				for _, s := range cases {
					have[s.kind] = true
					tf.Tests = append(tf.Tests, s.group(e))
				}
				for _, k := range kinds {
					assert.True(t, have[k], "no %s case", k)
				}
				b, err := yaml.Marshal(tf)
				require.NoError(t, err)
				file := filepath.Join(outDir, fmt.Sprintf("%s.expiration-%s.test.yaml", alert, e))
				require.NoError(t, os.WriteFile(file, b, 0o644))
				out, err := exec.Command(promtool, "test", "rules", file).CombinedOutput()
				require.NoError(t, err, "promtool test rules %s:\n%s", file, out)
				for _, s := range cases {
					t.Logf("PASS %s: %s", s.kind, s.name)
				}
			})
		}
		for alert := range byAlert {
			assert.Contains(t, alerts, alert, "scenarios of an alert that is not in the rule file")
		}
	}
}

// tokens turns a pattern into token states (g valid, a and b failed with
// different error types, - none).
func tokens(pattern string, good, a, b tok) []tok {
	var out []tok
	for _, c := range pattern {
		switch c {
		case 'g':
			out = append(out, good)
		case 'a':
			out = append(out, a)
		case 'b':
			out = append(out, b)
		}
	}
	return out
}

// oauthInvalid: the stateful cases of EmailQoSOAuthTokenInvalid, whose
// good state is a valid token and whose bad states are failed fetches.
func oauthInvalid(e time.Duration) []scenario {
	good := tok{valid: true, expiry: 3000}
	a := tok{etype: "token_rejected"}
	b := tok{etype: "token_unavailable"}
	// Reuse stateful's timelines, mapped onto the account resource.
	var out []scenario
	for _, sc := range stateful(e, "EmailQoSOAuthTokenInvalid", 8, ok(), fail(3, "token_rejected"), fail(3, "token_unavailable"), demo) {
		var pattern strings.Builder
		for _, r := range sc.probes[demo] {
			switch {
			case r == nil:
				pattern.WriteByte('-')
			case r.code == 0:
				pattern.WriteByte('g')
			case r.etype == "token_rejected":
				pattern.WriteByte('a')
			default:
				pattern.WriteByte('b')
			}
		}
		sc.probes = nil
		sc.tokens = map[string][]tok{"oauth": tokens(pattern.String(), good, a, b)}
		for i := range sc.checks {
			sc.checks[i].labels = `emailqos_account="oauth"`
		}
		out = append(out, sc)
	}
	return out
}

// reporting: EmailQoSDirectionNotReporting, EmailQoSCollectorNotReporting
// and EmailQoSNoProbeResults. A series is last scraped at minute
// 5k+E (probe k-1 exported at 5(k-1)+0:20).
func reporting(e time.Duration) []scenario {
	em := int(e / time.Minute)
	g := ok()
	h := repeat(12, g)
	stopped := func(n int) []*res { return make([]*res, n) }
	lastT := 55 + em // last scrape of trans when its probe 12 does not come
	tl := dirLabels(trans)
	bl := `instance="collector-b:8889"`
	var out []scenario
	const dn = "EmailQoSDirectionNotReporting"
	out = append(out,
		scenario{alert: dn, kind: "sustained", name: "one of two directions stops", minutes: 150,
			probes: map[dir][]*res{demo: repeat(30, g), trans: h},
			// gone from the 10m window at lastT+11, fires 10m later; out
			// of the 1h window at lastT+61.
			checks: []check{{at: lastT + 20, never: 30, labels: tl}, {at: lastT + 22, fire: true, labels: tl}, {at: lastT + 59, fire: true, labels: tl}, {at: lastT + 63, never: 1, labels: tl}}},
		scenario{alert: dn, kind: "single", name: "one missed probe", minutes: 120,
			probes: map[dir][]*res{demo: repeat(24, g), trans: seq(h, stopped(1), repeat(11, g))},
			checks: []check{{at: 120, never: 120}}},
		scenario{alert: dn, kind: "changing", name: "the direction's error code changes every probe", minutes: 120,
			probes: map[dir][]*res{demo: repeat(24, g), trans: seq(h, []*res{fail(3, "auth"), fail(4, "not_found"), fail(2, "auth"), g, fail(1, "connect"), g, fail(3, "timeout"), g})},
			checks: []check{{at: 100, never: 100}}},
		scenario{alert: dn, kind: "recovery", name: "the direction reports again", minutes: 140,
			probes: map[dir][]*res{demo: repeat(28, g), trans: seq(h, stopped(8), repeat(8, g))},
			// trans back at 100:20
			checks: []check{{at: 100, fire: true, labels: tl}, {at: 102, never: 1, labels: tl}}},
		scenario{alert: dn, kind: "missing", name: "the whole collector stops: the collector alert, not this one", minutes: 150,
			probes: map[dir][]*res{demo: h, trans: h},
			checks: []check{{at: 150, never: 150}}},
	)
	// Threshold: a run of missed probes fires once the direction has been
	// absent from the 10m window for 10m.
	short, long := pick(e, 4, 6), pick(e, 5, 7)
	out = append(out,
		scenario{alert: dn, kind: "threshold", name: fmt.Sprintf("%d missed probes do not fire", short), minutes: 140,
			probes: map[dir][]*res{demo: repeat(28, g), trans: seq(h, stopped(short), repeat(10, g))},
			checks: []check{{at: 140, never: 140}}},
		scenario{alert: dn, kind: "threshold", name: fmt.Sprintf("%d missed probes fire", long), minutes: 140,
			probes: map[dir][]*res{demo: repeat(28, g), trans: seq(h, stopped(long), repeat(10, g))},
			checks: []check{{at: lastT + 21, fire: true, labels: tl}}},
	)

	const cn = "EmailQoSCollectorNotReporting"
	out = append(out,
		scenario{alert: cn, kind: "sustained", name: "the collector stops", minutes: 150,
			probes: map[dir][]*res{demo: h, trans: h},
			checks: []check{{at: lastT + 20, never: 30}, {at: lastT + 22, fire: true, labels: `instance="collector-a:8889"`}, {at: lastT + 63, never: 1}}},
		scenario{alert: cn, kind: "single", name: "one missed collection", minutes: 120,
			probes: map[dir][]*res{demo: seq(h, stopped(1), repeat(11, g)), trans: seq(h, stopped(1), repeat(11, g))},
			checks: []check{{at: 120, never: 120}}},
		scenario{alert: cn, kind: "changing", name: "directions come and go, the collector reports throughout", minutes: 150,
			probes: map[dir][]*res{demo: seq(h, repeat(12, fail(3, "auth"))), trans: seq(repeat(6, g), stopped(12), repeat(12, g))},
			checks: []check{{at: 150, never: 150}}},
		scenario{alert: cn, kind: "recovery", name: "the collector is back", minutes: 140,
			probes: map[dir][]*res{demo: seq(h, stopped(8), repeat(8, g))},
			checks: []check{{at: 100, fire: true, labels: `instance="collector-a:8889"`}, {at: 102, never: 1}}},
		scenario{alert: cn, kind: "missing", name: "one of two collectors stops", minutes: 150,
			probes: map[dir][]*res{demo: repeat(30, g), other: h},
			checks: []check{{at: lastT + 22, fire: true, labels: bl}, {at: 150, never: 150, labels: `instance="collector-a:8889"`}}},
		scenario{alert: cn, kind: "threshold", name: fmt.Sprintf("%d missed collections do not fire", short), minutes: 140,
			probes: map[dir][]*res{demo: seq(h, stopped(short), repeat(10, g))},
			checks: []check{{at: 140, never: 140}}},
		scenario{alert: cn, kind: "threshold", name: fmt.Sprintf("%d missed collections fire", long), minutes: 140,
			probes: map[dir][]*res{demo: seq(h, stopped(long), repeat(10, g))},
			checks: []check{{at: lastT + 21, fire: true, labels: `instance="collector-a:8889"`}}},
	)

	const nn = "EmailQoSNoProbeResults"
	// No emailqos_success for 1h from lastT+61, fires 20m later.
	out = append(out,
		scenario{alert: nn, kind: "sustained", name: "the only collector stops", minutes: 170,
			probes: map[dir][]*res{demo: h},
			checks: []check{{at: lastT + 79, never: 79}, {at: lastT + 82, fire: true}}},
		scenario{alert: nn, kind: "single", name: "one missed collection", minutes: 150,
			probes: map[dir][]*res{demo: seq(h, stopped(1), repeat(17, g))},
			checks: []check{{at: 150, never: 150}}},
		scenario{alert: nn, kind: "changing", name: "results change code and direction", minutes: 150,
			probes: map[dir][]*res{demo: seq(h, repeat(6, fail(3, "auth"))), trans: seq(repeat(17, nil), repeat(13, g))},
			checks: []check{{at: 150, never: 150}}},
		scenario{alert: nn, kind: "recovery", name: "the collector is back", minutes: 200,
			probes: map[dir][]*res{demo: seq(h, stopped(22), repeat(8, g))},
			// back at 170:20
			checks: []check{{at: 170, fire: true}, {at: 172, never: 1}}},
		scenario{alert: nn, kind: "missing", name: "one of two collectors stops", minutes: 170,
			probes: map[dir][]*res{demo: repeat(34, g), other: h},
			checks: []check{{at: 170, never: 170}}},
		scenario{alert: nn, kind: "threshold", name: "80 minutes without results do not fire", minutes: 170,
			probes: map[dir][]*res{demo: seq(h, stopped(16), repeat(6, g))},
			checks: []check{{at: 170, never: 170}}},
		scenario{alert: nn, kind: "threshold", name: "a Prometheus that never saw a result fires after 20m", minutes: 30,
			probes: map[dir][]*res{},
			tokens: map[string][]tok{"unrelated": {{valid: true, expiry: 3000}}},
			checks: []check{{at: 19, never: 19}, {at: 21, fire: true}}},
	)
	return out
}

// slowTotal is a successful probe whose whole transaction took total
// seconds (delivery 5s).
func slowTotal(total float64) *res { return &res{placement: "inbox", latency: 5, total: total} }

// latency: EmailQoSDeliverySlow and EmailQoSRoundtripSlow. The latency
// series keeps its identity (code 0, inbox), so metric_expiration only
// matters when data stops. Slow probes from probe 12 are scraped from
// minute 61: the 30m share reaches 12/30 = 0.4 at minute 72.
func latency(e time.Duration) []scenario {
	em := int(e / time.Minute)
	var out []scenario
	for _, rule := range []struct {
		alert string
		d     dir
		slow  func(float64) *res
		limit float64
	}{
		{"EmailQoSDeliverySlow", demo, slow, 60},
		{"EmailQoSRoundtripSlow", trans, slowTotal, 90},
		{"EmailQoSRoundtripSlow", demo, slowTotal, 90},
	} {
		g, s := ok(), rule.slow(2*rule.limit)
		h := repeat(12, g)
		l := dirLabels(rule.d)
		mk := func(rs []*res) map[dir][]*res { return map[dir][]*res{rule.d: rs} }
		var alt []*res
		for i := 0; i < 8; i++ {
			alt = append(alt, []*res{s, g}[i%2])
		}
		out = append(out,
			scenario{alert: rule.alert, kind: "sustained", name: rule.d.kind + ": 8 slow probes", minutes: 110,
				probes: mk(seq(h, repeat(8, s), repeat(4, g))),
				checks: []check{{at: 71, never: 71, labels: l}, {at: 73, fire: true, labels: l}, {at: 100, fire: true, labels: l}}},
			scenario{alert: rule.alert, kind: "single", name: rule.d.kind + ": one slow probe, then two in a row", minutes: 150,
				probes: mk(seq(h, one(s), repeat(7, g), repeat(2, s), repeat(10, g))),
				checks: []check{{at: 150, never: 150, labels: l}}},
			scenario{alert: rule.alert, kind: "changing", name: rule.d.kind + ": every other probe slow (fires: half the probes)", minutes: 110,
				probes: mk(seq(h, alt, alt, repeat(2, g))),
				checks: []check{{at: 95, fire: true, labels: l}, {at: 135 - 35, fire: true, labels: l}}},
			scenario{alert: rule.alert, kind: "recovery", name: rule.d.kind + ": fast again at 100:20", minutes: 130,
				probes: mk(seq(h, repeat(8, s), repeat(6, g))),
				// cleared once the last 10m hold only fast probes: the slow
				// value is scraped up to minute 100.
				checks: []check{{at: 105, fire: true, labels: l}, {at: 112, never: 1, labels: l}, {at: 130, never: 18, labels: l}}},
			scenario{alert: rule.alert, kind: "missing", name: rule.d.kind + ": the collector stops while slow", minutes: 130,
				probes: mk(seq(h, repeat(8, s))),
				// last scraped at 95+E, cleared 10m later.
				checks: []check{{at: 96, fire: true, labels: l}, {at: 95 + em + 12, never: 1, labels: l}}},
			scenario{alert: rule.alert, kind: "threshold", name: rule.d.kind + ": exactly at the limit never fires", minutes: 110,
				probes: mk(seq(h, repeat(8, rule.slow(rule.limit)))),
				checks: []check{{at: 100, never: 100, labels: l}}},
			scenario{alert: rule.alert, kind: "threshold", name: rule.d.kind + ": 1s over the limit fires", minutes: 110,
				probes: mk(seq(h, repeat(8, rule.slow(rule.limit+1)))),
				checks: []check{{at: 80, fire: true, labels: l}}},
			scenario{alert: rule.alert, kind: "changing", name: rule.d.kind + ": 1m probes, every other one slow", minutes: 60, every: time.Minute,
				probes: mk(seq(repeat(20, g), everyNth(40, 2, s, g))),
				checks: []check{{at: 45, fire: true, labels: l}, {at: 59, fire: true, labels: l}}},
			scenario{alert: rule.alert, kind: "threshold", name: rule.d.kind + ": three slow probes in 30m fire", minutes: 110,
				probes: mk(seq(h, repeat(3, s), repeat(8, g))),
				checks: []check{{at: 75, fire: true, labels: l}, {at: 110, never: 20, labels: l}}},
		)
	}
	return out
}

// budget: EmailQoSDeliverySLOBudget, over 6h (360 one-minute steps):
// more than 36 minutes above 30s fires, 15m later.
func budget(e time.Duration) []scenario {
	em := int(e / time.Minute)
	const a = "EmailQoSDeliverySLOBudget"
	g, s := ok(), slow(40)
	h := repeat(76, g) // 6h20m of history
	l := dirLabels(demo)
	mk := func(rs []*res) map[dir][]*res { return map[dir][]*res{demo: rs} }
	var alt []*res
	for i := 0; i < 20; i++ {
		alt = append(alt, []*res{s, g}[i%2])
	}
	return []scenario{
		// slow from probe 76 (scraped from minute 381): 37 minutes at 417.
		{alert: a, kind: "sustained", name: "45 minutes above 30s after 6h of history", minutes: 460,
			probes: mk(seq(h, repeat(9, s), repeat(6, g))),
			checks: []check{{at: 430, never: 430, labels: l}, {at: 434, fire: true, labels: l}, {at: 455, fire: true, labels: l}}},
		{alert: a, kind: "single", name: "one slow probe", minutes: 460,
			probes: mk(seq(h, one(s), repeat(15, g))),
			checks: []check{{at: 460, never: 460, labels: l}}},
		{alert: a, kind: "changing", name: "every other probe slow for 100 minutes", minutes: 490,
			probes: mk(seq(h, alt, repeat(2, g))),
			checks: []check{{at: 480, fire: true, labels: l}}},
		// 45 slow minutes (381-425) leave the window from minute 741: at
		// most 36 left from 750.
		{alert: a, kind: "recovery", name: "the share decays as the slow spell leaves the 6h window", minutes: 780,
			probes: mk(seq(h, repeat(9, s), repeat(70, g))),
			checks: []check{{at: 700, fire: true, labels: l}, {at: 780, never: 25, labels: l}}},
		// The case: a fresh collector with a 35-minute slow spell
		// does not fire (it did, for hours), as with 6h of history.
		{alert: a, kind: "missing", name: "a fresh collector: 35 slow minutes", minutes: 400,
			probes: mk(seq(repeat(4, g), repeat(7, s), repeat(69, g))),
			checks: []check{{at: 400, never: 400, labels: l}}},
		{alert: a, kind: "missing", name: "the collector stops after a slow spell", minutes: 460 + em,
			probes: mk(seq(h, repeat(9, s))),
			checks: []check{{at: 434, fire: true, labels: l}}},
		{alert: a, kind: "threshold", name: "35 slow minutes (7 probes) do not fire", minutes: 460,
			probes: mk(seq(h, repeat(7, s), repeat(8, g))),
			checks: []check{{at: 460, never: 460, labels: l}}},
		{alert: a, kind: "threshold", name: "40 slow minutes (8 probes) fire", minutes: 460,
			probes: mk(seq(h, repeat(8, s), repeat(8, g))),
			checks: []check{{at: 440, fire: true, labels: l}}},
		// 1m probes: the 1m subquery step reads every probe (a 5m step read
		// one in five, so 20% slow probes never fired).
		{alert: a, kind: "threshold", name: "1m probes, every 5th slow for 7h (20%) fires", minutes: 420, every: time.Minute,
			probes: mk(everyNth(420, 5, s, g)),
			checks: []check{{at: 400, fire: true, labels: l}}},
		{alert: a, kind: "threshold", name: "1m probes, every 10th slow (exactly 10%) does not", minutes: 420, every: time.Minute,
			probes: mk(everyNth(420, 10, s, g)),
			checks: []check{{at: 420, never: 420, labels: l}}},
		{alert: a, kind: "threshold", name: "exactly 30s never fires", minutes: 460,
			probes: mk(seq(h, repeat(12, slow(30)), repeat(4, g))),
			checks: []check{{at: 460, never: 460, labels: l}}},
	}
}

// late: EmailQoSProbesArrivingLate, information for an hour after a late
// probe was found (by design it fires on one: the mail was not lost).
func late(e time.Duration) []scenario {
	em := int(e / time.Minute)
	const a = "EmailQoSProbesArrivingLate"
	g := ok()
	h := repeat(12, g)
	l := dirLabels(demo)
	mk := func(rs []*res) map[dir][]*res { return map[dir][]*res{demo: rs} }
	return []scenario{
		{alert: a, kind: "sustained", name: "late probes every collection", minutes: 100,
			probes: mk(seq(h, repeat(6, lateFound(1)))),
			checks: []check{{at: 60, never: 60, labels: l}, {at: 62, fire: true, labels: l}, {at: 90, fire: true, labels: l}}},
		{alert: a, kind: "single", name: "one late probe: information for an hour", minutes: 140,
			probes: mk(seq(h, one(lateFound(1)), repeat(15, g))),
			checks: []check{{at: 62, fire: true, labels: l}, {at: 120, fire: true, labels: l}, {at: 140, never: 10, labels: l}}},
		{alert: a, kind: "changing", name: "late counts and error codes change", minutes: 100,
			probes: mk(seq(h, []*res{lateFound(1), fail(4, "not_found"), lateFound(2), fail(3, "auth"), lateFound(1)})),
			checks: []check{{at: 62, fire: true, labels: l}, {at: 85, fire: true, labels: l}}},
		{alert: a, kind: "recovery", name: "clears an hour after the last late probe", minutes: 150,
			probes: mk(seq(h, repeat(2, lateFound(1)), repeat(18, g))),
			// last late value exported 65:20, replaced by 0 at 70:20
			checks: []check{{at: 125, fire: true, labels: l}, {at: 132, never: 1, labels: l}}},
		{alert: a, kind: "missing", name: "the collector stops after a late probe", minutes: 150,
			probes: mk(seq(h, one(lateFound(1)))),
			checks: []check{{at: 100, fire: true, labels: l}, {at: 60 + em + 62, never: 1, labels: l}}},
		{alert: a, kind: "threshold", name: "no late probe (0) never fires", minutes: 100,
			probes: mk(repeat(20, g)),
			checks: []check{{at: 100, never: 100, labels: l}}},
	}
}

// tlsRules: EmailQoSCertificateExpiring and EmailQoSTLSVersionLow, the
// minimum over the last hour per account and protocol.
func tlsRules(e time.Duration) []scenario {
	em := int(e / time.Minute)
	var out []scenario
	for _, rule := range []struct {
		alert     string
		bad, good *res
		edge      *res // exactly at the limit: never
		over      *res // just past it: fires
	}{
		{"EmailQoSCertificateExpiring", withTLS(10, 1.3), withTLS(300, 1.3), withTLS(14, 1.3), withTLS(13.9, 1.3)},
		{"EmailQoSTLSVersionLow", withTLS(300, 1.0), withTLS(300, 1.3), withTLS(300, 1.2), withTLS(300, 1.1)},
	} {
		a := rule.alert
		h := repeat(12, rule.good)
		smtp := `emailqos_sender="mail", protocol="smtp"`
		mk := func(rs []*res) map[dir][]*res { return map[dir][]*res{demo: rs} }
		var pool []*res // a load-balanced pool: every other probe reaches the bad server
		for i := 0; i < 12; i++ {
			pool = append(pool, []*res{rule.bad, rule.good}[i%2])
		}
		out = append(out,
			scenario{alert: a, kind: "sustained", name: "every probe", minutes: 100,
				probes: mk(seq(h, repeat(8, rule.bad))),
				checks: []check{{at: 60, never: 60}, {at: 62, fire: true, labels: smtp}, {at: 62, fire: true, labels: `emailqos_receiver="mail", protocol="imap"`}}},
			scenario{alert: a, kind: "single", name: "one probe of the pool reaches the bad server: fires for an hour", minutes: 140,
				probes: mk(seq(h, one(rule.bad), repeat(15, rule.good))),
				checks: []check{{at: 62, fire: true, labels: smtp}, {at: 120, fire: true, labels: smtp}, {at: 140, never: 10}}},
			scenario{alert: a, kind: "changing", name: "half the pool bad: fires throughout", minutes: 120,
				probes: mk(seq(h, pool)),
				checks: []check{{at: 63, fire: true, labels: smtp}, {at: 88, fire: true, labels: smtp}, {at: 119, fire: true, labels: smtp}}},
			scenario{alert: a, kind: "recovery", name: "fixed at 70:20: clears an hour after the last bad probe", minutes: 150,
				probes: mk(seq(h, repeat(2, rule.bad), repeat(18, rule.good))),
				checks: []check{{at: 125, fire: true, labels: smtp}, {at: 132, never: 1}}},
			scenario{alert: a, kind: "missing", name: "the collector stops", minutes: 150,
				probes: mk(seq(h, repeat(2, rule.bad))),
				checks: []check{{at: 100, fire: true, labels: smtp}, {at: 65 + em + 62, never: 1}}},
			scenario{alert: a, kind: "threshold", name: "at the limit never fires", minutes: 100,
				probes: mk(seq(h, repeat(8, rule.edge))),
				checks: []check{{at: 100, never: 100}}},
			scenario{alert: a, kind: "threshold", name: "just past the limit fires", minutes: 100,
				probes: mk(seq(h, repeat(8, rule.over))),
				checks: []check{{at: 70, fire: true, labels: smtp}}},
		)
	}
	return out
}

// oauthExpiring: EmailQoSOAuthTokenExpiring reads only the valid token's
// series.
func oauthExpiring(e time.Duration) []scenario {
	em := int(e / time.Minute)
	const a = "EmailQoSOAuthTokenExpiring"
	l := `emailqos_account="oauth"`
	fresh := tok{valid: true, expiry: 3000}
	low := tok{valid: true, expiry: 200}
	bad := tok{etype: "token_unavailable"}
	rep := func(n int, t tok) []tok {
		out := make([]tok, n)
		for i := range out {
			out[i] = t
		}
		return out
	}
	cat := func(parts ...[]tok) []tok {
		var out []tok
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	mk := func(ts []tok) map[string][]tok { return map[string][]tok{"oauth": ts} }
	return []scenario{
		{alert: a, kind: "sustained", name: "the token held runs low", minutes: 80,
			tokens: mk(cat(rep(12, fresh), rep(3, low))),
			checks: []check{{at: 60, never: 60, labels: l}, {at: 61, fire: true, labels: l}, {at: 70, fire: true, labels: l}}},
		// The case: a failed fetch (expiry 0 on its own series)
		// fired "expires in 0s".
		{alert: a, kind: "single", name: "one failed fetch", minutes: 100,
			tokens: mk(cat(rep(12, fresh), rep(1, bad), rep(6, fresh))),
			checks: []check{{at: 100, never: 100, labels: l}}},
		{alert: a, kind: "changing", name: "a token failure starts and lasts, then recovers", minutes: 120,
			tokens: mk(cat(rep(12, fresh), rep(8, bad), rep(4, fresh))),
			checks: []check{{at: 120, never: 120, labels: l}}},
		{alert: a, kind: "recovery", name: "refreshed at 75:20", minutes: 90,
			tokens: mk(cat(rep(12, fresh), rep(3, low), rep(3, fresh))),
			checks: []check{{at: 75, fire: true, labels: l}, {at: 77, never: 1, labels: l}}},
		{alert: a, kind: "missing", name: "the low token expires into failed fetches; the collector then stops", minutes: 120,
			tokens: mk(cat(rep(12, fresh), rep(2, low), rep(3, bad))),
			// the failed fetch at 70:20 suppresses the lingering low value
			checks: []check{{at: 69, fire: true, labels: l}, {at: 72, never: 1, labels: l}, {at: 85 + em + 5, never: 85 + em + 5 - 71, labels: l}}},
		{alert: a, kind: "threshold", name: "240s left never fires", minutes: 80,
			tokens: mk(cat(rep(12, fresh), rep(3, tok{valid: true, expiry: 240}))),
			checks: []check{{at: 80, never: 80, labels: l}}},
		{alert: a, kind: "threshold", name: "239s left fires", minutes: 80,
			tokens: mk(cat(rep(12, fresh), rep(3, tok{valid: true, expiry: 239}))),
			checks: []check{{at: 62, fire: true, labels: l}}},
	}
}

// everyNth is n results, every nth of them (from the first) bad.
func everyNth(n, nth int, bad, good *res) []*res {
	out := make([]*res, n)
	for i := range out {
		out[i] = good
		if i%nth == 0 {
			out[i] = bad
		}
	}
	return out
}
