package imapwatch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"go.uber.org/zap"

	"github.com/emailqos/emailqosreceiver/internal/learn"
	"github.com/emailqos/emailqosreceiver/internal/probemsg"
	"github.com/emailqos/emailqosreceiver/internal/steps"
)

// Wait blocks until a message carrying "X-Emailqos-Token: <token>" above the
// baseline is visible and accepted by accept (nil accepts all), or ctx ends.
//
// New messages are noticed by IDLE or by NOOP polls; only then are the
// messages above the baseline listed (UID SEARCH UID <baseline>:*, which
// needs no search index) and the headers of those not yet examined fetched,
// with BODY.PEEK so that \Seen is not set, and checked here: custom-header
// search returns nothing on some servers (Stalwart, reportedly Gmail and
// Yahoo) and a search index may lag delivery (Exchange), so neither decides
// what is found nor when. A message that is not the probe is never examined
// again. When more than maxHits new messages wait, a header search for the
// token picks the likeliest first (an accelerator only).
//
// The junk folders (Options.JunkFolders) are asked for their UIDNEXT every
// PollInterval, at least 1s apart, breaking IDLE for it; one whose UIDNEXT
// moved is examined and searched the same way, and the watched mailbox is
// selected again. A probe found there has Placement junk, and its arrival
// is bounded by the STATUS before and the STATUS that showed it (method
// poll). When ctx's deadline passes they are looked at once more.
//
// A lost connection is re-established once per loss, up to a few times;
// failing that is code 3. ctx ending is code 4 not_found (canceled if it was
// canceled); a refused SEARCH or FETCH is code 4 rejected or protocol.
func (s *Session) Wait(ctx context.Context, token string, accept func(header []byte) bool) (Arrival, error) {
	return s.WaitAfter(ctx, time.Time{}, token, accept)
}

// WaitAfter is Wait for a message that cannot have been visible before
// floor, the end of its SMTP DATA (zero: unknown). No arrival window starts
// before floor: the checks made before the send (SELECT, an earlier NOOP)
// bound nothing closer, and a window reaching back to them would put its
// midpoint before the message existed. In auto mode the dense window
// (package learn) is counted from floor; poll mode has one too, so that
// its backoff does not blur the arrivals where they are expected.
func (s *Session) WaitAfter(ctx context.Context, floor time.Time, token string, accept func(header []byte) bool) (Arrival, error) {
	return s.waitWith(ctx, floor, &waiter{token: token, accept: accept, rejected: make(map[imap.UID]struct{})})
}

func (s *Session) waitWith(ctx context.Context, floor time.Time, w *waiter) (Arrival, error) {
	token := w.token
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return Arrival{}, steps.New(steps.DeliveryWait, steps.TypeConfig, errClosed)
	}
	if !probemsg.Searchable(token) {
		return Arrival{}, steps.New(steps.DeliveryWait, steps.TypeConfig, errors.New("imap: the probe token must be non-empty printable ASCII without spaces"))
	}
	start := time.Now()
	s.tl.setFloor(floor)
	if floor.IsZero() {
		floor = start
	}
	w.floor, w.learner, w.baseline = floor, s.learner, s.baseline
	w.setDense(s)
	s.more = false
	arr, err := s.wait(ctx, w)
	// Timed before learnSearch, whose SEARCHes are not part of the wait.
	s.rec.Add(steps.DeliveryWait, start, time.Since(start))
	s.dense = false
	if err == nil && arr.Placement == PlacementInbox {
		s.learner.Observe(arr.SeenAt.Add(-arr.Uncertainty).Sub(floor), arr.SeenAt.Add(arr.Uncertainty).Sub(floor))
		s.learnSearch(ctx, arr.UID, token)
	}
	arr.IdleNoPush = s.learner.IdleUntrusted()
	return arr, err
}

