// Package probe runs one probe: it opens the receiving mailbox, submits a
// probe message through the sending account, waits for it to become visible,
// removes it and reports every step's time, the delivery latency and an
// error code. Afterwards, on the same session, it cleans up earlier probes
// that arrived late and orphaned ones (hygiene.go). A round trip is a probe
// whose sender and receiver are the same account; a transit probe crosses
// from one account to another.
package probe // import "github.com/emailqos/emailqosreceiver/internal/probe"

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/emailqos/emailqosreceiver/internal/authres"
	"github.com/emailqos/emailqosreceiver/internal/imapwatch"
	"github.com/emailqos/emailqosreceiver/internal/learn"
	"github.com/emailqos/emailqosreceiver/internal/probemsg"
	"github.com/emailqos/emailqosreceiver/internal/received"
	"github.com/emailqos/emailqosreceiver/internal/restcall"
	"github.com/emailqos/emailqosreceiver/internal/saslx"
	"github.com/emailqos/emailqosreceiver/internal/smtpsend"
	"github.com/emailqos/emailqosreceiver/internal/steps"
	"github.com/emailqos/emailqosreceiver/internal/transcript"
	"github.com/emailqos/emailqosreceiver/internal/transport"
)

// Kind is the kind of probe, as LogicMonitor names them.
type Kind string

const (
	Roundtrip Kind = "roundtrip"
	Transit   Kind = "transit"
)

// Cleanup is what happens to the probe message after it was measured.
type Cleanup string

const (
	CleanupDelete Cleanup = "delete"
	CleanupMove   Cleanup = "move"
	CleanupKeep   Cleanup = "keep"
)

// Account is one mail account as the engine sees it.
type Account struct {
	Key     string
	Address string
	// Credentials sign in to SMTP, IMAP and POP3 alike.
	saslx.Credentials
	SMTP    transport.Endpoint
	IMAP    transport.Endpoint
	Mailbox string
	// Send is how this account sends: SendSMTP ("" too), SendGraph or
	// SendGmailAPI (api.go), with the client in API.
	Send string
	// Retrieval is how probes are read back: RetrievalIMAP (default),
	// RetrievalPOP3, from the POP3 endpoint, or RetrievalGraph or
	// RetrievalGmailAPI, with the client in API.
	Retrieval string
	API       APIs
	POP3      transport.Endpoint
	// Detection is how arrivals in this account's mailbox are seen.
	Detection imapwatch.Method
	// JunkFolders are also watched for probes to this account, so that one
	// filed as spam has Placement junk instead of being lost; DiscoverJunk
	// finds them at login instead (\Junk, else usual names). IMAP only.
	JunkFolders  []string
	DiscoverJunk bool
	// GmailTabs looks up, on a short session of its own, the Gmail inbox
	// tab of a probe found in INBOX of a server with X-GM-EXT-1, reported
	// as its placement (gmailtabs.go). IMAP only.
	GmailTabs bool
	// tabsWarned: a failed tab lookup was logged at warn already.
	tabsWarned atomic.Bool
	// Key material for the probe HMAC of messages received by this account.
	MACKey []byte
	// AuthServIDs are the authserv-ids whose Authentication-Results are
	// believed for messages this account receives; empty: the topmost
	// field's.
	AuthServIDs []string
	// Domains are the provider's domains, to classify Received hops.
	Domains []string
	// SweepInterval is the least time between two orphan sweeps of this
	// account's mailbox; 0 disables the sweep.
	SweepInterval time.Duration

	// sweepMu guards lastSweep, shared by every target reading this mailbox.
	sweepMu   sync.Mutex
	lastSweep time.Time
	// search is how housekeeping searches this mailbox for probes, learned
	// by the sessions reading it (imapwatch.SearchHint).
	search imapwatch.SearchHint
	// api is where the last API session of this mailbox ended.
	api apiState

	// MaxSessions caps the reader sessions (IMAP or POP3) open on this
	// mailbox at once, across every target reading it; 0: no cap. A probe
	// waits for one before it starts (see Run).
	MaxSessions int
	slotsOnce   sync.Once
	slots       chan struct{}

	// ShareSession watches this mailbox (IMAP) with one session for all
	// the probes reading it at the same time, instead of one each
	// (share.go); watch is that session.
	ShareSession bool
	watch        watcher
}

