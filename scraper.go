package emailqosreceiver // import "github.com/emailqos/emailqosreceiver"

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/receiver"
	"go.uber.org/zap"

	"github.com/emailqos/emailqosreceiver/internal/metadata"
	"github.com/emailqos/emailqosreceiver/internal/oauth"
	"github.com/emailqos/emailqosreceiver/internal/probe"
	"github.com/emailqos/emailqosreceiver/internal/safetext"
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
