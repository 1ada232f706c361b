package mailtest

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
)

// Personality makes the IMAP side behave like a given provider or server
// family, in the documented ways a probe has to cope with. Each one names
// its source next to its traits (see traitsOf). The zero value is the
// default server: IMAP4rev2, IDLE that pushes at once, any header
// searchable, EXPUNGE deletes, no session cap.
type Personality string

const (
	// PersonalityGmail is Gmail's IMAP: X-GM-EXT-1, the [Gmail]/ special-use
	// folders marked in every LIST, archive on expunge from INBOX (the
	// message stays in [Gmail]/All Mail), custom headers unsearchable, tabs
	// through X-GM-RAW "category:...", and 15 sessions per account. With
	// Options.BearerCheck its OAuth is XOAUTH2, the mechanism Gmail
	// documents (https://developers.google.com/gmail/imap/xoauth2-protocol;
	// today's Gmail also lists OAUTHBEARER, which the stand-in omits).
	PersonalityGmail Personality = "gmail"
	// PersonalityM365 is Exchange Online: its capability list (no ESEARCH,
	// no SPECIAL-USE), BAD on nested search syntax, a search index that
	// lags delivery (Options.SearchLag), late IDLE notifications
	// (Options.IdleHold), XOAUTH2 as its only OAuth mechanism (with
	// Options.BearerCheck, as Microsoft documents), and the folders
	// "Junk Email" and "Deleted Items" without special-use attributes.
	PersonalityM365 Personality = "m365"
	// PersonalityNoHeaderSearch indexes standard header fields only, like
	// Stalwart: SEARCH HEADER on any other field matches nothing.
	PersonalityNoHeaderSearch Personality = "noheadersearch"
	// PersonalityFakeIdle accepts IDLE and never pushes anything, like
	// Cyrus without idled: changes show at the next command after DONE.
	PersonalityFakeIdle Personality = "fakeidle"
	// PersonalityEarlyExists makes a message visible before the 250 reply
	// to DATA, like maddy's synchronous local delivery.
	PersonalityEarlyExists Personality = "earlyexists"
	// PersonalityLateIdle holds each IDLE notification for Options.IdleHold
	// (default 500 ms), like Dovecot.
	PersonalityLateIdle Personality = "lateidle"
	// PersonalityNoUIDPlus has neither UIDPLUS (no UID EXPUNGE, COPYUID,
	// APPENDUID) nor MOVE: the plain RFC 3501 server.
	PersonalityNoUIDPlus Personality = "nouidplus"
	// PersonalityNoMove has UIDPLUS but not MOVE (RFC 6851).
	PersonalityNoMove Personality = "nomove"
)

// Personalities lists every personality but the default one.
var Personalities = []Personality{
	PersonalityGmail, PersonalityM365, PersonalityNoHeaderSearch, PersonalityFakeIdle,
	PersonalityEarlyExists, PersonalityLateIdle, PersonalityNoUIDPlus, PersonalityNoMove,
}

// Gmail's folders, and the others a personality creates for every user.
const (
	GmailAllMail = "[Gmail]/All Mail"
	GmailSpam    = "[Gmail]/Spam"
	GmailTrash   = "[Gmail]/Trash"
	M365Junk     = "Junk Email"
	M365Trash    = "Deleted Items"
)

// Defaults of the personalities' knobs.
const (
	// Dovecot's hold: src/lib-storage/mailbox-watch.c waits
	// NOTIFY_DELAY_MSECS (500) after a change before notifying, so that
	// several changes make one notification.
	defaultIdleHold = 500 * time.Millisecond
	// Exchange Online gives no figure; a few seconds is what client
	// libraries report for a new message to become searchable.
	defaultSearchLag = 3 * time.Second
	defaultM365Hold  = 2 * time.Second
	// Gmail's help article "Too many simultaneous connections"
	// (mail.google.com/support answer 97150) gave 10 in 2008; today's
	// client vendors (e.g. canarymail.io's help on that error) report 15,
	// the figure the issue asks for.
	gmailMaxSessions = 15
)

// noUID matches no message: UIDs are below 2^32-1 here, as the memory
// backend never gets that far.
const noUID = imap.UID(4294967295)

