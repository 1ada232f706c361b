package emailqosreceiver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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

	"github.com/emailqos/emailqosreceiver/internal/gmailapitest"
	"github.com/emailqos/emailqosreceiver/internal/graphtest"
	"github.com/emailqos/emailqosreceiver/internal/mailtest"
	"github.com/emailqos/emailqosreceiver/internal/metadata"
	"github.com/emailqos/emailqosreceiver/internal/steps"
)

// The API transports (issue 18) through the receiver: configuration, token
// sources, the engine and the metrics, against the in-process Graph and
// Gmail API fakes (and mailtest for the SMTP/IMAP side of mixed transits),
// with app-only tokens from a client_credentials endpoint on loopback.

const (
	graphUser  = "probe@m365.test"
	graphUser2 = "probe2@m365.test"
	gmailUser  = "probe@gws.test"
)

func apiAccount(api, addr, baseURL, tokenURL string) AccountConfig {
	return AccountConfig{
		Address:   addr,
		Transport: TransportConfig{Send: api, Read: api, BaseURL: baseURL},
		OAuth: &OAuthConfig{
			Provider:     "client_credentials",
			ClientID:     oauthClientID,
			ClientSecret: configopaqueString(oauthClientSecret),
			TokenURL:     tokenURL,
		},
	}
}

type apiOutcome struct {
	code    int64
	typ     string
	place   string
	steps   map[string]bool
	logs    *observer.ObservedLogs
	scraped pmetric.Metrics
}

// scrapeAPI runs one collection of cfg's only target, named target.
func scrapeAPI(t *testing.T, cfg *Config, target string) apiOutcome {
	t.Helper()
	require.NoError(t, confmap.Validate(cfg))
	core, logs := observer.New(zap.DebugLevel)
	settings := receivertest.NewNopSettings(metadata.Type)
	settings.Logger = zap.New(core)
	lifetime, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := newScraper(cfg, settings, lifetime)
	require.NoError(t, s.start(context.Background(), componenttest.NewNopHost()))
	defer func() { require.NoError(t, s.shutdown(context.Background())) }()
	md, err := s.scrape(context.Background())
	require.NoError(t, err)
	rm, ok := resources(t, filterTargets(md))[target]
	require.True(t, ok, "target %s reported", target)
	out := apiOutcome{code: attr(rm, "emailqos.error_code").Int(), typ: attr(rm, "error.type").Str(),
		place: attr(rm, "emailqos.placement").Str(), steps: map[string]bool{}, logs: logs, scraped: md}
	ms := rm.ScopeMetrics().At(0).Metrics()
	for i := 0; i < ms.Len(); i++ {
		if ms.At(i).Name() != "emailqos.step.duration" {
			continue
		}
		dps := ms.At(i).Gauge().DataPoints()
		for j := 0; j < dps.Len(); j++ {
			v, _ := dps.At(j).Attributes().Get("step")
			out.steps[v.Str()] = true
		}
	}
	return out
}

// assertClean: no client secret or issued token in any log or metric.
func (o apiOutcome) assertClean(t *testing.T, e *tokenEndpoint) {
	t.Helper()
	secrets := append(echoForms(oauthClientSecret), oauthTokenMark)
	secrets = append(secrets, e.Tokens()...)
	require.NotEmpty(t, e.Tokens(), "tokens were issued, so the check means something")
	b, err := (&pmetric.JSONMarshaler{}).MarshalMetrics(o.scraped)
	require.NoError(t, err)
	texts := []string{string(b)}
	for _, entry := range o.logs.All() {
		texts = append(texts, entry.Message+" "+fmt.Sprint(entry.ContextMap()))
	}
	for _, text := range texts {
		for _, s := range secrets {
			assert.NotContains(t, text, s)
		}
	}
}

func apiConfig(accounts map[string]AccountConfig) *Config {
	cfg := testConfig(accounts)
	cfg.DeliveryTimeout = 3 * time.Second
	cfg.Timeout = 6 * time.Second
	cfg.PollInterval = 100 * time.Millisecond
	return cfg
}

