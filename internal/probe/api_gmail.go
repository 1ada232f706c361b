package probe

import (
	"context"

	"go.uber.org/zap"

	"github.com/emailqos/emailqosreceiver/internal/gmailapi"
	"github.com/emailqos/emailqosreceiver/internal/imapwatch"
	"github.com/emailqos/emailqosreceiver/internal/restcall"
	"github.com/emailqos/emailqosreceiver/internal/steps"
)

// maxGmailBacklog bounds the messages whose headers one session reads from
// the history since the previous session; more wait for the next one.
const maxGmailBacklog = 200

// gmailMailbox reads a mailbox over the Gmail API: users.history.list from
// a historyId taken before the probe is sent, then each new message's
// headers and labels (users.messages.get, format=metadata).
type gmailMailbox struct {
	*apiMailbox
	c     *gmailapi.Client
	user  string
	start uint64
}

func openGmail(ctx context.Context, t *Target, r *Account, rec *steps.Recorder, logger *zap.Logger) (mailbox, error) {
	g := &gmailMailbox{apiMailbox: newAPIMailbox(r, t, steps.GmailAPIList, rec, logger), c: r.API.Gmail, user: r.apiUser()}
	g.fetchNotice = func(ctx context.Context, id string) ([]byte, error) {
		return g.c.Raw(ctx, g.user, id, imapwatch.MaxNoticeBytes)
	}
	g.position = func() func() {
		start := g.start
		return func() { g.start = start }
	}
	// Gmail has labels, not folders: a move is to the trash, as for probes.
	g.removeNotice = func(ctx context.Context, id string, move bool, _ string) error {
		if move {
			return g.c.Trash(ctx, g.user, id)
		}
		return g.c.Delete(ctx, g.user, id)
	}
	r.api.mu.Lock()
	saved := r.api.gmailStart
	r.api.mu.Unlock()
	if saved != 0 {
		g.start = saved
		msgs, err := g.history(ctx, maxGmailBacklog)
		if err == nil {
			g.note(msgs)
			g.poll = g.pollHistory
			return g, nil
		}
		if !restcall.IsKind(err, restcall.KindResync) {
			return nil, apiFail(ctx, steps.GmailAPIList, steps.CodeMailboxConnect, err, r)
		}
	}
	err := g.timed(steps.GmailAPIList, func() (err error) {
		g.start, err = g.c.HistoryID(ctx, g.user)
		return err
	})
	if err != nil {
		return nil, apiFail(ctx, steps.GmailAPIList, steps.CodeMailboxConnect, err, r)
	}
	g.poll = g.pollHistory
	return g, nil
}

// history reads the messages added (or labelled) since g.start, at most
// limit of them, and advances g.start.
func (g *gmailMailbox) history(ctx context.Context, limit int) ([]apiMessage, error) {
	var refs []gmailapi.Ref
	var next uint64
	err := g.timed(steps.GmailAPIList, func() (err error) {
		refs, next, err = g.c.History(ctx, g.user, g.start)
		return err
	})
	if err != nil {
		return nil, err
	}
	var out []apiMessage
	for _, ref := range refs[:min(len(refs), limit)] {
		var m gmailapi.Message
		err := g.timed(steps.GmailAPIList, func() (err error) {
			m, err = g.c.Get(ctx, g.user, ref.ID)
			return err
		})
		if restcall.IsKind(err, restcall.KindNotFound) {
			continue // deleted since it was added
		}
		if err != nil {
			return nil, err
		}
		// Placement from the labels: SPAM is junk; INBOX is its tab
		// (CATEGORY_PROMOTIONS, _SOCIAL, _UPDATES, _FORUMS), else inbox. A
		// message with neither, such as the sender's own copy (SENT) of a
		// probe to itself before Gmail files it in the inbox, has not
		// arrived: its labelAdded record brings it back.
		var placement imapwatch.Placement
		switch m.Placement() {
		case "spam":
			placement = imapwatch.PlacementJunk
		case "inbox":
			placement = gmailTab(m.Category())
		default:
			continue
		}
		hs := m.Payload.Headers
		field := func(i int) (string, string) { return hs[i].Name, hs[i].Value }
		// Gmail gives every header in format=metadata: one without a
		// Content-Type is text/plain (RFC 2045), not a report.
		out = append(out, apiMessage{id: m.ID, placement: placement, header: headerBlock(len(hs), field),
			report: len(hs) > 0 && isReport(len(hs), field), received: m.Received(), size: m.SizeEstimate})
	}
	// Past the limit, the rest is skipped rather than read again at every
	// poll: the next session's housekeeping does not see it either, the
	// orphan sweep's limit over the APIs (README).
	g.start = next
	return out, nil
}

// pollHistory is one poll. A start id too old (404: history is kept for a
// limited time, users.history.list) is replaced by the current one.
func (g *gmailMailbox) pollHistory(ctx context.Context) ([]apiMessage, error) {
	msgs, err := g.history(ctx, maxGmailBacklog)
	if restcall.IsKind(err, restcall.KindResync) {
		err = g.timed(steps.GmailAPIList, func() (err error) {
			g.start, err = g.c.HistoryID(ctx, g.user)
			return err
		})
	}
	return msgs, err
}

func (g *gmailMailbox) Delete(ctx context.Context, a arrival) error {
	return g.DeleteIDs(ctx, []string{a.ID})
}

func (g *gmailMailbox) Move(ctx context.Context, a arrival, folder string) error {
	return g.MoveIDs(ctx, []string{a.ID}, folder)
}

// DeleteIDs deletes for good (users.messages.delete, which needs the
// https://mail.google.com/ scope).
func (g *gmailMailbox) DeleteIDs(ctx context.Context, ids []string) error {
	for _, id := range ids {
		if err := g.timed(steps.GmailAPIDelete, func() error { return g.c.Delete(ctx, g.user, id) }); err != nil {
			return apiFail(ctx, steps.GmailAPIDelete, steps.CodeCleanup, err, g.acct)
		}
		g.forget(id)
	}
	return nil
}

// MoveIDs moves to the trash (users.messages.trash), Gmail's recoverable
// removal; the folder is not used, Gmail having labels, not folders.
func (g *gmailMailbox) MoveIDs(ctx context.Context, ids []string, _ string) error {
	for _, id := range ids {
		if err := g.timed(steps.GmailAPIDelete, func() error { return g.c.Trash(ctx, g.user, id) }); err != nil {
			return apiFail(ctx, steps.GmailAPIDelete, steps.CodeCleanup, err, g.acct)
		}
		g.forget(id)
	}
	return nil
}

// Commands is 0: emailqos.imap.commands counts mailbox protocol commands,
// which an API session sends none of.
func (g *gmailMailbox) Commands() int { return 0 }

// Close keeps the session's history id for the next session.
func (g *gmailMailbox) Close(context.Context) error {
	g.acct.api.mu.Lock()
	g.acct.api.gmailStart = g.start
	g.acct.api.mu.Unlock()
	return nil
}
