package probe

import (
	"context"
	"encoding/base64"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/emailqos/emailqosreceiver/internal/mailtest"
	"github.com/emailqos/emailqosreceiver/internal/steps"
)

// gmailWithTabs starts the Gmail stand-in filing every delivery in the tab
// held by tab ("" is Primary).
func gmailWithTabs(t *testing.T, opts mailtest.Options) (*mailtest.Server, *atomic.Value) {
	var tab atomic.Value
	tab.Store("")
	opts.Personality = mailtest.PersonalityGmail
	opts.DeliveryDelay = 20 * time.Millisecond
	opts.Category = func(string, []byte) string { return tab.Load().(string) }
	return startMail(t, opts), &tab
}

// gmailTarget is a round trip of alice's Gmail mailbox, its tab lookup on
// or off, with no timed poll during the wait (so that its command count
// is the same from run to run).
func gmailTarget(srv *mailtest.Server, tabs bool) *Target {
	a := account(srv, "gmail", alice, "alice-pw", "idle")
	a.GmailTabs = tabs
	tg := target(a, a)
	tg.PollInterval = 30 * time.Second
	tg.DeliveryTimeout, tg.Timeout = 20*time.Second, 30*time.Second
	return tg
}

// Each tab, and Primary, end to end through the engine: the placement is
// the tab, the lookup costs one login and its commands, and the probe is
// removed afterwards (nowhere in INBOX nor All Mail).
func TestGmailTabsPlacement(t *testing.T) {
	srv, tab := gmailWithTabs(t, mailtest.Options{})
	off := Run(context.Background(), gmailTarget(srv, false), nil)
	require.NoError(t, off.Err)
	for i, name := range []string{"", PlacementPromotions, PlacementSocial, PlacementUpdates, PlacementForums} {
		t.Run("tab="+name, func(t *testing.T) {
			tab.Store(name)
			logins := srv.Logins(alice)
			r := Run(context.Background(), gmailTarget(srv, true), nil)
			require.NoError(t, r.Err)
			assert.Equal(t, steps.CodeOK, r.Code)
			assert.True(t, r.Delivered)
			want := name
			if name == "" {
				want = PlacementInbox
			}
			assert.Equal(t, want, r.Placement)
			assert.Equal(t, 2, srv.Logins(alice)-logins, "the probe's session and the lookup's")
			// LOGIN, EXAMINE, the searches up to the tab (Primary is
			// asked for first), LOGOUT.
			assert.Equal(t, off.Commands+3+i+1, r.Commands)
			assert.NotContains(t, stepNames(r), "imap.tabs", "not a timed step")
			inbox, err := srv.Mailbox(alice)
			require.NoError(t, err)
			assert.Empty(t, inbox, "probe removed after the lookup")
			all, err := srv.Folder(alice, mailtest.GmailAllMail)
			require.NoError(t, err)
			assert.Empty(t, all, "nothing archived")
		})
	}
}

// A transit into the Gmail mailbox reads the receiver's tab.
func TestGmailTabsTransit(t *testing.T) {
	srv, tab := gmailWithTabs(t, mailtest.Options{})
	tab.Store(PlacementSocial)
	tg := gmailTarget(srv, true)
	tg = target(account(srv, "b", bob, "bob-pw", "idle"), tg.Receiver)
	r := Run(context.Background(), tg, nil)
	require.NoError(t, r.Err)
	assert.Equal(t, PlacementSocial, r.Placement)
}

// The lookup reads only: a kept probe has the flags it arrived with.
func TestGmailTabsReadOnly(t *testing.T) {
	srv, tab := gmailWithTabs(t, mailtest.Options{})
	tab.Store(PlacementPromotions)
	tg := gmailTarget(srv, true)
	tg.Cleanup = CleanupKeep
	r := Run(context.Background(), tg, nil)
	require.NoError(t, r.Err)
	assert.Equal(t, PlacementPromotions, r.Placement)
	inbox, err := srv.Mailbox(alice)
	require.NoError(t, err)
	require.Len(t, inbox, 1)
	assert.NotContains(t, inbox[0].Flags, imap.FlagSeen)
	assert.Empty(t, inbox[0].Flags)
}

