package emailqosreceiver

import (
	"bytes"
	"context"
	"errors"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/config/configopaque"
	"go.opentelemetry.io/collector/config/configtls"

	"github.com/emailqos/emailqosreceiver/internal/faultnet"
	"github.com/emailqos/emailqosreceiver/internal/mailtest"
	"github.com/emailqos/emailqosreceiver/internal/pop3test"
)

// Timing of the fault table: short, so that the table stays around a
// minute, and far enough apart that a 2-core machine under load still
// delivers in time.
const (
	faultDelivery = 1500 * time.Millisecond
	faultTimeout  = 3 * time.Second
	// faultUserMail is how many ordinary messages the faulty mailbox holds.
	faultUserMail = 30
)

// fixture is one case's mail system: the faulty account alice reaches its
// SMTP server and its mailbox through fault proxies; the healthy account bob
// talks to the same mail system directly.
type fixture struct {
	mail    *mailtest.Server
	pop     *pop3test.Server // set when the faulty mailbox is read over POP3
	smtp    *faultnet.Proxy
	mbox    *faultnet.Proxy
	trusted *faultnet.CA // trusted by the faulty account beside mailtest's CA
	unknown *faultnet.CA // trusted by nobody
	cfg     *Config
}

type fixtureOptions struct {
	pop3 bool
	// tls: the faulty endpoints use implicit TLS; starttls: STARTTLS.
	tls, starttls bool
	mail          func(*mailtest.Options)
	// detection of the faulty account; "" the receiver's default.
	detection string
}

var errToPOP3 = errors.New("delivered to the POP3 maildrop")

func newFixture(t *testing.T, o fixtureOptions) *fixture {
	t.Helper()
	fx := &fixture{}
	var err error
	fx.trusted, err = faultnet.NewCA("emailqos fault test CA")
	require.NoError(t, err)
	fx.unknown, err = faultnet.NewCA("nobody's CA")
	require.NoError(t, err)

	opts := mailtest.Options{TLS: true}
	if o.pop3 {
		popTLS, err := fx.trusted.ServerConfig("127.0.0.1")
		require.NoError(t, err)
		fx.pop, err = pop3test.Start(pop3test.Options{Users: map[string]string{alice: "alice-pw"}, TLSConfig: popTLS})
		require.NoError(t, err)
		t.Cleanup(func() { assert.NoError(t, fx.pop.Close()) })
		opts.OnDeliver = func(rcpt string, msg []byte) error {
			if rcpt != alice {
				return nil
			}
			fx.pop.Add(alice, msg)
			return errToPOP3
		}
	}
	if o.mail != nil {
		o.mail(&opts)
	}
	fx.mail = startMail(t, opts)

	smtpUp, mboxUp := fx.mail.SMTPAddr(), fx.mail.IMAPAddr()
	switch {
	case o.pop3 && o.tls:
		mboxUp = fx.pop.TLSAddr()
	case o.pop3:
		mboxUp = fx.pop.Addr()
	case o.tls:
		mboxUp = fx.mail.IMAPSAddr()
	}
	if o.tls {
		smtpUp = fx.mail.SMTPSAddr()
	}
	fx.smtp, err = faultnet.NewProxy(smtpUp)
	require.NoError(t, err)
	fx.mbox, err = faultnet.NewProxy(mboxUp)
	require.NoError(t, err)
	// Closed before the mail system (cleanups run last-in first-out).
	t.Cleanup(func() { assert.NoError(t, fx.smtp.Close()); assert.NoError(t, fx.mbox.Close()) })

	security := "none"
	switch {
	case o.tls:
		security = "tls"
	case o.starttls:
		security = "starttls"
	}
	ep := func(addr string) EndpointConfig {
		e := EndpointConfig{Endpoint: addr, Security: security}
		if security != "none" {
			pem := append(fx.mail.CACertPEM(), fx.trusted.PEM...)
			e.TLS = TLSConfig{configtls.ClientConfig{Config: configtls.Config{CAPem: configopaque.String(pem)}}}
		}
		return e
	}
	faulty := AccountConfig{Address: alice, Password: configopaqueString("alice-pw"), SMTP: ep(fx.smtp.Addr()), Detection: o.detection}
	if o.pop3 {
		faulty.Retrieval = retrievalPOP3
		faulty.POP3 = ep(fx.mbox.Addr())
	} else {
		faulty.IMAP = imapAt(ep(fx.mbox.Addr()))
	}
	// The healthy target has a mail system of its own, so that server-side
	// faults of the faulty one cannot reach it; it runs in the same
	// collection, on the same scraper.
	healthy := startMail(t, mailtest.Options{})
	fx.cfg = testConfig(map[string]AccountConfig{"faulty": faulty, "healthy": mailAccount(healthy, bob, "bob-pw")})
	fx.cfg.DeliveryTimeout = faultDelivery
	fx.cfg.Timeout = faultTimeout
	fx.cfg.PollInterval = 100 * time.Millisecond
	fx.cfg.Roundtrip = []RoundtripConfig{{Account: "faulty"}, {Account: "healthy"}}
	return fx
}

// prefill puts ordinary user mail into the faulty mailbox.
func (fx *fixture) prefill(t *testing.T, n int) {
	t.Helper()
	for _, m := range mailtest.GenerateUserMail(alice, n, 7, time.Now()) {
		if fx.pop != nil {
			fx.pop.Add(alice, m.Raw)
		} else {
			require.NoError(t, fx.mail.Append(alice, m.Raw, m.Flags))
		}
	}
}

// userMail is the faulty mailbox's content for the data-safety check.
type userMail struct {
	imap []mailtest.Message
	pop3 [][]byte
}

