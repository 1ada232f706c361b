package pop3watch

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/emailqos/emailqosreceiver/internal/learn"
	"github.com/emailqos/emailqosreceiver/internal/pop3"
	"github.com/emailqos/emailqosreceiver/internal/probemsg"
	"github.com/emailqos/emailqosreceiver/internal/steps"
)

// Wait polls until a message that was not in the baseline carries
// "X-Emailqos-Token: <token>" exactly and is accepted by accept (nil accepts
// all), or ctx ends.
//
// Every poll is a new session (connect, login, UIDL) because a POP3 session
// never shows mail that arrived after its login. The first poll is at once,
// then the gaps between poll starts are 100ms, doubling up to PollInterval.
// Of each listing only the UIDs not seen before are read, with TOP n 0
// (headers only), newest first; a message that is not the probe is
// remembered and never read again. A poll that finds nothing quits; the one
// that finds the probe stays open for Delete.
//
// The whole wait is the delivery.wait step, reconnects and logins of the
// polls included; UIDL time also goes to pop3.list and TOP time to
// pop3.fetch. ctx ending is code 4 not_found (canceled if it was canceled),
// unless the poll in flight had then been running for a whole PollInterval
// and at least 5s: that is a server that stopped answering, code 3 timeout.
// A poll that cannot connect or log in is code 3 with its type; a UIDL or
// TOP the server refuses is code 4.
func (s *Session) Wait(ctx context.Context, token string, accept func(header []byte) bool) (Arrival, error) {
	return s.WaitAfter(ctx, time.Time{}, token, accept)
}

// WaitAfter is Wait for a message that cannot have arrived before floor
// (the end of its SMTP DATA): a window that starts earlier (at the baseline
// session, before the send) is clamped to it, so that its midpoint is never
// an instant the message cannot have arrived at.
func (s *Session) WaitAfter(ctx context.Context, floor time.Time, token string, accept func(header []byte) bool) (Arrival, error) {
	return s.waitWith(ctx, s.newWaiter(floor, token, accept))
}

func (s *Session) newWaiter(floor time.Time, token string, accept func([]byte) bool) *waiter {
	return &waiter{
		token:    token,
		accept:   accept,
		rejected: make(map[string]struct{}),
		windows:  make(map[string]window),
		floor:    floor,
	}
}

// waitWith is WaitAfter's loop, for w.
func (s *Session) waitWith(ctx context.Context, w *waiter) (Arrival, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return Arrival{}, steps.New(steps.DeliveryWait, steps.TypeConfig, errClosed)
	}
	if !probemsg.Searchable(w.token) {
		return Arrival{}, steps.New(steps.DeliveryWait, steps.TypeConfig, errors.New("pop3: the probe token must be non-empty printable ASCII without spaces"))
	}
	start := time.Now()
	defer func() { s.rec.Add(steps.DeliveryWait, start, time.Since(start)) }()

	// A session kept by an earlier Wait or FindProbes shows an old
	// snapshot, and its lock would refuse the polls' logins.
	if pc := s.held; pc != nil {
		s.held = nil
		s.quietQuit(ctx, pc)
	}
	floor := w.floor
	gap := min(firstInterval, s.opts.PollInterval)
	next := s.notBefore(start)
	learner := s.opts.Learner
	if learner == nil {
		learner = &learn.Learner{}
	}
	base := floor
	if base.IsZero() {
		base = start
	}
	var denseFrom, denseTo time.Time
	if from, to, learned := learner.DenseWindow(); learned {
		// The first dense poll at a random point of its gap: a relay that
		// holds every message equally long would otherwise land each
		// arrival at the same point between two polls, and the middle of
		// the window would err the same way every time instead of
		// averaging out.
		denseFrom, denseTo = base.Add(from+rand.N(denseGap)), base.Add(to)
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		if c := s.failCtx(ctx); c.Err() != nil {
			return Arrival{}, waitEnded(c)
		}
		if d := time.Until(next); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
				return Arrival{}, waitEnded(ctx)
			case <-s.life.Done():
				return Arrival{}, waitEnded(s.life)
			case <-timer.C:
			}
		}
		pollStart := time.Now()
		arr, found, err := s.poll(ctx, w)
		if found {
			// Even if ctx ended right after: the probe was seen.
			learner.Observe(arr.SeenAt.Add(-arr.Uncertainty).Sub(base), arr.SeenAt.Add(arr.Uncertainty).Sub(base))
			return arr, nil
		}
		if err != nil {
			if c := s.failCtx(ctx); c.Err() != nil {
				if stalled := time.Since(pollStart); stalled >= s.stallAfter && !errors.Is(context.Cause(c), context.Canceled) {
					// Not an ordinary poll cut short by the deadline: the
					// server stopped answering, and the probe may have been
					// there all along.
					return Arrival{}, stalledErr(err, stalled)
				}
				return Arrival{}, waitEnded(c)
			}
			return Arrival{}, err
		}
		next = pollStart.Add(gap)
		gap = min(2*gap, s.opts.PollInterval)
		// Densely where this direction's arrivals are expected, from the
		// (randomly placed) start of that window even when it falls within
		// a gap after the poll made at once.
		if pollStart.Before(denseFrom) && denseFrom.Before(next) {
			next = denseFrom
		} else if dense := pollStart.Add(denseGap); dense.Before(denseTo) && !dense.Before(denseFrom) && dense.Before(next) {
			next = dense
		}
		next = s.notBefore(next)
	}
}