// Off (the default), or on a server without X-GM-EXT-1: no second login,
// no extra command, placement inbox.
func TestGmailTabsNotLookedUp(t *testing.T) {
	t.Run("off", func(t *testing.T) {
		srv, tab := gmailWithTabs(t, mailtest.Options{})
		tab.Store(PlacementPromotions)
		r := Run(context.Background(), gmailTarget(srv, false), nil)
		require.NoError(t, r.Err)
		assert.Equal(t, PlacementInbox, r.Placement)
		assert.Equal(t, 1, srv.Logins(alice))
	})
	t.Run("not gmail", func(t *testing.T) {
		srv := startMail(t, mailtest.Options{DeliveryDelay: 20 * time.Millisecond})
		off := Run(context.Background(), gmailTarget(srv, false), nil)
		require.NoError(t, off.Err)
		r := Run(context.Background(), gmailTarget(srv, true), nil)
		require.NoError(t, r.Err)
		assert.Equal(t, PlacementInbox, r.Placement)
		assert.Equal(t, 2, srv.Logins(alice), "one per probe")
		assert.Equal(t, off.Commands, r.Commands)
	})
}

// A lookup that fails (the server refuses its login: the account's session
// cap; no category names the probe) or cannot start (every max_sessions
// slot taken) leaves the placement inbox and the probe OK, and is logged at
// warn once per account.
func TestGmailTabsLookupFails(t *testing.T) {
	for _, tc := range []struct {
		name        string
		tab         string
		serverCap   int
		maxSessions int
		want        string
	}{
		{"login refused", PlacementUpdates, 1, 0, "Too many simultaneous connections"},
		{"no free session", PlacementUpdates, 0, 1, "max_sessions"},
		// Gmail's search has not categorised the probe: not Primary.
		{"uncategorised", "unindexed", 0, 0, "has not categorised"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, tab := gmailWithTabs(t, mailtest.Options{MaxSessions: tc.serverCap})
			tab.Store(tc.tab)
			core, logs := observer.New(zap.DebugLevel)
			tg := gmailTarget(srv, true)
			tg.Receiver.MaxSessions = tc.maxSessions
			for range 2 {
				logins := srv.Logins(alice)
				r := Run(context.Background(), tg, zap.New(core))
				require.NoError(t, r.Err)
				assert.Equal(t, steps.CodeOK, r.Code)
				assert.Equal(t, PlacementInbox, r.Placement)
				if tc.maxSessions > 0 {
					assert.Equal(t, 1, srv.Logins(alice)-logins, "no session for the lookup: not tried")
				}
				inbox, err := srv.Mailbox(alice)
				require.NoError(t, err)
				assert.Empty(t, inbox, "cleaned up")
			}
			warns := logs.FilterLevelExact(zap.WarnLevel).FilterMessageSnippet("Gmail tab").All()
			require.Len(t, warns, 1, "once per account")
			assert.Contains(t, warnText(warns[0]), tc.want)
			assert.Len(t, logs.FilterLevelExact(zap.DebugLevel).FilterMessageSnippet("Gmail tab").All(), 1, "then at debug")
			for _, e := range logs.All() {
				assert.NotContains(t, warnText(e), "alice-pw")
			}
		})
	}
}

func warnText(e observer.LoggedEntry) string {
	var b strings.Builder
	b.WriteString(e.Message)
	for k, v := range e.ContextMap() {
		b.WriteString(" " + k + "=")
		if s, ok := v.(string); ok {
			b.WriteString(s)
		} else {
			b.WriteString(strings.TrimSpace(strings.ReplaceAll(zapString(v), "\n", " ")))
		}
	}
	return b.String()
}

func zapString(v any) string {
	if s, ok := v.(interface{ String() string }); ok {
		return s.String()
	}
	if e, ok := v.(error); ok {
		return e.Error()
	}
	return ""
}

// OAuth sign-in for the lookup too, with the token kept out of the
// transcript, which shows the lookup's read-only conversation.
func TestGmailTabsOAuthTranscript(t *testing.T) {
	const token = "ya29.tab-lookup-token"
	srv, tab := gmailWithTabs(t, mailtest.Options{BearerCheck: func(_, tok string) bool { return tok == token }})
	tab.Store(PlacementForums)
	tg := gmailTarget(srv, true)
	tg.Receiver.Password = ""
	tg.Receiver.Token = func(context.Context) (string, error) { return token, nil }
	tg.Transcript = true
	r := Run(context.Background(), tg, nil)
	require.NoError(t, r.Err)
	assert.Equal(t, PlacementForums, r.Placement)
	text := strings.Join(r.Transcript.Lines(), "\n")
	assert.Contains(t, text, `EXAMINE "INBOX"`)
	assert.Contains(t, text, `X-GM-RAW "category:forums"`)
	assert.Equal(t, 2, strings.Count(text, "AUTHENTICATE XOAUTH2"), "the probe's session and the lookup's")
	xo := base64.StdEncoding.EncodeToString([]byte("user=" + alice + "\x01auth=Bearer " + token + "\x01\x01"))
	assert.NotContains(t, text, token)
	assert.NotContains(t, text, xo)
}
