package emailqosreceiver

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/emailqos/emailqosreceiver/internal/mailtest"
)

// Issue 17: an IMAP IDLE that never announces (mailtest's fakeidle, like
// Cyrus without idled) is reported as data, emailqos.imap.idle.silent 1,
// once two arrivals it kept quiet about show it; before that, and for a
// server whose IDLE pushes, 0.
func TestIdleSilentMetric(t *testing.T) {
	for _, tc := range []struct {
		name        string
		personality mailtest.Personality
		want        []int64
	}{
		{"fakeidle", mailtest.PersonalityFakeIdle, []int64{0, 1}},
		{"pushing", "", []int64{0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startMail(t, mailtest.Options{Personality: tc.personality, DeliveryDelay: 20 * time.Millisecond})
			a := mailAccount(srv, alice, "alice-pw")
			a.Detection = "idle"
			cfg := testConfig(map[string]AccountConfig{"a": a})
			// IDLE is re-issued this often: a silent one shows the
			// arrival then, having kept quiet for more than 2s.
			cfg.PollInterval = 2500 * time.Millisecond
			cfg.DeliveryTimeout = 10 * time.Second
			cfg.Roundtrip = []RoundtripConfig{{Account: "a"}}
			s, cancel := newTestScraper(t, cfg)
			defer cancel()
			for i, want := range tc.want {
				md, err := s.scrape(context.Background())
				require.NoError(t, err)
				rm := resources(t, md)["a"]
				ok1, _ := gauge(t, rm, "emailqos.success")
				require.Equal(t, int64(1), ok1.IntValue(), "collection %d", i+1)
				lat, _ := gauge(t, rm, "emailqos.delivery.latency")
				unc, _ := gauge(t, rm, "emailqos.delivery.uncertainty")
				t.Logf("collection %d: latency %.3fs ±%.3fs", i+1, lat.DoubleValue(), unc.DoubleValue())
				silent, found := gauge(t, rm, "emailqos.imap.idle.silent")
				require.True(t, found, "collection %d", i+1)
				assert.Equal(t, want, silent.IntValue(), "collection %d", i+1)
			}
		})
	}
}
