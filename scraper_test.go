package emailqosreceiver

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/config/configopaque"
	"go.opentelemetry.io/collector/config/configtls"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/receiver/receivertest"

	"github.com/emailqos/emailqosreceiver/internal/faultnet"
	"github.com/emailqos/emailqosreceiver/internal/mailtest"
	"github.com/emailqos/emailqosreceiver/internal/metadata"
)

const (
	alice = mailtest.Alice
	bob   = mailtest.Bob
	carol = "carol@c.test"
)

// startMail is the one in-process mail system fixture, with alice and bob.
var startMail = mailtest.StartT

func mailAccount(srv *mailtest.Server, addr, password string) AccountConfig {
	return AccountConfig{
		Address:  addr,
		Password: configopaqueString(password),
		SMTP:     EndpointConfig{Endpoint: srv.SMTPAddr(), Security: "none"},
		IMAP:     IMAPConfig{Endpoint: srv.IMAPAddr(), Security: "none"},
	}
}

func testConfig(accounts map[string]AccountConfig) *Config {
	cfg := createDefaultConfig().(*Config)
	cfg.DeliveryTimeout = 3 * time.Second
	cfg.PollInterval = 100 * time.Millisecond
	cfg.Accounts = accounts
	return cfg
}

func newTestScraper(t *testing.T, cfg *Config) (*emailqosScraper, context.CancelFunc) {
	t.Helper()
	require.NoError(t, confmap.Validate(cfg))
	lifetime, cancel := context.WithCancel(context.Background())
	s := newScraper(cfg, receivertest.NewNopSettings(metadata.Type), lifetime)
	require.NoError(t, s.start(context.Background(), componenttest.NewNopHost()))
	return s, cancel
}

// resources indexes the scraped resources by target name.
func resources(t *testing.T, md pmetric.Metrics) map[string]pmetric.ResourceMetrics {
	t.Helper()
	out := map[string]pmetric.ResourceMetrics{}
	for i := 0; i < md.ResourceMetrics().Len(); i++ {
		rm := md.ResourceMetrics().At(i)
		name, ok := rm.Resource().Attributes().Get("emailqos.target")
		require.True(t, ok)
		out[name.Str()] = rm
	}
	return out
}

func gauge(t *testing.T, rm pmetric.ResourceMetrics, name string) (pmetric.NumberDataPoint, bool) {
	t.Helper()
	ms := rm.ScopeMetrics().At(0).Metrics()
	for i := 0; i < ms.Len(); i++ {
		if ms.At(i).Name() == name {
			return ms.At(i).Gauge().DataPoints().At(0), true
		}
	}
	return pmetric.NewNumberDataPoint(), false
}

func attr(rm pmetric.ResourceMetrics, key string) pcommon.Value {
	v, _ := rm.Resource().Attributes().Get(key)
	return v
}

func TestScrapeGolden(t *testing.T) {
	// No two targets read the same mailbox, so that each sees only its own
	// arrival announced over IDLE and the golden file is deterministic.
	// Account c uses TLS (implicit for SMTP, STARTTLS for IMAP), so that
	// b:c reports the IMAP handshake and c:b the SMTP one.
	srv := startMail(t, mailtest.Options{
		DeliveryDelay: 20 * time.Millisecond,
		Users:         []mailtest.User{{Address: carol, Password: "carol-pw"}},
		TLS:           true,
	})
	c := mailAccount(srv, carol, "carol-pw")
	ca := TLSConfig{configtls.ClientConfig{Config: configtls.Config{CAPem: configopaque.String(srv.CACertPEM())}}}
	c.SMTP = EndpointConfig{Endpoint: srv.SMTPSAddr(), Security: "tls", TLS: ca}
	c.IMAP.setEndpoint(EndpointConfig{Endpoint: srv.IMAPAddr(), Security: "starttls", TLS: ca})
	cfg := testConfig(map[string]AccountConfig{
		"a": mailAccount(srv, alice, "alice-pw"),
		"b": mailAccount(srv, bob, "bob-pw"),
		"c": c,
	})
	cfg.Roundtrip = []RoundtripConfig{{Account: "a"}}
	cfg.Transit.Directions = []string{"b:c", "c:b"}
	// One session per probe: with the default shared session, b:c and the
	// bounce watch of c:b share c's mailbox, and which of them logs in
	// (and reports the IMAP connect steps) is a race.
	for k, a := range cfg.Accounts {
		a.ShareSession = new(bool)
		cfg.Accounts[k] = a
	}
	s, cancel := newTestScraper(t, cfg)
	defer cancel()

	md, err := s.scrape(context.Background())
	require.NoError(t, err)

	compareGolden(t, "expected.yaml", md)

	// The values the golden comparison ignores: plausible and consistent.
	byTarget := resources(t, md)
	require.Len(t, byTarget, 3)
	for name, rm := range byTarget {
		code, ok := gauge(t, rm, "emailqos.error_code")
		require.True(t, ok)
		assert.Zero(t, code.IntValue(), name)
		ok1, _ := gauge(t, rm, "emailqos.success")
		assert.Equal(t, int64(1), ok1.IntValue(), name)
		lat, ok := gauge(t, rm, "emailqos.delivery.latency")
		require.True(t, ok, name)
		total := "emailqos.transit.duration"
		if attr(rm, "emailqos.probe.kind").Str() == "roundtrip" {
			total = "emailqos.roundtrip.duration"
		}
		tot, ok := gauge(t, rm, total)
		require.True(t, ok, name)
		assert.Greater(t, tot.DoubleValue(), lat.DoubleValue(), name)
		assert.GreaterOrEqual(t, lat.DoubleValue(), 0.015, name)
	}
	assert.Equal(t, "c", attr(byTarget["b:c"], "emailqos.receiver").Str())
	assert.Equal(t, "b:c", attr(byTarget["b:c"], "emailqos.direction").Str())
	assert.Equal(t, "transit", attr(byTarget["c:b"], "emailqos.probe.kind").Str())
}

