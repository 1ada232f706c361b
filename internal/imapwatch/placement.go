package imapwatch

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"go.uber.org/zap"

	"github.com/emailqos/emailqosreceiver/internal/steps"
)

// Placement is where a probe was found.
type Placement string

const (
	// PlacementInbox: in the watched mailbox.
	PlacementInbox Placement = "inbox"
	// PlacementJunk: in one of the junk folders, filed there as spam.
	PlacementJunk Placement = "junk"
)

const (
	// minJunkEvery bounds how often the junk folders are looked at.
	minJunkEvery = time.Second
	// finalJunkBudget bounds the last look at the junk folders once the
	// delivery timeout has expired.
	finalJunkBudget = 5 * time.Second
	// maxJunkFolders bounds the folders watched besides the mailbox.
	maxJunkFolders = 8
	// maxJunkChecks bounds the STATUS history kept per folder; losing the
	// oldest entries only widens an arrival window.
	maxJunkChecks = 256
)

// commonJunkNames are looked for when no folder carries the \Junk
// special-use attribute (RFC 6154), compared without regard to case.
var commonJunkNames = []string{"Junk", "Spam", "Junk Email", "Junk E-mail", "[Gmail]/Spam", "Bulk Mail", "Bulk"}

// junkFolder is a folder watched cheaply (STATUS UIDNEXT) for the probe
// while the watched mailbox is waited on.
type junkFolder struct {
	name     string
	validity uint32
	// base is UIDNEXT when the session opened: only messages from there
	// on can be the probe. searched is UIDNEXT as of the last search.
	base, searched imap.UID
	checks         []junkCheck
	rejected       map[imap.UID]struct{}
}

// junkCheck is one STATUS answer: UIDNEXT was next when it answered at
// resp, for a command sent at sent.
type junkCheck struct {
	sent, resp time.Time
	next       imap.UID
}

func (f *junkFolder) next() imap.UID { return f.checks[len(f.checks)-1].next }

func (f *junkFolder) record(c junkCheck) {
	if k := len(f.checks); k > 0 && f.checks[k-1].next == c.next {
		// The later check of the same UIDNEXT is the tighter lower bound;
		// the earlier answer stays the upper bound of what came before.
		f.checks[k-1].sent = c.sent
		return
	}
	if len(f.checks) == maxJunkChecks {
		f.checks = append(f.checks[:0], f.checks[1:]...)
	}
	f.checks = append(f.checks, c)
}

// window bounds when the message uid became visible: after the last check
// that did not count it was sent, before the first check that counted it
// answered.
func (f *junkFolder) window(uid imap.UID, fallback time.Time) (lo, hi time.Time) {
	hi = fallback
	for _, c := range f.checks {
		if c.next > uid {
			if c.resp.Before(hi) {
				hi = c.resp
			}
			break
		}
	}
	for _, c := range f.checks {
		if c.next <= uid && !c.sent.After(hi) && c.sent.After(lo) {
			lo = c.sent
		}
	}
	if lo.IsZero() {
		lo = hi
	}
	return lo, hi
}

// openJunk finds the junk folders (configured or discovered) and records
// their UIDNEXT before the probe is sent. A folder that cannot be looked
// at is logged and left out; only a lost connection is an error.
func (s *Session) openJunk(ctx context.Context) error {
	names := s.opts.JunkFolders
	if s.opts.DiscoverJunk {
		var err error
		if names, err = s.discoverJunk(ctx); err != nil {
			if !isRefusal(err) || s.broken {
				return err
			}
			s.log.Warn("IMAP junk folder discovery failed; placement is not checked",
				zap.String("address", s.opts.Endpoint.Address), zap.Error(err))
			return nil
		}
	}
	seen := map[string]bool{}
	for _, n := range names {
		if n == "" || seen[n] || sameMailbox(n, s.opts.Mailbox) {
			continue
		}
		seen[n] = true
		if len(s.junk) == maxJunkFolders {
			s.log.Warn("IMAP junk folders beyond the first few are not watched", zap.Int("max", maxJunkFolders))
			break
		}
		s.junk = append(s.junk, &junkFolder{name: n, rejected: make(map[imap.UID]struct{})})
	}
	if len(s.junk) == 0 {
		return nil
	}
	return s.statusJunk(ctx)
}

