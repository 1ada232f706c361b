package emailqosreceiver

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/emailqos/emailqosreceiver/internal/faultnet"
	"github.com/emailqos/emailqosreceiver/internal/mailtest"
	"github.com/emailqos/emailqosreceiver/internal/steps"
)

// faultCase is one row of the fault table. The fault is put on the faulty
// account's SMTP proxy (smtp), its mailbox proxy (mbox) and its mail system
// (mail) before the first collection and taken off before the second.
type faultCase struct {
	name string
	fixtureOptions
	// smtp and mbox build the proxies' faults; fx gives TLS material.
	smtp, mbox func(fx *fixture) faultnet.Fault
	mail       mailtest.Faults

	code int64
	typ  string
	// codes, when set, allows any of these codes (and typ is then one of
	// types): for faults whose outcome depends on where a stream breaks.
	codes []int64
	types []string
	// check runs after the faulty collection, before the fault is removed.
	check func(t *testing.T, fx *fixture, before, after userMail)
	// timeout, when set, replaces faultTimeout for the case.
	timeout time.Duration
}

func fault(f faultnet.Fault) func(*fixture) faultnet.Fault {
	return func(*fixture) faultnet.Fault { return f }
}

// noCredentialsSent asserts that nothing after the capability exchange
// reached the server: no credentials went out in clear.
func noCredentialsSent(proxy func(*fixture) *faultnet.Proxy, imapTags bool) func(*testing.T, *fixture, userMail, userMail) {
	return func(t *testing.T, fx *fixture, _, _ userMail) {
		p := proxy(fx)
		for _, verb := range sentCommands(p, imapTags) {
			assert.NotContains(t, []string{"AUTH", "AUTHENTICATE", "LOGIN", "USER", "PASS", "APOP", "MAIL"}, verb,
				"sent in clear without STARTTLS: %q", p.Sent())
		}
		assert.NotContains(t, string(p.Sent()), "alice-pw")
		assert.NotContains(t, string(p.Sent()), "YWxpY2Ut", "base64 of the user name: a SASL exchange")
	}
}

func smtpProxy(fx *fixture) *faultnet.Proxy { return fx.smtp }
func mboxProxy(fx *fixture) *faultnet.Proxy { return fx.mbox }

// probeStays asserts the probe message is still in the mailbox after its
// removal failed, beside the untouched user mail.
func probeStays(t *testing.T, _ *fixture, before, after userMail) {
	assert.Equal(t, 1, probesIn(after)-probesIn(before), "the probe whose removal failed stays")
}

