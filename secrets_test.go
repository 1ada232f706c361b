package emailqosreceiver

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/url"
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
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/emailqos/emailqosreceiver/internal/faultnet"
	"github.com/emailqos/emailqosreceiver/internal/gmailapitest"
	"github.com/emailqos/emailqosreceiver/internal/graphtest"
	"github.com/emailqos/emailqosreceiver/internal/mailtest"
	"github.com/emailqos/emailqosreceiver/internal/metadata"
)

// The secrets of TestNoSecretsAnywhere. The passwords need an IMAP literal
// (non-ASCII), a quoted string (space, quote, backslash) and a plain atom.
const (
	davePassword   = "Dv-S3cr3t-ü9 x"
	erinPassword   = `Er"in pw\9Z-Qk`
	wrongPassword  = "Wr0ng-Pa55-Zz4"
	frankPassword  = "Fr4nk-SmtpRej-Pw"
	lostPassword   = "L0st-Bl4ckh0le-Pw"
	probeSecret    = "PrObE-sEcReT-77Hq"
	refreshToken   = "1//rEfReSh-T0ken-Yy6"
	googleSecret   = "g00gle-Cl1ent-Secr3t"
	revokedSecret  = "Rv0ked-Cl1ent-S3cret-Pq"
	dave, erin     = "dave@d.test", "erin@d.test"
	frank, lostUsr = "frank@f.test", "lost@l.test"
)

// secretForms are the ways a secret presented for user could be written
// out: plain, base64 of it and of the SASL payloads carrying it (PLAIN,
// XOAUTH2, OAUTHBEARER; LOGIN sends it alone), URL-encoded and
// JSON-escaped.
func secretForms(user, secret string) []string {
	var forms []string
	payloads := []string{
		secret,
		"\x00" + user + "\x00" + secret,
		"user=" + user + "\x01auth=Bearer " + secret + "\x01\x01",
		"n,a=" + user + ",\x01auth=Bearer " + secret + "\x01\x01",
	}
	for _, p := range payloads {
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
			forms = append(forms, enc.EncodeToString([]byte(p)))
		}
	}
	js, _ := json.Marshal(secret)
	forms = append(forms, secret, url.QueryEscape(secret), url.PathEscape(secret), strings.Trim(string(js), `"`))
	// Deduplicate: plain secrets are often their own URL form.
	seen := map[string]bool{}
	out := forms[:0]
	for _, f := range forms {
		if !seen[f] {
			seen[f] = true
			out = append(out, f)
		}
	}
	return out
}

// secretScanner finds any form of any secret in a text.
type secretScanner struct {
	forms map[string]string // form -> the secret's name
}

func newSecretScanner(secrets map[string][2]string) *secretScanner {
	s := &secretScanner{forms: map[string]string{}}
	for name, us := range secrets {
		for _, f := range secretForms(us[0], us[1]) {
			s.forms[f] = name
		}
	}
	return s
}

// find returns the names of the secrets found in text, with the form.
func (s *secretScanner) find(text string) []string {
	var found []string
	for form, name := range s.forms {
		if strings.Contains(text, form) {
			found = append(found, name+" as "+form)
		}
	}
	return found
}

// renderEntry renders a log entry as the collector's JSON encoder would:
// message and every field, errors included.
func renderEntry(t *testing.T, e observer.LoggedEntry) string {
	t.Helper()
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	buf, err := enc.EncodeEntry(e.Entry, e.Context)
	require.NoError(t, err)
	defer buf.Free()
	// ContextMap renders values the JSON encoder may escape (non-ASCII,
	// quotes) as they are.
	return buf.String() + " " + e.Message + " " + strings.Join(contextStrings(e), " ")
}

func contextStrings(e observer.LoggedEntry) []string {
	var out []string
	for k, v := range e.ContextMap() {
		out = append(out, k)
		switch x := v.(type) {
		case string:
			out = append(out, x)
		case []any:
			for _, y := range x {
				if s, ok := y.(string); ok {
					out = append(out, s)
				}
			}
		case []string:
			out = append(out, x...)
		}
	}
	return out
}