func sameMailbox(a, b string) bool {
	if strings.EqualFold(a, defaultMailbox) {
		return strings.EqualFold(b, defaultMailbox)
	}
	return a == b
}

// isRefusal tells a server's tagged refusal from a failed connection.
func isRefusal(err error) bool {
	var ie *imap.Error
	return errors.As(err, &ie)
}

// discoverJunk lists the mailboxes once: those marked \Junk, else those
// named like a junk folder.
func (s *Session) discoverJunk(ctx context.Context) ([]string, error) {
	var opts *imap.ListOptions
	if s.caps.Has(imap.CapIMAP4rev2) || s.caps.Has(imap.CapSpecialUse) && s.caps.Has(imap.CapListExtended) {
		// Many servers mark special use in a plain LIST too; the RETURN
		// option makes sure where it is understood.
		opts = &imap.ListOptions{ReturnSpecialUse: true}
	}
	var special []string
	byName := map[string]string{}
	err := s.bound(ctx, func() error {
		cmd := s.c.List("", "*", opts)
		for d := cmd.Next(); d != nil; d = cmd.Next() {
			usable, junk := true, false
			for _, a := range d.Attrs {
				switch {
				case strings.EqualFold(string(a), string(imap.MailboxAttrNoSelect)), strings.EqualFold(string(a), string(imap.MailboxAttrNonExistent)):
					usable = false
				case strings.EqualFold(string(a), string(imap.MailboxAttrJunk)):
					junk = true
				}
			}
			if !usable {
				continue
			}
			if junk {
				special = append(special, d.Mailbox)
			}
			for _, n := range commonJunkNames {
				if strings.EqualFold(d.Mailbox, n) {
					if _, ok := byName[n]; !ok {
						byName[n] = d.Mailbox
					}
				}
			}
		}
		return cmd.Close()
	})
	if err != nil {
		return nil, err
	}
	if len(special) > 0 {
		sort.Strings(special)
		return special, nil
	}
	var out []string
	for _, n := range commonJunkNames {
		if m, ok := byName[n]; ok {
			out = append(out, m)
		}
	}
	return out, nil
}

// statusJunk asks every junk folder for its UIDNEXT, with the watched
// mailbox selected and no IDLE running. A folder the server refuses
// (deleted, renamed) is dropped with a warning.
func (s *Session) statusJunk(ctx context.Context) error {
	kept := s.junk[:0]
	var lost error
	for _, f := range s.junk {
		if lost != nil {
			kept = append(kept, f)
			continue
		}
		sent := time.Now()
		var data *imap.StatusData
		err := s.bound(ctx, func() error {
			var err error
			data, err = s.c.Status(f.name, &imap.StatusOptions{UIDNext: true, UIDValidity: true}).Wait()
			return err
		})
		resp := time.Now()
		if err == nil && (data.UIDNext == 0 || data.UIDValidity == 0) {
			err = &imap.Error{Type: imap.StatusResponseTypeNo, Text: "STATUS reported no UIDNEXT or UIDVALIDITY"}
		}
		if err != nil {
			if !isRefusal(err) || s.broken {
				lost = err
				kept = append(kept, f)
				continue
			}
			s.log.Warn("IMAP junk folder cannot be watched; placement is not checked there",
				zap.String("address", s.opts.Endpoint.Address), zap.String("folder", f.name), zap.Error(err))
			continue
		}
		switch {
		case f.validity == 0:
			f.validity, f.base, f.searched = data.UIDValidity, data.UIDNext, data.UIDNext
		case f.validity != data.UIDValidity:
			// Recreated: its UIDs start over, and the probe may be any
			// of its messages.
			f.validity, f.base, f.searched, f.checks = data.UIDValidity, 1, 0, nil
			f.rejected = make(map[imap.UID]struct{})
		}
		f.record(junkCheck{sent: sent, resp: resp, next: data.UIDNext})
		kept = append(kept, f)
	}
	clear(s.junk[len(kept):])
	s.junk = kept
	s.junkLast = time.Now()
	return lost
}

// junkEvery is the interval between two looks at the junk folders.
func (s *Session) junkEvery() time.Duration {
	return max(s.opts.PollInterval, minJunkEvery)
}

