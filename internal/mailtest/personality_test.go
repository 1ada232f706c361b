package mailtest

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// rawIMAP speaks IMAP line by line, for what imapclient cannot send
// (X-GM-RAW, a refused MOVE it would emulate) or hides (the server's text).
type rawIMAP struct {
	conn net.Conn
	r    *bufio.Reader
	n    int
}

func rawLogin(t *testing.T, s *Server, user, pw string) *rawIMAP {
	t.Helper()
	conn, err := net.DialTimeout("tcp", s.IMAPAddr(), wait)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	x := &rawIMAP{conn: conn, r: bufio.NewReader(conn)}
	require.NoError(t, conn.SetDeadline(time.Now().Add(10*time.Second)))
	_, err = x.r.ReadString('\n') // greeting
	require.NoError(t, err)
	_, st := x.cmd(t, fmt.Sprintf("LOGIN %q %q", user, pw))
	require.True(t, strings.HasPrefix(st, "OK"), st)
	return x
}

// cmd sends one command and returns the untagged lines and the tagged
// status ("OK ...", "NO ...", "BAD ...").
func (x *rawIMAP) cmd(t *testing.T, line string) (untagged []string, status string) {
	t.Helper()
	x.n++
	tag := fmt.Sprintf("r%d", x.n)
	_, err := fmt.Fprintf(x.conn, "%s %s\r\n", tag, line)
	require.NoError(t, err)
	for {
		l, err := x.r.ReadString('\n')
		require.NoError(t, err, "reading the answer to %q", line)
		l = strings.TrimRight(l, "\r\n")
		if strings.HasPrefix(l, tag+" ") {
			return untagged, strings.TrimPrefix(l, tag+" ")
		}
		untagged = append(untagged, l)
	}
}

func capsLine(lines []string) []string {
	for _, l := range lines {
		if strings.HasPrefix(l, "* CAPABILITY ") {
			return strings.Fields(strings.TrimPrefix(l, "* CAPABILITY "))
		}
	}
	return nil
}

// searchUIDs answers a UID SEARCH through raw, as a list of numbers.
func searchUIDs(t *testing.T, x *rawIMAP, criteria string) []string {
	t.Helper()
	lines, st := x.cmd(t, "UID SEARCH "+criteria)
	require.True(t, strings.HasPrefix(st, "OK"), "UID SEARCH %s: %s", criteria, st)
	for _, l := range lines {
		if f := strings.Fields(l); len(f) >= 2 && f[1] == "SEARCH" {
			return f[2:]
		}
	}
	return nil
}

func probeMessage(subject, token string) []byte {
	return []byte("From: <" + alice + ">\r\nTo: <" + alice + ">\r\nSubject: " + subject +
		"\r\nX-Emailqos-Token: " + token + "\r\nMessage-ID: <" + token + "@a.test>\r\n\r\nprobe\r\n")
}

func subjects(msgs []Message) []string {
	var out []string
	for _, m := range msgs {
		for _, l := range strings.Split(string(m.Raw), "\r\n") {
			if s, ok := strings.CutPrefix(l, "Subject: "); ok {
				out = append(out, s)
			}
		}
	}
	return out
}

func folder(t *testing.T, s *Server, name string) []string {
	t.Helper()
	msgs, err := s.Folder(alice, name)
	require.NoError(t, err)
	return subjects(msgs)
}

func TestPersonalityUnknown(t *testing.T) {
	_, err := Start(Options{Personality: "hotmail"})
	require.ErrorContains(t, err, `unknown personality "hotmail"`)
}

func TestGmailCapabilitiesAndFolders(t *testing.T) {
	s := start(t, Options{Personality: PersonalityGmail})
	assert.Equal(t, GmailSpam, s.JunkFolder())
	assert.Equal(t, GmailTrash, s.TrashFolder())
	x := rawLogin(t, s, alice, alicePW)
	lines, _ := x.cmd(t, "CAPABILITY")
	caps := capsLine(lines)
	for _, c := range []string{"IMAP4rev1", "X-GM-EXT-1", "UIDPLUS", "MOVE", "IDLE", "SPECIAL-USE"} {
		assert.Contains(t, caps, c)
	}
	// Every LIST carries the special-use attributes, asked or not.
	lines, st := x.cmd(t, `LIST "" "*"`)
	require.True(t, strings.HasPrefix(st, "OK"), st)
	list := strings.Join(lines, "\n")
	assert.Contains(t, list, `\All) "/" "[Gmail]/All Mail"`)
	assert.Contains(t, list, `\Junk) "/" "[Gmail]/Spam"`)
	assert.Contains(t, list, `\Trash) "/" "[Gmail]/Trash"`)
	assert.NotContains(t, list, `"Junk"`)
}

