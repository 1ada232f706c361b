package probe

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/emailqos/emailqosreceiver/internal/imapwatch"
	"github.com/emailqos/emailqosreceiver/internal/mailtest"
	"github.com/emailqos/emailqosreceiver/internal/probemsg"
	"github.com/emailqos/emailqosreceiver/internal/saslx"
	"github.com/emailqos/emailqosreceiver/internal/steps"
)

// holder holds chosen deliveries of the test mail system back until they
// are released: the probe times out, and the message lands later.
type holder struct {
	mu sync.Mutex
	// hold decides, per sender, which of its deliveries (1-based) to hold.
	hold map[string]map[int]bool
	// inject, when set, runs before a delivery is held or made.
	inject func(sender string, n int, msg []byte)
	count  map[string]int
	held   map[string]chan struct{} // by token
	tokens map[string][]string      // tokens of each sender's deliveries, in order
}

func newHolder() *holder {
	return &holder{
		hold:   map[string]map[int]bool{},
		count:  map[string]int{},
		held:   map[string]chan struct{}{},
		tokens: map[string][]string{},
	}
}

func (h *holder) onDeliver(_ string, msg []byte) error {
	sender, token := senderOf(msg), tokenOf(msg)
	h.mu.Lock()
	h.count[sender]++
	n := h.count[sender]
	h.tokens[sender] = append(h.tokens[sender], token)
	var release chan struct{}
	if h.hold[sender][n] {
		release = make(chan struct{})
		h.held[token] = release
	}
	inject := h.inject
	h.mu.Unlock()
	if inject != nil {
		inject(sender, n, msg)
	}
	if release != nil {
		<-release
	}
	return nil
}

// token returns the token of sender's n-th delivery.
func (h *holder) token(t *testing.T, sender string, n int) string {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	require.GreaterOrEqual(t, len(h.tokens[sender]), n, "delivery %d of %s not made yet", n, sender)
	return h.tokens[sender][n-1]
}

func (h *holder) release(token string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if ch, ok := h.held[token]; ok {
		close(ch)
		delete(h.held, token)
	}
}

// releaseAll lets every held delivery go, so that the server can stop.
func (h *holder) releaseAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for tok, ch := range h.held {
		close(ch)
		delete(h.held, tok)
	}
}

// startHeld starts the mail system with h and registers the release of held
// deliveries to run before the server is closed.
func startHeld(t *testing.T, h *holder) *mailtest.Server {
	t.Helper()
	// The delay keeps a delivery from becoming visible before the client has
	// read the server's 250 (the test server queues before replying), which
	// the probe rightly reports as an impossible arrival.
	srv := startMail(t, mailtest.Options{DeliveryDelay: 30 * time.Millisecond, OnDeliver: h.onDeliver})
	t.Cleanup(h.releaseAll) // cleanups run last-in first-out: before Close
	return srv
}

