package emailqosreceiver

import (
	"bytes"
	"context"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/emailqos/emailqosreceiver/internal/faultnet"
	"github.com/emailqos/emailqosreceiver/internal/steps"
)

// Timing of the hostile-server suite: shorter than the fault table's, since
// most cases run until the probe's timeout.
const (
	hostileDelivery = time.Second
	hostileTimeout  = 2 * time.Second
	// hostileHeapBound is the most the process's heap may reach while a
	// case runs (the read budgets hold a probe to a few MB; the rest is the
	// test's own mail systems and proxies, and garbage not yet collected).
	hostileHeapBound = 64 << 20
	// hostileAbort stops a case whose heap grows past it (the proxies are
	// closed), so that a missing bound cannot take the machine down.
	hostileAbort = 512 << 20
)

// hostileCase is one hostile server: a fault on the faulty account's SMTP
// or mailbox proxy, and the outcome it must have.
type hostileCase struct {
	name string
	fixtureOptions
	smtp, mbox faultnet.Fault
	code       int64
	typ        string
	// delivery and timeout, when set, replace the suite's.
	delivery, timeout time.Duration
	// budget: the failure must be one of the read bounds' (the transport's
	// budget, imapwatch's line limit, the POP3 reader's), whose error names
	// the step and the limit.
	budget bool
}

// endless is a flood that replaces the line on matches with head and then
// repeats fill forever.
func endless(on, head, fill string) faultnet.Fault {
	return faultnet.Fault{Flood: &faultnet.Flood{On: rx(on), Head: []byte(head), Fill: []byte(fill)}}
}

// slow forwards the server's stream at one byte per second from the first
// line on matches.
func slow(on string) faultnet.Fault {
	return faultnet.Fault{Drip: &faultnet.Drip{On: rx(on), Every: time.Second}}
}

// literal is an IMAP literal that announces a gigabyte and never ends.
const literal = "{999999999}\r\n"

var xs = strings.Repeat("x", 1000)

// lines is literal content of 1 KB lines: each newline resets imapwatch's
// line limit, so only the read budget can end it.
var lines = xs + "\r\n"

