package probe

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/emailqos/emailqosreceiver/internal/imapwatch"
	"github.com/emailqos/emailqosreceiver/internal/mailtest"
	"github.com/emailqos/emailqosreceiver/internal/pop3test"
	"github.com/emailqos/emailqosreceiver/internal/probemsg"
	"github.com/emailqos/emailqosreceiver/internal/steps"
)

// pop3Bounces is a POP3 server for alice with a record of the message
// numbers it was asked to RETR, LIST and DELE.
type pop3Bounces struct {
	*pop3test.Server
	mu    sync.Mutex
	cmds  map[string][]int
	verbs []string
}

func startPOP3Bounces(t *testing.T, opts ...pop3test.Options) *pop3Bounces {
	t.Helper()
	pb := &pop3Bounces{cmds: map[string][]int{}}
	var o pop3test.Options
	if len(opts) > 0 {
		o = opts[0]
	}
	o.Users = map[string]string{alice: "alice-pw"}
	o.OnCommand = func(verb, arg string) {
		pb.mu.Lock()
		defer pb.mu.Unlock()
		pb.verbs = append(pb.verbs, verb)
		if n, err := strconv.Atoi(arg); err == nil {
			pb.cmds[verb] = append(pb.cmds[verb], n)
		}
	}
	pop, err := pop3test.Start(o)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, pop.Close()) })
	pb.Server = pop
	return pb
}

func (pb *pop3Bounces) sent(verb string) []int {
	pb.mu.Lock()
	defer pb.mu.Unlock()
	return slices.Clone(pb.cmds[verb])
}

// oversized is a notice quoting the probe, over internal/dsn's 1 MiB cap.
func oversized(t *testing.T, msg []byte) []byte {
	return append(notice(t, "postfix-failed", msg), bytes.Repeat([]byte("x"), 1<<20)...)
}

// TestBounceRoundtripOverPOP3: a round trip over POP3 whose probe bounces
// ends as bounced within a second of the send (delivery timeout 5 s), in
// its own maildrop. Only the verified notice is removed: an ordinary
// message, a bounce about another message, a forged notice and one over
// the size cap stay byte-identical; ordinary mail and the oversized notice
// are never RETRieved (the latter's size is asked with LIST).
func TestBounceRoundtripOverPOP3(t *testing.T) {
	pop := startPOP3Bounces(t)
	ordinary := []byte("From: x@y.test\r\nSubject: keep me\r\n\r\nordinary\r\n")
	pop.Add(alice, ordinary) // 1
	var planted [][]byte
	var mu sync.Mutex
	srv := startMail(t, mailtest.Options{DeliveryDelay: 30 * time.Millisecond, OnDeliver: func(rcpt string, msg []byte) error {
		mu.Lock()
		defer mu.Unlock()
		// 2 is the probe's; 3, 4, 5 stay, and are judged first (newest
		// first).
		pop.Add(alice, notice(t, "gmail-failed", msg))
		planted = [][]byte{notice(t, "gmail-failed", notProbe), notice(t, "gmail-failed", forged(msg)), oversized(t, msg)}
		for _, m := range planted {
			pop.Add(alice, m)
		}
		return errors.New("refused by the next hop")
	}})
	a := pop3Account(srv, pop.Server)
	tg := target(a, a)
	tg.DSN = true
	res := Run(context.Background(), tg, nil)
	assertBounced(t, res, "5.1.1", 550, 4*time.Second)
	t.Logf("bounced after %v", res.Total)
	assert.Less(t, res.Total, time.Second, "bounced within a second of the start")
	mu.Lock()
	want := append([][]byte{ordinary}, planted...)
	mu.Unlock()
	assert.Equal(t, want, pop.Messages(alice), "only the probe's notice is removed")
	retr := pop.sent("RETR")
	assert.Subset(t, retr, []int{2, 3, 4}, "the notices are read whole")
	assert.NotContains(t, retr, 1, "ordinary mail is never retrieved")
	assert.NotContains(t, retr, 5, "a notice over the cap is never retrieved")
	assert.Contains(t, pop.sent("LIST"), 5, "its size was asked")
	assert.Equal(t, []int{2}, pop.sent("DELE"))
}

