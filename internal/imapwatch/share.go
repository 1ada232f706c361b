package imapwatch

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/emailqos/emailqosreceiver/internal/learn"
	"github.com/emailqos/emailqosreceiver/internal/probemsg"
	"github.com/emailqos/emailqosreceiver/internal/steps"
)

// A shared session watches one mailbox for every probe reading it at the
// same time, as a mail client does: one login instead of one per probe.
// The first probe opens it (OpenShared, its connect and login timed as
// usual); the others Join it and report no login step. Each probe is a
// Member with its own baseline, arrival window (from its own end of DATA),
// verification (its accept callback), placement, cleanup and
// housekeeping; its steps go to its own recorder and its commands to its
// own count.
//
// There is no goroutine of its own: the waiting probes take turns running
// the one wait loop, holding the session. The probe holding it (the
// leader) watches for every waiting probe: it fetches the header fields
// of each new UID once and hands a verified match to the probe it belongs
// to, with the window it observed clamped to that probe's end of DATA.
// Its detection is the densest any waiter needs: a waiter's learned dense
// window (internal/learn) makes the loop poll like precise while it lasts.
// When the leader's probe is found, or its time is up, another waiter
// takes over. A cleanup or housekeeping command of another member makes
// the leader yield the session between two commands. A session failure
// (a reconnect that failed, a refused search) fails every waiting probe
// with the leader's error; a lost connection is re-established as for one
// probe. The last member to Close logs out.

// chanMutex is a mutex that can be waited for in a select.
type chanMutex chan struct{}

func (m chanMutex) Lock()   { m <- struct{}{} }
func (m chanMutex) Unlock() { <-m }

// ErrSessionClosed is Join's answer when the session already logged out
// (its last member closed it): the caller opens a new one.
var ErrSessionClosed = errors.New("imapwatch: shared session closed")

// maxUnclaimed bounds the hits kept for members whose wait has not begun.
const maxUnclaimed = 256

type share struct {
	mu      sync.Mutex // guards the fields below
	members int
	closing bool
	group   []*waiter // the probes waiting, leader included
	// pending counts the members whose wait has not begun: their probe
	// may already be in the mailbox (sent, not yet waited for), so the
	// hits nobody claimed are kept for them in unclaimed.
	pending   int
	unclaimed []claim
	// adopted are the claimed ones, to be made removable (markFound) by
	// the next holder of the session.
	adopted []Arrival

	wake    chan struct{} // the group changed
	yield   chan struct{} // a member wants the session for a command
	wantOps atomic.Int32
	// next is the watched mailbox's UIDNEXT as the session knows it: from
	// its last SELECT, or above the highest UID it examined.
	next atomic.Uint32

	// examined is read and written by the holder of the session only:
	// the UIDs of the watched mailbox no waiter claimed. A joining probe
	// is sent after it joined, so none of them can be its own.
	examined map[imap.UID]struct{}
}

// claim is a hit no waiter claimed, kept for a member not waiting yet.
type claim struct {
	arr    Arrival
	lo, hi time.Time
}

// Member is one probe's use of a shared session.
type Member struct {
	s        *Session
	rec      *steps.Recorder
	learner  *learn.Learner
	cmds     atomic.Int64
	baseline imap.UID
	waited   bool // its wait began (it is no longer pending)
	closed   bool
}

type memberKey struct{}

func withMember(ctx context.Context, m *Member) context.Context {
	return context.WithValue(ctx, memberKey{}, m)
}

// OpenShared is Open for a session that probes of other targets can Join.
// Its connections live until its last member closes it, whatever becomes
// of ctx (which bounds the opening only). The opener is its first member.
func OpenShared(ctx context.Context, opts Options, rec *steps.Recorder) (*Member, error) {
	sh := &share{members: 1, wake: make(chan struct{}, 1), yield: make(chan struct{}, 1),
		examined: make(map[imap.UID]struct{})}
	m := &Member{rec: rec, learner: opts.Learner}
	s, err := openSession(ctx, opts, rec, sh, m)
	if err != nil {
		return nil, err
	}
	m.s = s
	m.baseline = s.baseline
	m.learner = s.learner // opts.Learner, or the fresh one Open made
	sh.pending = 1
	return m, nil
}

