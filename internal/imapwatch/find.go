package imapwatch

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/emailqos/emailqosreceiver/internal/probemsg"
	"github.com/emailqos/emailqosreceiver/internal/steps"
)

// FindProbes searches the whole mailbox (not only above the baseline) for
// messages whose X-Emailqos-Token is one of tokens, or, when tokens is nil,
// any probe token: one flat search for any probe, by the account's
// SearchMode (header, subject, or a date-window scan). Only the hits'
// headers are fetched, with BODY.PEEK, at most limit of them (the lowest
// UIDs when tokens is nil: the oldest are the likeliest leftovers; else the
// highest: late probes are recent), in batches. A hit is returned only if its header carries such
// a token and accept, which must prove that the message is this receiver's
// own probe (its HMAC), returns true. The returned UIDs count as found by
// this session, so that DeleteUIDs or MoveUIDs may remove them; nothing else
// ever becomes removable.
//
// It is housekeeping after the measurement: it reconnects a lost connection
// like Delete does but is not timed as a probe step. Failures are code 4.
func (s *Session) FindProbes(ctx context.Context, tokens []string, limit int, accept func(header []byte) bool) ([]imap.UID, error) {
	return s.findProbes(ctx, "", tokens, limit, accept)
}

// JunkFolders lists the junk folders this session watches (configured or
// discovered at Open, less those the server refused), for FindProbesIn.
func (s *Session) JunkFolders() []string {
	s.lock(context.Background())
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.junk))
	for _, f := range s.junk {
		out = append(out, f.name)
	}
	return out
}

// FindProbesIn is FindProbes in folder, one of JunkFolders ("" is the
// watched mailbox). The folder is opened read-only (EXAMINE) for the
// search; only DeleteUIDsFrom or MoveUIDsFrom select it read-write, and
// only for UIDs found there. The watched mailbox is not selected again
// afterwards: the next command that needs it does that.
func (s *Session) FindProbesIn(ctx context.Context, folder string, tokens []string, limit int, accept func(header []byte) bool) ([]imap.UID, error) {
	return s.findProbes(ctx, folder, tokens, limit, accept)
}

func (s *Session) findProbes(ctx context.Context, folder string, tokens []string, limit int, accept func(header []byte) bool) ([]imap.UID, error) {
	s.lock(ctx)
	defer s.mu.Unlock()
	invalid := func(err error) ([]imap.UID, error) {
		return nil, steps.New(steps.IMAPSearch, steps.TypeConfig, err)
	}
	var junk *junkFolder
	if folder != "" && folder != s.opts.Mailbox {
		for _, f := range s.junk {
			if f.name == folder {
				junk = f
			}
		}
		if junk == nil {
			return invalid(fmt.Errorf("imap: %q is not a folder this session watched", folder))
		}
	}
	switch {
	case s.closed:
		return invalid(errClosed)
	case accept == nil:
		// Without a proof of ownership nothing may become removable.
		return invalid(errors.New("imap: FindProbes needs an accept function"))
	case tokens != nil && len(tokens) == 0:
		return nil, nil
	}
	for _, t := range tokens {
		if !probemsg.Searchable(t) {
			return invalid(errors.New("imap: the probe token must be non-empty printable ASCII without spaces"))
		}
	}
	if limit <= 0 {
		limit = maxHits
	}

	fail := func(err error) ([]imap.UID, error) { return nil, s.searchErr(ctx, err) }
	// EXAMINE for a junk folder: a search needs no write access, and sets
	// no \Seen.
	if err := s.prepare(ctx, junk, true); err != nil {
		return fail(err)
	}
	found := s.found
	if junk != nil {
		if s.foundIn[junk.name] == nil {
			s.foundIn[junk.name] = make(map[imap.UID]struct{})
		}
		found = s.foundIn[junk.name]
	}

	uids, err := s.probeCandidates(ctx, tokens != nil, limit)
	if err != nil {
		return fail(err)
	}

	wanted := func(header []byte) bool {
		for _, v := range tokenValues(header) {
			if (tokens == nil && strings.HasPrefix(v, probemsg.TokenPrefix)) || slices.Contains(tokens, v) {
				return true
			}
		}
		return false
	}
	var out []imap.UID
	for batch := range slices.Chunk(uids, maxHits) {
		var set imap.UIDSet
		set.AddNum(batch...)
		hits, err := s.fetchHeaders(ctx, set, nil)
		if err != nil {
			return fail(err)
		}
		slices.SortFunc(hits, func(a, b hit) int { return cmp.Compare(a.uid, b.uid) })
		for i, h := range hits {
			// Only what was asked for, once: a server may add unsolicited
			// FETCH responses for other messages.
			if h.uid == 0 || !set.Contains(h.uid) || i > 0 && hits[i-1].uid == h.uid {
				continue
			}
			if !wanted(h.header) || !accept(h.header) {
				continue
			}
			found[h.uid] = struct{}{}
			out = append(out, h.uid)
		}
	}
	return out, nil
}

// probeSubject starts every probe's Subject (probemsg): "emailqos probe "
// and the token.
const probeSubject = "emailqos probe " + probemsg.TokenPrefix

// Date windows of the scan, the last resort of housekeeping's search
// (SearchScan): late probes are younger than the orphan age, and the sweep
// looks at the last month (orphans older than that stay on such servers).
const (
	scanLate  = 7 * 24 * time.Hour
	scanSweep = 31 * 24 * time.Hour
	// maxEnumerate bounds the UIDs read out of one search answer.
	maxEnumerate = 1 << 17
)

// probeCandidates lists the selected folder's messages that may be probes,
// by the account's SearchMode: one flat SEARCH, never a tree of ORs
// (Exchange answers BAD to nested search syntax, mscdex/node-imap#830), and
// never a search for one token per probe: the hits are checked here. At
// most limit: the oldest (a sweep: the likeliest leftovers) or, for late
// probes, the newest. A search the server refuses moves the account down
// to the next mode, logged once, and is tried again with it.
func (s *Session) probeCandidates(ctx context.Context, late bool, limit int) ([]imap.UID, error) {
	mode := s.opts.Search.Mode()
	for {
		var crit imap.SearchCriteria
		switch mode {
		case SearchHeader:
			crit.Header = []imap.SearchCriteriaHeaderField{{Key: probemsg.TokenHeader, Value: probemsg.TokenPrefix}}
		case SearchSubject:
			crit.Header = []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: probeSubject}}
		default:
			window := scanSweep
			if late {
				window = scanLate
			}
			crit.Since = time.Now().Add(-window)
		}
		var data *imap.SearchData
		err := s.bound(ctx, func() error {
			var err error
			data, err = s.c.UIDSearch(&crit, nil).Wait()
			return err
		})
		var refused *imap.Error
		if errors.As(err, &refused) && mode < SearchScan {
			mode++
			s.setSearch(mode, "the server refused the search")
			continue
		}
		if err != nil {
			return nil, err
		}
		// candidates bounds the enumeration of whatever ranges the server
		// answered with.
		uids, _ := candidates(data, 1, nil, maxEnumerate)
		slices.Sort(uids)
		uids = slices.Compact(uids)
		if len(uids) > limit {
			if late {
				uids = uids[len(uids)-limit:]
			} else {
				uids = uids[:limit]
			}
		}
		return uids, nil
	}
}

// tokenValues lists the token header's values: SEARCH HEADER matches
// substrings, so the fetched header is checked exactly, the way
// probemsg.Parse reads it.
func tokenValues(header []byte) []string { return probemsg.TokenValues(header) }
