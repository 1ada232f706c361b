package emailqosreceiver // import "github.com/emailqos/emailqosreceiver"

import (
	"context"
	"errors"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
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
		Cleanup: CleanupConfig{
			Mode:          cleanupDelete,
			OrphanAge:     defaultOrphanAge,
			SweepInterval: defaultSweepInterval,
		},
	}
}

func createMetricsReceiver(
	_ context.Context,
	settings receiver.Settings,
	cfg component.Config,
	next consumer.Metrics,
) (receiver.Metrics, error) {
	rCfg, ok := cfg.(*Config)
	if !ok {
		return nil, errConfigNotEmailQoS
	}
	// Probes outlive a scrape's own context only as long as the receiver
	// runs: Shutdown cancels this context first, so a collector stopping in
	// the middle of a probe does not wait for its delivery timeout.
	lifetime, cancel := context.WithCancel(context.Background())
	s := newScraper(rCfg, settings, lifetime)
	sc, err := scraper.NewMetrics(s.scrape, scraper.WithStart(s.start), scraper.WithShutdown(s.shutdown))
	if err != nil {
		cancel()
		return nil, err
	}
	ctrl, err := scraperhelper.NewMetricsController(&rCfg.ControllerConfig, settings, next,
		scraperhelper.AddMetricsScraper(metadata.Type, sc))
	if err != nil {
		cancel()
		return nil, err
	}
	return &emailqosReceiver{Metrics: ctrl, cancel: cancel}, nil
}

// emailqosReceiver cancels in-flight probes before the controller's Shutdown
// waits for the running scrape to return.
type emailqosReceiver struct {
	receiver.Metrics
	cancel context.CancelFunc
}

func (r *emailqosReceiver) Shutdown(ctx context.Context) error {
	r.cancel()
	return r.Metrics.Shutdown(ctx)
}
