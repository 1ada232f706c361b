package imapwatch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"go.uber.org/zap"

	"github.com/emailqos/emailqosreceiver/internal/steps"
)

// Delivery status notifications (bounces, RFC 3464) about a probe arrive in
// the sending account's mailbox. Their own header carries nothing of the
// probe: the proof is inside (the returned headers), so a notice is read
// whole, and judged by the caller.

const (
	// MaxNoticeBytes is the most of a notice that is fetched; the caller's
	// parser refuses anything larger (internal/dsn's MaxSize), so one byte
	// more is enough to tell.
	MaxNoticeBytes = 1<<20 + 1
	// maxNoticesPerSearch bounds the notices fetched by one search: each is
	// fetched alone (up to MaxNoticeBytes, within the IMAP read budget), so
	// a mailbox flooded with reports cannot hold the wait for long.
	maxNoticesPerSearch = 16
)

// NoticeFunc judges a candidate notice, the whole message (at most
// MaxNoticeBytes). keep says the notice is proven to be about the probe:
// the session then counts it as its own, removable by DeleteUIDsFrom or
// MoveUIDsFrom. stop ends the wait with ErrNoticeStop (a failure notice).
// Anything not kept is never touched.
type NoticeFunc func(msg []byte) (keep, stop bool)

// Notice is a notice kept by a NoticeFunc: its UID in folder.
type Notice struct {
	UID    imap.UID
	Folder string
}

// ErrNoticeStop ends WaitNotices when its NoticeFunc asked to stop.
var ErrNoticeStop = errors.New("imap: the wait was ended by a notice")

// WaitNotices is WaitAfter that also looks, whenever it searches (on new mail in
// the watched mailbox or a junk folder), for delivery status notifications
// above the baseline (UID SEARCH HEADER Content-Type "report", a standard
// header every server indexes) and hands each one, once, to notice. It
// returns the notices kept so far with the arrival or the error, which is
// ErrNoticeStop when notice stopped the wait.
func (s *Session) WaitNotices(ctx context.Context, floor time.Time, token string, accept func(header []byte) bool, notice NoticeFunc) (Arrival, []Notice, error) {
	w := &waiter{token: token, accept: accept, rejected: make(map[imap.UID]struct{}),
		notice: notice, noticeSeen: make(map[string]map[imap.UID]struct{})}
	a, err := s.waitWith(ctx, floor, w)
	return a, w.notices, err
}

// FindNotices searches folder ("" is the watched mailbox, else one of
// JunkFolders) for delivery status notifications received since since
// and before before (by internal date, a day's resolution: since widened
// by a day, before by two, so that no time zone leaves one out; zero:
// unbounded), reads at most limit of
// them (lowest UIDs first) and returns the UIDs of those notice keeps,
// which become removable like FindProbes' hits. It is housekeeping (late
// notices, the orphan sweep): not timed as a step.
func (s *Session) FindNotices(ctx context.Context, folder string, since, before time.Time, limit int, notice NoticeFunc) ([]imap.UID, error) {
	s.lock(ctx)
	defer s.mu.Unlock()
	if s.closed {
		return nil, steps.New(steps.IMAPSearch, steps.TypeConfig, errClosed)
	}
	if notice == nil {
		return nil, steps.New(steps.IMAPSearch, steps.TypeConfig, errors.New("imap: FindNotices needs a NoticeFunc"))
	}
	if folder == "" {
		folder = s.opts.Mailbox
	}
	var junk *junkFolder
	if folder != s.opts.Mailbox {
		for _, f := range s.junk {
			if f.name == folder {
				junk = f
			}
		}
		if junk == nil {
			return nil, steps.New(steps.IMAPSearch, steps.TypeConfig, fmt.Errorf("imap: %q is not a folder this session watched", folder))
		}
	}
	fail := func(err error) ([]imap.UID, error) { return nil, s.searchErr(ctx, err) }
	if err := s.prepare(ctx, junk, true); err != nil {
		return fail(err)
	}
	crit := noticeCriteria(1)
	if !since.IsZero() {
		crit.Since = since.Add(-24 * time.Hour)
	}
	if !before.IsZero() {
		crit.Before = before.Add(48 * time.Hour)
	}
	uids, _, err := s.noticeCandidates(ctx, crit, 1, nil, limit)
	if err != nil {
		return fail(err)
	}
	var kept []imap.UID
	for _, uid := range uids {
		msg, err := s.fetchNotice(ctx, uid)
		if err != nil {
			_, err = fail(err)
			return kept, err
		}
		if keep, _ := notice(msg); keep {
			s.keepNotice(folder, uid)
			kept = append(kept, uid)
		}
	}
	return kept, nil
}

// searchNotices looks for notices above base in the selected folder that
// were not handed over yet, fetches them one by one and hands them to
// w.notice. stop is true when one asked to end the wait.
func (s *Session) searchNotices(ctx context.Context, w *waiter, folder string, base imap.UID) (stop bool, _ error) {
	if w.notice == nil {
		return false, nil
	}
	seen := w.noticeSeen[folder]
	if seen == nil {
		seen = make(map[imap.UID]struct{})
		w.noticeSeen[folder] = seen
	}
	uids, _, err := s.noticeCandidates(ctx, noticeCriteria(base), base, seen, maxNoticesPerSearch)
	if err != nil && isRefusal(err) && !s.broken {
		// A server that cannot search headers (Microsoft 365 answers
		// BAD to some header searches): the probe is still waited for,
		// without notices.
		s.log.Warn("IMAP server refused the search for delivery status notifications; bounces are not watched in this wait",
			zap.String("address", s.opts.Endpoint.Address), zap.Error(err))
		w.notice = nil
		return false, nil
	}
	if err != nil {
		return false, err
	}
	for _, uid := range uids {
		msg, err := s.fetchNotice(ctx, uid)
		if err != nil {
			return false, err
		}
		// Judged once, whatever the verdict: a notice does not change.
		seen[uid] = struct{}{}
		keep, stop := w.notice(msg)
		if keep {
			s.keepNotice(folder, uid)
			w.addNotice(s, Notice{UID: uid, Folder: folder})
		}
		if stop {
			return true, nil
		}
	}
	return false, nil
}

