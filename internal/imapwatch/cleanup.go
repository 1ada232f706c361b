package imapwatch

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"go.uber.org/zap"

	"github.com/emailqos/emailqosreceiver/internal/steps"
)

// Delete removes exactly the probe uid, which must have been found by this
// session's Wait or FindProbes.
//
// With UIDPLUS (or IMAP4rev2) it is flagged \Deleted and removed with
// UID EXPUNGE. A plain EXPUNGE is never sent: it would also remove the
// messages the user flagged \Deleted. Without UIDPLUS the probe is moved to
// the trash folder (special-use \Trash, else "Trash") when the server offers
// MOVE. Without either, nothing can remove it alone; it is left untouched and
// Delete fails with code 5 type config (the mailbox needs a move-to-folder
// cleanup, or a server with UIDPLUS). Failures are code 5.
func (s *Session) Delete(ctx context.Context, uid imap.UID) error {
	return s.cleanup(ctx, "", []imap.UID{uid}, "", true)
}

// DeleteFrom is Delete of a probe Wait found in folder (Arrival.Folder),
// the watched mailbox or a junk folder: the same commands, sent with that
// folder selected, touching nothing else.
func (s *Session) DeleteFrom(ctx context.Context, folder string, uid imap.UID) error {
	return s.cleanup(ctx, folder, []imap.UID{uid}, "", true)
}

// MoveFrom is Move of a probe Wait found in folder (Arrival.Folder).
func (s *Session) MoveFrom(ctx context.Context, folder string, uid imap.UID, mailbox string) error {
	if mailbox == "" {
		return cleanupErr(steps.TypeConfig, errors.New("imap: no mailbox to move the probe to"))
	}
	return s.cleanup(ctx, folder, []imap.UID{uid}, mailbox, true)
}

// Move moves the probe uid, which must have been found by this session's
// Wait or FindProbes, to mailbox: UID MOVE, or UID COPY + UID STORE \Deleted + UID EXPUNGE
// with UIDPLUS; without either it is left untouched (code 5 type config).
// Failures are code 5.
func (s *Session) Move(ctx context.Context, uid imap.UID, mailbox string) error {
	if mailbox == "" {
		return cleanupErr(steps.TypeConfig, errors.New("imap: no mailbox to move the probe to"))
	}
	return s.cleanup(ctx, "", []imap.UID{uid}, mailbox, true)
}

// DeleteUIDs removes exactly the messages uids, each of which must have been
// found by this session's Wait or FindProbes, the same way as Delete: with
// one UID EXPUNGE of their UID set (never a plain EXPUNGE), else moved to the
// trash folder, else left untouched (code 5 type config). If any UID was not
// found by this session nothing is touched. It is meant for housekeeping
// after the measurement and is not timed as the imap.delete step, so that
// the probe's own cleanup time stays its own.
func (s *Session) DeleteUIDs(ctx context.Context, uids []imap.UID) error {
	return s.cleanup(ctx, "", uids, "", false)
}

// MoveUIDs moves exactly the messages uids, found by this session's Wait or
// FindProbes, to mailbox, the same way as Move; like DeleteUIDs it touches
// nothing if any UID is not the session's own and is not timed as a step.
func (s *Session) MoveUIDs(ctx context.Context, uids []imap.UID, mailbox string) error {
	if mailbox == "" {
		return cleanupErr(steps.TypeConfig, errors.New("imap: no mailbox to move the probes to"))
	}
	return s.cleanup(ctx, "", uids, mailbox, false)
}

// DeleteUIDsFrom is DeleteUIDs of probes FindProbesIn found in folder, a
// junk folder ("" is the watched mailbox): it is selected read-write for
// the UID STORE and UID EXPUNGE of exactly those UIDs.
func (s *Session) DeleteUIDsFrom(ctx context.Context, folder string, uids []imap.UID) error {
	return s.cleanup(ctx, folder, uids, "", false)
}

// MoveUIDsFrom is MoveUIDs of probes FindProbesIn found in folder.
func (s *Session) MoveUIDsFrom(ctx context.Context, folder string, uids []imap.UID, mailbox string) error {
	if mailbox == "" {
		return cleanupErr(steps.TypeConfig, errors.New("imap: no mailbox to move the probes to"))
	}
	return s.cleanup(ctx, folder, uids, mailbox, false)
}

func cleanupErr(typ string, err error) error {
	return steps.New(steps.IMAPDelete, typ, err)
}