// traits is what a personality changes, resolved once at Start.
type traits struct {
	p Personality

	caps     imap.CapSet // handed to imapserver
	addCaps  []string    // appended to every capability list by the filter
	dropCaps []string    // removed from it

	folders []string                    // created for every user, besides INBOX
	special map[string]imap.MailboxAttr // special-use attributes
	// specialAlways: every LIST carries them, not only one asking
	// (Gmail's documented behaviour).
	specialAlways bool
	junk, trash   string

	standardHeadersOnly bool
	nestedSearchBAD     bool
	searchLag           time.Duration
	idleHold            time.Duration
	fakeIdle            bool
	earlyExists         bool
	noUIDPlus, noMove   bool
	gmail               bool // archive on expunge, X-GM-RAW, All Mail
	maxSessions         int
	limitErr            func(n int) *imap.Error
}

// rev1Caps is an IMAP4rev1 server with the extensions imapserver's memory
// backend implements.
func rev1Caps(extra ...imap.Cap) imap.CapSet {
	cs := imap.CapSet{
		imap.CapIMAP4rev1:    {},
		imap.CapNamespace:    {},
		imap.CapUIDPlus:      {},
		imap.CapESearch:      {},
		imap.CapListExtended: {},
		imap.CapListStatus:   {},
		imap.CapMove:         {},
		imap.CapStatusSize:   {},
	}
	for _, c := range extra {
		cs[c] = struct{}{}
	}
	return cs
}

func traitsOf(o Options) (traits, error) {
	t := traits{p: o.Personality, junk: defaultJunk, trash: "Trash"}
	if o.JunkFolder != "" {
		t.junk = o.JunkFolder
	}
	switch o.Personality {
	case "":
	case PersonalityGmail:
		// Capabilities and folders: Gmail's IMAP extensions,
		// https://developers.google.com/gmail/imap/imap-extensions (the
		// CAPABILITY example with X-GM-EXT-1; "All LIST responses contain
		// these special-use attributes"). Today's Gmail also lists UIDPLUS,
		// MOVE, ESEARCH and SPECIAL-USE.
		t.caps = rev1Caps(imap.CapSpecialUse, imap.CapChildren, imap.CapLiteralPlus)
		t.addCaps = []string{"X-GM-EXT-1"}
		t.junk, t.trash = GmailSpam, GmailTrash
		t.special = map[string]imap.MailboxAttr{
			GmailAllMail: imap.MailboxAttrAll, GmailSpam: imap.MailboxAttrJunk, GmailTrash: imap.MailboxAttrTrash,
		}
		t.specialAlways = true
		t.gmail = true
		// Custom headers: reported unsearchable on Gmail's IMAP (e.g.
		// mscdex/node-imap#770, "gmail [has] issues with header text
		// searching"); standard ones work.
		t.standardHeadersOnly = true
		t.maxSessions = gmailMaxSessions
		t.limitErr = func(int) *imap.Error {
			// Gmail's wording: "Too many simultaneous connections. (Failure)".
			return &imap.Error{Type: imap.StatusResponseTypeNo, Code: "ALERT", Text: "Too many simultaneous connections. (Failure)"}
		}
	case PersonalityM365:
		// Exchange Online's CAPABILITY after login, as client libraries log
		// it (e.g. jstedfast/MailKit#1139): IMAP4 IMAP4rev1 AUTH=PLAIN
		// AUTH=XOAUTH2 SASL-IR UIDPLUS MOVE ID UNSELECT CHILDREN IDLE
		// NAMESPACE LITERAL+. No ESEARCH, no SPECIAL-USE. imapserver adds
		// SASL-IR, UNSELECT and IDLE itself; the filter removes the rest.
		t.caps = imap.CapSet{
			imap.CapIMAP4rev1: {}, imap.CapUIDPlus: {}, imap.CapMove: {},
			imap.CapNamespace: {}, imap.CapChildren: {}, imap.CapLiteralPlus: {},
		}
		t.addCaps = []string{"IMAP4"}
		t.dropCaps = []string{"LITERAL-", "ENABLE", "UTF8=ACCEPT"}
		t.junk, t.trash = M365Junk, M365Trash
		// BAD on nested search syntax: "BAD Command Argument Error. 11"
		// from outlook.office365.com for nested OR (mscdex/node-imap#830).
		t.nestedSearchBAD = true
		t.searchLag = defaultSearchLag
		t.idleHold = defaultM365Hold
	case PersonalityNoHeaderSearch:
		// Stalwart indexes only the header fields the RFCs define
		// (stalwartlabs/stalwart#501; cypht-org/cypht#1152). Newer
		// releases answer NO "Querying header ... is not supported"
		// (stalwartlabs/stalwart#1953); this stand-in returns nothing,
		// the older and quieter of the two.
		t.standardHeadersOnly = true
	case PersonalityFakeIdle:
		// Cyrus imapd without idled falls back to polling on its
		// imapidlepoll timer; "never pushes" is the worst case of that.
		t.fakeIdle = true
	case PersonalityEarlyExists:
		// maddy delivers to its local storage inside the SMTP transaction,
		// so IMAP shows the message before the client reads 250.
		t.earlyExists = true
	case PersonalityLateIdle:
		t.idleHold = defaultIdleHold
	case PersonalityNoUIDPlus:
		t.caps = rev1Caps()
		delete(t.caps, imap.CapUIDPlus)
		delete(t.caps, imap.CapMove)
		t.noUIDPlus, t.noMove = true, true
	case PersonalityNoMove:
		t.caps = rev1Caps()
		delete(t.caps, imap.CapMove)
		t.noMove = true
	default:
		return t, fmt.Errorf("mailtest: unknown personality %q", o.Personality)
	}
	if o.JunkFolder != "" {
		t.junk = o.JunkFolder
	}
	if o.SearchLag > 0 {
		t.searchLag = o.SearchLag
	}
	if o.IdleHold > 0 {
		t.idleHold = o.IdleHold
	}
	if o.MaxSessions > 0 {
		t.maxSessions = o.MaxSessions
	}
	if t.limitErr == nil {
		t.limitErr = func(n int) *imap.Error {
			// Dovecot's wording (the real-stack run).
			return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeLimit,
				Text: fmt.Sprintf("Maximum number of connections from user+IP exceeded (mail_max_userip_connections=%d)", n)}
		}
	}
	if t.special == nil {
		t.special = map[string]imap.MailboxAttr{}
		if !o.NoSpecialUse && o.Personality != PersonalityM365 {
			t.special[t.junk] = imap.MailboxAttrJunk
		}
	}
	t.folders = []string{t.trash, t.junk}
	if t.gmail {
		t.folders = append(t.folders, GmailAllMail)
	}
	return t, nil
}

