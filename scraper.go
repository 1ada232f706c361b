package emailqosreceiver // import "github.com/emailqos/emailqosreceiver"

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/receiver"
	"go.uber.org/zap"
	"golang.org/x/net/publicsuffix"

	"github.com/emailqos/emailqosreceiver/internal/imapwatch"
	"github.com/emailqos/emailqosreceiver/internal/metadata"
	"github.com/emailqos/emailqosreceiver/internal/oauth"
	"github.com/emailqos/emailqosreceiver/internal/probe"
	"github.com/emailqos/emailqosreceiver/internal/probemsg"
	"github.com/emailqos/emailqosreceiver/internal/safetext"
	"github.com/emailqos/emailqosreceiver/internal/saslx"
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

	// Probes run on their own, so that one outlasting collection_interval
	// holds back neither the collection nor the other targets. mu guards
	// the fields below.
	mu sync.Mutex
	// slots is the state of each target's probe, by index in targets.
	slots []targetSlot
	// pending holds the results not reported yet, in the order they came.
	pending []finished
	// running counts the probes under way; idle is closed when it drops
	// to zero.
	running int
	idle    chan struct{}
	// probes tracks the probe goroutines, for shutdown.
	probes sync.WaitGroup
}

// targetSlot is one target's probe state across collections.
type targetSlot struct {
	running bool
	// skipped counts the collections that found the probe still running
	// and so started none.
	skipped int64
}

// finished is a probe result waiting to be reported.
type finished struct {
	target  int
	res     probe.Result
	skipped int64
	// at is when the probe ended.
	at time.Time
}

// collectShare is the part of collection_interval (in tenths) a collection
// waits for its probes. The rest is left for emitting, so that a collection
// ends before the next tick and the controller's ticker drops none: each
// tick is then one collection, and a skipped collection one missed tick.
const collectShare = 9

type accountToken struct {
	key    string
	source *oauth.Source
}

func newScraper(cfg *Config, settings receiver.Settings, lifetime context.Context) *emailqosScraper {
	return &emailqosScraper{cfg: cfg, settings: settings, logger: safetext.Logger(settings.Logger), lifetime: lifetime}
}

func (s *emailqosScraper) start(ctx context.Context, _ component.Host) error {
	tokens, err := tokenSources(ctx, s.cfg)
	if err != nil {
		return err
	}
	targets, err := buildTargets(ctx, s.cfg, tokens)
	if err != nil {
		return err
	}
	// A shard reports the tokens of its own targets' accounts only, so
	// that a fleet does not report (and fetch) every token N times.
	used := map[string]bool{}
	for _, t := range targets {
		used[t.Sender.Key], used[t.Receiver.Key] = true, true
	}
	for _, key := range sortedKeys(tokens) {
		if s.cfg.Shard.Count <= 1 || used[key] {
			s.tokens = append(s.tokens, accountToken{key: key, source: tokens[key]})
		}
	}
	if s.cfg.Shard.Count > 1 {
		fields := []zap.Field{zap.Int("shard_index", s.cfg.Shard.Index),
			zap.Int("shard_count", s.cfg.Shard.Count), zap.Int("targets", len(targets))}
		if len(targets) == 0 {
			// Fewer targets than replicas, or an unlucky hash: legal, but
			// this replica probes nothing.
			s.logger.Warn("this shard of the fleet has no targets", fields...)
		} else {
			s.logger.Info("shard of a fleet", fields...)
		}
	}
	s.targets = targets
	s.slots = make([]targetSlot, len(targets))
	s.warnOverlap()
	s.warnTargetCount()
	return nil
}

// warnTargetCount warns once when the configuration runs more targets than
// warnTargets: a long mesh grows as the square of its accounts, which is
// easy to miss in the file.
func (s *emailqosScraper) warnTargetCount() {
	if n := len(s.targets); n > warnTargets {
		s.logger.Warn(fmt.Sprintf("%d targets are probed in every collection (more than %d; a mesh of n accounts is n×(n−1) directions): "+
			"check that this many probes is intended, and set start_spread", n, warnTargets),
			zap.Int("targets", n), zap.Int("mesh_accounts", len(s.cfg.Transit.Mesh)))
	}
}

