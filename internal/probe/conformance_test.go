package probe

import (
	"bytes"
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/emailqos/emailqosreceiver/internal/mailtest"
	"github.com/emailqos/emailqosreceiver/internal/probemsg"
	"github.com/emailqos/emailqosreceiver/internal/steps"
)

// arrivals records, per recipient, the instants its deliveries became
// visible, as the in-process server reports them.
type arrivals struct {
	mu sync.Mutex
	at map[string][]time.Time
}

func (a *arrivals) record(rcpt string, at time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.at == nil {
		a.at = map[string][]time.Time{}
	}
	a.at[rcpt] = append(a.at[rcpt], at)
}

func (a *arrivals) last(t *testing.T, rcpt string) time.Time {
	t.Helper()
	var at time.Time
	require.Eventually(t, func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		if n := len(a.at[rcpt]); n > 0 {
			at = a.at[rcpt][n-1]
			return true
		}
		return false
	}, 2*time.Second, time.Millisecond)
	return at
}

// folderSnapshot indexes a folder of user by UID, like snapshot does INBOX.
func folderSnapshot(t *testing.T, srv *mailtest.Server, user, folder string) map[imap.UID]mailtest.Message {
	t.Helper()
	msgs, err := srv.Folder(user, folder)
	require.NoError(t, err)
	out := make(map[imap.UID]mailtest.Message, len(msgs))
	for _, m := range msgs {
		slices.Sort(m.Flags)
		out[m.UID] = m
	}
	return out
}

// probesIn counts the messages of a folder that are probes made with key
// (the user's forged look-alikes are not).
func probesIn(msgs map[imap.UID]mailtest.Message, key []byte) int {
	n := 0
	for _, m := range msgs {
		header, _, _ := bytes.Cut(m.Raw, []byte("\r\n\r\n"))
		if _, err := probemsg.Parse(header, key); err == nil {
			n++
		}
	}
	return n
}

// TestConformance runs, against each server personality of the test mail
// system, what a receiver does over time: a round trip that also sweeps an
// orphan, a probe that arrives too late, a transit, and the round trip that
// collects the late one; then it checks the exact state of every folder:
// the user's messages untouched, the probes gone (for Gmail: nowhere in All
// Mail either), and each reported latency within its uncertainty of the
// truth.
func TestConformance(t *testing.T) {
	personalities := append([]mailtest.Personality{""}, mailtest.Personalities...)
	for _, p := range personalities {
		name := string(p)
		if name == "" {
			name = "default"
		}
		t.Run(name, func(t *testing.T) {
			conformance(t, p)
		})
	}
}