func faultTable() []faultCase {
	tlsOn := fixtureOptions{tls: true}
	idleOn := fixtureOptions{detection: "idle"}
	popOn := fixtureOptions{pop3: true}
	popTLS := fixtureOptions{pop3: true, tls: true}
	unknownCA := func(fx *fixture) faultnet.Fault {
		cfg, err := fx.unknown.ServerConfig("127.0.0.1")
		if err != nil {
			panic(err)
		}
		return faultnet.Fault{TLS: cfg}
	}
	otherHost := func(fx *fixture) faultnet.Fault {
		cfg, err := fx.trusted.ServerConfig("mail.other.test")
		if err != nil {
			panic(err)
		}
		return faultnet.Fault{TLS: cfg}
	}
	notTLS := fault(faultnet.Fault{Prefix: faultnet.NotTLS})
	// A server that only speaks TLS 1.1: it answers the client's TLS 1.2+
	// hello with a protocol_version alert.
	tls11 := func(fx *fixture) faultnet.Fault {
		cfg, err := fx.trusted.ServerConfig("127.0.0.1")
		if err != nil {
			panic(err)
		}
		cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
		return faultnet.Fault{TLS: cfg}
	}
	// imapLoginRefused makes the LOGIN fail and the server's refusal read
	// as reply (after the tag).
	imapLoginRefused := func(reply string) func(*fixture) faultnet.Fault {
		return fault(faultnet.Fault{
			Client: replaceLine(rx(`(?i)^(\S+) LOGIN .*\n$`), "$1 LOGIN alice@a.test wrong-password\r\n"),
			Server: replaceLine(rx(`^(T\d+) NO .*`), "$1 "+reply+"\r"),
		})
	}
	// pop3LoginRefused does the same for PASS.
	pop3LoginRefused := func(reply string) func(*fixture) faultnet.Fault {
		return fault(faultnet.Fault{
			Client: replaceLine(rx(`(?i)^PASS .*\n$`), "PASS wrong-password\r\n"),
			Server: replaceLine(rx(`^-ERR .*`), "-ERR "+reply+"\r"),
		})
	}

	return []faultCase{
		// --- SMTP ---
		{name: "smtp/connection refused", smtp: fault(faultnet.Fault{Refuse: true}), code: 1, typ: steps.TypeConnect},
		{name: "smtp/connect never answered", smtp: fault(faultnet.Fault{Unanswered: true}), code: 1, typ: steps.TypeTimeout},
		{name: "smtp/accepts and never greets", smtp: fault(faultnet.Fault{Silent: true}), code: 1, typ: steps.TypeTimeout},
		{name: "smtp/stalls in the middle of a reply", smtp: fault(faultnet.Fault{StallOn: rx(`^250[ -]`)}), code: 1, typ: steps.TypeTimeout},
		{name: "smtp/reset during DATA", smtp: fault(faultnet.Fault{ResetOn: rx(`(?i)^DATA\r?\n`)}), code: 2, typ: steps.TypeConnect},
		{name: "smtp/TLS handshake failure", fixtureOptions: tlsOn, smtp: notTLS, code: 1, typ: steps.TypeTLS},
		{name: "smtp/certificate from an unknown CA", fixtureOptions: tlsOn, smtp: unknownCA, code: 1, typ: steps.TypeTLS},
		{name: "smtp/certificate for another host", fixtureOptions: tlsOn, smtp: otherHost, code: 1, typ: steps.TypeTLS},
		{name: "smtp/server speaks only TLS 1.1", fixtureOptions: tlsOn, smtp: tls11, code: 1, typ: steps.TypeTLS},
		{
			name: "smtp/STARTTLS required but not offered", fixtureOptions: fixtureOptions{starttls: true},
			smtp: fault(refuseStartTLS()), code: 1, typ: steps.TypeTLS,
			check: noCredentialsSent(smtpProxy, false),
		},
		{name: "smtp/AUTH rejected", mail: mailtest.Faults{RejectAuth: true}, code: 2, typ: steps.TypeAuth},
		{name: "smtp/4xx on MAIL", mail: mailtest.Faults{DeferMail: true}, code: 2, typ: steps.TypeDeferred},
		{name: "smtp/4xx on RCPT", mail: mailtest.Faults{DeferRcpt: true}, code: 2, typ: steps.TypeDeferred},
		{name: "smtp/5xx on RCPT", mail: mailtest.Faults{RejectRcpt: true}, code: 2, typ: steps.TypeRejected},
		{name: "smtp/accepted but never delivered", mail: mailtest.Faults{Blackhole: true}, code: 4, typ: steps.TypeNotFound},
		{name: "smtp/accepted, then bounced", mail: mailtest.Faults{Bounce: true}, code: 4, typ: steps.TypeBounced,
			check: func(t *testing.T, _ *fixture, before, after userMail) {
				// The notice, proven to be the probe's, is removed.
				assert.Equal(t, len(before.imap), len(after.imap), "the bounce stays in the mailbox")
			}},
		{
			// A malformed single-line reply. (A malformed last line of a
			// multi-line reply reads as a continuation, and the reply as
			// unfinished: that is the stall case.)
			name: "smtp/malformed reply", smtp: fault(faultnet.Fault{Server: replaceLine(rx(`^220 .*`), "2x0 what is this\r")}),
			code: 1, typ: steps.TypeProtocol,
		},
		{
			name: "smtp/oversized reply line", smtp: fault(faultnet.Fault{Server: func(l []byte) []byte {
				if bytes.HasPrefix(l, []byte("250-")) {
					return huge("250-")
				}
				return l
			}}),
			code: 1, typ: steps.TypeProtocol,
		},
		{
			name: "smtp/junk before the greeting", smtp: fault(faultnet.Fault{Prefix: []byte("hello, this is not SMTP\r\n")}),
			code: 1, typ: steps.TypeProtocol,
		},

		// --- IMAP ---
		{name: "imap/connection refused", mbox: fault(faultnet.Fault{Refuse: true}), code: 3, typ: steps.TypeConnect},
		{name: "imap/connect never answered", mbox: fault(faultnet.Fault{Unanswered: true}), code: 3, typ: steps.TypeTimeout},
		{name: "imap/accepts and never greets", mbox: fault(faultnet.Fault{Silent: true}), code: 3, typ: steps.TypeTimeout},
		{name: "imap/stalls in the middle of a reply", mbox: fault(faultnet.Fault{StallOn: rx(`^\* \d+ EXISTS`)}), code: 3, typ: steps.TypeTimeout},
		// detection idle: auto starts no IDLE for a direction's first probe,
		// whose dense polls start at once.
		{name: "imap/reset during IDLE", fixtureOptions: idleOn, mbox: fault(faultnet.Fault{ResetOn: rx(`(?i)^\S+ IDLE\r?\n`)}), code: 3, typ: steps.TypeConnect},
		{
			// The arrival was announced during IDLE; the connection is reset
			// as the client ends IDLE to fetch it.
			name: "imap/reset while IDLE waits for the arrival", fixtureOptions: idleOn,
			mbox: fault(faultnet.Fault{ResetOn: rx(`(?i)^DONE\r?\n`)}), code: 0, typ: "",
		},
		{name: "imap/TLS handshake failure", fixtureOptions: tlsOn, mbox: notTLS, code: 3, typ: steps.TypeTLS},
		{name: "imap/certificate from an unknown CA", fixtureOptions: tlsOn, mbox: unknownCA, code: 3, typ: steps.TypeTLS},
		{name: "imap/certificate for another host", fixtureOptions: tlsOn, mbox: otherHost, code: 3, typ: steps.TypeTLS},
		{name: "imap/server speaks only TLS 1.1", fixtureOptions: tlsOn, mbox: tls11, code: 3, typ: steps.TypeTLS},
		{
			name: "imap/STARTTLS required but not offered", fixtureOptions: fixtureOptions{starttls: true},
			mbox: fault(refuseStartTLS()), code: 3, typ: steps.TypeTLS,
			check: noCredentialsSent(mboxProxy, true),
		},
		{
			name: "imap/LOGIN rejected",
			mbox: fault(faultnet.Fault{Client: replaceLine(rx(`(?i)^(\S+) LOGIN .*\n$`), "$1 LOGIN alice@a.test wrong-password\r\n")}),
			code: 3, typ: steps.TypeAuth,
		},
		{
			name: "imap/connection limit at login (Dovecot)",
			mbox: imapLoginRefused("NO [LIMIT] Maximum number of connections from user+IP exceeded (mail_max_userip_connections=10)"),
			code: 3, typ: steps.TypeLimit,
		},
		{
			name: "imap/login unavailable",
			mbox: imapLoginRefused("NO [UNAVAILABLE] Temporary authentication failure."),
			code: 3, typ: steps.TypeUnavailable,
		},
		{
			name: "imap/server without IDLE", mail: mailtest.Faults{},
			fixtureOptions: fixtureOptions{mail: func(o *mailtest.Options) { o.DisableIDLE = true }},
			code:           0, typ: "",
		},
		{
			// A slow indexer: the first searches miss the new message. The
			// probe keeps searching until delivery_timeout and succeeds.
			name: "imap/search finds the message only later",
			mbox: func(*fixture) faultnet.Fault {
				return faultnet.Fault{Server: firstN(3, rx(`^\* (E?SEARCH)`), replaceLine(rx(`^\* SEARCH.*`), "* SEARCH\r"))}
			},
			code: 0, typ: "",
		},
		{
			// An indexer that never catches up within delivery_timeout.
			name: "imap/search never finds the message",
			mbox: fault(faultnet.Fault{Server: replaceLine(rx(`^\* SEARCH.*`), "* SEARCH\r")}),
			code: 4, typ: steps.TypeNotFound,
		},
		{
			name: "imap/SELECT fails",
			mbox: fault(faultnet.Fault{Client: replaceLine(rx(`(?i)^(\S+) (SELECT|EXAMINE) .*\n$`), "$1 $2 NoSuchFolder\r\n")}),
			code: 3, typ: steps.TypeRejected,
		},
		{
			name: "imap/EXPUNGE fails", mail: mailtest.Faults{FailExpunge: true},
			code: 5, typ: steps.TypeRejected, check: probeStays,
		},
		{
			name: "imap/malformed response",
			mbox: fault(faultnet.Fault{Server: replaceLine(rx(`^\* (\d+) EXISTS`), "* EXISTS $1 (((")}),
			code: 3, typ: steps.TypeProtocol,
		},
		{
			// go-imap reads a 1 MiB untagged line whole and the probe goes
			// on: it succeeds (see RELIABILITY.md on memory).
			name: "imap/oversized response line",
			mbox: fault(faultnet.Fault{Server: func(l []byte) []byte {
				if rx(`^\* \d+ EXISTS`).Match(l) {
					return append(huge("* OK [ALERT] "), l...)
				}
				return l
			}}),
			code: 0, typ: "",
		},
		{
			// Beyond imapwatch's 4 MiB line limit the session ends with a
			// protocol error instead of holding what the server sends.
			name: "imap/response line over the limit",
			mbox: fault(faultnet.Fault{Server: func(l []byte) []byte {
				if rx(`^\* \d+ EXISTS`).Match(l) {
					return append(hugeN("* OK [ALERT] ", 5<<20), l...)
				}
				return l
			}}),
			code: 3, typ: steps.TypeProtocol,
			// 4 MiB must pass through the proxy and go-imap's decoder
			// before the limit speaks: slow under -race on a loaded
			// machine (issue 14), so the probe gets longer. The error is
			// immediate otherwise, so the case is no slower.
			timeout: 10 * time.Second,
		},
		{
			name: "imap/unsolicited untagged data",
			mbox: fault(faultnet.Fault{Server: func(l []byte) []byte {
				if rx(`^\S+ OK `).Match(l) && !bytes.HasPrefix(l, []byte("* ")) {
					return append([]byte("* OK [ALERT] maintenance at midnight\r\n* 1 FETCH (FLAGS (\\Seen))\r\n* 3 RECENT\r\n"), l...)
				}
				return l
			}}),
			code: 0, typ: "",
		},

		// --- POP3 ---
		{name: "pop3/connection refused", fixtureOptions: popOn, mbox: fault(faultnet.Fault{Refuse: true}), code: 3, typ: steps.TypeConnect},
		{name: "pop3/connect never answered", fixtureOptions: popOn, mbox: fault(faultnet.Fault{Unanswered: true}), code: 3, typ: steps.TypeTimeout},
		{name: "pop3/accepts and never greets", fixtureOptions: popOn, mbox: fault(faultnet.Fault{Silent: true}), code: 3, typ: steps.TypeTimeout},
		{name: "pop3/stalls in the middle of a reply", fixtureOptions: popOn, mbox: fault(faultnet.Fault{StallOn: rx(`^\d+ pop3test-`)}), code: 3, typ: steps.TypeTimeout},
		{name: "pop3/reset during RETR or TOP", fixtureOptions: popOn, mbox: fault(faultnet.Fault{ResetOn: rx(`(?i)^(RETR|TOP) `)}), code: 3, typ: steps.TypeConnect},
		{name: "pop3/TLS handshake failure", fixtureOptions: popTLS, mbox: notTLS, code: 3, typ: steps.TypeTLS},
		{name: "pop3/certificate from an unknown CA", fixtureOptions: popTLS, mbox: unknownCA, code: 3, typ: steps.TypeTLS},
		{name: "pop3/certificate for another host", fixtureOptions: popTLS, mbox: otherHost, code: 3, typ: steps.TypeTLS},
		{
			name: "pop3/STLS required but not offered", fixtureOptions: fixtureOptions{pop3: true, starttls: true},
			mbox: fault(refuseStartTLS()), code: 3, typ: steps.TypeTLS,
			check: noCredentialsSent(mboxProxy, false),
		},
		{
			name: "pop3/login rejected", fixtureOptions: popOn,
			mbox: fault(faultnet.Fault{Client: replaceLine(rx(`(?i)^PASS .*\n$`), "PASS wrong-password\r\n")}),
			code: 3, typ: steps.TypeAuth,
		},
		{name: "pop3/maildrop locked", fixtureOptions: popOn, mbox: pop3LoginRefused("[IN-USE] Mailbox is locked by another POP3 session"), code: 3, typ: steps.TypeInUse},
		{name: "pop3/login unavailable", fixtureOptions: popOn, mbox: pop3LoginRefused("[SYS/TEMP] Authentication service unavailable"), code: 3, typ: steps.TypeUnavailable},
		{name: "pop3/login too soon", fixtureOptions: popOn, mbox: pop3LoginRefused("[LOGIN-DELAY] Wait 15 minutes between logins"), code: 3, typ: steps.TypeLimit},
		{
			name: "pop3/DELE fails", fixtureOptions: popOn,
			mbox: fault(faultnet.Fault{Client: replaceLine(rx(`(?i)^DELE \d+`), "DELE 999999")}),
			code: 5, typ: steps.TypeRejected, check: probeStays,
		},
		{
			name: "pop3/malformed response", fixtureOptions: popOn,
			mbox: fault(faultnet.Fault{Server: replaceLine(rx(`^(\d+) pop3test-\d+`), "$1")}),
			code: 3, typ: steps.TypeProtocol,
		},
		{
			name: "pop3/oversized response line", fixtureOptions: popOn,
			mbox: fault(faultnet.Fault{Server: func(l []byte) []byte {
				if bytes.HasPrefix(l, []byte("+OK")) && strings.Contains(string(l), "pop3test") {
					return huge("+OK ")
				}
				return l
			}}),
			code: 3, typ: steps.TypeProtocol,
		},
		{
			name: "pop3/junk before the greeting", fixtureOptions: popOn,
			mbox: fault(faultnet.Fault{Prefix: []byte("* OK this is IMAP, not POP3\r\n")}),
			code: 3, typ: steps.TypeProtocol,
		},
	}
}

