package emailqosreceiver

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/confmap"

	"github.com/emailqos/emailqosreceiver/internal/mailtest"
	"github.com/emailqos/emailqosreceiver/internal/probe"
)

func TestScrapePlacement(t *testing.T) {
	srv := startMail(t, mailtest.Options{})
	cfg := testConfig(map[string]AccountConfig{
		"a": mailAccount(srv, alice, "alice-pw"),
		"b": mailAccount(srv, bob, "bob-pw"),
	})
	cfg.Roundtrip = []RoundtripConfig{{Account: "a"}, {Account: "b"}}
	s, cancel := newTestScraper(t, cfg)
	defer cancel()

	md, err := s.scrape(context.Background())
	require.NoError(t, err)
	for _, name := range []string{"a", "b"} {
		rm := resources(t, md)[name]
		assert.Equal(t, "inbox", attr(rm, "emailqos.placement").Str(), name)
		junk, ok := gauge(t, rm, "emailqos.delivery.junk")
		require.True(t, ok, name)
		assert.Zero(t, junk.IntValue(), name)
	}

	// The provider starts filing the probes as spam: delivered, in junk.
	srv.SetFaults(mailtest.Faults{Junk: true})
	md, err = s.scrape(context.Background())
	require.NoError(t, err)
	for _, name := range []string{"a", "b"} {
		rm := resources(t, md)[name]
		assert.Equal(t, "junk", attr(rm, "emailqos.placement").Str(), name)
		assert.Equal(t, int64(0), attr(rm, "emailqos.error_code").Int(), name)
		junk, ok := gauge(t, rm, "emailqos.delivery.junk")
		require.True(t, ok, name)
		assert.Equal(t, int64(1), junk.IntValue(), name)
		_, ok = gauge(t, rm, "emailqos.delivery.latency")
		assert.True(t, ok, name)
	}
	for _, user := range []string{alice, bob} {
		left, err := srv.Junk(user)
		require.NoError(t, err)
		assert.Empty(t, left, "the probe's junk copy is removed")
	}
}

func TestScrapePlacementMissingAndOff(t *testing.T) {
	srv := startMail(t, mailtest.Options{Junk: true})
	a := mailAccount(srv, alice, "alice-pw")
	a.IMAP.JunkFolders = &[]string{} // placement checks off
	cfg := testConfig(map[string]AccountConfig{"a": a})
	cfg.Roundtrip = []RoundtripConfig{{Account: "a"}}
	cfg.DeliveryTimeout = time.Second
	s, cancel := newTestScraper(t, cfg)
	defer cancel()

	md, err := s.scrape(context.Background())
	require.NoError(t, err)
	rm := resources(t, md)["a"]
	assert.Equal(t, int64(4), attr(rm, "emailqos.error_code").Int())
	assert.Equal(t, "missing", attr(rm, "emailqos.placement").Str(), "not looked for in junk: lost")
	_, ok := gauge(t, rm, "emailqos.delivery.junk")
	assert.False(t, ok, "reported for delivered probes only")
}

func TestJunkFoldersConfig(t *testing.T) {
	load := func(imapSection map[string]any) (*Config, error) {
		cfg := NewFactory().CreateDefaultConfig().(*Config)
		cm := confmap.NewFromStringMap(map[string]any{
			"accounts": map[string]any{"a": map[string]any{
				"address": alice, "password": "pw",
				"smtp": map[string]any{"endpoint": "127.0.0.1:25", "security": "none"},
				"imap": imapSection,
			}},
			"roundtrip": []any{map[string]any{"account": "a"}},
		})
		if err := cm.Unmarshal(cfg); err != nil {
			return nil, err
		}
		return cfg, confmap.Validate(cfg)
	}
	imapEP := func(extra map[string]any) map[string]any {
		m := map[string]any{"endpoint": "127.0.0.1:143", "security": "none"}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	account := func(t *testing.T, cfg *Config) *probe.Account {
		targets, err := buildTargets(context.Background(), cfg, nil)
		require.NoError(t, err)
		return targets[0].Receiver
	}

	cfg, err := load(imapEP(nil))
	require.NoError(t, err)
	assert.Nil(t, cfg.Accounts["a"].IMAP.JunkFolders)
	a := account(t, cfg)
	assert.True(t, a.DiscoverJunk, "unset: discovered at login")
	assert.Empty(t, a.JunkFolders)

	cfg, err = load(imapEP(map[string]any{"junk_folders": []any{}}))
	require.NoError(t, err)
	a = account(t, cfg)
	assert.False(t, a.DiscoverJunk, "explicitly empty: off")
	assert.Empty(t, a.JunkFolders)

	cfg, err = load(imapEP(map[string]any{"junk_folders": []any{"Junk", "[Gmail]/Spam"}}))
	require.NoError(t, err)
	a = account(t, cfg)
	assert.False(t, a.DiscoverJunk)
	assert.Equal(t, []string{"Junk", "[Gmail]/Spam"}, a.JunkFolders)
}

func TestJunkFoldersRejectedForPOP3(t *testing.T) {
	a := AccountConfig{
		Address: alice, Password: "pw", Retrieval: "pop3",
		SMTP: EndpointConfig{Endpoint: "127.0.0.1:25", Security: "none"},
		POP3: EndpointConfig{Endpoint: "127.0.0.1:110", Security: "none"},
		IMAP: IMAPConfig{JunkFolders: &[]string{"Junk"}},
	}
	cfg := testConfig(map[string]AccountConfig{"a": a})
	cfg.Roundtrip = []RoundtripConfig{{Account: "a"}}
	err := confmap.Validate(cfg)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "accounts::a: imap::junk_folders: pop3 sees the maildrop only")
}
