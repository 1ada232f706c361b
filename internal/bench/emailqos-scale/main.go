// Command emailqos-scale measures what one collection of the emailqos
// receiver costs with N round-trip targets: it runs the receiver through its
// factory and scraper controller, as the collector does, against in-process
// mail servers with N accounts, and prints one JSON line with the wall time,
// CPU time and peak RSS of the collection and the delivery-latency error
// against the servers' true arrival instants.
//
//	emailqos-scale run -n 1000            # one measurement, one JSON line
//	emailqos-scale report results.jsonl   # Markdown table of the lines
//	emailqos-scale cost bench.txt         # Markdown table of BenchmarkProbe
//	emailqos-scale machine                # Markdown table of this machine
//	emailqos-scale serve ...              # the mail servers' child process
//
// By default the mail servers run in a child process (this same binary), so
// the figures are the collector's own; -inproc runs them in this process.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/receiver/receivertest"

	"github.com/emailqos/emailqosreceiver"
	"github.com/emailqos/emailqosreceiver/internal/bench/scale"
	"github.com/emailqos/emailqosreceiver/internal/metadata"
	"github.com/emailqos/emailqosreceiver/internal/steps"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: emailqos-scale run|report|cost|machine|serve [flags]")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "serve":
		os.Exit(scale.Main(os.Args[2:]))
	case "run":
		res, err := run(os.Args[2:])
		if err != nil {
			fmt.Fprintln(os.Stderr, "emailqos-scale:", err)
			os.Exit(1)
		}
		if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
			os.Exit(1)
		}
	case "report", "cost", "machine":
		var err error
		switch os.Args[1] {
		case "report":
			err = report(os.Args[2:], os.Stdout)
		case "cost":
			err = cost(os.Args[2:], os.Stdout)
		default:
			err = machine(os.Stdout)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "emailqos-scale:", err)
			os.Exit(1)
		}
	default:
		fmt.Fprintln(os.Stderr, "usage: emailqos-scale run|report|cost|machine|serve [flags]")
		os.Exit(2)
	}
}

// Result is one measurement.
type Result struct {
	N         int     `json:"n"`
	Servers   string  `json:"servers"` // child or inproc
	Security  string  `json:"security"`
	Detection string  `json:"detection"`
	Cores     int     `json:"cores"`
	IntervalS float64 `json:"interval_s"`
	SpreadS   float64 `json:"spread_s,omitempty"`

	Delivered int            `json:"delivered"`
	Failed    map[string]int `json:"failed,omitempty"` // by error.type

	// WallS runs from the first probe's start to the collection's metrics
	// reaching the pipeline; CPUS is this process's user+system CPU from
	// before the receiver started until then.
	WallS float64 `json:"wall_s"`
	CPUS  float64 `json:"cpu_s"`
	// PeakRSSMB is this process's VmHWM.
	PeakRSSMB float64 `json:"peak_rss_mb"`
	// ErrMedianMS, ErrP99MS, ErrMaxMS: |reported - true delivery latency|.
	ErrMedianMS float64 `json:"err_median_ms"`
	ErrP99MS    float64 `json:"err_p99_ms"`
	ErrMaxMS    float64 `json:"err_max_ms"`
	// ServerCPUS and ServerRSSMB are the child servers' (0 in process).
	ServerCPUS  float64 `json:"server_cpu_s"`
	ServerRSSMB float64 `json:"server_rss_mb"`
}

