package probe

import (
	"bytes"
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/emailqos/emailqosreceiver/internal/imapwatch"
	"github.com/emailqos/emailqosreceiver/internal/mailtest"
	"github.com/emailqos/emailqosreceiver/internal/probemsg"
	"github.com/emailqos/emailqosreceiver/internal/saslx"
	"github.com/emailqos/emailqosreceiver/internal/steps"
)

// Mailbox hygiene in the junk folders: late probes filed as spam and
// orphans there are cleaned up like in the mailbox, and user mail there is
// never touched.

const junk = "Junk"

// snapshotFolder is snapshot of another folder than INBOX.
func snapshotFolder(t *testing.T, srv *mailtest.Server, user, folder string) map[imap.UID]mailtest.Message {
	t.Helper()
	msgs, err := srv.Folder(user, folder)
	require.NoError(t, err)
	out := make(map[imap.UID]mailtest.Message, len(msgs))
	for _, m := range msgs {
		slices.Sort(m.Flags)
		out[m.UID] = m
	}
	return out
}

// fillJunk files ordinary mail into user's junk folder: look-alike subjects,
// forged probe headers, tokens in bodies, flags including \Deleted.
func fillJunk(t *testing.T, srv *mailtest.Server, user string) {
	t.Helper()
	for _, m := range mailtest.GenerateUserMail(user, 30, 11, time.Now()) {
		require.NoError(t, srv.AppendTo(user, junk, m.Raw, m.Flags))
	}
	require.NoError(t, srv.AppendTo(user, junk, []byte("Subject: spam\r\n\r\nflagged for deletion by the user\r\n"), []imap.Flag{imap.FlagDeleted}))
}

// waitIn waits until a message carrying token is in user's folder.
func waitIn(t *testing.T, srv *mailtest.Server, user, folder, token string) {
	t.Helper()
	require.Eventually(t, func() bool {
		msgs, err := srv.Folder(user, folder)
		require.NoError(t, err)
		for _, m := range msgs {
			if tokenOf(m.Raw) == token {
				return true
			}
		}
		return false
	}, 5*time.Second, 5*time.Millisecond, "message %s never landed in %s", token, folder)
}

// plainExpunge matches a client's EXPUNGE command (not UID EXPUNGE).
var plainExpunge = regexp.MustCompile(`C: \S+ EXPUNGE`)

func transcriptOf(t *testing.T, r Result) string {
	t.Helper()
	require.NotNil(t, r.Transcript)
	return strings.Join(r.Transcript.Lines(), "\n")
}

func TestLateProbeInJunkIsFoundCountedAndRemoved(t *testing.T) {
	h := newHolder()
	h.hold[alice] = map[int]bool{1: true}
	srv := startHeld(t, h)
	a := account(srv, "a", alice, "alice-pw", "idle")
	a.DiscoverJunk = true
	tg := hygieneTarget(a, a)
	tg.Transcript = true
	fillJunk(t, srv, alice)
	require.NoError(t, srv.Append(alice, []byte("From: x@y.test\r\nSubject: keep me\r\n\r\nuser mail\r\n"), []imap.Flag{imap.FlagDeleted}))
	userJunk, user := snapshotFolder(t, srv, alice, junk), snapshot(t, srv, alice)

	// The first probe is filed as spam, after its wait.
	srv.SetFaults(mailtest.Faults{Junk: true})
	r1 := Run(context.Background(), tg, nil)
	require.Equal(t, steps.CodeSearch, r1.Code, "error: %v", r1.Err)
	assert.Equal(t, PlacementMissing, r1.Placement)
	late := h.token(t, alice, 1)
	h.release(late)
	waitIn(t, srv, alice, junk, late)
	srv.SetFaults(mailtest.Faults{})

	r2 := Run(context.Background(), tg, nil)
	require.NoError(t, r2.Err)
	assert.Equal(t, PlacementInbox, r2.Placement)
	assert.Equal(t, 1, r2.Late, "the probe of run 1 was found late in junk by run 2")
	assert.Zero(t, r2.Swept)
	afterJunk := snapshotFolder(t, srv, alice, junk)
	requireUnchanged(t, userJunk, afterJunk, "user mail in junk")
	assert.Len(t, afterJunk, len(userJunk), "the late probe is gone from junk")
	after := snapshot(t, srv, alice)
	requireUnchanged(t, user, after, "user mail")
	assert.Len(t, after, len(user))

	tr := transcriptOf(t, r2)
	assert.Contains(t, tr, `EXAMINE "`+junk+`"`, "searched read-only")
	assert.Contains(t, tr, `SELECT "`+junk+`"`, "selected read-write to remove the probe")
	assert.Contains(t, tr, "UID EXPUNGE")
	assert.NotRegexp(t, plainExpunge, tr)

	r3 := Run(context.Background(), tg, nil)
	require.NoError(t, r3.Err)
	assert.Zero(t, r3.Late, "a late probe is counted once")
	assert.NotContains(t, transcriptOf(t, r3), `EXAMINE "`+junk+`"`, "nothing outstanding and no sweep due: junk is not searched")
}

