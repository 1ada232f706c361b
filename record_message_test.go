package emailqosreceiver

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/emailqos/emailqosreceiver/internal/mailtest"
)

// datapoints lists a metric's data points of one resource.
func datapoints(rm pmetric.ResourceMetrics, name string) []pmetric.NumberDataPoint {
	var out []pmetric.NumberDataPoint
	ms := rm.ScopeMetrics().At(0).Metrics()
	for i := 0; i < ms.Len(); i++ {
		if ms.At(i).Name() != name {
			continue
		}
		dps := ms.At(i).Gauge().DataPoints()
		for j := 0; j < dps.Len(); j++ {
			out = append(out, dps.At(j))
		}
	}
	return out
}

// The receiving server's verdicts and the Received chain of the delivered
// probe become metrics: one auth.result per reported method, and the
// delivery split whose parts add up to the delivery latency.
func TestScrapeReportsWhatTheHeaderSays(t *testing.T) {
	srv := startMail(t, mailtest.Options{
		DeliveryDelay: 30 * time.Millisecond,
		AuthResults:   "spf=pass smtp.mailfrom=a.test; dkim=fail header.d=a.test; dmarc=fail header.from=a.test",
	})
	a := mailAccount(srv, alice, "alice-pw")
	a.AuthServIDs = []string{mailtest.Domain}
	cfg := testConfig(map[string]AccountConfig{"a": a})
	cfg.Roundtrip = []RoundtripConfig{{Account: "a"}}
	s, cancel := newTestScraper(t, cfg)
	defer cancel()

	md, err := s.scrape(context.Background())
	require.NoError(t, err)
	rm := resources(t, md)["a"]
	require.EqualValues(t, 0, attr(rm, "emailqos.error_code").Int())

	verdicts := map[string]string{}
	for _, dp := range datapoints(rm, "emailqos.auth.result") {
		m, _ := dp.Attributes().Get("auth.method")
		r, _ := dp.Attributes().Get("auth.result")
		verdicts[m.Str()] = r.Str()
		assert.EqualValues(t, 1, dp.IntValue())
	}
	assert.Equal(t, map[string]string{"spf": "pass", "dkim": "fail", "dmarc": "fail"}, verdicts,
		"the methods reported, and no series for ARC, which was not")

	latency, ok := gauge(t, rm, "emailqos.delivery.latency")
	require.True(t, ok)
	var delivery float64
	segments := map[string]bool{}
	for _, dp := range datapoints(rm, "emailqos.delivery.segment.duration") {
		seg, _ := dp.Attributes().Get("segment")
		segments[seg.Str()] = true
		assert.GreaterOrEqual(t, dp.DoubleValue(), 0.0, seg.Str())
		if seg.Str() != "submission" {
			delivery += dp.DoubleValue()
		}
	}
	assert.Len(t, segments, 5)
	assert.InDelta(t, latency.DoubleValue(), delivery, 1e-6, "the split adds up to the delivery latency")
	hops, ok := gauge(t, rm, "emailqos.delivery.hops")
	require.True(t, ok)
	assert.EqualValues(t, 1, hops.IntValue(), "the in-process server stamps one Received field")
	_, ok = gauge(t, rm, "emailqos.delivery.clock_skew")
	assert.True(t, ok)
}

// A sender's forged Authentication-Results under an untrusted authserv-id
// gives no verdict.
func TestScrapeIgnoresUntrustedVerdicts(t *testing.T) {
	srv := startMail(t, mailtest.Options{AuthResults: "spf=pass; dkim=pass; dmarc=pass"})
	a := mailAccount(srv, alice, "alice-pw")
	a.AuthServIDs = []string{"mx.other.example"}
	cfg := testConfig(map[string]AccountConfig{"a": a})
	cfg.Roundtrip = []RoundtripConfig{{Account: "a"}}
	s, cancel := newTestScraper(t, cfg)
	defer cancel()
	md, err := s.scrape(context.Background())
	require.NoError(t, err)
	rm := resources(t, md)["a"]
	require.EqualValues(t, 0, attr(rm, "emailqos.error_code").Int())
	assert.Empty(t, datapoints(rm, "emailqos.auth.result"))
}