// TestFaultTable drives the receiver's scraper through every fault of the
// table with a faulty and a healthy target per collection; see
// RELIABILITY.md. Each case checks the faulty target's code and type, that
// the collection ended within the probe timeout, that the healthy target
// was not disturbed, that the user's mail is intact, that the next
// collection after the fault is removed succeeds, and that nothing leaked.
func TestFaultTable(t *testing.T) {
	if testing.Short() {
		t.Skip("the fault table takes about a minute")
	}
	ignore := goleak.IgnoreCurrent()
	for _, tc := range faultTable() {
		ok := t.Run(tc.name, func(t *testing.T) {
			runFaultCase(t, tc)
		})
		if ok {
			goleak.VerifyNone(t, ignore)
		}
	}
}

func runFaultCase(t *testing.T, tc faultCase) {
	fx := newFixture(t, tc.fixtureOptions)
	fx.prefill(t, faultUserMail)
	before := fx.snapshot(t)

	if tc.smtp != nil {
		require.NoError(t, fx.smtp.Set(tc.smtp(fx)))
	}
	if tc.mbox != nil {
		require.NoError(t, fx.mbox.Set(tc.mbox(fx)))
	}
	fx.mail.SetFaults(tc.mail)
	timeout := faultTimeout
	if tc.timeout > 0 {
		timeout = tc.timeout
		fx.cfg.Timeout = timeout
	}

	s, cancel := newTestScraper(t, fx.cfg)
	defer cancel()
	// The probes' failures, with their error text, show with -v or when a
	// case fails.
	s.logger = zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))

	got, took := scrapeOnce(t, s)
	assert.Less(t, took, timeout+time.Second, "the collection outlasted the probe timeout")
	faulty, healthy := got["faulty"], got["healthy"]
	if tc.codes != nil {
		assert.Contains(t, tc.codes, faulty.code, "error code")
		assert.Contains(t, tc.types, faulty.typ, "error.type")
	} else {
		assert.Equal(t, tc.code, faulty.code, "error code")
		assert.Equal(t, tc.typ, faulty.typ, "error.type")
	}
	assert.Zero(t, healthy.code, "the healthy target is disturbed: %s", healthy.typ)

	after := fx.snapshot(t)
	requireUserMailIntact(t, before, after)
	if tc.check != nil {
		tc.check(t, fx, before, after)
	}

	// The fault goes away: the next collection of the faulty target works.
	require.NoError(t, fx.smtp.Clear())
	require.NoError(t, fx.mbox.Clear())
	fx.mail.SetFaults(mailtest.Faults{})
	// The recovery collection asserts success, not timing: a generous
	// delivery timeout costs nothing when the probes arrive (they end as
	// soon as they are found) and keeps a loaded machine from turning a
	// slow delivery into a failure.
	for _, tg := range s.targets {
		tg.DeliveryTimeout, tg.Timeout = 15*time.Second, 20*time.Second
	}
	got, _ = scrapeOnce(t, s)
	assert.Zero(t, got["faulty"].code, "no recovery at the next collection: %s", got["faulty"].typ)
	assert.Zero(t, got["healthy"].code)
	requireUserMailIntact(t, before, fx.snapshot(t))
	require.NoError(t, s.shutdown(context.Background()))
}

