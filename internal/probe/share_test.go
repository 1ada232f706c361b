package probe

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/emailqos/emailqosreceiver/internal/mailtest"
	"github.com/emailqos/emailqosreceiver/internal/probemsg"
	"github.com/emailqos/emailqosreceiver/internal/steps"
)

// targetVisibility records when each probe became visible, by target name
// (one probe per target per collection).
type targetVisibility struct {
	mu sync.Mutex
	at map[string]time.Time
}

func (v *targetVisibility) record(_ string, msg []byte, at time.Time) {
	name := targetHeader(msg, probemsg.TargetHeader)
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.at == nil {
		v.at = map[string]time.Time{}
	}
	v.at[name] = at
}

func (v *targetVisibility) take(t *testing.T, name string) time.Time {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		v.mu.Lock()
		at, ok := v.at[name]
		if ok {
			delete(v.at, name)
		}
		v.mu.Unlock()
		if ok {
			return at
		}
		require.True(t, time.Now().Before(deadline), "no delivery recorded for %s", name)
		time.Sleep(time.Millisecond)
	}
}

func targetHeader(msg []byte, name string) string {
	for _, line := range bytes.Split(msg, []byte("\r\n")) {
		if len(line) == 0 {
			break
		}
		if k, v, ok := bytes.Cut(line, []byte(":")); ok && string(k) == name {
			return string(bytes.TrimSpace(v))
		}
	}
	return ""
}

// meshTruthSlack is truth_test.go's truthSlack (which race builds leave
// out): the server's goroutine switch between the append and its record.
const meshTruthSlack = 2 * time.Millisecond

type meshRun struct {
	results []Result
	logins  map[string]int // per mailbox, during the collection
	cmds    int
}

// runMesh runs one collection of every direction between accounts at once.
func runMesh(t *testing.T, srv *mailtest.Server, accounts []*Account, dsn bool) meshRun {
	t.Helper()
	before := map[string]int{}
	for _, a := range accounts {
		before[a.Address] = srv.Logins(a.Address)
	}
	var (
		mu  sync.Mutex
		wg  sync.WaitGroup
		out meshRun
	)
	start := make(chan struct{})
	for _, s := range accounts {
		for _, r := range accounts {
			tg := target(s, r)
			tg.DeliveryTimeout, tg.Timeout, tg.DSN = 20*time.Second, 30*time.Second, dsn
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				res := Run(context.Background(), tg, nil)
				mu.Lock()
				out.results = append(out.results, res)
				out.cmds += res.Commands
				mu.Unlock()
			}()
		}
	}
	close(start)
	wg.Wait()
	out.logins = map[string]int{}
	for _, a := range accounts {
		out.logins[a.Address] = srv.Logins(a.Address) - before[a.Address]
	}
	return out
}

func meshAccounts(srv *mailtest.Server, users []mailtest.User, share bool) []*Account {
	accounts := make([]*Account, len(users))
	for i, u := range users {
		accounts[i] = account(srv, fmt.Sprintf("m%d", i), u.Address, u.Password, "auto")
		accounts[i].ShareSession = share
	}
	return accounts
}

func meshUsers(n int) []mailtest.User {
	var users []mailtest.User
	for i := range n {
		users = append(users, mailtest.User{Address: fmt.Sprintf("m%d@mesh.test", i), Password: fmt.Sprintf("pw%d", i)})
	}
	return users
}