func TestFailedProbeStillEmits(t *testing.T) {
	srv := startMail(t, mailtest.Options{RejectRcpt: true})
	cfg := testConfig(map[string]AccountConfig{"a": mailAccount(srv, alice, "alice-pw")})
	cfg.Roundtrip = []RoundtripConfig{{Account: "a"}}
	s, cancel := newTestScraper(t, cfg)
	defer cancel()

	md, err := s.scrape(context.Background())
	require.NoError(t, err, "a failed probe is data, not a scrape error")
	rm := resources(t, md)["a"]
	assert.Equal(t, int64(2), attr(rm, "emailqos.error_code").Int())
	assert.Equal(t, "rejected", attr(rm, "error.type").Str())
	code, _ := gauge(t, rm, "emailqos.error_code")
	assert.Equal(t, int64(2), code.IntValue())
	succ, _ := gauge(t, rm, "emailqos.success")
	assert.Zero(t, succ.IntValue())
	_, hasLatency := gauge(t, rm, "emailqos.delivery.latency")
	assert.False(t, hasLatency, "no latency is reported for a message that was not delivered")
}

func TestHungTargetDoesNotHoldOthers(t *testing.T) {
	srv := startMail(t, mailtest.Options{})
	hung := mailAccount(srv, bob, "bob-pw")
	hung.IMAP.Endpoint = faultnet.BlackHole(t)
	cfg := testConfig(map[string]AccountConfig{"a": mailAccount(srv, alice, "alice-pw"), "hung": hung})
	cfg.DeliveryTimeout = time.Second
	cfg.Timeout = 2 * time.Second
	cfg.Roundtrip = []RoundtripConfig{{Account: "a"}, {Account: "hung"}}
	s, cancel := newTestScraper(t, cfg)
	defer cancel()

	start := time.Now()
	md, err := s.scrape(context.Background())
	require.NoError(t, err)
	assert.Less(t, time.Since(start), cfg.Timeout+time.Second, "the scrape waits at most for the hung target's timeout")
	byTarget := resources(t, md)
	assert.Equal(t, int64(0), attr(byTarget["a"], "emailqos.error_code").Int())
	assert.Equal(t, int64(3), attr(byTarget["hung"], "emailqos.error_code").Int())
	assert.Equal(t, "timeout", attr(byTarget["hung"], "error.type").Str())
}

func TestIMAPStoppedMidProbeOthersUnaffected(t *testing.T) {
	good := startMail(t, mailtest.Options{})
	bad := startMail(t, mailtest.Options{Blackhole: true})
	cfg := testConfig(map[string]AccountConfig{
		"good": mailAccount(good, alice, "alice-pw"),
		"bad":  mailAccount(bad, alice, "alice-pw"),
	})
	cfg.DeliveryTimeout = 2 * time.Second
	cfg.Roundtrip = []RoundtripConfig{{Account: "good"}, {Account: "bad"}}
	s, cancel := newTestScraper(t, cfg)
	defer cancel()

	time.AfterFunc(500*time.Millisecond, bad.StopIMAP)
	start := time.Now()
	md, err := s.scrape(context.Background())
	require.NoError(t, err)
	assert.Less(t, time.Since(start), cfg.DeliveryTimeout+time.Second)
	byTarget := resources(t, md)
	assert.Equal(t, int64(0), attr(byTarget["good"], "emailqos.error_code").Int())
	assert.Contains(t, []int64{3, 4}, attr(byTarget["bad"], "emailqos.error_code").Int())
}

