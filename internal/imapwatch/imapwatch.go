// Package imapwatch is the receiving side of a probe over IMAP: it opens the
// mailbox before the probe is sent, notices the probe's arrival with IDLE or
// by polling, times it, and removes exactly that message afterwards.
//
// Every blocking call is bounded by a context: imapclient has no deadlines of
// its own, so the connection is closed when the context of the call ends.
package imapwatch // import "github.com/emailqos/emailqosreceiver/internal/imapwatch"

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
	"go.uber.org/zap"

	"github.com/emailqos/emailqosreceiver/internal/learn"
	"github.com/emailqos/emailqosreceiver/internal/saslx"
	"github.com/emailqos/emailqosreceiver/internal/steps"
	"github.com/emailqos/emailqosreceiver/internal/transcript"
	"github.com/emailqos/emailqosreceiver/internal/transport"
)

// Method is how the arrival of a probe is detected.
type Method string

const (
	// MethodAuto is IDLE when the server offers it, else poll.
	MethodAuto Method = "auto"
	// MethodIdle waits for the server to announce new messages (RFC 2177).
	MethodIdle Method = "idle"
	// MethodPoll sends NOOP, densely at first, then every PollInterval.
	MethodPoll Method = "poll"
	// MethodPrecise sends NOOP every PreciseInterval.
	MethodPrecise Method = "precise"
)

const (
	defaultMailbox         = "INBOX"
	defaultPollInterval    = 5 * time.Second
	defaultPreciseInterval = 10 * time.Millisecond
	// firstInterval is the first gap of the poll schedule and of the
	// re-search schedule; both double up to PollInterval.
	firstInterval = 25 * time.Millisecond
	// idleRefresh re-issues IDLE at least this often, well inside RFC 2177's
	// 29 minutes and the idle timeouts of common NATs (350 s on AWS).
	idleRefresh = 5 * time.Minute
	// maxHeaderBytes bounds what is read of a hit's header block.
	maxHeaderBytes = 64 << 10
	// maxHits bounds the hits fetched by one search; more are fetched by
	// the next.
	maxHits = 64
	// maxReconnects bounds the reconnects of one Wait, against a server that
	// accepts and drops every connection.
	maxReconnects = 3
)

// Options configures a Session.
type Options struct {
	Endpoint transport.Endpoint
	// Credentials sign in with LOGIN, or with AUTHENTICATE XOAUTH2 or
	// OAUTHBEARER when they hold a Token.
	saslx.Credentials
	// AllowPlaintextAuth permits credentials on an unencrypted connection;
	// only for a user who configured security none explicitly.
	AllowPlaintextAuth bool
	// Mailbox is watched; "INBOX" when empty.
	Mailbox string
	// Method is "auto" when empty.
	Method Method
	// PollInterval is the upper bound between two polls (default 5s). In
	// idle mode IDLE is re-issued as often, which bounds the delay should a
	// server fail to announce a message (its answer to DONE reports it).
	PollInterval time.Duration
	// PreciseInterval is the fixed interval of MethodPrecise (default 10ms).
	PreciseInterval time.Duration
	// JunkFolders are watched besides Mailbox, so that a probe filed as
	// spam is reported as delivered there (Arrival.Placement) instead of
	// lost: their UIDNEXT is asked for with STATUS at Open, every
	// PollInterval (at least 1s) and once more when the wait times out, and
	// a folder whose UIDNEXT moved is examined and searched. DiscoverJunk
	// replaces them with the folders found at Open: those marked \Junk
	// (RFC 6154), else those named like a junk folder (Junk, Spam, ...).
	JunkFolders  []string
	DiscoverJunk bool
	// Search, when set, is the account's SearchHint, shared by every
	// session reading the mailbox: how housekeeping searches for probes,
	// learned from the first probe found.
	Search *SearchHint
	// Learner holds what auto detection learned of this direction's
	// arrivals and of the server's IDLE (internal/learn); nil: a fresh
	// one, so nothing is carried from one session to the next.
	Learner *learn.Learner
	Logger  *zap.Logger
	// Transcript, when set, records every connection's conversation
	// (redacted), reconnects included.
	Transcript *transcript.Transcript
}

