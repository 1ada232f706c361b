package emailqosreceiver // import "github.com/emailqos/emailqosreceiver"

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/receiver"
	"go.uber.org/zap"

	"github.com/emailqos/emailqosreceiver/internal/imapwatch"
	"github.com/emailqos/emailqosreceiver/internal/metadata"
	"github.com/emailqos/emailqosreceiver/internal/oauth"
	"github.com/emailqos/emailqosreceiver/internal/probe"
	"github.com/emailqos/emailqosreceiver/internal/probemsg"
	"github.com/emailqos/emailqosreceiver/internal/steps"
	"github.com/emailqos/emailqosreceiver/internal/transport"
)

type emailqosScraper struct {
	cfg      *Config
	settings receiver.Settings
	logger   *zap.Logger
	// lifetime ends when the receiver shuts down; probes derive from it.
	lifetime context.Context
	targets  []*probe.Target
	// tokens are the OAuth2 token sources of the accounts that use OAuth.
	tokens []accountToken
	// traces, when set, receives a trace per probe beside the metrics.
	traces consumer.Traces
}

type accountToken struct {
	key    string
	source *oauth.Source
}

func newScraper(cfg *Config, settings receiver.Settings, lifetime context.Context) *emailqosScraper {
	return &emailqosScraper{cfg: cfg, settings: settings, logger: settings.Logger, lifetime: lifetime}
}

func (s *emailqosScraper) start(ctx context.Context, _ component.Host) error {
	tokens := map[string]*oauth.Source{}
	for _, key := range sortedKeys(s.cfg.Accounts) {
		a := s.cfg.Accounts[key]
		if a.OAuth == nil {
			continue
		}
		src, err := oauth.NewSource(ctx, a.OAuth.engineConfig(), nil)
		if err != nil {
			return fmt.Errorf("accounts::%s::oauth: %w", key, err)
		}
		tokens[key] = src
		s.tokens = append(s.tokens, accountToken{key: key, source: src})
	}
	targets, err := buildTargets(ctx, s.cfg, tokens)
	if err != nil {
		return err
	}
	s.targets = targets
	return nil
}

func (s *emailqosScraper) shutdown(context.Context) error { return nil }

// scrape runs every target's probe concurrently and waits for all of them;
// each is bounded by its own timeout, so a hung server delays the others'
// results by at most that timeout. A failed probe is data, not an error.
func (s *emailqosScraper) scrape(ctx context.Context) (pmetric.Metrics, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.lifetime, cancel)
	defer stop()

	results := make([]probe.Result, len(s.targets))
	states := make([]tokenState, len(s.tokens))
	var wg sync.WaitGroup
	for i, t := range s.targets {
		wg.Go(func() { results[i] = probe.Run(ctx, t, s.logger) })
	}
	for i, at := range s.tokens {
		// Bounded like a probe, so a hung token endpoint cannot hold the
		// scrape longer than the probes it runs beside.
		wg.Go(func() {
			tctx, cancel := context.WithTimeout(ctx, s.cfg.probeTimeout())
			defer cancel()
			_, states[i].expiry, states[i].err = at.source.Token(tctx)
		})
	}
	wg.Wait()
	if s.traces != nil {
		if err := s.traces.ConsumeTraces(ctx, buildTraces(s.cfg.ResourceAttributes, results)); err != nil {
			s.logger.Warn("probe traces not delivered", zap.Error(err))
		}
	}

	// A builder per scrape: nothing is shared between collections.
	mb := metadata.NewMetricsBuilder(s.cfg.MetricsBuilderConfig, s.settings)
	now := pcommon.NewTimestampFromTime(time.Now())
	for i := range results {
		s.record(mb, now, &results[i])
	}
	for i, at := range s.tokens {
		s.recordToken(mb, now, at.key, states[i])
	}
	return mb.Emit(), nil
}

// tokenState is what asking an account's token source gave in a scrape.
type tokenState struct {
	expiry time.Time
	err    error
}

