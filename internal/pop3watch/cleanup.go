package pop3watch

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/emailqos/emailqosreceiver/internal/pop3"
	"github.com/emailqos/emailqosreceiver/internal/probemsg"
	"github.com/emailqos/emailqosreceiver/internal/steps"
)

// Delete removes exactly the probe uid, which must have been returned by this
// session's Wait (or FindProbes): DELE of its message number in the session
// that found it, then QUIT. The message is removed only when the server
// acknowledges QUIT; a refused DELE or QUIT, or a connection lost before the
// QUIT reply, is code 5 and leaves it in place.
//
// If that session is gone (lost, or ended by another call), a new one is
// opened, and the message is deleted only if its UID is listed exactly once
// and its header still carries the probe's token. A probe that is no longer
// in the maildrop counts as removed.
//
// pop3.delete times the deletion up to the DELE reply (a reconnect
// included), pop3.quit the QUIT.
func (s *Session) Delete(ctx context.Context, uid string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.remove(ctx, []string{uid}, true)
}

// DeleteUIDs removes exactly the messages uids, each of which must have been
// found by this session's Wait or FindProbes, or kept as a notice by
// WaitNotices or FindNotices (deleted only if its header is unchanged), in
// one session: DELE each, then
// QUIT. If any UID is not the session's own nothing is touched. A DELE the
// server refuses does not stop the others, which the QUIT then applies.
// It is housekeeping and not timed as a probe step. Failures are code 5.
func (s *Session) DeleteUIDs(ctx context.Context, uids []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.remove(ctx, uids, false)
}

func cleanupErr(step, typ string, err error) error {
	return &steps.Error{Step: step, Code: steps.CodeCleanup, Type: typ, Err: err}
}

// remove deletes uids, all of which must be owned; timed says whether it is
// the probe's own pop3.delete and pop3.quit.
func (s *Session) remove(ctx context.Context, uids []string, timed bool) error {
	if s.closed {
		return cleanupErr(POP3Delete, steps.TypeConfig, errClosed)
	}
	uids = slices.Compact(slices.Sorted(slices.Values(uids)))
	// Every UID is checked before anything is sent: one stranger refuses
	// the whole request.
	for _, uid := range uids {
		_, probe := s.owned[uid]
		if _, notice := s.noticeOwned[uid]; !probe && !notice {
			return cleanupErr(POP3Delete, steps.TypeConfig, fmt.Errorf("pop3: UID %s is not a probe found by this session", quoteUID(uid)))
		}
	}
	if len(uids) == 0 {
		return nil
	}
	var rec *steps.Recorder
	if timed {
		rec = s.rec
	}

	start := time.Now()
	pc, nums, err := s.locate(ctx, uids)
	if err != nil {
		rec.Add(POP3Delete, start, time.Since(start))
		return err
	}
	var (
		first  error
		marked []string
	)
	for i, uid := range uids {
		num := nums[i]
		if num == 0 {
			// Not in the maildrop any more: nothing left to remove.
			delete(s.owned, uid)
			delete(s.noticeOwned, uid)
			continue
		}
		err := s.bound(ctx, pc, func() error { return pc.c.Dele(num) })
		if err != nil {
			if first == nil {
				first = steps.Fail(s.failCtx(ctx), POP3Delete, pop3.ErrorType(err), err)
			}
			if pc.broken {
				break
			}
			continue
		}
		pc.marked++
		marked = append(marked, uid)
	}
	rec.Add(POP3Delete, start, time.Since(start))

	if !timed && pc.probe && first == nil && !pc.broken {
		// Notices marked in the session that found the probe: its own
		// Delete follows, and its QUIT applies them all, so the probe's
		// pop3.delete does not pay for a new session. (Close quits it
		// otherwise, and reports deletions that did not happen.)
		s.held = pc
		return nil
	}
	s.held = nil
	qerr := s.quit(ctx, pc, rec)
	if qerr != nil {
		if pc.marked > 0 && first == nil {
			first = steps.Fail(s.failCtx(ctx), POP3Quit, pop3.ErrorType(qerr), qerr)
		}
		return first
	}
	for _, uid := range marked {
		delete(s.owned, uid)
		delete(s.noticeOwned, uid)
	}
	return first
}

// listedIDs is heldConn for a housekeeping pass, its failures typed as the
// pass's own, with the maildrop's messages oldest first or newest first.
func (s *Session) listedIDs(ctx context.Context, oldest bool) (*conn, []pop3.MessageID, error) {
	pc, openErr, listErr := s.heldConn(ctx)
	if openErr != nil {
		return nil, nil, openErr
	}
	if listErr != nil {
		return nil, nil, s.waitFail(ctx, POP3List, listErr)
	}
	ids := slices.Clone(pc.ids)
	if oldest {
		slices.SortFunc(ids, func(a, b pop3.MessageID) int { return a.Num - b.Num })
	} else {
		slices.SortFunc(ids, func(a, b pop3.MessageID) int { return b.Num - a.Num })
	}
	return pc, ids, nil
}

// heldConn returns the kept session, or opens a new one, lists the maildrop
// and keeps it. openErr and listErr say which step failed, for the callers
// to report it as their own.
func (s *Session) heldConn(ctx context.Context) (pc *conn, openErr, listErr error) {
	if pc = s.held; pc != nil && pc.broken {
		pc.close()
		s.held, pc = nil, nil
	}
	if pc != nil {
		return pc, nil, nil
	}
	pc, err := s.open(ctx, nil)
	if err != nil {
		return nil, err, nil
	}
	if err := s.list(ctx, pc, nil); err != nil {
		pc.close()
		return nil, nil, err
	}
	s.held = pc
	return pc, nil, nil
}