func TestOrphanSweepInJunk(t *testing.T) {
	for _, mode := range []Cleanup{CleanupDelete, CleanupMove, CleanupKeep} {
		t.Run(string(mode), func(t *testing.T) {
			srv := startMail(t, mailtest.Options{DeliveryDelay: 30 * time.Millisecond})
			a := account(srv, "a", alice, "alice-pw", "poll")
			a.JunkFolders = []string{junk}
			tg := hygieneTarget(a, a)
			tg.Cleanup = mode
			tg.Transcript = true
			if mode == CleanupMove {
				tg.CleanupFolder = "Trash"
			}
			now := time.Now()
			fillJunk(t, srv, alice)
			orphan, _ := probeAt(t, a, now.Add(-48*time.Hour), a.MACKey)
			young, _ := probeAt(t, a, now.Add(-time.Minute), a.MACKey)
			otherKey, _ := probeAt(t, a, now.Add(-48*time.Hour), probemsg.DeriveKey([]byte("another secret"), alice))
			lookalike := []byte("From: someone@y.test\r\nSubject: emailqos probe eqaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\nnot a probe\r\n")
			for i, m := range [][]byte{orphan, young, badMAC(orphan), otherKey, lookalike} {
				var flags []imap.Flag
				if i%2 == 0 {
					flags = []imap.Flag{imap.FlagSeen}
				}
				require.NoError(t, srv.AppendTo(alice, junk, m, flags))
			}
			inboxOrphan, _ := probeAt(t, a, now.Add(-30*time.Hour), a.MACKey)
			require.NoError(t, srv.Append(alice, inboxOrphan, nil))
			before := snapshotFolder(t, srv, alice, junk)
			var orphanUID imap.UID
			for uid, m := range before {
				if bytes.Equal(m.Raw, orphan) {
					orphanUID = uid
				}
			}
			require.NotZero(t, orphanUID)

			r := Run(context.Background(), tg, nil)
			require.NoError(t, r.Err)
			assert.Equal(t, PlacementInbox, r.Placement)
			assert.NotRegexp(t, plainExpunge, transcriptOf(t, r))
			after := snapshotFolder(t, srv, alice, junk)
			if mode == CleanupKeep {
				assert.Zero(t, r.Swept, "no sweep in keep mode")
				requireUnchanged(t, before, after, "keep mode")
				assert.Len(t, after, len(before))
				return
			}
			assert.Equal(t, 2, r.Swept, "the orphan in INBOX and the one in junk")
			assert.NotContains(t, after, orphanUID, "the old probe was swept from junk")
			delete(before, orphanUID)
			requireUnchanged(t, before, after, "not an orphan of this receiver")
			assert.Len(t, after, len(before))
			inbox, err := srv.Mailbox(alice)
			require.NoError(t, err)
			assert.Empty(t, inbox)
			trash, err := srv.Folder(alice, "Trash")
			require.NoError(t, err)
			if mode == CleanupMove {
				require.Len(t, trash, 3, "both orphans and the measured probe")
				assert.True(t, slices.ContainsFunc(trash, func(m mailtest.Message) bool { return bytes.Equal(m.Raw, orphan) }))
			} else {
				assert.Empty(t, trash)
			}
		})
	}
}

// junk_folders: [] turns the junk folders off for hygiene too: a late
// probe or an orphan there stays, and no command names the folder.
func TestJunkFoldersOffLeavesJunkAlone(t *testing.T) {
	h := newHolder()
	h.hold[alice] = map[int]bool{1: true}
	srv := startHeld(t, h)
	a := account(srv, "a", alice, "alice-pw", "idle")
	a.JunkFolders = []string{}
	tg := hygieneTarget(a, a)
	tg.Transcript = true
	a.SweepInterval = time.Nanosecond
	fillJunk(t, srv, alice)
	orphan, _ := probeAt(t, a, time.Now().Add(-48*time.Hour), a.MACKey)
	require.NoError(t, srv.AppendTo(alice, junk, orphan, nil))

	srv.SetFaults(mailtest.Faults{Junk: true})
	r1 := Run(context.Background(), tg, nil)
	require.Equal(t, steps.CodeSearch, r1.Code, "error: %v", r1.Err)
	late := h.token(t, alice, 1)
	h.release(late)
	waitIn(t, srv, alice, junk, late)
	srv.SetFaults(mailtest.Faults{})
	before := snapshotFolder(t, srv, alice, junk)

	r2 := Run(context.Background(), tg, nil)
	require.NoError(t, r2.Err)
	assert.Zero(t, r2.Late)
	assert.Zero(t, r2.Swept)
	after := snapshotFolder(t, srv, alice, junk)
	requireUnchanged(t, before, after, "junk")
	assert.Len(t, after, len(before))
	for _, r := range []Result{r1, r2} {
		assert.NotContains(t, transcriptOf(t, r), junk)
	}
}