// notBefore delays t to respect the server's LOGIN-DELAY since the last
// login.
func (s *Session) notBefore(t time.Time) time.Time {
	if s.loginDelay > 0 {
		if earliest := s.lastLogin.Add(s.loginDelay); earliest.After(t) {
			return earliest
		}
	}
	return t
}

type waiter struct {
	token  string
	accept func([]byte) bool
	// rejected holds the UIDs read and found not to be this probe.
	rejected map[string]struct{}
	// windows holds, for each UID listed since the baseline and not yet
	// rejected, the window in which it became visible: it is fixed by the
	// first listing that showed it, even if it is only read later.
	windows map[string]window
	floor   time.Time
	// notice, when set, judges the new notices (WaitNotices); notices are
	// the UIDs it kept.
	notice  NoticeFunc
	notices []string
}

// window is when a message became visible: certainly within lo..hi, and
// estimated between from and to (the sessions' estimated snapshots).
type window struct{ lo, hi, from, to time.Time }

// newWindow is the window of a message that the snapshot prev did not show
// and cur did, and that cannot have arrived before floor.
func newWindow(prev, cur snap, floor time.Time) window {
	return window{
		lo:   clampLo(prev.lo, floor, cur.hi),
		hi:   cur.hi,
		from: clampLo(prev.at, floor, cur.at),
		to:   cur.at,
	}
}

