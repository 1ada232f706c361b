package probe

import (
	"context"
	"errors"
	"mime"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/emailqos/emailqosreceiver/internal/imapwatch"
	"github.com/emailqos/emailqosreceiver/internal/restcall"
)

// Delivery status notifications over the mail APIs (issues 16 and 18): the
// sender's mailbox read over Graph or the Gmail API is watched for notices
// as over IMAP and POP3. A new message whose headers say multipart/report
// (Graph's internetMessageHeaders, Gmail's metadata headers) is read whole,
// at most imapwatch.MaxNoticeBytes, and judged by the same noticeWatch:
// only a notice whose returned headers verify is kept, and only a kept one
// is ever removed.

const (
	// maxAPINoticeFetches bounds the notices one poll reads (each up to
	// 1 MiB); the rest wait for the next poll, so that a mailbox flooded
	// with reports cannot hold the wait.
	maxAPINoticeFetches = 16
	// maxAPINoticeTries is how often a notice whose read failed for a
	// reason that may pass (throttling, a 5xx) is tried again.
	maxAPINoticeTries = 3
	// maxAPIReports bounds the reports an account remembers for the
	// housekeeping (late notices, the sweep).
	maxAPIReports = 256
	// apiNoticeSkew widens the date window of late notices: the server's
	// receive time and this collector's clock may disagree by that much.
	apiNoticeSkew = time.Hour
)

// apiReport is a report seen in an account's mailbox over an API: the
// housekeeping of any later session of the account reads it again, since
// the delta or history position that showed it has moved on (another
// target's session on the same account may have moved it).
type apiReport struct {
	id       string
	folder   string
	received time.Time
	size     int64 // 0: unknown
}

// isReport says whether a message with these headers may be a notice: a
// multipart/report (RFC 6522), or a message whose headers the API did not
// give (Graph leaves internetMessageHeaders empty for some items), which
// only reading it can tell.
func isReport(n int, field func(i int) (string, string)) bool {
	if n == 0 {
		return true
	}
	for i := range n {
		name, value := field(i)
		if strings.EqualFold(name, "Content-Type") {
			mt, _, err := mime.ParseMediaType(value)
			return err == nil && mt == "multipart/report" || err != nil && strings.Contains(strings.ToLower(value), "multipart/report")
		}
	}
	return false
}

// rememberReports notes the session's new reports in the account.
func (m *apiMailbox) rememberReports(msgs []apiMessage) {
	m.acct.api.mu.Lock()
	defer m.acct.api.mu.Unlock()
	for _, msg := range msgs {
		if !msg.report || slices.ContainsFunc(m.acct.api.reports, func(r apiReport) bool { return r.id == msg.id }) {
			continue
		}
		if len(m.acct.api.reports) >= maxAPIReports {
			m.acct.api.reports = slices.Delete(m.acct.api.reports, 0, len(m.acct.api.reports)-maxAPIReports+1)
		}
		m.acct.api.reports = append(m.acct.api.reports, apiReport{id: msg.id, folder: msg.folder, received: msg.received, size: msg.size})
	}
}

// tooLarge notes that a report is over the cap: it is not read again.
func (m *apiMailbox) tooLarge(id string) {
	m.acct.api.mu.Lock()
	defer m.acct.api.mu.Unlock()
	for i := range m.acct.api.reports {
		if m.acct.api.reports[i].id == id {
			m.acct.api.reports[i].size = imapwatch.MaxNoticeBytes + 1
		}
	}
}

// forgetReport drops a removed or vanished report from the account.
func (m *apiMailbox) forgetReport(id string) {
	m.acct.api.mu.Lock()
	defer m.acct.api.mu.Unlock()
	m.acct.api.reports = slices.DeleteFunc(m.acct.api.reports, func(r apiReport) bool { return r.id == id })
}

// readNotice reads a candidate whole. gone is set when it can never be
// judged (deleted meanwhile, over the cap, malformed): it is then dropped;
// otherwise an error may pass and the read is tried again later.
func (m *apiMailbox) readNotice(ctx context.Context, msg apiMessage) (b []byte, gone bool, err error) {
	if msg.size > imapwatch.MaxNoticeBytes {
		// Gmail's sizeEstimate: not even fetched (the parser's cap).
		return nil, true, errTooLargeNotice
	}
	err = m.timed(m.listStep, func() (err error) {
		b, err = m.fetchNotice(ctx, msg.id)
		return err
	})
	if restcall.IsKind(err, restcall.KindTooLarge) {
		m.tooLarge(msg.id)
	}
	if err != nil {
		gone = restcall.IsKind(err, restcall.KindNotFound) || restcall.IsKind(err, restcall.KindTooLarge) ||
			restcall.IsKind(err, restcall.KindProtocol) || restcall.IsKind(err, restcall.KindBadRequest)
		return nil, gone, err
	}
	return b, false, nil
}