// A junk folder that is gone by the housekeeping is logged and skipped; the
// next one is still swept, and the probe's result is left alone.
func TestJunkFolderFailureIsSkipped(t *testing.T) {
	srv := startMail(t, mailtest.Options{})
	a := account(srv, "a", alice, "alice-pw", "poll")
	tg := hygieneTarget(a, a)
	a.SweepInterval = time.Nanosecond
	tg.remember(lateProbe{token: "eqaaaaaaaaaaaaaaaaaaaaaaaaaa", sentAt: time.Now()})

	admin, err := imapclient.DialInsecure(srv.IMAPAddr(), nil)
	require.NoError(t, err)
	defer admin.Close()
	require.NoError(t, admin.Login(alice, "alice-pw").Wait())
	require.NoError(t, admin.Create("Gone", nil).Wait())

	orphan, _ := probeAt(t, a, time.Now().Add(-48*time.Hour), a.MACKey)
	require.NoError(t, srv.AppendTo(alice, junk, orphan, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sess, err := imapwatch.Open(ctx, imapwatch.Options{
		Endpoint: a.IMAP, Credentials: saslx.Credentials{Username: a.Username, Password: a.Password}, AllowPlaintextAuth: true,
		JunkFolders: []string{"Gone", junk},
	}, nil)
	require.NoError(t, err)
	require.Equal(t, []string{"Gone", junk}, sess.JunkFolders())
	require.NoError(t, admin.Delete("Gone").Wait())
	require.NoError(t, admin.Logout().Wait())

	core, logs := observer.New(zap.WarnLevel)
	res := Result{Code: steps.CodeOK}
	housekeep(ctx, tg, imapMailbox{sess}, &res, zap.New(core))
	assert.Equal(t, Result{Code: steps.CodeOK, Swept: 1}, res, "Junk swept after Gone failed")
	require.Equal(t, 1, logs.Len(), "one warning, for the folder that is gone")
	e := logs.All()[0]
	assert.Equal(t, "Gone", e.ContextMap()["folder"])
	assert.NotContains(t, fmt.Sprint(e.ContextMap()), "alice-pw")
	j, err := srv.Junk(alice)
	require.NoError(t, err)
	assert.Empty(t, j)
	assert.Len(t, tg.outstanding(time.Now()), 1, "the late probe is looked for again next run")
	require.NoError(t, sess.Close(ctx))
}

// TestJunkHousekeepingCost measures the IMAP commands the junk folder adds
// to the housekeeping: none unless something is outstanding or a sweep is
// due, then EXAMINE and one UID SEARCH per search.
func TestJunkHousekeepingCost(t *testing.T) {
	type costs struct{ quiet, sweep, late, both int }
	measure := func(t *testing.T, folders []string) costs {
		srv := startMail(t, mailtest.Options{})
		a := account(srv, "a", alice, "alice-pw", "idle")
		a.JunkFolders = folders
		tg := target(a, a)
		tg.PollInterval = 30 * time.Second // no STATUS round during the wait
		tg.DeliveryTimeout, tg.Timeout = 40*time.Second, 50*time.Second
		tg.OrphanAge = 24 * time.Hour
		a.SweepInterval = time.Hour
		run := func() int {
			r := Run(context.Background(), tg, nil)
			require.NoError(t, r.Err)
			return r.Commands
		}
		sweep := run() // the first run sweeps
		quiet := run()
		tg.remember(lateProbe{token: "eqaaaaaaaaaaaaaaaaaaaaaaaaaa", sentAt: time.Now()})
		late := run()
		a.SweepInterval = time.Nanosecond
		both := run()
		return costs{quiet: 0, sweep: sweep - quiet, late: late - quiet, both: both - quiet}
	}
	off := measure(t, []string{})
	on := measure(t, []string{junk})
	t.Logf("housekeeping IMAP commands (junk_folders [] / [Junk]): sweep %d/%d, late probes %d/%d, both %d/%d",
		off.sweep, on.sweep, off.late, on.late, off.both, on.both)
	// The first run (the sweep) also learns how the server can be searched
	// for probes: one UID SEARCH more, once per account.
	assert.Equal(t, costs{sweep: 2, late: 1, both: 2}, off, "one UID SEARCH per search")
	assert.Equal(t, costs{sweep: 4, late: 3, both: 5}, on, "EXAMINE and one UID SEARCH per search more")
}