// Arrival describes the probe found by Wait.
type Arrival struct {
	UID imap.UID
	// SeenAt is the best estimate of the instant the message became visible
	// to the client; it did so within SeenAt ± Uncertainty as far as the
	// client can tell: the window runs from the last check that did not
	// show it (never before the end of DATA, see WaitAfter) to the response
	// that did. With IDLE the window ends at the EXISTS announcing it, and
	// is not shrunk to it: how long the server held the announcement
	// (Dovecot 0.5 s, Cyrus until its next poll) is not visible to a
	// client, so the uncertainty must cover it.
	SeenAt      time.Time
	Uncertainty time.Duration
	// Method is what saw it: "idle", or "poll"/"precise" for a command
	// response (also in idle mode, when the message showed up between two
	// IDLEs; "precise" in auto mode's dense window).
	Method Method
	// IdleNoPush is true when this mailbox's IDLE was found never to
	// announce arrivals (Learner): auto then polls instead.
	IdleNoPush bool
	// Header is the probe's header block, for the caller to verify.
	Header []byte
	// Placement is where the probe was found, Folder the mailbox it is in
	// (the one to clean it up from).
	Placement Placement
	Folder    string
}

// Session is an IMAP connection watching one mailbox for probes. Its methods
// are serialised; Commands may be called at any time.
type Session struct {
	opts Options
	rec  *steps.Recorder
	log  *zap.Logger

	// life bounds every connection of the session: Open's context, and
	// Close.
	life       context.Context
	lifeCancel context.CancelFunc

	cmds atomic.Int64
	// sink, when set, also counts the commands: those of the probe holding
	// a shared session (Member.Commands).
	sink atomic.Pointer[atomic.Int64]
	tl   *timeline

	mu          chanMutex // a channel, so that a shared session's probe can wait for it in a select
	c           *imapclient.Client
	conn        *watchConn
	fix         *emptyRespConn // what imapclient writes to; nil after STARTTLS
	connCancel  context.CancelFunc
	caps        imap.CapSet
	broken      bool // the connection is unusable: lost, or closed to honour a context
	dropped     bool // ... and it was the server's doing
	idle        *imapclient.IdleCommand
	idleSince   time.Time
	idleRefresh time.Duration
	method      Method // resolved: idle, poll or precise
	// Auto detection: what this direction learned, whether the dense
	// window is being polled, and the last IDLE's end (DONE sent and
	// answered) and start, to tell an IDLE that kept quiet.
	learner     *learn.Learner
	dense       bool
	doneSent    time.Time
	doneResp    time.Time
	idleFrom    time.Time
	uidValidity uint32
	baseline    imap.UID
	trash       string
	created     map[string]bool // folders createOnce made (or tried to)
	found       map[imap.UID]struct{}
	closed      bool

	// Placement: the junk folders watched, when they were last asked for
	// their UIDNEXT, and the probes found in them, by folder.
	junk     []*junkFolder
	junkLast time.Time
	foundIn  map[string]map[imap.UID]struct{}
	// selected is the mailbox selected ("" none), selectedRO whether
	// read-only; watchedNext is the watched mailbox's UIDNEXT at its last
	// SELECT; leftCount and leftFloor are its timeline's state when a junk
	// folder was selected instead.
	selected    string
	selectedRO  bool
	watchedNext imap.UID
	leftCount   uint32
	leftFloor   time.Time

	// share, when set, makes the session shared (share.go). more is
	// whether the last search had more hits than were fetched. lostNow
	// mirrors dropped for a shared session's waiters, which read it
	// without holding the session.
	share   *share
	more    bool
	lostNow atomic.Bool
}

var errClosed = errors.New("imapwatch: session closed")

// Open connects, authenticates and selects the mailbox, and remembers
// UIDNEXT as the baseline: only messages from then on can be the probe. In
// idle mode IDLE is running when Open returns, so the probe, sent after,
// is announced to a session already listening.
//
// ctx bounds the whole session, not only Open: its connections are closed
// when it ends. Pass the probe's context.
func Open(ctx context.Context, opts Options, rec *steps.Recorder) (*Session, error) {
	return openSession(ctx, opts, rec, nil, nil)
}