type waiter struct {
	token    string
	accept   func([]byte) bool
	rejected map[imap.UID]struct{}
	floor    time.Time
	// baseline is the watched mailbox's UIDNEXT before the probe was
	// sent; denseFrom and denseTo its dense window (auto and poll), from
	// its own learner.
	baseline           imap.UID
	learner            *learn.Learner
	denseFrom, denseTo time.Time
	// On a shared session (share.go): the member's recorder, and the
	// result another probe's turn found, closing done.
	rec  *steps.Recorder
	done chan struct{}
	arr  Arrival
	err  error
	// notice, when set, judges the delivery status notifications found
	// (notice.go); noticeSeen holds those judged, by folder, and notices
	// those kept.
	notice     NoticeFunc
	noticeSeen map[string]map[imap.UID]struct{}
	notices    []Notice
}

func (s *Session) wait(ctx context.Context, w *waiter) (Arrival, error) {
	pollEvery := min(firstInterval, s.opts.PollInterval)
	if s.method == MethodPrecise {
		pollEvery = s.opts.PreciseInterval
	}
	nextPoll := time.Now() // poll at once: the probe may be there already
	reSearchEvery := min(firstInterval, s.opts.PollInterval)
	var reSearchAt time.Time
	junkAt := s.junkLast.Add(s.junkEvery())
	reconnects := 0
	// auto and poll: the dense windows of the waiters, and when the next
	// NOOP is due.
	auto := s.opts.Method == MethodAuto || s.opts.Method == MethodPoll
	var nextDense time.Time
	// A shared session's leader yields to a member's command, and looks
	// again at the waiters when they change.
	var yield, wake chan struct{}
	if s.share != nil {
		yield, wake = s.share.yield, s.share.wake
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()

	for {
		if s.share != nil && s.share.wantOps.Load() > 0 && ctx.Err() == nil {
			return Arrival{}, errYield
		}
		if ctx.Err() != nil {
			if s.dropped {
				// The connection was lost and could not be restored in time.
				return Arrival{}, steps.Fail(ctx, steps.IMAPConnect, "", errors.New("imap: connection lost"))
			}
			if errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
				if arr, found := s.finalJunk(w); found {
					return arr, nil
				}
			}
			return Arrival{}, waitEnded(ctx)
		}
		if s.broken {
			if reconnects == maxReconnects {
				return Arrival{}, steps.New(steps.IMAPConnect, steps.TypeConnect, fmt.Errorf("imap: connection lost %d times during the wait", reconnects+1))
			}
			reconnects++
			if err := s.reconnect(ctx); err != nil {
				s.dropped = true
				s.lostNow.Store(true)
				return Arrival{}, err
			}
			continue
		}
		if s.selected != s.opts.Mailbox {
			if err := s.ensureWatched(ctx); err != nil {
				var se *steps.Error
				if errors.As(err, &se) {
					s.dropConn()
					return Arrival{}, err
				}
				if ctx.Err() != nil || s.failed(err) {
					continue
				}
				return Arrival{}, steps.Fail(ctx, steps.IMAPSelect, imapType(err), err)
			}
			continue
		}

		now := time.Now()
		if s.tl.pending() || s.more || (!reSearchAt.IsZero() && !now.Before(reSearchAt)) {
			if s.tl.pending() {
				reSearchEvery = min(firstInterval, s.opts.PollInterval)
			}
			err := s.stopIdle(ctx)
			var arr Arrival
			var found bool
			if err == nil {
				arr, found, err = s.search(ctx, w)
			}
			if errors.Is(err, ErrNoticeStop) {
				return Arrival{}, err
			}
			if err != nil {
				if ctx.Err() != nil || s.failed(err) {
					continue
				}
				return Arrival{}, steps.Fail(ctx, steps.IMAPSearch, searchType(err), err)
			}
			if found {
				return arr, nil
			}
			reSearchAt = time.Time{}
			if s.tl.foreign() {
				reSearchAt = time.Now().Add(reSearchEvery)
				reSearchEvery = min(2*reSearchEvery, s.opts.PollInterval)
			}
			continue
		}
		if len(s.junk) > 0 && !now.Before(junkAt) {
			err := s.stopIdle(ctx)
			var arr Arrival
			var found bool
			if err == nil {
				arr, found, err = s.checkJunk(ctx, w, false)
			}
			junkAt = time.Now().Add(s.junkEvery())
			if errors.Is(err, ErrNoticeStop) {
				return Arrival{}, err
			}
			if err != nil {
				if ctx.Err() != nil || s.failed(err) {
					continue
				}
				return Arrival{}, steps.Fail(ctx, steps.IMAPSearch, searchType(err), err)
			}
			if found {
				return arr, nil
			}
			continue
		}

		var due time.Time
		inDense, denseTo, denseFrom := s.denseAt(w, now)
		s.dense = auto && inDense
		if s.dense {
			// Inside the window where this direction's arrivals are
			// expected: poll like precise, IDLE paused.
			if err := s.stopIdle(ctx); err != nil {
				if ctx.Err() != nil || s.failed(err) {
					continue
				}
				return Arrival{}, steps.Fail(ctx, steps.DeliveryWait, searchType(err), err)
			}
			if !now.Before(nextDense) {
				start := time.Now()
				if err := s.noop(ctx); err != nil {
					if ctx.Err() != nil || s.failed(err) {
						continue
					}
					return Arrival{}, steps.Fail(ctx, steps.DeliveryWait, searchType(err), err)
				}
				nextDense = start.Add(s.opts.PreciseInterval)
				continue
			}
			due = nextDense
			if denseTo.Before(due) {
				due = denseTo
			}
		} else if s.method == MethodIdle {
			if s.idle == nil && s.idleBuysNothing(now, w.floor) {
				due = denseFrom // no IDLE for a few ms before the dense polls
			} else if s.idle == nil {
				if err := s.startIdle(ctx); err != nil {
					if ctx.Err() != nil || s.failed(err) {
						continue
					}
					return Arrival{}, steps.Fail(ctx, steps.DeliveryWait, searchType(err), err)
				}
				continue // updates flushed on entering IDLE may be pending
			} else {
				due = s.idleSince.Add(s.idleEvery())
			}
		} else {
			if !now.Before(nextPoll) {
				start := time.Now()
				if err := s.noop(ctx); err != nil {
					if ctx.Err() != nil || s.failed(err) {
						continue
					}
					return Arrival{}, steps.Fail(ctx, steps.DeliveryWait, searchType(err), err)
				}
				nextPoll = start.Add(pollEvery)
				if s.method == MethodPoll {
					pollEvery = min(2*pollEvery, s.opts.PollInterval)
				}
				continue
			}
			due = nextPoll
		}
		if auto && !denseFrom.IsZero() && now.Before(denseFrom) && denseFrom.Before(due) {
			due = denseFrom
		}
		if !reSearchAt.IsZero() && reSearchAt.Before(due) {
			due = reSearchAt
		}
		if len(s.junk) > 0 && junkAt.Before(due) {
			due = junkAt
		}

		timer.Reset(time.Until(due))
		select {
		case <-ctx.Done():
		case <-yield:
		case <-wake:
		case <-s.tl.wake:
		case <-s.c.Closed():
			// Whatever ended it, only a new connection can go on.
			s.failed(errors.New("imap: connection closed"))
		case <-timer.C:
			if s.idle != nil && !time.Now().Before(s.idleSince.Add(s.idleEvery())) {
				if err := s.stopIdle(ctx); err != nil && ctx.Err() == nil {
					s.failed(err)
				}
			}
		}
		timer.Stop()
	}
}

