package imapwatch

import (
	"sync"
	"time"
)

// The timeline records what the server told us about the size of the
// selected mailbox and when, so that the instant a message became visible can
// be bounded once its sequence number is known:
//
//   - an event is an EXISTS that raised the count: every message up to count
//     was visible when it arrived (an upper bound);
//   - a check is a command that completed with the count up to date (SELECT,
//     NOOP, the end of an IDLE): messages above count were not visible after
//     the command was sent (a lower bound).
//
// EXPUNGE renumbers the mailbox, so recorded counts are renumbered with it.
// The unilateral handlers run on imapclient's reader goroutine.
type timeline struct {
	mu sync.Mutex

	count    uint32 // messages in the mailbox as last reported
	searched uint32 // count when the last search started
	base     uint32 // count at the baseline: messages up to it are not probes
	idling   bool
	events   []event
	checks   []check

	// While a SELECT is in flight its result is not known yet; updates that
	// arrive between its completion and finishSelect are replayed after it.
	selecting bool
	queued    []update
	// away: another mailbox (a junk folder) is selected; its updates say
	// nothing about the watched one.
	away bool
	// floor is the end of the probe's DATA: no window starts before it
	// (checks made before the send, SELECT or a NOOP, say nothing closer).
	floor time.Time

	wake chan struct{}
}

type event struct {
	at    time.Time
	count uint32
	idle  bool // announced while IDLE was running
}

type check struct {
	at    time.Time
	count uint32
}

type update struct {
	at      time.Time
	exists  uint32
	expunge uint32
}

func newTimeline() *timeline {
	return &timeline{wake: make(chan struct{}, 1)}
}

// onExists is the unilateral EXISTS handler.
func (t *timeline) onExists(n uint32) {
	at := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.away {
		return
	}
	if t.selecting {
		t.queued = append(t.queued, update{at: at, exists: n})
		return
	}
	t.existsLocked(n, at)
}

func (t *timeline) existsLocked(n uint32, at time.Time) {
	if n <= t.count {
		// Only an increase tells something new; a smaller count without
		// EXPUNGE is the server's word against ours, take it.
		t.count = n
		return
	}
	t.count = n
	t.events = append(t.events, event{at: at, count: n, idle: t.idling})
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// onExpunge is the EXPUNGE handler; the UID EXPUNGE of a deletion reports
// its sequence numbers here too.
func (t *timeline) onExpunge(seq uint32) {
	if seq == 0 {
		return // sequence numbers start at 1: a server's protocol error
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.away {
		return
	}
	if t.selecting {
		t.queued = append(t.queued, update{expunge: seq})
		return
	}
	t.expungeLocked(seq)
}

func (t *timeline) expungeLocked(seq uint32) {
	dec := func(n *uint32) {
		if seq <= *n {
			*n--
		}
	}
	dec(&t.count)
	dec(&t.searched)
	dec(&t.base)
	for i := range t.events {
		dec(&t.events[i].count)
	}
	for i := range t.checks {
		dec(&t.checks[i].count)
	}
}

func (t *timeline) beginSelect() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.selecting = true
	t.queued = nil
	t.idling = false
	t.away = false
}

// leave mutes the timeline while another mailbox is selected, and returns
// what resumeSelect needs: the count when leaving and the instant from
// which every message not yet searched may have arrived.
func (t *timeline) leave() (count uint32, floor time.Time) {
	floor = t.reconnectFloor()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.away, t.idling = true, false
	return t.count, floor
}

// resumeSelect continues the timeline after the watched mailbox was selected
// again (SELECT sent at start, answered at resp with n messages). Unchanged,
// the SELECT is one more check. Changed (messages came or went meanwhile,
// which renumbers), it restarts like a reconnect: every message is searched
// again, and one that is new arrived after floor.
func (t *timeline) resumeSelect(start, resp time.Time, n uint32, changed bool, floor time.Time) {
	t.mu.Lock()
	t.count = n
	if changed {
		t.events = []event{{at: resp, count: n}}
		t.checks = []check{{at: floor, count: 0}, {at: start, count: n}}
		t.searched = 0
		t.base = min(t.base, n)
	} else {
		t.checkpointLocked(start)
	}
	t.endSelectLocked()
	t.mu.Unlock()
}

// finishSelect starts a new timeline from a SELECT sent at start that
// reported n messages at resp. On a reconnect, the messages already there may
// have arrived at any time since floor, and all of them must be searched.
func (t *timeline) finishSelect(start, resp time.Time, n uint32, reconnect bool, floor time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.count = n
	if reconnect {
		t.events = []event{{at: resp, count: n}}
		t.checks = []check{{at: floor, count: 0}, {at: start, count: n}}
		t.searched, t.base = 0, 0
	} else {
		t.events = nil
		t.checks = []check{{at: start, count: n}}
		t.searched, t.base = n, n
	}
	t.endSelectLocked()
}

// checkpoint records that a command sent at 'at' has completed with the
// count up to date.
func (t *timeline) checkpoint(at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.checkpointLocked(at)
}

func (t *timeline) checkpointLocked(at time.Time) {
	if k := len(t.checks); k > 0 && t.checks[k-1].count == t.count {
		// The later check of the same count is the tighter bound.
		if at.After(t.checks[k-1].at) {
			t.checks[k-1].at = at
		}
		return
	}
	t.checks = append(t.checks, check{at: at, count: t.count})
}

func (t *timeline) setIdling(v bool) {
	t.mu.Lock()
	t.idling = v
	t.mu.Unlock()
}

// markSearched notes that a search covering every message reported so far
// is starting.
func (t *timeline) markSearched() {
	t.mu.Lock()
	t.searched = t.count
	t.mu.Unlock()
}

// pending reports whether messages arrived since the last search started.
func (t *timeline) pending() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.count > t.searched
}