func TestGraphRoundtrip(t *testing.T) {
	t.Parallel()
	e := newTokenEndpoint(t, time.Hour)
	gr := graphtest.New(graphtest.Options{Users: []string{graphUser}, DeliveryDelay: 100 * time.Millisecond, VisibilityLag: 100 * time.Millisecond})
	defer gr.Close()
	cfg := apiConfig(map[string]AccountConfig{"o365": apiAccount("graph", graphUser, gr.URL(), e.URL)})
	cfg.Roundtrip = []RoundtripConfig{{Account: "o365"}}
	o := scrapeAPI(t, cfg, "o365")
	assert.Equal(t, int64(0), o.code, o.typ)
	assert.Equal(t, "inbox", o.place)
	for _, s := range []string{steps.GraphSend, steps.GraphList, steps.GraphDelete, steps.DeliveryWait} {
		assert.True(t, o.steps[s], "step %s timed: %v", s, o.steps)
	}
	assert.Empty(t, gr.Messages(graphUser, "inbox"), "the probe was deleted")
	o.assertClean(t, e)
}

func TestGmailAPIRoundtrip(t *testing.T) {
	t.Parallel()
	e := newTokenEndpoint(t, time.Hour)
	gm := gmailapitest.New(gmailapitest.Options{Users: []string{gmailUser}, DeliveryDelay: 100 * time.Millisecond, VisibilityLag: 100 * time.Millisecond})
	defer gm.Close()
	cfg := apiConfig(map[string]AccountConfig{"gws": apiAccount("gmail_api", gmailUser, gm.URL(), e.URL)})
	cfg.Roundtrip = []RoundtripConfig{{Account: "gws"}}
	o := scrapeAPI(t, cfg, "gws")
	assert.Equal(t, int64(0), o.code, o.typ)
	assert.Equal(t, "inbox", o.place)
	for _, s := range []string{steps.GmailAPISend, steps.GmailAPIList, steps.GmailAPIDelete} {
		assert.True(t, o.steps[s], "step %s timed: %v", s, o.steps)
	}
	assert.Empty(t, gm.Messages(gmailUser, ""), "the probe was deleted")
	o.assertClean(t, e)
}

// Gmail files the probe from another user as spam: delivered, placement
// junk (SPAM label).
func TestGmailAPISpamPlacement(t *testing.T) {
	t.Parallel()
	e := newTokenEndpoint(t, time.Hour)
	gm := gmailapitest.New(gmailapitest.Options{Users: []string{gmailUser, "other@gws.test"}, Spam: func(string, []byte) bool { return true }})
	defer gm.Close()
	cfg := apiConfig(map[string]AccountConfig{"gws": apiAccount("gmail_api", gmailUser, gm.URL(), e.URL),
		"gws2": apiAccount("gmail_api", "other@gws.test", gm.URL(), e.URL)})
	cfg.Transit.Directions = []string{"gws2:gws"}
	o := scrapeAPI(t, cfg, "gws2:gws")
	assert.Equal(t, int64(0), o.code, o.typ)
	assert.Equal(t, "junk", o.place)
}

// Gmail files the probe in an inbox tab: delivered, placement names the
// tab (CATEGORY_* label), not junk; the Primary tab stays inbox.
func TestGmailAPITabPlacement(t *testing.T) {
	t.Parallel()
	for _, tab := range []string{"promotions", "social", "updates", "forums", "personal"} {
		t.Run(tab, func(t *testing.T) {
			t.Parallel()
			e := newTokenEndpoint(t, time.Hour)
			gm := gmailapitest.New(gmailapitest.Options{Users: []string{gmailUser, "other@gws.test"},
				Category: func(string, []byte) string { return tab }})
			defer gm.Close()
			cfg := apiConfig(map[string]AccountConfig{"gws": apiAccount("gmail_api", gmailUser, gm.URL(), e.URL),
				"gws2": apiAccount("gmail_api", "other@gws.test", gm.URL(), e.URL)})
			cfg.Transit.Directions = []string{"gws2:gws"}
			o := scrapeAPI(t, cfg, "gws2:gws")
			assert.Equal(t, int64(0), o.code, o.typ)
			want := tab
			if tab == "personal" {
				want = "inbox"
			}
			assert.Equal(t, want, o.place)
			rm := resources(t, filterTargets(o.scraped))["gws2:gws"]
			junk, ok := gauge(t, rm, "emailqos.delivery.junk")
			require.True(t, ok, "delivered: junk gauge reported")
			assert.Equal(t, int64(0), junk.IntValue(), "a tab is not junk")
			assert.Empty(t, gm.Messages(gmailUser, ""), "the probe was deleted")
		})
	}
}