// Issue 15: in a 10-account mesh whose accounts share their session, each
// mailbox is logged in to once per collection (not once per probe reading
// it, nor once more per transit watching its sender for bounces), every
// probe succeeds, and each latency holds the truth within its uncertainty.
// Only the first probe of a mailbox has a login step; the probes' commands
// add up to the sessions' commands.
func TestSharedMeshOneLoginPerMailbox(t *testing.T) {
	const n = 10
	vis := &targetVisibility{}
	users := meshUsers(n)
	// Each delivery held 300 ms, so that every probe of a collection has
	// started (and joined) before the first is done with its mailbox, even
	// on a busy machine: a probe that starts after all the others left
	// would rightly open a new session.
	srv := startMail(t, mailtest.Options{Users: users, DeliveryDelay: 300 * time.Millisecond, OnVisibleMessage: vis.record})
	accounts := meshAccounts(srv, users, true)
	for c := range 2 {
		run := runMesh(t, srv, accounts, true)
		require.Len(t, run.results, n*n)
		logins := map[string]int{}
		for _, r := range run.results {
			require.NoError(t, r.Err, r.Target.Name)
			if hasStep(r, steps.IMAPLogin) {
				logins[r.Target.Receiver.Address]++
			}
			truth := vis.take(t, r.Target.Name).Sub(r.AcceptedAt)
			e := r.DeliveryLatency - truth
			if e < 0 {
				e = -e
			}
			if !raceEnabled {
				assert.LessOrEqual(t, e, r.Uncertainty+meshTruthSlack, "%s by %s: reported %s ±%s, truth %s",
					r.Target.Name, r.Method, r.DeliveryLatency, r.Uncertainty, truth)
			}
		}
		for _, a := range accounts {
			assert.Equal(t, 1, run.logins[a.Address], "collection %d: logins to %s", c+1, a.Address)
			// One probe reports the session's login: the one that opened
			// it, or, when a transit's bounce watch opened it, the first
			// that read the mailbox.
			assert.Equal(t, 1, logins[a.Address], "probes of %s with a login step", a.Address)
			// The server counts the session out when it has read the
			// LOGOUT, which may be just after the probe returned.
			assert.Eventually(t, func() bool { return srv.Sessions(a.Address) == 0 }, 2*time.Second, time.Millisecond, "logged out after the collection")
		}
		t.Logf("collection %d: %d probes, %d IMAP commands (%.1f per probe), %d IMAP logins",
			c+1, len(run.results), run.cmds, float64(run.cmds)/float64(len(run.results)), sumValues(run.logins))
	}
	// Every probe removed its own message, nothing else is left.
	for _, a := range accounts {
		msgs, err := srv.Mailbox(a.Address)
		require.NoError(t, err)
		assert.Empty(t, msgs, a.Address)
	}
}

func hasStep(r Result, step string) bool {
	for _, tm := range r.Timings {
		if tm.Step == step {
			return true
		}
	}
	return false
}

func sumValues(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// Probes of one mailbox that share its session while the server drops
// every IMAP connection mid-wait: the session reconnects once for all of
// them, and each probe is still found, inside its own window.
func TestSharedSessionDroppedMidWait(t *testing.T) {
	release := make(chan struct{})
	srv := startMail(t, mailtest.Options{DeliveryDelay: 30 * time.Millisecond,
		OnDeliver: func(string, []byte) error { <-release; return nil }})
	a := account(srv, "a", alice, "alice-pw", "idle")
	b := account(srv, "b", bob, "bob-pw", "idle")
	a.ShareSession, b.ShareSession = true, true
	var wg sync.WaitGroup
	results := make([]Result, 0, 2)
	var mu sync.Mutex
	for _, s := range []*Account{a, b} {
		tg := target(s, a)
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := Run(context.Background(), tg, nil)
			mu.Lock()
			results = append(results, r)
			mu.Unlock()
		}()
	}
	// Both probes are sent and waiting (their deliveries held) before the
	// connection is dropped.
	require.Eventually(t, func() bool { return srv.Sessions(alice) == 1 }, 5*time.Second, time.Millisecond)
	time.Sleep(200 * time.Millisecond)
	before := srv.Logins(alice)
	srv.DropIMAP()
	time.Sleep(100 * time.Millisecond)
	released := time.Now()
	close(release)
	wg.Wait()
	require.Len(t, results, 2)
	for _, r := range results {
		require.NoError(t, r.Err, r.Target.Name)
		assert.True(t, r.Delivered)
		// Delivered only after the reconnect: its window ends after that.
		assert.False(t, r.ArrivedAt.Add(r.Uncertainty).Before(released), "window ends %s before the delivery", released.Sub(r.ArrivedAt.Add(r.Uncertainty)))
	}
	assert.Equal(t, 1, srv.Logins(alice)-before, "one reconnect for both probes")
	msgs, err := srv.Mailbox(alice)
	require.NoError(t, err)
	assert.Empty(t, msgs)
}

// A session failure fails every probe waiting on it with the code of its
// step: here the server stops, so the reconnect fails (code 3).
func TestSharedSessionFailureFailsAllWaiters(t *testing.T) {
	srv := startMail(t, mailtest.Options{Blackhole: true})
	a := account(srv, "a", alice, "alice-pw", "idle")
	b := account(srv, "b", bob, "bob-pw", "idle")
	a.ShareSession, b.ShareSession = true, true
	var wg sync.WaitGroup
	results := make(chan Result, 2)
	for _, s := range []*Account{a, b} {
		tg := target(s, a)
		wg.Add(1)
		go func() {
			defer wg.Done()
			results <- Run(context.Background(), tg, nil)
		}()
	}
	require.Eventually(t, func() bool { return srv.Sessions(alice) == 1 }, 5*time.Second, time.Millisecond)
	time.Sleep(300 * time.Millisecond) // both sent (black-holed) and waiting
	srv.StopIMAP()
	wg.Wait()
	close(results)
	for r := range results {
		require.Error(t, r.Err, r.Target.Name)
		assert.Equal(t, steps.CodeMailboxConnect, r.Code, "%s: %v", r.Target.Name, r.Err)
	}
}