// openSession is Open; sh, when set, makes the session shared, with m its first
// member.
func openSession(ctx context.Context, opts Options, rec *steps.Recorder, sh *share, m *Member) (*Session, error) {
	if err := opts.normalize(); err != nil {
		return nil, err
	}
	s := &Session{
		opts:        opts,
		rec:         rec,
		log:         opts.Logger,
		tl:          newTimeline(),
		idleRefresh: idleRefresh,
		found:       make(map[imap.UID]struct{}),
		foundIn:     make(map[string]map[imap.UID]struct{}),
		learner:     opts.Learner,
		mu:          make(chanMutex, 1),
	}
	if s.learner == nil {
		s.learner = &learn.Learner{}
	}
	if sh != nil {
		// Shared: the session outlives the probe that opened it.
		s.share = sh
		s.life, s.lifeCancel = context.WithCancel(context.WithoutCancel(ctx))
		s.actAs(m)
	} else {
		s.life, s.lifeCancel = context.WithCancel(ctx)
	}
	if err := s.connect(ctx, rec, false, time.Time{}); err != nil {
		s.lifeCancel()
		return nil, err
	}
	if err := s.resolveMethod(); err != nil {
		s.dropConn()
		s.lifeCancel()
		return nil, err
	}
	if err := s.openJunk(ctx); err != nil {
		s.dropConn()
		s.lifeCancel()
		return nil, steps.Fail(ctx, steps.IMAPSelect, imapType(err), err)
	}
	if s.method == MethodIdle && !s.idleBuysNothing(time.Now(), time.Time{}) {
		if err := s.startIdle(ctx); err != nil {
			s.dropConn()
			s.lifeCancel()
			return nil, steps.Fail(ctx, steps.IMAPSelect, imapType(err), err)
		}
	}
	return s, nil
}

