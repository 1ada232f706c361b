// Package learn remembers, per probe direction, where its arrivals fall
// after the end of DATA and whether the receiving server's IMAP IDLE
// announces them, so that detection can poll densely only where arrivals
// are expected (issue 17).
//
// IDLE alone is cheap but its timing is the server's: Dovecot 2.3 holds
// IDLE notifications for about 0.5 s (mailbox-watch.c, NOTIFY_DELAY_MSECS),
// Cyrus without idled announces nothing until its next poll, and no client
// can tell how long a notification was held. So auto detection (imapwatch)
// and the poll schedules (imapwatch poll, pop3watch) poll densely in the
// window where this direction's arrivals are expected, learned from its
// recent arrival windows, and idle or back off outside it. An arrival
// inside the window is timed like precise; one outside it is reported with
// the honest window from the last check to the response that showed it,
// whatever delay the server added. A Learner also notices an IDLE that
// never announces anything, after which auto polls instead.
package learn // import "github.com/emailqos/emailqosreceiver/internal/learn"

import (
	"slices"
	"sync"
	"time"
)

const (
	// keep arrival windows are remembered per direction.
	keep = 8
	// FirstDense is the dense window of a direction with no history yet,
	// from the end of DATA.
	FirstDense = 2 * time.Second
	// maxDense bounds the dense window of a direction whose latencies
	// spread widely: past it, IDLE or the backoff (honestly bounded) take
	// over.
	maxDense = 3 * time.Second
	// The window opens earlyMargin plus 1/earlySpread of the earliest
	// arrival before it: every poll before an arrival costs a command. It
	// closes lateMargin, or a quarter of the latest arrival if more, after
	// the latest: polls after the arrival cost nothing, and an arrival
	// missed by the window is measured far less exactly.
	earlyMargin = 20 * time.Millisecond
	earlySpread = 20
	lateMargin  = 250 * time.Millisecond
	// A window counts as narrow (earliest) when it is at most
	// narrowFactor times the narrowest remembered, or narrowSpan.
	narrowFactor = 4
	narrowSpan   = 50 * time.Millisecond
	// SilentAfter: an arrival that IDLE did not announce although IDLE had
	// been running this long before it showed (at DONE) counts as evidence
	// that the server's IDLE does not push; silentCount of them, with no
	// announcement ever seen, make the Learner stop trusting it.
	SilentAfter = 2 * time.Second
	silentCount = 2
)

// Learner remembers what one probe direction's arrivals looked like. The
// zero value is ready; it is safe for concurrent use. Keep one per
// direction for the life of the receiver.
type Learner struct {
	mu     sync.Mutex
	lo, hi []time.Duration // arrival windows, from the end of DATA
	pushed int             // arrivals IDLE announced
	silent int             // arrivals IDLE kept quiet about (SilentAfter)
}

// DenseWindow is when, counted from the end of DATA, to poll densely;
// learned is false for a direction with no history yet, which gets
// [0, FirstDense): the poll schedules keep their plain backoff then, auto
// (which would otherwise idle) polls densely.
func (l *Learner) DenseWindow() (from, to time.Duration, learned bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.lo) == 0 {
		return 0, FirstDense, false
	}
	lo, hi := l.earliest(), slices.Max(l.hi)
	from = max(lo-earlyMargin-lo/earlySpread, 0)
	to = hi + max(lateMargin, hi/4)
	return from, min(to, from+maxDense), true
}

// earliest is where this direction's arrivals begin, from the windows it
// remembers (l.mu held). A window far wider than the narrowest (an IDLE
// announcement, a backoff poll: anything but the dense polls) bounds its
// arrival only loosely from below: a direction's first probe, polled for
// FirstDense and then idling, leaves one that starts at FirstDense
// whatever the latency, and taking its lower bound would hold the dense
// polls seconds early (capped at maxDense, they would even end before a
// 5 s relay's arrivals) for as long as it is remembered. So only the narrow
// windows' lower bounds count, and of the wide ones those newer than the
// last narrow one (arrivals that moved earlier) with their middle.
func (l *Learner) earliest() time.Duration {
	minSpan := l.hi[0] - l.lo[0]
	for i := range l.lo {
		minSpan = min(minSpan, l.hi[i]-l.lo[i])
	}
	narrow := max(narrowFactor*minSpan, narrowSpan)
	lo, last := time.Duration(-1), -1
	for i := range l.lo {
		if l.hi[i]-l.lo[i] <= narrow {
			if lo < 0 || l.lo[i] < lo {
				lo = l.lo[i]
			}
			last = i
		}
	}
	for i := last + 1; i < len(l.lo); i++ {
		lo = min(lo, l.lo[i]+(l.hi[i]-l.lo[i])/2)
	}
	return lo
}

// Observe records an arrival known to lie between lo and hi after the end
// of DATA.
func (l *Learner) Observe(lo, hi time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	lo, hi = max(lo, 0), max(hi, 0)
	l.lo, l.hi = append(l.lo, lo), append(l.hi, hi)
	if n := len(l.lo); n > keep {
		l.lo, l.hi = slices.Delete(l.lo, 0, n-keep), slices.Delete(l.hi, 0, n-keep)
	}
}

// IdleSeen records whether IDLE announced an arrival (pushed) or kept
// quiet about it for at least SilentAfter; it reports whether this made
// the IDLE untrusted.
func (l *Learner) IdleSeen(pushed bool) (nowUntrusted bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	was := l.untrustedLocked()
	if pushed {
		l.pushed++
	} else {
		l.silent++
	}
	return !was && l.untrustedLocked()
}

// IdleUntrusted reports whether the mailbox's IDLE was found not to push.
func (l *Learner) IdleUntrusted() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.untrustedLocked()
}

func (l *Learner) untrustedLocked() bool {
	return l.pushed == 0 && l.silent >= silentCount
}
