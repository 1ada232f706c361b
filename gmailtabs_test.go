package emailqosreceiver

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/receiver/receivertest"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/emailqos/emailqosreceiver/internal/mailtest"
	"github.com/emailqos/emailqosreceiver/internal/metadata"
)

// Gmail's tabs over IMAP reach the metrics as emailqos.placement: alice's
// probes land in Promotions (reported), bob's in Primary (inbox), carol's
// in Social with the lookup off (inbox, and no second login).
func TestScrapeGmailTabs(t *testing.T) {
	const carol = "carol@c.test"
	tabs := map[string]string{alice: "promotions", bob: "", carol: "social"}
	srv := startMail(t, mailtest.Options{
		Personality:   mailtest.PersonalityGmail,
		DeliveryDelay: 20 * time.Millisecond,
		Users:         []mailtest.User{{Address: carol, Password: "carol-pw"}},
		Category:      func(rcpt string, _ []byte) string { return tabs[rcpt] },
	})
	on := func(a AccountConfig) AccountConfig { a.IMAP.GmailTabs = true; return a }
	cfg := testConfig(map[string]AccountConfig{
		"a": on(mailAccount(srv, alice, "alice-pw")),
		"b": on(mailAccount(srv, bob, "bob-pw")),
		"c": mailAccount(srv, carol, "carol-pw"),
	})
	cfg.Roundtrip = []RoundtripConfig{{Account: "a"}, {Account: "b"}, {Account: "c"}}
	s, cancel := newTestScraper(t, cfg)
	defer cancel()

	md, err := s.scrape(context.Background())
	require.NoError(t, err)
	for name, want := range map[string]string{"a": "promotions", "b": "inbox", "c": "inbox"} {
		rm := resources(t, md)[name]
		assert.Equal(t, want, attr(rm, "emailqos.placement").Str(), name)
		assert.Equal(t, int64(0), attr(rm, "emailqos.error_code").Int(), name)
		junk, ok := gauge(t, rm, "emailqos.delivery.junk")
		require.True(t, ok, name)
		assert.Zero(t, junk.IntValue(), "a tab is delivered, not junk")
	}
	assert.Equal(t, 2, srv.Logins(alice))
	assert.Equal(t, 2, srv.Logins(bob))
	assert.Equal(t, 1, srv.Logins(carol), "gmail_tabs off: no lookup")
}

func TestGmailTabsConfig(t *testing.T) {
	cfg := NewFactory().CreateDefaultConfig().(*Config)
	cm := confmap.NewFromStringMap(map[string]any{
		"accounts": map[string]any{"a": map[string]any{
			"address": alice, "password": "pw",
			"smtp": map[string]any{"endpoint": "127.0.0.1:25", "security": "none"},
			"imap": map[string]any{"endpoint": "127.0.0.1:143", "security": "none", "gmail_tabs": true},
		}},
		"roundtrip": []any{map[string]any{"account": "a"}},
	})
	require.NoError(t, cm.Unmarshal(cfg))
	require.NoError(t, confmap.Validate(cfg))
	targets, err := buildTargets(context.Background(), cfg, nil)
	require.NoError(t, err)
	assert.True(t, targets[0].Receiver.GmailTabs)

	cfg.Accounts["a"] = func(a AccountConfig) AccountConfig { a.IMAP.GmailTabs = false; return a }(cfg.Accounts["a"])
	targets, err = buildTargets(context.Background(), cfg, nil)
	require.NoError(t, err)
	assert.False(t, targets[0].Receiver.GmailTabs, "off by default")

	pop := AccountConfig{
		Address: alice, Password: "pw", Retrieval: "pop3",
		SMTP: EndpointConfig{Endpoint: "127.0.0.1:25", Security: "none"},
		POP3: EndpointConfig{Endpoint: "127.0.0.1:110", Security: "none"},
		IMAP: IMAPConfig{GmailTabs: true},
	}
	bad := testConfig(map[string]AccountConfig{"a": pop})
	bad.Roundtrip = []RoundtripConfig{{Account: "a"}}
	err = confmap.Validate(bad)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "accounts::a: imap::gmail_tabs: pop3 sees the maildrop only")

	api := AccountConfig{Address: alice, Transport: TransportConfig{Read: "gmail_api"}, IMAP: IMAPConfig{GmailTabs: true}}
	err = api.Validate()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "imap::gmail_tabs: not used over gmail_api, which reports the tab itself (its CATEGORY_* label)")
}

// The secrets rule for the tab lookup, through the receiver with a debug
// logger and every transcript on: passwords that need PLAIN (non-ASCII) and
// a quoted string, a lookup that succeeds and one the server refuses (its
// session cap), and no form of a password in any log entry or metric.
func TestGmailTabsNoSecrets(t *testing.T) {
	const (
		u1, p1 = "tabs1@g.test", "T4bs-ü-Secret x"
		u2, p2 = "tabs2@g.test", `T4bs"two\Secret`
	)
	start := func(cap int, u, p string) *mailtest.Server {
		return startMail(t, mailtest.Options{
			Personality: mailtest.PersonalityGmail, MaxSessions: cap,
			DeliveryDelay: 20 * time.Millisecond,
			Users:         []mailtest.User{{Address: u, Password: p}},
			Category:      func(string, []byte) string { return "promotions" },
		})
	}
	okSrv, capped := start(0, u1, p1), start(1, u2, p2)
	on := func(a AccountConfig) AccountConfig { a.IMAP.GmailTabs = true; return a }
	cfg := testConfig(map[string]AccountConfig{
		"ok":     on(mailAccount(okSrv, u1, p1)),
		"capped": on(mailAccount(capped, u2, p2)),
	})
	cfg.Roundtrip = []RoundtripConfig{{Account: "ok"}, {Account: "capped"}}
	cfg.Transcript = TranscriptConfig{Targets: []string{"*"}, Lines: 60}
	require.NoError(t, cfg.Validate())
	core, logs := observer.New(zap.DebugLevel)
	settings := receivertest.NewNopSettings(metadata.Type)
	settings.Logger = zap.New(core)
	lifetime, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := newScraper(cfg, settings, lifetime)
	require.NoError(t, s.start(context.Background(), componenttest.NewNopHost()))
	md, err := s.scrape(context.Background())
	require.NoError(t, err)

	got := resources(t, md)
	assert.Equal(t, "promotions", attr(got["ok"], "emailqos.placement").Str())
	assert.Equal(t, "inbox", attr(got["capped"], "emailqos.placement").Str(), "lookup refused")
	assert.Equal(t, int64(0), attr(got["capped"], "emailqos.error_code").Int())
	assert.Len(t, logs.FilterMessageSnippet("Gmail tab lookup failed").All(), 1)

	scan := newSecretScanner(map[string][2]string{"p1": {u1, p1}, "p2": {u2, p2}})
	sawLookup := false
	for _, e := range logs.All() {
		text := renderEntry(t, e)
		assert.Empty(t, scan.find(text), "log entry %q", e.Message)
		sawLookup = sawLookup || strings.Contains(text, `X-GM-RAW \"category:primary\"`)
	}
	assert.True(t, sawLookup, "the lookup's conversation is in a transcript")
	b, err := (&pmetric.JSONMarshaler{}).MarshalMetrics(md)
	require.NoError(t, err)
	assert.Empty(t, scan.find(string(b)))
}