// Exchange files the probe as junk: found in JunkEmail, placement junk,
// and removed from there.
func TestGraphJunkPlacement(t *testing.T) {
	t.Parallel()
	e := newTokenEndpoint(t, time.Hour)
	gr := graphtest.New(graphtest.Options{Users: []string{graphUser, graphUser2}, Junk: func(string, []byte) bool { return true }})
	defer gr.Close()
	cfg := apiConfig(map[string]AccountConfig{"a": apiAccount("graph", graphUser2, gr.URL(), e.URL),
		"b": apiAccount("graph", graphUser, gr.URL(), e.URL)})
	cfg.Transit.Directions = []string{"a:b"}
	o := scrapeAPI(t, cfg, "a:b")
	assert.Equal(t, int64(0), o.code, o.typ)
	assert.Equal(t, "junk", o.place)
	assert.Empty(t, gr.Messages(graphUser, "junkemail"), "the probe was deleted from JunkEmail")
}

// Mixed transits: SMTP into mailtest handed to the Graph mailbox, and Graph
// sendMail routed to a mailtest mailbox read over IMAP.
func TestMixedTransits(t *testing.T) {
	t.Parallel()
	e := newTokenEndpoint(t, time.Hour)
	var gr *graphtest.Server
	srv := startMail(t, mailtest.Options{
		// Stamped by the SMTP side, read back from Graph's
		// internetMessageHeaders.
		AuthResults: "spf=pass smtp.mailfrom=d.test; dkim=pass header.d=d.test; dmarc=pass header.from=d.test",
		Users:       []mailtest.User{{Address: graphUser, Password: "unused-pw"}},
		OnDeliver: func(rcpt string, raw []byte) error {
			if rcpt == graphUser {
				if err := gr.Deliver(rcpt, raw); err != nil {
					return err
				}
				return errors.New("handed to the Graph fake")
			}
			return nil
		},
	})
	gr = graphtest.New(graphtest.Options{Users: []string{graphUser}, VisibilityLag: 50 * time.Millisecond,
		Route: func(rcpt string, raw []byte) bool { return srv.Append(rcpt, raw, nil) == nil }})
	defer gr.Close()
	accounts := map[string]AccountConfig{
		"o365":    apiAccount("graph", graphUser, gr.URL(), e.URL),
		"dovecot": mailAccount(srv, alice, "alice-pw"),
	}
	for _, dir := range []string{"dovecot:o365", "o365:dovecot"} {
		cfg := apiConfig(accounts)
		cfg.Transit.Directions = []string{dir}
		o := scrapeAPI(t, cfg, dir)
		assert.Equal(t, int64(0), o.code, "%s: %s", dir, o.typ)
		assert.Equal(t, "inbox", o.place, dir)
		o.assertClean(t, e)
		if dir == "dovecot:o365" {
			assert.Equal(t, map[string]string{"spf": "pass", "dkim": "pass", "dmarc": "pass"}, authResults(t, o.scraped, dir),
				"Authentication-Results read from the Graph headers")
		}
	}
}

// authResults are target's emailqos.auth.result data points, method to result.
func authResults(t *testing.T, md pmetric.Metrics, target string) map[string]string {
	t.Helper()
	rm := resources(t, filterTargets(md))[target]
	out := map[string]string{}
	ms := rm.ScopeMetrics().At(0).Metrics()
	for i := 0; i < ms.Len(); i++ {
		if ms.At(i).Name() != "emailqos.auth.result" {
			continue
		}
		dps := ms.At(i).Gauge().DataPoints()
		for j := 0; j < dps.Len(); j++ {
			m, _ := dps.At(j).Attributes().Get("auth.method")
			r, _ := dps.At(j).Attributes().Get("auth.result")
			out[m.Str()] = r.Str()
		}
	}
	return out
}