// noticeCriteria selects the messages from UID base whose Content-Type
// mentions a report (RFC 6522's multipart/report; SEARCH HEADER matches
// substrings, without regard to case).
func noticeCriteria(base imap.UID) *imap.SearchCriteria {
	return &imap.SearchCriteria{
		UID:    []imap.UIDSet{{imap.UIDRange{Start: base, Stop: 0}}},
		Header: []imap.SearchCriteriaHeaderField{{Key: "Content-Type", Value: "report"}},
	}
}

// noticeCandidates runs crit in the selected folder and lists the hits
// from UID base on, skipping seen, at most limit of them.
func (s *Session) noticeCandidates(ctx context.Context, crit *imap.SearchCriteria, base imap.UID, seen map[imap.UID]struct{}, limit int) ([]imap.UID, bool, error) {
	var data *imap.SearchData
	err := s.bound(ctx, func() error {
		var err error
		data, err = s.c.UIDSearch(crit, nil).Wait()
		return err
	})
	if err != nil {
		return nil, false, err
	}
	if seen == nil {
		seen = map[imap.UID]struct{}{}
	}
	uids, more := candidates(data, base, seen, limit)
	slices.Sort(uids)
	return uids, more, nil
}

// fetchNotice fetches the message uid whole, at most MaxNoticeBytes of it,
// with BODY.PEEK so that \Seen is not set.
func (s *Session) fetchNotice(ctx context.Context, uid imap.UID) ([]byte, error) {
	section := &imap.FetchItemBodySection{Peek: true, Partial: &imap.SectionPartial{Offset: 0, Size: MaxNoticeBytes}}
	var msg []byte
	err := s.bound(ctx, func() error {
		cmd := s.c.Fetch(imap.UIDSetNum(uid), &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{section}})
		for m := cmd.Next(); m != nil; m = cmd.Next() {
			var got imap.UID
			var body []byte
			for item := m.Next(); item != nil; item = m.Next() {
				switch item := item.(type) {
				case imapclient.FetchItemDataUID:
					got = item.UID
				case imapclient.FetchItemDataBodySection:
					if item.Literal != nil && body == nil {
						body, _ = io.ReadAll(io.LimitReader(item.Literal, MaxNoticeBytes))
					}
				}
			}
			// A server may add unsolicited FETCH responses for other
			// messages: only uid's body is the notice.
			if got == uid && msg == nil {
				msg = body
			}
		}
		return cmd.Close()
	})
	return msg, err
}

// keepNotice makes uid of folder removable by this session.
func (s *Session) keepNotice(folder string, uid imap.UID) {
	if folder == s.opts.Mailbox || folder == "" {
		s.found[uid] = struct{}{}
		return
	}
	if s.foundIn[folder] == nil {
		s.foundIn[folder] = make(map[imap.UID]struct{})
	}
	s.foundIn[folder][uid] = struct{}{}
	s.log.Debug("IMAP notice kept", zap.String("folder", folder), zap.Uint32("uid", uint32(uid)))
}

// search looks for the probe above the baseline of the watched mailbox,
// then, when the wait watches for them, for notices there.
func (s *Session) search(ctx context.Context, w *waiter) (Arrival, bool, error) {
	arr, found, err := s.searchProbe(ctx, w)
	if err != nil || found {
		return arr, found, err
	}
	if err := s.groupNotices(ctx, w, s.opts.Mailbox, func(g *waiter) imap.UID { return g.baseline }); err != nil {
		return Arrival{}, false, err
	}
	return Arrival{}, false, nil
}

// groupNotices looks for the notices of w in the selected folder and, on
// a shared session, for those of every other waiter watching for notices
// (base gives each one's baseline there). It is ErrNoticeStop when one
// stopped w's wait; another's stop ends that one's wait.
func (s *Session) groupNotices(ctx context.Context, w *waiter, folder string, base func(*waiter) imap.UID) error {
	stop, err := s.searchNotices(ctx, w, folder, base(w))
	if err != nil {
		return err
	}
	if stop {
		return ErrNoticeStop
	}
	if s.share == nil {
		return nil
	}
	for _, g := range s.share.waiting() {
		if g == w || g.notice == nil {
			continue
		}
		stop, err := s.searchNotices(ctx, g, folder, base(g))
		if err != nil {
			return err
		}
		if stop {
			s.share.deliver(g, Arrival{}, ErrNoticeStop)
		}
	}
	return nil
}

// addNotice keeps n for w; on a shared session another probe's turn may
// find it, so under the share's lock (read by takeNotices).
func (w *waiter) addNotice(s *Session, n Notice) {
	if s.share != nil {
		s.share.mu.Lock()
		defer s.share.mu.Unlock()
	}
	w.notices = append(w.notices, n)
}

// searchJunk is search in the junk folder f: a notice filed as spam is
// still found.
func (s *Session) searchJunk(ctx context.Context, w *waiter, f *junkFolder) (Arrival, bool, error) {
	arr, found, err := s.searchJunkProbe(ctx, w, f)
	if err != nil || found {
		return arr, found, err
	}
	if err := s.groupNotices(ctx, w, f.name, func(*waiter) imap.UID { return f.base }); err != nil {
		return Arrival{}, false, err
	}
	return Arrival{}, false, nil
}