// checkJunk asks the junk folders for their UIDNEXT and searches those
// that received mail since they were last searched (every one that
// received anything since the start, when final). It returns with the
// folder the probe was found in selected, else with a junk folder or
// nothing selected: the wait selects the watched mailbox again.
func (s *Session) checkJunk(ctx context.Context, w *waiter, final bool) (Arrival, bool, error) {
	if err := s.statusJunk(ctx); err != nil {
		return Arrival{}, false, err
	}
	for _, f := range s.junk {
		next := f.next()
		if next <= f.searched && !(final && next > f.base) {
			continue
		}
		arr, found, err := s.searchJunk(ctx, w, f)
		if errors.Is(err, ErrNoticeStop) {
			return Arrival{}, false, err
		}
		if err != nil && (!isRefusal(err) || s.broken) {
			return Arrival{}, false, err
		}
		// Refused or not: searched again only once more mail came.
		f.searched = max(f.searched, next)
		if err != nil {
			s.log.Warn("IMAP junk folder search failed",
				zap.String("address", s.opts.Endpoint.Address), zap.String("folder", f.name), zap.Error(err))
			continue
		}
		if found {
			return arr, true, nil
		}
	}
	return Arrival{}, false, nil
}

// maxJunkRounds bounds the batches of new messages one look at a junk
// folder examines (maxHits each); a spam flood beyond that waits for the
// next look.
const maxJunkRounds = 8

// searchJunkProbe examines f and looks for the probe above its base, proving
// a hit the same way as in the watched mailbox.
func (s *Session) searchJunkProbe(ctx context.Context, w *waiter, f *junkFolder) (Arrival, bool, error) {
	if err := s.enter(ctx, f, true); err != nil {
		return Arrival{}, false, err
	}
	for range maxJunkRounds {
		arr, found, more, err := s.searchJunkOnce(ctx, w, f)
		if err != nil || found || !more {
			return arr, found, err
		}
	}
	return Arrival{}, false, nil
}

func (s *Session) searchJunkOnce(ctx context.Context, w *waiter, f *junkFolder) (_ Arrival, found, more bool, _ error) {
	uids, more, resp, err := s.newUIDs(ctx, f.base, w.token, f.rejected)
	if err != nil {
		return Arrival{}, false, false, err
	}
	if len(uids) == 0 {
		return Arrival{}, false, false, nil
	}
	var set imap.UIDSet
	set.AddNum(uids...)
	start := time.Now()
	hits, err := s.fetchHeaders(ctx, set, nil)
	s.rec.Add(steps.IMAPFetch, start, time.Since(start))
	if err != nil {
		return Arrival{}, false, false, err
	}
	sort.Slice(hits, func(i, j int) bool { return hits[i].uid < hits[j].uid })
	var own Arrival
	for _, h := range hits {
		if _, seen := f.rejected[h.uid]; seen || h.uid < f.base || !set.Contains(h.uid) {
			continue
		}
		// Seen by a STATUS poll: between the last check that did not count
		// it and the first that did.
		lo, hi := f.window(h.uid, resp)
		lo = s.tl.clampFloor(lo, hi)
		if !found && w.claims(h.uid, PlacementJunk, h.header) {
			s.markFound(f.name, h.uid)
			span := hi.Sub(lo)
			a := Arrival{
				UID: h.uid, Header: h.header, Method: MethodPoll,
				SeenAt: lo.Add(span / 2), Uncertainty: span - span/2,
				Placement: PlacementJunk, Folder: f.name,
			}
			if s.share == nil {
				return a, true, false, nil
			}
			own, found = a.clamp(lo, hi, w.floor), true
			continue
		}
		if s.share != nil && s.dispatch(w, h, PlacementJunk, f.name, lo, hi) {
			continue
		}
		f.rejected[h.uid] = struct{}{}
	}
	return own, found, more, nil
}