func TestShutdownMidProbe(t *testing.T) {
	// The server accepts the probe and drops it, so the probe waits.
	accepted := make(chan struct{})
	var once sync.Once
	srv := startMail(t, mailtest.Options{OnDeliver: func(string, []byte) error {
		once.Do(func() { close(accepted) })
		return errors.New("dropped")
	}})
	cfg := testConfig(map[string]AccountConfig{"a": mailAccount(srv, alice, "alice-pw")})
	cfg.DeliveryTimeout = time.Minute
	cfg.InitialDelay = 0
	cfg.CollectionInterval = time.Hour
	cfg.Roundtrip = []RoundtripConfig{{Account: "a"}}
	require.NoError(t, confmap.Validate(cfg))

	sink := new(consumertest.MetricsSink)
	rcv, err := NewFactory().CreateMetrics(context.Background(), receivertest.NewNopSettings(metadata.Type), cfg, sink)
	require.NoError(t, err)
	require.NoError(t, rcv.Start(context.Background(), componenttest.NewNopHost()))
	select {
	case <-accepted:
	case <-time.After(10 * time.Second):
		t.Fatal("the probe was never submitted")
	}

	start := time.Now()
	require.NoError(t, rcv.Shutdown(context.Background()))
	assert.Less(t, time.Since(start), 3*time.Second, "shutdown does not wait for the delivery timeout")
}

func TestOAuthTokenState(t *testing.T) {
	for _, tc := range []struct {
		name      string
		status    int
		body      string
		wantValid int64
		wantType  string
	}{
		{"token acquired", 200, `{"access_token":"tok-123","token_type":"Bearer","expires_in":3600}`, 1, ""},
		{"client secret revoked", 400, `{"error":"invalid_client"}`, 0, "token_rejected"},
		{"wrong scope", 400, `{"error":"invalid_scope"}`, 0, "token_scope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			endpoint := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
			}))
			defer endpoint.Close()
			srv := startMail(t, mailtest.Options{})
			acct := mailAccount(srv, alice, "")
			acct.OAuth = &OAuthConfig{Provider: "client_credentials", ClientID: "app", ClientSecret: "s3cret-client", TokenURL: endpoint.URL}
			cfg := testConfig(map[string]AccountConfig{"o365": acct})
			cfg.DeliveryTimeout = time.Second
			cfg.Roundtrip = []RoundtripConfig{{Account: "o365"}}
			s, cancel := newTestScraper(t, cfg)
			defer cancel()

			md, err := s.scrape(context.Background())
			require.NoError(t, err)
			var found bool
			for i := 0; i < md.ResourceMetrics().Len(); i++ {
				rm := md.ResourceMetrics().At(i)
				if attr(rm, "emailqos.account").Str() != "o365" {
					continue
				}
				found = true
				valid, ok := gauge(t, rm, "emailqos.oauth.token.valid")
				require.True(t, ok)
				assert.Equal(t, tc.wantValid, valid.IntValue())
				expiry, _ := gauge(t, rm, "emailqos.oauth.token.expiry")
				if tc.wantValid == 1 {
					assert.InDelta(t, 3600, expiry.DoubleValue(), 60)
				} else {
					assert.Zero(t, expiry.DoubleValue())
				}
				assert.Equal(t, tc.wantType, attr(rm, "error.type").Str())
			}
			assert.True(t, found, "the token state is reported")
			// The probe itself cannot sign in to a server without XOAUTH2,
			// and says so; a token failure is reported with its own type.
			probeRes := resources(t, filterTargets(md))["o365"]
			if tc.wantType != "" {
				assert.Equal(t, tc.wantType, attr(probeRes, "error.type").Str())
			}
		})
	}
}

// filterTargets keeps the probe resources (those with a target).
func filterTargets(md pmetric.Metrics) pmetric.Metrics {
	out := pmetric.NewMetrics()
	md.CopyTo(out)
	out.ResourceMetrics().RemoveIf(func(rm pmetric.ResourceMetrics) bool {
		_, ok := rm.Resource().Attributes().Get("emailqos.target")
		return !ok
	})
	return out
}