// filtered reports whether clients go through the line filter.
func (t *traits) filtered(disableIDLE bool) bool {
	return disableIDLE || len(t.addCaps) > 0 || len(t.dropCaps) > 0 || t.gmail
}

// standardHeaders are the fields a server indexing "the headers the RFCs
// define" searches (RFC 5322 section 3.6 and MIME).
var standardHeaders = map[string]bool{
	"from": true, "sender": true, "reply-to": true, "to": true, "cc": true, "bcc": true,
	"subject": true, "date": true, "message-id": true, "in-reply-to": true, "references": true,
	"comments": true, "keywords": true, "mime-version": true, "content-type": true,
	"return-path": true, "received": true, "list-id": true,
}

// gmail is an account's Gmail state: which All Mail message is the same
// as which INBOX message (the memory backend stores copies, Gmail one
// message with labels), and the tab of each.
type gmailState struct {
	mu         sync.Mutex
	inboxToAll map[imap.UID]imap.UID
	allToInbox map[imap.UID]imap.UID
	category   map[string]map[imap.UID]string // mailbox -> UID -> tab
}

func (g *gmailState) link(inboxUID, allUID imap.UID, category string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.inboxToAll == nil {
		g.inboxToAll = map[imap.UID]imap.UID{}
		g.allToInbox = map[imap.UID]imap.UID{}
		g.category = map[string]map[imap.UID]string{inbox: {}, GmailAllMail: {}}
	}
	g.inboxToAll[inboxUID] = allUID
	g.allToInbox[allUID] = inboxUID
	if category != "" {
		g.category[inbox][inboxUID] = category
		g.category[GmailAllMail][allUID] = category
	}
}

// unlinkAll forgets the All Mail copies given and returns the INBOX UIDs
// they were linked to.
func (g *gmailState) allMailOf(inboxUIDs []imap.UID) []imap.UID {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []imap.UID
	for _, u := range inboxUIDs {
		if a, ok := g.inboxToAll[u]; ok {
			out = append(out, a)
		}
	}
	return out
}

