//go:build integration

// Package integration runs probes against real mail servers: the Postfix and
// Dovecot domains a.test and b.test that scripts/mailstack.sh starts on
// loopback. Run it with `make integration`, which starts the stack, exports
// its layout (scripts/mailstack.sh env) and stops it afterwards.
package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/emailqos/emailqosreceiver/internal/imapwatch"
	"github.com/emailqos/emailqosreceiver/internal/probe"
	"github.com/emailqos/emailqosreceiver/internal/probemsg"
	"github.com/emailqos/emailqosreceiver/internal/saslx"
	"github.com/emailqos/emailqosreceiver/internal/steps"
	"github.com/emailqos/emailqosreceiver/internal/transport"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func env(t *testing.T, name string) string {
	t.Helper()
	v := os.Getenv(name)
	require.NotEmpty(t, v, "%s is not set: run through `make integration` (scripts/mailstack.sh env)", name)
	return v
}

func caPool(t *testing.T) *x509.CertPool {
	t.Helper()
	pem, err := os.ReadFile(env(t, "EMAILQOS_CA_FILE"))
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(pem))
	return pool
}

// endpoints of one domain's submission and IMAP service in one security mode.
func endpoints(t *testing.T, domain string, mode transport.Security) (smtp, imapEP transport.Endpoint) {
	t.Helper()
	D := strings.ToUpper(domain)
	tlsCfg := &tls.Config{RootCAs: caPool(t), MinVersion: tls.VersionTLS12}
	switch mode {
	case transport.None:
		return transport.Endpoint{Address: env(t, "EMAILQOS_"+D+"_SMTP_PLAIN"), Security: mode},
			transport.Endpoint{Address: env(t, "EMAILQOS_"+D+"_IMAP"), Security: mode}
	case transport.STARTTLS:
		return transport.Endpoint{Address: env(t, "EMAILQOS_"+D+"_SMTP_STARTTLS"), Security: mode, TLSConfig: tlsCfg},
			transport.Endpoint{Address: env(t, "EMAILQOS_"+D+"_IMAP_STARTTLS"), Security: mode, TLSConfig: tlsCfg}
	default:
		return transport.Endpoint{Address: env(t, "EMAILQOS_"+D+"_SMTPS"), Security: mode, TLSConfig: tlsCfg},
			transport.Endpoint{Address: env(t, "EMAILQOS_"+D+"_IMAPS"), Security: mode, TLSConfig: tlsCfg}
	}
}

// account is the probe@ account of a domain ("a" or "b").
func account(t *testing.T, domain string, mode transport.Security) *probe.Account {
	t.Helper()
	D := strings.ToUpper(domain)
	addr, pass := env(t, "EMAILQOS_"+D+"_PROBE_ADDR"), env(t, "EMAILQOS_"+D+"_PROBE_PASS")
	smtp, imapEP := endpoints(t, domain, mode)
	return &probe.Account{
		Key:         domain,
		Address:     addr,
		Credentials: saslx.Credentials{Username: addr, Password: pass},
		SMTP:        smtp,
		IMAP:        imapEP,
		Mailbox:     "INBOX",
		Detection:   imapwatch.MethodAuto,
		MACKey:      probemsg.DeriveKey([]byte(pass), addr),
	}
}

// pop3Account is the probe@ account of a domain, read back over POP3.
func pop3Account(t *testing.T, domain string, mode transport.Security) *probe.Account {
	t.Helper()
	a := account(t, domain, mode)
	D := strings.ToUpper(domain)
	a.Retrieval = probe.RetrievalPOP3
	a.IMAP = transport.Endpoint{}
	a.POP3 = transport.Endpoint{Address: env(t, "EMAILQOS_"+D+"_POP3"), Security: mode, TLSConfig: &tls.Config{RootCAs: caPool(t), MinVersion: tls.VersionTLS12}}
	switch mode {
	case transport.None:
		a.POP3.TLSConfig = nil
	case transport.STARTTLS:
		a.POP3.Address = env(t, "EMAILQOS_"+D+"_POP3_STARTTLS")
	case transport.TLS:
		a.POP3.Address = env(t, "EMAILQOS_"+D+"_POP3S")
	}
	return a
}

