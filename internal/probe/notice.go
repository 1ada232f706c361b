package probe

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/emailqos/emailqosreceiver/internal/dsn"
	"github.com/emailqos/emailqosreceiver/internal/imapwatch"
	"github.com/emailqos/emailqosreceiver/internal/probemsg"
	"github.com/emailqos/emailqosreceiver/internal/steps"
	"github.com/emailqos/emailqosreceiver/internal/transcript"
)

// Delivery status notifications (issue 16). With Target.DSN the probe asks
// the sending server for notices (RFC 3461) and watches the sending
// account's mailbox for them during the delivery wait: the receiver's own
// session for a round trip, a second session for a transit. A notice is
// the probe's only when its returned headers carry this probe's token with
// a MAC that verifies (dsn.Report.Verify). That proves the headers come
// from a real probe, not that an MTA wrote the notice: anyone who received
// the probe could build one. So only a notice found in the SENDER's mailbox
// is acted on, and only the notice itself is ever removed, never the probe
// it refers to; a notice that does not verify is never touched.

const (
	// maxNoticeHits bounds the notices one housekeeping search reads (each
	// up to 1 MiB): more are left for the next run.
	maxNoticeHits = 50
)

// noticeRef is a verified notice: its id in folder ("" over POP3 and for
// the watched mailbox).
type noticeRef struct {
	ID     string
	Folder string
}

// noticeMailbox is a mailbox that can watch for notices: IMAP, POP3, or
// one read over Graph or the Gmail API (api_notice.go).
type noticeMailbox interface {
	// WaitNotices is Wait that also hands every notice arriving in the
	// watched mailbox or a junk folder to judge; it ends with
	// imapwatch.ErrNoticeStop when judge stops it.
	WaitNotices(ctx context.Context, floor time.Time, token string, accept func([]byte) bool, judge imapwatch.NoticeFunc) (arrival, []noticeRef, error)
	// FindNotices reads the notices received since (by internal date, a
	// day's resolution), or before, when before is set, in the watched
	// mailbox and each junk folder, and returns those judge keeps.
	FindNotices(ctx context.Context, since, before time.Time, limit int, judge imapwatch.NoticeFunc) ([]noticeRef, error)
	// RemoveNotices deletes or moves kept notices.
	RemoveNotices(ctx context.Context, refs []noticeRef, c Cleanup, folder string) error
	Commands() int
	Close(ctx context.Context) error
}

func (m imapMailbox) WaitNotices(ctx context.Context, floor time.Time, token string, accept func([]byte) bool, judge imapwatch.NoticeFunc) (arrival, []noticeRef, error) {
	a, ns, err := m.s.WaitNotices(ctx, floor, token, accept, judge)
	refs := make([]noticeRef, len(ns))
	for i, n := range ns {
		refs[i] = noticeRef{ID: uidString(n.UID), Folder: n.Folder}
	}
	return arrival{ID: uidString(a.UID), SeenAt: a.SeenAt, Uncertainty: a.Uncertainty, Method: a.Method, Header: a.Header,
		Placement: a.Placement, Folder: a.Folder, IdleNoPush: a.IdleNoPush}, refs, err
}

func (m imapMailbox) FindNotices(ctx context.Context, since, before time.Time, limit int, judge imapwatch.NoticeFunc) ([]noticeRef, error) {
	var refs []noticeRef
	for _, folder := range append([]string{""}, m.s.JunkFolders()...) {
		if ctx.Err() != nil || len(refs) >= limit {
			break
		}
		uids, err := m.s.FindNotices(ctx, folder, since, before, limit-len(refs), judge)
		for _, u := range uids {
			refs = append(refs, noticeRef{ID: uidString(u), Folder: folder})
		}
		if err != nil {
			return refs, err
		}
	}
	return refs, nil
}