func (g *gmailState) inboxOf(allUIDs []imap.UID) []imap.UID {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []imap.UID
	for _, u := range allUIDs {
		if i, ok := g.allToInbox[u]; ok {
			out = append(out, i)
		}
	}
	return out
}

// categorised lists the messages of mailbox filed in any category but
// Primary.
func (g *gmailState) categorised(mailbox string) []imap.UID {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []imap.UID
	for u := range g.category[mailbox] {
		out = append(out, u)
	}
	return out
}

func (g *gmailState) inCategory(mailbox, tab string) []imap.UID {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []imap.UID
	for u, c := range g.category[mailbox] {
		if c == tab {
			out = append(out, u)
		}
	}
	return out
}

// visibleTimes remembers when each message became visible, per mailbox,
// for the search lag.
type visibleTimes struct {
	mu sync.Mutex
	at map[string]map[imap.UID]time.Time
}

func (v *visibleTimes) add(mailbox string, uid imap.UID, at time.Time, lag time.Duration) {
	if lag <= 0 {
		// Only the search lag reads these times: without one, nothing is
		// kept, so a long test (the soak) does not grow the server.
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.at == nil {
		v.at = map[string]map[imap.UID]time.Time{}
	}
	m := v.at[mailbox]
	if m == nil {
		m = map[imap.UID]time.Time{}
		v.at[mailbox] = m
	}
	// Entries older than the lag can no longer hide a message.
	for u, t := range m {
		if at.Sub(t) > lag {
			delete(m, u)
		}
	}
	m[uid] = at
}

// since returns the UIDs of mailbox visible after t.
func (v *visibleTimes) since(mailbox string, t time.Time) []imap.UID {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []imap.UID
	for u, at := range v.at[mailbox] {
		if at.After(t) {
			out = append(out, u)
		}
	}
	return out
}

// sessionCount caps an account's concurrent IMAP sessions.
type sessionCount struct {
	mu sync.Mutex
	n  int
	// logins counts the sessions ever admitted, to measure logins per
	// collection.
	logins int
}

func (c *sessionCount) acquire(max int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if max > 0 && c.n >= max {
		return false
	}
	c.n++
	c.logins++
	return true
}

func (c *sessionCount) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n--
}

// Sessions is how many IMAP sessions user has logged in right now.
func (s *Server) Sessions(user string) int {
	a := s.lookup(user)
	if a == nil {
		return 0
	}
	a.sessions.mu.Lock()
	defer a.sessions.mu.Unlock()
	return a.sessions.n
}

// Logins is how many IMAP logins of user (LOGIN or AUTHENTICATE) have
// succeeded since the server started (refused ones are not counted).
func (s *Server) Logins(user string) int {
	a := s.lookup(user)
	if a == nil {
		return 0
	}
	a.sessions.mu.Lock()
	defer a.sessions.mu.Unlock()
	return a.sessions.logins
}

// categoryKeyword is the keyword the filter turns X-GM-RAW
// "category:<tab>" into, for the session's Search to resolve; it never
// reaches a message.
const categoryKeyword = "$XMailtestCategory_"

// rewriteGmRaw turns the one X-GM-RAW form the stand-in serves,
// X-GM-RAW "category:<tab>", into a keyword search imapserver parses.
// Gmail's search operators: https://support.google.com/mail/answer/7190
// ("category:" with primary, social, promotions, updates, forums,
// reservations, purchases).
func rewriteGmRaw(line []byte) []byte {
	s := string(line)
	u := strings.ToUpper(s)
	i := strings.Index(u, "X-GM-RAW ")
	if i < 0 {
		return line
	}
	rest := s[i+len("X-GM-RAW "):]
	q := strings.TrimPrefix(rest, "\"")
	j := strings.IndexAny(q, "\" \r\n")
	if j < 0 {
		return line
	}
	term := q[:j]
	if !strings.HasPrefix(strings.ToLower(term), "category:") {
		return line
	}
	tab := strings.ToLower(strings.TrimPrefix(strings.ToLower(term), "category:"))
	end := i + len("X-GM-RAW ") + j
	if strings.HasPrefix(rest, "\"") {
		end += 2 // both quotes
	}
	return []byte(s[:i] + "KEYWORD " + categoryKeyword + tab + s[end:])
}
