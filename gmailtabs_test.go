package emailqosreceiver

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/confmap"

	"github.com/emailqos/emailqosreceiver/internal/mailtest"
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
	errs := pop.validate("accounts::a")
	require.NotEmpty(t, errs)
	assert.Contains(t, errs[len(errs)-1].Error(), "accounts::a::imap::gmail_tabs: pop3 sees the maildrop only")

	api := AccountConfig{Address: alice, Transport: TransportConfig{Read: "gmail_api"}, IMAP: IMAPConfig{GmailTabs: true}}
	var texts []string
	for _, e := range api.validate("accounts::a") {
		texts = append(texts, e.Error())
	}
	assert.Contains(t, texts, "accounts::a::imap::gmail_tabs: not used over gmail_api, which reports the tab itself (its CATEGORY_* label)")
}