// warnOverlap warns once when a probe may outlast collection_interval, so
// that collections will be skipped for a slow target.
func (s *emailqosScraper) warnOverlap() {
	bound, interval := s.cfg.probeTimeout(), s.cfg.CollectionInterval
	if len(s.targets) == 0 || bound <= interval {
		return
	}
	field := "timeout"
	if s.cfg.Timeout <= 0 {
		field = fmt.Sprintf("delivery_timeout (%s) + the %s allowed for connecting, signing in, sending and cleaning up", s.cfg.DeliveryTimeout, setupBudget)
	}
	s.logger.Warn(fmt.Sprintf("%s = %s exceeds collection_interval (%s): a probe may outlast its collection; "+
		"a target whose probe is still running is not probed again by the next collections, which are counted in emailqos.collections.skipped",
		field, bound, interval),
		zap.Duration("probe_timeout", bound), zap.Duration("collection_interval", interval))
}

// shutdown waits for the probes still running; the receiver has ended
// their lifetime already, so they are ending.
func (s *emailqosScraper) shutdown(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		s.probes.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// scrape starts the probe of every target whose previous probe has ended,
// all concurrently, and waits for the probes for at most 9/10 of
// collection_interval. A target whose probe is still running is skipped:
// one probe of a target at a time, so probes never pile up. A result that
// comes after its collection stopped waiting is reported by the next one,
// stamped with the instant it came, with the number of collections it made
// skip. Each probe is bounded by its own timeout. A failed probe is data,
// not an error.
func (s *emailqosScraper) scrape(ctx context.Context) (pmetric.Metrics, error) {
	begin := time.Now()
	var wctx context.Context
	var cancel context.CancelFunc
	if s.cfg.CollectionInterval > 0 {
		wctx, cancel = context.WithDeadline(ctx, begin.Add(s.cfg.CollectionInterval*collectShare/10))
	} else {
		wctx, cancel = context.WithCancel(ctx)
	}
	defer cancel()
	stop := context.AfterFunc(s.lifetime, cancel)
	defer stop()

	s.startProbes()
	states := make([]tokenState, len(s.tokens))
	var wg sync.WaitGroup
	for i, at := range s.tokens {
		// Bounded like a probe and by the collection's wait, so a hung
		// token endpoint cannot hold the collection past its tick.
		wg.Go(func() {
			tctx, cancel := context.WithTimeout(wctx, s.cfg.probeTimeout())
			defer cancel()
			_, states[i].expiry, states[i].err = at.source.Token(tctx)
		})
	}
	_ = s.waitIdle(wctx)
	wg.Wait()
	done := s.takeFinished()
	results := make([]probe.Result, len(done))
	for i := range done {
		results[i] = done[i].res
	}
	if s.traces != nil {
		if err := s.traces.ConsumeTraces(ctx, buildTraces(s.cfg.ResourceAttributes, results)); err != nil {
			s.logger.Warn("probe traces not delivered", zap.Error(err))
		}
	}

	// A builder per scrape: nothing is shared between collections.
	mb := metadata.NewMetricsBuilder(s.cfg.MetricsBuilderConfig, s.settings)
	now := pcommon.NewTimestampFromTime(time.Now())
	for i := range done {
		ts := now
		if done[i].at.Before(begin) {
			ts = pcommon.NewTimestampFromTime(done[i].at)
		}
		// Recorded before record(), whose EmitForResource takes it along.
		mb.RecordEmailqosCollectionsSkippedDataPoint(ts, done[i].skipped)
		s.record(mb, ts, &results[i])
	}
	for i, at := range s.tokens {
		s.recordToken(mb, now, at.key, states[i])
	}
	return mb.Emit(), nil
}

// startProbes starts a probe of every target that has none running and
// counts a skipped collection for the others.
func (s *emailqosScraper) startProbes() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lifetime.Err() != nil {
		return
	}
	for i, t := range s.targets {
		slot := &s.slots[i]
		if slot.running {
			slot.skipped++
			continue
		}
		slot.running = true
		if s.running == 0 {
			s.idle = make(chan struct{})
		}
		s.running++
		// A fixed offset per target, so each keeps its own phase.
		delay := s.cfg.StartSpread * time.Duration(i) / time.Duration(len(s.targets))
		s.probes.Go(func() { s.finish(i, s.runAfter(delay, t)) })
	}
}

