package imapwatch

import (
	"slices"
	"sync"
	"time"
)

// Detection in auto mode (issue 17). IDLE alone is cheap but its timing is
// the server's: Dovecot 2.3 holds IDLE notifications for about 0.5 s, Cyrus
// without idled announces nothing until its next poll, and no client can
// tell how long a notification was held. So in auto mode the session polls
// densely (NOOP every PreciseInterval, as precise does) only in the window
// where this direction's arrivals are expected, learned from its recent
// latencies counted from the end of DATA, and idles outside it. An arrival
// inside the window is timed like precise; one outside it is reported with
// the honest window from the last check to the announcement, whatever delay
// the server added. A Learner also notices an IDLE that never announces
// anything, after which auto polls instead.
const (
	// learnKeep latencies are remembered per direction.
	learnKeep = 8
	// firstDense is the dense window of a direction with no history yet,
	// from the end of DATA.
	firstDense = 2 * time.Second
	// maxDense bounds the dense window of a direction whose latencies
	// spread widely: past it, IDLE (honestly bounded) takes over.
	maxDense = 3 * time.Second
	// denseMargin widens the learned window on both sides, plus
	// 1/denseSpread of the largest latency.
	denseMargin = 20 * time.Millisecond
	denseSpread = 20
	// silentAfter: an arrival that IDLE did not announce although IDLE
	// had been running this long before it showed (at DONE) counts as
	// evidence that the server's IDLE does not push; silentCount of them,
	// with no announcement ever seen, make the Learner stop trusting it.
	silentAfter = 2 * time.Second
	silentCount = 2
)

// Learner remembers what one probe direction's arrivals looked like. The
// zero value is ready; it is safe for concurrent use. Keep one per
// direction for the life of the receiver (Options.Learner).
type Learner struct {
	mu     sync.Mutex
	recent []time.Duration
	pushed int // arrivals IDLE announced
	silent int // arrivals IDLE kept quiet about (see silentAfter)
}

// denseWindow is when, counted from the end of DATA, to poll densely.
func (l *Learner) denseWindow() (from, to time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.recent) == 0 {
		return 0, firstDense
	}
	lo, hi := slices.Min(l.recent), slices.Max(l.recent)
	margin := denseMargin + hi/denseSpread
	from, to = max(lo-margin, 0), hi+margin
	return from, min(to, from+maxDense)
}

// observe records an arrival's latency from the end of DATA.
func (l *Learner) observe(latency time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if latency < 0 {
		latency = 0
	}
	l.recent = append(l.recent, latency)
	if len(l.recent) > learnKeep {
		l.recent = slices.Delete(l.recent, 0, len(l.recent)-learnKeep)
	}
}

// idleSeen records whether IDLE announced an arrival (pushed) or kept
// quiet about it for at least silentAfter; it reports whether this made
// the IDLE untrusted.
func (l *Learner) idleSeen(pushed bool) (nowUntrusted bool) {
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