// foreign reports whether messages arrived since the baseline, which a
// search did not (yet) find: another sender's mail, or a probe the server
// has not indexed yet.
func (t *timeline) foreign() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.count > t.base
}

// window bounds when the message now at seq became visible. fallback is the
// upper bound to use when no EXISTS covers it (the response of the search
// that found it). idle reports that an EXISTS received during IDLE announced
// it.
func (t *timeline) window(seq uint32, fallback time.Time) (lo, hi time.Time, idle bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	hi = fallback
	for _, e := range t.events {
		if e.count >= seq {
			hi, idle = e.at, e.idle
			break
		}
	}
	for _, c := range t.checks {
		if c.count < seq && !c.at.After(hi) && c.at.After(lo) {
			lo = c.at
		}
	}
	if t.floor.After(lo) {
		lo = t.floor
	}
	if lo.IsZero() || lo.After(hi) {
		lo = hi
	}
	return lo, hi, idle
}

// clampFloor raises lo to the floor, but not past hi.
func (t *timeline) clampFloor(lo, hi time.Time) time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.floor.After(lo) {
		lo = t.floor
	}
	if lo.After(hi) {
		lo = hi
	}
	return lo
}

// setFloor sets the earliest instant the awaited message can have arrived.
func (t *timeline) setFloor(at time.Time) {
	t.mu.Lock()
	t.floor = at
	t.mu.Unlock()
}

// reconnectFloor is the latest instant at which every message not yet
// searched was known to be absent: the lower bound for the messages a
// reconnect finds already there.
func (t *timeline) reconnectFloor() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	var floor time.Time
	for _, c := range t.checks {
		if c.count <= t.searched && c.at.After(floor) {
			floor = c.at
		}
	}
	if floor.IsZero() && len(t.checks) > 0 {
		floor = t.checks[0].at
	}
	return floor
}

// endSelectLocked ends a SELECT: the updates that came while it was under
// way, held until its new counts were known, are applied in order.
func (t *timeline) endSelectLocked() {
	t.selecting = false
	for _, u := range t.queued {
		if u.expunge != 0 {
			t.expungeLocked(u.expunge)
		} else {
			t.existsLocked(u.exists, u.at)
		}
	}
	t.queued = nil
}