// cleanup removes or moves the messages uids of folder ("" is the watched
// mailbox), all of which must be probes this session found there; timed
// says whether it is the probe's imap.delete step.
func (s *Session) cleanup(ctx context.Context, folder string, uids []imap.UID, dest string, timed bool) (err error) {
	s.lock(ctx)
	defer s.mu.Unlock()
	if s.closed {
		return cleanupErr(steps.TypeConfig, errClosed)
	}
	if len(uids) == 0 {
		return nil
	}
	if folder == "" {
		folder = s.opts.Mailbox
	}
	found, junk := s.found, (*junkFolder)(nil)
	if folder != s.opts.Mailbox {
		found = s.foundIn[folder]
		for _, f := range s.junk {
			if f.name == folder {
				junk = f
			}
		}
		if junk == nil {
			return cleanupErr(steps.TypeConfig, fmt.Errorf("imap: %q is not a folder this session watched", folder))
		}
	}
	// Every UID is checked before anything is sent: one stranger in the set
	// refuses the whole request.
	var set imap.UIDSet
	for _, uid := range uids {
		if _, ok := found[uid]; !ok {
			return cleanupErr(steps.TypeConfig, fmt.Errorf("imap: UID %d is not a probe found by this session", uid))
		}
		set.AddNum(uid)
	}
	if dest == folder {
		return cleanupErr(steps.TypeConfig, fmt.Errorf("imap: cannot move the probe to the mailbox it is in (%q)", dest))
	}
	if timed {
		start := time.Now()
		defer func() { s.rec.Add(steps.IMAPDelete, start, time.Since(start)) }()
	}

	fail := func(err error) error {
		var se *steps.Error
		if errors.As(err, &se) {
			// A failed reconnect is a failed cleanup here.
			return cleanupErr(se.Type, se.Err)
		}
		if ctx.Err() == nil {
			s.failed(err)
		}
		return steps.Fail(ctx, steps.IMAPDelete, imapType(err), err)
	}
	// A junk folder is selected read-write: EXAMINE allows neither STORE
	// nor EXPUNGE.
	if err := s.prepare(ctx, junk, false); err != nil {
		return fail(err)
	}

	if dest == "" && junk == nil && s.caps.Has(capGmail) && s.caps.Has(imap.CapMove) {
		if err := s.gmailDelete(ctx, folder, set); err != nil {
			return fail(err)
		}
		for _, uid := range uids {
			delete(found, uid)
		}
		return nil
	}

	switch {
	case dest != "" && s.caps.Has(imap.CapMove), dest == "" && !s.caps.Has(imap.CapUIDPlus) && s.caps.Has(imap.CapMove):
		if dest == "" {
			if dest, err = s.trashMailbox(ctx); err != nil {
				return fail(err)
			}
			if dest == folder {
				return cleanupErr(steps.TypeConfig, fmt.Errorf("imap: no UIDPLUS, and %q is the trash folder itself", dest))
			}
		}
		err = s.bound(ctx, func() error {
			// c.Move sends UID MOVE since the server offers MOVE; its
			// EXPUNGE goes to the unilateral handler, renumbering the
			// timeline.
			return s.createOnce(dest, func() error {
				_, err := s.c.Move(set, dest).Wait()
				return err
			})
		})
	case s.caps.Has(imap.CapUIDPlus):
		err = s.bound(ctx, func() error {
			if dest != "" {
				err := s.createOnce(dest, func() error {
					_, err := s.c.Copy(set, dest).Wait()
					return err
				})
				if err != nil {
					return err
				}
			}
			return s.expungeUID(set)
		})
	default:
		return cleanupErr(steps.TypeConfig, errors.New("imap: the server offers neither UIDPLUS nor MOVE: the probe cannot be removed (nor moved) without risking other messages; set cleanup mode keep"))
	}
	if err != nil {
		return fail(err)
	}
	for _, uid := range uids {
		delete(found, uid)
	}
	return nil
}

// createOnce runs copyOrMove, and when the server answers that dest does not
// exist (NO [TRYCREATE], RFC 3501 section 6.4.7; mox, Cyrus, maddy), creates
// it, once per session, and runs it again: the folder probes are moved to is
// the receiver's own.
func (s *Session) createOnce(dest string, copyOrMove func() error) error {
	err := copyOrMove()
	var ie *imap.Error
	if err == nil || !errors.As(err, &ie) || ie.Code != imap.ResponseCodeTryCreate || s.created[dest] {
		return err
	}
	if s.created == nil {
		s.created = make(map[string]bool)
	}
	s.created[dest] = true
	if cerr := s.c.Create(dest, nil).Wait(); cerr != nil {
		var ce *imap.Error
		if !errors.As(cerr, &ce) || ce.Code != imap.ResponseCodeAlreadyExists {
			return fmt.Errorf("imap: creating %q for the probes: %w", dest, cerr)
		}
	}
	s.log.Info("IMAP folder for moved probes created", zap.String("folder", dest))
	return copyOrMove()
}

