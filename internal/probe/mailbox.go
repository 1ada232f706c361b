package probe // import "github.com/emailqos/emailqosreceiver/internal/probe"

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/emersion/go-imap/v2"
	"go.uber.org/zap"

	"github.com/emailqos/emailqosreceiver/internal/imapwatch"
	"github.com/emailqos/emailqosreceiver/internal/steps"
	"github.com/emailqos/emailqosreceiver/internal/transcript"
)

// Retrieval protocols.
const (
	RetrievalIMAP = "imap"
	RetrievalPOP3 = "pop3"
)

// mailbox is the reading side of a probe, over IMAP or POP3. Messages are
// named by the protocol's stable id (an IMAP UID, a POP3 UIDL) as a string.
type mailbox interface {
	// Wait blocks until this probe is visible and accepted, or ctx ends.
	// floor is the end of the probe's DATA: it cannot have arrived before.
	Wait(ctx context.Context, floor time.Time, token string, accept func(header []byte) bool) (arrival, error)
	// Delete and Move clean up the measured probe (a timed step), in the
	// folder it was found in.
	Delete(ctx context.Context, a arrival) error
	Move(ctx context.Context, a arrival, folder string) error
	// FindProbes, DeleteIDs and MoveIDs serve the housekeeping of late and
	// orphaned probes; only ids the session found itself can be removed.
	FindProbes(ctx context.Context, tokens []string, limit int, accept func(header []byte) bool) ([]string, error)
	DeleteIDs(ctx context.Context, ids []string) error
	MoveIDs(ctx context.Context, ids []string, folder string) error
	Commands() int
	Close(ctx context.Context) error
}

// store is where the housekeeping looks for probes and removes them: the
// watched mailbox (a mailbox itself), or one junk folder of it.
type store interface {
	FindProbes(ctx context.Context, tokens []string, limit int, accept func(header []byte) bool) ([]string, error)
	DeleteIDs(ctx context.Context, ids []string) error
	MoveIDs(ctx context.Context, ids []string, folder string) error
}

// junkStores is implemented by a mailbox with junk folders (IMAP): the
// housekeeping looks in them too.
type junkStores interface {
	// junk lists a store per junk folder of the session.
	junk() []junkStore
}

// junkStore is one junk folder of an IMAP session, as a store: ids are the
// folder's UIDs, found by its FindProbes.
type junkStore struct {
	s      imapSession
	folder string
}

func (j junkStore) FindProbes(ctx context.Context, tokens []string, limit int, accept func([]byte) bool) ([]string, error) {
	uids, err := j.s.FindProbesIn(ctx, j.folder, tokens, limit, accept)
	return uidStrings(uids), err
}

func (j junkStore) DeleteIDs(ctx context.Context, ids []string) error {
	uids, err := parseUIDs(ids)
	if err != nil {
		return err
	}
	return j.s.DeleteUIDsFrom(ctx, j.folder, uids)
}

func (j junkStore) MoveIDs(ctx context.Context, ids []string, folder string) error {
	uids, err := parseUIDs(ids)
	if err != nil {
		return err
	}
	return j.s.MoveUIDsFrom(ctx, j.folder, uids, folder)
}

type arrival struct {
	ID          string
	SeenAt      time.Time
	Uncertainty time.Duration
	Method      imapwatch.Method
	Header      []byte
	// Placement is where it was found; Folder the IMAP folder ("" over
	// POP3, whose only folder is the maildrop).
	Placement imapwatch.Placement
	Folder    string
	// IdleNoPush: the mailbox's IDLE was found not to announce arrivals.
	IdleNoPush bool
}

// The detection method and placement of every POP3 arrival, in imapwatch's
// terms, which the metrics use for both protocols: POP3 can only poll, and
// sees the maildrop only.
const (
	pop3Method    = imapwatch.MethodPoll
	pop3Placement = imapwatch.PlacementInbox
)

// Placements of a probe (Result.Placement). POP3 sees the maildrop only, so
// its probes are inbox or missing.
const (
	PlacementInbox   = string(imapwatch.PlacementInbox)
	PlacementJunk    = string(imapwatch.PlacementJunk)
	PlacementMissing = "missing"
	// Gmail's inbox tabs, read from a message's CATEGORY_* label over the
	// Gmail API (users.messages.get labelIds); the Primary tab
	// (CATEGORY_PERSONAL) is inbox.
	PlacementPromotions = "promotions"
	PlacementSocial     = "social"
	PlacementUpdates    = "updates"
	PlacementForums     = "forums"
)

// gmailTab is the placement of a message in Gmail's inbox tab category
// (gmailapi.Message.Category), inbox for the Primary tab or none.
func gmailTab(category string) imapwatch.Placement {
	switch category {
	case PlacementPromotions, PlacementSocial, PlacementUpdates, PlacementForums:
		return imapwatch.Placement(category)
	}
	return imapwatch.PlacementInbox
}

// openMailbox logs in to the receiver's mailbox and, for IMAP, starts
// listening for the arrival before anything is sent.
func openMailbox(ctx context.Context, t *Target, logger *zap.Logger, rec *steps.Recorder, tr *transcript.Transcript) (mailbox, error) {
	return openAccountMailbox(ctx, t, t.Receiver, logger, rec, tr)
}