// A probe that joins a session already waiting for another gets its own
// baseline and its own window: the mail that came before it joined is
// not its, and its window starts at its own end of DATA.
func TestSharedLateJoinerOwnBaselineAndWindow(t *testing.T) {
	srv := startMail(t, mailtest.Options{DeliveryDelay: 30 * time.Millisecond})
	a := account(srv, "a", alice, "alice-pw", "poll")
	a.ShareSession = true
	// The first probe holds the session: a black-holed one waits its
	// whole delivery timeout.
	first := target(a, a)
	first.DeliveryTimeout, first.Timeout = 3*time.Second, 6*time.Second
	srv.SetFaults(mailtest.Faults{Blackhole: true})
	done := make(chan Result, 1)
	go func() { done <- Run(context.Background(), first, nil) }()
	require.Eventually(t, func() bool { return srv.Sessions(alice) == 1 }, 5*time.Second, time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	srv.SetFaults(mailtest.Faults{})
	// Mail that arrives while the first waits, before the second joins.
	for range 3 {
		require.NoError(t, srv.Append(alice, []byte("From: x@example.com\r\nSubject: hello\r\n\r\nbody\r\n"), nil))
	}
	time.Sleep(300 * time.Millisecond)
	logins := srv.Logins(alice)
	b := account(srv, "b", bob, "bob-pw", "poll")
	second := target(b, a)
	joinedAt := time.Now()
	r := Run(context.Background(), second, nil)
	require.NoError(t, r.Err)
	assert.Equal(t, logins, srv.Logins(alice), "the second probe joined the open session")
	assert.False(t, hasStep(r, steps.IMAPLogin), "a probe that joins has no login step")
	assert.True(t, r.Delivered)
	// Its window starts at its own end of DATA, after it joined, not at
	// the first probe's.
	assert.True(t, r.ArrivedAt.Add(-r.Uncertainty).After(joinedAt), "window %s ± %s starts after the join at %s", r.ArrivedAt, r.Uncertainty, joinedAt)
	assert.Less(t, r.Uncertainty, 1*time.Second)
	f := <-done
	require.Error(t, f.Err)
	assert.Equal(t, steps.TypeNotFound, f.ErrorType)
	// The three messages of somebody else are untouched.
	msgs, err := srv.Mailbox(alice)
	require.NoError(t, err)
	assert.Len(t, msgs, 3)
}

// A transit's bounce watch may open its sender's mailbox session before
// any probe reads that mailbox; its steps are not a probe's, so the first
// probe that reads the mailbox reports that login, once: the mailbox's
// login is measured in every collection, whoever opened the session.
func TestSharedLoginOpenedByBounceWatchIsReported(t *testing.T) {
	srv := startMail(t, mailtest.Options{DeliveryDelay: 30 * time.Millisecond})
	a := account(srv, "a", alice, "alice-pw", "poll")
	b := account(srv, "b", bob, "bob-pw", "poll")
	a.ShareSession, b.ShareSession = true, true
	// The transit a:b waits for a message that never comes (b's delivery
	// black-holed), watching a's mailbox for bounces all along.
	tr := target(a, b)
	tr.DSN = true
	tr.DeliveryTimeout, tr.Timeout = 3*time.Second, 6*time.Second
	srv.SetFaults(mailtest.Faults{Blackhole: true})
	done := make(chan Result, 1)
	go func() { done <- Run(context.Background(), tr, nil) }()
	require.Eventually(t, func() bool { return srv.Sessions(alice) == 1 }, 5*time.Second, time.Millisecond,
		"the bounce watch opened a's mailbox")
	srv.SetFaults(mailtest.Faults{})
	logins := srv.Logins(alice)

	rt := target(a, a)
	r1 := Run(context.Background(), rt, nil)
	require.NoError(t, r1.Err)
	assert.Equal(t, logins, srv.Logins(alice), "the round trip joined the open session")
	assert.True(t, hasStep(r1, steps.IMAPLogin), "the first probe reading the mailbox reports its login: %v", stepNames(r1))
	assert.True(t, hasStep(r1, steps.IMAPConnect), "and its connect: %v", stepNames(r1))

	// Only once: a second probe joining the same session has none.
	if srv.Sessions(alice) == 1 {
		r2 := Run(context.Background(), rt, nil)
		require.NoError(t, r2.Err)
		if srv.Logins(alice) == logins {
			assert.False(t, hasStep(r2, steps.IMAPLogin), "reported once: %v", stepNames(r2))
		}
	}
	<-done
}
