package probe // import "github.com/emailqos/emailqosreceiver/internal/probe"

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/emailqos/emailqosreceiver/internal/imapwatch"
	"github.com/emailqos/emailqosreceiver/internal/pop3watch"
	"github.com/emailqos/emailqosreceiver/internal/steps"
	"github.com/emailqos/emailqosreceiver/internal/transcript"
	"github.com/emailqos/emailqosreceiver/internal/transport"
)

// errNoFolders is returned for a move over POP3, which has one maildrop;
// the configuration rejects cleanup mode move for POP3 accounts.
var errNoFolders = errors.New("pop3 has no folders to move a probe to")

// openPOP3 logs in to the receiver's maildrop and notes which messages are
// there before the probe is sent; arrivals are then seen by polling.
func openPOP3(ctx context.Context, t *Target, r *Account, logger *zap.Logger, rec *steps.Recorder, tr *transcript.Transcript) (mailbox, error) {
	opts := pop3watch.Options{
		Endpoint:           r.POP3,
		Credentials:        r.credentials(tr),
		AllowPlaintextAuth: r.POP3.Security == transport.None,
		PollInterval:       t.PollInterval,
		Learner:            &t.learner,
		Logger:             logger,
		Transcript:         tr,
	}
	sess, err := pop3watch.Open(ctx, opts, rec)
	if err != nil {
		return nil, err
	}
	return pop3Mailbox{sess}, nil
}

type pop3Mailbox struct{ s *pop3watch.Session }

func (m pop3Mailbox) Wait(ctx context.Context, floor time.Time, token string, accept func([]byte) bool) (arrival, error) {
	a, err := m.s.WaitAfter(ctx, floor, token, accept)
	return arrival{ID: a.UID, SeenAt: a.SeenAt, Uncertainty: a.Uncertainty, Method: pop3Method, Header: a.Header,
		Placement: pop3Placement}, err
}

func (m pop3Mailbox) Delete(ctx context.Context, a arrival) error { return m.s.Delete(ctx, a.ID) }

func (m pop3Mailbox) Move(context.Context, arrival, string) error { return errNoFolders }

func (m pop3Mailbox) FindProbes(ctx context.Context, tokens []string, limit int, accept func([]byte) bool) ([]string, error) {
	return m.s.FindProbes(ctx, tokens, limit, accept)
}

func (m pop3Mailbox) DeleteIDs(ctx context.Context, ids []string) error {
	return m.s.DeleteUIDs(ctx, ids)
}

func (m pop3Mailbox) MoveIDs(context.Context, []string, string) error { return errNoFolders }

func (m pop3Mailbox) Commands() int                   { return m.s.Commands() }
func (m pop3Mailbox) Close(ctx context.Context) error { return m.s.Close(ctx) }

// Notices over POP3 (issue 16): the maildrop is the only place they land.

func (m pop3Mailbox) WaitNotices(ctx context.Context, floor time.Time, token string, accept func([]byte) bool, judge imapwatch.NoticeFunc) (arrival, []noticeRef, error) {
	a, uids, err := m.s.WaitNotices(ctx, floor, token, accept, pop3watch.NoticeFunc(judge))
	if errors.Is(err, pop3watch.ErrNoticeStop) {
		// The callers know IMAP's sentinel only.
		err = imapwatch.ErrNoticeStop
	}
	return arrival{ID: a.UID, SeenAt: a.SeenAt, Uncertainty: a.Uncertainty, Method: pop3Method, Header: a.Header,
		Placement: pop3Placement}, pop3Refs(uids), err
}

// FindNotices has no dates to search by over POP3: judge picks the wanted
// notices; a sweep (before set) reads the oldest messages first.
func (m pop3Mailbox) FindNotices(ctx context.Context, _, before time.Time, limit int, judge imapwatch.NoticeFunc) ([]noticeRef, error) {
	uids, err := m.s.FindNotices(ctx, !before.IsZero(), limit, pop3watch.NoticeFunc(judge))
	return pop3Refs(uids), err
}

// RemoveNotices deletes the kept notices. POP3 has only DELE, so cleanup
// mode move deletes them too: a verified notice is this probe's own
// message, and leaving it would make the sender's maildrop grow by one at
// every bounce.
func (m pop3Mailbox) RemoveNotices(ctx context.Context, refs []noticeRef, c Cleanup, _ string) error {
	if c == CleanupKeep || len(refs) == 0 {
		return nil
	}
	ids := make([]string, len(refs))
	for i, r := range refs {
		ids[i] = r.ID
	}
	return m.s.DeleteUIDs(ctx, ids)
}

func pop3Refs(uids []string) []noticeRef {
	refs := make([]noticeRef, len(uids))
	for i, u := range uids {
		refs[i] = noticeRef{ID: u}
	}
	return refs
}