func hostileTable() []hostileCase {
	starttls := fixtureOptions{starttls: true}
	popOn := fixtureOptions{pop3: true}
	popSTLS := fixtureOptions{pop3: true, starttls: true}
	return []hostileCase{
		// --- SMTP: endless answers ---
		{name: "smtp/endless greeting line", smtp: endless(`^220 `, "220 ", xs), code: 1, typ: steps.TypeProtocol, budget: true},
		{name: "smtp/endless 220- continuation lines", smtp: endless(`^220 `, "", "220-"+xs+"\r\n"), code: 1, typ: steps.TypeProtocol, budget: true},
		{name: "smtp/endless 250- continuation lines", smtp: endless(`^250-`, "", "250-"+xs+"\r\n"), code: 1, typ: steps.TypeProtocol, budget: true},
		{name: "smtp/endless 354- continuation lines after DATA", smtp: endless(`^354 `, "", "354-"+xs+"\r\n"), code: 2, typ: steps.TypeProtocol, budget: true},
		{
			name: "smtp/endless answer to STARTTLS before TLS", fixtureOptions: starttls,
			smtp: endless(`^220 2\.0\.0 `, "", "220-"+xs+"\r\n"), code: 1, typ: steps.TypeProtocol, budget: true,
		},

		// --- IMAP: a literal that never ends, in each response kind ---
		{name: "imap/endless greeting line", mbox: endless(`^\* OK`, "* OK ", xs), code: 3, typ: steps.TypeProtocol, budget: true},
		{name: "imap/huge literal in LIST", mbox: endless(`^\* LIST `, `* LIST () "/" `+literal, lines), code: 3, typ: steps.TypeProtocol, budget: true},
		{name: "imap/huge literal in STATUS", mbox: endless(`^\* STATUS `, `* STATUS `+literal, lines), code: 3, typ: steps.TypeProtocol, budget: true},
		{
			// go-imap decodes a number list slowly (about 1 s for the 4 MiB
			// line limit, more under -race), and the search runs within
			// the delivery wait: both are longer here.
			name: "imap/endless SEARCH result", mbox: endless(`^\* SEARCH`, "* SEARCH 1", " 4294967295"),
			delivery: 6 * time.Second, timeout: 8 * time.Second, code: 4, typ: steps.TypeProtocol, budget: true,
		},
		{name: "imap/huge literal in SEARCH", mbox: endless(`^\* SEARCH`, "* SEARCH "+literal, lines), code: 4, typ: steps.TypeProtocol},
		{name: "imap/huge literal in FETCH", mbox: endless(`^\* \d+ FETCH`, "* 1 FETCH (UID 1 BODY[HEADER] "+literal, lines), code: 4, typ: steps.TypeProtocol},
		{name: "imap/huge literal in untagged data", mbox: endless(`^\* \d+ EXISTS`, `* 1 FETCH (ENVELOPE ("date" `+literal, lines), code: 3, typ: steps.TypeProtocol, budget: true},
		{
			name: "imap/huge literal in answer to STARTTLS before TLS", fixtureOptions: starttls,
			mbox: endless(`^T\d+ OK`, `* LIST () "/" `+literal, lines), code: 3, typ: steps.TypeProtocol, budget: true,
		},

		// --- POP3: multi-line answers that never end ---
		{name: "pop3/endless greeting line", fixtureOptions: popOn, mbox: endless(`^\+OK pop3test ready`, "+OK ", xs), code: 3, typ: steps.TypeProtocol, budget: true},
		{name: "pop3/endless CAPA", fixtureOptions: popOn, mbox: endless(`^\+OK capability list follows`, "+OK\r\n", "X-"+xs[:60]+"\r\n"), code: 3, typ: steps.TypeProtocol, budget: true},
		{name: "pop3/endless UIDL listing", fixtureOptions: popOn, mbox: endless(`^\+OK listing follows`, "+OK\r\n", "1 a\r\n"), code: 3, typ: steps.TypeProtocol, budget: true},
		{name: "pop3/endless TOP", fixtureOptions: popOn, mbox: endless(`^\+OK message follows`, "+OK\r\n", "X-H: "+xs[:70]+"\r\n"), code: 4, typ: steps.TypeProtocol, budget: true},
		{
			name: "pop3/endless answer to STLS before TLS", fixtureOptions: popSTLS,
			mbox: endless(`^\+OK begin TLS`, "+OK ", xs), code: 3, typ: steps.TypeProtocol, budget: true,
		},

		// --- 1 byte per second at every phase: the probe ends at its timeout ---
		{name: "smtp/1 byte per second from the greeting", smtp: slow(`^220 `), code: 1, typ: steps.TypeTimeout},
		{name: "smtp/1 byte per second from EHLO", smtp: slow(`^250-`), code: 1, typ: steps.TypeTimeout},
		{name: "smtp/1 byte per second from DATA", smtp: slow(`^354 `), code: 2, typ: steps.TypeTimeout},
		{name: "imap/1 byte per second from the greeting", mbox: slow(`^\* OK`), code: 3, typ: steps.TypeTimeout},
		{name: "imap/1 byte per second from LOGIN", mbox: slow(`^T\d+ OK.*(?i)logged in`), code: 3, typ: steps.TypeTimeout},
		{name: "imap/1 byte per second from SELECT", mbox: slow(`^\* \d+ EXISTS`), code: 3, typ: steps.TypeTimeout},
		{name: "imap/1 byte per second from SEARCH", mbox: slow(`^\* SEARCH`), code: 4, typ: steps.TypeNotFound},
		{name: "pop3/1 byte per second from the greeting", fixtureOptions: popOn, mbox: slow(`^\+OK pop3test ready`), code: 3, typ: steps.TypeTimeout},
		{name: "pop3/1 byte per second from UIDL", fixtureOptions: popOn, mbox: slow(`^\+OK listing follows`), code: 3, typ: steps.TypeTimeout},
		{name: "pop3/1 byte per second from TOP", fixtureOptions: popOn, mbox: slow(`^\+OK message follows`), code: 4, typ: steps.TypeNotFound},
	}
}