func (o *Options) normalize() error {
	invalid := func(code int, format string, args ...any) error {
		return &steps.Error{Step: steps.IMAPConnect, Code: code, Type: steps.TypeConfig, Err: fmt.Errorf(format, args...)}
	}
	if o.Endpoint.Address == "" {
		return invalid(steps.CodeMissingParams, "imap: no server address")
	}
	if o.Username == "" {
		return invalid(steps.CodeMissingParams, "imap: no username")
	}
	switch o.Endpoint.Security {
	case transport.None, transport.STARTTLS, transport.TLS:
	default:
		return invalid(steps.CodeInvalidInstance, "imap: unknown security %q", o.Endpoint.Security)
	}
	if o.Method == "" {
		o.Method = MethodAuto
	}
	switch o.Method {
	case MethodAuto, MethodIdle, MethodPoll, MethodPrecise:
	default:
		return invalid(steps.CodeInvalidInstance, "imap: unknown method %q", o.Method)
	}
	if o.Mailbox == "" {
		o.Mailbox = defaultMailbox
	}
	if o.PollInterval <= 0 {
		o.PollInterval = defaultPollInterval
	}
	if o.PreciseInterval <= 0 {
		o.PreciseInterval = defaultPreciseInterval
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	return nil
}

func (s *Session) resolveMethod() error {
	hasIdle := s.caps.Has(imap.CapIdle)
	switch s.opts.Method {
	case MethodAuto:
		s.method = MethodPoll
		if hasIdle && !s.learner.IdleUntrusted() {
			s.method = MethodIdle
		}
	case MethodIdle:
		if !hasIdle {
			return steps.New(steps.IMAPSelect, steps.TypeConfig, errors.New("imap: method idle configured but the server does not offer IDLE"))
		}
		s.method = MethodIdle
	default:
		s.method = s.opts.Method
	}
	return nil
}

// connect dials, authenticates and selects the mailbox. rec is nil on a
// reconnect, so that the connect steps keep describing the first connection;
// a reconnect also checks that UIDVALIDITY did not change, since the baseline
// would then mean nothing.
func (s *Session) connect(ctx context.Context, rec *steps.Recorder, reconnect bool, floor time.Time) (err error) {
	ep := s.opts.Endpoint
	fail := func(step, typ string, err error) error {
		s.dropConn()
		return steps.Fail(ctx, step, typ, err)
	}

	// The connection lives as long as the session; only the dial itself is
	// also bounded by ctx.
	cctx, cancel := context.WithCancel(s.life)
	stop := context.AfterFunc(ctx, cancel)
	raw, err := transport.Dial(cctx, ep, steps.IMAPConnect, steps.IMAPTLS, rec)
	if !stop() && err == nil {
		raw.Close()
		err = context.Cause(ctx)
	}
	if err != nil {
		cancel()
		step := steps.IMAPConnect
		var op *net.OpError
		if ep.Security == transport.TLS && !(errors.As(err, &op) && op.Op == "dial") && ctx.Err() == nil {
			step = steps.IMAPTLS
		}
		return steps.Fail(ctx, step, "", err)
	}
	s.conn = &watchConn{Conn: raw}
	s.connCancel = cancel
	s.broken, s.dropped, s.idle = false, false, nil
	s.lostNow.Store(false)
	lines := &lineLimit{}
	copts := &imapclient.Options{
		UnilateralDataHandler: &imapclient.UnilateralDataHandler{
			Mailbox: func(d *imapclient.UnilateralDataMailbox) {
				if d.NumMessages != nil {
					s.tl.onExists(*d.NumMessages)
				}
			},
			Expunge: s.tl.onExpunge,
		},
		// The line limit comes first: its error stops the other writers
		// and fails the read (imapclient tees what it reads into here).
		DebugWriter: io.MultiWriter(lines, newCmdCounter(&s.cmds, &s.sink)),
	}
	if tw := s.opts.Transcript.Stream(transcript.IMAP).IMAPDebug(); tw != nil {
		// The debug writer is the only place that sees the plaintext
		// after STARTTLS; the transcript redacts what it keeps.
		copts.DebugWriter = io.MultiWriter(copts.DebugWriter, tw)
	}

	start := time.Now()
	s.fix = nil // set below when imapclient writes to s.conn in plaintext
	if ep.Security == transport.STARTTLS {
		// imapclient can only upgrade a connection it has just created; it
		// sends STARTTLS before anything else, and a refusal ends the
		// connection before any credential is sent.
		tlsConf := ep.RecordingTLSConfig(rec, "imap")
		err = s.bound(ctx, func() error {
			c, err := imapclient.NewStartTLS(s.conn, &imapclient.Options{
				UnilateralDataHandler: copts.UnilateralDataHandler,
				DebugWriter:           copts.DebugWriter,
				TLSConfig:             tlsConf,
			})
			s.c = c
			return err
		})
		rec.Add(steps.IMAPTLS, start, time.Since(start))
		if err != nil {
			typ := steps.Classify(err)
			if be := transport.Exceeded(s.conn); be != nil {
				// go-imap flattens the read error; the budget's own
				// error says what happened.
				typ, err = steps.TypeProtocol, be
			} else if lines.exceeded() {
				typ, err = steps.TypeProtocol, errLineTooLong
			} else if typ == steps.TypeProtocol {
				// Refused, not offered, or PREAUTH in clear: no TLS.
				typ = steps.TypeTLS
				err = fmt.Errorf("imap: STARTTLS refused or not offered: %w", err)
			}
			return fail(steps.IMAPTLS, typ, err)
		}
	} else {
		s.fix = &emptyRespConn{Conn: s.conn}
		s.c = imapclient.New(s.fix, copts)
	}

	var caps imap.CapSet
	err = s.bound(ctx, func() error {
		if err := waitGreeting(s.c); err != nil {
			return err
		}
		caps = s.c.Caps()
		if caps == nil {
			return errors.New("imap: no CAPABILITY")
		}
		return nil
	})
	if ep.Security != transport.STARTTLS {
		rec.Add(steps.IMAPConnect, start, time.Since(start))
	}
	if err != nil {
		return fail(steps.IMAPConnect, imapType(err), err)
	}

	if s.c.State() == imap.ConnStateNotAuthenticated {
		if caps, err = s.login(ctx, rec, caps); err != nil {
			s.dropConn()
			return err
		}
	}
	s.caps = caps

	s.tl.beginSelect()
	start = time.Now()
	var data *imap.SelectData
	err = s.bound(ctx, func() error {
		var err error
		data, err = s.c.Select(s.opts.Mailbox, nil).Wait()
		return err
	})
	resp := time.Now()
	rec.Add(steps.IMAPSelect, start, resp.Sub(start))
	switch {
	case err != nil:
		return fail(steps.IMAPSelect, imapType(err), err)
	case data.UIDValidity == 0 || data.UIDNext == 0:
		return fail(steps.IMAPSelect, steps.TypeProtocol, errors.New("imap: SELECT reported no UIDVALIDITY or UIDNEXT"))
	case reconnect && data.UIDValidity != s.uidValidity:
		return fail(steps.IMAPSelect, steps.TypeProtocol, fmt.Errorf("imap: UIDVALIDITY of %q changed from %d to %d", s.opts.Mailbox, s.uidValidity, data.UIDValidity))
	}
	if !reconnect {
		s.uidValidity, s.baseline = data.UIDValidity, data.UIDNext
	}
	s.selected, s.selectedRO, s.watchedNext = s.opts.Mailbox, false, data.UIDNext
	s.noteNext(data.UIDNext)
	s.tl.finishSelect(start, resp, data.NumMessages, reconnect, floor)
	return nil
}

// login authenticates and returns the capabilities that follow.
func (s *Session) login(ctx context.Context, rec *steps.Recorder, caps imap.CapSet) (imap.CapSet, error) {
	fail := func(typ string, err error) (imap.CapSet, error) {
		return nil, steps.Fail(ctx, steps.IMAPLogin, typ, transcript.RedactError(err, s.opts.Username, s.opts.Password))
	}
	if s.opts.Endpoint.Security == transport.None && !s.opts.AllowPlaintextAuth {
		return fail(steps.TypeAuth, errors.New("imap: refusing to send credentials over an unencrypted connection"))
	}
	var bearer sasl.Client
	if s.opts.Token != nil {
		token, err := s.opts.Token(ctx)
		if err != nil {
			typ := steps.TypeTokenUnavailable
			if s.opts.TokenType != nil {
				typ = s.opts.TokenType(err)
			}
			return fail(typ, err)
		}
		if bearer, _, err = saslx.Pick(caps.AuthMechanisms(), s.opts.Username, token, s.opts.Mechanism); err != nil {
			return fail(steps.TypeAuth, err)
		}
		// The token is a secret like the password: keep it out of errors.
		fail = func(typ string, err error) (imap.CapSet, error) {
			return nil, steps.Fail(ctx, steps.IMAPLogin, typ, transcript.RedactError(err, s.opts.Username, token))
		}
	}
	start := time.Now()
	err := s.bound(ctx, func() error {
		if bearer != nil {
			if err := s.c.Authenticate(imapSASL{Client: bearer, fix: s.fix}); err != nil {
				return saslx.Explain(bearer, err)
			}
		} else if caps.Has(imap.CapLoginDisabled) {
			if !hasMech(caps, "PLAIN") {
				return errNoMech
			}
			if err := s.c.Authenticate(sasl.NewPlainClient("", s.opts.Username, s.opts.Password)); err != nil {
				return err
			}
		} else if err := s.c.Login(s.opts.Username, s.opts.Password).Wait(); err != nil {
			return err
		}
		if caps = s.c.Caps(); caps == nil {
			return errors.New("imap: no CAPABILITY after login")
		}
		return nil
	})
	rec.Add(steps.IMAPLogin, start, time.Since(start))
	if err != nil {
		typ := imapType(err)
		var ie *imap.Error
		var be *saslx.BearerError
		switch {
		case errors.Is(err, errNoMech):
			typ = steps.TypeAuth
		case errors.As(err, &ie) && ie.Type == imap.StatusResponseTypeNo && typ == steps.TypeRejected:
			// A NO to LOGIN/AUTHENTICATE without a code that names
			// another cause: the credentials.
			typ = steps.TypeAuth
		case errors.As(err, &be) && (typ == steps.TypeRejected || typ == ""):
			// The server said in its SASL challenge that it refused the
			// token; whatever its final reply, that is the cause.
			typ = steps.TypeAuth
		}
		return fail(typ, err)
	}
	return caps, nil
}

var errNoMech = errors.New("imap: LOGIN disabled and AUTHENTICATE PLAIN not offered")

func hasMech(caps imap.CapSet, mech string) bool {
	for _, m := range caps.AuthMechanisms() {
		if strings.EqualFold(m, mech) {
			return true
		}
	}
	return false
}

// imapType types a server's refusal by its RFC 5530 response code; other
// errors are left to steps.Fail. A refusal without a telling code is
// rejected (login turns a NO into auth).
func imapType(err error) string {
	var ie *imap.Error
	if !errors.As(err, &ie) {
		return ""
	}
	if steps.TooManyConnections(ie.Text) {
		// Dovecot sends its connection limit with [LIMIT], with
		// [UNAVAILABLE] (2.3 login processes) or with no code at all.
		return steps.TypeLimit
	}
	switch ie.Code {
	case imap.ResponseCodeAuthenticationFailed, imap.ResponseCodeAuthorizationFailed, imap.ResponseCodeExpired:
		return steps.TypeAuth
	case imap.ResponseCodeUnavailable:
		return steps.TypeUnavailable
	case imap.ResponseCodeLimit, imap.ResponseCodeOverQuota:
		return steps.TypeLimit
	case imap.ResponseCodeInUse:
		return steps.TypeInUse
	case imap.ResponseCodePrivacyRequired:
		// RFC 5530: refused for lack of privacy; the cure is TLS.
		return steps.TypeTLS
	}
	return steps.TypeRejected
}

// bound runs a blocking client call and closes the connection if ctx ends
// first: that is the only way to make imapclient return from a command sent
// to a silent server.
func (s *Session) bound(ctx context.Context, fn func() error) error {
	conn := s.conn
	if s.share != nil {
		return s.boundShared(ctx, conn, fn)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	err := fn()
	if !stop() {
		s.broken = true
	}
	return err
}

// shareGrace is how long a command of a shared session may go on after
// the context of the probe that sent it was canceled: the command serves
// every probe waiting, and cutting the connection would cost a reconnect
// (another login). A server that does not answer within it is cut off.
const shareGrace = 2 * time.Second

// boundShared is bound on a shared session: the connection is closed
// shareGrace after ctx ends, if the command has not returned by then.
func (s *Session) boundShared(ctx context.Context, conn *watchConn, fn func() error) error {
	var (
		mu    sync.Mutex
		timer *time.Timer
		over  bool
	)
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if over {
			return
		}
		grace := time.Duration(0)
		if !errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
			// Canceled (the probe was done with its wait): the others,
			// and its own housekeeping after, still need the
			// connection. A deadline is the probe's bound and is kept.
			grace = shareGrace
		}
		timer = time.AfterFunc(grace, func() { _ = conn.Close() })
	})
	err := fn()
	stop()
	mu.Lock()
	over = true
	if timer != nil && !timer.Stop() {
		s.broken = true
	}
	mu.Unlock()
	return err
}