// Each failure code over the APIs, with its error type.
func TestAPIFailures(t *testing.T) {
	t.Parallel()
	type setup struct {
		cfg    *Config
		target string
	}
	cases := []struct {
		name     string
		make     func(t *testing.T, tokenURL string) setup
		code     int64
		typ      string
		stepSeen string
	}{
		{"graph send to an unknown sender mailbox", func(t *testing.T, tu string) setup {
			gr := graphtest.New(graphtest.Options{Users: []string{graphUser}})
			t.Cleanup(gr.Close)
			cfg := apiConfig(map[string]AccountConfig{
				"a": apiAccount("graph", graphUser2, gr.URL(), tu), "b": apiAccount("graph", graphUser, gr.URL(), tu)})
			cfg.Transit.Directions = []string{"a:b"}
			return setup{cfg, "a:b"}
		}, steps.CodeSMTPSend, steps.TypeRejected, steps.GraphSend},
		{"graph token refused", func(t *testing.T, tu string) setup {
			gr := graphtest.New(graphtest.Options{Users: []string{graphUser}, Token: "another-token"})
			t.Cleanup(gr.Close)
			cfg := apiConfig(map[string]AccountConfig{"a": apiAccount("graph", graphUser, gr.URL(), tu)})
			cfg.Roundtrip = []RoundtripConfig{{Account: "a"}}
			return setup{cfg, "a"}
		}, steps.CodeMailboxConnect, steps.TypeAuth, steps.GraphList},
		{"graph probe never delivered", func(t *testing.T, tu string) setup {
			gr := graphtest.New(graphtest.Options{Users: []string{graphUser}, DeliveryDelay: time.Minute})
			t.Cleanup(gr.Close)
			cfg := apiConfig(map[string]AccountConfig{"a": apiAccount("graph", graphUser, gr.URL(), tu)})
			cfg.DeliveryTimeout = time.Second
			cfg.Roundtrip = []RoundtripConfig{{Account: "a"}}
			return setup{cfg, "a"}
		}, steps.CodeSearch, steps.TypeNotFound, steps.DeliveryWait},
		{"graph move to a folder that does not exist", func(t *testing.T, tu string) setup {
			gr := graphtest.New(graphtest.Options{Users: []string{graphUser}})
			t.Cleanup(gr.Close)
			cfg := apiConfig(map[string]AccountConfig{"a": apiAccount("graph", graphUser, gr.URL(), tu)})
			cfg.Cleanup.Mode, cfg.Cleanup.Folder = "move", "NoSuchFolder"
			cfg.Roundtrip = []RoundtripConfig{{Account: "a"}}
			return setup{cfg, "a"}
		}, steps.CodeCleanup, steps.TypeRejected, steps.GraphDelete},
		{"graph throttled beyond the probe's time", func(t *testing.T, tu string) setup {
			gr := graphtest.New(graphtest.Options{Users: []string{graphUser}})
			t.Cleanup(gr.Close)
			gr.Throttle(1000, 429, time.Minute)
			cfg := apiConfig(map[string]AccountConfig{"a": apiAccount("graph", graphUser, gr.URL(), tu)})
			cfg.Roundtrip = []RoundtripConfig{{Account: "a"}}
			return setup{cfg, "a"}
		}, steps.CodeMailboxConnect, steps.TypeThrottled, steps.GraphList},
		{"gmail send outside the delegation", func(t *testing.T, tu string) setup {
			gm := gmailapitest.New(gmailapitest.Options{Users: []string{gmailUser}})
			t.Cleanup(gm.Close)
			cfg := apiConfig(map[string]AccountConfig{
				"a": apiAccount("gmail_api", "other@gws.test", gm.URL(), tu), "b": apiAccount("gmail_api", gmailUser, gm.URL(), tu)})
			cfg.Transit.Directions = []string{"a:b"}
			return setup{cfg, "a:b"}
		}, steps.CodeSMTPSend, steps.TypeRejected, steps.GmailAPISend},
		{"gmail token refused", func(t *testing.T, tu string) setup {
			gm := gmailapitest.New(gmailapitest.Options{Users: []string{gmailUser}, Token: "another-token"})
			t.Cleanup(gm.Close)
			cfg := apiConfig(map[string]AccountConfig{"a": apiAccount("gmail_api", gmailUser, gm.URL(), tu)})
			cfg.Roundtrip = []RoundtripConfig{{Account: "a"}}
			return setup{cfg, "a"}
		}, steps.CodeMailboxConnect, steps.TypeAuth, steps.GmailAPIList},
		{"gmail probe never delivered", func(t *testing.T, tu string) setup {
			gm := gmailapitest.New(gmailapitest.Options{Users: []string{gmailUser}, DeliveryDelay: time.Minute})
			t.Cleanup(gm.Close)
			cfg := apiConfig(map[string]AccountConfig{"a": apiAccount("gmail_api", gmailUser, gm.URL(), tu)})
			cfg.DeliveryTimeout = time.Second
			cfg.Roundtrip = []RoundtripConfig{{Account: "a"}}
			return setup{cfg, "a"}
		}, steps.CodeSearch, steps.TypeNotFound, steps.DeliveryWait},
		{"gmail 403 rateLimitExceeded beyond the probe's time", func(t *testing.T, tu string) setup {
			gm := gmailapitest.New(gmailapitest.Options{Users: []string{gmailUser}})
			t.Cleanup(gm.Close)
			gm.Throttle(1000, 403, "rateLimitExceeded", time.Minute)
			cfg := apiConfig(map[string]AccountConfig{"a": apiAccount("gmail_api", gmailUser, gm.URL(), tu)})
			cfg.Roundtrip = []RoundtripConfig{{Account: "a"}}
			return setup{cfg, "a"}
		}, steps.CodeMailboxConnect, steps.TypeThrottled, steps.GmailAPIList},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newTokenEndpoint(t, time.Hour)
			s := tc.make(t, e.URL)
			start := time.Now()
			o := scrapeAPI(t, s.cfg, s.target)
			assert.Equal(t, tc.code, o.code)
			assert.Equal(t, tc.typ, o.typ)
			assert.True(t, o.steps[tc.stepSeen], "step %s timed: %v", tc.stepSeen, o.steps)
			assert.Less(t, time.Since(start), s.cfg.Timeout+2*time.Second, "bounded by the probe's timeout")
			o.assertClean(t, e)
		})
	}
}

