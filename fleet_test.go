package emailqosreceiver

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/confmap"

	"github.com/emailqos/emailqosreceiver/internal/mailtest"
	"github.com/emailqos/emailqosreceiver/internal/probemsg"
)

// plantProbe appends to alice's INBOX a probe of alice's round trip sent at
// sentAt, MACed with the key every collector configured with alice's
// password derives, as another collector (another site) would have left it.
func plantProbe(t *testing.T, srv *mailtest.Server, sentAt time.Time) string {
	t.Helper()
	p, err := probemsg.New(alice, alice, "a", sentAt)
	require.NoError(t, err)
	raw := p.Build(probemsg.DeriveKey([]byte("alice-pw"), alice))
	require.NoError(t, srv.Append(alice, raw, nil))
	return p.Token
}

// inboxTokens lists the probe tokens in alice's INBOX.
func inboxTokens(t *testing.T, srv *mailtest.Server) []string {
	t.Helper()
	msgs, err := srv.Mailbox(alice)
	require.NoError(t, err)
	var tokens []string
	for _, m := range msgs {
		for _, line := range strings.Split(string(m.Raw), "\r\n") {
			if v, ok := strings.CutPrefix(line, probemsg.TokenHeader+": "); ok {
				tokens = append(tokens, v)
			}
		}
	}
	return tokens
}

// Two collectors (two sites) with the same configuration probe the same
// mailbox at the same time, both sweeping at every probe. Each finds only its
// own probe; neither takes the other's probe for its own, counts it as late
// or sweeps it before orphan_age, even a probe of the other's that has long
// missed its delivery_timeout; a probe older than orphan_age is swept once.
func TestTwoCollectorsShareAMailbox(t *testing.T) {
	srv := startMail(t, mailtest.Options{DeliveryDelay: 50 * time.Millisecond})
	cfg := testConfig(map[string]AccountConfig{"a": mailAccount(srv, alice, "alice-pw")})
	cfg.Roundtrip = []RoundtripConfig{{Account: "a"}}
	// The other collector's probes are of the same target, keyed alike:
	// only the token and the send time tell them apart.
	cfg.Cleanup.OrphanAge = time.Minute
	cfg.Cleanup.SweepInterval = time.Millisecond
	require.NoError(t, confmap.Validate(cfg))

	now := time.Now()
	// Sent by the other site well past any probe's wait, not yet an orphan:
	// its collector still looks for it as a late probe.
	young := plantProbe(t, srv, now.Add(-cfg.Cleanup.OrphanAge+15*time.Second))
	// Older than orphan_age: an orphan for whichever collector sweeps first.
	old := plantProbe(t, srv, now.Add(-2*cfg.Cleanup.OrphanAge))

	site1, cancel1 := newTestScraper(t, cfg)
	defer cancel1()
	site2, cancel2 := newTestScraper(t, cfg)
	defer cancel2()

	const rounds = 3
	var mu sync.Mutex
	var swept, late int64
	for range rounds {
		var wg sync.WaitGroup
		for _, s := range []*emailqosScraper{site1, site2} {
			wg.Go(func() {
				md, err := s.scrape(t.Context())
				if !assert.NoError(t, err) {
					return
				}
				rms := resources(t, filterTargets(md))
				if !assert.Len(t, rms, 1) {
					return
				}
				rm := rms["a"]
				assert.Zero(t, attr(rm, "emailqos.error_code").Int(), "error.type %q", attr(rm, "error.type").Str())
				sw, _ := gauge(t, rm, "emailqos.probes.swept")
				lt, _ := gauge(t, rm, "emailqos.probes.late")
				mu.Lock()
				swept += sw.IntValue()
				late += lt.IntValue()
				mu.Unlock()
			})
		}
		wg.Wait()
	}

	// Both collectors may sweep the orphan in the same instant, each
	// counting it (the server expunges it once): at most once each.
	assert.GreaterOrEqual(t, swept, int64(1), "the probe older than orphan_age is swept")
	assert.LessOrEqual(t, swept, int64(2), "only the probe older than orphan_age is swept, at most once per collector")
	assert.Zero(t, late, "neither collector counts the other's probe as its own late one")
	assert.Equal(t, 2*rounds, srv.Deliveries(), "each collector sent one probe per round")
	left := inboxTokens(t, srv)
	assert.Equal(t, []string{young}, left, "the other site's young probe is left alone; every probe measured was cleaned up by its own collector")
	assert.NotContains(t, left, old)
}
