package emailqosreceiver

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/config/configopaque"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/receiver/receivertest"

	"github.com/emailqos/emailqosreceiver/internal/metadata"
)

func configopaqueString(s string) configopaque.String { return configopaque.String(s) }

func TestFactoryDefaults(t *testing.T) {
	f := NewFactory()
	assert.Equal(t, metadata.Type, f.Type())
	cfg := f.CreateDefaultConfig().(*Config)
	require.NoError(t, componenttest.CheckConfigStruct(cfg))
	assert.Equal(t, 5*time.Minute, cfg.CollectionInterval)
	assert.Equal(t, 2*time.Minute, cfg.DeliveryTimeout)
	assert.Equal(t, 10*time.Second, cfg.PollInterval)
	assert.Equal(t, "auto", cfg.Detection)
	assert.Equal(t, "delete", cfg.Cleanup.Mode)
	assert.Equal(t, 24*time.Hour, cfg.Cleanup.OrphanAge)
	assert.Equal(t, time.Hour, cfg.Cleanup.SweepInterval)
	assert.Error(t, confmap.Validate(cfg), "the default config has no targets")
}

func TestFactoryRejectsForeignConfig(t *testing.T) {
	_, err := createMetricsReceiver(context.Background(), receivertest.NewNopSettings(metadata.Type), struct{}{}, consumertest.NewNop())
	assert.ErrorIs(t, err, errConfigNotEmailQoS)
}