// Validation names the field of every transport mistake.
func TestTransportValidation(t *testing.T) {
	base := func() AccountConfig {
		return apiAccount("graph", graphUser, "", "https://login.example/token")
	}
	cases := map[string]struct {
		edit func(a *AccountConfig)
		want string
	}{
		"unknown send":          {func(a *AccountConfig) { a.Transport.Send = "ews" }, "accounts::a::transport: send: \"ews\" is not one of smtp, graph, gmail_api"},
		"unknown read":          {func(a *AccountConfig) { a.Transport.Read = "jmap" }, "accounts::a::transport: read: \"jmap\" is not one of imap, pop3, graph, gmail_api"},
		"http base_url":         {func(a *AccountConfig) { a.Transport.BaseURL = "http://graph.example" }, "accounts::a::transport: base_url: must use https"},
		"no oauth":              {func(a *AccountConfig) { a.OAuth = nil; a.Password = "pw" }, "accounts::a: oauth: required with transport graph"},
		"google for graph":      {func(a *AccountConfig) { a.OAuth.Provider = "google_refresh_token" }, "accounts::a: oauth::provider: \"google_refresh_token\" cannot sign in to Microsoft Graph"},
		"graph and gmail":       {func(a *AccountConfig) { a.Transport.Read = "gmail_api" }, "accounts::a: transport: send graph and read gmail_api"},
		"retrieval contradicts": {func(a *AccountConfig) { a.Retrieval = "pop3" }, "accounts::a: transport::read: \"graph\" contradicts retrieval \"pop3\""},
		"idle over an API":      {func(a *AccountConfig) { a.Detection = "idle" }, "accounts::a::detection: idle is not available over graph"},
		"base_url without API":  {func(a *AccountConfig) { a.Transport = TransportConfig{BaseURL: "https://x.example"} }, "transport::base_url: only used with graph or gmail_api"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			a := base()
			tc.edit(&a)
			cfg := apiConfig(map[string]AccountConfig{"a": a})
			cfg.Roundtrip = []RoundtripConfig{{Account: "a"}}
			err := confmap.Validate(cfg)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.True(t, strings.HasPrefix(lineWith(err.Error(), tc.want), "accounts::a"), err.Error())
			assert.NotContains(t, err.Error(), oauthClientSecret)
		})
	}
	// And a valid one passes, with no SMTP or IMAP endpoint.
	cfg := apiConfig(map[string]AccountConfig{"a": base()})
	cfg.Roundtrip = []RoundtripConfig{{Account: "a"}}
	assert.NoError(t, confmap.Validate(cfg))
	// A Microsoft account cannot mix Graph with SMTP/IMAP: two resources.
	m := base()
	m.OAuth = &OAuthConfig{Provider: "microsoft", TenantID: "contoso.onmicrosoft.com", ClientID: "app", ClientSecret: "s"}
	m.Transport.Read = "imap"
	m.IMAP.Endpoint = "outlook.office365.com:993"
	cfg = apiConfig(map[string]AccountConfig{"a": m})
	cfg.Roundtrip = []RoundtripConfig{{Account: "a"}}
	err := confmap.Validate(cfg)
	require.Error(t, err)
	assert.True(t, strings.Contains(err.Error(), "accounts::a: transport: graph for one side and SMTP/IMAP/POP3"), err.Error())
}

