package imapwatch

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"

	"github.com/emersion/go-imap/v2"
	"go.uber.org/zap"

	"github.com/emailqos/emailqosreceiver/internal/probemsg"
)

// SearchMode is how housekeeping (late probes, the orphan sweep) asks an
// account's server for probes, from the most to the least precise.
type SearchMode int32

const (
	// SearchUnknown: not learned yet; searched as SearchHeader.
	SearchUnknown SearchMode = iota
	// SearchHeader: SEARCH HEADER X-Emailqos-Token eq (every token's
	// prefix).
	SearchHeader
	// SearchSubject: SEARCH SUBJECT "emailqos probe eq", for servers that
	// index standard header fields only (Stalwart, reportedly Gmail and
	// Yahoo): the probe's Subject carries its token.
	SearchSubject
	// SearchScan: SEARCH SINCE a date (no text key at all), and the
	// headers of at most the limit's worth of messages fetched and
	// checked here: the last resort, bounded by a date window.
	SearchScan
)

func (m SearchMode) String() string {
	switch m {
	case SearchHeader:
		return "header"
	case SearchSubject:
		return "subject"
	case SearchScan:
		return "date-window scan"
	}
	return "unknown"
}

// SearchHint remembers, per account (one per receiving mailbox, shared by
// every session reading it), how its server can be searched for probes. It
// only ever moves down (header, subject, scan): learned from a probe just
// found by its fetched header that the more precise search cannot find, or
// from a search the server refused (Exchange answers BAD to syntax it does
// not take). The zero value is ready to use.
type SearchHint struct{ mode atomic.Int32 }

// Mode is the search housekeeping uses now.
func (h *SearchHint) Mode() SearchMode {
	if h == nil {
		return SearchHeader
	}
	return max(SearchMode(h.mode.Load()), SearchHeader)
}

// degrade moves the hint down to m and reports whether this call changed it
// (so that the change is logged once).
func (h *SearchHint) degrade(m SearchMode) bool {
	if h == nil {
		return false
	}
	for {
		cur := h.mode.Load()
		if SearchMode(cur) >= m && SearchMode(cur) != SearchUnknown {
			return false
		}
		if h.mode.CompareAndSwap(cur, int32(m)) {
			return SearchMode(cur) != m
		}
	}
}

// learnSearch checks, once per account, that the server's SEARCH finds the
// probe just found at uid by its fetched header: by the token header, else
// by the subject; the first that works is what housekeeping uses from then
// on. It runs after the wait's timing, costing one or two commands once.
func (s *Session) learnSearch(ctx context.Context, uid imap.UID, token string) {
	h := s.opts.Search
	if h == nil || SearchMode(h.mode.Load()) != SearchUnknown {
		return
	}
	finds := func(key string) (bool, error) {
		crit := &imap.SearchCriteria{
			UID:    []imap.UIDSet{imap.UIDSetNum(uid)},
			Header: []imap.SearchCriteriaHeaderField{{Key: key, Value: token}},
		}
		var data *imap.SearchData
		err := s.bound(ctx, func() error {
			var err error
			data, err = s.c.UIDSearch(crit, nil).Wait()
			return err
		})
		var refused *imap.Error
		if errors.As(err, &refused) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		uids, _ := candidates(data, uid, nil, 1)
		return slices.Contains(uids, uid), nil
	}
	for _, try := range []struct {
		key  string
		mode SearchMode
	}{{probemsg.TokenHeader, SearchHeader}, {"Subject", SearchSubject}} {
		ok, err := finds(try.key)
		if err != nil {
			return // the connection, not the server's search: learn next time
		}
		if ok {
			s.setSearch(try.mode, "")
			return
		}
	}
	s.setSearch(SearchScan, "")
}

// setSearch moves the account's hint down to m, logging the change once.
func (s *Session) setSearch(m SearchMode, why string) {
	if !s.opts.Search.degrade(m) || m == SearchHeader {
		return
	}
	if why == "" {
		why = "a probe just found by its header was not found by the more precise search"
	}
	s.log.Info("IMAP housekeeping searches for probes by "+m.String(),
		zap.String("address", s.opts.Endpoint.Address), zap.String("reason", why))
}
