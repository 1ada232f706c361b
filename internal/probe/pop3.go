package probe // import "github.com/emailqos/emailqosreceiver/internal/probe"

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

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