// openAccountMailbox is openMailbox for r's mailbox.
func openAccountMailbox(ctx context.Context, t *Target, r *Account, logger *zap.Logger, rec *steps.Recorder, tr *transcript.Transcript) (mailbox, error) {
	switch r.Retrieval {
	case RetrievalPOP3:
		return openPOP3(ctx, t, r, logger, rec, tr)
	case RetrievalGraph:
		return openGraph(ctx, t, r, rec, logger)
	case RetrievalGmailAPI:
		return openGmail(ctx, t, r, rec, logger)
	}
	if t.sharesSession(r) {
		return joinShared(ctx, t, r, logger, rec, tr, true)
	}
	sess, err := imapwatch.Open(ctx, imapOptions(t, r, logger, tr), rec)
	if err != nil {
		return nil, err
	}
	return imapMailbox{sess}, nil
}

// imapSession is an IMAP session as a probe uses it: its own
// (*imapwatch.Session), or its share of its mailbox's watcher session
// (*imapwatch.Member, share.go).
type imapSession interface {
	WaitAfter(ctx context.Context, floor time.Time, token string, accept func(header []byte) bool) (imapwatch.Arrival, error)
	WaitNotices(ctx context.Context, floor time.Time, token string, accept func(header []byte) bool, notice imapwatch.NoticeFunc) (imapwatch.Arrival, []imapwatch.Notice, error)
	DeleteFrom(ctx context.Context, folder string, uid imap.UID) error
	MoveFrom(ctx context.Context, folder string, uid imap.UID, mailbox string) error
	FindProbes(ctx context.Context, tokens []string, limit int, accept func(header []byte) bool) ([]imap.UID, error)
	FindProbesIn(ctx context.Context, folder string, tokens []string, limit int, accept func(header []byte) bool) ([]imap.UID, error)
	FindNotices(ctx context.Context, folder string, since, before time.Time, limit int, notice imapwatch.NoticeFunc) ([]imap.UID, error)
	DeleteUIDs(ctx context.Context, uids []imap.UID) error
	MoveUIDs(ctx context.Context, uids []imap.UID, mailbox string) error
	DeleteUIDsFrom(ctx context.Context, folder string, uids []imap.UID) error
	MoveUIDsFrom(ctx context.Context, folder string, uids []imap.UID, mailbox string) error
	JunkFolders() []string
	GmailInbox() (uidValidity uint32, ok bool)
	Commands() int
	Close(ctx context.Context) error
}

type imapMailbox struct{ s imapSession }

func (m imapMailbox) Wait(ctx context.Context, floor time.Time, token string, accept func([]byte) bool) (arrival, error) {
	a, err := m.s.WaitAfter(ctx, floor, token, accept)
	return arrival{ID: uidString(a.UID), SeenAt: a.SeenAt, Uncertainty: a.Uncertainty, Method: a.Method, Header: a.Header,
		Placement: a.Placement, Folder: a.Folder, IdleNoPush: a.IdleNoPush}, err
}

func (m imapMailbox) Delete(ctx context.Context, a arrival) error {
	uid, err := parseUID(a.ID)
	if err != nil {
		return err
	}
	return m.s.DeleteFrom(ctx, a.Folder, uid)
}

func (m imapMailbox) Move(ctx context.Context, a arrival, folder string) error {
	uid, err := parseUID(a.ID)
	if err != nil {
		return err
	}
	return m.s.MoveFrom(ctx, a.Folder, uid, folder)
}

func (m imapMailbox) FindProbes(ctx context.Context, tokens []string, limit int, accept func([]byte) bool) ([]string, error) {
	uids, err := m.s.FindProbes(ctx, tokens, limit, accept)
	return uidStrings(uids), err
}

func (m imapMailbox) junk() []junkStore {
	folders := m.s.JunkFolders()
	out := make([]junkStore, len(folders))
	for i, f := range folders {
		out[i] = junkStore{m.s, f}
	}
	return out
}

func (m imapMailbox) DeleteIDs(ctx context.Context, ids []string) error {
	uids, err := parseUIDs(ids)
	if err != nil {
		return err
	}
	return m.s.DeleteUIDs(ctx, uids)
}

func (m imapMailbox) MoveIDs(ctx context.Context, ids []string, folder string) error {
	uids, err := parseUIDs(ids)
	if err != nil {
		return err
	}
	return m.s.MoveUIDs(ctx, uids, folder)
}

func (m imapMailbox) Commands() int                   { return m.s.Commands() }
func (m imapMailbox) Close(ctx context.Context) error { return m.s.Close(ctx) }

func uidString(u imap.UID) string { return strconv.FormatUint(uint64(u), 10) }

func uidStrings(uids []imap.UID) []string {
	ids := make([]string, len(uids))
	for i, u := range uids {
		ids[i] = uidString(u)
	}
	return ids
}

func parseUID(id string) (imap.UID, error) {
	n, err := strconv.ParseUint(id, 10, 32)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("invalid IMAP UID %q", id)
	}
	return imap.UID(n), nil
}

func parseUIDs(ids []string) ([]imap.UID, error) {
	uids := make([]imap.UID, len(ids))
	for i, id := range ids {
		u, err := parseUID(id)
		if err != nil {
			return nil, err
		}
		uids[i] = u
	}
	return uids, nil
}