// recordToken reports an OAuth account's token state, the counterpart of
// LogicMonitor's Office365_Email_OAUTH DataSource. The token is cached and
// shared with the probes, so the endpoint is asked only when it is due.
func (s *emailqosScraper) recordToken(mb *metadata.MetricsBuilder, now pcommon.Timestamp, key string, st tokenState) {
	valid, left, errType := int64(1), time.Until(st.expiry).Seconds(), ""
	if st.err != nil {
		valid, left, errType = 0, 0, tokenErrorType(st.err)
		s.logger.Warn("oauth token unavailable", zap.String("account", key), zap.String("error.type", errType), zap.Error(st.err))
	}
	mb.RecordEmailqosOauthTokenValidDataPoint(now, valid)
	mb.RecordEmailqosOauthTokenExpiryDataPoint(now, max(left, 0))
	rb := mb.NewResourceBuilder()
	rb.SetEmailqosAccount(key)
	rb.SetErrorType(errType)
	mb.EmitForResource(metadata.WithResource(rb.Emit()))
}

// tokenErrorType maps a token failure to its error type.
func tokenErrorType(err error) string {
	var oe *oauth.Error
	if errors.As(err, &oe) && oe.Type != "" {
		return oe.Type
	}
	return steps.TypeTokenUnavailable
}

func (s *emailqosScraper) record(mb *metadata.MetricsBuilder, now pcommon.Timestamp, r *probe.Result) {
	t := r.Target
	if r.Err != nil {
		s.logger.Warn("probe failed",
			zap.String("target", t.Name), zap.String("direction", t.Direction),
			zap.Int("error_code", r.Code), zap.String("error.type", r.ErrorType), zap.Error(r.Err))
	} else {
		s.logger.Debug("probe succeeded",
			zap.String("target", t.Name), zap.String("direction", t.Direction),
			zap.Duration("total", r.Total), zap.Duration("delivery_latency", r.DeliveryLatency),
			zap.String("method", string(r.Method)), zap.Int("imap_commands", r.Commands))
	}

	if t.Kind == probe.Roundtrip {
		mb.RecordEmailqosRoundtripDurationDataPoint(now, r.Total.Seconds())
	} else {
		mb.RecordEmailqosTransitDurationDataPoint(now, r.Total.Seconds())
	}
	if r.Delivered {
		mb.RecordEmailqosDeliveryLatencyDataPoint(now, r.DeliveryLatency.Seconds())
		if method, ok := metadata.MapAttributeMethod[string(r.Method)]; ok {
			mb.RecordEmailqosDeliveryUncertaintyDataPoint(now, r.Uncertainty.Seconds(), method)
		}
	}
	if r.Commands > 0 {
		mb.RecordEmailqosImapCommandsDataPoint(now, int64(r.Commands))
	}
	mb.RecordEmailqosProbesLateDataPoint(now, int64(r.Late))
	mb.RecordEmailqosProbesSweptDataPoint(now, int64(r.Swept))
	for _, tm := range r.Timings {
		if step, ok := metadata.MapAttributeStep[tm.Step]; ok {
			mb.RecordEmailqosStepDurationDataPoint(now, tm.Duration.Seconds(), step)
		}
	}
	mb.RecordEmailqosErrorCodeDataPoint(now, int64(r.Code))
	success := int64(0)
	if r.Err == nil {
		success = 1
	}
	mb.RecordEmailqosSuccessDataPoint(now, success)

	mb.EmitForResource(metadata.WithResource(probeResource(mb.NewResourceBuilder(), r)))
}