func TestGmailDeletesByArchiving(t *testing.T) {
	s := start(t, Options{Personality: PersonalityGmail})
	require.NoError(t, s.Append(alice, testMessage("user-kept"), nil))
	require.NoError(t, s.Append(alice, testMessage("user-expunged"), nil))
	sendAs(t, s, plain, sasl.NewPlainClient("", alice, alicePW), alice, probeMessage("probe", "tok1"))
	waitMessages(t, s, alice, 3)
	assert.ElementsMatch(t, []string{"user-kept", "user-expunged", "probe"}, folder(t, s, GmailAllMail),
		"All Mail shows every message")

	c := loginIMAP(t, s, plain, alice, alicePW, nil)
	// Expunged from INBOX: archived, so still in All Mail.
	require.NoError(t, c.Store(imap.UIDSetNum(2), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close())
	require.NoError(t, c.UIDExpunge(imap.UIDSetNum(2)).Close())
	assert.ElementsMatch(t, []string{"user-kept", "probe"}, folder(t, s, "INBOX"))
	assert.ElementsMatch(t, []string{"user-kept", "user-expunged", "probe"}, folder(t, s, GmailAllMail))

	// Moved to Trash: out of INBOX and All Mail; expunged there: gone.
	_, err := c.Move(imap.UIDSetNum(3), GmailTrash).Wait()
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{"user-kept"}, folder(t, s, "INBOX"))
	assert.ElementsMatch(t, []string{"user-kept", "user-expunged"}, folder(t, s, GmailAllMail))
	assert.ElementsMatch(t, []string{"probe"}, folder(t, s, GmailTrash))
	_, err = c.Select(GmailTrash, nil).Wait()
	require.NoError(t, err)
	require.NoError(t, c.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close())
	require.NoError(t, c.Expunge().Close())
	assert.Empty(t, folder(t, s, GmailTrash))
	assert.ElementsMatch(t, []string{"user-kept", "user-expunged"}, folder(t, s, GmailAllMail))

	// Expunged from All Mail: moved to Trash, and out of INBOX.
	_, err = c.Select(GmailAllMail, nil).Wait()
	require.NoError(t, err)
	uids, err := c.UIDSearch(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: "user-kept"}}}, nil).Wait()
	require.NoError(t, err)
	require.Len(t, uids.AllUIDs(), 1)
	require.NoError(t, c.Store(imap.UIDSetNum(uids.AllUIDs()...), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close())
	require.NoError(t, c.Expunge().Close())
	assert.Empty(t, folder(t, s, "INBOX"))
	assert.ElementsMatch(t, []string{"user-expunged"}, folder(t, s, GmailAllMail))
	assert.ElementsMatch(t, []string{"user-kept"}, folder(t, s, GmailTrash))
}