func target(sender, receiver *probe.Account) *probe.Target {
	kind := probe.Transit
	if sender.Address == receiver.Address {
		kind = probe.Roundtrip
	}
	return &probe.Target{
		Name:            sender.Key + ":" + receiver.Key,
		Kind:            kind,
		Sender:          sender,
		Receiver:        receiver,
		Direction:       sender.Key + ":" + receiver.Key,
		DeliveryTimeout: 30 * time.Second,
		PollInterval:    time.Second,
		PreciseInterval: 10 * time.Millisecond,
		Timeout:         60 * time.Second,
		Cleanup:         probe.CleanupDelete,
	}
}

// ordinary messages are seeded into the probe mailboxes before the probes
// run, and must all be there, byte for byte, afterwards.
var ordinary = []string{
	"From: colleague@a.test\r\nTo: probe@a.test\r\nSubject: quarterly report\r\nMessage-ID: <ordinary-1@a.test>\r\n\r\nplease keep me\r\n",
	"From: colleague@a.test\r\nTo: probe@a.test\r\nSubject: emailqos probe eqaaaaaaaaaaaaaaaaaaaaaaaaaa\r\nMessage-ID: <ordinary-2@a.test>\r\n\r\na look-alike subject\r\n",
	"From: mallory@a.test\r\nTo: probe@a.test\r\nSubject: forged\r\nMessage-ID: <ordinary-3@a.test>\r\nX-Emailqos-Token: eqforgedforgedforgedforgedforg\r\nX-Emailqos-Sent: 2020-01-01T00:00:00Z\r\nX-Emailqos-Mac: 00\r\n\r\na forged probe header\r\n",
}

func dialIMAP(t *testing.T, domain string) *imapclient.Client {
	t.Helper()
	D := strings.ToUpper(domain)
	c, err := imapclient.DialInsecure(env(t, "EMAILQOS_"+D+"_IMAP"), nil)
	require.NoError(t, err)
	require.NoError(t, c.Login(env(t, "EMAILQOS_"+D+"_PROBE_ADDR"), env(t, "EMAILQOS_"+D+"_PROBE_PASS")).Wait())
	return c
}

func seed(t *testing.T, domain string) {
	t.Helper()
	c := dialIMAP(t, domain)
	defer c.Close()
	for i, raw := range ordinary {
		flags := []imap.Flag{imap.FlagSeen}
		if i == 1 {
			flags = append(flags, imap.FlagDeleted) // flagged \Deleted by the user, not expunged
		}
		cmd := c.Append("INBOX", int64(len(raw)), &imap.AppendOptions{Flags: flags})
		_, err := cmd.Write([]byte(raw))
		require.NoError(t, err)
		require.NoError(t, cmd.Close())
		_, err = cmd.Wait()
		require.NoError(t, err)
	}
	require.NoError(t, c.Logout().Wait())
}

// inbox returns the full text of every message in the probe INBOX.
func inbox(t *testing.T, domain string) []string {
	t.Helper()
	c := dialIMAP(t, domain)
	defer c.Close()
	_, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait()
	require.NoError(t, err)
	var all imap.SeqSet
	all.AddRange(1, 0) // 1:*
	msgs, err := c.Fetch(all, &imap.FetchOptions{
		BodySection: []*imap.FetchItemBodySection{{Peek: true}},
	}).Collect()
	if err != nil && strings.Contains(err.Error(), "Invalid messageset") {
		return nil // empty mailbox
	}
	require.NoError(t, err)
	var out []string
	for _, m := range msgs {
		for _, b := range m.BodySection {
			out = append(out, string(b.Bytes))
		}
	}
	require.NoError(t, c.Logout().Wait())
	return out
}

