package imapwatch

import (
	"context"
	"strings"
)

// GmailInbox reports whether the session watches the INBOX of a server
// with Gmail's IMAP extensions (X-GM-EXT-1), where a message found has an
// inbox tab, and INBOX's UIDVALIDITY, which gives its UIDs their meaning.
func (s *Session) GmailInbox() (uidValidity uint32, ok bool) {
	// lock, not mu.Lock: on a shared session it makes the leader of a
	// wait yield instead of waiting for its whole turn.
	s.lock(context.Background())
	defer s.mu.Unlock()
	if !s.caps.Has(capGmail) || !strings.EqualFold(s.opts.Mailbox, defaultMailbox) {
		return 0, false
	}
	return s.uidValidity, true
}

func (m *Member) GmailInbox() (uint32, bool) { return m.s.GmailInbox() }