func TestGmailCopyToTrashLeavesAllMail(t *testing.T) {
	s := start(t, Options{Personality: PersonalityGmail})
	require.NoError(t, s.Append(alice, probeMessage("probe", "tok2"), nil))
	c := loginIMAP(t, s, plain, alice, alicePW, nil)
	_, err := c.Copy(imap.UIDSetNum(1), GmailTrash).Wait()
	require.NoError(t, err)
	assert.Empty(t, folder(t, s, GmailAllMail), "the Trash label takes it out of All Mail")
	assert.Equal(t, []string{"probe"}, folder(t, s, "INBOX"), "until INBOX's copy is expunged")
	require.NoError(t, c.Store(imap.UIDSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close())
	require.NoError(t, c.UIDExpunge(imap.UIDSetNum(1)).Close())
	assert.Empty(t, folder(t, s, "INBOX"))
	assert.Empty(t, folder(t, s, GmailAllMail), "nothing archived")
}

func TestGmailHeaderSearchAndTabs(t *testing.T) {
	s := start(t, Options{Personality: PersonalityGmail, Category: func(_ string, msg []byte) string {
		if strings.Contains(string(msg), "Subject: sale") {
			return "promotions"
		}
		return ""
	}})
	require.NoError(t, s.Append(alice, probeMessage("probe", "tok3"), nil))
	require.NoError(t, s.Append(alice, probeMessage("sale", "tok4"), nil))
	x := rawLogin(t, s, alice, alicePW)
	_, st := x.cmd(t, "SELECT INBOX")
	require.True(t, strings.HasPrefix(st, "OK"), st)

	assert.Empty(t, searchUIDs(t, x, "HEADER X-Emailqos-Token tok3"), "custom headers are not searchable")
	assert.Equal(t, []string{"1", "2"}, searchUIDs(t, x, "NOT HEADER X-Emailqos-Token tok3"))
	assert.Equal(t, []string{"1"}, searchUIDs(t, x, "HEADER Message-ID tok3@a.test"))
	assert.Equal(t, []string{"1"}, searchUIDs(t, x, "SUBJECT probe"))
	assert.Equal(t, []string{"2"}, searchUIDs(t, x, `X-GM-RAW "category:promotions"`))
	assert.Empty(t, searchUIDs(t, x, `X-GM-RAW "category:social"`))
	assert.Equal(t, []string{"1"}, searchUIDs(t, x, `X-GM-RAW "category:primary"`), "filed in no other category")
	assert.Equal(t, []string{"2"}, searchUIDs(t, x, `UID 1:* X-GM-RAW "category:promotions"`))
	_, st = x.cmd(t, `SELECT "[Gmail]/All Mail"`)
	require.True(t, strings.HasPrefix(st, "OK"), st)
	assert.Equal(t, []string{"2"}, searchUIDs(t, x, `X-GM-RAW "category:promotions"`))
}

func TestGmailSessionCap(t *testing.T) {
	s := start(t, Options{Personality: PersonalityGmail})
	var clients []*imapclient.Client
	for range gmailMaxSessions {
		c, err := dialIMAP(t, s, plain, nil)
		require.NoError(t, err)
		require.NoError(t, c.Login(alice, alicePW).Wait())
		clients = append(clients, c)
	}
	assert.Equal(t, gmailMaxSessions, s.Sessions(alice))
	c, err := dialIMAP(t, s, plain, nil)
	require.NoError(t, err)
	err = c.Login(alice, alicePW).Wait()
	var ie *imap.Error
	require.ErrorAs(t, err, &ie)
	assert.Equal(t, imap.StatusResponseTypeNo, ie.Type)
	assert.Equal(t, "Too many simultaneous connections. (Failure)", ie.Text)
	// Another user is not affected; a logout frees a place.
	other, err := dialIMAP(t, s, plain, nil)
	require.NoError(t, err)
	require.NoError(t, other.Login(bobUser, bobPW).Wait())
	require.NoError(t, clients[0].Logout().Wait())
	require.Eventually(t, func() bool { return s.Sessions(alice) == gmailMaxSessions-1 }, wait, 5*time.Millisecond)
	require.NoError(t, c.Login(alice, alicePW).Wait())
}

func TestSessionCapDovecotWording(t *testing.T) {
	s := start(t, Options{MaxSessions: 2})
	for range 2 {
		loginIMAP(t, s, plain, alice, alicePW, nil)
	}
	c, err := dialIMAP(t, s, plain, nil)
	require.NoError(t, err)
	err = c.Login(alice, alicePW).Wait()
	var ie *imap.Error
	require.ErrorAs(t, err, &ie)
	assert.Equal(t, imap.ResponseCodeLimit, ie.Code)
	assert.Contains(t, ie.Text, "Maximum number of connections")
	// A wrong password is still a wrong password, not a limit.
	err = c.Login(alice, "wrong").Wait()
	require.ErrorAs(t, err, &ie)
	assert.NotEqual(t, imap.ResponseCodeLimit, ie.Code)
}

func TestM365(t *testing.T) {
	s := start(t, Options{Personality: PersonalityM365, SearchLag: 400 * time.Millisecond})
	assert.Equal(t, M365Junk, s.JunkFolder())
	assert.Equal(t, M365Trash, s.TrashFolder())
	x := rawLogin(t, s, alice, alicePW)
	lines, _ := x.cmd(t, "CAPABILITY")
	caps := capsLine(lines)
	for _, c := range []string{"IMAP4", "IMAP4rev1", "UIDPLUS", "MOVE", "IDLE", "NAMESPACE", "CHILDREN", "LITERAL+", "SASL-IR", "UNSELECT"} {
		assert.Contains(t, caps, c)
	}
	for _, c := range []string{"ESEARCH", "SPECIAL-USE", "LIST-EXTENDED", "IMAP4rev2", "ENABLE", "LITERAL-", "UTF8=ACCEPT"} {
		assert.NotContains(t, caps, c)
	}
	lines, st := x.cmd(t, `LIST "" "*"`)
	require.True(t, strings.HasPrefix(st, "OK"), st)
	list := strings.Join(lines, "\n")
	assert.Contains(t, list, `"Junk Email"`)
	assert.Contains(t, list, `"Deleted Items"`)
	assert.NotContains(t, list, `\Junk`)
	assert.NotContains(t, list, `\Trash`)

	require.NoError(t, s.Append(alice, testMessage("older"), nil))
	_, st = x.cmd(t, "SELECT INBOX")
	require.True(t, strings.HasPrefix(st, "OK"), st)
	for _, bad := range []string{
		`OR (SUBJECT older FROM alice) ALL`,
		`OR OR SUBJECT a SUBJECT b SUBJECT c`,
		`NOT (SUBJECT a SUBJECT b)`,
	} {
		_, st := x.cmd(t, "UID SEARCH "+bad)
		assert.Equal(t, "BAD Command Argument Error. 11", st, bad)
	}

	// The index lags delivery: a new message is found by SEARCH only
	// SearchLag after it became visible.
	time.Sleep(400 * time.Millisecond)
	assert.Equal(t, []string{"1"}, searchUIDs(t, x, "OR SUBJECT older SUBJECT newer"), "flat OR is fine")
	require.NoError(t, s.Append(alice, testMessage("newer"), nil))
	visible := time.Now()
	assert.Empty(t, searchUIDs(t, x, "SUBJECT newer"))
	lines, _ = x.cmd(t, "UID FETCH 2 (UID)")
	assert.Contains(t, strings.Join(lines, "\n"), "UID 2", "FETCH sees it at once")
	require.Eventually(t, func() bool {
		return len(searchUIDs(t, x, "SUBJECT newer")) == 1
	}, 5*time.Second, 20*time.Millisecond)
	assert.GreaterOrEqual(t, time.Since(visible), 400*time.Millisecond)
}

// idleLatency sends a message to alice while she IDLEs and returns how long
// after it became visible the EXISTS came (or ok=false if none in within).
func idleLatency(t *testing.T, s *Server, visible <-chan time.Time, within time.Duration) (time.Duration, bool) {
	t.Helper()
	exists := make(chan time.Time, 8)
	c := loginIMAP(t, s, plain, alice, alicePW, &imapclient.UnilateralDataHandler{
		Mailbox: func(d *imapclient.UnilateralDataMailbox) {
			if d.NumMessages != nil && *d.NumMessages > 0 {
				exists <- time.Now()
			}
		},
	})
	idle, err := c.Idle()
	require.NoError(t, err)
	defer func() {
		require.NoError(t, idle.Close())
		require.NoError(t, idle.Wait())
	}()
	time.Sleep(50 * time.Millisecond) // the IDLE is registered
	sendAs(t, s, plain, sasl.NewPlainClient("", alice, alicePW), alice, testMessage("idle"))
	at := <-visible
	select {
	case e := <-exists:
		return e.Sub(at), true
	case <-time.After(within):
		return 0, false
	}
}

func visibleChan() (chan time.Time, func(string, time.Time)) {
	ch := make(chan time.Time, 8)
	return ch, func(_ string, at time.Time) { ch <- at }
}

func TestLateIdleHoldsNotifications(t *testing.T) {
	for _, tc := range []struct {
		p    Personality
		hold time.Duration
	}{{PersonalityLateIdle, defaultIdleHold}, {PersonalityM365, 700 * time.Millisecond}} {
		t.Run(string(tc.p), func(t *testing.T) {
			ch, onVisible := visibleChan()
			opts := Options{Personality: tc.p, OnVisible: onVisible}
			if tc.p == PersonalityM365 {
				opts.IdleHold = tc.hold
			}
			s := start(t, opts)
			lat, ok := idleLatency(t, s, ch, 10*time.Second)
			require.True(t, ok, "no EXISTS")
			assert.GreaterOrEqual(t, lat, tc.hold)
		})
	}
}

func TestFakeIdleNeverPushes(t *testing.T) {
	ch, onVisible := visibleChan()
	s := start(t, Options{Personality: PersonalityFakeIdle, OnVisible: onVisible})
	_, ok := idleLatency(t, s, ch, 700*time.Millisecond)
	assert.False(t, ok, "an EXISTS was pushed during IDLE")
	// The next command after DONE shows it.
	c := loginIMAP(t, s, plain, alice, alicePW, nil)
	assert.Equal(t, uint32(1), c.Mailbox().NumMessages)
}

func TestEarlyExistsBefore250(t *testing.T) {
	var (
		mu      sync.Mutex
		visible time.Time
	)
	s := start(t, Options{Personality: PersonalityEarlyExists,
		OnVisible: func(_ string, at time.Time) { mu.Lock(); visible = at; mu.Unlock() }})
	c := mustSMTP(t, s, plain)
	require.NoError(t, c.Auth(sasl.NewPlainClient("", alice, alicePW)))
	require.NoError(t, submit(c, alice, alice, testMessage("early")))
	got250 := time.Now()
	mu.Lock()
	at := visible
	mu.Unlock()
	require.False(t, at.IsZero(), "not visible when the 250 came")
	assert.True(t, at.Before(got250))
	msgs, err := s.Mailbox(alice)
	require.NoError(t, err)
	assert.Len(t, msgs, 1)
	require.NoError(t, c.Quit())
}

func TestNoUIDPlusAndNoMove(t *testing.T) {
	for _, tc := range []struct {
		p       Personality
		uidPlus bool
	}{{PersonalityNoUIDPlus, false}, {PersonalityNoMove, true}} {
		t.Run(string(tc.p), func(t *testing.T) {
			s := start(t, Options{Personality: tc.p})
			require.NoError(t, s.Append(alice, testMessage("one"), nil))
			require.NoError(t, s.Append(alice, testMessage("two"), nil))
			x := rawLogin(t, s, alice, alicePW)
			lines, _ := x.cmd(t, "CAPABILITY")
			caps := capsLine(lines)
			assert.NotContains(t, caps, "MOVE")
			assert.Equal(t, tc.uidPlus, contains(caps, "UIDPLUS"))
			_, st := x.cmd(t, "SELECT INBOX")
			require.True(t, strings.HasPrefix(st, "OK"), st)
			_, st = x.cmd(t, "UID MOVE 1 Trash")
			assert.True(t, strings.HasPrefix(st, "BAD"), st)
			assert.Equal(t, []string{"one", "two"}, folder(t, s, "INBOX"), "MOVE moved nothing")
			_, st = x.cmd(t, "UID COPY 1 Trash")
			assert.True(t, strings.HasPrefix(st, "OK"), st)
			assert.Equal(t, tc.uidPlus, strings.Contains(st, "COPYUID"), st)
			_, st = x.cmd(t, "UID STORE 1:2 +FLAGS.SILENT (\\Deleted)")
			require.True(t, strings.HasPrefix(st, "OK"), st)
			_, st = x.cmd(t, "UID EXPUNGE 1")
			if tc.uidPlus {
				assert.True(t, strings.HasPrefix(st, "OK"), st)
				assert.Equal(t, []string{"two"}, folder(t, s, "INBOX"))
			} else {
				assert.True(t, strings.HasPrefix(st, "BAD"), st)
				assert.Equal(t, []string{"one", "two"}, folder(t, s, "INBOX"), "UID EXPUNGE expunged nothing")
			}
			_, st = x.cmd(t, "APPEND INBOX {5+}\r\nthree")
			assert.True(t, strings.HasPrefix(st, "OK"), st)
			assert.Equal(t, tc.uidPlus, strings.Contains(st, "APPENDUID"), st)
		})
	}
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func TestNoHeaderSearch(t *testing.T) {
	s := start(t, Options{Personality: PersonalityNoHeaderSearch})
	require.NoError(t, s.Append(alice, probeMessage("probe", "tok5"), nil))
	x := rawLogin(t, s, alice, alicePW)
	lines, _ := x.cmd(t, "CAPABILITY")
	assert.Contains(t, capsLine(lines), "IMAP4rev2", "an otherwise ordinary server")
	_, st := x.cmd(t, "SELECT INBOX")
	require.True(t, strings.HasPrefix(st, "OK"), st)
	assert.Empty(t, searchUIDs(t, x, "HEADER X-Emailqos-Token tok5"))
	assert.Empty(t, searchUIDs(t, x, "OR HEADER X-Emailqos-Token tok5 HEADER X-Other x"))
	assert.Equal(t, []string{"1"}, searchUIDs(t, x, "OR HEADER X-Emailqos-Token tok5 SUBJECT probe"))
	lines, st = x.cmd(t, "UID FETCH 1 (BODY.PEEK[HEADER.FIELDS (X-Emailqos-Token)])")
	require.True(t, strings.HasPrefix(st, "OK"), st)
	assert.Contains(t, strings.Join(lines, "\n"), "X-Emailqos-Token: tok5", "fetching the field works")
}
