package probe

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/emersion/go-imap/v2"
	"go.uber.org/zap"

	"github.com/emailqos/emailqosreceiver/internal/probemsg"
)

// Mailbox hygiene: probes that arrived too late, and orphans left by earlier
// runs or an earlier collector, are removed by later runs. Only messages
// whose HMAC verifies with the receiver's key are ever touched, and only by
// UID (IMAP) or message number after a UIDL match (POP3), through the
// mailbox's FindProbes, DeleteIDs and MoveIDs (mailbox.go).

const (
	// maxOutstanding bounds a target's list of probes not found in time;
	// the oldest give way, and the orphan sweep takes over for them.
	maxOutstanding = 256
	// maxHousekeepingHits bounds the messages one search of the
	// housekeeping fetches headers of; more are left for the next run.
	maxHousekeepingHits = 500
	// logoutReserve is the part of the probe's remaining time the
	// housekeeping leaves for LOGOUT, at most.
	logoutReserve = 5 * time.Second
)

// lateProbe is a probe of a target that was sent but not found in time.
type lateProbe struct {
	token  string
	sentAt time.Time
	// counted: it was found and reported as late, but its cleanup failed
	// and is retried without counting it again.
	counted bool
}

// remember adds a probe that was not found in time.
func (t *Target) remember(p lateProbe) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.late) >= maxOutstanding {
		t.late = slices.Delete(t.late, 0, len(t.late)-maxOutstanding+1)
	}
	t.late = append(t.late, p)
}

// outstanding drops the probes older than the orphan age (the sweep's from
// then on) and returns the others.
func (t *Target) outstanding(now time.Time) []lateProbe {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.OrphanAge > 0 {
		t.late = slices.DeleteFunc(t.late, func(l lateProbe) bool { return now.Sub(l.sentAt) > t.OrphanAge })
	}
	return slices.Clone(t.late)
}

// countLate marks the found probes as counted and returns how many had not
// been counted before.
func (t *Target) countLate(found map[string]bool) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for i := range t.late {
		if found[t.late[i].token] && !t.late[i].counted {
			t.late[i].counted = true
			n++
		}
	}
	return n
}

// forget drops the found probes from the list.
func (t *Target) forget(found map[string]bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.late = slices.DeleteFunc(t.late, func(l lateProbe) bool { return found[l.token] })
}

// sweeps reports whether this target may sweep orphans at all: not in keep
// mode (the user keeps probes on purpose), and only with an orphan age no
// probe can still be waited for at.
func (t *Target) sweeps() bool {
	return t.Cleanup != CleanupKeep && t.Receiver.SweepInterval > 0 &&
		t.OrphanAge > max(t.DeliveryTimeout, t.Timeout)
}

// claimSweep reports whether a sweep of this mailbox is due, and if so
// claims it: at most one per SweepInterval, the first one right away.
func (a *Account) claimSweep(now time.Time) bool {
	a.sweepMu.Lock()
	defer a.sweepMu.Unlock()
	if !a.lastSweep.IsZero() && now.Sub(a.lastSweep) < a.SweepInterval {
		return false
	}
	a.lastSweep = now
	return true
}

// housekeep looks for this target's late probes and, when due, sweeps the
// receiving mailbox of orphans: the watched mailbox first, then each of the
// session's junk folders, where a probe filed as spam may have landed after
// its wait. It never fails the probe: failures are logged, a junk folder
// that fails is skipped, and it leaves time for LOGOUT.
func housekeep(ctx context.Context, t *Target, sess mailbox, res *Result, logger *zap.Logger) {
	ctx, cancel := housekeepingContext(ctx)
	defer cancel()
	now := time.Now()
	warn := func(msg, folder string, err error) {
		fields := []zap.Field{zap.String("target", t.Name), zap.String("receiver", t.Receiver.Key)}
		if folder != "" {
			fields = append(fields, zap.String("folder", folder))
		}
		logger.Warn(msg, append(fields, zap.Error(err))...)
	}
	if late := t.outstanding(now); len(late) > 0 {
		n, err := collectLate(ctx, t, sess, late)
		res.Late += n
		if err != nil {
			warn("looking for late probes failed", "", err)
		}
	}
	sweeping := ctx.Err() == nil && t.sweeps() && t.Receiver.claimSweep(now)
	if sweeping {
		n, err := sweep(ctx, t, sess, now)
		res.Swept += n
		if err != nil {
			warn("sweeping orphaned probes failed", "", err)
		}
	}

	js, ok := sess.(junkStores)
	if !ok {
		return // POP3: the maildrop is all there is.
	}
	for _, j := range js.junk() {
		if ctx.Err() != nil {
			return
		}
		if t.Cleanup == CleanupMove && j.folder == t.CleanupFolder {
			// Probes are kept there on purpose.
			continue
		}
		if err := junkHousekeeping(ctx, t, j, sweeping, now, res); err != nil {
			warn("housekeeping in a junk folder failed", j.folder, err)
			if !refused(err) {
				// The connection, not the folder, failed: the other
				// folders wait for the next run.
				return
			}
		}
	}
}