// denseAt reports whether now is inside the dense window of w or, on a
// shared session, of any waiter; end is when the windows now open close,
// next when the next one opens (zero: none).
func (s *Session) denseAt(w *waiter, now time.Time) (in bool, end, next time.Time) {
	ws := []*waiter{w}
	if s.share != nil {
		ws = append(ws, s.share.waiting()...)
	}
	for _, g := range ws {
		if g.denseTo.IsZero() {
			continue
		}
		switch {
		case !now.Before(g.denseFrom) && now.Before(g.denseTo):
			if !in || g.denseTo.After(end) {
				end = g.denseTo
			}
			in = true
		case now.Before(g.denseFrom):
			if next.IsZero() || g.denseFrom.Before(next) {
				next = g.denseFrom
			}
		}
	}
	return in, end, next
}

func (s *Session) idleEvery() time.Duration {
	return min(s.idleRefresh, s.opts.PollInterval)
}

// waitEnded is the end of a wait whose connection was fine: the probe did
// not arrive in time, or the collector is shutting down.
func waitEnded(ctx context.Context) error {
	typ := steps.TypeNotFound
	if errors.Is(context.Cause(ctx), context.Canceled) {
		typ = steps.TypeCanceled
	}
	return steps.New(steps.DeliveryWait, typ, fmt.Errorf("imap: probe not found: %w", context.Cause(ctx)))
}

