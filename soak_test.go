//go:build soak

package emailqosreceiver

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/emailqos/emailqosreceiver/internal/faultnet"
	"github.com/emailqos/emailqosreceiver/internal/mailtest"
	"github.com/emailqos/emailqosreceiver/internal/pop3test"
)

// The soak runs thousands of probes against in-process servers, healthy and
// faulty ones mixed, and checks that goroutines and heap do not grow: run
// with `make soak` (go test -tags soak -run TestSoak). It takes about a
// minute on 2 cores, most of it waiting for the faulty targets.
const (
	soakCollections = 180
	// soakWarmup is the collection after which the baseline is taken.
	soakWarmup = soakCollections / 10
	// soakTolerance is how far the end figures may stray from the baseline.
	soakTolerance = 0.10
)

// flakyModes are what a flaky forwarder does with the connections it
// accepts, in turn: forward them to the server, reset them at once, hold
// them unanswered.
var flakyModes = [...]faultnet.Fault{{}, {Reset: true}, {Silent: true}}

// startFlaky is a faultnet proxy in front of upstream whose mode the soak
// switches between collections.
func startFlaky(t *testing.T, upstream string) *faultnet.Proxy {
	t.Helper()
	return faultnet.ProxyT(t, upstream)
}

// closedPort is a loopback address where connections are refused.
var closedPort = faultnet.ClosedPort

// usage is what the soak measures at a quiet moment.
type usage struct {
	goroutines int
	heapAlloc  uint64
	heapInuse  uint64
}

func (u usage) String() string {
	return fmt.Sprintf("%d goroutines, heap alloc %.2f MiB, heap in use %.2f MiB",
		u.goroutines, float64(u.heapAlloc)/(1<<20), float64(u.heapInuse)/(1<<20))
}

// quiesce waits for the probes under way, lets the servers' sessions end,
// and measures goroutines and heap after a GC.
func quiesce(t *testing.T, s *emailqosScraper) usage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, s.waitIdle(ctx))
	// The servers see the clients' connections end a moment later.
	last, same := -1, 0
	for i := 0; i < 100 && same < 3; i++ {
		time.Sleep(50 * time.Millisecond)
		if n := runtime.NumGoroutine(); n == last {
			same++
		} else {
			last, same = n, 0
		}
	}
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return usage{goroutines: runtime.NumGoroutine(), heapAlloc: ms.HeapAlloc, heapInuse: ms.HeapInuse}
}

// lateListLen reads the length of a target's list of probes not found in
// time. The engine keeps it unexported; reflection reads its length only,
// while no probe runs.
func lateListLen(t *testing.T, s *emailqosScraper, name string) int {
	t.Helper()
	for _, tgt := range s.targets {
		if tgt.Name == name {
			late := reflect.ValueOf(tgt).Elem().FieldByName("late")
			require.True(t, late.IsValid(), "probe.Target has a late list")
			return late.Len()
		}
	}
	t.Fatalf("no target %s", name)
	return 0
}

type soakTally struct {
	probes, success, skipped int
	byTarget                 map[string][2]int // success, failure
}

func (st *soakTally) add(t *testing.T, md pmetric.Metrics) {
	for _, r := range probeResults(t, md) {
		st.probes++
		st.skipped += int(r.skipped)
		n := st.byTarget[r.target]
		if r.success == 1 {
			st.success++
			n[0]++
		} else {
			n[1]++
		}
		st.byTarget[r.target] = n
	}
}

