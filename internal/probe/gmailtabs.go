package probe

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/emailqos/emailqosreceiver/internal/gmailtabs"
	"github.com/emailqos/emailqosreceiver/internal/imapwatch"
	"github.com/emailqos/emailqosreceiver/internal/transcript"
	"github.com/emailqos/emailqosreceiver/internal/transport"
)

// gmailTabBudget bounds the tab lookup (a login, EXAMINE, up to four
// searches, LOGOUT); it also never takes more than half of the probe's
// remaining time, so that the cleanup after it keeps its share.
const gmailTabBudget = 10 * time.Second

// gmailInbox is a mailbox session that can tell it watches a Gmail INBOX
// (imapMailbox).
type gmailInbox interface {
	gmailInbox() (uidValidity uint32, ok bool)
}

func (m imapMailbox) gmailInbox() (uint32, bool) { return m.s.GmailInbox() }

// gmailTabPlacement is the placement of a probe found in a Gmail INBOX when
// the receiving account has GmailTabs: its inbox tab (promotions, social,
// updates, forums) or inbox (Primary), looked up on a session of its own
// (internal/gmailtabs) that takes one of the mailbox's max_sessions slots.
// It is "" when not asked for or not applicable, and when no slot is free
// or the lookup fails: the placement then stays inbox, the failure is
// logged (at warn the first time for the account), and the probe goes on.
// commands counts the lookup's IMAP commands.
func gmailTabPlacement(ctx context.Context, t *Target, sess mailbox, a arrival, logger *zap.Logger, tr *transcript.Transcript) (_ imapwatch.Placement, commands int) {
	r := t.Receiver
	if !r.GmailTabs || a.Placement != imapwatch.PlacementInbox {
		return "", 0
	}
	g, ok := sess.(gmailInbox)
	if !ok {
		return "", 0
	}
	validity, ok := g.gmailInbox()
	if !ok {
		return "", 0
	}
	uid, err := parseUID(a.ID)
	if err != nil {
		return "", 0
	}
	release, ok := r.tryAcquire()
	if !ok {
		warnTabs(r, logger, t, "no free session (max_sessions) for the Gmail tab lookup; placement stays inbox")
		return "", 0
	}
	defer release()
	budget := gmailTabBudget
	if dl, ok := ctx.Deadline(); ok {
		budget = min(budget, time.Until(dl)/2)
	}
	lctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	res, err := gmailtabs.Lookup(lctx, gmailtabs.Options{
		Endpoint:           r.IMAP,
		Credentials:        r.credentials(tr),
		AllowPlaintextAuth: r.IMAP.Security == transport.None,
		UIDValidity:        validity,
		Transcript:         tr,
	}, uint32(uid))
	if err != nil {
		warnTabs(r, logger, t, "Gmail tab lookup failed; placement stays inbox", zap.Error(err))
		return "", res.Commands
	}
	return gmailTab(res.Tab), res.Commands
}

// warnTabs logs a failed tab lookup: at warn once per account, then at
// debug, since the same cause (a login throttled, a session cap) tends to
// repeat at every probe.
func warnTabs(r *Account, logger *zap.Logger, t *Target, msg string, fields ...zap.Field) {
	fields = append(fields, zap.String("account", r.Key), zap.String("target", t.Name))
	if r.tabsWarned.CompareAndSwap(false, true) {
		logger.Warn(msg+" (logged once per account; later failures at debug level)", fields...)
		return
	}
	logger.Debug(msg, fields...)
}