// maildirProbes counts probe messages stored in a user's Maildir.
func maildirProbes(t *testing.T, domain string) int {
	t.Helper()
	dir := env(t, "EMAILQOS_"+strings.ToUpper(domain)+"_PROBE_MAILDIR")
	n := 0
	for _, sub := range []string{"cur", "new"} {
		files, _ := filepath.Glob(filepath.Join(dir, sub, "*"))
		for _, f := range files {
			b, err := os.ReadFile(f)
			require.NoError(t, err)
			if strings.Contains(string(b), "Subject: emailqos probe eq") && strings.Contains(string(b), "X-Emailqos-Mac: ") &&
				!strings.Contains(string(b), "X-Emailqos-Mac: 00") {
				n++
			}
		}
	}
	return n
}

func TestRealServers(t *testing.T) {
	seed(t, "a")
	seed(t, "b")

	for _, mode := range []transport.Security{transport.None, transport.STARTTLS, transport.TLS} {
		t.Run(string(mode), func(t *testing.T) {
			a, b := account(t, "a", mode), account(t, "b", mode)
			for _, tg := range []*probe.Target{target(a, a), target(b, b), target(a, b), target(b, a)} {
				t.Run(tg.Direction, func(t *testing.T) {
					r := probe.Run(context.Background(), tg, nil)
					require.NoError(t, r.Err)
					assert.Equal(t, steps.CodeOK, r.Code)
					assert.True(t, r.Delivered)
					if r.BeforeReply {
						// Local delivery can beat the 250 reading back to
						// us under load: reported as 0 with a window that
						// covers both sides of the reply (issue 17).
						assert.Zero(t, r.DeliveryLatency)
						assert.Positive(t, r.Uncertainty)
					} else {
						assert.Positive(t, r.DeliveryLatency)
					}
					assert.Less(t, r.DeliveryLatency, tg.DeliveryTimeout)
					names := map[string]bool{}
					for _, tm := range r.Timings {
						names[tm.Step] = true
					}
					if mode != transport.None {
						assert.True(t, names[steps.SMTPTLS], "smtp.tls is timed")
						assert.True(t, names[steps.IMAPTLS], "imap.tls is timed")
					}
					t.Logf("%s %s: delivery %s (%s, ±%s), total %s, %d IMAP commands",
						mode, tg.Direction, r.DeliveryLatency, r.Method, r.Uncertainty, r.Total, r.Commands)
				})
			}
		})
	}

	// Dovecot holds IDLE announcements for about half a second; precise
	// detection polls past that delay and sees the relay's own latency.
	t.Run("precise", func(t *testing.T) {
		a, b := account(t, "a", transport.TLS), account(t, "b", transport.TLS)
		b.Detection = imapwatch.MethodPrecise
		a.Domains, b.Domains = []string{"a.test"}, []string{"b.test"}
		for i := 0; i < 3; i++ {
			r := probe.Run(context.Background(), target(a, b), nil)
			require.NoError(t, r.Err)
			assert.Equal(t, imapwatch.MethodPrecise, r.Method)
			assert.Less(t, r.DeliveryLatency, 450*time.Millisecond, "below Dovecot's IDLE delay")
			t.Logf("precise a:b: delivery %s (±%s), %d IMAP commands", r.DeliveryLatency, r.Uncertainty, r.Commands)
			// Postfix's Received chain (submission, a.test's MX or queue,
			// b.test's MX, LMTP into Dovecot) splits the latency exactly.
			require.NotNil(t, r.Path, "the Received chain was read")
			p := r.Path
			assert.GreaterOrEqual(t, len(p.Hops), 2, "submission and b.test's hops")
			assert.True(t, p.Skew.Known, "the submission server's stamp was read")
			assert.Equal(t, r.DeliveryLatency, p.Outbound+p.Relay+p.Inbound+p.Store)
			t.Logf("precise a:b: %d hops, outbound %s, relay %s, inbound %s, store %s, skew %s",
				len(p.Hops), p.Outbound, p.Relay, p.Inbound, p.Store, p.Skew.Offset)
		}
	})

	// POP3 retrieval from Dovecot, in every security mode (STLS on the
	// plain port for starttls), round trip and across the relay.
	for _, mode := range []transport.Security{transport.None, transport.STARTTLS, transport.TLS} {
		t.Run("pop3/"+string(mode), func(t *testing.T) {
			a, b := account(t, "a", mode), pop3Account(t, "b", mode)
			for _, tg := range []*probe.Target{target(b, b), target(a, b)} {
				t.Run(tg.Direction, func(t *testing.T) {
					tg.PollInterval = 500 * time.Millisecond
					r := probe.Run(context.Background(), tg, nil)
					require.NoError(t, r.Err)
					assert.True(t, r.Delivered)
					assert.Equal(t, imapwatch.MethodPoll, r.Method)
					names := map[string]bool{}
					for _, tm := range r.Timings {
						names[tm.Step] = true
					}
					assert.True(t, names[steps.POP3Login], "pop3.login is timed")
					assert.True(t, names[steps.POP3Delete], "pop3.delete is timed")
					t.Logf("pop3 %s %s: delivery %s (±%s), total %s, %d POP3 commands",
						mode, tg.Direction, r.DeliveryLatency, r.Uncertainty, r.Total, r.Commands)
				})
			}
		})
	}

	t.Run("failures", func(t *testing.T) {
		closed := func(t *testing.T) string {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			addr := l.Addr().String()
			require.NoError(t, l.Close())
			return addr
		}
		tests := []struct {
			name     string
			modify   func(sender, receiver *probe.Account)
			wantCode int
			wantType string
		}{
			{"wrong IMAP password", func(_, r *probe.Account) { r.Password = "wrong-password" }, steps.CodeMailboxConnect, steps.TypeAuth},
			{"SMTP AUTH rejected", func(s, _ *probe.Account) { s.Password = "wrong-password" }, steps.CodeSMTPSend, steps.TypeAuth},
			{"RCPT rejected", func(_, r *probe.Account) { r.Address = "nobody@elsewhere.example" }, steps.CodeSMTPSend, steps.TypeRejected},
			{"SMTP port closed", func(s, _ *probe.Account) { s.SMTP.Address = closed(t) }, steps.CodeSMTPConnect, steps.TypeConnect},
			{"IMAP port closed", func(_, r *probe.Account) { r.IMAP.Address = closed(t) }, steps.CodeMailboxConnect, steps.TypeConnect},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				// Transit a -> b, so that sender and receiver credentials differ.
				s, r := account(t, "a", transport.TLS), account(t, "b", transport.TLS)
				tt.modify(s, r)
				tg := target(s, r)
				tg.DeliveryTimeout = 5 * time.Second
				res := probe.Run(context.Background(), tg, nil)
				require.Error(t, res.Err)
				assert.Equal(t, tt.wantCode, res.Code, "%v", res.Err)
				assert.Equal(t, tt.wantType, res.ErrorType, "%v", res.Err)
				assert.NotContains(t, res.Err.Error(), "probe-a-pw")
				assert.NotContains(t, res.Err.Error(), "wrong-password")
			})
		}
	})

	// Mailbox safety: no probe left in any Maildir, every ordinary message
	// intact with its content.
	for _, d := range []string{"a", "b"} {
		assert.Zero(t, maildirProbes(t, d), "no probe message is left in %s's Maildir", d)
		got := strings.Join(inbox(t, d), "\n--\n")
		for _, raw := range ordinary {
			assert.Contains(t, got, raw, "ordinary message intact in %s", d)
		}
		fmt.Fprintf(os.Stderr, "%s: %d messages left in INBOX\n", d, len(inbox(t, d)))
	}
}
