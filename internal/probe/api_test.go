package probe

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/emailqos/emailqosreceiver/internal/gmailapi"
	"github.com/emailqos/emailqosreceiver/internal/gmailapitest"
	"github.com/emailqos/emailqosreceiver/internal/graph"
	"github.com/emailqos/emailqosreceiver/internal/graphtest"
	"github.com/emailqos/emailqosreceiver/internal/imapwatch"
	"github.com/emailqos/emailqosreceiver/internal/probemsg"
	"github.com/emailqos/emailqosreceiver/internal/steps"
)

func staticToken(context.Context) (string, error) { return "t", nil }

func graphAccount(t *testing.T, gr *graphtest.Server, addr string) *Account {
	c, err := graph.New(staticToken, graph.Options{BaseURL: gr.URL(), MinBackoff: 10 * time.Millisecond})
	require.NoError(t, err)
	return &Account{Key: addr, Address: addr, Send: SendGraph, Retrieval: RetrievalGraph, API: APIs{Graph: c},
		MACKey: probemsg.DeriveKey([]byte("k"), addr)}
}

func gmailAccount(t *testing.T, gm *gmailapitest.Server, addr string) *Account {
	c, err := gmailapi.New(staticToken, gmailapi.Options{BaseURL: gm.URL(), MinBackoff: 10 * time.Millisecond})
	require.NoError(t, err)
	return &Account{Key: addr, Address: addr, Send: SendGmailAPI, Retrieval: RetrievalGmailAPI, API: APIs{Gmail: c},
		MACKey: probemsg.DeriveKey([]byte("k"), addr)}
}

func apiTarget(a *Account) *Target {
	tg := target(a, a)
	tg.PollInterval = 50 * time.Millisecond
	tg.OrphanAge = time.Hour
	return tg
}

// A probe delivered after its delivery timeout is found by the next run of
// the target, counted as late and removed: the next session's delta (Graph)
// or history (Gmail) starts where the previous one ended.
func TestAPILateProbeIsCollected(t *testing.T) {
	const addr = "probe@api.test"
	type fixture struct {
		acct  *Account
		count func() int
		raws  func() [][]byte
	}
	for name, mk := range map[string]func(t *testing.T, delay time.Duration) fixture{
		"graph": func(t *testing.T, delay time.Duration) fixture {
			gr := graphtest.New(graphtest.Options{Users: []string{addr}, DeliveryDelay: delay})
			t.Cleanup(gr.Close)
			raws := func() [][]byte {
				var out [][]byte
				for _, m := range gr.Messages(addr, "inbox") {
					out = append(out, m.Raw)
				}
				return out
			}
			return fixture{graphAccount(t, gr, addr), func() int { return len(raws()) }, raws}
		},
		"gmail": func(t *testing.T, delay time.Duration) fixture {
			gm := gmailapitest.New(gmailapitest.Options{Users: []string{addr}, DeliveryDelay: delay})
			t.Cleanup(gm.Close)
			raws := func() [][]byte {
				var out [][]byte
				for _, m := range gm.Messages(addr, "INBOX") {
					out = append(out, m.Raw)
				}
				return out
			}
			return fixture{gmailAccount(t, gm, addr), func() int { return len(raws()) }, raws}
		},
	} {
		t.Run(name, func(t *testing.T) {
			fx := mk(t, 700*time.Millisecond)
			tg := apiTarget(fx.acct)
			tg.DSN = true // the default: notices are watched in the same mailbox
			tg.DeliveryTimeout = 300 * time.Millisecond
			first := Run(context.Background(), tg, nil)
			require.Equal(t, steps.CodeSearch, first.Code, "%v", first.Err)
			assert.Equal(t, PlacementMissing, first.Placement)
			require.Eventually(t, func() bool { return fx.count() == 1 }, 3*time.Second, 20*time.Millisecond, "the late probe arrives")
			late := fx.raws()[0]

			tg.DeliveryTimeout = 3 * time.Second
			second := Run(context.Background(), tg, nil)
			require.NoError(t, second.Err)
			assert.Equal(t, 1, second.Late, "the late probe is counted once")
			for _, raw := range fx.raws() {
				assert.False(t, bytes.Equal(raw, late), "the late probe was removed")
			}
			assert.Zero(t, fx.count(), "both probes removed")
		})
	}
}