func (m imapMailbox) RemoveNotices(ctx context.Context, refs []noticeRef, c Cleanup, folder string) error {
	if c == CleanupKeep || len(refs) == 0 {
		return nil
	}
	byFolder := map[string][]string{}
	var order []string
	for _, r := range refs {
		if _, ok := byFolder[r.Folder]; !ok {
			order = append(order, r.Folder)
		}
		byFolder[r.Folder] = append(byFolder[r.Folder], r.ID)
	}
	var errs []error
	for _, f := range order {
		uids, err := parseUIDs(byFolder[f])
		if err == nil {
			if c == CleanupMove {
				err = m.s.MoveUIDsFrom(ctx, f, uids, folder)
			} else {
				err = m.s.DeleteUIDsFrom(ctx, f, uids)
			}
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// noticeWatch judges the notices of one probe; its judge may be called
// from the sender's wait, concurrently with the receiver's.
type noticeWatch struct {
	key   []byte
	token string

	mu     sync.Mutex
	delays int
	failed *dsn.Recipient
	mta    string
	events []NoticeEvent
}

// judge keeps a notice that verifies as this probe's, counts a delay and
// stops the wait at a failure.
func (w *noticeWatch) judge(msg []byte) (keep, stop bool) {
	r, err := dsn.Parse(msg)
	if err != nil {
		return false, false
	}
	if _, err := r.Verify(w.key, w.token); err != nil {
		return false, false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	ev := NoticeEvent{At: time.Now(), ReportingMTA: r.ReportingMTA}
	if len(r.Recipients) > 0 {
		ev.Action, ev.Status, ev.ReplyCode = string(r.Recipients[0].Action), r.Recipients[0].Status, r.Recipients[0].ReplyCode
	}
	if rc, ok := r.Failed(); ok {
		ev.Action, ev.Status, ev.ReplyCode = string(rc.Action), rc.Status, rc.ReplyCode
	} else if rc, ok := r.Delayed(); ok {
		ev.Action, ev.Status, ev.ReplyCode = string(rc.Action), rc.Status, rc.ReplyCode
	}
	w.events = append(w.events, ev)
	if rc, ok := r.Failed(); ok {
		if w.failed == nil {
			w.failed, w.mta = &rc, r.ReportingMTA
		}
		return true, true
	}
	if _, ok := r.Delayed(); ok {
		w.delays++
	}
	// Delayed, or delivered/relayed (a success notice some servers send
	// anyway): proven ours, so cleaned up like the probe.
	return true, false
}

func (w *noticeWatch) result() (delays int, failed *dsn.Recipient, mta string, events []NoticeEvent) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.delays, w.failed, w.mta, slices.Clone(w.events)
}

// bouncedError is the probe's failure by a verified failure notice: code 4,
// bounced, the notice's Status and reply code as the SMTP reply. No text of
// the notice goes into the error but the (escaped, bounded) Reporting-MTA.
func bouncedError(rc *dsn.Recipient, mta string) *steps.Error {
	what := "a delivery status notification"
	if mta != "" {
		what += " from " + strconv.Quote(mta)
	}
	status := rc.Status
	if status == "" {
		status = "no status"
	}
	return &steps.Error{
		Step:  steps.DeliveryWait,
		Code:  steps.CodeSearch,
		Type:  steps.TypeBounced,
		Err:   fmt.Errorf("delivery failed: %s reports the probe failed (%s)", what, status),
		Reply: steps.Reply{Code: rc.ReplyCode, Enhanced: rc.Status},
	}
}

// openSenderNotices opens, in the background, the sender's mailbox of a
// transit that watches for notices; the channel yields it, or nil (no
// watch: dsn off, a round trip, no IMAP mailbox, or the login failed). Its
// steps are not the probe's (a recorder of their own); failing to open it
// only logs: the probe then runs without notices, as before.
func openSenderNotices(ctx context.Context, t *Target, logger *zap.Logger, tr *transcript.Transcript) <-chan noticeMailbox {
	ch := make(chan noticeMailbox, 1)
	if !t.DSN || t.Sender == t.Receiver || !t.Sender.hasMailbox() {
		ch <- nil
		return ch
	}
	if t.sharesSession(t.Sender) {
		// The sender's watcher session, which takes one of its sessions
		// only if none is open yet, and then without waiting for it.
		go func() {
			box, err := joinShared(ctx, t, t.Sender, logger, &steps.Recorder{}, tr, false)
			if err != nil {
				log := logger.Warn
				if errors.Is(err, errNoSlot) {
					log = logger.Debug // as below: all its sessions busy
				}
				log("sender's mailbox not watched for bounces", zap.String("target", t.Name), zap.String("sender", t.Sender.Key), zap.Error(err))
				ch <- nil
				return
			}
			ch <- box.(noticeMailbox)
		}()
		return ch
	}
	// One of the sender's sessions (max_sessions), if one is free now: a
	// probe never waits for it, so that two transits in opposite
	// directions cannot hold each other's last session.
	release, ok := t.Sender.tryAcquire()
	if !ok {
		logger.Debug("sender's mailbox not watched for bounces: all its sessions are busy", zap.String("target", t.Name), zap.String("sender", t.Sender.Key))
		ch <- nil
		return ch
	}
	go func() {
		box, err := openAccountMailbox(ctx, t, t.Sender, logger, &steps.Recorder{}, tr)
		if err != nil {
			release()
			logger.Warn("sender's mailbox not watched for bounces", zap.String("target", t.Name), zap.String("sender", t.Sender.Key), zap.Error(err))
			ch <- nil
			return
		}
		nm, ok := box.(noticeMailbox)
		if !ok {
			_ = box.Close(ctx)
			release()
			ch <- nil
			return
		}
		ch <- heldNotices{nm, release}
	}()
	return ch
}

// heldNotices is a sender's mailbox holding one of its sessions until it
// is closed.
type heldNotices struct {
	noticeMailbox
	release func()
}

func (h heldNotices) Close(ctx context.Context) error {
	defer h.release()
	return h.noticeMailbox.Close(ctx)
}

// tryAcquire is acquire without waiting: ok is false when every session of
// a is in use.
func (a *Account) tryAcquire() (release func(), ok bool) {
	if a.MaxSessions <= 0 {
		return func() {}, true
	}
	a.slotsOnce.Do(func() { a.slots = make(chan struct{}, a.MaxSessions) })
	select {
	case a.slots <- struct{}{}:
		return func() { <-a.slots }, true
	default:
		return nil, false
	}
}

// openNotices returns the mailbox to watch for t's notices, and whether it
// is the receiver's own session (a round trip); senderBox is a transit's
// (openSenderNotices).
func openNotices(t *Target, sess mailbox, senderBox <-chan noticeMailbox) (noticeMailbox, bool) {
	nb := <-senderBox
	if !t.DSN || t.Sender != t.Receiver {
		return nb, false
	}
	nm, ok := sess.(noticeMailbox)
	return nm, ok
}

// hasMailbox reports whether a has a mailbox to read.
func (a *Account) hasMailbox() bool {
	switch a.Retrieval {
	case RetrievalPOP3:
		return a.POP3.Address != ""
	case RetrievalGraph:
		return a.API.Graph != nil
	case RetrievalGmailAPI:
		return a.API.Gmail != nil
	}
	return a.IMAP.Address != ""
}

// errBounced ends the receiver's wait of a transit when the sender's
// mailbox received a failure notice.
var errBounced = errors.New("probe bounced")

// waitNotices waits for the probe in sess and for its notices in nbox:
// in the same session for a round trip, concurrently for a transit. It
// returns the probe's arrival or the receiver's error, and the notices
// kept; a failure notice ends both waits at once.
func waitNotices(ctx context.Context, floor time.Time, token string, accept func([]byte) bool, sess mailbox, nbox noticeMailbox, same bool, nw *noticeWatch, logger *zap.Logger) (arrival, []noticeRef, error) {
	if same {
		return nbox.WaitNotices(ctx, floor, token, accept, nw.judge)
	}
	rcvCtx, cancelRcv := context.WithCancelCause(ctx)
	defer cancelRcv(nil)
	sndCtx, cancelSnd := context.WithCancel(ctx)
	var refs []noticeRef
	done := make(chan struct{})
	go func() {
		defer close(done)
		// The probe itself never arrives here: nothing is accepted.
		_, got, err := nbox.WaitNotices(sndCtx, floor, token, func([]byte) bool { return false }, nw.judge)
		refs = got
		if errors.Is(err, imapwatch.ErrNoticeStop) {
			cancelRcv(errBounced)
		} else if err != nil && sndCtx.Err() == nil {
			logger.Debug("watching the sender's mailbox for bounces failed", zap.Error(err))
		}
	}()
	a, err := sess.Wait(rcvCtx, floor, token, accept)
	cancelSnd()
	<-done
	return a, refs, err
}

// lateNotice is a probe whose notices may arrive after it ended; delays
// counts its delay notices counted so far.
type lateNotice struct {
	token  string
	sentAt time.Time
	delays int
	// once: looked for until the next run only (a delivered probe); at
	// is when it was noted.
	once bool
	at   time.Time
}

// rememberNotices notes a probe whose notices may still arrive after it
// ended (it was not found in time, or was delayed): later runs look for
// them until the orphan age.
func (t *Target) rememberNotices(p lateNotice) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lateNotices) >= maxOutstanding {
		t.lateNotices = slices.Delete(t.lateNotices, 0, len(t.lateNotices)-maxOutstanding+1)
	}
	t.lateNotices = append(t.lateNotices, p)
}

// noticeHousekeeping looks in the sender's mailbox for notices about this
// target's earlier probes that arrived after they ended (counted: a delay
// in DelayNotices, a failure in LateBounces) and, when due, sweeps the
// verified notices older than the orphan age. Failures are logged only.
func noticeHousekeeping(ctx context.Context, t *Target, nbox noticeMailbox, res *Result, logger *zap.Logger) {
	ctx, cancel := housekeepingContext(ctx)
	defer cancel()
	now := time.Now()
	t.mu.Lock()
	if t.OrphanAge > 0 {
		t.lateNotices = slices.DeleteFunc(t.lateNotices, func(l lateNotice) bool { return now.Sub(l.sentAt) > t.OrphanAge })
	}
	late := slices.Clone(t.lateNotices)
	t.mu.Unlock()
	var refs []noticeRef
	if len(late) > 0 {
		pending := make(map[string]bool, len(late))
		since := late[0].sentAt
		for _, l := range late {
			pending[l.token] = true
			since = minTime(since, l.sentAt)
		}
		done := map[string]bool{}
		delays := map[string]int{}
		got, err := nbox.FindNotices(ctx, since, time.Time{}, maxNoticeHits, func(msg []byte) (bool, bool) {
			r, err := dsn.Parse(msg)
			if err != nil {
				return false, false
			}
			p, err := r.Probe(t.Receiver.MACKey)
			if err != nil || !pending[p.Token] {
				return false, false
			}
			if _, ok := r.Failed(); ok {
				res.LateBounces++
				done[p.Token] = true
			} else if _, ok := r.Delayed(); ok {
				delays[p.Token]++
			}
			return true, false
		})
		refs = append(refs, got...)
		if err != nil {
			logger.Warn("looking for late bounces failed", zap.String("target", t.Name), zap.Error(err))
		}
		t.mu.Lock()
		for i := range t.lateNotices {
			// A kept notice is found again at every run: counted once.
			l := &t.lateNotices[i]
			if n := delays[l.token]; t.Cleanup != CleanupKeep {
				res.DelayNotices += n // removed once found
			} else if n > l.delays {
				res.DelayNotices += n - l.delays
				l.delays = n
			}
		}
		t.lateNotices = slices.DeleteFunc(t.lateNotices, func(l lateNotice) bool {
			// A delivered probe's is dropped once a later run looked.
			return done[l.token] || l.once && err == nil && l.at.Before(res.Start)
		})
		t.mu.Unlock()
	}
	if ctx.Err() == nil && t.sweeps() && t.Sender.SweepInterval > 0 && t.claimNoticeSweep(now) {
		got, err := nbox.FindNotices(ctx, time.Time{}, now.Add(-t.OrphanAge), maxNoticeHits, func(msg []byte) (bool, bool) {
			r, err := dsn.Parse(msg)
			if err != nil {
				return false, false
			}
			p, err := r.Probe(t.Receiver.MACKey)
			return err == nil && now.Sub(p.SentAt) > t.OrphanAge, false
		})
		res.SweptNotices += len(got)
		refs = append(refs, got...)
		if err != nil {
			logger.Warn("sweeping old bounces failed", zap.String("target", t.Name), zap.Error(err))
		}
	}
	if err := nbox.RemoveNotices(ctx, refs, t.Cleanup, t.CleanupFolder); err != nil {
		logger.Warn("removing bounces failed", zap.String("target", t.Name), zap.Error(err))
	}
}

// claimNoticeSweep is claimSweep for the notices about this target's
// probes in its sender's mailbox: they verify with this target's
// receiver's key only, so each target sweeps its own.
func (t *Target) claimNoticeSweep(now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.lastNoticeSweep.IsZero() && now.Sub(t.lastNoticeSweep) < t.Sender.SweepInterval {
		return false
	}
	t.lastNoticeSweep = now
	return true
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// NoticeEvent is a verified notice about the probe, seen during its wait:
// when it was judged, its Action (failed, delayed, ...), RFC 3463 status
// and SMTP reply code (of a failure, also the probe's SMTPReply), and the
// Reporting-MTA, escaped and bounded, for logs and traces only.
type NoticeEvent struct {
	At           time.Time
	Action       string
	Status       string
	ReplyCode    int
	ReportingMTA string
}

// noticesEnd ends the notice watch of a probe: it counts the delays,
// removes the kept notices with the cleanup mode (failures logged), notes
// the probe for late notices unless it was delivered without delay or
// bounced, and returns the bounced failure when a failure notice came.
func noticesEnd(ctx context.Context, t *Target, nbox noticeMailbox, nw *noticeWatch, refs []noticeRef, p probemsg.Probe, res *Result, delivered bool, logger *zap.Logger) error {
	delays, failed, mta, events := nw.result()
	res.DelayNotices += delays
	res.Notices = events
	if len(refs) > 0 {
		if err := nbox.RemoveNotices(ctx, refs, t.Cleanup, t.CleanupFolder); err != nil {
			logger.Warn("removing the probe's bounce failed", zap.String("target", t.Name), zap.Error(err))
		}
	}
	if failed != nil {
		logger.Info("probe bounced", zap.String("target", t.Name), zap.String("status", failed.Status),
			zap.Int("reply_code", failed.ReplyCode), zap.String("reporting_mta", mta))
		return bouncedError(failed, mta)
	}
	kept := 0
	if t.Cleanup == CleanupKeep {
		kept = delays
	}
	// A probe delivered without a delay notice is looked for once more, at
	// the next run: a delay notice can race the delivery (Postfix sends
	// the warning at the deferral just before the retry that delivers, seen
	// on the real stack 2 s after the send with the probe found 0.5 s
	// later), and would otherwise stay in the mailbox.
	once := delivered && delays == 0
	t.rememberNotices(lateNotice{token: p.Token, sentAt: p.SentAt, delays: kept, once: once, at: time.Now()})
	return nil
}