// failed decides what a command error means for the connection: anything
// but a server's tagged refusal leaves imapclient unusable. It reports
// whether the server (not our context) ended the connection.
func (s *Session) failed(err error) (lost bool) {
	var ie *imap.Error
	if errors.As(err, &ie) && !s.broken {
		return false
	}
	lost = !s.broken && s.conn != nil && s.conn.lost()
	s.dropConn()
	s.dropped = lost
	s.lostNow.Store(lost)
	return lost
}

// dropConn closes the connection and waits for imapclient's goroutines.
func (s *Session) dropConn() {
	if s.c != nil {
		_ = s.c.Close()
		s.c = nil
	} else if s.conn != nil {
		_ = s.conn.Close()
	}
	if s.idle != nil {
		// Returns at once on a closed client; waits for its goroutine.
		_ = s.idle.Close()
		s.idle = nil
	}
	if s.connCancel != nil {
		s.connCancel()
		s.connCancel = nil
	}
	s.conn = nil
	s.broken = true
	s.selected = ""
	s.tl.setIdling(false)
}

func (s *Session) startIdle(ctx context.Context) error {
	// Set before the command so that updates the server flushes on entering
	// IDLE, even before its continuation, count as announced by IDLE.
	s.tl.setIdling(true)
	start := time.Now()
	var idle *imapclient.IdleCommand
	err := s.bound(ctx, func() error {
		var err error
		idle, err = s.c.Idle()
		return err
	})
	if err != nil {
		s.tl.setIdling(false)
		return err
	}
	s.idle, s.idleSince = idle, start
	return nil
}