// TestBounceTransitPOP3Sender: a transit whose sender reads over POP3 (the
// receiver over IMAP) polls the sender's maildrop too: the bounce there
// ends the probe and is removed; the other notices stay.
func TestBounceTransitPOP3Sender(t *testing.T) {
	pop := startPOP3Bounces(t)
	var planted [][]byte
	var mu sync.Mutex
	srv := startMail(t, mailtest.Options{OnDeliver: func(rcpt string, msg []byte) error {
		mu.Lock()
		defer mu.Unlock()
		planted = [][]byte{notice(t, "postfix-failed", notProbe), notice(t, "postfix-failed", forged(msg))}
		for _, m := range append(slices.Clone(planted), notice(t, "postfix-failed", msg)) {
			pop.Add(alice, m)
		}
		return errors.New("refused by the next hop")
	}})
	a := pop3Account(srv, pop.Server)
	b := account(srv, "b", bob, "bob-pw", imapwatch.MethodIdle)
	tg := target(a, b)
	tg.DSN = true
	res := Run(context.Background(), tg, nil)
	assertBounced(t, res, "5.7.1", 554, 4*time.Second)
	t.Logf("bounced after %v", res.Total)
	mu.Lock()
	want := planted
	mu.Unlock()
	assert.Equal(t, want, pop.Messages(alice))
	assert.Empty(t, raw(t, srv, bob, ""))
}

// TestDelayNoticeOverPOP3: in a POP3 round trip a delay notice is counted
// and removed, and the probe, delivered later, is found and removed too.
func TestDelayNoticeOverPOP3(t *testing.T) {
	pop := startPOP3Bounces(t)
	srv := startMail(t, mailtest.Options{OnDeliver: func(rcpt string, msg []byte) error {
		pop.Add(alice, notice(t, "postfix-delayed", msg))
		time.Sleep(500 * time.Millisecond) // still being retried
		pop.Add(rcpt, msg)
		return errDelivered
	}})
	a := pop3Account(srv, pop.Server)
	tg := target(a, a)
	tg.DSN = true
	res := Run(context.Background(), tg, nil)
	require.NoError(t, res.Err)
	assert.True(t, res.Delivered)
	assert.Equal(t, 1, res.DelayNotices)
	require.Len(t, res.Notices, 1)
	assert.Equal(t, "delayed", res.Notices[0].Action)
	assert.Empty(t, pop.Messages(alice), "the notice and the probe are cleaned up")
	pop.mu.Lock()
	verbs := slices.Clone(pop.verbs)
	pop.mu.Unlock()
	i := slices.Index(verbs, "DELE")
	require.True(t, i >= 0 && i+3 <= len(verbs), verbs)
	assert.Equal(t, []string{"DELE", "DELE", "QUIT"}, verbs[i:i+3],
		"the notice is deleted in the probe's own session, not at the cost of another")
}