var errNotExpunged = errors.New("imap: UID EXPUNGE completed but a probe is still there")

// expungeUID removes the messages of set, and only them.
func (s *Session) expungeUID(set imap.UIDSet) error {
	store := &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}
	if err := s.c.Store(set, store, nil).Close(); err != nil {
		return err
	}
	seqs, err := s.c.UIDExpunge(set).Collect()
	// EXPUNGE responses to a command do not reach the unilateral handler.
	for _, seq := range seqs {
		s.tl.onExpunge(seq)
	}
	if err != nil {
		return err
	}
	if n, ok := set.Nums(); ok && len(seqs) >= len(n) {
		return nil
	}
	// Fewer expunged than asked: already gone, or the server ignored (part
	// of) the request.
	data, err := s.c.UIDSearch(&imap.SearchCriteria{UID: []imap.UIDSet{set}}, nil).Wait()
	if err != nil {
		return err
	}
	if left, _ := data.All.(imap.UIDSet); len(left) > 0 {
		return errNotExpunged
	}
	return nil
}

// capGmail is Gmail's IMAP extensions capability
// (https://developers.google.com/gmail/imap/imap-extensions).
const capGmail = imap.Cap("X-GM-EXT-1")

// trashNames are trash folders by name, for servers that mark none \Trash:
// Microsoft 365's "Deleted Items" (its IMAP has no SPECIAL-USE), iCloud's
// "Deleted Messages", Gmail's.
var trashNames = []string{"Trash", "Deleted Items", "Deleted Messages", "[Gmail]/Trash"}

// trashMailbox finds the special-use \Trash folder, else one of
// trashNames, else "Trash".
func (s *Session) trashMailbox(ctx context.Context) (string, error) {
	if s.trash != "" {
		return s.trash, nil
	}
	special, named := "", ""
	err := s.bound(ctx, func() error {
		cmd := s.c.List("", "*", nil)
		for d := cmd.Next(); d != nil; d = cmd.Next() {
			for _, a := range d.Attrs {
				if a == imap.MailboxAttrTrash && special == "" {
					special = d.Mailbox
				}
			}
			for _, n := range trashNames {
				if named == "" && strings.EqualFold(d.Mailbox, n) {
					named = d.Mailbox
				}
			}
		}
		return cmd.Close()
	})
	if err != nil {
		return "", err
	}
	name := cmp.Or(special, named, "Trash")
	s.trash = name
	return name, nil
}

// gmailDelete removes probes the way Gmail deletes: expunged from INBOX (or
// any label) a message is only archived, kept in [Gmail]/All Mail, with
// Gmail's default "When a message is marked as deleted and expunged from the
// last visible IMAP folder: Archive the message"
// (https://developers.google.com/gmail/api/reference/rest/v1/ImapSettings).
// So the probes of set are moved to the \Trash folder, which takes them out
// of All Mail, and expunged there by the UIDs the MOVE's COPYUID gave them,
// which deletes them for good; nothing else in Trash is touched. Without a
// COPYUID they stay in Trash, which Gmail empties after 30 days.
func (s *Session) gmailDelete(ctx context.Context, folder string, set imap.UIDSet) error {
	trash, err := s.trashMailbox(ctx)
	if err != nil {
		return err
	}
	if trash == folder {
		return s.bound(ctx, func() error { return s.expungeUID(set) })
	}
	var moved *imapclient.MoveData
	err = s.bound(ctx, func() error {
		var err error
		moved, err = s.c.Move(set, trash).Wait()
		return err
	})
	if err != nil {
		return err
	}
	var dest imap.UIDSet
	if moved != nil {
		dest, _ = moved.DestUIDs.(imap.UIDSet)
	}
	if len(dest) == 0 {
		s.log.Debug("Gmail gave no COPYUID: the probe stays in Trash until Gmail empties it", zap.String("folder", trash))
		return nil
	}
	if err := s.enter(ctx, &junkFolder{name: trash}, false); err != nil {
		return err
	}
	return s.bound(ctx, func() error { return s.expungeUID(dest) })
}
