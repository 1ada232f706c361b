package emailqosreceiver // import "github.com/emailqos/emailqosreceiver"

// The API of the emailqos-check command (cmd/emailqos-check): load a
// collector configuration, list its targets, probe them once. It lives in
// the receiver package, in this file only, because it must run exactly what
// the receiver runs: the configuration's defaults and validation, the target
// list (Config.targets) and buildTargets are unexported, and an internal
// package between the two would have to export them to both.

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/provider/envprovider"
	"go.opentelemetry.io/collector/confmap/provider/fileprovider"
	"go.uber.org/zap"

	"github.com/emailqos/emailqosreceiver/internal/metadata"
	"github.com/emailqos/emailqosreceiver/internal/probe"
	"github.com/emailqos/emailqosreceiver/internal/safetext"
)

// LoadCollectorConfig reads a collector configuration file the way the
// collector does (${env:VAR}, ${VAR} and ${file:path} resolved), takes the
// emailqos receiver named id ("emailqos" or "emailqos/name"; empty: the only
// one there is), unmarshals it onto the factory's defaults and validates it.
// Errors name the receiver and the field.
func LoadCollectorConfig(ctx context.Context, path, id string) (*Config, string, error) {
	resolver, err := confmap.NewResolver(confmap.ResolverSettings{
		URIs:              []string{"file:" + path},
		ProviderFactories: []confmap.ProviderFactory{fileprovider.NewFactory(), envprovider.NewFactory()},
		DefaultScheme:     "env",
	})
	if err != nil {
		return nil, "", err
	}
	conf, err := resolver.Resolve(ctx)
	if err != nil {
		return nil, "", err
	}
	receivers, err := conf.Sub("receivers")
	if err != nil {
		return nil, "", fmt.Errorf("receivers: %w", err)
	}
	typ := metadata.Type.String()
	var ids []string
	for key := range receivers.ToStringMap() {
		if key == typ || strings.HasPrefix(key, typ+"/") {
			ids = append(ids, key)
		}
	}
	sort.Strings(ids)
	switch {
	case id != "" && !receivers.IsSet(id):
		return nil, "", fmt.Errorf("receivers: no receiver %q (emailqos receivers: %s)", id, listOrNone(ids))
	case id != "" && id != typ && !strings.HasPrefix(id, typ+"/"):
		return nil, "", fmt.Errorf("receivers::%s: not an emailqos receiver", id)
	case id == "" && len(ids) == 0:
		return nil, "", errors.New("receivers: no emailqos receiver configured")
	case id == "" && len(ids) > 1:
		return nil, "", fmt.Errorf("receivers: several emailqos receivers (%s): choose one", strings.Join(ids, ", "))
	case id == "":
		id = ids[0]
	}
	sub, err := receivers.Sub(id)
	if err != nil {
		return nil, id, fmt.Errorf("receivers::%s: %w", id, err)
	}
	cfg := createDefaultConfig().(*Config)
	if err := sub.Unmarshal(cfg); err != nil {
		return nil, id, fmt.Errorf("receivers::%s: %w", id, err)
	}
	if err := confmap.Validate(cfg); err != nil {
		return nil, id, fmt.Errorf("receivers::%s: %w", id, err)
	}
	return cfg, id, nil
}

func listOrNone(ids []string) string {
	if len(ids) == 0 {
		return "none"
	}
	return strings.Join(ids, ", ")
}

// CheckStep is the duration of one step of a checked probe.
type CheckStep struct {
	Step     string
	Duration time.Duration
}

