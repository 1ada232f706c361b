package emailqosreceiver

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/golden"
	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/pdatatest/pmetrictest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/emailqos/emailqosreceiver/internal/mailtest"
	"github.com/emailqos/emailqosreceiver/internal/pop3test"
)

// compareGolden checks a scrape's shape (metrics, attributes, resources)
// against testdata/scraper/<name>; values and timestamps vary from run to
// run and are checked by each test itself. UPDATE_GOLDEN=1 rewrites the file.
func compareGolden(t *testing.T, name string, md pmetric.Metrics) {
	t.Helper()
	expectedFile := filepath.Join("testdata", "scraper", name)
	if os.Getenv("UPDATE_GOLDEN") != "" {
		require.NoError(t, golden.WriteMetrics(t, expectedFile, md))
	}
	expected, err := golden.ReadMetrics(expectedFile)
	require.NoError(t, err)
	require.NoError(t, pmetrictest.CompareMetrics(expected, md,
		pmetrictest.IgnoreMetricValues(),
		pmetrictest.IgnoreTimestamp(),
		pmetrictest.IgnoreStartTimestamp(),
		pmetrictest.IgnoreResourceMetricsOrder(),
		pmetrictest.IgnoreMetricsOrder(),
		pmetrictest.IgnoreMetricDataPointsOrder(),
	))
}

// TestScrapeGoldenFailed: what failed probes emit, one per phase that can
// fail without waiting long: refused at RCPT (code 2, with the SMTP reply
// code), a mailbox sign-in refused (code 3) and a probe never delivered
// (code 4, placement missing).
func TestScrapeGoldenFailed(t *testing.T) {
	rejecting := startMail(t, mailtest.Options{RejectRcpt: true})
	blackhole := startMail(t, mailtest.Options{Blackhole: true})
	// carol can send through one mail system but has no mailbox on the
	// other, where her IMAP sign-in is refused.
	sending := startMail(t, mailtest.Options{Users: []mailtest.User{{Address: carol, Password: "carol-pw"}}})
	other := startMail(t, mailtest.Options{})
	badLogin := mailAccount(sending, carol, "carol-pw")
	badLogin.IMAP = mailAccount(other, carol, "carol-pw").IMAP
	cfg := testConfig(map[string]AccountConfig{
		"rejected": mailAccount(rejecting, alice, "alice-pw"),
		"lost":     mailAccount(blackhole, alice, "alice-pw"),
		"login":    badLogin,
	})
	cfg.DeliveryTimeout = time.Second
	cfg.Roundtrip = []RoundtripConfig{{Account: "rejected"}, {Account: "lost"}, {Account: "login"}}
	s, cancel := newTestScraper(t, cfg)
	defer cancel()

	md, err := s.scrape(context.Background())
	require.NoError(t, err)
	compareGolden(t, "expected_failed.yaml", md)

	byTarget := resources(t, md)
	require.Len(t, byTarget, 3)
	for name, want := range map[string]struct {
		code int64
		typ  string
	}{"rejected": {2, "rejected"}, "login": {3, "auth"}, "lost": {4, "not_found"}} {
		rm := byTarget[name]
		assert.Equal(t, want.code, attr(rm, "emailqos.error_code").Int(), name)
		assert.Equal(t, want.typ, attr(rm, "error.type").Str(), name)
		code, _ := gauge(t, rm, "emailqos.error_code")
		assert.Equal(t, want.code, code.IntValue(), name)
	}
	reply, ok := gauge(t, byTarget["rejected"], "emailqos.smtp.reply_code")
	require.True(t, ok)
	assert.Equal(t, int64(550), reply.IntValue())
	assert.Equal(t, "missing", attr(byTarget["lost"], "emailqos.placement").Str())
}

// TestScrapeGoldenPOP3: a round trip read back over POP3.
func TestScrapeGoldenPOP3(t *testing.T) {
	pop, err := pop3test.Start(pop3test.Options{Users: map[string]string{alice: "alice-pw"}})
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, pop.Close()) })
	srv := startMail(t, mailtest.Options{
		DeliveryDelay: 20 * time.Millisecond,
		OnDeliver: func(rcpt string, msg []byte) error {
			pop.Add(rcpt, msg)
			return errToPOP3
		},
	})
	a := mailAccount(srv, alice, "alice-pw")
	a.Retrieval = retrievalPOP3
	a.IMAP = IMAPConfig{}
	a.POP3 = EndpointConfig{Endpoint: pop.Addr(), Security: "none"}
	cfg := testConfig(map[string]AccountConfig{"a": a})
	cfg.Roundtrip = []RoundtripConfig{{Account: "a"}}
	s, cancel := newTestScraper(t, cfg)
	defer cancel()

	md, err := s.scrape(context.Background())
	require.NoError(t, err)
	compareGolden(t, "expected_pop3.yaml", md)

	rm := resources(t, md)["a"]
	assert.Equal(t, int64(0), attr(rm, "emailqos.error_code").Int())
	lat, ok := gauge(t, rm, "emailqos.delivery.latency")
	require.True(t, ok)
	unc, ok := gauge(t, rm, "emailqos.delivery.uncertainty")
	require.True(t, ok)
	// The 20ms delivery lies within the reported window.
	assert.GreaterOrEqual(t, lat.DoubleValue()+unc.DoubleValue(), 0.015)
	assert.Equal(t, "inbox", attr(rm, "emailqos.placement").Str())
}
