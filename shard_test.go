package emailqosreceiver

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/receiver/receivertest"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/emailqos/emailqosreceiver/internal/mailtest"
	"github.com/emailqos/emailqosreceiver/internal/metadata"
)

func TestShardValidation(t *testing.T) {
	for _, tc := range []struct {
		shard ShardConfig
		want  string // "" = valid
	}{
		{ShardConfig{Count: 1, Index: 0}, ""},
		{ShardConfig{Count: 3, Index: 0}, ""},
		{ShardConfig{Count: 3, Index: 2}, ""},
		{ShardConfig{Count: 0, Index: 0}, "shard: count: 0 must be at least 1"},
		{ShardConfig{Count: -2, Index: 0}, "shard: count: -2 must be at least 1"},
		{ShardConfig{Count: 3, Index: 3}, "shard: index: 3 is outside [0, 3)"},
		{ShardConfig{Count: 3, Index: -1}, "shard: index: -1 is outside [0, 3)"},
		{ShardConfig{Count: 1, Index: 1}, "shard: index: 1 is outside [0, 1)"},
	} {
		t.Run(fmt.Sprintf("%d/%d", tc.shard.Index, tc.shard.Count), func(t *testing.T) {
			cfg := testConfig(map[string]AccountConfig{"a": {Address: alice, Password: "pw",
				SMTP: EndpointConfig{Endpoint: "127.0.0.1:25"}, IMAP: IMAPConfig{Endpoint: "127.0.0.1:143"}}})
			cfg.Roundtrip = []RoundtripConfig{{Account: "a"}}
			cfg.Shard = tc.shard
			err := confmap.Validate(cfg)
			if tc.want == "" {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestShardDefaultIsWhole(t *testing.T) {
	cfg := createDefaultConfig().(*Config)
	assert.Equal(t, 1, cfg.Shard.Count)
	assert.Equal(t, 0, cfg.Shard.Index)
	assert.True(t, cfg.Shard.owns("anything"))
}

// The assignment is part of the contract between releases: a replica of a
// new version must own the same targets as the one it replaces, or targets
// would move on every upgrade. These are FNV-1a 64 values mod 3.
func TestShardAssignmentIsStable(t *testing.T) {
	// FNV-1a 64 of "gmail:o365" is 0x3f5fc518e108d6da, of "o365:gmail"
	// 0xfdd3c83bdb2da546 (computed apart from hash/fnv, from the FNV-1a
	// definition: offset basis 0xcbf29ce484222325, prime 0x100000001b3).
	for name, want := range map[string]int{
		"gmail:o365": int(uint64(0x3f5fc518e108d6da) % 3),
		"o365:gmail": int(uint64(0xfdd3c83bdb2da546) % 3),
	} {
		assert.Equal(t, want, shardOf(name, 3), name)
	}
}

// meshUsers are six mailboxes whose transit mesh is 30 directions.
var meshUsers = []string{"u0@m.test", "u1@m.test", "u2@m.test", "u3@m.test", "u4@m.test", "u5@m.test"}

func meshConfig(srv *mailtest.Server) *Config {
	accounts := map[string]AccountConfig{}
	var keys []string
	for i, u := range meshUsers {
		key := fmt.Sprintf("m%d", i)
		accounts[key] = mailAccount(srv, u, "pw-"+key)
		keys = append(keys, key)
	}
	cfg := testConfig(accounts)
	cfg.Transit.Mesh = keys
	return cfg
}

func withShard(cfg *Config, index, count int) *Config {
	c := *cfg
	c.Shard = ShardConfig{Count: count, Index: index}
	return &c
}

// At the target-list level: the three shards' lists are disjoint and
// together are the whole configuration.
func TestShardTargetLists(t *testing.T) {
	srv := startMail(t, mailtest.Options{})
	cfg := meshConfig(srv)
	all, err := buildTargets(context.Background(), cfg, nil)
	require.NoError(t, err)
	require.Len(t, all, 30)

	owner := map[string]int{}
	for i := range 3 {
		c := withShard(cfg, i, 3)
		require.NoError(t, confmap.Validate(c))
		ts, err := buildTargets(context.Background(), c, nil)
		require.NoError(t, err)
		assert.NotEmpty(t, ts, "shard %d has no target of 30", i)
		for _, tg := range ts {
			prev, dup := owner[tg.Name]
			assert.False(t, dup, "%s is in shards %d and %d", tg.Name, prev, i)
			owner[tg.Name] = i
		}
	}
	for _, tg := range all {
		_, ok := owner[tg.Name]
		assert.True(t, ok, "%s is in no shard", tg.Name)
	}
}

// Three receivers, shard index 0, 1 and 2 of one 30-target configuration,
// started from the factory as a collector would and run for one collection
// each against the same mail system: every target is probed by exactly one
// of them (reported once, delivered once).
func TestShardedReceiversProbeEachTargetOnce(t *testing.T) {
	var users []mailtest.User
	for i, u := range meshUsers {
		users = append(users, mailtest.User{Address: u, Password: fmt.Sprintf("pw-m%d", i)})
	}
	srv := startMail(t, mailtest.Options{Users: users, DeliveryDelay: 10 * time.Millisecond})
	cfg := meshConfig(srv)
	cfg.DeliveryTimeout = 10 * time.Second
	// One collection at start, none after it within the test.
	cfg.InitialDelay = 0
	cfg.CollectionInterval = time.Hour

	var sinks [3]*consumertest.MetricsSink
	for i := range 3 {
		c := withShard(cfg, i, 3)
		require.NoError(t, confmap.Validate(c))
		sinks[i] = new(consumertest.MetricsSink)
		rcv, err := NewFactory().CreateMetrics(context.Background(), receivertest.NewNopSettings(metadata.Type), c, sinks[i])
		require.NoError(t, err)
		require.NoError(t, rcv.Start(context.Background(), componenttest.NewNopHost()))
		t.Cleanup(func() { assert.NoError(t, rcv.Shutdown(context.Background())) })
	}

	// reported: target -> the shards that reported it, with its error code.
	reported := func() map[string][]int {
		out := map[string][]int{}
		for i, sink := range sinks {
			for _, md := range sink.AllMetrics() {
				for name, rm := range resources(t, filterTargets(md)) {
					out[name] = append(out[name], i)
					assert.Zero(t, attr(rm, "emailqos.error_code").Int(), "%s (shard %d): %s", name, i, attr(rm, "error.type").Str())
				}
			}
		}
		return out
	}
	// Until the three collections reported; bounded, never timed.
	deadline := time.Now().Add(30 * time.Second)
	for len(reported()) < 30 {
		require.True(t, time.Now().Before(deadline), "targets reported: %d of 30", len(reported()))
		time.Sleep(50 * time.Millisecond)
	}
	got := reported()
	require.Len(t, got, 30, "every target of the mesh is reported")
	var per [3]int
	for name, shards := range got {
		assert.Len(t, shards, 1, "%s probed by shards %v", name, shards)
		assert.Equal(t, shardOf(name, 3), shards[0], name)
		per[shards[0]]++
	}
	// Each target's probe went through the mail system once.
	assert.Equal(t, 30, srv.Deliveries())
	assert.False(t, slices.Contains(per[:], 0), "targets per shard: %v", per)
	t.Logf("targets per shard: %v", per)
}

// emailqos-check probes the shard it is given; a target of another shard is
// named as such, not as unknown.
func TestCheckHonoursShard(t *testing.T) {
	srv := startMail(t, mailtest.Options{})
	cfg := withShard(meshConfig(srv), 0, 3)
	var other string
	for _, n := range []string{"m0:m1", "m1:m0", "m0:m2", "m2:m0", "m1:m2", "m2:m1"} {
		if shardOf(n, 3) != 0 {
			other = n
			break
		}
	}
	require.NotEmpty(t, other)
	_, err := Check(context.Background(), cfg, []string{other}, nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), fmt.Sprintf("target %q belongs to shard::index %d of 3", other, shardOf(other, 3)))
	_, err = Check(context.Background(), cfg, []string{"nosuch"}, nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `target "nosuch" is not configured`)
}

// The shard as the collector decodes it: a missing index is an error, never
// a silent index 0.
func TestShardFromConfmap(t *testing.T) {
	for _, tc := range []struct {
		name  string
		shard map[string]any
		want  ShardConfig
		err   string
	}{
		{"index as a number", map[string]any{"count": 3, "index": 1}, ShardConfig{Count: 3, Index: 1}, ""},
		{"index 0", map[string]any{"count": 3, "index": 0}, ShardConfig{Count: 3, Index: 0}, ""},
		{"no shard", nil, ShardConfig{Count: 1}, ""},
		{"count 1 without index", map[string]any{"count": 1}, ShardConfig{Count: 1}, ""},
		{"empty index", map[string]any{"count": 3, "index": ""}, ShardConfig{}, "'index' expected type 'int'"},
		{"null index", map[string]any{"count": 3, "index": nil}, ShardConfig{}, "index: missing or empty"},
		{"no index", map[string]any{"count": 3}, ShardConfig{}, "index: missing or empty"},
		{"not a number", map[string]any{"count": 3, "index": "two"}, ShardConfig{}, "index"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := createDefaultConfig().(*Config)
			raw := map[string]any{}
			if tc.shard != nil {
				raw["shard"] = tc.shard
			}
			err := confmap.NewFromStringMap(raw).Unmarshal(cfg)
			if err == nil {
				err = confmap.Validate(&cfg.Shard)
			}
			if tc.err != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want.Count, cfg.Shard.Count)
			assert.Equal(t, tc.want.Index, cfg.Shard.Index)
		})
	}
}

// The index from the environment, as the Kubernetes manifests give it: an
// unset or empty variable is an error naming the field, never index 0.
func TestShardIndexFromEnvironment(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	require.NoError(t, os.WriteFile(path, []byte(`
receivers:
  emailqos:
    shard:
      count: 3
      index: ${env:EMAILQOS_TEST_SHARD_INDEX}
    accounts:
      a:
        address: a@example.org
        password: pw
        smtp: {endpoint: 127.0.0.1:25}
        imap: {endpoint: 127.0.0.1:143}
    roundtrip: [{account: a}]
`), 0o600))
	load := func() (*Config, error) {
		cfg, _, err := LoadCollectorConfig(context.Background(), path, "")
		return cfg, err
	}
	t.Setenv("EMAILQOS_TEST_SHARD_INDEX", "2")
	cfg, err := load()
	require.NoError(t, err)
	assert.Equal(t, 2, cfg.Shard.Index)

	t.Setenv("EMAILQOS_TEST_SHARD_INDEX", "")
	_, err = load()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "shard: index: missing or empty")

	require.NoError(t, os.Unsetenv("EMAILQOS_TEST_SHARD_INDEX"))
	_, err = load()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "shard: index: missing or empty")
}

// A replica whose shard has no target starts, says so, and probes nothing.
func TestShardWithoutTargets(t *testing.T) {
	srv := startMail(t, mailtest.Options{})
	cfg := testConfig(map[string]AccountConfig{"a": mailAccount(srv, alice, "alice-pw")})
	cfg.Roundtrip = []RoundtripConfig{{Account: "a"}}
	cfg = withShard(cfg, (shardOf("a", 3)+1)%3, 3)
	require.NoError(t, confmap.Validate(cfg))

	core, logs := observer.New(zapcore.InfoLevel)
	settings := receivertest.NewNopSettings(metadata.Type)
	settings.Logger = zap.New(core)
	s := newScraper(cfg, settings, t.Context())
	require.NoError(t, s.start(context.Background(), componenttest.NewNopHost()))
	assert.Equal(t, 1, logs.FilterMessage("this shard of the fleet has no targets").Len())
	md, err := s.scrape(context.Background())
	require.NoError(t, err)
	assert.Zero(t, filterTargets(md).ResourceMetrics().Len())
	assert.Zero(t, srv.Deliveries())
}