func (fx *fixture) snapshot(t *testing.T) userMail {
	t.Helper()
	if fx.pop != nil {
		return userMail{pop3: fx.pop.Messages(alice)}
	}
	msgs, err := fx.mail.Mailbox(alice)
	require.NoError(t, err)
	return userMail{imap: msgs}
}

// probesIn counts the probe messages (with a token header) in a snapshot.
func probesIn(m userMail) int {
	n := 0
	isProbe := func(raw []byte) bool {
		return bytes.Contains(raw, []byte("\r\nX-Emailqos-Mac:")) && bytes.Contains(raw, []byte("\r\nX-Emailqos-Target:"))
	}
	for _, msg := range m.imap {
		if isProbe(msg.Raw) {
			n++
		}
	}
	for _, raw := range m.pop3 {
		if isProbe(raw) {
			n++
		}
	}
	return n
}

// requireUserMailIntact checks that every ordinary message of before is in
// after, byte-, flag- and date-identical.
func requireUserMailIntact(t *testing.T, before, after userMail) {
	t.Helper()
	for i, raw := range before.pop3 {
		require.Greater(t, len(after.pop3), i, "ordinary message %d is gone", i)
		require.Equal(t, raw, after.pop3[i], "ordinary message %d changed", i)
	}
	byUID := map[imap.UID]mailtest.Message{}
	for _, m := range after.imap {
		byUID[m.UID] = m
	}
	for _, m := range before.imap {
		got, ok := byUID[m.UID]
		require.True(t, ok, "ordinary message UID %d is gone", m.UID)
		require.Equal(t, m.Raw, got.Raw, "UID %d: bytes changed", m.UID)
		require.True(t, m.InternalDate.Equal(got.InternalDate), "UID %d: date changed", m.UID)
		want, have := flagStrings(m.Flags), flagStrings(got.Flags)
		require.Equal(t, want, have, "UID %d: flags changed", m.UID)
	}
}

func flagStrings(flags []imap.Flag) []string {
	out := make([]string, 0, len(flags))
	for _, f := range flags {
		out = append(out, string(f))
	}
	slices.Sort(out)
	return out
}

// sentCommands returns the command verbs clients sent through p, one per
// line, upper-cased, with IMAP tags removed.
func sentCommands(p *faultnet.Proxy, imapTags bool) []string {
	var out []string
	for _, l := range strings.Split(string(p.Sent()), "\n") {
		f := strings.Fields(l)
		if imapTags && len(f) > 1 {
			f = f[1:]
		}
		if len(f) > 0 {
			out = append(out, strings.ToUpper(f[0]))
		}
	}
	return out
}

// --- line rules for the fault table ---

func rx(s string) *regexp.Regexp { return regexp.MustCompile(s) }

// replaceLine rewrites lines that match re with repl (regexp.Expand syntax).
func replaceLine(re *regexp.Regexp, repl string) func([]byte) []byte {
	return func(l []byte) []byte { return re.ReplaceAll(l, []byte(repl)) }
}

// dropCapability removes a capability name from SMTP EHLO, IMAP CAPABILITY
// and POP3 CAPA replies, keeping their framing intact.
func dropCapability(name string) func([]byte) []byte {
	smtpLine := rx(`^(250[ -])` + name + `\r?\n$`)
	popLine := rx(`^` + name + `\r?\n$`)
	imapWord := rx(`(?i) ` + name + `\b`)
	return func(l []byte) []byte {
		switch {
		case smtpLine.Match(l):
			return smtpLine.ReplaceAll(l, []byte("${1}XNOTHING\r\n"))
		case popLine.Match(l):
			return []byte("X-NOTHING\r\n")
		case bytes.Contains(bytes.ToUpper(l), []byte("CAPABILITY")):
			return imapWord.ReplaceAll(l, nil)
		}
		return l
	}
}

// refuseStartTLS makes the server behave as one without STARTTLS (or STLS):
// the capability is not announced, and the command, renamed on its way to
// the server, is answered as an unknown one.
func refuseStartTLS() faultnet.Fault {
	cmd := rx(`(?i)^((?:\S+ )?)(STARTTLS|STLS)\r?\n$`)
	return faultnet.Fault{
		Server: func(l []byte) []byte { return dropCapability("STLS")(dropCapability("STARTTLS")(l)) },
		Client: replaceLine(cmd, "${1}X${2}\r\n"),
	}
}

// firstN applies f to the first n lines it matches, then passes all through.
func firstN(n int64, re *regexp.Regexp, f func([]byte) []byte) func([]byte) []byte {
	var seen atomic.Int64
	return func(l []byte) []byte {
		if re.Match(l) && seen.Add(1) <= n {
			return f(l)
		}
		return l
	}
}

// huge is a 1 MiB reply line.
func huge(prefix string) []byte { return hugeN(prefix, 1<<20) }

// hugeN is a line of prefix and n filler bytes.
func hugeN(prefix string, n int) []byte {
	return append(append([]byte(prefix), bytes.Repeat([]byte("x"), n)...), '\r', '\n')
}

// scrapeOnce runs one collection and returns the resources by target and
// how long it took.
func scrapeOnce(t *testing.T, s *emailqosScraper) (map[string]resourceView, time.Duration) {
	t.Helper()
	start := time.Now()
	md, err := s.scrape(context.Background())
	took := time.Since(start)
	require.NoError(t, err)
	out := map[string]resourceView{}
	for name, rm := range resources(t, filterTargets(md)) {
		cmds, _ := gauge(t, rm, "emailqos.imap.commands")
		out[name] = resourceView{
			code:     attr(rm, "emailqos.error_code").Int(),
			typ:      attr(rm, "error.type").Str(),
			commands: cmds.IntValue(),
		}
	}
	return out, took
}

type resourceView struct {
	code     int64
	typ      string
	commands int64
}