// Join makes a new member of the session, with learner for its direction
// (nil: a fresh one). Its baseline is the UIDNEXT the session knows now;
// the probe must be sent after Join returns. It sends nothing.
func (s *Session) Join(rec *steps.Recorder, learner *learn.Learner) (*Member, error) {
	sh := s.share
	if sh == nil {
		return nil, errors.New("imapwatch: the session is not shared")
	}
	if learner == nil {
		learner = &learn.Learner{}
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.closing || sh.members == 0 {
		return nil, ErrSessionClosed
	}
	sh.members++
	sh.pending++
	return &Member{s: s, rec: rec, learner: learner, baseline: imap.UID(max(sh.next.Load(), uint32(s.baseline)))}, nil
}

// Session returns the shared session, for Join.
func (m *Member) Session() *Session { return m.s }

// Commands counts the commands sent while this member held the session:
// its own (login and select for the opener, its cleanup and housekeeping,
// the logout for the last), and those of the waits it led for every
// waiting member. The members' counts add up to the session's.
func (m *Member) Commands() int { return int(m.cmds.Load()) }

// Close ends the membership; the last member logs out (code 5 on failure,
// as Session.Close).
func (m *Member) Close(ctx context.Context) error {
	sh := m.s.share
	sh.mu.Lock()
	if m.closed {
		sh.mu.Unlock()
		return nil
	}
	m.closed = true
	if !m.waited {
		sh.pendingDone()
	}
	sh.members--
	last := sh.members == 0
	if last {
		sh.closing = true
	}
	sh.mu.Unlock()
	if !last {
		return nil
	}
	return m.s.Close(withMember(ctx, m))
}

func (sh *share) pendingDone() {
	sh.pending--
	if sh.pending == 0 {
		sh.unclaimed = nil
	}
}

// The session's commands, for a member: its steps and commands are its own.

func (m *Member) WaitAfter(ctx context.Context, floor time.Time, token string, accept func(header []byte) bool) (Arrival, error) {
	return m.s.groupWait(ctx, m, floor, &waiter{token: token, accept: accept})
}

func (m *Member) WaitNotices(ctx context.Context, floor time.Time, token string, accept func(header []byte) bool, notice NoticeFunc) (Arrival, []Notice, error) {
	w := &waiter{token: token, accept: accept, notice: notice, noticeSeen: make(map[string]map[imap.UID]struct{})}
	a, err := m.s.groupWait(ctx, m, floor, w)
	m.s.share.mu.Lock()
	defer m.s.share.mu.Unlock()
	return a, w.notices, err
}

func (m *Member) DeleteFrom(ctx context.Context, folder string, uid imap.UID) error {
	return m.s.DeleteFrom(withMember(ctx, m), folder, uid)
}

func (m *Member) MoveFrom(ctx context.Context, folder string, uid imap.UID, mailbox string) error {
	return m.s.MoveFrom(withMember(ctx, m), folder, uid, mailbox)
}

func (m *Member) FindProbes(ctx context.Context, tokens []string, limit int, accept func(header []byte) bool) ([]imap.UID, error) {
	return m.s.FindProbes(withMember(ctx, m), tokens, limit, accept)
}

func (m *Member) FindProbesIn(ctx context.Context, folder string, tokens []string, limit int, accept func(header []byte) bool) ([]imap.UID, error) {
	return m.s.FindProbesIn(withMember(ctx, m), folder, tokens, limit, accept)
}

func (m *Member) FindNotices(ctx context.Context, folder string, since, before time.Time, limit int, notice NoticeFunc) ([]imap.UID, error) {
	return m.s.FindNotices(withMember(ctx, m), folder, since, before, limit, notice)
}

func (m *Member) DeleteUIDs(ctx context.Context, uids []imap.UID) error {
	return m.s.DeleteUIDs(withMember(ctx, m), uids)
}

func (m *Member) MoveUIDs(ctx context.Context, uids []imap.UID, mailbox string) error {
	return m.s.MoveUIDs(withMember(ctx, m), uids, mailbox)
}

func (m *Member) DeleteUIDsFrom(ctx context.Context, folder string, uids []imap.UID) error {
	return m.s.DeleteUIDsFrom(withMember(ctx, m), folder, uids)
}

func (m *Member) MoveUIDsFrom(ctx context.Context, folder string, uids []imap.UID, mailbox string) error {
	return m.s.MoveUIDsFrom(withMember(ctx, m), folder, uids, mailbox)
}

func (m *Member) JunkFolders() []string { return m.s.JunkFolders() }

// lock takes the session. On a shared session it first asks the leader of
// a wait to yield, and then acts for the member in ctx, if any.
func (s *Session) lock(ctx context.Context) {
	sh := s.share
	if sh == nil {
		s.mu.Lock()
		return
	}
	sh.wantOps.Add(1)
	select {
	case sh.yield <- struct{}{}:
	default:
	}
	s.mu.Lock()
	sh.wantOps.Add(-1)
	if m, ok := ctx.Value(memberKey{}).(*Member); ok && m != nil {
		s.actAs(m)
	}
	s.adopt()
}

// adopt makes the claimed probes removable; under the session's lock.
func (s *Session) adopt() {
	if s.share == nil {
		return
	}
	s.share.mu.Lock()
	adopted := s.share.adopted
	s.share.adopted = nil
	s.share.mu.Unlock()
	for _, a := range adopted {
		s.markFound(a.Folder, a.UID)
	}
}

// actAs makes the session record m's steps and count its commands.
func (s *Session) actAs(m *Member) {
	s.rec = m.rec
	s.sink.Store(&m.cmds)
}

// noteNext records a lower bound of the watched mailbox's UIDNEXT.
func (s *Session) noteNext(next imap.UID) {
	if s.share == nil {
		return
	}
	for {
		cur := s.share.next.Load()
		if uint32(next) <= cur || s.share.next.CompareAndSwap(cur, uint32(next)) {
			return
		}
	}
}

// errYield ends a leader's turn: a member wants the session.
var errYield = errors.New("imapwatch: yield")

// yieldPause is how long a waiter lets a member's command take the session
// before it looks again.
const yieldPause = time.Millisecond

// groupWait is WaitAfter on a shared session.
func (s *Session) groupWait(ctx context.Context, m *Member, floor time.Time, w *waiter) (Arrival, error) {
	sh := s.share
	if !probemsg.Searchable(w.token) {
		return Arrival{}, steps.New(steps.DeliveryWait, steps.TypeConfig, errors.New("imap: the probe token must be non-empty printable ASCII without spaces"))
	}
	start := time.Now()
	if floor.IsZero() {
		floor = start
	}
	w.floor, w.rec, w.learner, w.baseline = floor, m.rec, m.learner, m.baseline
	w.rejected = sh.examined
	w.done = make(chan struct{})
	w.setDense(s)
	ctx = withMember(ctx, m)
	arr, err := s.groupTurns(ctx, m, w)
	m.rec.Add(steps.DeliveryWait, start, time.Since(start))
	if err == nil && arr.Placement == PlacementInbox {
		m.learner.Observe(arr.SeenAt.Add(-arr.Uncertainty).Sub(floor), arr.SeenAt.Add(arr.Uncertainty).Sub(floor))
	}
	arr.IdleNoPush = s.learner.IdleUntrusted() || m.learner.IdleUntrusted()
	return arr, err
}

// groupTurns registers w and waits for its arrival, leading the wait loop
// whenever the session is free.
// A probe found by another's turn skips learnSearch: the account's search
// hint is learned from the probes a leader finds.
func (s *Session) groupTurns(ctx context.Context, m *Member, w *waiter) (Arrival, error) {
	sh := s.share
	// Read before w is in the group: a leader may then set w.notice to nil
	// (a refused search).
	notices := w.notice != nil
	if a, ok, err := sh.register(s, m, w); ok || err != nil {
		return a, err
	}
	pause := time.NewTimer(time.Hour)
	defer pause.Stop()
	for {
		select {
		case <-w.done:
			return w.arr, w.err
		case <-ctx.Done():
			if !sh.leave(s, w) {
				<-w.done // delivered meanwhile
				return w.arr, w.err
			}
			if notices {
				// A turn under way may still be judging its notices
				// (w.notice is the caller's): wait for it to end.
				s.lock(context.Background())
				s.mu.Unlock()
			}
			if errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
				if a, found := s.lastJunkLook(m, w); found {
					return a, nil
				}
			}
			if s.lostNow.Load() {
				return Arrival{}, steps.Fail(ctx, steps.IMAPConnect, "", errors.New("imap: connection lost"))
			}
			return Arrival{}, waitEnded(ctx)
		case s.mu <- struct{}{}:
		}
		// The session is this probe's: lead the wait for every waiter.
		if w.delivered() {
			s.mu.Unlock()
			continue
		}
		if sh.wantOps.Load() > 0 || s.closed {
			s.mu.Unlock()
			if s.closed {
				sh.leave(s, w)
				return Arrival{}, steps.New(steps.DeliveryWait, steps.TypeConfig, errClosed)
			}
			pause.Reset(yieldPause)
			select {
			case <-pause.C:
			case <-w.done:
			case <-ctx.Done():
			}
			continue
		}
		s.actAs(m)
		s.tl.setFloor(sh.floor())
		if s.opts.Method == MethodAuto && s.method == MethodIdle && m.learner.IdleUntrusted() {
			// This direction learned that the server's IDLE does not
			// push: auto polls for it, as it would in a session of its
			// own.
			s.method = MethodPoll
		}
		arr, err := s.wait(ctx, w)
		s.dense = false
		if errors.Is(err, errYield) {
			s.mu.Unlock()
			continue
		}
		if !sh.leave(s, w) {
			// Delivered by a notice or failure of another turn: cannot
			// happen while this probe held the session, but keep its
			// result if it did.
			s.mu.Unlock()
			<-w.done
			return w.arr, w.err
		}
		own := err == nil || ctx.Err() != nil || errors.Is(err, ErrNoticeStop)
		if !own {
			// The session failed (code of its step): every probe waiting
			// on it fails with it.
			sh.failAll(err)
		}
		if err == nil && arr.Placement == PlacementInbox {
			s.learnSearch(ctx, arr.UID, w.token)
		}
		s.mu.Unlock()
		return arr, err
	}
}

