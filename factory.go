package emailqosreceiver // import "github.com/emailqos/emailqosreceiver"

import (
	"context"
	"errors"
	"sync"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/scraper"
	"go.opentelemetry.io/collector/scraper/scraperhelper"

	"github.com/emailqos/emailqosreceiver/internal/metadata"
)

var errConfigNotEmailQoS = errors.New("config was not an emailqos receiver config")

// NewFactory creates a factory for the emailqos receiver.
func NewFactory() receiver.Factory {
	return receiver.NewFactory(
		metadata.Type,
		createDefaultConfig,
		receiver.WithMetrics(createMetricsReceiver, metadata.MetricsStability),
		receiver.WithTraces(createTracesReceiver, metadata.TracesStability),
	)
}

func createDefaultConfig() component.Config {
	cc := scraperhelper.NewDefaultControllerConfig()
	cc.CollectionInterval = defaultCollectionInterval
	return &Config{
		ControllerConfig:     cc,
		MetricsBuilderConfig: metadata.DefaultMetricsBuilderConfig(),
		DeliveryTimeout:      defaultDeliveryTimeout,
		PollInterval:         defaultPollInterval,
		Detection:            detectionAuto,
		PreciseInterval:      defaultPreciseInterval,
		DSN:                  true,
		Cleanup: CleanupConfig{
			Mode:          cleanupDelete,
			OrphanAge:     defaultOrphanAge,
			SweepInterval: defaultSweepInterval,
		},
		Transcript: TranscriptConfig{Lines: defaultTranscriptLines},
		Shard:      ShardConfig{Count: 1},
	}
}

func createMetricsReceiver(
	_ context.Context,
	settings receiver.Settings,
	cfg component.Config,
	next consumer.Metrics,
) (receiver.Metrics, error) {
	return sharedReceiver(cfg, settings, func(r *emailqosReceiver) { r.metrics = next })
}

func createTracesReceiver(
	_ context.Context,
	settings receiver.Settings,
	cfg component.Config,
	next consumer.Traces,
) (receiver.Traces, error) {
	return sharedReceiver(cfg, settings, func(r *emailqosReceiver) { r.traces = next })
}

// sharedReceiver returns the receiver of cfg, shared by its pipelines, with
// one pipeline's consumer set by attach.
func sharedReceiver(cfg component.Config, settings receiver.Settings, attach func(*emailqosReceiver)) (*emailqosReceiver, error) {
	rCfg, ok := cfg.(*Config)
	if !ok {
		return nil, errConfigNotEmailQoS
	}
	r := shared.get(rCfg, settings)
	r.mu.Lock()
	defer r.mu.Unlock()
	attach(r)
	return r, nil
}

// shared holds one receiver per configuration, so that a component used in
// a metrics and a traces pipeline runs each probe once and reports it to
// both. The collector passes the same *Config to both factories of one
// component ID.
var shared = &receivers{byConfig: map[*Config]*emailqosReceiver{}}

type receivers struct {
	mu       sync.Mutex
	byConfig map[*Config]*emailqosReceiver
}

func (rs *receivers) get(cfg *Config, settings receiver.Settings) *emailqosReceiver {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if r, ok := rs.byConfig[cfg]; ok {
		return r
	}
	r := &emailqosReceiver{cfg: cfg, settings: settings, owner: rs}
	rs.byConfig[cfg] = r
	return r
}

func (rs *receivers) drop(cfg *Config) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	delete(rs.byConfig, cfg)
}

// emailqosReceiver runs the probes from a scraper controller and reports them
// as metrics and, when a traces pipeline uses it, as one trace per probe. It
// is started and shut down once, however many pipelines hold it.
type emailqosReceiver struct {
	cfg      *Config
	settings receiver.Settings
	owner    *receivers

	mu      sync.Mutex
	metrics consumer.Metrics
	traces  consumer.Traces
	started bool
	stopped bool
	ctrl    receiver.Metrics
	// cancel ends the probes' lifetime: Shutdown calls it before the
	// controller waits for the running scrape, so a collector stopping in
	// the middle of a probe does not wait for its delivery timeout.
	cancel context.CancelFunc
}

func (r *emailqosReceiver) Start(ctx context.Context, host component.Host) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.started || r.stopped {
		return nil
	}
	next := r.metrics
	if next == nil {
		// A traces-only receiver still needs the controller's loop.
		next, _ = consumer.NewMetrics(func(context.Context, pmetric.Metrics) error { return nil })
	}
	lifetime, cancel := context.WithCancel(context.Background())
	s := newScraper(r.cfg, r.settings, lifetime)
	s.traces = r.traces
	sc, err := scraper.NewMetrics(s.scrape, scraper.WithStart(s.start), scraper.WithShutdown(s.shutdown))
	if err != nil {
		cancel()
		return err
	}
	ctrl, err := scraperhelper.NewMetricsController(&r.cfg.ControllerConfig, r.settings, next,
		scraperhelper.AddMetricsScraper(metadata.Type, sc))
	if err != nil {
		cancel()
		return err
	}
	if err := ctrl.Start(ctx, host); err != nil {
		cancel()
		return err
	}
	r.started, r.ctrl, r.cancel = true, ctrl, cancel
	return nil
}

func (r *emailqosReceiver) Shutdown(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return nil
	}
	r.stopped = true
	r.owner.drop(r.cfg)
	if !r.started {
		return nil
	}
	r.cancel()
	return r.ctrl.Shutdown(ctx)
}