// TestHostileServers drives the receiver's scraper against servers that
// never end an answer or answer one byte per second, at every phase of
// SMTP, IMAP and POP3: each case checks the code and type, that the
// collection ended within timeout + 1 s, that the healthy target was not
// disturbed, and that the heap stayed under hostileHeapBound while the
// case ran. See RELIABILITY.md, "Hostile servers".
func TestHostileServers(t *testing.T) {
	if testing.Short() {
		t.Skip("the hostile-server suite takes about a minute")
	}
	ignore := goleak.IgnoreCurrent()
	for _, tc := range hostileTable() {
		ok := t.Run(tc.name, func(t *testing.T) { runHostileCase(t, tc) })
		if ok {
			goleak.VerifyNone(t, ignore)
		}
	}
}

func runHostileCase(t *testing.T, tc hostileCase) {
	fx := newFixture(t, tc.fixtureOptions)
	delivery, timeout := hostileDelivery, hostileTimeout
	if tc.delivery > 0 {
		delivery, timeout = tc.delivery, tc.timeout
	}
	fx.cfg.DeliveryTimeout = delivery
	fx.cfg.Timeout = timeout
	require.NoError(t, fx.smtp.Set(tc.smtp))
	require.NoError(t, fx.mbox.Set(tc.mbox))

	s, cancel := newTestScraper(t, fx.cfg)
	defer cancel()
	core, logs := observer.New(zapcore.WarnLevel)
	s.logger = zap.New(core)

	runtime.GC()
	base := heapBytes()
	peak := watchHeap(t, func() {
		// Out of bounds: stop the hostile servers before the machine
		// suffers; the case then fails on the peak.
		_ = fx.smtp.Close()
		_ = fx.mbox.Close()
	})
	got, took := scrapeOnce(t, s)
	high := peak()
	t.Logf("error: %s", probeErrors(logs))
	t.Logf("took %v (timeout %v), heap high-water %.1f MiB (%.1f MiB at start)",
		took.Round(time.Millisecond), timeout, float64(high)/(1<<20), float64(base)/(1<<20))

	assert.Less(t, took, timeout+time.Second, "the collection outlasted the probe timeout")
	assert.Less(t, high, uint64(hostileHeapBound), "heap high-water mark")
	faulty := got["faulty"]
	assert.Equal(t, tc.code, faulty.code, "error code")
	assert.Equal(t, tc.typ, faulty.typ, "error.type")
	assert.Zero(t, got["healthy"].code, "the healthy target is disturbed: %s", got["healthy"].typ)
	if tc.budget {
		assert.Regexp(t, `(smtp|imap|pop3)\.[a-z_]+: .*(than|limit) \(?\d+ `, probeErrors(logs), "the error names the step and the limit")
	}
	require.NoError(t, s.shutdown(context.Background()))
}

// probeErrors returns the error fields of the logged probe failures.
func probeErrors(logs *observer.ObservedLogs) string {
	var b bytes.Buffer
	for _, e := range logs.All() {
		for k, v := range e.ContextMap() {
			if k == "error" {
				b.WriteString(errorText(v))
				b.WriteByte('\n')
			}
		}
	}
	return b.String()
}

func errorText(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	if e, ok := v.(error); ok {
		return e.Error()
	}
	return ""
}

// heapSample is the runtime metric sampled: bytes of heap objects, live
// and not yet swept (the heap's size as the collector sees it).
const heapSample = "/memory/classes/heap/objects:bytes"

func heapBytes() uint64 {
	s := []metrics.Sample{{Name: heapSample}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// watchHeap samples the heap every 5 ms until the returned function is
// called, which stops it and returns the highest sample. Past hostileAbort
// it calls abort once.
func watchHeap(t *testing.T, abort func()) func() uint64 {
	t.Helper()
	var (
		mu   sync.Mutex
		high uint64
	)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		aborted := false
		for {
			h := heapBytes()
			mu.Lock()
			high = max(high, h)
			mu.Unlock()
			if h > hostileAbort && !aborted {
				aborted = true
				abort()
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	return func() uint64 {
		close(stop)
		<-done
		mu.Lock()
		defer mu.Unlock()
		return high
	}
}
