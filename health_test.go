package emailqosreceiver

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/config/configopaque"
	"go.opentelemetry.io/collector/config/configtls"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/receiver/receivertest"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/emailqos/emailqosreceiver/internal/mailtest"
	"github.com/emailqos/emailqosreceiver/internal/metadata"
)

// dataPoints returns the data points of the metric name, keyed by the
// value of the data point attribute key.
func dataPoints(t *testing.T, rm pmetric.ResourceMetrics, name, key string) map[string]pmetric.NumberDataPoint {
	t.Helper()
	out := map[string]pmetric.NumberDataPoint{}
	ms := rm.ScopeMetrics().At(0).Metrics()
	for i := 0; i < ms.Len(); i++ {
		if ms.At(i).Name() != name {
			continue
		}
		dps := ms.At(i).Gauge().DataPoints()
		for j := 0; j < dps.Len(); j++ {
			v, ok := dps.At(j).Attributes().Get(key)
			require.True(t, ok, "%s has attribute %s", name, key)
			out[v.Str()] = dps.At(j)
		}
	}
	return out
}

// scrapeLogged runs one collection with a logger whose entries are kept.
func scrapeLogged(t *testing.T, cfg *Config) (pmetric.Metrics, *observer.ObservedLogs) {
	t.Helper()
	require.NoError(t, confmap.Validate(cfg))
	core, logs := observer.New(zap.DebugLevel)
	settings := receivertest.NewNopSettings(metadata.Type)
	settings.Logger = zap.New(core)
	lifetime, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := newScraper(cfg, settings, lifetime)
	require.NoError(t, s.start(context.Background(), componenttest.NewNopHost()))
	md, err := s.scrape(context.Background())
	require.NoError(t, err)
	return md, logs
}

func TestTLSMetrics(t *testing.T) {
	srv := startMail(t, mailtest.Options{TLS: true})
	tlsEP := func(addr, security string) EndpointConfig {
		return EndpointConfig{Endpoint: addr, Security: security,
			TLS: TLSConfig{configtls.ClientConfig{Config: configtls.Config{CAPem: configopaque.String(srv.CACertPEM())}}}}
	}
	a := mailAccount(srv, alice, "alice-pw")
	a.SMTP = tlsEP(srv.SMTPSAddr(), "tls")
	a.IMAP.setEndpoint(tlsEP(srv.IMAPAddr(), "starttls"))
	b := mailAccount(srv, bob, "bob-pw") // plain
	cfg := testConfig(map[string]AccountConfig{"a": a, "b": b})
	cfg.Roundtrip = []RoundtripConfig{{Account: "a"}, {Account: "b"}}

	md, _ := scrapeLogged(t, cfg)
	byTarget := resources(t, md)

	versions := dataPoints(t, byTarget["a"], "emailqos.tls.version", "protocol")
	require.Len(t, versions, 2)
	for _, proto := range []string{"smtp", "imap"} {
		require.Contains(t, versions, proto)
		assert.InDelta(t, 1.3, versions[proto].DoubleValue(), 1e-9, proto)
	}
	left := dataPoints(t, byTarget["a"], "emailqos.tls.certificate.time_left", "protocol")
	require.Len(t, left, 2)
	for _, proto := range []string{"smtp", "imap"} {
		// The mailtest certificate is valid for 7 days from its creation.
		assert.InDelta(t, (7 * 24 * time.Hour).Seconds(), left[proto].DoubleValue(), time.Hour.Seconds(), proto)
	}
	_, hasReply := gauge(t, byTarget["a"], "emailqos.smtp.reply_code")
	assert.False(t, hasReply, "no reply code without an SMTP failure")

	for _, name := range []string{"emailqos.tls.version", "emailqos.tls.certificate.time_left"} {
		_, ok := gauge(t, byTarget["b"], name)
		assert.False(t, ok, "%s only for endpoints that used TLS", name)
	}
}

func TestSMTPReplyCodeMetricAndLog(t *testing.T) {
	srv := startMail(t, mailtest.Options{RejectRcpt: true})
	cfg := testConfig(map[string]AccountConfig{"a": mailAccount(srv, alice, "alice-pw")})
	cfg.Roundtrip = []RoundtripConfig{{Account: "a"}}

	md, logs := scrapeLogged(t, cfg)
	rm := resources(t, md)["a"]
	assert.Equal(t, "rejected", attr(rm, "error.type").Str())
	codes := dataPoints(t, rm, "emailqos.smtp.reply_code", "smtp.enhanced_status")
	require.Len(t, codes, 1)
	require.Contains(t, codes, "5.1.1")
	assert.Equal(t, int64(550), codes["5.1.1"].IntValue())
	assert.Equal(t, 1, codes["5.1.1"].Attributes().Len(), "no free text as an attribute")

	failed := logs.FilterMessage("probe failed").All()
	require.Len(t, failed, 1)
	fields := failed[0].ContextMap()
	assert.EqualValues(t, 550, fields["smtp.reply_code"])
	assert.Equal(t, "5.1.1", fields["smtp.enhanced_status"])
}
