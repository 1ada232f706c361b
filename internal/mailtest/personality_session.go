package mailtest

import (
	"bytes"
	"io"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-imap/v2/imapserver"
)

// store appends raw to a's mailbox and keeps the personality's books: when
// it became visible (search lag) and, on Gmail, its All Mail copy and tab.
func (s *Server) store(a *account, mailbox string, raw []byte, flags []imap.Flag) (*imap.AppendData, error) {
	data, err := a.mem.Append(mailbox, bytes.NewReader(raw), &imap.AppendOptions{Flags: flags})
	if err != nil {
		return nil, err
	}
	now := time.Now()
	a.visible.add(mailbox, data.UID, now, s.t.searchLag)
	if s.t.gmail && mailbox == inbox {
		// Gmail keeps one message with labels: INBOX and All Mail show
		// the same message. Here All Mail holds a linked copy.
		all, err := a.mem.Append(GmailAllMail, bytes.NewReader(raw), &imap.AppendOptions{Flags: flags})
		if err != nil {
			return nil, err
		}
		tab := ""
		if f := s.opts.Category; f != nil {
			tab = strings.ToLower(f(a.Address, raw))
		}
		a.gm.link(data.UID, all.UID, tab)
		a.visible.add(GmailAllMail, all.UID, now, s.t.searchLag)
	}
	return data, nil
}

// removeAside deletes uids from a's mailbox through an internal session, the
// way Gmail drops a label from a message another session works on.
func (s *Server) removeAside(a *account, mailbox string, uids []imap.UID) error {
	if len(uids) == 0 {
		return nil
	}
	conn, err := s.dialInner()
	if err != nil {
		return err
	}
	if err := conn.SetDeadline(time.Now().Add(stopTimeout)); err != nil {
		conn.Close()
		return err
	}
	c := imapclient.New(conn, nil)
	defer c.Close()
	if err := c.Login(a.Username, a.Password).Wait(); err != nil {
		return err
	}
	if _, err := c.Select(mailbox, nil).Wait(); err != nil {
		return err
	}
	set := imap.UIDSetNum(uids...)
	if err := c.Store(set, &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
		return err
	}
	if err := c.UIDExpunge(set).Close(); err != nil {
		return err
	}
	s.changes.notify()
	return c.Logout().Wait()
}

var (
	errUnknownCommand = &imap.Error{Type: imap.StatusResponseTypeBad, Text: "Unknown command"}
	// Exchange's answer to search syntax it does not take.
	errExchangeArgument = &imap.Error{Type: imap.StatusResponseTypeBad, Text: "Command Argument Error. 11"}
)

func (x *imapSession) traits() *traits { return &x.srv.t }

func canonical(name string) string {
	if strings.EqualFold(name, inbox) {
		return inbox
	}
	return strings.TrimRight(name, "/")
}

func (x *imapSession) Select(name string, options *imap.SelectOptions) (*imap.SelectData, error) {
	data, err := x.SessionIMAP4rev2.Select(name, options)
	if err == nil {
		x.selected = canonical(name)
	}
	return data, err
}

func (x *imapSession) Unselect() error {
	x.selected = ""
	return x.SessionIMAP4rev2.Unselect()
}

func (x *imapSession) Close() error {
	if x.counted {
		x.counted = false
		x.user.sessions.release()
	}
	return x.SessionIMAP4rev2.Close()
}

// Search applies the personality: BAD on nested syntax, unsearchable
// custom headers, Gmail tabs, the search index's lag.
func (x *imapSession) Search(kind imapserver.NumKind, criteria *imap.SearchCriteria, options *imap.SearchOptions) (*imap.SearchData, error) {
	if !x.front || x.user == nil {
		return x.SessionIMAP4rev2.Search(kind, criteria, options)
	}
	t := x.traits()
	if t.nestedSearchBAD && nestedSearch(criteria) {
		return nil, errExchangeArgument
	}
	c := x.rewriteSearch(*criteria)
	if t.searchLag > 0 {
		if recent := x.user.visible.since(x.selected, time.Now().Add(-t.searchLag)); len(recent) > 0 {
			c.Not = append(c.Not, imap.SearchCriteria{UID: []imap.UIDSet{imap.UIDSetNum(recent...)}})
		}
	}
	return x.SessionIMAP4rev2.Search(kind, &c, options)
}

func (x *imapSession) rewriteSearch(c imap.SearchCriteria) imap.SearchCriteria {
	t := x.traits()
	out := c
	out.UID = append([]imap.UIDSet(nil), c.UID...)
	out.Header, out.Flag, out.Not, out.Or = nil, nil, nil, nil
	for _, h := range c.Header {
		if t.standardHeadersOnly && !standardHeaders[strings.ToLower(h.Key)] {
			out.UID = append(out.UID, imap.UIDSetNum(noUID))
			continue
		}
		out.Header = append(out.Header, h)
	}
	for _, f := range c.Flag {
		if t.gmail && len(f) > len(categoryKeyword) && strings.EqualFold(string(f[:len(categoryKeyword)]), categoryKeyword) {
			tab := strings.ToLower(string(f[len(categoryKeyword):]))
			if tab == "primary" {
				// Primary is every message filed in no other category.
				uids := x.user.gm.categorised(x.selected)
				out.Not = append(out.Not, imap.SearchCriteria{UID: []imap.UIDSet{imap.UIDSetNum(append(uids, noUID)...)}})
				continue
			}
			uids := x.user.gm.inCategory(x.selected, tab)
			out.UID = append(out.UID, imap.UIDSetNum(append(uids, noUID)...))
			continue
		}
		out.Flag = append(out.Flag, f)
	}
	for _, n := range c.Not {
		out.Not = append(out.Not, x.rewriteSearch(n))
	}
	for _, o := range c.Or {
		out.Or = append(out.Or, [2]imap.SearchCriteria{x.rewriteSearch(o[0]), x.rewriteSearch(o[1])})
	}
	return out
}

