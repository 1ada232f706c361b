package pop3watch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"mime"
	"net/mail"
	"time"

	"go.uber.org/zap"

	"github.com/emailqos/emailqosreceiver/internal/dsn"
	"github.com/emailqos/emailqosreceiver/internal/pop3"
	"github.com/emailqos/emailqosreceiver/internal/steps"
)

// Delivery status notifications (bounces, RFC 3464) about a probe arrive in
// the sending account's maildrop. Their own header carries nothing of the
// probe: the proof is in the returned headers, a MIME part, so a candidate
// is read whole (RETR) and judged by the caller. Only a message whose
// header (TOP n 0) has Content-Type multipart/report (RFC 6522) is a
// candidate, so ordinary mail is never retrieved, and only one whose LIST
// size is at most dsn.MaxSize, so an oversized one is never read.

// NoticeFunc judges a candidate notice, the whole message. keep says the
// notice is proven to be about the probe: the session then counts it as its
// own, removable by DeleteUIDs. stop ends the wait with ErrNoticeStop (a
// failure notice). Anything not kept is never touched.
type NoticeFunc func(msg []byte) (keep, stop bool)

// errNoticeTooLarge ends a session whose notice candidate was longer than
// announced: it is not an error of the wait.
var errNoticeTooLarge = errors.New("pop3: notice longer than its LIST size")

// ErrNoticeStop ends WaitNotices when its NoticeFunc asked to stop.
var ErrNoticeStop = errors.New("pop3: the wait was ended by a notice")

const (
	// maxNoticeRead is what RETR of a candidate may read: dsn.MaxSize, and
	// room for a server whose LIST size counted bare LFs (RFC 1939 section
	// 5 allows the size to differ from what is sent).
	maxNoticeRead = dsn.MaxSize + 64<<10
	// noticeScanFactor bounds the headers FindNotices reads: limit notices,
	// among at most this many times as many messages.
	noticeScanFactor = 4
)

// WaitNotices is WaitAfter that also hands every new notice (above the
// baseline, multipart/report, at most dsn.MaxSize) to notice, once. It
// returns the UIDs of the notices kept so far with the arrival or the
// error, which is ErrNoticeStop when notice stopped the wait.
func (s *Session) WaitNotices(ctx context.Context, floor time.Time, token string, accept func(header []byte) bool, notice NoticeFunc) (Arrival, []string, error) {
	w := s.newWaiter(floor, token, accept)
	w.notice = notice
	a, err := s.waitWith(ctx, w)
	return a, w.notices, err
}

// isReport tells whether a header block (as TOP returns it) declares a
// multipart/report, the container of every notice (RFC 6522 section 3).
func isReport(header []byte) bool {
	m, err := mail.ReadMessage(bytes.NewReader(header))
	if err != nil {
		return false
	}
	mt, _, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	return err == nil && mt == "multipart/report"
}

// retrNotice reads message num whole when LIST says it is at most
// dsn.MaxSize; big is true, and nothing is read, when it is larger.
func (s *Session) retrNotice(ctx context.Context, pc *conn, num int) (msg []byte, big bool, err error) {
	var size int64
	if err := s.bound(ctx, pc, func() (err error) {
		size, err = pc.c.List(num)
		return err
	}); err != nil {
		return nil, false, err
	}
	if size > dsn.MaxSize {
		return nil, true, nil
	}
	err = s.bound(ctx, pc, func() (err error) {
		msg, err = pc.c.Retr(num, maxNoticeRead)
		return err
	})
	return msg, false, err
}

// judgeNotice reads and judges the candidate uid (message num, header as
// TOP returned it) with fn. A kept notice becomes removable, tied to its
// header. A notice longer than LIST announced breaks the session: it is
// not judged, and the error says so.
func (s *Session) judgeNotice(ctx context.Context, pc *conn, id pop3.MessageID, header []byte, fn NoticeFunc) (keep, stop bool, err error) {
	msg, big, err := s.retrNotice(ctx, pc, id.Num)
	if err != nil && tooMuch(err) {
		// Longer than LIST said, by more than line endings explain (or
		// with a line over the bound): the caller marks it read and ends
		// this session, which cannot go on.
		s.log.Warn("POP3 notice candidate longer than its LIST size; not read", zap.String("uid", id.UID), zap.Error(err))
		return false, false, errNoticeTooLarge
	}
	var perr *pop3.Error
	if errors.As(err, &perr) {
		// LIST n or RETR refused (the session goes on): the notice is
		// left unread, and the probe is still waited for.
		s.log.Warn("POP3 server refused to read a notice candidate; it is not judged", zap.String("uid", id.UID), zap.Error(err))
		return false, false, nil
	}
	if err != nil {
		return false, false, err
	}
	if big {
		s.log.Debug("POP3 notice candidate over the size cap not read", zap.String("uid", id.UID))
		return false, false, nil
	}
	keep, stop = fn(msg)
	if keep {
		s.noticeOwned[id.UID] = sha256.Sum256(header)
		pc.verify(id.UID)
	}
	return keep, stop, nil
}

// FindNotices reads, in the open session or a new one, the notices of the
// maildrop (no dates over POP3: judge decides which are wanted), oldest
// first when oldest is set (the sweep), newest first otherwise (late
// notices), and returns the UIDs of those judge keeps, which become
// removable by DeleteUIDs. At most limit notices are read, among at most
// 4×limit headers. It is housekeeping: nothing is timed.
func (s *Session) FindNotices(ctx context.Context, oldest bool, limit int, judge NoticeFunc) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return nil, steps.New(POP3Fetch, steps.TypeConfig, errClosed)
	case judge == nil:
		return nil, steps.New(POP3Fetch, steps.TypeConfig, errors.New("pop3: FindNotices needs a NoticeFunc"))
	}
	if limit <= 0 {
		limit = defaultFindLimit
	}
	pc, ids, err := s.listedIDs(ctx, oldest)
	if err != nil {
		return nil, err
	}
	var out []string
	read, scanned := 0, 0
	for _, id := range ids {
		if read == limit || scanned == noticeScanFactor*limit || ctx.Err() != nil {
			break
		}
		if _, ok := s.notNotice[id.UID]; ok || pc.nums[id.UID] < 0 {
			continue
		}
		scanned++
		header, err := s.top(ctx, pc, id.Num, nil)
		if err != nil {
			return out, s.waitFail(ctx, POP3Fetch, err)
		}
		if !isReport(header) {
			s.notNotice[id.UID] = struct{}{}
			continue
		}
		read++
		keep, _, err := s.judgeNotice(ctx, pc, id, header, judge)
		if errors.Is(err, errNoticeTooLarge) {
			s.notNotice[id.UID] = struct{}{}
			break
		}
		if err != nil {
			return out, s.waitFail(ctx, POP3Fetch, err)
		}
		if keep {
			out = append(out, id.UID)
		}
	}
	return out, nil
}