func searchType(err error) string {
	if t := imapType(err); t != "" {
		return t
	}
	return steps.TypeProtocol
}

func (s *Session) noop(ctx context.Context) error {
	sent := time.Now()
	if err := s.bound(ctx, func() error { return s.c.Noop().Wait() }); err != nil {
		return err
	}
	// A server reports new messages in its answer to NOOP.
	s.tl.checkpoint(sent)
	return nil
}

type hit struct {
	uid    imap.UID
	header []byte
	lo, hi time.Time
	idle   bool
}

// newUIDs lists the selected mailbox's messages from UID base on that are
// not in examined, at most maxHits, oldest first, and whether there are
// more; timed as the search step, resp is when the listing came.
//
// The listing is UID SEARCH UID <base>:*, which every server answers from
// its UID list. Only when more than maxHits wait (a flood) is the token
// searched for among them, as an accelerator: its hits go first, and its
// silence or refusal (a server that cannot search custom headers, or one
// that answers BAD) just leaves the oldest batch; the rest are examined in
// later rounds.
func (s *Session) newUIDs(ctx context.Context, base imap.UID, token string, examined map[imap.UID]struct{}) (_ []imap.UID, more bool, resp time.Time, _ error) {
	search := func(crit *imap.SearchCriteria) (*imap.SearchData, error) {
		var data *imap.SearchData
		err := s.bound(ctx, func() error {
			var err error
			data, err = s.c.UIDSearch(crit, nil).Wait()
			return err
		})
		return data, err
	}
	above := []imap.UIDSet{{imap.UIDRange{Start: base, Stop: 0}}}
	start := time.Now()
	data, err := search(&imap.SearchCriteria{UID: above})
	resp = time.Now()
	s.rec.Add(steps.IMAPSearch, start, resp.Sub(start))
	if err != nil {
		return nil, false, resp, err
	}
	uids, more := candidates(data, base, examined, maxHits)
	if !more {
		return uids, false, resp, nil
	}
	hdata, err := search(&imap.SearchCriteria{UID: above,
		Header: []imap.SearchCriteriaHeaderField{{Key: probemsg.TokenHeader, Value: token}}})
	var refused *imap.Error
	switch {
	case errors.As(err, &refused):
		return uids, true, resp, nil
	case err != nil:
		return nil, false, resp, err
	}
	hits, _ := candidates(hdata, base, examined, maxHits)
	out := make([]imap.UID, 0, maxHits)
	seen := make(map[imap.UID]bool, maxHits)
	for _, u := range append(hits, uids...) {
		if !seen[u] && len(out) < maxHits {
			seen[u] = true
			out = append(out, u)
		}
	}
	return out, true, resp, nil
}