func (s *Session) stopIdle(ctx context.Context) error {
	if s.idle == nil {
		return nil
	}
	idle := s.idle
	s.idle = nil
	s.tl.setIdling(false)
	sent := time.Now()
	err := s.bound(ctx, func() error {
		if err := idle.Close(); err != nil {
			return err
		}
		return idle.Wait()
	})
	if err != nil {
		return err
	}
	s.idleFrom, s.doneSent, s.doneResp = s.idleSince, sent, time.Now()
	// Like NOOP, the answer to DONE reports what the server has: a check
	// that holds even for a server that announces nothing while idling.
	s.tl.checkpoint(sent)
	return nil
}

// reconnect replaces a lost connection. Failures are code 3.
func (s *Session) reconnect(ctx context.Context) error {
	floor := s.tl.reconnectFloor()
	s.dropConn()
	s.log.Warn("IMAP connection lost, reconnecting",
		zap.String("address", s.opts.Endpoint.Address), zap.String("mailbox", s.opts.Mailbox))
	if err := s.connect(ctx, nil, true, floor); err != nil {
		return err
	}
	if s.method == MethodIdle && !s.caps.Has(imap.CapIdle) {
		if s.opts.Method != MethodAuto {
			s.dropConn()
			return steps.New(steps.IMAPSelect, steps.TypeConfig, errors.New("imap: server no longer offers IDLE"))
		}
		s.method = MethodPoll
	}
	return nil
}