// CheckResult is the outcome of one probe run by Check.
type CheckResult struct {
	Name      string
	Kind      string
	Direction string
	// Total is the whole transaction; DeliveryLatency, Method and
	// Uncertainty are set when Delivered.
	Total           time.Duration
	Delivered       bool
	DeliveryLatency time.Duration
	Method          string
	Uncertainty     time.Duration
	Steps           []CheckStep
	// Code is the error code (0 OK), ErrorType the error.type and Err the
	// failure; errors of the probe engine never carry a secret.
	Code      int
	ErrorType string
	Err       error
	// Transcript is the probe's redacted protocol conversation, for the
	// targets the configuration's transcript section selects.
	Transcript []string
	// Send and Read name what the target sends and reads with ("SMTP",
	// "Graph", "Gmail API"; "IMAP", "POP3", "Graph", "Gmail API"), so that
	// a code's meaning names the sender's and the reader's transports.
	Send, Read string
}

// transportName is the display name of an account's sending (send) or
// reading transport.
func transportName(a *probe.Account, send bool) string {
	v := a.Retrieval
	if send {
		v = a.Send
	}
	switch v {
	case probe.SendGraph:
		return "Graph"
	case probe.SendGmailAPI:
		return "Gmail API"
	case probe.RetrievalPOP3:
		return "POP3"
	}
	if send {
		return "SMTP"
	}
	return "IMAP"
}

// TargetNames lists the targets a validated configuration probes, in the
// order the receiver runs them.
func TargetNames(ctx context.Context, cfg *Config) ([]string, error) {
	targets, err := buildTargets(ctx, cfg, nil)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(targets))
	for i, t := range targets {
		names[i] = t.Name
	}
	return names, nil
}

// Check runs one probe of each selected target (every target when names is
// empty) with the receiver's own engine, concurrently as a collection does,
// and returns their results in the receiver's order. An error means nothing
// ran: an unknown target name, or TLS or OAuth key material that cannot be
// loaded.
func Check(ctx context.Context, cfg *Config, names []string, logger *zap.Logger) ([]CheckResult, error) {
	if logger == nil {
		logger = zap.NewNop()
	}
	// The engine logs server text (errors, folder names): keep it inert.
	logger = safetext.Logger(logger)
	// The token sources and targets as the receiver's start makes them.
	tokens, err := tokenSources(ctx, cfg)
	if err != nil {
		return nil, err
	}
	all, err := buildTargets(ctx, cfg, tokens)
	if err != nil {
		return nil, err
	}
	targets := all
	if len(names) > 0 {
		byName := map[string]*probe.Target{}
		var known []string
		for _, t := range all {
			byName[t.Name] = t
			known = append(known, t.Name)
		}
		targets = nil
		seen := map[string]bool{}
		for _, n := range names {
			t, ok := byName[n]
			if !ok && cfg.targetNames()[n] {
				return nil, fmt.Errorf("target %q belongs to shard::index %d of %d, not to this one (%d): set the shard index to check it",
					n, shardOf(n, cfg.Shard.Count), cfg.Shard.Count, cfg.Shard.Index)
			}
			if !ok {
				return nil, fmt.Errorf("target %q is not configured (targets: %s)", n, strings.Join(known, ", "))
			}
			if !seen[n] {
				seen[n] = true
				targets = append(targets, t)
			}
		}
	}

	results := make([]probe.Result, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Go(func() { results[i] = probe.Run(ctx, t, logger) })
	}
	wg.Wait()

	out := make([]CheckResult, len(results))
	for i, r := range results {
		cr := CheckResult{
			Name:            r.Target.Name,
			Kind:            string(r.Target.Kind),
			Direction:       r.Target.Direction,
			Total:           r.Total,
			Delivered:       r.Delivered,
			DeliveryLatency: r.DeliveryLatency,
			Method:          string(r.Method),
			Uncertainty:     r.Uncertainty,
			Code:            r.Code,
			ErrorType:       r.ErrorType,
			Err:             r.Err,
			Send:            transportName(r.Target.Sender, true),
			Read:            transportName(r.Target.Receiver, false),
		}
		for _, tm := range r.Timings {
			cr.Steps = append(cr.Steps, CheckStep{Step: tm.Step, Duration: tm.Duration})
		}
		if r.Transcript != nil {
			cr.Transcript = r.Transcript.Lines()
		}
		out[i] = cr
	}
	return out, nil
}