// searchProbe examines the messages above the baseline not examined yet: it
// fetches their headers and reports the first that carries the token and is
// accepted.
func (s *Session) searchProbe(ctx context.Context, w *waiter) (Arrival, bool, error) {
	s.tl.markSearched()
	uids, more, resp, err := s.newUIDs(ctx, s.baseline, w.token, w.rejected)
	if err != nil {
		return Arrival{}, false, err
	}
	s.more = more
	if len(uids) == 0 {
		return Arrival{}, false, nil
	}

	var set imap.UIDSet
	set.AddNum(uids...)
	start := time.Now()
	hits, err := s.fetchHeaders(ctx, set, func(seq uint32, h *hit) {
		// imapclient hands a message over when its header literal starts,
		// holding its reader inside this response: the sequence number and
		// the timeline agree.
		h.lo, h.hi, h.idle = s.tl.window(seq, resp)
	})
	s.rec.Add(steps.IMAPFetch, start, time.Since(start))
	if err != nil {
		return Arrival{}, false, err
	}

	sort.Slice(hits, func(i, j int) bool { return hits[i].uid < hits[j].uid })
	// On a shared session every hit is handed to the waiter it belongs
	// to, and the leader's own arrival returned after.
	var own Arrival
	var found bool
	for _, h := range hits {
		if _, seen := w.rejected[h.uid]; seen || h.uid < s.baseline || !set.Contains(h.uid) {
			continue
		}
		s.noteNext(h.uid + 1)
		if !found && w.claims(h.uid, PlacementInbox, h.header) {
			s.found[h.uid] = struct{}{}
			a := s.arrivalFor(h, w.learner)
			a.Placement, a.Folder = PlacementInbox, s.opts.Mailbox
			if s.share == nil {
				return a, true, nil
			}
			own, found = a.clamp(h.lo, h.hi, w.floor), true
			continue
		}
		if s.share != nil && s.dispatch(w, h, PlacementInbox, s.opts.Mailbox, h.lo, h.hi) {
			continue
		}
		w.rejected[h.uid] = struct{}{}
		s.log.Debug("IMAP search hit is not the probe", zap.Uint32("uid", uint32(h.uid)))
	}
	return own, found, nil
}

// dispatch hands the hit h, in folder, to the waiting probe of a shared
// session it belongs to, other than the leader w, or keeps it for a member
// whose wait has not begun. It reports whether a waiter took it. All under
// the share's lock, so that a probe whose wait begins meanwhile either is
// in the group or finds the hit kept.
func (s *Session) dispatch(w *waiter, h hit, p Placement, folder string, lo, hi time.Time) bool {
	sh := s.share
	sh.mu.Lock()
	defer sh.mu.Unlock()
	for i, g := range sh.group {
		if g == w || !g.claims(h.uid, p, h.header) {
			continue
		}
		a := Arrival{UID: h.uid, Header: h.header, Method: MethodPoll}
		if p == PlacementInbox {
			a = s.arrivalFor(h, g.learner)
		}
		a.Placement, a.Folder = p, folder
		sh.group = append(sh.group[:i], sh.group[i+1:]...)
		g.arr, g.err = a.clamp(lo, hi, g.floor), nil
		close(g.done)
		s.markFound(folder, h.uid)
		return true
	}
	if sh.pending == 0 {
		return false
	}
	a := Arrival{UID: h.uid, Header: h.header, Method: MethodPoll, Placement: p, Folder: folder}
	if p == PlacementInbox {
		// What arrival would say, without learning from a message that
		// may be nobody's.
		switch {
		case h.idle:
			a.Method = MethodIdle
		case s.dense && s.opts.Method == MethodAuto:
			a.Method = MethodPrecise
		case s.method == MethodIdle:
			a.Method = MethodPoll
		default:
			a.Method = s.method
		}
	}
	if len(sh.unclaimed) == maxUnclaimed {
		sh.unclaimed = append(sh.unclaimed[:0], sh.unclaimed[1:]...)
	}
	sh.unclaimed = append(sh.unclaimed, claim{arr: a, lo: lo, hi: hi})
	return false
}

// markFound makes uid of folder removable by this session's cleanup.
func (s *Session) markFound(folder string, uid imap.UID) {
	if folder == s.opts.Mailbox {
		s.found[uid] = struct{}{}
		return
	}
	if s.foundIn[folder] == nil {
		s.foundIn[folder] = make(map[imap.UID]struct{})
	}
	s.foundIn[folder][uid] = struct{}{}
}

// fetchHeaders fetches the UID and the header block of the messages of set,
// with BODY.PEEK so that \Seen is not set. begin, when not nil, is called as
// each message's response begins, while its sequence number is current.
func (s *Session) fetchHeaders(ctx context.Context, set imap.UIDSet, begin func(seq uint32, h *hit)) ([]hit, error) {
	section := &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, Peek: true}
	var hits []hit
	err := s.bound(ctx, func() error {
		cmd := s.c.Fetch(set, &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{section}})
		for msg := cmd.Next(); msg != nil; msg = cmd.Next() {
			var h hit
			if begin != nil {
				begin(msg.SeqNum, &h)
			}
			for item := msg.Next(); item != nil; item = msg.Next() {
				switch item := item.(type) {
				case imapclient.FetchItemDataUID:
					h.uid = item.UID
				case imapclient.FetchItemDataBodySection:
					if item.Literal != nil && h.header == nil {
						h.header, _ = io.ReadAll(io.LimitReader(item.Literal, maxHeaderBytes))
					}
				}
			}
			hits = append(hits, h)
		}
		return cmd.Close()
	})
	return hits, err
}

