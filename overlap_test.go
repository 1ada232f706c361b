package emailqosreceiver

import (
	"bytes"
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/receiver/receivertest"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/emailqos/emailqosreceiver/internal/faultnet"
	"github.com/emailqos/emailqosreceiver/internal/mailtest"
	"github.com/emailqos/emailqosreceiver/internal/metadata"
)

// sessionProxy counts the IMAP sessions open at once through a faultnet
// proxy. A session is open from the connection's accept until the client
// sends LOGOUT (or the connection ends). LOGOUT is marked before it is
// forwarded, and the client waits for its answer before the probe ends, so
// the next probe's connection is always accepted after the mark: an
// overlap seen here is a real one, not a race of the proxy.
type sessionProxy struct {
	*faultnet.Proxy

	mu       sync.Mutex
	open     int
	maxOpen  int
	sessions int
}

func startSessionProxy(t *testing.T, upstream string) *sessionProxy {
	t.Helper()
	p := &sessionProxy{Proxy: faultnet.ProxyT(t, upstream)}
	require.NoError(t, p.Set(faultnet.Fault{OnConn: p.session}))
	return p
}

func (p *sessionProxy) addr() string { return p.Addr() }

func (p *sessionProxy) stats() (maxOpen, sessions int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.maxOpen, p.sessions
}

// session opens a session at accept; LOGOUT or the connection's end
// closes it, once.
func (p *sessionProxy) session() (func([]byte), func()) {
	p.mu.Lock()
	p.open++
	p.sessions++
	p.maxOpen = max(p.maxOpen, p.open)
	p.mu.Unlock()
	var closed sync.Once
	end := func() {
		closed.Do(func() {
			p.mu.Lock()
			p.open--
			p.mu.Unlock()
		})
	}
	line := func(l []byte) {
		if fields := bytes.Fields(l); len(fields) == 2 && bytes.EqualFold(fields[1], []byte("LOGOUT")) {
			end()
		}
	}
	return line, end
}

// probeResult is one target's reported probe, as the overlap tests read it.
type probeResult struct {
	target  string
	skipped int64
	total   float64
	success int64
	ts      time.Time
}

func probeResults(t *testing.T, md pmetric.Metrics) []probeResult {
	t.Helper()
	var out []probeResult
	for i := 0; i < md.ResourceMetrics().Len(); i++ {
		rm := md.ResourceMetrics().At(i)
		name, ok := rm.Resource().Attributes().Get("emailqos.target")
		if !ok {
			continue
		}
		skipped, ok := gauge(t, rm, "emailqos.collections.skipped")
		require.True(t, ok, "every probe result carries its skipped collections")
		total, _ := gauge(t, rm, "emailqos.roundtrip.duration")
		success, _ := gauge(t, rm, "emailqos.success")
		out = append(out, probeResult{
			target: name.Str(), skipped: skipped.IntValue(), total: total.DoubleValue(),
			success: success.IntValue(), ts: skipped.Timestamp().AsTime(),
		})
	}
	return out
}