// junkHousekeeping looks for late probes in one junk folder and, when
// sweeping, sweeps it; a failure skips the rest of the folder.
func junkHousekeeping(ctx context.Context, t *Target, j junkStore, sweeping bool, now time.Time, res *Result) error {
	if late := t.outstanding(now); len(late) > 0 {
		n, err := collectLate(ctx, t, j, late)
		res.Late += n
		if err != nil {
			return err
		}
	}
	if !sweeping || ctx.Err() != nil {
		return nil
	}
	n, err := sweep(ctx, t, j, now)
	res.Swept += n
	return err
}

// refused tells a server's refusal (a folder gone, not selectable, or
// recreated) from a lost connection or an ended context.
func refused(err error) bool {
	var ie *imap.Error
	return errors.As(err, &ie)
}

// housekeepingContext ends before ctx, by up to logoutReserve, so that a
// slow housekeeping cannot take LOGOUT's time too.
func housekeepingContext(ctx context.Context) (context.Context, context.CancelFunc) {
	deadline, ok := ctx.Deadline()
	if !ok {
		return context.WithCancel(ctx)
	}
	return context.WithDeadline(ctx, deadline.Add(-min(time.Until(deadline)/2, logoutReserve)))
}

// collectLate finds the outstanding probes that have arrived since, counts
// them, and cleans them up. A message counts only if its HMAC verifies and
// its token and send time are those of an outstanding probe.
func collectLate(ctx context.Context, t *Target, sess store, late []lateProbe) (int, error) {
	sentAt := make(map[string]time.Time, len(late))
	tokens := make([]string, 0, len(late))
	for _, l := range late {
		sentAt[l.token] = l.sentAt
		tokens = append(tokens, l.token)
	}
	found := make(map[string]bool)
	uids, err := sess.FindProbes(ctx, tokens, maxHousekeepingHits, func(header []byte) bool {
		p, err := probemsg.Parse(header, t.Receiver.MACKey)
		if err != nil {
			return false
		}
		sent, ok := sentAt[p.Token]
		if !ok || !sent.Equal(p.SentAt) {
			return false
		}
		found[p.Token] = true
		return true
	})
	if err != nil || len(uids) == 0 {
		return 0, err
	}
	n := t.countLate(found)
	if t.Cleanup == CleanupKeep {
		// Counted, and left where the user keeps the probes.
		t.forget(found)
		return n, nil
	}
	if err := cleanUp(ctx, t, sess, uids); err != nil {
		return n, err
	}
	t.forget(found)
	return n, nil
}

// sweep cleans up the receiver's own probes older than the orphan age. Of
// what the search finds, only a message whose HMAC verifies with the
// receiver's key is a probe of this receiver; a look-alike, a forgery or a
// probe of another key is never touched, nor is a probe younger than the
// orphan age, which a run may still be waiting for.
func sweep(ctx context.Context, t *Target, sess store, now time.Time) (int, error) {
	uids, err := sess.FindProbes(ctx, nil, maxHousekeepingHits, func(header []byte) bool {
		p, err := probemsg.Parse(header, t.Receiver.MACKey)
		return err == nil && now.Sub(p.SentAt) > t.OrphanAge
	})
	if err != nil || len(uids) == 0 {
		return 0, err
	}
	if err := cleanUp(ctx, t, sess, uids); err != nil {
		return 0, err
	}
	return len(uids), nil
}

// cleanUp removes or moves probes as the target's cleanup mode says.
func cleanUp(ctx context.Context, t *Target, sess store, ids []string) error {
	if t.Cleanup == CleanupMove {
		return sess.MoveIDs(ctx, ids, t.CleanupFolder)
	}
	return sess.DeleteIDs(ctx, ids)
}