// TestFaultHugeMailbox probes a mailbox of 30 000 messages and one of 100
// and compares what the probe cost over the wire: the IMAP commands it sent
// and the bytes it read must not grow with the mailbox. Compared by
// commands and bytes, not by time.
func TestFaultHugeMailbox(t *testing.T) {
	if testing.Short() {
		t.Skip("fills a mailbox with 30 000 messages")
	}
	ignore := goleak.IgnoreCurrent()
	type cost struct{ commands, lines, bytes int64 }
	measure := func(t *testing.T, n int) (first, second cost) {
		fx := newFixture(t, fixtureOptions{})
		fx.prefill(t, faultUserMail)
		for i := range n - faultUserMail {
			raw := fmt.Appendf(nil, "From: bulk%d@example.test\r\nTo: %s\r\nSubject: newsletter %d\r\n\r\nhello %d\r\n", i%97, alice, i, i)
			require.NoError(t, fx.mail.Append(alice, raw, nil))
		}
		s, cancel := newTestScraper(t, fx.cfg)
		defer cancel()
		s.logger = zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
		// The first collection sweeps the mailbox for orphans, the second
		// does not (sweep_interval): both are measured.
		var out [2]cost
		for i := range out {
			fx.mbox.ResetCounters()
			got, _ := scrapeOnce(t, s)
			require.Zero(t, got["faulty"].code, got["faulty"].typ)
			out[i] = cost{commands: got["faulty"].commands, lines: fx.mbox.Lines(), bytes: fx.mbox.ReadBytes()}
		}
		return out[0], out[1]
	}
	var small, big [2]cost
	t.Run("100", func(t *testing.T) { small[0], small[1] = measure(t, 100) })
	t.Run("30000", func(t *testing.T) { big[0], big[1] = measure(t, 30000) })
	for i, what := range []string{"first collection (with sweep)", "second collection"} {
		t.Logf("%s: 100 messages %+v, 30000 messages %+v", what, small[i], big[i])
		// Timing decides how many IDLE/NOOP rounds a wait takes, so a
		// few commands of slack; the bytes may grow by the digits of
		// the message count and UIDs in a few responses.
		assert.LessOrEqual(t, big[i].commands, small[i].commands+4, what)
		assert.LessOrEqual(t, big[i].lines, small[i].lines+4, what)
		assert.LessOrEqual(t, big[i].bytes, small[i].bytes+2048, what)
	}
	// The test server may still be answering a search over the 30 000
	// messages (imapmemserver parses each one) that a probe's housekeeping
	// stopped waiting for at its deadline on a loaded machine: its handler
	// ends when the search does. Leaks of the receiver's do not end.
	assert.Eventually(t, func() bool { return goleak.Find(ignore) == nil }, 30*time.Second, 100*time.Millisecond)
	goleak.VerifyNone(t, ignore)
}