// A probe sent over Graph and refused on the way comes back as Exchange
// Online's non-delivery report in the sender's Inbox, read over Graph: the
// receiver reports it bounced (code 4) with the report's status as the
// reply, and the delay and late-bounce counts are emitted for the target.
func TestGraphBounceThroughTheReceiver(t *testing.T) {
	t.Parallel()
	e := newTokenEndpoint(t, time.Hour)
	tmpl, err := os.ReadFile(filepath.Join("internal", "dsn", "testdata", "exchange-failed.eml.tmpl"))
	require.NoError(t, err)
	ndr := func(raw []byte) []byte {
		header, _, _ := strings.Cut(string(raw), "\r\n\r\n")
		s := strings.ReplaceAll(strings.ReplaceAll(string(tmpl), "\r\n", "\n"), "\n", "\r\n")
		for _, r := range [][2]string{{"{{HEADERS}}", header + "\r\n"}, {"{{MESSAGE}}", string(raw)}, {"{{TOKEN}}", ""}, {"{{ENVID}}", ""}} {
			s = strings.ReplaceAll(s, r[0], r[1])
		}
		return []byte(s)
	}
	gr := graphtest.New(graphtest.Options{Users: []string{graphUser}, Notice: func(_ string, raw []byte) ([]byte, bool) {
		return ndr(raw), false
	}})
	defer gr.Close()
	cfg := apiConfig(map[string]AccountConfig{"o365": apiAccount("graph", graphUser, gr.URL(), e.URL)})
	cfg.Roundtrip = []RoundtripConfig{{Account: "o365"}}
	o := scrapeAPI(t, cfg, "o365")
	assert.Equal(t, int64(4), o.code)
	assert.Equal(t, steps.TypeBounced, o.typ)
	assert.Empty(t, gr.Messages(graphUser, "inbox"), "the report was removed")
	b, err := (&pmetric.JSONMarshaler{}).MarshalMetrics(o.scraped)
	require.NoError(t, err)
	for _, want := range []string{"emailqos.delivery.delay_notices", "emailqos.probes.bounced_late", "emailqos.smtp.reply_code", `"5.1.10"`} {
		assert.Contains(t, string(b), want)
	}
	o.assertClean(t, e)
}