// poll runs one session. found reports the probe; the session is then kept
// as s.held.
func (s *Session) poll(ctx context.Context, w *waiter) (arr Arrival, found bool, err error) {
	pc, err := s.open(ctx, nil)
	if err != nil {
		return Arrival{}, false, err
	}
	defer func() {
		if !found {
			s.quietQuit(ctx, pc)
		}
	}()
	if err := s.list(ctx, pc, s.rec); err != nil {
		return Arrival{}, false, s.waitFail(ctx, POP3List, err)
	}

	// What is new here became visible between the previous session's
	// snapshot, which did not show it, and this one's.
	prev, cur := s.lastSnap, pc.snap()
	s.lastSnap = cur
	var cands []pop3.MessageID
	for _, id := range pc.ids {
		if _, ok := s.baseline[id.UID]; ok {
			continue
		}
		if _, ok := w.rejected[id.UID]; ok {
			continue
		}
		if _, ok := s.notProbe[id.UID]; ok {
			continue
		}
		if _, ok := w.windows[id.UID]; !ok {
			w.windows[id.UID] = newWindow(prev, cur, w.floor)
		}
		if pc.nums[id.UID] < 0 {
			continue
		}
		cands = append(cands, id)
	}
	for uid := range w.windows {
		if _, ok := pc.nums[uid]; !ok {
			delete(w.windows, uid) // gone before it was read
		}
	}
	// Newest first: the probe arrived last, after any other new mail that
	// a busy maildrop received meanwhile.
	slices.SortFunc(cands, func(a, b pop3.MessageID) int { return b.Num - a.Num })

	for _, id := range cands {
		header, err := s.top(ctx, pc, id.Num, s.rec)
		if err != nil {
			return Arrival{}, false, s.waitFail(ctx, POP3Fetch, err)
		}
		values := probemsg.TokenValues(header)
		if len(values) == 0 {
			s.notProbe[id.UID] = struct{}{}
			// Judged once, whatever the verdict: notProbe keeps it
			// from being read again.
			if w.notice != nil && isReport(header) {
				keep, stop, err := s.judgeNotice(ctx, pc, id, header, w.notice)
				if errors.Is(err, errNoticeTooLarge) {
					return Arrival{}, false, nil // the next poll goes on
				}
				if err != nil {
					return Arrival{}, false, s.waitFail(ctx, POP3Fetch, err)
				}
				if keep {
					w.notices = append(w.notices, id.UID)
				}
				if stop {
					return Arrival{}, false, ErrNoticeStop
				}
			}
		}
		if !slices.Contains(values, w.token) || (w.accept != nil && !w.accept(header)) {
			w.rejected[id.UID] = struct{}{}
			delete(w.windows, id.UID)
			s.log.Debug("POP3 message is not the probe", zap.String("uid", id.UID))
			continue
		}
		win := w.windows[id.UID]
		s.owned[id.UID] = w.token
		pc.probe = true
		pc.verify(id.UID)
		s.held = pc
		return arrival(id.UID, header, win), true, nil
	}
	return Arrival{}, false, nil
}

// clampLo raises a window's lower bound to floor, but not past hi (a
// clock step could put floor after it).
func clampLo(lo, floor, hi time.Time) time.Time {
	if floor.After(lo) {
		lo = floor
	}
	if lo.After(hi) {
		lo = hi
	}
	return lo
}

// arrival reports the middle of the estimated window, with an uncertainty
// that reaches both certain bounds.
func arrival(uid string, header []byte, win window) Arrival {
	seen := win.from.Add(win.to.Sub(win.from) / 2)
	if seen.Before(win.lo) || seen.After(win.hi) {
		seen = win.lo.Add(win.hi.Sub(win.lo) / 2) // a clock step
	}
	return Arrival{
		UID:         uid,
		SeenAt:      seen,
		Uncertainty: max(seen.Sub(win.lo), win.hi.Sub(seen)),
		Header:      header,
	}
}

// waitFail types a failed UIDL or TOP after a successful login: the server
// refusing it, or answering nonsense, is a failed search (code 4); a lost
// connection is a mailbox connection failure (code 3).
func (s *Session) waitFail(ctx context.Context, step string, err error) error {
	typ := pop3.ErrorType(err)
	return steps.FailCode(s.failCtx(ctx), step, steps.PollCode(typ), typ, err)
}

// stalledErr reports a poll the server left unanswered until the deadline
// as a mailbox connection timeout, in the step it was stuck in.
func stalledErr(err error, d time.Duration) error {
	step := steps.DeliveryWait
	var se *steps.Error
	if errors.As(err, &se) {
		step = se.Step
	}
	return &steps.Error{Step: step, Code: steps.CodeMailboxConnect, Type: steps.TypeTimeout,
		Err: fmt.Errorf("pop3: server did not answer a poll for %v: %w", d.Round(time.Millisecond), err)}
}

// waitEnded is the end of a wait that was not otherwise failing: the probe
// did not arrive in time, or the collector is shutting down.
func waitEnded(ctx context.Context) error {
	typ := steps.TypeNotFound
	if errors.Is(context.Cause(ctx), context.Canceled) {
		typ = steps.TypeCanceled
	}
	return steps.New(steps.DeliveryWait, typ, fmt.Errorf("pop3: probe not found: %w", context.Cause(ctx)))
}