// lastJunkLook is the look at the junk folders after w's delivery timeout
// (finalJunk), for a probe that was not leading when its time ran out.
func (s *Session) lastJunkLook(m *Member, w *waiter) (Arrival, bool) {
	if len(s.opts.JunkFolders) == 0 && !s.opts.DiscoverJunk {
		return Arrival{}, false
	}
	// The leader yields (as to a member's command), within the budget.
	sh := s.share
	sh.wantOps.Add(1)
	select {
	case sh.yield <- struct{}{}:
	default:
	}
	t := time.NewTimer(finalJunkBudget)
	defer t.Stop()
	select {
	case s.mu <- struct{}{}:
		sh.wantOps.Add(-1)
	case <-t.C:
		sh.wantOps.Add(-1)
		return Arrival{}, false
	}
	defer s.mu.Unlock()
	s.actAs(m)
	return s.finalJunk(w)
}

// register adds w to the waiting group, or hands it its probe at once if
// the session examined it before w's wait began.
func (sh *share) register(s *Session, m *Member, w *waiter) (Arrival, bool, error) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if m.closed || sh.closing {
		return Arrival{}, false, steps.New(steps.DeliveryWait, steps.TypeConfig, errClosed)
	}
	// Looked for before its pending count is dropped, which may clear
	// the kept hits.
	defer func() {
		if !m.waited {
			m.waited = true
			sh.pendingDone()
		}
	}()
	for i, c := range sh.unclaimed {
		if w.claims(c.arr.UID, c.arr.Placement, c.arr.Header) {
			sh.unclaimed = append(sh.unclaimed[:i], sh.unclaimed[i+1:]...)
			sh.adopted = append(sh.adopted, c.arr)
			return c.arr.clamp(c.lo, c.hi, w.floor), true, nil
		}
	}
	sh.group = append(sh.group, w)
	s.tl.setFloor(sh.floorLocked())
	sh.signal()
	return Arrival{}, false, nil
}