// sharesSession reports whether t's probes read a's mailbox through its
// watcher session. A target that keeps transcripts reads over sessions of
// its own, so that its transcript is its own conversation, all of it.
func (t *Target) sharesSession(a *Account) bool {
	return a.ShareSession && !t.Transcript && (a.Retrieval == "" || a.Retrieval == RetrievalIMAP)
}

// acquire waits for one of a's reader sessions, until ctx ends. release
// gives it back.
func (a *Account) acquire(ctx context.Context) (release func(), _ error) {
	if a.MaxSessions <= 0 {
		return func() {}, nil
	}
	a.slotsOnce.Do(func() { a.slots = make(chan struct{}, a.MaxSessions) })
	select {
	case a.slots <- struct{}{}:
		return func() { <-a.slots }, nil
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

// Target is one probe direction.
type Target struct {
	Name     string
	Kind     Kind
	Sender   *Account
	Receiver *Account
	// Direction is `sender:receiver`.
	Direction string

	DeliveryTimeout time.Duration
	PollInterval    time.Duration
	PreciseInterval time.Duration
	// Timeout bounds the whole probe, delivery wait included.
	Timeout time.Duration
	// RetryDeferred resubmits a probe the sending server deferred (4xx),
	// as a mail client would, for up to half of DeliveryTimeout.
	RetryDeferred bool

	Cleanup       Cleanup
	CleanupFolder string
	// OrphanAge is the age from which a probe of the receiving account is an
	// orphan the sweep removes, and until which a probe that missed its
	// delivery timeout is looked for as late. 0 disables the sweep.
	OrphanAge time.Duration
	// Transcript keeps a redacted transcript of every probe's SMTP, IMAP
	// and POP3 conversations in its Result.
	Transcript bool
	// DSN asks for delivery status notifications and watches the sending
	// account's mailbox (IMAP) for them during the wait (notice.go).
	DSN bool

	// mu guards late: this target's probes that were not found in time,
	// lateNotices: its probes whose notices may still arrive, and
	// lastNoticeSweep.
	mu              sync.Mutex
	late            []lateProbe
	lateNotices     []lateNotice
	lastNoticeSweep time.Time
	// learner is what auto detection learned of this direction's arrivals
	// and of its receiving server's IDLE, kept from probe to probe.
	learner learn.Learner
}

// Result is what one probe measured.
type Result struct {
	Target *Target
	// Start is when the probe began; Total runs from Start until the
	// message was found (or until the probe failed).
	Start time.Time
	Total time.Duration
	// Delivered is true when the message was seen; DeliveryLatency then
	// runs from the sending server's acceptance of DATA to the arrival.
	Delivered       bool
	DeliveryLatency time.Duration
	// Placement is where the probe was found: PlacementInbox,
	// PlacementJunk (delivered, filed as spam), or PlacementMissing (not
	// found anywhere by the delivery timeout); empty when the probe failed
	// before or otherwise than by not being found.
	Placement string
	// Method is what saw the arrival (idle, poll, precise) and Uncertainty
	// the half-width of the window the arrival is known to lie in.
	Method      imapwatch.Method
	Uncertainty time.Duration
	// AcceptedAt is when the sending server accepted DATA and ArrivedAt the
	// estimated instant the message became visible to the reader.
	AcceptedAt time.Time
	ArrivedAt  time.Time
	// BeforeReply is true when the message was visible before the sending
	// server's 250 reply to DATA reached us (the arrival window starts at
	// the end of DATA, before AcceptedAt): DeliveryLatency is then 0 and
	// Uncertainty covers the whole window on both sides of AcceptedAt.
	BeforeReply bool
	// IdleNoPush is true when the mailbox's IMAP IDLE was found not to
	// announce new messages (it showed them only when IDLE ended), so that
	// arrivals there are polled for instead.
	IdleNoPush bool
	// Commands is the number of IMAP commands the probe sent, its mailbox
	// housekeeping included.
	Commands int
	// Late counts earlier probes of this target that arrived after their
	// delivery timeout and were found during this run (each counted once,
	// and cleaned up unless the cleanup mode is keep); Swept counts orphaned
	// probes older than the orphan age cleaned up during this run.
	Late    int
	Swept   int
	Timings []steps.Timing

	// DelayNotices counts the verified delay notices (RFC 3464 Action
	// delayed) about this target's probes found during this run, this
	// probe's and earlier ones'; LateBounces the failure notices about
	// earlier probes that arrived after they ended; SweptNotices the
	// verified notices older than the orphan age cleaned up. Notices are
	// the verified notices seen during this probe's wait, in order (a
	// failure notice last: it ends the probe as bounced).
	// NoticesWatched says whether the sender's mailbox was watched for
	// notices (DSN on and a mailbox for the sender: IMAP, POP3 or an API).
	NoticesWatched bool
	DelayNotices   int
	LateBounces    int
	SweptNotices   int
	Notices        []NoticeEvent

	// Deferrals counts the submissions the sending server deferred (4xx)
	// before it accepted the probe or the retries ran out; DeferredFor runs
	// from the first deferral until the message finally arrived.
	Deferrals   int
	DeferredFor time.Duration

	// Auth holds the receiving side's authentication verdicts on the
	// delivered probe (its Authentication-Results), and Path the delivery
	// latency split along its Received chain; nil when the probe was not
	// delivered or its header said nothing usable (message.go).
	Auth *authres.Report
	Path *received.Breakdown

	Code      int
	ErrorType string
	Err       error
	// SMTPReply is the SMTP server's refusal that failed the probe; zero
	// when the failure was no SMTP reply.
	SMTPReply steps.Reply
	// TLS is what the probe's TLS handshakes showed, one per protocol that
	// used TLS (the last, after a reconnect).
	TLS []steps.TLS
	// Transcript is the probe's redacted conversation when the target
	// keeps one, else nil.
	Transcript *transcript.Transcript

	// tabCommands are the IMAP commands of the Gmail tab lookup, counted
	// in Commands.
	tabCommands int
}

// Run runs one probe of t and never returns before every connection it
// opened is closed. All waits are bounded by ctx and t.Timeout.
func Run(ctx context.Context, t *Target, logger *zap.Logger) Result {
	if logger == nil {
		logger = zap.NewNop()
	}
	// The receiving mailbox's session cap (max_sessions): the probe waits
	// for one of its sessions, up to t.Timeout, before it starts, so that
	// the wait is in none of its times. None freeing up is code 3 limit.
	waitCtx, cancel := ctx, context.CancelFunc(func() {})
	if t.Timeout > 0 {
		waitCtx, cancel = context.WithTimeout(ctx, t.Timeout)
	}
	release := func() {}
	var err error
	if !t.sharesSession(t.Receiver) {
		// A shared session takes its slot when it is opened (share.go).
		release, err = t.Receiver.acquire(waitCtx)
	}
	cancel()
	if err != nil {
		se := steps.Fail(ctx, t.Receiver.connectStep(), steps.TypeLimit,
			fmt.Errorf("all %d sessions of the mailbox (max_sessions) stayed busy: %w", t.Receiver.MaxSessions, err))
		return Result{Target: t, Start: time.Now(), Code: se.Code, ErrorType: se.Type, Err: se}
	}
	defer release()
	rec := &steps.Recorder{}
	start := time.Now()
	var tr *transcript.Transcript
	if t.Transcript {
		tr = transcript.New(start)
	}
	res := run(ctx, t, logger, rec, start, tr)
	res.Timings = rec.Timings()
	res.TLS = rec.TLS()
	var se *steps.Error
	if errors.As(res.Err, &se) && (steps.Protocol(se.Step) == "smtp" || se.Type == steps.TypeBounced) {
		res.SMTPReply = se.Reply
	}
	res.Transcript = tr
	return res
}

// credentials returns a's credentials; with a transcript, they and every
// token their source hands out are registered with tr, whose lines are then
// scrubbed of them (a second line of defence beside the protocol
// redaction).
func (a *Account) credentials(tr *transcript.Transcript) saslx.Credentials {
	c := a.Credentials
	if tr == nil {
		return c
	}
	tr.Secret(a.Username, a.Password)
	if src := a.Token; src != nil {
		c.Token = func(ctx context.Context) (string, error) {
			tok, err := src(ctx)
			if err == nil {
				tr.Secret(a.Username, tok)
			}
			return tok, err
		}
	}
	return c
}

func run(ctx context.Context, t *Target, logger *zap.Logger, rec *steps.Recorder, start time.Time, tr *transcript.Transcript) Result {
	res := Result{Target: t, Start: start}
	// The API calls of both sides are recorded in the transcript too.
	ctx = restcall.WithTranscript(ctx, tr)

	if t.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t.Timeout)
		defer cancel()
	}

	// Every failure reaching fail is a *steps.Error: the engine's packages
	// fail with one, and what they might return otherwise is typed where it
	// is returned, in the step it happened in.
	fail := func(err error) Result {
		var se *steps.Error
		errors.As(err, &se)
		res.Code, res.ErrorType, res.Err = se.Code, se.Type, se
		if res.Total == 0 {
			res.Total = time.Since(res.Start)
		}
		return res
	}

	// A transit's sender mailbox, watched for notices about the probe, is
	// opened beside the receiver's, so that the probe's total grows by the
	// difference of the two logins at most.
	senderBox := openSenderNotices(ctx, t, logger, tr)

	// The mailbox is open, and IDLE started, before anything is sent, so
	// that the arrival is seen the moment the server announces it.
	sess, err := openMailbox(ctx, t, logger, rec, tr)
	if err != nil {
		if nb := <-senderBox; nb != nil {
			_ = nb.Close(ctx)
		}
		return fail(steps.Fail(ctx, t.Receiver.connectStep(), "", err))
	}

	// The sender's mailbox: the same session for a round trip.
	nbox, same := openNotices(t, sess, senderBox)
	res.NoticesWatched = nbox != nil

	missed, err := measure(ctx, t, sess, nbox, same, &res, logger, rec, tr)
	if err != nil {
		// Classified and timed as the measurement ended, before the
		// housekeeping, which is not part of it.
		fail(err)
	}
	// Housekeeping runs after the measurement, so it cannot disturb it, and
	// on the same session before LOGOUT. It is skipped when the mailbox
	// connection itself failed or the probe's time is up. Its failures are
	// logged only: the probe's result stays what the measurement gave.
	if ctx.Err() == nil && res.Code != steps.CodeMailboxConnect {
		housekeep(ctx, t, sess, &res, logger)
	}
	if nbox != nil && ctx.Err() == nil && !(same && res.Code == steps.CodeMailboxConnect) {
		noticeHousekeeping(ctx, t, nbox, &res, logger)
	}
	// Remembered only now, so that it is looked for from the next run on.
	if missed != nil {
		t.remember(*missed)
	}

	// The session's connection lives as long as ctx, which outlasts the
	// delivery wait by the setup budget: a probe that was not found in time
	// still logs out, and a removed probe is removed within ctx too. A
	// failed LOGOUT fails an otherwise successful probe (code 5).
	closeErr := sess.Close(ctx)
	res.Commands = sess.Commands() + res.tabCommands
	if nbox != nil && !same {
		// A transit's session to the sender's mailbox: its LOGOUT failing
		// is no failure of the probe, but its commands are the probe's.
		_ = nbox.Close(ctx)
		res.Commands += nbox.Commands()
	}
	if err == nil && closeErr != nil {
		return fail(steps.Fail(ctx, t.Receiver.deleteStep(), "", closeErr))
	}
	return res
}