// locate returns a session listing uids and their message numbers (0 for a
// UID no longer listed): the kept session, or a new one. A UID this session
// has not read the header of is deleted only if its header still carries
// the token it was found with. Failures are code 5, and nothing is deleted.
func (s *Session) locate(ctx context.Context, uids []string) (*conn, []int, error) {
	pc, openErr, listErr := s.heldConn(ctx)
	if openErr != nil {
		var se *steps.Error
		if errors.As(openErr, &se) {
			// A failed reconnect is a failed cleanup here.
			return nil, nil, cleanupErr(se.Step, se.Type, se.Err)
		}
		return nil, nil, steps.Fail(s.failCtx(ctx), POP3Delete, "", openErr)
	}
	if listErr != nil {
		return nil, nil, steps.Fail(s.failCtx(ctx), POP3Delete, pop3.ErrorType(listErr), listErr)
	}
	nums := make([]int, len(uids))
	for i, uid := range uids {
		num, ok := pc.nums[uid]
		switch {
		case !ok:
			continue
		case num < 0:
			return nil, nil, cleanupErr(POP3Delete, steps.TypeProtocol,
				fmt.Errorf("pop3: UID %s is listed more than once; not deleting", quoteUID(uid)))
		}
		if !pc.verified[uid] {
			header, err := s.top(ctx, pc, num, nil)
			if err != nil {
				return nil, nil, steps.Fail(s.failCtx(ctx), POP3Delete, pop3.ErrorType(err), err)
			}
			if digest, notice := s.noticeOwned[uid]; notice {
				if sha256.Sum256(header) != digest {
					return nil, nil, cleanupErr(POP3Delete, steps.TypeProtocol,
						fmt.Errorf("pop3: UID %s no longer names the notice; not deleting", quoteUID(uid)))
				}
			} else if !slices.Contains(probemsg.TokenValues(header), s.owned[uid]) {
				return nil, nil, cleanupErr(POP3Delete, steps.TypeProtocol,
					fmt.Errorf("pop3: UID %s no longer names the probe; not deleting", quoteUID(uid)))
			}
			pc.verify(uid)
		}
		nums[i] = num
	}
	return pc, nums, nil
}

// quoteUID renders a server-chosen UID for an error, bounded.
func quoteUID(uid string) string {
	if len(uid) > 72 {
		uid = uid[:72] + "..."
	}
	return fmt.Sprintf("%q", uid)
}

// FindProbes reads the headers (TOP n 0) of messages of the open session, or
// of a new one when none is open, looking for probes: messages whose
// X-Emailqos-Token is one of tokens or, when tokens is nil, any probe token.
// At most limit headers are read (64 when limit <= 0): newest first when
// looking for given tokens (late probes arrived recently), oldest first
// otherwise (the oldest are the likeliest orphans). Messages known to carry
// no probe token are skipped. A message is returned only if its header
// carries such a token and accept, which must prove that it is this
// receiver's own probe, returns true; the returned UIDs count as found by
// this session, so that DeleteUIDs may remove them, and nothing else ever
// becomes removable. The session stays open for DeleteUIDs.
//
// It is housekeeping: nothing is timed as a probe step. A failed connection
// is code 3; a refused UIDL or TOP code 4.
func (s *Session) FindProbes(ctx context.Context, tokens []string, limit int, accept func(header []byte) bool) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	invalid := func(err error) ([]string, error) {
		return nil, steps.New(POP3Fetch, steps.TypeConfig, err)
	}
	switch {
	case s.closed:
		return invalid(errClosed)
	case accept == nil:
		// Without a proof of ownership nothing may become removable.
		return invalid(errors.New("pop3: FindProbes needs an accept function"))
	case tokens != nil && len(tokens) == 0:
		return nil, nil
	}
	for _, t := range tokens {
		if !probemsg.Searchable(t) {
			return invalid(errors.New("pop3: the probe token must be non-empty printable ASCII without spaces"))
		}
	}
	if limit <= 0 {
		limit = defaultFindLimit
	}

	// Late probes are recent: newest first; the sweep's are old.
	pc, ids, err := s.listedIDs(ctx, tokens == nil)
	if err != nil {
		return nil, err
	}
	var out []string
	read := 0
	for _, id := range ids {
		if read == limit {
			break
		}
		if _, ok := s.notProbe[id.UID]; ok || pc.nums[id.UID] < 0 {
			continue
		}
		read++
		header, err := s.top(ctx, pc, id.Num, nil)
		if err != nil {
			return nil, s.waitFail(ctx, POP3Fetch, err)
		}
		values := probemsg.TokenValues(header)
		if len(values) == 0 {
			s.notProbe[id.UID] = struct{}{}
			continue
		}
		token := ""
		for _, v := range values {
			if (tokens == nil && isProbeToken(v)) || slices.Contains(tokens, v) {
				token = v
				break
			}
		}
		if token == "" || !accept(header) {
			continue
		}
		s.owned[id.UID] = token
		pc.verify(id.UID)
		out = append(out, id.UID)
	}
	return out, nil
}