func (s *Session) arrival(h hit) Arrival {
	return s.arrivalFor(h, s.learner)
}

// arrivalFor is arrival for a probe whose direction learns in l (on a
// shared session, each probe's own; the session's learner learns too).
func (s *Session) arrivalFor(h hit, l *learn.Learner) Arrival {
	a := Arrival{UID: h.uid, Header: h.header}
	quiet := !h.idle && s.idleQuiet(h)
	idleSeen := func(pushed bool) bool {
		untrusted := s.learner.IdleSeen(pushed)
		if l != nil && l != s.learner {
			untrusted = l.IdleSeen(pushed) || untrusted
		}
		return untrusted
	}
	switch {
	case h.idle:
		a.Method = MethodIdle
		idleSeen(true)
	case s.dense && !quiet && s.opts.Method == MethodAuto:
		a.Method = MethodPrecise
	default:
		a.Method = s.method
		if a.Method == MethodIdle {
			a.Method = MethodPoll // shown by a command response between two IDLEs
		}
	}
	if quiet && idleSeen(false) {
		// Cyrus without idled, for one, accepts IDLE and announces nothing
		// until the client ends it.
		// Two arrivals it kept quiet about for 2 s or more, and none
		// announced: a heuristic (a server that holds announcements that
		// long is no better for measuring). In idle mode one announcement
		// later restores the trust; auto stops idling.
		s.log.Warn("IMAP IDLE does not announce new messages (it showed them only when IDLE ended): detection auto polls this mailbox instead, detection idle sees arrivals only when IDLE is re-issued",
			zap.String("address", s.opts.Endpoint.Address), zap.String("mailbox", s.opts.Mailbox))
		if s.opts.Method == MethodAuto && s.method == MethodIdle {
			s.method = MethodPoll
		}
	}
	span := h.hi.Sub(h.lo)
	a.SeenAt = h.lo.Add(span / 2)
	a.Uncertainty = span - span/2
	return a
}

// idleQuiet reports whether h first showed in the answer to the DONE of an
// IDLE that had been running, announcing nothing about it, for at least
// learn.SilentAfter of its window: an IDLE that did not push.
func (s *Session) idleQuiet(h hit) bool {
	if s.doneSent.IsZero() || h.hi.Before(s.doneSent) || h.hi.After(s.doneResp) {
		return false
	}
	return !s.idleFrom.After(h.lo) && s.doneSent.Sub(h.lo) >= learn.SilentAfter
}

// candidates lists the UIDs of a search result that may be the probe, at most
// limit of them, and whether there were more. A server answers "UID n:*" with
// its highest UID even below n (the range is unordered), so the baseline is
// enforced here too.
func candidates(data *imap.SearchData, baseline imap.UID, rejected map[imap.UID]struct{}, limit int) ([]imap.UID, bool) {
	set, _ := data.All.(imap.UIDSet)
	var out []imap.UID
	for _, r := range set {
		lo, hi := r.Start, r.Stop
		if lo == 0 || hi == 0 {
			continue // "*" in a result is a server bug
		}
		if lo > hi {
			lo, hi = hi, lo
		}
		lo = max(lo, baseline)
		for u := lo; u >= lo && u <= hi; u++ {
			if _, ok := rejected[u]; ok {
				continue
			}
			if len(out) == limit {
				return out, true
			}
			out = append(out, u)
		}
	}
	return out, false
}

// hasToken reports whether the header block carries exactly token: SEARCH
// HEADER matches substrings.
func hasToken(header []byte, token string) bool {
	return slices.Contains(tokenValues(header), token)
}