// measure sends the probe, waits for it and cleans it up, filling in res.
// missed is the probe when it was sent but not found in time: it may still
// arrive, and a later run looks for it.
func measure(ctx context.Context, t *Target, sess mailbox, nbox noticeMailbox, same bool, res *Result, logger *zap.Logger, rec *steps.Recorder, tr *transcript.Transcript) (missed *lateProbe, _ error) {
	p, err := probemsg.New(t.Sender.Address, t.Receiver.Address, t.Name, time.Now())
	if err != nil {
		// An address or target name the message cannot carry: the
		// target's configuration, before anything was sent.
		return nil, steps.Fail(ctx, steps.SMTPSubmit, steps.TypeConfig, err)
	}
	var sent smtpsend.Result
	// join waits for the SMTP submission's QUIT, after the wait.
	join := func() deferral { return deferral{} }
	if t.Sender.sendsByAPI() {
		var sentID string
		// The message cannot exist before the request that sends it began.
		sent.DataEnd = time.Now()
		if sent.AcceptedAt, sentID, err = sendAPI(ctx, t.Sender, p.Build(t.Receiver.MACKey), rec); err != nil {
			return nil, err
		}
		defer removeSentCopy(ctx, t, sentID, logger)
	} else {
		// The wait starts as soon as the server accepted the data, while
		// QUIT is still under way on the sending connection: a message can
		// land before QUIT's reply, and a poll that waited for it would see
		// it late.
		accepted := make(chan smtpsend.Result, 1)
		type submitted struct {
			sent     smtpsend.Result
			deferred deferral
			err      error
		}
		done := make(chan submitted, 1)
		go func() {
			opts := smtpsend.Options{
				Endpoint:           t.Sender.SMTP,
				Auth:               t.Sender.credentials(tr),
				AllowPlaintextAuth: t.Sender.SMTP.Security == transport.None,
				Transcript:         tr,
				Accepted:           func(r smtpsend.Result) { accepted <- r },
			}
			if t.DSN {
				// RFC 3461: notices return the headers only (the MAC is
				// there), name the probe by its token, and come on failure
				// and delay.
				opts.DSN = &smtpsend.DSN{EnvelopeID: p.Token}
			}
			sent, deferred, err := submit(ctx, t, opts, smtpsend.Message{
				From: t.Sender.Address,
				To:   []string{t.Receiver.Address},
				Data: p.Build(t.Receiver.MACKey),
			}, rec, logger)
			done <- submitted{sent, deferred, err}
		}()
		var sub *submitted
		select {
		case sent = <-accepted:
		case r := <-done:
			sub = &r
		}
		if sub != nil {
			res.Deferrals = sub.deferred.count
			if sub.err != nil {
				return nil, steps.Fail(ctx, steps.SMTPSubmit, "", sub.err)
			}
			sent = sub.sent
		}
		// Bounded by smtpsend's quitTimeout and ctx, so that the probe
		// never returns with the sending connection open.
		join = func() deferral {
			if sub == nil {
				r := <-done
				sub = &r
			}
			return sub.deferred
		}
	}

	waitCtx, cancelWait := context.WithDeadline(ctx, sent.AcceptedAt.Add(t.DeliveryTimeout))
	accept := func(header []byte) bool {
		got, err := probemsg.Parse(header, t.Receiver.MACKey)
		// Only this probe's own, authenticated message is accepted: a
		// look-alike or an older probe is never taken as this arrival.
		return err == nil && got.Token == p.Token && got.SentAt.Equal(p.SentAt)
	}
	var arrival arrival
	if nbox == nil {
		arrival, err = sess.Wait(waitCtx, sent.DataEnd, p.Token, accept)
	} else {
		nw := &noticeWatch{key: t.Receiver.MACKey, token: p.Token}
		var notices []noticeRef
		arrival, notices, err = waitNotices(waitCtx, sent.DataEnd, p.Token, accept, sess, nbox, same, nw, logger)
		cancelWait()
		if bounced := noticesEnd(ctx, t, nbox, nw, notices, p, res, err == nil, logger); bounced != nil {
			res.Deferrals = join().count
			res.Total = time.Since(res.Start)
			return nil, bounced
		}
	}
	cancelWait()
	deferred := join()
	res.Deferrals = deferred.count
	res.Total = time.Since(res.Start)
	if err != nil {
		se := steps.Fail(ctx, steps.DeliveryWait, "", err)
		err = se
		if se.Code == steps.CodeSearch {
			missed = &lateProbe{token: p.Token, sentAt: p.SentAt}
			if se.Type == steps.TypeNotFound {
				res.Placement = PlacementMissing
			}
		}
		return missed, err
	}
	res.Placement = string(arrival.Placement)
	if arrival.Placement == imapwatch.PlacementJunk {
		logger.Info("probe found in a junk folder", zap.String("target", t.Name), zap.String("folder", arrival.Folder))
	}
	res.Method, res.Uncertainty = arrival.Method, arrival.Uncertainty
	res.IdleNoPush = arrival.IdleNoPush
	res.AcceptedAt, res.ArrivedAt = sent.AcceptedAt, arrival.SeenAt

	if arrival.SeenAt.Add(arrival.Uncertainty).Before(p.SentAt) {
		// Seen before the probe was even sent: clock trouble or a
		// duplicate, never a negative latency.
		return nil, steps.Fail(ctx, steps.DeliveryWait, steps.TypeProtocol,
			fmt.Errorf("message seen %s before it was sent", p.SentAt.Sub(arrival.SeenAt)))
	}
	latency, unc, early := latencyWindow(sent, arrival.SeenAt, arrival.Uncertainty)
	res.Uncertainty, res.BeforeReply = unc, early
	res.Delivered, res.DeliveryLatency = true, latency
	if deferred.count > 0 {
		res.DeferredFor = arrival.SeenAt.Sub(deferred.first)
	}
	readMessage(res, t, arrival.Header, submitStart(rec, p.SentAt), logger)
	// Before the cleanup, while the probe's UID still names it.
	var tab imapwatch.Placement
	tab, res.tabCommands = gmailTabPlacement(ctx, t, sess, arrival, logger, tr)
	if tab != "" {
		res.Placement = string(tab)
	}

	var cleanupErr error
	switch t.Cleanup {
	case CleanupKeep:
	case CleanupMove:
		cleanupErr = sess.Move(ctx, arrival, t.CleanupFolder)
	default:
		cleanupErr = sess.Delete(ctx, arrival)
	}
	if cleanupErr != nil {
		return nil, steps.Fail(ctx, t.Receiver.deleteStep(), "", cleanupErr)
	}
	return nil, nil
}