// TestNoSecretsAnywhere runs collections that succeed and that fail in every
// way a credential is in play, with a debug logger and every transcript on,
// and looks for every secret in every log entry, every error and the
// emitted metrics, in plain and encoded forms.
func TestNoSecretsAnywhere(t *testing.T) {
	t.Parallel()
	e := newTokenEndpoint(t, time.Hour)
	users := []mailtest.User{{Address: dave, Password: davePassword}, {Address: erin, Password: erinPassword}}
	ok, err := mailtest.Start(mailtest.Options{TLS: true, BearerCheck: e.check,
		Users: append(users, mailtest.User{Address: alice, Password: "alice-unused-pw"})})
	require.NoError(t, err)
	t.Cleanup(func() { _ = ok.Close() })
	rej, err := mailtest.Start(mailtest.Options{TLS: true, RejectAuth: true, Users: []mailtest.User{{Address: frank, Password: frankPassword}}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = rej.Close() })
	black, err := mailtest.Start(mailtest.Options{Blackhole: true, Users: []mailtest.User{{Address: lostUsr, Password: lostPassword}}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = black.Close() })

	tlsWith := func(srv *mailtest.Server) TLSConfig {
		var c TLSConfig
		c.CAPem = configopaqueString(string(srv.CACertPEM()))
		return c
	}
	ep := func(addr, security string, ca *mailtest.Server) EndpointConfig {
		e := EndpointConfig{Endpoint: addr, Security: security}
		if ca != nil {
			e.TLS = tlsWith(ca)
		}
		return e
	}
	acct := func(addr, pw string, smtp, imap EndpointConfig) AccountConfig {
		return AccountConfig{Address: addr, Password: configopaqueString(pw), SMTP: smtp, IMAP: imapAt(imap)}
	}
	closed := faultnet.ClosedPort(t)

	o365 := AccountConfig{Address: alice, SMTP: ep(ok.SMTPAddr(), "starttls", ok),
		IMAP: imapAt(ep(ok.IMAPSAddr(), "tls", ok)),
		OAuth: &OAuthConfig{Provider: "client_credentials", ClientID: oauthClientID,
			ClientSecret: configopaqueString(oauthClientSecret), TokenURL: e.URL, Scopes: []string{"mail.probe"}}}
	gmail := AccountConfig{Address: alice, SMTP: ep(ok.SMTPAddr(), "starttls", ok),
		IMAP: imapAt(ep(ok.IMAPAddr(), "starttls", ok)),
		// The endpoint only knows client_credentials: the refresh token
		// is refused.
		OAuth: &OAuthConfig{Provider: "google_refresh_token", ClientID: oauthClientID,
			ClientSecret: configopaqueString(googleSecret), RefreshToken: configopaqueString(refreshToken), TokenURL: e.URL}}

	// A client secret the endpoint refuses: it answers invalid_client and
	// writes the secret back in every encoding (echoForms).
	o365rej := o365
	o365rej.OAuth = &OAuthConfig{Provider: "client_credentials", ClientID: oauthClientID,
		ClientSecret: configopaqueString(revokedSecret), TokenURL: e.URL, Scopes: []string{"mail.probe"}}

	// The API transports (Graph, Gmail API) with the same tokens: one that
	// succeeds each, one whose token Graph refuses (401), one whose client
	// secret the endpoint refuses.
	gr := graphtest.New(graphtest.Options{Users: []string{dave}})
	t.Cleanup(gr.Close)
	grRefusing := graphtest.New(graphtest.Options{Users: []string{dave}, Token: "not-an-issued-token"})
	t.Cleanup(grRefusing.Close)
	gm := gmailapitest.New(gmailapitest.Options{Users: []string{erin}})
	t.Cleanup(gm.Close)
	api := func(kind, addr, base string, o *OAuthConfig) AccountConfig {
		return AccountConfig{Address: addr, Transport: TransportConfig{Send: kind, Read: kind, BaseURL: base}, OAuth: o}
	}
	apiAccounts := map[string]AccountConfig{
		"graph":    api("graph", dave, gr.URL(), o365.OAuth),
		"graphrej": api("graph", dave, grRefusing.URL(), o365.OAuth),
		"gws":      api("gmail_api", erin, gm.URL(), o365.OAuth),
		"gwsrej":   api("gmail_api", erin, gm.URL(), o365rej.OAuth),
	}

	cfg := testConfig(map[string]AccountConfig{
		"dave": acct(dave, davePassword, ep(ok.SMTPAddr(), "starttls", ok), ep(ok.IMAPAddr(), "starttls", ok)),
		"erin": acct(erin, erinPassword, ep(ok.SMTPSAddr(), "tls", ok), ep(ok.IMAPSAddr(), "tls", ok)),
		"o365": o365, "gmail": gmail, "o365rej": o365rej,
		"badpw":   acct(dave, wrongPassword, ep(ok.SMTPAddr(), "starttls", ok), ep(ok.IMAPAddr(), "starttls", ok)),
		"smtprej": acct(frank, frankPassword, ep(rej.SMTPAddr(), "starttls", rej), ep(rej.IMAPAddr(), "starttls", rej)),
		"tlsfail": acct(dave, davePassword, ep(ok.SMTPAddr(), "tls", ok), ep(ok.IMAPAddr(), "tls", ok)),
		"wrongca": acct(dave, davePassword, ep(ok.SMTPSAddr(), "tls", rej), ep(ok.IMAPSAddr(), "tls", rej)),
		"down":    acct(dave, davePassword, ep(closed, "tls", ok), ep(closed, "tls", ok)),
		"lost":    acct(lostUsr, lostPassword, ep(black.SMTPAddr(), "none", nil), ep(black.IMAPAddr(), "none", nil)),
	})
	for k, a := range apiAccounts {
		cfg.Accounts[k] = a
		cfg.Roundtrip = append(cfg.Roundtrip, RoundtripConfig{Account: k})
	}
	cfg.ProbeSecret = configopaqueString(probeSecret)
	cfg.DeliveryTimeout = 2 * time.Second
	cfg.Timeout = 6 * time.Second
	cfg.Roundtrip = append(cfg.Roundtrip, []RoundtripConfig{{Account: "dave"}, {Account: "o365"}, {Account: "gmail"}, {Account: "o365rej"}, {Account: "badpw"},
		{Account: "smtprej"}, {Account: "tlsfail"}, {Account: "wrongca"}, {Account: "down"}, {Account: "lost"}}...)
	cfg.Transit.Directions = []string{"dave:erin", "erin:dave"}
	cfg.Transcript = TranscriptConfig{Targets: []string{"*"}, Lines: 30}
	require.NoError(t, confmap.Validate(cfg))

	core, logs := observer.New(zap.DebugLevel)
	settings := receivertest.NewNopSettings(metadata.Type)
	settings.Logger = zap.New(core)
	lifetime, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s := newScraper(cfg, settings, lifetime)
	require.NoError(t, s.start(context.Background(), componenttest.NewNopHost()))
	md, err := s.scrape(context.Background())
	require.NoError(t, err)

	// Every case ran and failed (or not) as intended, or the scan below
	// would prove little.
	want := map[string][2]any{ // target -> error code, error.type
		"dave": {0, ""}, "dave:erin": {0, ""}, "erin:dave": {0, ""}, "o365": {0, ""},
		"gmail":   {3, "token_rejected"},
		"o365rej": {3, "token_rejected"},
		"badpw":   {3, "auth"},
		"smtprej": {2, "auth"},
		"tlsfail": {3, "tls"},
		"wrongca": {3, "tls"},
		"down":    {3, "connect"},
		"lost":    {4, "not_found"},
		"graph":   {0, ""}, "gws": {0, ""},
		"graphrej": {3, "auth"},
		"gwsrej":   {3, "token_rejected"},
	}
	got := resources(t, filterTargets(md))
	require.Len(t, got, len(want))
	for name, w := range want {
		rm, found := got[name]
		require.True(t, found, name)
		code, _ := gauge(t, rm, "emailqos.error_code")
		assert.Equal(t, int64(w[0].(int)), code.IntValue(), "%s: error code", name)
		assert.Equal(t, w[1], attr(rm, "error.type").Str(), "%s: error type", name)
	}

	secrets := map[string][2]string{
		"dave password":       {dave, davePassword},
		"erin password":       {erin, erinPassword},
		"wrong password":      {dave, wrongPassword},
		"frank password":      {frank, frankPassword},
		"lost password":       {lostUsr, lostPassword},
		"probe_secret":        {"", probeSecret},
		"oauth client secret": {oauthClientID, oauthClientSecret},
		"google secret":       {oauthClientID, googleSecret},
		"refresh token":       {alice, refreshToken},
		"revoked secret":      {oauthClientID, revokedSecret},
		"token mark":          {alice, oauthTokenMark},
	}
	for _, tok := range e.Tokens() {
		secrets["access token "+tok] = [2]string{alice, tok}
	}
	require.NotEmpty(t, e.Tokens(), "the endpoint handed out access tokens")
	scan := newSecretScanner(secrets)
	// What the token endpoint writes back of the OAuth secrets: also
	// lower- and upper-cased, hex, and in parts.
	for _, name := range []string{"oauth client secret", "google secret", "refresh token", "revoked secret"} {
		for _, f := range echoForms(secrets[name][1]) {
			scan.forms[f] = name
		}
	}

	transcripts, failed := 0, 0
	for _, entry := range logs.All() {
		text := renderEntry(t, entry)
		assert.Empty(t, scan.find(text), "log entry %q: %s", entry.Message, text)
		switch entry.Message {
		case "probe transcript":
			transcripts++
		case "probe failed":
			failed++
			assert.Contains(t, entry.ContextMap(), "transcript", "a failed probe's entry carries its last lines")
		}
		if entry.Message == "probe transcript" && entry.ContextMap()["target"] == "dave" {
			lines := strings.Join(contextStrings(entry), "\n")
			if testing.Verbose() {
				t.Logf("transcript of dave:\n%s", lines)
			}
			assert.Contains(t, lines, "imap C: T", "IMAP lines after STARTTLS are recorded")
			assert.Contains(t, lines, "LOGIN", lines)
			assert.Contains(t, lines, "[redacted]", lines)
			assert.Contains(t, lines, "smtp C: AUTH PLAIN [redacted]", lines)
			assert.Contains(t, lines, "bytes of message data]", lines)
		}
		// The API targets' transcripts record their exchanges (so the scan
		// above has read them): requests, statuses, the refused token's 401.
		if entry.Message == "probe transcript" {
			lines := strings.Join(contextStrings(entry), "\n")
			for target, want := range map[string][]string{
				"graph":    {"graph C: POST /v1.0/users/" + dave + "/sendMail [", "graph S: 202 ", "/messages/delta?$deltatoken=["},
				"graphrej": {"graph S: 401 "},
				"gws":      {"gmailapi C: POST /gmail/v1/users/" + erin + "/messages/send [", "gmailapi S: 200 "},
			} {
				if entry.ContextMap()["target"] == target {
					for _, w := range want {
						assert.Contains(t, lines, w, "transcript of %s", target)
					}
				}
			}
		}
	}
	assert.Equal(t, len(want), transcripts, "one transcript per target")
	assert.Equal(t, 10, failed)

	b, err := (&pmetric.JSONMarshaler{}).MarshalMetrics(md)
	require.NoError(t, err)
	assert.Empty(t, scan.find(string(b)), "emitted metrics")

	// A scan that finds nothing proves something only if it can find: a
	// planted secret in each form is caught.
	t.Run("planted secret is found", func(t *testing.T) {
		planted := []string{
			"PASS " + frankPassword,
			"AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00"+dave+"\x00"+davePassword)),
			base64.StdEncoding.EncodeToString([]byte("user=" + alice + "\x01auth=Bearer " + refreshToken + "\x01\x01")),
			"334 " + base64.StdEncoding.EncodeToString([]byte(erinPassword)),
			"secret=" + url.QueryEscape(davePassword),
			`{"pw":` + mustJSON(erinPassword) + `}`,
			"error_description: " + strings.ToLower(revokedSecret),
			"error_description: ..." + revokedSecret[len(revokedSecret)/2:],
			"client_secret=" + url.QueryEscape(googleSecret),
			base64.StdEncoding.EncodeToString([]byte(refreshToken)),
		}
		for _, p := range planted {
			entry := observer.LoggedEntry{Entry: zapcore.Entry{Message: "probe failed"},
				Context: []zapcore.Field{zap.Error(errors.New("server said: " + p))}}
			assert.NotEmpty(t, scan.find(renderEntry(t, entry)), "planted %q", p)
		}
	})
}

func mustJSON(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