// An expired history id (404, Gmail keeps history for a limited time) at
// the start of a session is replaced by a new baseline: the probe still
// succeeds.
func TestGmailExpiredHistoryRebaselines(t *testing.T) {
	const addr = "probe@gws.test"
	gm := gmailapitest.New(gmailapitest.Options{Users: []string{addr}})
	defer gm.Close()
	a := gmailAccount(t, gm, addr)
	tg := apiTarget(a)
	require.NoError(t, Run(context.Background(), tg, nil).Err)
	gm.ExpireHistory(addr)
	r := Run(context.Background(), tg, nil)
	require.NoError(t, r.Err)
	assert.True(t, r.Delivered)
	assert.Equal(t, imapwatch.MethodPoll, r.Method)
	assert.Greater(t, r.Uncertainty, time.Duration(0))
}

// The orphan sweep over Graph removes the receiver's own old probe that
// arrived since the previous session, and never a look-alike (a probe whose
// MAC does not verify).
func TestGraphSweepSparesLookAlikes(t *testing.T) {
	const addr = "probe@m365.test"
	gr := graphtest.New(graphtest.Options{Users: []string{addr}})
	defer gr.Close()
	a := graphAccount(t, gr, addr)
	a.SweepInterval = time.Nanosecond
	tg := apiTarget(a)
	tg.OrphanAge = time.Minute
	require.NoError(t, Run(context.Background(), tg, nil).Err)

	old := time.Now().Add(-2 * time.Hour)
	forged, err := probemsg.New(addr, addr, "x", old)
	require.NoError(t, err)
	require.NoError(t, gr.Deliver(addr, forged.Build([]byte("another key"))))
	orphan, err := probemsg.New(addr, addr, "x", old)
	require.NoError(t, err)
	require.NoError(t, gr.Deliver(addr, orphan.Build(a.MACKey)))

	r := Run(context.Background(), tg, nil)
	require.NoError(t, r.Err)
	assert.Equal(t, 1, r.Swept, "the orphan is swept")
	left := gr.Messages(addr, "inbox")
	require.Len(t, left, 1, "the look-alike is left alone")
	assert.Contains(t, string(left[0].Raw), forged.Token)
}

// Graph throttling within the probe's time is waited out (Retry-After).
func TestGraphThrottlingWaitedOut(t *testing.T) {
	const addr = "probe@m365.test"
	gr := graphtest.New(graphtest.Options{Users: []string{addr}})
	defer gr.Close()
	gr.Throttle(2, 429, time.Second)
	r := Run(context.Background(), apiTarget(graphAccount(t, gr, addr)), nil)
	require.NoError(t, r.Err)
	assert.True(t, r.Delivered)
}

// A Gmail transit leaves nothing behind: the receiver's probe is cleaned
// up, and the sender's copy (SENT) is removed too.
func TestGmailTransitRemovesSentCopy(t *testing.T) {
	const from, to = "a@gws.test", "b@gws.test"
	gm := gmailapitest.New(gmailapitest.Options{Users: []string{from, to}})
	defer gm.Close()
	a, b := gmailAccount(t, gm, from), gmailAccount(t, gm, to)
	tg := target(a, b)
	tg.PollInterval = 50 * time.Millisecond
	r := Run(context.Background(), tg, nil)
	require.NoError(t, r.Err)
	assert.Empty(t, gm.Messages(to, ""), "the probe was deleted")
	assert.Empty(t, gm.Messages(from, ""), "the sender's copy was deleted")

	// With cleanup keep, both stay.
	tg.Cleanup = CleanupKeep
	require.NoError(t, Run(context.Background(), tg, nil).Err)
	assert.Len(t, gm.Messages(to, ""), 1)
	assert.Len(t, gm.Messages(from, "SENT"), 1)
}