// buildTargets turns the validated configuration into the engine's targets,
// loading TLS material once at start.
func buildTargets(ctx context.Context, cfg *Config, tokens map[string]*oauth.Source) ([]*probe.Target, error) {
	accounts := map[string]*probe.Account{}
	for _, key := range sortedKeys(cfg.Accounts) {
		acct, err := buildAccount(ctx, cfg, key, cfg.Accounts[key])
		if err != nil {
			return nil, err
		}
		if src := tokens[key]; src != nil {
			acct.Token = func(ctx context.Context) (string, error) {
				tok, _, err := src.Token(ctx)
				return tok, err
			}
			acct.TokenType = tokenErrorType
			acct.Mechanism = cfg.Accounts[key].OAuth.Mechanism
		}
		accounts[key] = acct
	}
	timeout := cfg.probeTimeout()
	newTarget := func(name string, kind probe.Kind, sender, receiver string) *probe.Target {
		return &probe.Target{
			Name:            name,
			Kind:            kind,
			Sender:          accounts[sender],
			Receiver:        accounts[receiver],
			Direction:       sender + ":" + receiver,
			DeliveryTimeout: cfg.DeliveryTimeout,
			PollInterval:    cfg.PollInterval,
			PreciseInterval: cfg.PreciseInterval,
			Timeout:         timeout,
			Cleanup:         probe.Cleanup(cfg.Cleanup.Mode),
			CleanupFolder:   cfg.Cleanup.Folder,
			OrphanAge:       cfg.Cleanup.OrphanAge,
		}
	}
	var targets []*probe.Target
	for _, rt := range cfg.Roundtrip {
		targets = append(targets, newTarget(rt.targetName(), probe.Roundtrip, rt.Account, rt.Account))
	}
	seen := map[string]bool{}
	addTransit := func(sender, receiver string) {
		dir := sender + ":" + receiver
		if seen[dir] {
			return
		}
		seen[dir] = true
		targets = append(targets, newTarget(dir, probe.Transit, sender, receiver))
	}
	for _, dir := range cfg.Transit.Directions {
		sender, receiver, _ := strings.Cut(dir, ":")
		addTransit(sender, receiver)
	}
	for _, sender := range cfg.Transit.Mesh {
		for _, receiver := range cfg.Transit.Mesh {
			if sender != receiver {
				addTransit(sender, receiver)
			}
		}
	}
	return targets, nil
}

func buildAccount(ctx context.Context, cfg *Config, key string, a AccountConfig) (*probe.Account, error) {
	smtpEP, err := buildEndpoint(ctx, a.SMTP, smtpPorts)
	if err != nil {
		return nil, fmt.Errorf("accounts::%s::smtp::tls: %w", key, err)
	}
	var imapEP, pop3EP transport.Endpoint
	retrieval := a.Retrieval
	if retrieval == retrievalPOP3 {
		if pop3EP, err = buildEndpoint(ctx, a.POP3, pop3Ports); err != nil {
			return nil, fmt.Errorf("accounts::%s::pop3::tls: %w", key, err)
		}
	} else {
		retrieval = retrievalIMAP
		if imapEP, err = buildEndpoint(ctx, a.IMAP.EndpointConfig, imapPorts); err != nil {
			return nil, fmt.Errorf("accounts::%s::imap::tls: %w", key, err)
		}
	}
	username := a.Username
	if username == "" {
		username = a.Address
	}
	mailbox := a.IMAP.Mailbox
	if mailbox == "" {
		mailbox = defaultMbox
	}
	detection := a.Detection
	if detection == "" {
		detection = cfg.Detection
	}
	// The MAC key is tied to the receiving mailbox, so any sender of this
	// collector produces probes that mailbox's reader can verify. Without a
	// password, the OAuth client secret or refresh token keys it.
	secret := []byte(cfg.ProbeSecret)
	if len(secret) == 0 {
		secret = []byte(a.Password)
	}
	if len(secret) == 0 && a.OAuth != nil {
		secret = []byte(string(a.OAuth.ClientSecret) + string(a.OAuth.RefreshToken) + a.OAuth.ClientID + a.OAuth.PrivateKeyFile + a.OAuth.ServiceAccountKeyFile)
	}
	return &probe.Account{
		Key:       key,
		Address:   a.Address,
		Username:  username,
		Password:  string(a.Password),
		SMTP:      smtpEP,
		IMAP:      imapEP,
		Retrieval: retrieval,
		POP3:      pop3EP,
		Mailbox:   mailbox,
		Detection: imapwatch.Method(detection),
		MACKey:    probemsg.DeriveKey(secret, a.Address),
		// Sweeps are per mailbox: every target reading it shares the state.
		SweepInterval: cfg.Cleanup.SweepInterval,
	}, nil
}

func buildEndpoint(ctx context.Context, e EndpointConfig, ports map[string]int) (transport.Endpoint, error) {
	addr, security := e.resolve(ports)
	ep := transport.Endpoint{Address: addr, Security: transport.Security(security)}
	if security == securityNone {
		return ep, nil
	}
	tlsCfg, err := e.TLS.LoadTLSConfig(ctx)
	if err != nil {
		return ep, err
	}
	ep.TLSConfig = tlsCfg
	return ep, nil
}
