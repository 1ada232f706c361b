//go:build integration

package integration

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/emailqos/emailqosreceiver/internal/probe"
	"github.com/emailqos/emailqosreceiver/internal/probemsg"
	"github.com/emailqos/emailqosreceiver/internal/saslx"
	"github.com/emailqos/emailqosreceiver/internal/steps"
	"github.com/emailqos/emailqosreceiver/internal/transport"
)

// sessionLog reads b.test's Dovecot log from an offset: IMAP logins and
// disconnections of one user, and the refusals of its session cap.
type sessionLog struct {
	path   string
	offset int64
}

var (
	reLogin = regexp.MustCompile(`imap-login: (?:Info: )?Login: user=<([^>]+)>.*session=<([^>]+)>`)
	// imap(user)<pid><session>: Disconnected / Connection closed / Logged out
	reGone   = regexp.MustCompile(`imap\(([^)]+)\)<\d+><([^>]+)>: (?:Info: )?(?:Disconnected|Connection closed|Logged out)`)
	reRefuse = regexp.MustCompile(`Maximum number of connections from user\+IP exceeded .*user=<([^>]+)>`)
)

func newSessionLog(t *testing.T, domain string) *sessionLog {
	t.Helper()
	p := env(t, "EMAILQOS_"+strings.ToUpper(domain)+"_DOVECOT_LOG")
	st, err := os.Stat(p)
	require.NoError(t, err)
	return &sessionLog{path: p, offset: st.Size()}
}

// scan returns, for user since the offset: the most sessions open at once
// (in log order: each login counted until its session's disconnection),
// those still open, and the [LIMIT] refusals.
func (l *sessionLog) scan(t *testing.T, user string) (peak, open, refused int) {
	t.Helper()
	b, err := os.ReadFile(l.path)
	require.NoError(t, err)
	live := map[string]bool{}
	for _, line := range strings.Split(string(b[min(l.offset, int64(len(b))):]), "\n") {
		if m := reLogin.FindStringSubmatch(line); m != nil && m[1] == user {
			live[m[2]] = true
		} else if m := reGone.FindStringSubmatch(line); m != nil && m[1] == user {
			delete(live, m[2])
		} else if m := reRefuse.FindStringSubmatch(line); m != nil && m[1] == user {
			refused++
		}
		peak = max(peak, len(live))
	}
	return peak, len(live), refused
}