// TestCollectionsNeverOverlap runs the receiver from its controller with a
// collection interval shorter than a probe: every collection that finds a
// target's probe still running is skipped for that target and counted, and
// no two probes of a target ever run at once.
func TestCollectionsNeverOverlap(t *testing.T) {
	const interval = 200 * time.Millisecond
	srv := startMail(t, mailtest.Options{DeliveryDelay: 700 * time.Millisecond})
	proxies := map[string]*sessionProxy{}
	accounts := map[string]AccountConfig{}
	for key, user := range map[string][2]string{"a": {alice, "alice-pw"}, "b": {bob, "bob-pw"}} {
		proxies[key] = startSessionProxy(t, srv.IMAPAddr())
		acct := mailAccount(srv, user[0], user[1])
		acct.IMAP.Endpoint = proxies[key].addr()
		accounts[key] = acct
	}
	cfg := testConfig(accounts)
	cfg.CollectionInterval = interval
	cfg.InitialDelay = 0
	cfg.Roundtrip = []RoundtripConfig{{Account: "a"}, {Account: "b"}}
	require.NoError(t, confmap.Validate(cfg))

	core, logs := observer.New(zapcore.WarnLevel)
	// A probe that fails shows why: this test has failed under load with
	// a failed probe and nothing to say what failed.
	t.Cleanup(func() {
		if t.Failed() {
			for _, e := range logs.All() {
				t.Logf("%s %v", e.Message, e.ContextMap())
			}
		}
	})
	settings := receivertest.NewNopSettings(metadata.Type)
	settings.Logger = zap.New(core)
	sink := new(consumertest.MetricsSink)
	rcv, err := NewFactory().CreateMetrics(context.Background(), settings, cfg, sink)
	require.NoError(t, err)
	require.NoError(t, rcv.Start(context.Background(), componenttest.NewNopHost()))
	stopped := false
	defer func() {
		if !stopped {
			assert.NoError(t, rcv.Shutdown(context.Background()))
		}
	}()

	// Until each target reported a few probes; bounded, never timed.
	const want = 3
	deadline := time.Now().Add(30 * time.Second)
	for {
		n := map[string]int{}
		for _, md := range sink.AllMetrics() {
			for _, r := range probeResults(t, md) {
				n[r.target]++
			}
		}
		if n["a"] >= want && n["b"] >= want {
			break
		}
		require.True(t, time.Now().Before(deadline), "probes reported: %v", n)
		time.Sleep(50 * time.Millisecond)
	}
	require.NoError(t, rcv.Shutdown(context.Background()))
	stopped = true

	collections := len(sink.AllMetrics())
	results := map[string][]probeResult{}
	for _, md := range sink.AllMetrics() {
		for _, r := range probeResults(t, md) {
			results[r.target] = append(results[r.target], r)
		}
	}
	for _, key := range []string{"a", "b"} {
		maxOpen, sessions := proxies[key].stats()
		assert.Equal(t, 1, maxOpen, "%s: IMAP sessions open at once", key)
		var reported, skipped int64
		for _, r := range results[key] {
			assert.Equal(t, int64(1), r.success, "%s", key)
			// A probe lasting more than 700 ms spans at least one tick of
			// 200 ms, and the collections it made skip are about as many
			// as the ticks it lasted.
			assert.GreaterOrEqual(t, r.skipped, int64(1), "%s: a probe longer than the interval skips collections", key)
			assert.LessOrEqual(t, float64(r.skipped), r.total/interval.Seconds()+3, "%s: skipped %d for a probe of %.2fs", key, r.skipped, r.total)
			reported++
			skipped += r.skipped
		}
		// Every collection either started a probe of the target or skipped
		// it: what the reported results account for is every collection but
		// those of the probe still running (or not yet reported) at the end.
		accounted := reported + skipped
		assert.LessOrEqual(t, accounted, int64(collections), "%s", key)
		assert.GreaterOrEqual(t, accounted, int64(collections)-12, "%s: %d collections, %d probes, %d skipped", key, collections, reported, skipped)
		assert.GreaterOrEqual(t, sessions, int(reported), "%s", key)
		t.Logf("%s: %d collections, %d probes reported, %d collections skipped, %d IMAP sessions, at most %d at once",
			key, collections, reported, skipped, sessions, maxOpen)
	}

	warned := logs.FilterMessageSnippet("exceeds collection_interval").All()
	require.Len(t, warned, 1, "warned once, at start")
	assert.Contains(t, warned[0].Message, "delivery_timeout")
}

// TestSkippedCollectionIsCarriedOver drives the scraper by hand: a probe
// held by the mail system outlasts its collection, the next collections
// start no probe of its target and report nothing for it, and the
// collection after it ended reports it, stamped with its end, with the
// collections it made skip.
func TestSkippedCollectionIsCarriedOver(t *testing.T) {
	release := make(chan struct{})
	var delivered atomic.Int32
	srv := startMail(t, mailtest.Options{OnDeliver: func(string, []byte) error {
		delivered.Add(1)
		select {
		case <-release:
		case <-time.After(20 * time.Second):
		}
		return nil
	}})
	cfg := testConfig(map[string]AccountConfig{"a": mailAccount(srv, alice, "alice-pw")})
	cfg.CollectionInterval = 200 * time.Millisecond
	cfg.DeliveryTimeout = 10 * time.Second
	cfg.Roundtrip = []RoundtripConfig{{Account: "a"}}
	s, cancel := newTestScraper(t, cfg)
	defer func() {
		cancel()
		assert.NoError(t, s.shutdown(context.Background()))
	}()

	for i := range 3 {
		md, err := s.scrape(context.Background())
		require.NoError(t, err)
		assert.Empty(t, probeResults(t, md), "collection %d: the probe is still running", i+1)
	}
	// Submitted once: the collections that found it running started none.
	waitFor(t, func() bool { return delivered.Load() >= 1 })
	assert.Equal(t, int32(1), delivered.Load())

	close(release)
	ctx, stop := context.WithTimeout(context.Background(), 20*time.Second)
	defer stop()
	require.NoError(t, s.waitIdle(ctx))
	begin := time.Now()
	md, err := s.scrape(context.Background())
	require.NoError(t, err)
	results := probeResults(t, md)
	require.NotEmpty(t, results)
	carried := results[0]
	assert.Equal(t, int64(1), carried.success)
	assert.Equal(t, int64(2), carried.skipped, "collections 2 and 3 were skipped")
	assert.True(t, carried.ts.Before(begin), "stamped with its own end")
	// This collection started the next probe, which may have ended within
	// it too: then it is reported beside, with nothing skipped.
	for _, r := range results[1:] {
		assert.Zero(t, r.skipped)
	}
	require.NoError(t, s.waitIdle(ctx))
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		require.True(t, time.Now().Before(deadline), "condition not met in time")
		time.Sleep(10 * time.Millisecond)
	}
}