func headerValue(msg []byte, name string) string {
	for line := range strings.SplitSeq(string(msg), "\r\n") {
		if line == "" {
			break
		}
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func tokenOf(msg []byte) string { return headerValue(msg, probemsg.TokenHeader) }

func senderOf(msg []byte) string {
	return strings.Trim(headerValue(msg, "From"), "<>")
}

// waitVisible waits until a message carrying token is in user's INBOX.
func waitVisible(t *testing.T, srv *mailtest.Server, user, token string) {
	t.Helper()
	require.Eventually(t, func() bool {
		msgs, err := srv.Mailbox(user)
		require.NoError(t, err)
		for _, m := range msgs {
			if tokenOf(m.Raw) == token {
				return true
			}
		}
		return false
	}, 5*time.Second, 5*time.Millisecond, "message %s never landed", token)
}

// hygieneTarget is a target with a short delivery timeout, so that held
// deliveries time out quickly, and the sweep on.
func hygieneTarget(sender, receiver *Account) *Target {
	tg := target(sender, receiver)
	tg.DeliveryTimeout = 300 * time.Millisecond
	tg.PollInterval = 100 * time.Millisecond
	tg.Timeout = 3 * time.Second
	tg.OrphanAge = 24 * time.Hour
	receiver.SweepInterval = time.Hour
	return tg
}

// probeAt builds a probe to receiver sent at the given time, with key.
func probeAt(t *testing.T, receiver *Account, sentAt time.Time, key []byte) ([]byte, probemsg.Probe) {
	t.Helper()
	p, err := probemsg.New(receiver.Address, receiver.Address, "seeded", sentAt)
	require.NoError(t, err)
	return p.Build(key), p
}

// badMAC returns a copy of a probe with the last digit of its MAC changed.
func badMAC(msg []byte) []byte {
	i := bytes.Index(msg, []byte(probemsg.MACHeader+": "))
	end := i + bytes.Index(msg[i:], []byte("\r\n"))
	out := bytes.Clone(msg)
	if out[end-1] == '0' {
		out[end-1] = '1'
	} else {
		out[end-1] = '0'
	}
	return out
}

// snapshot indexes a mailbox by UID, with sorted flags.
func snapshot(t *testing.T, srv *mailtest.Server, user string) map[imap.UID]mailtest.Message {
	t.Helper()
	msgs, err := srv.Mailbox(user)
	require.NoError(t, err)
	out := make(map[imap.UID]mailtest.Message, len(msgs))
	for _, m := range msgs {
		slices.Sort(m.Flags)
		out[m.UID] = m
	}
	return out
}

// requireUnchanged checks that every message of before is still in after,
// byte for byte, with exactly its flags and date.
func requireUnchanged(t *testing.T, before, after map[imap.UID]mailtest.Message, what string) {
	t.Helper()
	for uid, b := range before {
		a, ok := after[uid]
		require.True(t, ok, "%s: message %d is gone", what, uid)
		require.True(t, bytes.Equal(b.Raw, a.Raw), "%s: message %d changed", what, uid)
		require.Equal(t, b.Flags, a.Flags, "%s: flags of message %d changed", what, uid)
		require.True(t, b.InternalDate.Equal(a.InternalDate), "%s: date of message %d changed", what, uid)
	}
}

func TestLateProbeIsFoundCountedAndRemoved(t *testing.T) {
	h := newHolder()
	h.hold[alice] = map[int]bool{1: true}
	srv := startHeld(t, h)
	a := account(srv, "a", alice, "alice-pw", "idle")
	tg := hygieneTarget(a, a)
	require.NoError(t, srv.Append(alice, []byte("From: x@y.test\r\nSubject: keep me\r\n\r\nuser mail\r\n"), []imap.Flag{imap.FlagDeleted}))
	user := snapshot(t, srv, alice)

	r1 := Run(context.Background(), tg, nil)
	require.Error(t, r1.Err)
	require.Equal(t, steps.CodeSearch, r1.Code)
	require.Equal(t, steps.TypeNotFound, r1.ErrorType)
	assert.Zero(t, r1.Late)

	late := h.token(t, alice, 1)
	h.release(late)
	waitVisible(t, srv, alice, late)

	r2 := Run(context.Background(), tg, nil)
	require.NoError(t, r2.Err)
	assert.Equal(t, steps.CodeOK, r2.Code)
	assert.Equal(t, 1, r2.Late, "the probe of run 1 arrived late and was found by run 2")
	assert.Zero(t, r2.Swept)
	after := snapshot(t, srv, alice)
	requireUnchanged(t, user, after, "user mail")
	assert.Len(t, after, len(user), "no probe is left")

	r3 := Run(context.Background(), tg, nil)
	require.NoError(t, r3.Err)
	assert.Zero(t, r3.Late, "a late probe is counted once")
}

func TestOrphanSweep(t *testing.T) {
	srv := startMail(t, mailtest.Options{DeliveryDelay: 30 * time.Millisecond})
	a := account(srv, "a", alice, "alice-pw", "idle")
	tg := hygieneTarget(a, a)
	now := time.Now()

	orphan, _ := probeAt(t, a, now.Add(-48*time.Hour), a.MACKey)
	young, _ := probeAt(t, a, now.Add(-time.Minute), a.MACKey)
	forged := badMAC(orphan)
	otherKey, _ := probeAt(t, a, now.Add(-48*time.Hour), probemsg.DeriveKey([]byte("another secret"), alice))
	lookalike := []byte("From: someone@y.test\r\nSubject: emailqos probe eqaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\nnot a probe\r\n")
	for i, m := range [][]byte{orphan, young, forged, otherKey, lookalike} {
		var flags []imap.Flag
		if i%2 == 0 {
			flags = []imap.Flag{imap.FlagSeen}
		}
		require.NoError(t, srv.Append(alice, m, flags))
	}
	before := snapshot(t, srv, alice)
	var orphanUID imap.UID
	for uid, m := range before {
		if bytes.Equal(m.Raw, orphan) {
			orphanUID = uid
		}
	}
	require.NotZero(t, orphanUID)

	r := Run(context.Background(), tg, nil)
	require.NoError(t, r.Err)
	assert.Equal(t, 1, r.Swept)
	after := snapshot(t, srv, alice)
	assert.NotContains(t, after, orphanUID, "the old probe was swept")
	delete(before, orphanUID)
	requireUnchanged(t, before, after, "not an orphan of this receiver")
	assert.Len(t, after, len(before))

	// Not again within sweep_interval, even with a new orphan.
	require.NoError(t, srv.Append(alice, orphan, nil))
	r = Run(context.Background(), tg, nil)
	require.NoError(t, r.Err)
	assert.Zero(t, r.Swept)
	assert.Len(t, snapshot(t, srv, alice), len(before)+1)
}

func TestKeepModeCountsLateButKeeps(t *testing.T) {
	h := newHolder()
	h.hold[alice] = map[int]bool{1: true}
	srv := startHeld(t, h)
	a := account(srv, "a", alice, "alice-pw", "idle")
	tg := hygieneTarget(a, a)
	tg.Cleanup = CleanupKeep
	a.SweepInterval = time.Nanosecond
	orphan, _ := probeAt(t, a, time.Now().Add(-48*time.Hour), a.MACKey)
	require.NoError(t, srv.Append(alice, orphan, nil))

	r1 := Run(context.Background(), tg, nil)
	require.Equal(t, steps.CodeSearch, r1.Code, "error: %v", r1.Err)
	late := h.token(t, alice, 1)
	h.release(late)
	waitVisible(t, srv, alice, late)

	r2 := Run(context.Background(), tg, nil)
	require.NoError(t, r2.Err)
	assert.Equal(t, 1, r2.Late)
	assert.Zero(t, r2.Swept, "no sweep in keep mode")
	r3 := Run(context.Background(), tg, nil)
	require.NoError(t, r3.Err)
	assert.Zero(t, r3.Late, "counted once, then forgotten")
	assert.Zero(t, r3.Swept)

	msgs := snapshot(t, srv, alice)
	assert.Len(t, msgs, 4, "the orphan, the late probe and both kept probes are all still there")
	var tokens []string
	for _, m := range msgs {
		tokens = append(tokens, tokenOf(m.Raw))
	}
	assert.Contains(t, tokens, late)
}

func TestMoveModeMovesLateAndOrphans(t *testing.T) {
	h := newHolder()
	h.hold[alice] = map[int]bool{1: true}
	srv := startHeld(t, h)
	a := account(srv, "a", alice, "alice-pw", "poll")
	tg := hygieneTarget(a, a)
	tg.Cleanup, tg.CleanupFolder = CleanupMove, "Trash"
	a.SweepInterval = time.Nanosecond
	require.NoError(t, srv.Append(alice, []byte("Subject: user's\r\n\r\nx\r\n"), []imap.Flag{imap.FlagDeleted}))
	user := snapshot(t, srv, alice)

	r1 := Run(context.Background(), tg, nil)
	require.Equal(t, steps.CodeSearch, r1.Code, "error: %v", r1.Err)
	late := h.token(t, alice, 1)
	orphan, _ := probeAt(t, a, time.Now().Add(-48*time.Hour), a.MACKey)
	require.NoError(t, srv.Append(alice, orphan, nil))
	h.release(late)
	waitVisible(t, srv, alice, late)

	r2 := Run(context.Background(), tg, nil)
	require.NoError(t, r2.Err)
	assert.Equal(t, 1, r2.Late)
	assert.Equal(t, 1, r2.Swept)
	after := snapshot(t, srv, alice)
	requireUnchanged(t, user, after, "user mail")
	assert.Len(t, after, len(user))
}

// TestHygieneNeverTouchesUserMail is the acceptance test of mailbox hygiene:
// a mailbox full of ordinary mail, look-alikes and forgeries, flagged by its
// user, goes through many probes of two targets at once, some timing out and
// arriving late, with forged copies of live probes injected; afterwards every
// ordinary message is there byte for byte with exactly its flags, every
// forgery is still there, and no probe of the receiver is left.
func TestHygieneNeverTouchesUserMail(t *testing.T) {
	const iterations = 30
	h := newHolder()
	// Each target's held deliveries: timed out, then late.
	h.hold[alice] = map[int]bool{3: true, 11: true, 19: true}
	h.hold[bob] = map[int]bool{6: true, 14: true}
	srv := startHeld(t, h)
	a := account(srv, "a", alice, "alice-pw", "idle")
	b := account(srv, "b", bob, "bob-pw", "idle")
	// A round trip and a transit into the same mailbox: two targets sweep
	// and search it concurrently.
	rt, tr := hygieneTarget(a, a), hygieneTarget(b, a)
	a.SweepInterval = time.Nanosecond

	rng := rand.New(rand.NewPCG(1, 2))
	now := time.Now()
	randToken := func() string {
		const alphabet = "abcdefghijklmnopqrstuvwxyz234567"
		var sb strings.Builder
		sb.WriteString("eq")
		for range 26 {
			sb.WriteByte(alphabet[rng.IntN(len(alphabet))])
		}
		return sb.String()
	}
	randHex := func(n int) string {
		var sb strings.Builder
		for range n {
			fmt.Fprintf(&sb, "%x", rng.IntN(16))
		}
		return sb.String()
	}
	otherKey := probemsg.DeriveKey([]byte("someone else's secret"), alice)
	var forgeries [][]byte
	for i := range 300 {
		var hdr strings.Builder
		fmt.Fprintf(&hdr, "From: sender%d@example.test\r\nTo: %s\r\nDate: %s\r\nMessage-ID: <m%d@example.test>\r\n",
			i, alice, now.Add(-time.Duration(i)*time.Hour).Format(time.RFC1123Z), i)
		forged := false
		switch i % 6 {
		case 0:
			fmt.Fprintf(&hdr, "Subject: Re: meeting %d\r\n", i)
		case 1:
			fmt.Fprintf(&hdr, "Subject: emailqos probe %s\r\n", randToken())
		case 2:
			// Forged probe headers: a token, an old send time, a MAC
			// nobody computed.
			fmt.Fprintf(&hdr, "Subject: emailqos probe\r\n%s: %s\r\n%s: %s\r\n%s: %s\r\n",
				probemsg.TokenHeader, randToken(), probemsg.SentHeader, now.Add(-72*time.Hour).UTC().Format(time.RFC3339Nano),
				probemsg.MACHeader, randHex(64))
			forged = true
		case 3:
			fmt.Fprintf(&hdr, "Subject: token talk\r\n%s: not%sprobe\r\n", probemsg.TokenHeader, randToken())
		case 4:
			fmt.Fprintf(&hdr, "Subject: body only\r\n")
		case 5:
			fmt.Fprintf(&hdr, "Subject: tokens without MAC\r\n%s: %s\r\n", probemsg.TokenHeader, randToken())
			forged = true
		}
		body := strings.Repeat(fmt.Sprintf("line %d of an ordinary message, X-Emailqos-Token: %s\r\n", i, randToken()), rng.IntN(100))
		raw := []byte(hdr.String() + "\r\n" + body)
		var flags []imap.Flag
		if rng.IntN(4) == 0 {
			flags = append(flags, imap.FlagDeleted)
		}
		if rng.IntN(2) == 0 {
			flags = append(flags, imap.FlagSeen)
		}
		if rng.IntN(8) == 0 {
			flags = append(flags, imap.FlagFlagged)
		}
		require.NoError(t, srv.Append(alice, raw, flags))
		if forged {
			forgeries = append(forgeries, raw)
		}
	}
	// Probes of another key and tampered ones, old enough to sweep were
	// they this receiver's.
	for range 5 {
		m, _ := probeAt(t, a, now.Add(-48*time.Hour), otherKey)
		require.NoError(t, srv.Append(alice, m, []imap.Flag{imap.FlagSeen}))
		forgeries = append(forgeries, m)
		m, _ = probeAt(t, a, now.Add(-48*time.Hour), a.MACKey)
		m = badMAC(m)
		require.NoError(t, srv.Append(alice, m, nil))
		forgeries = append(forgeries, m)
	}
	ordinary := snapshot(t, srv, alice)
	// Genuine orphans of this receiver: the sweep's to remove.
	const orphans = 4
	for i := range orphans {
		m, _ := probeAt(t, a, now.Add(-time.Duration(25+i)*time.Hour), a.MACKey)
		require.NoError(t, srv.Append(alice, m, nil))
	}

	// Forged copies (same token, bad MAC) of live probes, injected while
	// they are delivered: one of a probe that arrives in time, one of a
	// probe that is held and arrives late.
	var injectMu sync.Mutex
	var injected [][]byte
	h.mu.Lock()
	h.inject = func(sender string, n int, msg []byte) {
		if (sender == alice && (n == 7 || n == 11)) || (sender == bob && n == 14) {
			f := badMAC(msg)
			injectMu.Lock()
			injected = append(injected, f)
			injectMu.Unlock()
			assert.NoError(t, srv.Append(alice, f, nil))
		}
	}
	h.mu.Unlock()

	held := func(sender string) map[int]bool { return h.hold[sender] }
	var late, swept int
	start := time.Now()
	for i := 1; i <= iterations; i++ {
		var wg sync.WaitGroup
		var rr, tt Result
		wg.Go(func() { rr = Run(context.Background(), rt, nil) })
		wg.Go(func() { tt = Run(context.Background(), tr, nil) })
		wg.Wait()
		for _, x := range []struct {
			r      Result
			sender string
		}{{rr, alice}, {tt, bob}} {
			if held(x.sender)[i] {
				require.Equal(t, steps.CodeSearch, x.r.Code, "%s run %d: error %v", x.sender, i, x.r.Err)
			} else {
				require.NoError(t, x.r.Err, "%s run %d", x.sender, i)
			}
			late += x.r.Late
			swept += x.r.Swept
		}
		// Held deliveries land one run later: they stay outstanding over a
		// run that does not find them.
		for _, sender := range []string{alice, bob} {
			if held(sender)[i-1] {
				tok := h.token(t, sender, i-1)
				h.release(tok)
				waitVisible(t, srv, alice, tok)
			}
		}
	}
	t.Logf("%d iterations of two targets in %s", iterations, time.Since(start))

	assert.Equal(t, 5, late, "every held probe was counted late, once")
	assert.GreaterOrEqual(t, swept, orphans, "every orphan was swept (two concurrent sweeps may both count one)")

	after := snapshot(t, srv, alice)
	requireUnchanged(t, ordinary, after, "ordinary message")
	injectMu.Lock()
	require.Len(t, injected, 3)
	forgeries = append(forgeries, injected...)
	injectMu.Unlock()
	for _, f := range forgeries {
		found := false
		for _, m := range after {
			if bytes.Equal(m.Raw, f) {
				found = true
				break
			}
		}
		require.True(t, found, "a message whose HMAC does not verify was removed:\n%s", f)
	}
	for _, m := range after {
		_, err := probemsg.Parse(m.Raw, a.MACKey)
		require.Error(t, err, "a probe of this receiver was left: %s", tokenOf(m.Raw))
	}
	assert.Len(t, after, len(ordinary)+len(injected), "only ordinary mail and the forged copies are left")
}

// Housekeeping that fails is logged, leaves the result alone and keeps the
// late probe for the next run.
func TestHousekeepingFailureIsOnlyLogged(t *testing.T) {
	srv := startMail(t, mailtest.Options{})
	a := account(srv, "a", alice, "alice-pw", "poll")
	tg := hygieneTarget(a, a)
	tg.remember(lateProbe{token: "eqaaaaaaaaaaaaaaaaaaaaaaaaaa", sentAt: time.Now()})
	sess, err := imapwatch.Open(context.Background(), imapwatch.Options{
		Endpoint: a.IMAP, Credentials: saslx.Credentials{Username: a.Username, Password: a.Password}, AllowPlaintextAuth: true,
	}, nil)
	require.NoError(t, err)
	// A closed session fails every command the housekeeping tries.
	require.NoError(t, sess.Close(context.Background()))

	core, logs := observer.New(zap.WarnLevel)
	res := Result{Code: steps.CodeOK}
	housekeep(context.Background(), tg, imapMailbox{sess}, &res, zap.New(core))
	assert.Equal(t, Result{Code: steps.CodeOK}, res)
	require.Equal(t, 2, logs.Len(), "one warning for the late probes, one for the sweep")
	for _, e := range logs.All() {
		assert.NotContains(t, fmt.Sprint(e.ContextMap()), "alice-pw")
	}
	assert.Len(t, tg.outstanding(time.Now()), 1, "the late probe is looked for again next run")
}