// TestNoticeSweepOverPOP3: a POP3 sender's maildrop is swept of this
// target's verified notices older than the orphan age; younger ones,
// another key's, forged ones and ordinary mail stay.
func TestNoticeSweepOverPOP3(t *testing.T) {
	pop := startPOP3Bounces(t)
	srv := startMail(t, mailtest.Options{})
	a := pop3Account(srv, pop.Server)
	b := account(srv, "b", bob, "bob-pw", imapwatch.MethodIdle)
	a.SweepInterval = time.Hour
	b.SweepInterval = time.Hour
	tg := target(a, b)
	tg.DSN = true
	tg.OrphanAge = 24 * time.Hour
	probeMsg := func(age time.Duration, key []byte) []byte {
		p, err := probemsg.New(alice, bob, tg.Name, time.Now().Add(-age))
		require.NoError(t, err)
		return p.Build(key)
	}
	keep := [][]byte{
		notice(t, "postfix-failed", probeMsg(time.Hour, b.MACKey)),
		notice(t, "postfix-failed", probeMsg(48*time.Hour, []byte("another key"))),
		notice(t, "postfix-failed", forged(probeMsg(48*time.Hour, b.MACKey))),
		notProbe,
	}
	pop.Add(alice, notice(t, "postfix-failed", probeMsg(48*time.Hour, b.MACKey)))
	for _, m := range keep {
		pop.Add(alice, m)
	}
	res := Run(context.Background(), tg, nil)
	require.NoError(t, res.Err)
	assert.Equal(t, 1, res.SweptNotices)
	assert.Equal(t, keep, pop.Messages(alice))
	assert.NotContains(t, pop.sent("RETR"), 5, "ordinary mail is never retrieved")
}

// TestLateBounceOverPOP3: a bounce that reaches a POP3 sender's maildrop
// after its probe was reported not found is counted at the next run, once,
// and removed; ordinary mail beside it stays.
func TestLateBounceOverPOP3(t *testing.T) {
	pop := startPOP3Bounces(t)
	ordinary := []byte("From: x@y.test\r\nSubject: keep me\r\n\r\nordinary\r\n")
	pop.Add(alice, ordinary)
	var mu sync.Mutex
	var first []byte
	srv := startMail(t, mailtest.Options{OnDeliver: func(rcpt string, msg []byte) error {
		mu.Lock()
		defer mu.Unlock()
		if first == nil {
			first = msg
			return errors.New("held in the queue") // bounced later
		}
		return nil
	}})
	a := pop3Account(srv, pop.Server)
	b := account(srv, "b", bob, "bob-pw", imapwatch.MethodIdle)
	tg := target(a, b)
	tg.DSN = true
	tg.DeliveryTimeout = 500 * time.Millisecond
	tg.OrphanAge = time.Hour
	res := Run(context.Background(), tg, nil)
	require.Equal(t, steps.TypeNotFound, res.ErrorType, res.Err)

	mu.Lock()
	pop.Add(alice, notice(t, "postfix-failed", first))
	mu.Unlock()
	tg.DeliveryTimeout = 5 * time.Second
	res = Run(context.Background(), tg, nil)
	require.NoError(t, res.Err)
	assert.Equal(t, 1, res.LateBounces)
	assert.Equal(t, [][]byte{ordinary}, pop.Messages(alice))

	res = Run(context.Background(), tg, nil)
	require.NoError(t, res.Err)
	assert.Zero(t, res.LateBounces, "counted once")
}

// TestPOP3NoticeRetrRefused: a server that refuses RETR leaves the notice
// unjudged and untouched, and the probe is still found.
func TestPOP3NoticeRetrRefused(t *testing.T) {
	pop := startPOP3Bounces(t, pop3test.Options{FailRetr: true})
	var mu sync.Mutex
	var delayed []byte
	srv := startMail(t, mailtest.Options{OnDeliver: func(rcpt string, msg []byte) error {
		mu.Lock()
		delayed = notice(t, "postfix-delayed", msg)
		mu.Unlock()
		pop.Add(alice, notice(t, "postfix-delayed", msg))
		time.Sleep(300 * time.Millisecond)
		pop.Add(rcpt, msg)
		return errDelivered
	}})
	a := pop3Account(srv, pop.Server)
	tg := target(a, a)
	tg.DSN = true
	res := Run(context.Background(), tg, nil)
	require.NoError(t, res.Err)
	assert.True(t, res.Delivered)
	assert.Zero(t, res.DelayNotices)
	retr := pop.sent("RETR")
	assert.NotEmpty(t, retr, "it was tried")
	assert.Equal(t, []int{1}, slices.Compact(retr), "only the notice")
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, [][]byte{delayed}, pop.Messages(alice), "the notice stays, the probe is removed")
}