func conformance(t *testing.T, p mailtest.Personality) {
	h := newHolder()
	// The second probe is late. Not with synchronous delivery (maddy):
	// holding it would hold the SMTP transaction, not the message.
	lateProbe := p != mailtest.PersonalityEarlyExists
	if lateProbe {
		h.hold[alice] = map[int]bool{2: true}
	}
	arr := &arrivals{}
	opts := mailtest.Options{
		Personality: p,
		OnDeliver:   h.onDeliver,
		OnVisible:   arr.record,
		// Short, so that the suite stays quick; the defaults are 3 s
		// (m365 search lag), 2 s and 0.5 s (IDLE holds).
		SearchLag: 300 * time.Millisecond,
	}
	held := p == mailtest.PersonalityLateIdle || p == mailtest.PersonalityM365
	if held {
		opts.IdleHold = 150 * time.Millisecond
	}
	if p != mailtest.PersonalityEarlyExists {
		// Visible only after the client has read the 250 (see startHeld).
		opts.DeliveryDelay = 30 * time.Millisecond
	}
	srv := startMail(t, opts)
	t.Cleanup(h.releaseAll)

	a := account(srv, "a", alice, "alice-pw", "auto")
	b := account(srv, "b", bob, "bob-pw", "auto")
	rt, tr := hygieneTarget(a, a), hygieneTarget(a, b)
	for _, tg := range []*Target{rt, tr} {
		tg.DeliveryTimeout = 2 * time.Second
		tg.Timeout = 6 * time.Second
		tg.PollInterval = 200 * time.Millisecond
	}
	keep := p == mailtest.PersonalityNoUIDPlus // nothing can remove a probe alone there
	if keep {
		rt.Cleanup, tr.Cleanup = CleanupKeep, CleanupKeep
	}

	// The user's mail, in every folder the receiver may look at.
	now := time.Now()
	folders := []string{"INBOX", srv.TrashFolder(), srv.JunkFolder()}
	if p == mailtest.PersonalityGmail {
		folders = append(folders, mailtest.GmailAllMail)
	}
	for i, m := range mailtest.GenerateUserMail(alice, 15, 7, now) {
		require.NoError(t, srv.AppendTo(alice, folders[i%3], m.Raw, m.Flags))
	}
	for _, m := range mailtest.GenerateUserMail(bob, 5, 8, now) {
		require.NoError(t, srv.Append(bob, m.Raw, m.Flags))
	}
	before := map[string]map[imap.UID]mailtest.Message{}
	for _, f := range folders {
		before[f] = folderSnapshot(t, srv, alice, f)
	}
	bobBefore := snapshot(t, srv, bob)
	orphan, _ := probeAt(t, a, now.Add(-48*time.Hour), a.MACKey)
	require.NoError(t, srv.Append(alice, orphan, nil))

	within := func(r Result, rcpt string) {
		t.Helper()
		truth := arr.last(t, rcpt).Sub(r.AcceptedAt)
		diff := (r.DeliveryLatency - truth).Abs()
		// 25 ms: the goroutine switches between the server's append and
		// the instant it reports, and the client's receipt of EXISTS.
		assert.LessOrEqual(t, diff, r.Uncertainty+25*time.Millisecond,
			"reported %v ± %v (%s), true %v", r.DeliveryLatency, r.Uncertainty, r.Method, truth)
	}

	r1 := Run(context.Background(), rt, nil)
	require.NoError(t, r1.Err, "round trip")
	within(r1, alice)
	if !keep {
		assert.Equal(t, 1, r1.Swept, "the orphan was swept")
	}

	probes := 3 // sent to alice, besides the orphan
	if lateProbe {
		r2 := Run(context.Background(), rt, nil)
		require.Equal(t, steps.CodeSearch, r2.Code, "the held probe is not found in time: %v", r2.Err)
		late := h.token(t, alice, 2)
		h.release(late)
		waitVisible(t, srv, alice, late)
	} else {
		probes = 2
	}

	r3 := Run(context.Background(), tr, nil)
	require.NoError(t, r3.Err, "transit")
	within(r3, bob)

	r4 := Run(context.Background(), rt, nil)
	require.NoError(t, r4.Err, "round trip after the late probe")
	within(r4, alice)
	if lateProbe {
		assert.Equal(t, 1, r4.Late, "the late probe was found")
	}

	for _, f := range folders {
		after := folderSnapshot(t, srv, alice, f)
		requireUnchanged(t, before[f], after, f)
		if keep {
			continue
		}
		assert.Equal(t, len(before[f]), len(after), "%s holds exactly the user's mail: no probe left", f)
		assert.Zero(t, probesIn(after, a.MACKey), "%s: a probe is left", f)
	}
	bobAfter := snapshot(t, srv, bob)
	requireUnchanged(t, bobBefore, bobAfter, "bob's INBOX")
	if keep {
		// The orphan and the probes stay, as configured.
		assert.Equal(t, len(before["INBOX"])+1+probes, len(snapshot(t, srv, alice)))
		assert.Equal(t, len(bobBefore)+1, len(bobAfter))
		return
	}
	assert.Equal(t, len(bobBefore), len(bobAfter), "the transit probe is gone")
}

// A server's session cap, in Dovecot's and in Gmail's words, is a limit
// (code 3 type limit), not a failed login.
func TestSessionCapIsLimit(t *testing.T) {
	for _, p := range []mailtest.Personality{"", mailtest.PersonalityGmail} {
		t.Run(string(p)+"cap", func(t *testing.T) {
			srv := startMail(t, mailtest.Options{Personality: p, MaxSessions: 1, DeliveryDelay: 30 * time.Millisecond})
			c, err := imapclient.DialInsecure(srv.IMAPAddr(), nil)
			require.NoError(t, err)
			defer c.Close()
			require.NoError(t, c.Login(alice, "alice-pw").Wait())
			a := account(srv, "a", alice, "alice-pw", "auto")
			r := Run(context.Background(), target(a, a), nil)
			assert.Equal(t, steps.CodeMailboxConnect, r.Code, "%v", r.Err)
			assert.Equal(t, steps.TypeLimit, r.ErrorType, "%v", r.Err)
		})
	}
}