// Commands returns the number of IMAP commands the session has sent,
// reconnects included.
func (s *Session) Commands() int {
	return int(s.cmds.Load())
}

// Close logs out and closes the connection. It is safe to call more than
// once and after failures; a connection that was already lost is just
// released. A failed LOGOUT is code 5.
func (s *Session) Close(ctx context.Context) error {
	s.lock(ctx)
	defer s.mu.Unlock()
	return s.closeLocked(ctx)
}

func (s *Session) closeLocked(ctx context.Context) error {
	if s.closed {
		return nil
	}
	s.closed = true
	defer s.lifeCancel()
	if s.c == nil || s.broken {
		s.dropConn()
		return nil
	}
	start := time.Now()
	err := s.stopIdle(ctx)
	if err == nil {
		err = s.bound(ctx, func() error { return s.c.Logout().Wait() })
		var ie *imap.Error
		if err != nil && !errors.As(err, &ie) && ctx.Err() == nil && s.conn.lost() {
			// The server hung up after BYE without completing LOGOUT:
			// that is what LOGOUT asked for.
			err = nil
		}
	}
	s.rec.Add(steps.IMAPLogout, start, time.Since(start))
	s.dropConn()
	if err != nil {
		return steps.Fail(ctx, steps.IMAPLogout, imapType(err), err)
	}
	return nil
}

// greetingReads bounds waitGreeting's extra reads (see there).
const greetingReads = 32

// waitGreeting is imapclient's WaitGreeting without its race on a refusal.
// A server that refuses with "* BYE ..." and hangs up (Dovecot's
// mail_max_userip_connections, a shutdown) ends go-imap v2.0.0-beta.8's
// reader right after it recorded the greeting, and WaitGreeting's select
// then picks between the two closed channels at random: half the time it
// answers "connection closed before greeting" and the refusal's text and
// code are lost. Once the reader has ended both outcomes are final, so
// asking again costs nothing and finds the greeting if there was one
// (missed 32 times in a row with probability 2^-32).
func waitGreeting(c *imapclient.Client) error {
	err := c.WaitGreeting()
	var ie *imap.Error
	for i := 0; i < greetingReads && err != nil && !errors.As(err, &ie); i++ {
		err = c.WaitGreeting()
	}
	return err
}
