package probe

import (
	"context"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/emailqos/emailqosreceiver/internal/imapwatch"
	"github.com/emailqos/emailqosreceiver/internal/mailtest"
	"github.com/emailqos/emailqosreceiver/internal/steps"
)

func TestPlacementJunk(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opts   mailtest.Options
		method imapwatch.Method
	}{
		{"special-use/idle", mailtest.Options{}, "idle"},
		{"special-use-odd-name/poll", mailtest.Options{JunkFolder: "Quarantine"}, "poll"},
		{"by-name/precise", mailtest.Options{JunkFolder: "Spam", NoSpecialUse: true}, "precise"},
		{"by-name-no-idle/auto", mailtest.Options{DisableIDLE: true}, "auto"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Junk = true
			srv := startMail(t, tc.opts)
			folder := tc.opts.JunkFolder
			if folder == "" {
				folder = "Junk"
			}
			userJunk := mailtest.GenerateUserMail(alice, 6, 7, time.Now())
			for _, m := range userJunk {
				require.NoError(t, srv.AppendTo(alice, folder, m.Raw, m.Flags))
			}
			require.NoError(t, srv.Append(alice, []byte("Subject: ham\r\n\r\nx\r\n"), []imap.Flag{imap.FlagDeleted}))
			a := account(srv, "a", alice, "alice-pw", tc.method)
			a.DiscoverJunk = true
			r := Run(context.Background(), target(a, a), nil)
			require.NoError(t, r.Err)
			assert.Equal(t, steps.CodeOK, r.Code)
			assert.Equal(t, PlacementJunk, r.Placement)
			assert.True(t, r.Delivered)
			assert.Equal(t, imapwatch.MethodPoll, r.Method)
			assert.Positive(t, r.Uncertainty)
			assert.Positive(t, r.DeliveryLatency)
			assert.Less(t, r.DeliveryLatency, 5*time.Second)
			assert.Contains(t, stepNames(r), steps.IMAPDelete)

			junk, err := srv.Folder(alice, folder)
			require.NoError(t, err)
			require.Len(t, junk, len(userJunk), "the probe's copy removed, the user's junk kept")
			for i, m := range junk {
				assert.Equal(t, userJunk[i].Raw, m.Raw)
			}
			inbox, err := srv.Mailbox(alice)
			require.NoError(t, err)
			assert.Len(t, inbox, 1, "INBOX untouched")
		})
	}
}

func TestPlacementInboxCost(t *testing.T) {
	run := func(t *testing.T, discover bool, folders []string) Result {
		srv := startMail(t, mailtest.Options{})
		a := account(srv, "a", alice, "alice-pw", "idle")
		a.DiscoverJunk, a.JunkFolders = discover, folders
		tg := target(a, a)
		tg.PollInterval = 30 * time.Second // no STATUS round during the wait
		tg.DeliveryTimeout, tg.Timeout = 40*time.Second, 50*time.Second
		r := Run(context.Background(), tg, nil)
		require.NoError(t, r.Err)
		assert.Equal(t, PlacementInbox, r.Placement)
		return r
	}
	off := run(t, false, nil)
	named := run(t, false, []string{"Junk"})
	found := run(t, true, nil)
	t.Logf("IMAP commands per probe delivered to INBOX: %d without placement, %d with junk_folders [Junk], %d with discovery",
		off.Commands, named.Commands, found.Commands)
	assert.Equal(t, off.Commands+1, named.Commands, "one STATUS")
	assert.Equal(t, off.Commands+2, found.Commands, "one LIST and one STATUS")
	assert.LessOrEqual(t, found.Commands, 12)
}

func TestPlacementMissing(t *testing.T) {
	srv := startMail(t, mailtest.Options{Blackhole: true})
	a := account(srv, "a", alice, "alice-pw", "idle")
	a.DiscoverJunk = true
	tg := target(a, a)
	tg.DeliveryTimeout = 1500 * time.Millisecond
	r := Run(context.Background(), tg, nil)
	assert.Equal(t, steps.CodeSearch, r.Code)
	assert.Equal(t, steps.TypeNotFound, r.ErrorType)
	assert.Equal(t, PlacementMissing, r.Placement)
	assert.False(t, r.Delivered)
}

func TestPlacementEmptyBeforeTheWait(t *testing.T) {
	srv := startMail(t, mailtest.Options{RejectRcpt: true})
	a := account(srv, "a", alice, "alice-pw", "idle")
	a.DiscoverJunk = true
	r := Run(context.Background(), target(a, a), nil)
	assert.Equal(t, steps.CodeSMTPSend, r.Code)
	assert.Empty(t, r.Placement)
}

func TestPlacementMissingJunkFolder(t *testing.T) {
	srv := startMail(t, mailtest.Options{})
	a := account(srv, "a", alice, "alice-pw", "idle")
	a.JunkFolders = []string{"Nope"}
	r := Run(context.Background(), target(a, a), nil)
	require.NoError(t, r.Err)
	assert.Equal(t, PlacementInbox, r.Placement)
}

func TestPlacementMoveFromJunk(t *testing.T) {
	srv := startMail(t, mailtest.Options{Junk: true})
	a := account(srv, "a", alice, "alice-pw", "idle")
	a.DiscoverJunk = true
	tg := target(a, a)
	tg.Cleanup, tg.CleanupFolder = CleanupMove, "Trash"
	r := Run(context.Background(), tg, nil)
	require.NoError(t, r.Err)
	assert.Equal(t, PlacementJunk, r.Placement)
	trash, err := srv.Folder(alice, "Trash")
	require.NoError(t, err)
	assert.Len(t, trash, 1)
	junk, err := srv.Junk(alice)
	require.NoError(t, err)
	assert.Empty(t, junk)
}