// settle waits (bounded) until the log shows every session of user closed,
// so that the next phase starts with Dovecot's per-user count at zero. A
// session whose disconnection the log never shows (seen once for a session
// that had logged out) is reported, not failed: the next phase counts from
// its own offset, and a session really left open only makes its cap tighter.
func (l *sessionLog) settle(t *testing.T, user string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		_, open, _ := l.scan(t, user)
		if open == 0 {
			return
		}
		select {
		case <-ctx.Done():
			t.Logf("%d session(s) of %s without a disconnection in Dovecot's log after 10s", open, user)
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// otherAccount is the user@ account of a domain, sending only.
func otherAccount(t *testing.T, domain string, mode transport.Security) *probe.Account {
	t.Helper()
	a := account(t, domain, mode)
	D := strings.ToUpper(domain)
	addr, pass := env(t, "EMAILQOS_"+D+"_USER_ADDR"), env(t, "EMAILQOS_"+D+"_USER_PASS")
	a.Key = "user" + domain
	a.Address, a.Credentials = addr, saslx.Credentials{Username: addr, Password: pass}
	a.MACKey = probemsg.DeriveKey([]byte(pass), addr)
	return a
}

// TestSessionCapMesh: b.test's Dovecot allows EMAILQOS_IMAP_USERIP_LIMIT
// (10, its default) IMAP sessions per user and IP. A mesh puts 16 probes on
// probe@b.test's mailbox at once (transits from probe@a, user@a and user@b,
// and b's round trip). With max_sessions at its default the receiver keeps
// below the cap: every probe succeeds, Dovecot refuses nothing and its log
// never shows more than 8 sessions open. Controls: with the cap taken by
// held sessions a probe is refused (code 3 limit), so the cap is in force;
// the mesh without max_sessions exceeds it. Through one shared session
// (share_session), the mesh needs no max_sessions at all.
// defaultMaxSessions is the receiver's default max_sessions (config.go).
const defaultMaxSessions = 8

func TestSessionCapMesh(t *testing.T) {
	const probes = 16
	limit, err := strconv.Atoi(env(t, "EMAILQOS_IMAP_USERIP_LIMIT"))
	require.NoError(t, err)
	require.Greater(t, probes, limit, "more readers than Dovecot's cap")
	mode := transport.TLS
	senders := []*probe.Account{account(t, "a", mode), otherAccount(t, "a", mode), otherAccount(t, "b", mode)}
	user := env(t, "EMAILQOS_B_PROBE_ADDR")

	collect := func(maxSessions int, share bool) (failed map[string]int, inFlight int, results []probe.Result) {
		receiver := account(t, "b", mode) // one Account per mailbox, as the receiver builds it
		receiver.MaxSessions = maxSessions
		receiver.ShareSession = share
		var (
			mu      sync.Mutex
			wg      sync.WaitGroup
			running int
			start   = make(chan struct{})
		)
		failed = map[string]int{}
		for i := range probes {
			s := senders[i%len(senders)]
			if i == 0 {
				s = receiver // the round trip
			}
			tg := target(s, receiver)
			tg.Name = fmt.Sprintf("%s:b#%d", s.Key, i)
			tg.Direction = tg.Name
			tg.Timeout = 90 * time.Second
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				mu.Lock()
				running++
				inFlight = max(inFlight, running)
				mu.Unlock()
				r := probe.Run(context.Background(), tg, nil)
				mu.Lock()
				running--
				results = append(results, r)
				if r.Err != nil {
					failed[r.ErrorType]++
				}
				mu.Unlock()
			}()
		}
		close(start)
		wg.Wait()
		return failed, inFlight, results
	}

	// Control 1: with Dovecot's cap already taken by a user's own clients,
	// a probe is refused and reports it as limit.
	dlog := newSessionLog(t, "b")
	var held []*imapclient.Client
	for range limit {
		c := dialIMAP(t, "b")
		held = append(held, c)
		// Answered once the session's process counts in Dovecot's anvil.
		require.NoError(t, c.Noop().Wait())
	}
	r := probe.Run(context.Background(), target(account(t, "b", mode), account(t, "b", mode)), nil)
	for _, c := range held {
		assert.NoError(t, c.Logout().Wait())
		_ = c.Close()
	}
	_, _, refused := dlog.scan(t, user)
	t.Logf("%d sessions held: probe code %d %s, %d [LIMIT] refusals", limit, r.Code, r.ErrorType, refused)
	assert.Equal(t, steps.CodeMailboxConnect, r.Code, "%v", r.Err)
	assert.Equal(t, steps.TypeLimit, r.ErrorType, "%v", r.Err)
	assert.Positive(t, refused, "Dovecot's cap of %d is in force", limit)
	dlog.settle(t, user)

	// Control 2: the mesh without max_sessions goes beyond what Dovecot
	// allows: more sessions open at once than its cap, or refusals (its
	// check races logins that arrive together, so which one varies).
	dlog = newSessionLog(t, "b")
	failed, inFlight, _ := collect(0, false)
	peak, _, refused := dlog.scan(t, user)
	t.Logf("no max_sessions: %d probes in flight on %s, failures %v, at most %d sessions open (Dovecot's log), %d [LIMIT] refusals",
		inFlight, user, failed, peak, refused)
	assert.True(t, peak > limit || refused > 0, "without max_sessions the mesh exceeds Dovecot's cap")
	dlog.settle(t, user)

	// The mesh with max_sessions at its default, over three collections.
	for i := range 3 {
		dlog = newSessionLog(t, "b")
		failed, inFlight, results := collect(defaultMaxSessions, false)
		peak, _, refused = dlog.scan(t, user)
		var slowest time.Duration
		for _, r := range results {
			slowest = max(slowest, r.Total)
		}
		t.Logf("max_sessions %d, collection %d: %d probes in flight on %s, failures %v, at most %d sessions open (Dovecot's log), %d [LIMIT] refusals, slowest probe %s",
			defaultMaxSessions, i+1, inFlight, user, failed, peak, refused, slowest)
		assert.Greater(t, inFlight, limit, "more probes than the cap read the mailbox at once")
		assert.Empty(t, failed, "no probe failed")
		assert.Len(t, results, probes)
		assert.Zero(t, refused, "Dovecot refused no session")
		// The log may show a closing session next to its successor (the
		// process logs its disconnection after the client saw it close).
		assert.LessOrEqual(t, peak, limit, "sessions open at once, in Dovecot's log")
		dlog.settle(t, user)
	}

	// The mesh through one session of b's mailbox for all its probes
	// (share_session, the receiver's default; issue 15), without
	// max_sessions: one login, nothing refused, nothing failed.
	dlog = newSessionLog(t, "b")
	failed, inFlight, results := collect(0, true)
	peak, _, refused = dlog.scan(t, user)
	t.Logf("share_session, no max_sessions: %d probes in flight on %s, failures %v, at most %d sessions open (Dovecot's log), %d [LIMIT] refusals",
		inFlight, user, failed, peak, refused)
	assert.Empty(t, failed, "no probe failed")
	assert.Len(t, results, probes)
	assert.Zero(t, refused, "Dovecot refused no session")
	// As above, a closing session may show next to its successor.
	assert.LessOrEqual(t, peak, 2, "one session for all the probes, in Dovecot's log")
	dlog.settle(t, user)

	assert.Zero(t, maildirProbes(t, "b"), "no probe message is left in b's Maildir")
}