// runAfter runs a probe of t once delay has passed. The wait is not part of
// the probe's measurement; a receiver shutting down during it ends it.
func (s *emailqosScraper) runAfter(delay time.Duration, t *probe.Target) probe.Result {
	if delay > 0 {
		timer := time.NewTimer(delay)
		select {
		case <-timer.C:
		case <-s.lifetime.Done():
			timer.Stop()
		}
	}
	return probe.Run(s.lifetime, t, s.logger)
}

// finish files a probe's result and frees its target for the next probe.
func (s *emailqosScraper) finish(i int, res probe.Result) {
	s.mu.Lock()
	defer s.mu.Unlock()
	slot := &s.slots[i]
	s.pending = append(s.pending, finished{target: i, res: res, skipped: slot.skipped, at: time.Now()})
	slot.running, slot.skipped = false, 0
	s.running--
	if s.running == 0 {
		close(s.idle)
	}
}

// waitIdle waits until no probe is running, or ctx is done.
func (s *emailqosScraper) waitIdle(ctx context.Context) error {
	s.mu.Lock()
	idle, n := s.idle, s.running
	s.mu.Unlock()
	if n == 0 {
		return nil
	}
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// takeFinished hands over the results not reported yet, in target order
// (a target's own in the order they came).
func (s *emailqosScraper) takeFinished() []finished {
	s.mu.Lock()
	done := s.pending
	s.pending = nil
	s.mu.Unlock()
	slices.SortStableFunc(done, func(a, b finished) int { return a.target - b.target })
	return done
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

// unknownName notes a value of the engine that metadata.yaml's enum for
// attr lacks, whose datapoint is therefore not recorded. names_test.go
// keeps the two in step; this is for a build where they drifted.
func (s *emailqosScraper) unknownName(attr, value string) {
	s.logger.Debug("value missing from metadata.yaml, datapoint not recorded",
		zap.String("attribute", attr), zap.String("value", value))
}

func (s *emailqosScraper) record(mb *metadata.MetricsBuilder, now pcommon.Timestamp, r *probe.Result) {
	t := r.Target
	if r.Transcript != nil {
		s.logger.Info("probe transcript", zap.String("target", t.Name), zap.Strings("lines", r.Transcript.Lines()))
	}
	if r.Err != nil {
		fields := []zap.Field{zap.String("target", t.Name), zap.String("direction", t.Direction),
			zap.Int("error_code", r.Code), zap.String("error.type", r.ErrorType), zap.Error(r.Err)}
		if r.SMTPReply.Code != 0 {
			fields = append(fields, zap.Int("smtp.reply_code", r.SMTPReply.Code),
				zap.String("smtp.enhanced_status", r.SMTPReply.Enhanced))
		}
		if r.Transcript != nil {
			fields = append(fields, zap.Strings("transcript", r.Transcript.Last(s.cfg.Transcript.Lines)))
		}
		s.logger.Warn("probe failed", fields...)
	} else {
		s.logger.Debug("probe succeeded",
			zap.String("target", t.Name), zap.String("direction", t.Direction),
			zap.Duration("total", r.Total), zap.Duration("delivery_latency", r.DeliveryLatency),
			zap.String("method", string(r.Method)), zap.String("placement", r.Placement), zap.Int("imap_commands", r.Commands))
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
		} else {
			s.unknownName("method", string(r.Method))
		}
		junk := int64(0)
		if r.Placement == probe.PlacementJunk {
			junk = 1
		}
		mb.RecordEmailqosDeliveryJunkDataPoint(now, junk)
	}
	if r.Commands > 0 {
		mb.RecordEmailqosImapCommandsDataPoint(now, int64(r.Commands))
	}
	mb.RecordEmailqosProbesLateDataPoint(now, int64(r.Late))
	mb.RecordEmailqosProbesSweptDataPoint(now, int64(r.Swept))
	for _, tm := range r.Timings {
		if step, ok := metadata.MapAttributeStep[tm.Step]; ok {
			mb.RecordEmailqosStepDurationDataPoint(now, tm.Duration.Seconds(), step)
		} else {
			s.unknownName("step", tm.Step)
		}
	}
	for _, h := range r.TLS {
		proto, ok := metadata.MapAttributeProtocol[h.Protocol]
		if !ok {
			s.unknownName("protocol", h.Protocol)
			continue
		}
		if v := h.VersionNumber(); v > 0 {
			mb.RecordEmailqosTLSVersionDataPoint(now, v, proto)
		}
		if !h.NotAfter.IsZero() {
			mb.RecordEmailqosTLSCertificateTimeLeftDataPoint(now, h.NotAfter.Sub(now.AsTime()).Seconds(), proto)
		}
	}
	if r.SMTPReply.Code != 0 {
		mb.RecordEmailqosSMTPReplyCodeDataPoint(now, int64(r.SMTPReply.Code), r.SMTPReply.Enhanced)
	}
	recordMessage(mb, now, r)
	if r.Err == nil || r.Deferrals > 0 {
		mb.RecordEmailqosSMTPDeferralsDataPoint(now, int64(r.Deferrals))
	}
	if r.Delivered && r.Deferrals > 0 {
		mb.RecordEmailqosSMTPDeferredDurationDataPoint(now, r.DeferredFor.Seconds())
	}
	mb.RecordEmailqosErrorCodeDataPoint(now, int64(r.Code))
	success := int64(0)
	if r.Err == nil {
		success = 1
	}
	mb.RecordEmailqosSuccessDataPoint(now, success)

	mb.EmitForResource(metadata.WithResource(probeResource(mb.NewResourceBuilder(), r)))
}

// tokenSources makes the OAuth2 token source of every account that signs in
// with OAuth2, keyed by account.
func tokenSources(ctx context.Context, cfg *Config) (map[string]*oauth.Source, error) {
	tokens := map[string]*oauth.Source{}
	for _, key := range sortedKeys(cfg.Accounts) {
		a := cfg.Accounts[key]
		if a.OAuth == nil {
			continue
		}
		src, err := oauth.NewSource(ctx, a.OAuth.engineConfig(), nil)
		if err != nil {
			return nil, fmt.Errorf("accounts::%s::oauth: %w", key, err)
		}
		tokens[key] = src
	}
	return tokens, nil
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
			RetryDeferred:   cfg.RetryDeferred,
			Transcript:      cfg.Transcript.enabled(name),
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
	return cfg.Shard.shardTargets(targets), nil
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
	// Placement: the configured junk folders, else the ones found at login;
	// an explicitly empty list turns it off. POP3 sees no other folder.
	var junk []string
	discoverJunk := retrieval != retrievalPOP3 && a.IMAP.JunkFolders == nil
	if a.IMAP.JunkFolders != nil {
		junk = *a.IMAP.JunkFolders
	}
	return &probe.Account{
		Key:         key,
		Address:     a.Address,
		Credentials: saslx.Credentials{Username: username, Password: string(a.Password)},
		SMTP:        smtpEP,
		IMAP:        imapEP,
		Retrieval:   retrieval,
		POP3:        pop3EP,
		Mailbox:     mailbox,
		Detection:   imapwatch.Method(detection),
		MACKey:      probemsg.DeriveKey(secret, a.Address),
		// What the delivered probe's header is read with.
		AuthServIDs: a.AuthServIDs,
		Domains:     providerDomains(a, smtpEP, imapEP, pop3EP),
		// Sweeps are per mailbox: every target reading it shares the state.
		SweepInterval: cfg.Cleanup.SweepInterval,
		// Where else a probe may land (placement).
		JunkFolders:  junk,
		DiscoverJunk: discoverJunk,
	}, nil
}

// providerDomains are the domains of an account's provider, to tell its
// servers in a Received chain: the configured ones, the address's domain and
// the registrable domains of its endpoints' hosts.
func providerDomains(a AccountConfig, eps ...transport.Endpoint) []string {
	seen := map[string]bool{}
	var out []string
	addDomain := func(d string) {
		d = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(d), "."))
		if d == "" || seen[d] || net.ParseIP(d) != nil {
			return
		}
		seen[d] = true
		out = append(out, d)
	}
	for _, d := range a.Domains {
		addDomain(d)
	}
	if at := strings.LastIndexByte(a.Address, '@'); at >= 0 {
		addDomain(a.Address[at+1:])
	}
	for _, ep := range eps {
		host, _, err := net.SplitHostPort(ep.Address)
		if err != nil || host == "" || net.ParseIP(host) != nil {
			continue
		}
		if d, err := publicsuffix.EffectiveTLDPlusOne(host); err == nil {
			addDomain(d)
		} else {
			addDomain(host)
		}
	}
	return out
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