func run(args []string) (*Result, error) {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	n := fs.Int("n", 1, "number of round-trip targets (accounts)")
	interval := fs.Duration("interval", 60*time.Second, "collection interval the CPU share is computed against")
	cores := fs.Int("cores", runtime.NumCPU(), "cores the CPU share is computed against")
	security := fs.String("security", "tls", "none, starttls or tls")
	detection := fs.String("detection", "precise", "detection method")
	delayMin := fs.Duration("delay-min", 20*time.Millisecond, "least delivery delay of the servers")
	delayMax := fs.Duration("delay-max", 200*time.Millisecond, "greatest delivery delay of the servers")
	inproc := fs.Bool("inproc", false, "run the mail servers in this process")
	spread := fs.Duration("spread", 0, "the receiver's start_spread: probe starts spread over this duration")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	res := &Result{N: *n, Servers: "child", Security: *security, Detection: *detection,
		Cores: *cores, IntervalS: interval.Seconds(), SpreadS: spread.Seconds(), Failed: map[string]int{}}

	opts := scale.ServeOptions{Users: *n, TLS: *security != "none", DelayMin: *delayMin, DelayMax: *delayMax}
	var srv *scale.Servers
	var err error
	if *inproc {
		res.Servers = "inproc"
		srv, err = scale.StartInProcess(opts)
	} else {
		exe, xerr := os.Executable()
		if xerr != nil {
			return nil, xerr
		}
		srv, err = scale.StartChild(exec.Command(exe, append([]string{"serve"}, opts.Args()...)...))
	}
	if err != nil {
		return nil, err
	}
	closed := false
	defer func() {
		if !closed {
			_, _ = srv.Close()
		}
	}()

	dir, err := os.MkdirTemp("", "emailqos-scale")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	caFile := filepath.Join(dir, "ca.pem")
	if srv.CAPEM != nil {
		if err := os.WriteFile(caFile, srv.CAPEM, 0o600); err != nil {
			return nil, err
		}
	}
	cfg, addrs, err := config(srv, *n, *interval, *spread, *security, *detection, caFile)
	if err != nil {
		return nil, err
	}

	// The sink: traces arrive first, then the metrics of the same
	// collection, which end the measurement.
	var mu sync.Mutex
	var traces []ptrace.Traces
	done := make(chan struct{})
	var endOnce sync.Once
	var endAt time.Time
	var endCPU time.Duration
	metricsSink, _ := consumer.NewMetrics(func(context.Context, pmetric.Metrics) error {
		endOnce.Do(func() {
			endCPU, endAt = scale.SelfCPU(), time.Now()
			close(done)
		})
		return nil
	})
	tracesSink, _ := consumer.NewTraces(func(_ context.Context, td ptrace.Traces) error {
		mu.Lock()
		defer mu.Unlock()
		traces = append(traces, td)
		return nil
	})

	f := emailqosreceiver.NewFactory()
	settings := receivertest.NewNopSettings(metadata.Type)
	settings.ID = component.NewID(metadata.Type)
	startCPU := scale.SelfCPU()
	mr, err := f.CreateMetrics(context.Background(), settings, cfg, metricsSink)
	if err != nil {
		return nil, err
	}
	tr, err := f.CreateTraces(context.Background(), settings, cfg, tracesSink)
	if err != nil {
		return nil, err
	}
	host := componenttest.NewNopHost()
	if err := errors.Join(mr.Start(context.Background(), host), tr.Start(context.Background(), host)); err != nil {
		return nil, err
	}
	// A probe is bounded by delivery_timeout + 30s; the collection by that.
	select {
	case <-done:
	case <-time.After(*interval + 2*time.Minute):
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := errors.Join(tr.Shutdown(shutdownCtx), mr.Shutdown(shutdownCtx)); err != nil {
		return nil, err
	}
	if endAt.IsZero() {
		return nil, errors.New("no collection finished in time")
	}
	if rss, err := scale.PeakRSS(); err == nil {
		res.PeakRSSMB = float64(rss) / (1 << 20)
	}
	res.CPUS = (endCPU - startCPU).Seconds()

	mu.Lock()
	first, errs := analyse(traces, addrs, srv, res)
	mu.Unlock()
	res.WallS = endAt.Sub(first).Seconds()
	if len(errs) > 0 {
		slices.Sort(errs)
		pick := func(p float64) float64 { return ms(errs[int(p*float64(len(errs)-1))]) }
		res.ErrMedianMS, res.ErrP99MS, res.ErrMaxMS = pick(0.5), pick(0.99), ms(errs[len(errs)-1])
	}

	closed = true
	ru, err := srv.Close()
	if err != nil {
		return nil, err
	}
	if ru != nil {
		res.ServerCPUS = scale.RusageCPU(ru).Seconds()
		res.ServerRSSMB = float64(ru.Maxrss) / 1024 // kB on Linux
	}
	return res, nil
}

// config is the receiver configuration for n round-trip targets, built the
// way the collector builds it from YAML.
func config(srv *scale.Servers, n int, interval, spread time.Duration, security, detection, caFile string) (component.Config, map[string]string, error) {
	smtpAddr, imapAddr := srv.Addr["smtp"], srv.Addr["imap"]
	if security == "tls" {
		smtpAddr, imapAddr = srv.Addr["smtps"], srv.Addr["imaps"]
	}
	endpoint := func(addr string) map[string]any {
		e := map[string]any{"endpoint": addr, "security": security}
		if security != "none" {
			e["tls"] = map[string]any{"ca_file": caFile}
		}
		return e
	}
	accounts := map[string]any{}
	var roundtrip []any
	addrs := map[string]string{}
	for i := range n {
		addr, pw := scale.User(i)
		key := fmt.Sprintf("u%d", i)
		addrs[key] = addr
		accounts[key] = map[string]any{
			"address": addr, "password": pw,
			"smtp": endpoint(smtpAddr), "imap": endpoint(imapAddr),
		}
		roundtrip = append(roundtrip, map[string]any{"account": key})
	}
	raw := map[string]any{
		"collection_interval": interval.String(),
		"start_spread":        spread.String(),
		"initial_delay":       "10ms",
		"delivery_timeout":    "30s",
		"detection":           detection,
		"accounts":            accounts,
		"roundtrip":           roundtrip,
	}
	cfg := emailqosreceiver.NewFactory().CreateDefaultConfig()
	if err := confmap.NewFromStringMap(raw).Unmarshal(cfg); err != nil {
		return nil, nil, err
	}
	if v, ok := cfg.(interface{ Validate() error }); ok {
		if err := v.Validate(); err != nil {
			return nil, nil, err
		}
	}
	return cfg, addrs, nil
}

// analyse counts the probes' outcomes and returns the first probe's start
// and, for each delivered probe, |reported - true delivery latency|. The
// true latency runs from the client reading the 250 reply to DATA (the end
// of its smtp.submit step, where the probe takes its acceptance instant) to
// the instant the server made the message visible.
func analyse(all []ptrace.Traces, addrs map[string]string, srv *scale.Servers, res *Result) (time.Time, []time.Duration) {
	var first time.Time
	var errs []time.Duration
	for _, td := range all {
		for i := range td.ResourceSpans().Len() {
			rs := td.ResourceSpans().At(i)
			target, _ := rs.Resource().Attributes().Get("emailqos.target")
			spans := rs.ScopeSpans().At(0).Spans()
			var root ptrace.Span
			var accepted time.Time
			for j := range spans.Len() {
				sp := spans.At(j)
				switch sp.Name() {
				case "emailqos.probe":
					root = sp
				case steps.SMTPSubmit:
					accepted = sp.EndTimestamp().AsTime()
				}
			}
			if start := root.StartTimestamp().AsTime(); first.IsZero() || start.Before(first) {
				first = start
			}
			if root.Status().Code() == ptrace.StatusCodeError {
				res.Failed[root.Status().Message()]++
				continue
			}
			latency, ok := root.Attributes().Get("emailqos.delivery.latency_ms")
			visible := srv.Visible(addrs[target.Str()])
			if !ok || len(visible) != 1 || accepted.IsZero() {
				res.Failed["unmatched"]++
				continue
			}
			res.Delivered++
			reported := time.Duration(latency.Double() * float64(time.Millisecond))
			e := reported - visible[0].Sub(accepted)
			errs = append(errs, max(e, -e))
		}
	}
	return first, errs
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// report turns JSON lines into the Markdown table of BENCHMARKS.md.
func report(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	if err := fs.Parse(args); err != nil {
		return err
	}
	var rows []Result
	for _, name := range fs.Args() {
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var r Result
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				f.Close()
				return fmt.Errorf("%s: %w", name, err)
			}
			rows = append(rows, r)
		}
		f.Close()
	}
	if len(rows) == 0 {
		return errors.New("no results")
	}
	r0 := rows[0]
	fmt.Fprintf(out, "One collection of N round-trip targets (security %s, mail servers in a %s process), "+
		"CPU share against a %gs interval on %d cores.\n\n", r0.Security, serversWord(r0.Servers), r0.IntervalS, r0.Cores)
	fmt.Fprintln(out, "| N | detection | start_spread s | delivered | failed | wall s | CPU s | CPU / (wall × cores) | CPU / (interval × cores) | peak RSS MB | error median ms | error p99 ms | error max ms | server CPU s | server RSS MB |")
	fmt.Fprintln(out, "|---:|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		failed := "0"
		if len(r.Failed) > 0 {
			var parts []string
			for _, k := range slices.Sorted(maps.Keys(r.Failed)) {
				parts = append(parts, fmt.Sprintf("%d %s", r.Failed[k], k))
			}
			failed = strings.Join(parts, ", ")
		}
		fmt.Fprintf(out, "| %d | %s | %g | %d | %s | %.2f | %.2f | %.1f%% | %.2f%% | %.0f | %.2f | %.2f | %.2f | %.2f | %.0f |\n",
			r.N, r.Detection, r.SpreadS, r.Delivered, failed, r.WallS, r.CPUS,
			100*r.CPUS/(r.WallS*float64(r.Cores)), 100*r.CPUS/(r.IntervalS*float64(r.Cores)),
			r.PeakRSSMB, r.ErrMedianMS, r.ErrP99MS, r.ErrMaxMS, r.ServerCPUS, r.ServerRSSMB)
	}
	return nil
}

func serversWord(s string) string {
	if s == "inproc" {
		return "shared (in-process)"
	}
	return "separate (child)"
}