// keys counts the search keys ANDed in c.
func keys(c *imap.SearchCriteria) int {
	n := len(c.SeqNum) + len(c.UID) + len(c.Header) + len(c.Body) + len(c.Text) +
		len(c.Flag) + len(c.NotFlag) + len(c.Not) + len(c.Or)
	for _, t := range []time.Time{c.Since, c.Before, c.SentSince, c.SentBefore} {
		if !t.IsZero() {
			n++
		}
	}
	if c.Larger != 0 {
		n++
	}
	if c.Smaller != 0 {
		n++
	}
	if c.ModSeq != nil {
		n++
	}
	return n
}

// nestedSearch reports an OR inside an OR, or a parenthesized list as the
// operand of OR or NOT: what Exchange is reported to refuse.
func nestedSearch(c *imap.SearchCriteria) bool {
	for i := range c.Or {
		for j := range c.Or[i] {
			o := &c.Or[i][j]
			if len(o.Or) > 0 || keys(o) > 1 || nestedSearch(o) {
				return true
			}
		}
	}
	for i := range c.Not {
		if keys(&c.Not[i]) > 1 || nestedSearch(&c.Not[i]) {
			return true
		}
	}
	return false
}

// resolve returns the UIDs numSet names in the selected mailbox.
func (x *imapSession) resolve(numSet imap.NumSet) []imap.UID {
	var c imap.SearchCriteria
	switch ns := numSet.(type) {
	case imap.SeqSet:
		c.SeqNum = []imap.SeqSet{ns}
	case imap.UIDSet:
		c.UID = []imap.UIDSet{ns}
	default:
		return nil
	}
	return x.searchUIDs(&c)
}

func (x *imapSession) searchUIDs(c *imap.SearchCriteria) []imap.UID {
	data, err := x.SessionIMAP4rev2.Search(imapserver.NumKindUID, c, &imap.SearchOptions{})
	if err != nil || data == nil {
		return nil
	}
	set, ok := data.All.(imap.UIDSet)
	if !ok {
		return nil
	}
	uids, _ := set.Nums()
	return uids
}

// gmailBin reports a folder whose label takes a message out of All Mail.
func (x *imapSession) gmailBin(dest string) bool {
	d := canonical(dest)
	return x.front && x.traits().gmail && x.user != nil && (d == GmailTrash || d == GmailSpam)
}

// gmailBinned removes from All Mail (and INBOX) the messages src of the
// selected mailbox that were just copied or moved to Trash or Spam: Gmail
// keeps trash and spam out of All Mail.
func (x *imapSession) gmailBinned(src []imap.UID, moved bool) error {
	switch x.selected {
	case inbox:
		return x.srv.removeAside(x.user, GmailAllMail, x.user.gm.allMailOf(src))
	case GmailAllMail:
		if err := x.srv.removeAside(x.user, inbox, x.user.gm.inboxOf(src)); err != nil {
			return err
		}
		if !moved {
			return x.srv.removeAside(x.user, GmailAllMail, src)
		}
	}
	return nil
}

// gmailExpunge: "Delete a message from [Gmail]/All Mail: the message is
// moved to Trash" (Gmail's IMAP sync table); INBOX needs nothing, as its
// All Mail copy stays: that is the archive.
func (x *imapSession) gmailExpunge(uids *imap.UIDSet) error {
	if x.selected != GmailAllMail {
		return nil
	}
	c := imap.SearchCriteria{Flag: []imap.Flag{imap.FlagDeleted}}
	if uids != nil {
		c.UID = []imap.UIDSet{*uids}
	}
	deleted := x.searchUIDs(&c)
	if len(deleted) == 0 {
		return nil
	}
	if _, err := x.SessionIMAP4rev2.Copy(imap.UIDSetNum(deleted...), GmailTrash); err != nil {
		return err
	}
	return x.srv.removeAside(x.user, inbox, x.user.gm.inboxOf(deleted))
}

// appendGmail stores an APPEND to a Gmail INBOX with its All Mail copy.
func (x *imapSession) appendGmail(r imap.LiteralReader, options *imap.AppendOptions) (*imap.AppendData, error) {
	raw, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	var flags []imap.Flag
	if options != nil {
		flags = options.Flags
	}
	return x.srv.store(x.user, inbox, raw, flags)
}

// sessionLimit counts a login against the account's cap.
func (x *imapSession) sessionLimit() error {
	if !x.front || x.user == nil || x.counted {
		return nil
	}
	if !x.user.sessions.acquire(x.traits().maxSessions) {
		return x.traits().limitErr(x.traits().maxSessions)
	}
	x.counted = true
	return nil
}
