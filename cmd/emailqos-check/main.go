// Command emailqos-check runs one probe per target of an otelcol-emailqos
// configuration, with the receiver's own engine, and prints each step's
// duration, the delivery latency and the outcome. It is the quick answer to
// "does this account work" before (or beside) the collector.
//
//	emailqos-check --config /etc/otelcol-emailqos/config.yaml [--receiver emailqos/name] [--target name ...] [--timeout 3m] [--transcript] [--verbose]
//
// Exit status: 0 every probe succeeded, 1 a probe failed, 2 the
// configuration (or the command line) is wrong.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/emailqos/emailqosreceiver"
	"github.com/emailqos/emailqosreceiver/internal/safetext"
)

const (
	exitOK     = 0
	exitFailed = 1
	exitConfig = 2
)

// codeMeaning explains an error code as the README's table does, naming
// the transports the target uses: send is "SMTP", "Graph" or "Gmail API",
// read "IMAP", "POP3", "Graph" or "Gmail API". Over an API, code 3 is a
// sign-in or permission failure (or the API unreachable), not a login.
func codeMeaning(code int, send, read string) string {
	api := func(t string) bool { return t == "Graph" || t == "Gmail API" }
	switch code {
	case -2:
		return "invalid instance"
	case -1:
		return "missing parameters"
	case 0:
		return "OK"
	case 1:
		return send + " connection failure"
	case 2:
		return send + " send failure"
	case 3:
		if api(read) {
			return read + " connection, sign-in or permission failure"
		}
		return read + " connection or login failure"
	case 4:
		return "probe not found within delivery_timeout"
	case 5:
		return "cleanup failure"
	}
	return "unknown code"
}

type multiFlag []string

func (m *multiFlag) String() string { return strings.Join(*m, ",") }

func (m *multiFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*m = append(*m, s)
		}
	}
	return nil
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("emailqos-check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		configPath = fs.String("config", "", "collector configuration file (required)")
		receiverID = fs.String("receiver", "", "the emailqos receiver to use: emailqos or emailqos/name (default: the only one)")
		timeout    = fs.Duration("timeout", 0, "bound of the whole check (default: the receiver's probe timeout)")
		transcript = fs.Bool("transcript", false, "print every probed target's redacted SMTP/IMAP/POP3/API transcript (default: only the targets the configuration's transcript section names)")
		verbose    = fs.Bool("verbose", false, "log the probe engine's messages to stderr at debug level")
		targets    multiFlag
	)
	fs.Var(&targets, "target", "target to probe (repeatable or comma-separated; default: all)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: emailqos-check --config collector.yaml [--receiver emailqos|emailqos/name] [--target name ...] [--timeout d] [--transcript] [--verbose]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitConfig
	}
	if *configPath == "" || fs.NArg() > 0 {
		fs.Usage()
		return exitConfig
	}

	cfg, id, err := emailqosreceiver.LoadCollectorConfig(ctx, *configPath, *receiverID)
	if err != nil {
		fmt.Fprintf(stderr, "emailqos-check: invalid configuration %s:\n%s\n", *configPath, indent(err.Error()))
		return exitConfig
	}
	if *transcript {
		cfg.Transcript.Targets = []string{"*"}
	}
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}

	level := zapcore.InfoLevel
	if *verbose {
		level = zapcore.DebugLevel
	}
	logger := newLogger(stderr, level)
	defer func() { _ = logger.Sync() }()

	fmt.Fprintf(stdout, "emailqos-check: %s, receiver %s\n", *configPath, id)
	results, err := emailqosreceiver.Check(ctx, cfg, targets, logger)
	if err != nil {
		fmt.Fprintf(stderr, "emailqos-check: %s\n", safetext.Escape(err.Error()))
		return exitConfig
	}
	failed := 0
	for _, r := range results {
		printResult(stdout, r)
		if r.Err != nil {
			failed++
		}
	}
	fmt.Fprintf(stdout, "\n%d of %d probes succeeded\n", len(results)-failed, len(results))
	if failed > 0 {
		return exitFailed
	}
	return exitOK
}

func printResult(w io.Writer, r emailqosreceiver.CheckResult) {
	fmt.Fprintf(w, "\n%s (%s %s)\n", r.Name, r.Kind, r.Direction)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, s := range r.Steps {
		fmt.Fprintf(tw, "  %s\t%s\n", s.Step, ms(s.Duration))
	}
	fmt.Fprintf(tw, "  total\t%s\n", ms(r.Total))
	if r.Delivered {
		fmt.Fprintf(tw, "  delivery latency\t%s\t(%s, ±%s)\n", ms(r.DeliveryLatency), r.Method, ms(r.Uncertainty))
	}
	_ = tw.Flush()
	if r.Err == nil {
		fmt.Fprintf(w, "  result: OK (code 0)\n")
	} else {
		fmt.Fprintf(w, "  result: FAILED code %d (%s), error.type %s\n  error: %s\n", r.Code, codeMeaning(r.Code, r.Send, r.Read), r.ErrorType, safetext.Escape(r.Err.Error()))
	}
	if len(r.Transcript) > 0 {
		fmt.Fprintf(w, "  transcript (redacted):\n")
		for _, line := range r.Transcript {
			fmt.Fprintf(w, "    %s\n", safetext.Escape(line))
		}
	}
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
}

// indent indents each line of s, escaped: a configuration error may quote
// a value holding control characters.
func indent(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = "  " + safetext.Escape(l)
	}
	return strings.Join(lines, "\n")
}

func newLogger(w io.Writer, level zapcore.Level) *zap.Logger {
	enc := zap.NewDevelopmentEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	core := zapcore.NewCore(zapcore.NewConsoleEncoder(enc), zapcore.AddSync(w), level)
	return zap.New(core)
}