func TestSoak(t *testing.T) {
	users := func(prefix string, n int) []mailtest.User {
		var us []mailtest.User
		for i := 1; i <= n; i++ {
			us = append(us, mailtest.User{Address: fmt.Sprintf("%s%d@%s.test", prefix, i, prefix), Password: "pw"})
		}
		return us
	}
	start := func(opts mailtest.Options) *mailtest.Server {
		srv, err := mailtest.Start(opts)
		require.NoError(t, err)
		t.Cleanup(func() { assert.NoError(t, srv.Close()) })
		return srv
	}
	healthy := start(mailtest.Options{Users: users("h", 12), DeliveryDelay: 5 * time.Millisecond})
	pop, err := pop3test.Start(pop3test.Options{Users: map[string]string{"p1@p.test": "pw", "p2@p.test": "pw", "p3@p.test": "pw"}})
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, pop.Close()) })
	errHandedOver := errors.New("handed over to the POP3 maildrop")
	popMail := start(mailtest.Options{Users: users("p", 3), DeliveryDelay: 5 * time.Millisecond,
		OnDeliver: func(rcpt string, msg []byte) error {
			pop.Add(rcpt, msg)
			return errHandedOver
		}})
	rejecting := start(mailtest.Options{Users: users("a", 1), RejectAuth: true})
	blackhole := start(mailtest.Options{Users: users("b", 2), Blackhole: true})
	imapFlaky := startFlaky(t, healthy.IMAPAddr())
	smtpFlaky := startFlaky(t, healthy.SMTPAddr())
	pop3Flaky := startFlaky(t, pop.Addr())
	flaky := []*faultnet.Proxy{imapFlaky, smtpFlaky, pop3Flaky}

	accounts := map[string]AccountConfig{}
	imapAcct := func(key string, srv *mailtest.Server, detection string) AccountConfig {
		a := mailAccount(srv, fmt.Sprintf("%s@%s.test", key, key[:1]), "pw")
		a.Detection = detection
		accounts[key] = a
		return a
	}
	popAcct := func(key, smtp, pop3 string) {
		a := mailAccount(popMail, key+"@p.test", "pw")
		a.SMTP.Endpoint = smtp
		a.Retrieval = retrievalPOP3
		a.IMAP = IMAPConfig{}
		a.POP3 = EndpointConfig{Endpoint: pop3, Security: "none"}
		accounts[key] = a
	}
	for i, detection := range []string{"idle", "idle", "idle", "poll", "poll", "precise", "precise", "idle", "poll"} {
		imapAcct(fmt.Sprintf("h%d", i+1), healthy, detection)
	}
	popAcct("p1", popMail.SMTPAddr(), pop.Addr())
	popAcct("p2", popMail.SMTPAddr(), pop.Addr())
	popAcct("p3", popMail.SMTPAddr(), pop3Flaky.Addr())
	f1 := imapAcct("h10", healthy, "idle")
	f1.IMAP.Endpoint = imapFlaky.Addr()
	accounts["h10"] = f1
	f2 := imapAcct("h11", healthy, "poll")
	f2.SMTP.Endpoint = smtpFlaky.Addr()
	accounts["h11"] = f2
	imapAcct("a1", rejecting, "idle")
	imapAcct("b1", blackhole, "idle")
	imapAcct("b2", blackhole, "poll")
	c1 := imapAcct("h12", healthy, "idle")
	c1.SMTP.Endpoint = closedPort(t)
	accounts["h12"] = c1
	c2 := mailAccount(healthy, "h1@h.test", "pw")
	c2.IMAP.Endpoint = closedPort(t)
	accounts["c2"] = c2

	cfg := testConfig(accounts)
	// Collections are driven by hand; the interval sets how long each
	// waits for its probes (9/10 of it), so hung probes outlast theirs.
	cfg.CollectionInterval = 500 * time.Millisecond
	cfg.DeliveryTimeout = 300 * time.Millisecond
	cfg.PollInterval = 50 * time.Millisecond
	cfg.Timeout = 700 * time.Millisecond
	cfg.Cleanup.OrphanAge = 5 * time.Second
	cfg.Cleanup.SweepInterval = 2 * time.Second
	for _, key := range []string{"h1", "h2", "h3", "h4", "h5", "h6", "h9", "p1", "p2", "p3", "h10", "h11", "a1", "b1", "b2", "h12", "c2"} {
		cfg.Roundtrip = append(cfg.Roundtrip, RoundtripConfig{Account: key})
	}
	cfg.Transit.Directions = []string{"h7:h8", "h8:h7", "p1:p2"}
	s, cancel := newTestScraper(t, cfg)
	defer func() {
		cancel()
		assert.NoError(t, s.shutdown(context.Background()))
	}()
	require.Len(t, s.targets, 20)

	tally := soakTally{byTarget: map[string][2]int{}}
	var base usage
	var maxLate int
	began := time.Now()
	for k := range soakCollections {
		// Two collections each of passing, resetting and hanging.
		for _, f := range flaky {
			require.NoError(t, f.Set(flakyModes[k/2%3]))
			// The proxy records what clients send: forgotten, so that the
			// heap measured is the receiver's, not the recording's.
			f.ResetCounters()
		}
		md, err := s.scrape(context.Background())
		require.NoError(t, err)
		tally.add(t, md)
		if k+1 == soakWarmup || k+1 == soakCollections {
			u := quiesce(t, s)
			maxLate = max(maxLate, lateListLen(t, s, "b1"), lateListLen(t, s, "b2"))
			if k+1 == soakWarmup {
				base = u
				t.Logf("after warm-up (%d collections): %s", soakWarmup, u)
				continue
			}
			wall := time.Since(began)
			t.Logf("after %d collections: %s", soakCollections, u)
			t.Logf("%d probes reported (%d succeeded), %d collections skipped for a target still probing, in %s: %.1f probes/s",
				tally.probes, tally.success, tally.skipped, wall.Round(time.Millisecond), float64(tally.probes)/wall.Seconds())
			t.Logf("goroutines %d -> %d (%+.1f%%), heap alloc %d -> %d bytes (%+.1f%%), heap in use %d -> %d bytes (%+.1f%%)",
				base.goroutines, u.goroutines, pct(base.goroutines, u.goroutines),
				base.heapAlloc, u.heapAlloc, pct(base.heapAlloc, u.heapAlloc),
				base.heapInuse, u.heapInuse, pct(base.heapInuse, u.heapInuse))
			assert.InEpsilon(t, base.goroutines, u.goroutines, soakTolerance, "goroutines")
			assert.InEpsilon(t, base.heapAlloc, u.heapAlloc, soakTolerance, "heap alloc")
		}
		if k%30 == 29 {
			// Read while no probe runs, which is when the list is not
			// being written.
			ctx, stop := context.WithTimeout(context.Background(), 10*time.Second)
			require.NoError(t, s.waitIdle(ctx))
			stop()
			maxLate = max(maxLate, lateListLen(t, s, "b1"), lateListLen(t, s, "b2"))
		}
	}
	t.Logf("per target (succeeded, failed): %v", tally.byTarget)
	t.Logf("longest late list of the blackholed targets: %d", maxLate)

	assert.GreaterOrEqual(t, tally.probes, 3000, "thousands of probes")
	assert.Positive(t, tally.skipped, "hung probes outlasted their collections")
	// A blackholed target remembers each probe as late until the orphan
	// age; probes come every ~0.4 s, so 5 s hold a dozen or so.
	assert.LessOrEqual(t, maxLate, 40, "the late list stays bounded by the orphan age")
	for _, name := range []string{"h1", "h2", "h3", "h4", "h5", "h6", "h9", "h7:h8", "h8:h7", "p1", "p2", "p1:p2"} {
		n := tally.byTarget[name]
		assert.GreaterOrEqual(t, n[0], (n[0]+n[1])*8/10, "%s: a healthy target mostly succeeds (%d ok, %d failed)", name, n[0], n[1])
	}
	for _, name := range []string{"h10", "h11", "p3"} {
		n := tally.byTarget[name]
		assert.Positive(t, n[0], "%s succeeds when its link passes", name)
		assert.Positive(t, n[1], "%s fails when its link resets or hangs", name)
	}
	for _, name := range []string{"a1", "b1", "b2", "h12", "c2"} {
		n := tally.byTarget[name]
		assert.Zero(t, n[0], "%s never succeeds", name)
		assert.Positive(t, n[1], name)
	}
}

func pct[N int | uint64](from, to N) float64 {
	return (float64(to) - float64(from)) / float64(from) * 100
}