func TestOverlapWarning(t *testing.T) {
	for _, tc := range []struct {
		name     string
		interval time.Duration
		timeout  time.Duration
		want     string
	}{
		{"probe fits the interval", 5 * time.Minute, 0, ""},
		{"delivery_timeout and setup budget exceed it", 20 * time.Second, 0, "delivery_timeout (3s) + the 30s allowed for connecting, signing in, sending and cleaning up = 33s exceeds collection_interval (20s)"},
		{"timeout exceeds it", 5 * time.Second, 10 * time.Second, "timeout = 10s exceeds collection_interval (5s)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(map[string]AccountConfig{"a": {
				Address: alice, Password: "pw",
				SMTP: EndpointConfig{Endpoint: "127.0.0.1:1", Security: "none"},
				IMAP: IMAPConfig{Endpoint: "127.0.0.1:1", Security: "none"},
			}})
			cfg.CollectionInterval = tc.interval
			cfg.Timeout = tc.timeout
			cfg.Roundtrip = []RoundtripConfig{{Account: "a"}}
			require.NoError(t, confmap.Validate(cfg))
			core, logs := observer.New(zapcore.WarnLevel)
			settings := receivertest.NewNopSettings(metadata.Type)
			settings.Logger = zap.New(core)
			s := newScraper(cfg, settings, context.Background())
			require.NoError(t, s.start(context.Background(), componenttest.NewNopHost()))
			warned := logs.FilterMessageSnippet("exceeds collection_interval").All()
			if tc.want == "" {
				assert.Empty(t, warned)
				return
			}
			require.Len(t, warned, 1)
			assert.Contains(t, warned[0].Message, tc.want)
		})
	}
}

// start_spread starts each target's probe at its own fixed offset into the
// collection; the wait is not part of what the probe measures.
func TestStartSpread(t *testing.T) {
	srv := startMail(t, mailtest.Options{})
	cfg := testConfig(map[string]AccountConfig{
		"a": mailAccount(srv, alice, "alice-pw"),
		"b": mailAccount(srv, bob, "bob-pw"),
	})
	cfg.Roundtrip = []RoundtripConfig{{Account: "a"}, {Account: "b"}}
	cfg.CollectionInterval = 10 * time.Second
	cfg.StartSpread = 600 * time.Millisecond
	s, cancel := newTestScraper(t, cfg)
	defer cancel()
	traces := new(consumertest.TracesSink)
	s.traces = traces

	begin := time.Now()
	md, err := s.scrape(context.Background())
	end := time.Now()
	require.NoError(t, err)
	res := resources(t, md)
	require.Len(t, res, 2)
	for _, name := range []string{"a", "b"} {
		assert.EqualValues(t, 0, attr(res[name], "emailqos.error_code").Int(), name)
	}
	// The probes' start instants, from their traces' root spans.
	byName := map[string]time.Time{}
	require.Len(t, traces.AllTraces(), 1)
	td := traces.AllTraces()[0]
	for i := 0; i < td.ResourceSpans().Len(); i++ {
		rs := td.ResourceSpans().At(i)
		name, _ := rs.Resource().Attributes().Get("emailqos.target")
		byName[name.Str()] = rs.ScopeSpans().At(0).Spans().At(0).StartTimestamp().AsTime()
	}
	// Two targets over 600ms: the first at once, the second from 300ms on.
	assert.True(t, byName["a"].Before(byName["b"]), "the first target starts first")
	assert.GreaterOrEqual(t, byName["b"].Sub(begin), 300*time.Millisecond, "the second target waits for its offset")
	rt, ok := gauge(t, res["b"], "emailqos.roundtrip.duration")
	require.True(t, ok)
	assert.LessOrEqual(t, rt.DoubleValue(), end.Sub(byName["b"]).Seconds(), "the offset is not part of the measured round trip")
}
