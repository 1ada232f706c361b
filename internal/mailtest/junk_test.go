package mailtest

import (
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-sasl"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// junkAttrs lists the mailboxes a LIST reports, with their attributes.
func junkAttrs(t *testing.T, s *Server, opts *imap.ListOptions) map[string][]imap.MailboxAttr {
	t.Helper()
	c := loginIMAP(t, s, plain, alice, alicePW, nil)
	list, err := c.List("", "*", opts).Collect()
	require.NoError(t, err)
	out := map[string][]imap.MailboxAttr{}
	for _, d := range list {
		out[d.Mailbox] = d.Attrs
	}
	return out
}

func TestJunkFolderSpecialUse(t *testing.T) {
	s := start(t, Options{})
	withSU := junkAttrs(t, s, &imap.ListOptions{ReturnSpecialUse: true})
	assert.Contains(t, withSU["Junk"], imap.MailboxAttrJunk)
	assert.Contains(t, withSU, "INBOX")
	assert.Contains(t, withSU, "Trash")
	assert.NotContains(t, withSU["INBOX"], imap.MailboxAttrJunk)

	only := junkAttrs(t, s, &imap.ListOptions{SelectSpecialUse: true})
	assert.Len(t, only, 1, "SELECT SPECIAL-USE lists only the junk folder")
	assert.Contains(t, only, "Junk")

	plainList := junkAttrs(t, s, nil)
	assert.Contains(t, plainList, "Junk", "the folder exists either way")
}

func TestJunkFolderByNameOnly(t *testing.T) {
	s := start(t, Options{JunkFolder: "Spam", NoSpecialUse: true})
	got := junkAttrs(t, s, &imap.ListOptions{ReturnSpecialUse: true})
	require.Contains(t, got, "Spam")
	assert.NotContains(t, got["Spam"], imap.MailboxAttrJunk)
	assert.NotContains(t, got, "Junk")
}

func TestJunkFiling(t *testing.T) {
	s := start(t, Options{})
	s.SetFaults(Faults{Junk: true})
	sendAs(t, s, plain, sasl.NewPlainClient("", alice, alicePW), alice, testMessage("spammy"))
	var junk []Message
	require.Eventually(t, func() bool {
		var err error
		junk, err = s.Junk(alice)
		require.NoError(t, err)
		return len(junk) == 1
	}, wait, 5*time.Millisecond)
	assert.Contains(t, string(junk[0].Raw), "Subject: spammy")
	inboxMsgs, err := s.Mailbox(alice)
	require.NoError(t, err)
	assert.Empty(t, inboxMsgs, "filed into junk, not INBOX")

	s.SetFaults(Faults{})
	sendAs(t, s, plain, sasl.NewPlainClient("", alice, alicePW), alice, testMessage("ham"))
	waitMessages(t, s, alice, 1)

	require.NoError(t, s.AppendTo(alice, "Junk", testMessage("user junk"), []imap.Flag{imap.FlagSeen}))
	junk, err = s.Folder(alice, "Junk")
	require.NoError(t, err)
	assert.Len(t, junk, 2)
	assert.Error(t, s.AppendTo(alice, "Nowhere", testMessage("x"), nil))
}

func TestCreatedFoldersInSpecialUseList(t *testing.T) {
	s := start(t, Options{})
	c := loginIMAP(t, s, plain, alice, alicePW, nil)
	require.NoError(t, c.Create("Archive", nil).Wait())
	list, err := c.List("", "*", &imap.ListOptions{ReturnSpecialUse: true}).Collect()
	require.NoError(t, err)
	var names []string
	for _, d := range list {
		names = append(names, d.Mailbox)
	}
	assert.ElementsMatch(t, []string{"INBOX", "Trash", "Junk", "Archive"}, names)
}