// enter selects the junk folder f (EXAMINE when readOnly), leaving the
// watched mailbox, whose timeline is muted until it is selected again.
func (s *Session) enter(ctx context.Context, f *junkFolder, readOnly bool) error {
	if s.selected == f.name && (readOnly || !s.selectedRO) {
		return nil
	}
	if s.selected == s.opts.Mailbox {
		s.leftCount, s.leftFloor = s.tl.leave()
	}
	// A failed SELECT leaves no mailbox selected (RFC 3501 6.3.1).
	s.selected = ""
	var data *imap.SelectData
	err := s.bound(ctx, func() error {
		var err error
		data, err = s.c.Select(f.name, &imap.SelectOptions{ReadOnly: readOnly}).Wait()
		return err
	})
	if err != nil {
		return err
	}
	if f.validity != 0 && data.UIDValidity != f.validity {
		// The UIDs found or recorded no longer name the same messages.
		delete(s.foundIn, f.name)
		return &imap.Error{Type: imap.StatusResponseTypeNo,
			Text: fmt.Sprintf("UIDVALIDITY of %q changed from %d to %d", f.name, f.validity, data.UIDValidity)}
	}
	s.selected, s.selectedRO = f.name, readOnly
	return nil
}

// prepare readies the session for a command outside the wait: a broken
// connection is re-established (a reconnect checks UIDVALIDITY, so UIDs keep
// their meaning), IDLE is ended, and junk (EXAMINEd when readOnly), or else
// the watched mailbox, is the selected one.
func (s *Session) prepare(ctx context.Context, junk *junkFolder, readOnly bool) error {
	if s.broken {
		if err := s.reconnect(ctx); err != nil {
			return err
		}
	}
	if err := s.stopIdle(ctx); err != nil {
		return err
	}
	if junk != nil {
		return s.enter(ctx, junk, readOnly)
	}
	return s.ensureWatched(ctx)
}

// searchErr types a housekeeping search's failure (FindProbes,
// FindNotices): a step error (a failed reconnect) stands as it is; any
// other marks the session failed, unless ctx ended, and is an imap.search
// failure.
func (s *Session) searchErr(ctx context.Context, err error) error {
	var se *steps.Error
	if errors.As(err, &se) {
		return err
	}
	if ctx.Err() == nil {
		s.failed(err)
	}
	return steps.Fail(ctx, steps.IMAPSearch, searchType(err), err)
}

// ensureWatched selects the watched mailbox again after a junk folder was
// looked at, keeping its baseline: UIDVALIDITY must not have changed, and
// if messages came or went meanwhile the timeline restarts.
func (s *Session) ensureWatched(ctx context.Context) error {
	if s.selected == s.opts.Mailbox {
		return nil
	}
	s.tl.beginSelect()
	start := time.Now()
	var data *imap.SelectData
	err := s.bound(ctx, func() error {
		var err error
		data, err = s.c.Select(s.opts.Mailbox, nil).Wait()
		return err
	})
	resp := time.Now()
	switch {
	case err != nil:
		return err
	case data.UIDValidity != s.uidValidity:
		return steps.Fail(ctx, steps.IMAPSelect, steps.TypeProtocol,
			fmt.Errorf("imap: UIDVALIDITY of %q changed from %d to %d", s.opts.Mailbox, s.uidValidity, data.UIDValidity))
	}
	changed := data.UIDNext != s.watchedNext || data.NumMessages != s.leftCount
	s.tl.resumeSelect(start, resp, data.NumMessages, changed, s.leftFloor)
	s.watchedNext = data.UIDNext
	s.noteNext(data.UIDNext)
	s.selected, s.selectedRO = s.opts.Mailbox, false
	return nil
}

// finalJunk looks at the junk folders once more after the delivery timeout
// expired, within a short budget of its own, so that a probe filed as spam
// just before is reported as such rather than lost.
func (s *Session) finalJunk(w *waiter) (Arrival, bool) {
	if len(s.junk) == 0 || s.broken || s.c == nil {
		return Arrival{}, false
	}
	ctx, cancel := context.WithTimeout(s.life, finalJunkBudget)
	defer cancel()
	err := s.stopIdle(ctx)
	if err == nil && s.selected != s.opts.Mailbox {
		err = s.ensureWatched(ctx)
	}
	var arr Arrival
	var found bool
	if err == nil {
		// The probe only: a notice is no arrival, and the wait is over.
		probeOnly := *w
		probeOnly.notice = nil
		arr, found, err = s.checkJunk(ctx, &probeOnly, true)
	}
	if err != nil {
		s.log.Debug("IMAP last look at the junk folders failed", zap.Error(err))
		if ctx.Err() != nil || !isRefusal(err) {
			s.failed(err)
		}
		return Arrival{}, false
	}
	return arr, found
}
