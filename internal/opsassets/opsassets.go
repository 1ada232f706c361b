// Package opsassets checks the operator assets shipped with the receiver
// (deploy/prometheus alerting rules, the deploy/grafana dashboard) against
// the metrics the receiver emits: it derives from metadata.yaml the names
// and labels the collector's Prometheus exporter gives them, and extracts
// the metric and label names a PromQL expression uses, so that a renamed
// metric or attribute cannot leave a rule or panel silently empty.
package opsassets // import "github.com/emailqos/emailqosreceiver/internal/opsassets"

import (
	"fmt"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Metric is one metric as Prometheus sees it.
type Metric struct {
	// Name is the metric's name in metadata.yaml (emailqos.step.duration);
	// PromName the exporter's (emailqos_step_duration_seconds).
	Name     string
	PromName string
	// Labels are the label names its series carry with
	// resource_to_telemetry_conversion enabled: resource attributes,
	// datapoint attributes and the labels every scraped series has.
	Labels map[string]bool
}

// commonLabels are on every series: job and instance (from service.name
// and service.instance.id, and set by the Prometheus scrape), and the
// instrumentation scope the exporter adds.
var commonLabels = []string{"job", "instance", "otel_scope_name", "otel_scope_version", "otel_scope_schema_url"}

type metadataFile struct {
	ResourceAttributes map[string]struct {
		Enabled bool `yaml:"enabled"`
	} `yaml:"resource_attributes"`
	Attributes map[string]struct {
		NameOverride string `yaml:"name_override"`
	} `yaml:"attributes"`
	Metrics map[string]struct {
		Enabled    bool      `yaml:"enabled"`
		Unit       string    `yaml:"unit"`
		Attributes []string  `yaml:"attributes"`
		Gauge      *struct{} `yaml:"gauge"`
		Sum        *struct {
			Monotonic bool `yaml:"monotonic"`
		} `yaml:"sum"`
	} `yaml:"metrics"`
}

// unitSuffixes are the Prometheus suffixes of the UCUM units the receiver
// may use. A unit missing here is an error rather than a guess.
var unitSuffixes = map[string]string{
	"s":   "seconds",
	"ms":  "milliseconds",
	"us":  "microseconds",
	"By":  "bytes",
	"min": "minutes",
	"h":   "hours",
	"d":   "days",
	"%":   "percent",
}

// PrometheusMetrics derives, from the content of metadata.yaml, every
// enabled metric's Prometheus name and labels, keyed by Prometheus name.
// The rules are the exporter's (translation with suffixes): dots become
// underscores; a unit adds its suffix (s -> _seconds); an annotation unit
// ({message}) adds nothing; unit 1 adds _ratio to a gauge; a monotonic sum
// ends in _total.
func PrometheusMetrics(metadataYAML []byte) (map[string]Metric, error) {
	var md metadataFile
	if err := yaml.Unmarshal(metadataYAML, &md); err != nil {
		return nil, fmt.Errorf("metadata.yaml: %w", err)
	}
	var resource []string
	for name, ra := range md.ResourceAttributes {
		if ra.Enabled {
			resource = append(resource, sanitize(name))
		}
	}
	out := map[string]Metric{}
	for name, m := range md.Metrics {
		if !m.Enabled {
			continue
		}
		prom := sanitize(name)
		unit := stripAnnotations(m.Unit)
		switch {
		case unit == "":
		case unit == "1":
			if m.Gauge != nil {
				prom = addSuffix(prom, "ratio")
			}
		default:
			suffix, err := unitSuffix(unit)
			if err != nil {
				return nil, fmt.Errorf("metric %s: %w", name, err)
			}
			prom = addSuffix(prom, suffix)
		}
		if m.Sum != nil && m.Sum.Monotonic {
			prom = addSuffix(prom, "total")
		}
		labels := map[string]bool{}
		for _, l := range append(append([]string{}, commonLabels...), resource...) {
			labels[l] = true
		}
		for _, a := range m.Attributes {
			key := a
			if attr, ok := md.Attributes[a]; ok && attr.NameOverride != "" {
				key = attr.NameOverride
			}
			labels[sanitize(key)] = true
		}
		if prev, dup := out[prom]; dup {
			return nil, fmt.Errorf("metrics %s and %s both become %s", prev.Name, name, prom)
		}
		out[prom] = Metric{Name: name, PromName: prom, Labels: labels}
	}
	return out, nil
}

func unitSuffix(unit string) (string, error) {
	if s, ok := unitSuffixes[unit]; ok {
		return s, nil
	}
	// X/Y becomes X_per_Y.
	if num, den, ok := strings.Cut(unit, "/"); ok {
		n, errN := unitSuffix(num)
		d, errD := unitSuffix(den)
		if errN == nil && errD == nil {
			return n + "_per_" + d, nil
		}
	}
	return "", fmt.Errorf("unit %q: no known Prometheus suffix", unit)
}

// stripAnnotations removes {annotations} from a UCUM unit.
func stripAnnotations(unit string) string {
	var b strings.Builder
	depth := 0
	for _, r := range unit {
		switch {
		case r == '{':
			depth++
		case r == '}' && depth > 0:
			depth--
		case depth == 0:
			b.WriteRune(r)
		}
	}
	return strings.TrimSpace(b.String())
}

func addSuffix(name, suffix string) string {
	if strings.HasSuffix(name, "_"+suffix) {
		return name
	}
	return name + "_" + suffix
}

// sanitize turns an OpenTelemetry name into a Prometheus name: every
// character outside [a-zA-Z0-9_] becomes an underscore.
func sanitize(name string) string {
	b := []byte(name)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == ':') {
			b[i] = '_'
		}
	}
	return string(b)
}

// Names returns the Prometheus names of metrics, sorted.
func Names(metrics map[string]Metric) []string {
	names := make([]string, 0, len(metrics))
	for n := range metrics {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Check reports every metric an expression queries that the receiver does
// not emit, and every label it matches on or groups by that those metrics
// do not carry. where names the expression in the messages.
func Check(where, expr string, metrics map[string]Metric) []string {
	q, err := Parse(expr)
	if err != nil {
		return []string{fmt.Sprintf("%s: %v", where, err)}
	}
	var problems []string
	union := map[string]bool{}
	if len(q.Selectors) == 0 {
		problems = append(problems, fmt.Sprintf("%s: queries no metric", where))
	}
	for _, sel := range q.Selectors {
		m, ok := metrics[sel.Metric]
		if !ok {
			problems = append(problems, fmt.Sprintf("%s: metric %s is not emitted by the receiver (emitted: %s)",
				where, sel.Metric, strings.Join(Names(metrics), ", ")))
			continue
		}
		for l := range m.Labels {
			union[l] = true
		}
		for _, l := range sel.Labels {
			if !m.Labels[l] {
				problems = append(problems, fmt.Sprintf("%s: %s has no label %s", where, sel.Metric, l))
			}
		}
	}
	for _, l := range q.Grouping {
		if len(union) > 0 && !union[l] {
			problems = append(problems, fmt.Sprintf("%s: groups or joins by %s, which none of its metrics carries", where, l))
		}
	}
	return problems
}

// LabelsOf returns the union of the labels of the metrics expr queries.
func LabelsOf(expr string, metrics map[string]Metric) map[string]bool {
	q, err := Parse(expr)
	if err != nil {
		return nil
	}
	out := map[string]bool{}
	for _, sel := range q.Selectors {
		for l := range metrics[sel.Metric].Labels {
			out[l] = true
		}
	}
	return out
}