// TestFaultHugeMaildropPOP3 probes a POP3 maildrop of 30 000 messages. POP3
// has no search: every poll reads the whole UIDL listing, so the bytes read
// grow with the maildrop by the protocol's design; what must hold is that
// the probe succeeds within its timeout and leaves the maildrop alone.
func TestFaultHugeMaildropPOP3(t *testing.T) {
	if testing.Short() {
		t.Skip("fills a maildrop with 30 000 messages")
	}
	ignore := goleak.IgnoreCurrent()
	t.Run("30000", func(t *testing.T) {
		fx := newFixture(t, fixtureOptions{pop3: true})
		fx.prefill(t, faultUserMail)
		for i := range 30000 - faultUserMail {
			fx.pop.Add(alice, fmt.Appendf(nil, "From: bulk%d@example.test\r\nTo: %s\r\nSubject: newsletter %d\r\n\r\nhello %d\r\n", i%97, alice, i, i))
		}
		before := fx.snapshot(t)
		s, cancel := newTestScraper(t, fx.cfg)
		defer cancel()
		s.logger = zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
		got, took := scrapeOnce(t, s)
		assert.Less(t, took, faultTimeout+time.Second)
		assert.Zero(t, got["faulty"].code, got["faulty"].typ)
		assert.Zero(t, got["healthy"].code)
		t.Logf("POP3, 30000 messages: %d lines sent, %d bytes read", fx.mbox.Lines(), fx.mbox.ReadBytes())
		after := fx.snapshot(t)
		require.Len(t, after.pop3, len(before.pop3), "only the probe was removed")
		requireUserMailIntact(t, before, after)
	})
	goleak.VerifyNone(t, ignore)
}
