package mailtest

import (
	"fmt"
	"strings"
	"sync"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
)

// defaultJunk is the name of every user's junk folder unless
// Options.JunkFolder says otherwise.
const defaultJunk = "Junk"

// junkFolder is the name of every user's junk folder.
func (s *Server) junkFolder() string { return s.t.junk }

// TrashFolder is the name of every user's trash folder: "Trash", or the
// personality's.
func (s *Server) TrashFolder() string { return s.t.trash }

// JunkFolder is the name of every user's junk folder.
func (s *Server) JunkFolder() string { return s.t.junk }

// folderFor is where a delivery to rcpt is filed: the junk folder while the
// Junk switch is on, else INBOX.
func (s *Server) folderFor() string {
	if s.faults().Junk {
		return s.junkFolder()
	}
	return inbox
}

// AppendTo stores raw in user's mailbox (INBOX, the junk folder, or any
// other that exists), announcing it to open sessions like a delivery does.
func (s *Server) AppendTo(user, mailbox string, raw []byte, flags []imap.Flag) error {
	a := s.lookup(user)
	if a == nil {
		return fmt.Errorf("mailtest: no user %q", user)
	}
	_, err := s.store(a, mailbox, raw, flags)
	s.changes.notify()
	return err
}

// Junk returns a snapshot of user's junk folder, like Mailbox does of INBOX.
func (s *Server) Junk(user string) ([]Message, error) {
	return s.Folder(user, s.junkFolder())
}

// folders remembers, per account, the mailboxes created over IMAP, so that
// a LIST asking for special-use attributes can be answered (the memory
// backend keeps no special-use attributes of its own).
type folders struct {
	mu      sync.Mutex
	created map[string]bool
}

func (f *folders) add(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.created == nil {
		f.created = make(map[string]bool)
	}
	f.created[name] = true
}

func (f *folders) names() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, 0, len(f.created))
	for n := range f.created {
		out = append(out, n)
	}
	return out
}

// Login remembers the account, for the special-use LIST.
func (x *imapSession) Login(username, password string) error {
	if err := x.SessionIMAP4rev2.Login(username, password); err != nil {
		return err
	}
	x.user = x.srv.lookup(username)
	return x.sessionLimit()
}

func (x *imapSession) Create(name string, options *imap.CreateOptions) error {
	if err := x.SessionIMAP4rev2.Create(name, options); err != nil {
		return err
	}
	if x.user != nil {
		x.user.folders.add(strings.TrimRight(name, "/"))
	}
	return nil
}

// List answers a LIST that asks for special-use attributes (RETURN
// (SPECIAL-USE) or the SPECIAL-USE selection) itself, marking the junk
// folder \Junk unless Options.NoSpecialUse, or the personality's folders;
// Gmail marks them in every LIST. Any other LIST is the memory backend's.
func (x *imapSession) List(w *imapserver.ListWriter, ref string, patterns []string, options *imap.ListOptions) error {
	special := options != nil && (options.ReturnSpecialUse || options.SelectSpecialUse)
	always := x.front && x.traits().specialAlways
	if (!special && !always) || x.user == nil || len(patterns) == 0 {
		return x.SessionIMAP4rev2.List(w, ref, patterns, options)
	}
	if options == nil {
		options = &imap.ListOptions{}
	}
	seen := map[string]bool{}
	var names []string
	for _, n := range append(append([]string{inbox}, x.traits().folders...), x.user.folders.names()...) {
		if !seen[n] {
			seen[n] = true
			names = append(names, n)
		}
	}
	matched := names[:0:0]
	for _, n := range names {
		for _, p := range patterns {
			if imapserver.MatchList(n, '/', ref, p) {
				matched = append(matched, n)
				break
			}
		}
	}
	for _, n := range matched {
		st, err := x.user.mem.Status(n, &imap.StatusOptions{})
		if err != nil || st == nil {
			continue // deleted since
		}
		data := &imap.ListData{Mailbox: n, Delim: '/'}
		if attr, ok := x.traits().special[n]; ok {
			data.Attrs = append(data.Attrs, attr)
		} else if options.SelectSpecialUse {
			continue
		}
		if options.ReturnStatus != nil {
			if data.Status, err = x.user.mem.Status(n, options.ReturnStatus); err != nil {
				continue
			}
		}
		if err := w.WriteList(data); err != nil {
			return err
		}
	}
	return nil
}