// latencyWindow turns the arrival window (seen ± unc) into the delivery
// latency counted from the server's acceptance, with its uncertainty. The
// window never starts before the end of DATA (the mailbox sessions clamp
// it there), but it can end before the 250 reply was read: a server that
// delivers before replying. The latency is then reported as 0, never
// negative, and the uncertainty widened so that 0 ± unc still holds the
// whole window; early says so.
func latencyWindow(sent smtpsend.Result, seen time.Time, unc time.Duration) (latency, u time.Duration, early bool) {
	latency = seen.Sub(sent.AcceptedAt)
	if latency >= 0 {
		return latency, unc, false
	}
	lo, hi := latency-unc, latency+unc
	return 0, max(-lo, hi), true
}

// connectStep is the first step of a's mailbox session.
func (a *Account) connectStep() string {
	switch a.Retrieval {
	case RetrievalPOP3:
		return steps.POP3Connect
	case RetrievalGraph:
		return steps.GraphList
	case RetrievalGmailAPI:
		return steps.GmailAPIList
	}
	return steps.IMAPConnect
}

func (a *Account) deleteStep() string {
	switch a.Retrieval {
	case RetrievalPOP3:
		return steps.POP3Delete
	case RetrievalGraph:
		return steps.GraphDelete
	case RetrievalGmailAPI:
		return steps.GmailAPIDelete
	}
	return steps.IMAPDelete
}