var errTooLargeNotice = errors.New("notice over the size cap")

// noticeQueue is the notices a wait has still to read, oldest first.
type noticeQueue struct {
	msgs  []apiMessage
	tries map[string]int
}

// judgeQueued reads and judges up to maxAPINoticeFetches queued notices.
// It returns the kept ones and whether judge asked to stop.
func (m *apiMailbox) judgeQueued(ctx context.Context, q *noticeQueue, judge imapwatch.NoticeFunc) ([]noticeRef, bool, error) {
	var refs []noticeRef
	// Those queued before this poll only: a failed read goes to the end,
	// for a later poll.
	for n := min(maxAPINoticeFetches, len(q.msgs)); n > 0; n-- {
		msg := q.msgs[0]
		q.msgs = q.msgs[1:]
		b, gone, err := m.readNotice(ctx, msg)
		if err != nil {
			if ctx.Err() != nil {
				return refs, false, ctx.Err()
			}
			if q.tries == nil {
				q.tries = map[string]int{}
			}
			if q.tries[msg.id]++; !gone && q.tries[msg.id] < maxAPINoticeTries {
				q.msgs = append(q.msgs, msg)
			}
			m.logger.Debug("a possible bounce could not be read", zap.String("api", m.listStep), zap.Error(err))
			continue
		}
		keep, stop := judge(b)
		if keep {
			refs = append(refs, noticeRef{ID: msg.id, Folder: msg.folder})
		}
		if stop {
			return refs, true, nil
		}
	}
	return refs, false, nil
}

// WaitNotices is Wait that also judges every report arriving meanwhile.
func (m *apiMailbox) WaitNotices(ctx context.Context, floor time.Time, token string, accept func([]byte) bool, judge imapwatch.NoticeFunc) (arrival, []noticeRef, error) {
	return m.wait(ctx, floor, token, accept, judge)
}

// FindNotices polls once, then reads the reports the account remembers
// (apiReport) that were received since since, or before before when that
// is set (both widened by apiNoticeSkew), at most limit of them, oldest
// first, and returns those judge keeps. Housekeeping: not timed as a step.
func (m *apiMailbox) FindNotices(ctx context.Context, since, before time.Time, limit int, judge imapwatch.NoticeFunc) ([]noticeRef, error) {
	// One poll first, so that what arrived since the wait's last poll is
	// seen now (as an IMAP search would), not at the next session. The
	// mailbox's position is put back after it: the next session still
	// reads those messages (a late probe among them is its housekeeping's).
	restore := m.position()
	m.untimed = true
	msgs, err := m.poll(ctx)
	m.untimed = false
	restore()
	if err != nil {
		return nil, err
	}
	m.note(msgs)
	m.acct.api.mu.Lock()
	reports := slices.Clone(m.acct.api.reports)
	m.acct.api.mu.Unlock()
	var refs []noticeRef
	read := 0
	for _, r := range reports {
		if read >= limit {
			break
		}
		if !r.received.IsZero() && (!since.IsZero() && r.received.Before(since.Add(-apiNoticeSkew)) ||
			!before.IsZero() && r.received.After(before.Add(apiNoticeSkew))) {
			continue
		}
		if r.size > imapwatch.MaxNoticeBytes {
			continue
		}
		read++
		b, err := m.fetchNotice(ctx, r.id)
		if restcall.IsKind(err, restcall.KindNotFound) {
			m.forgetReport(r.id)
			continue
		}
		if restcall.IsKind(err, restcall.KindTooLarge) {
			m.tooLarge(r.id)
		}
		if err != nil {
			if ctx.Err() != nil {
				return refs, err
			}
			continue
		}
		if keep, _ := judge(b); keep {
			refs = append(refs, noticeRef{ID: r.id, Folder: r.folder})
		}
	}
	return refs, nil
}

// RemoveNotices deletes the kept notices, or moves them (Graph: to
// cleanup.folder; Gmail: to the trash), as the probe's cleanup mode says.
// Untimed: removing a notice is not the probe's cleanup step.
func (m *apiMailbox) RemoveNotices(ctx context.Context, refs []noticeRef, c Cleanup, folder string) error {
	if c == CleanupKeep {
		return nil
	}
	var errs []error
	for _, r := range refs {
		err := m.removeNotice(ctx, r.ID, c == CleanupMove, folder)
		if err == nil || restcall.IsKind(err, restcall.KindNotFound) {
			m.forget(r.ID)
			m.forgetReport(r.ID)
			continue
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