func (sh *share) signal() {
	select {
	case sh.wake <- struct{}{}:
	default:
	}
}

// leave removes w from the group; false if it was not there (delivered).
func (sh *share) leave(s *Session, w *waiter) bool {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	for i, g := range sh.group {
		if g == w {
			sh.group = append(sh.group[:i], sh.group[i+1:]...)
			s.tl.setFloor(sh.floorLocked())
			sh.signal()
			return true
		}
	}
	return false
}

// deliver hands w its result and removes it from the group, unless it left.
func (sh *share) deliver(w *waiter, a Arrival, err error) bool {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	for i, g := range sh.group {
		if g == w {
			sh.group = append(sh.group[:i], sh.group[i+1:]...)
			w.arr, w.err = a, err
			close(w.done)
			return true
		}
	}
	return false
}

// failAll fails every waiting probe with err.
func (sh *share) failAll(err error) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	for _, g := range sh.group {
		g.arr, g.err = Arrival{}, err
		close(g.done)
	}
	sh.group = nil
}

// waiting returns the probes waiting now.
func (sh *share) waiting() []*waiter {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return append([]*waiter(nil), sh.group...)
}

// floor is the earliest end of DATA of the waiting probes: the timeline
// clamps windows there, each probe's own floor afterwards.
func (sh *share) floor() time.Time {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.floorLocked()
}

func (sh *share) floorLocked() time.Time {
	var f time.Time
	for _, g := range sh.group {
		if f.IsZero() || g.floor.Before(f) {
			f = g.floor
		}
	}
	return f
}

// claims reports whether the message uid (in the watched mailbox, or in a
// junk folder) with header is w's probe.
func (w *waiter) claims(uid imap.UID, p Placement, header []byte) bool {
	if p == PlacementInbox && uid < w.baseline {
		return false
	}
	return hasToken(header, w.token) && (w.accept == nil || w.accept(header))
}

func (w *waiter) delivered() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// setDense computes w's dense window (auto and poll detection) from its own
// learner, counted from its own end of DATA.
func (w *waiter) setDense(s *Session) {
	w.denseFrom, w.denseTo = time.Time{}, time.Time{}
	if s.opts.Method != MethodAuto && s.opts.Method != MethodPoll {
		return
	}
	l := w.learner
	if l == nil {
		l = s.learner
	}
	from, to, learned := l.DenseWindow()
	if learned || s.opts.Method == MethodAuto {
		w.denseFrom, w.denseTo = w.floor.Add(from), w.floor.Add(to)
	}
}

// clamp is a with its window [lo, hi] starting no earlier than floor.
func (a Arrival) clamp(lo, hi, floor time.Time) Arrival {
	if floor.After(lo) {
		lo = floor
	}
	if lo.After(hi) {
		lo = hi
	}
	span := hi.Sub(lo)
	a.SeenAt, a.Uncertainty = lo.Add(span/2), span-span/2
	return a
}
