// Package pop3watch is the receiving side of a probe over POP3: it records
// which messages the maildrop held before the probe was sent, polls for the
// probe with a new session each time, times its arrival, and removes exactly
// that message afterwards.
//
// POP3 shows each session a snapshot of the maildrop taken at login, and
// applies deletions only when QUIT is acknowledged. So every poll is a new
// session (connect, login, UIDL), no session is kept while waiting (it would
// hold the maildrop lock and never see new mail), and the session that found
// the probe is kept open so that its DELE and QUIT remove exactly the message
// that session listed.
//
// Only headers are read (TOP n 0), and whole messages (RETR) only of notices
// watched for (notice.go: multipart/report, at most dsn.MaxSize), and only
// of messages that were not in the maildrop before the probe was sent, or, for
// the housekeeping FindProbes, at most a bounded number per call. Every network
// wait ends when the context of the call, or the context given to Open, ends.
package pop3watch // import "github.com/emailqos/emailqosreceiver/internal/pop3watch"

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/emailqos/emailqosreceiver/internal/learn"
	"github.com/emailqos/emailqosreceiver/internal/pop3"
	"github.com/emailqos/emailqosreceiver/internal/saslx"
	"github.com/emailqos/emailqosreceiver/internal/steps"
	"github.com/emailqos/emailqosreceiver/internal/transcript"
	"github.com/emailqos/emailqosreceiver/internal/transport"
)

// Step names of the POP3 side, from internal/steps (values of the `step`
// metric attribute in metadata.yaml), with what each one times here.
const (
	POP3Connect = steps.POP3Connect // TCP connect and greeting of the first session
	POP3TLS     = steps.POP3TLS     // implicit TLS handshake, or STLS with its handshake
	POP3Login   = steps.POP3Login   // USER/PASS or AUTH of the first session only
	POP3List    = steps.POP3List    // UIDL, accumulated over the baseline and every poll
	POP3Fetch   = steps.POP3Fetch   // TOP n 0 of candidates during Wait, accumulated
	POP3Delete  = steps.POP3Delete  // DELE of the probe
	POP3Quit    = steps.POP3Quit    // the QUIT that ends the probe's session and commits the DELE
)

const (
	defaultPollInterval = 5 * time.Second
	// firstInterval is the first gap of the poll schedule; gaps double up
	// to PollInterval. Each poll is a whole session, so it starts a little
	// slower than IMAP's NOOP schedule.
	firstInterval = 100 * time.Millisecond
	// denseGap separates the polls where arrivals are expected: a POP3
	// poll is a whole session (connect, login, UIDL), several round trips
	// and a login on the server, so it is not run as often as a NOOP.
	denseGap = 25 * time.Millisecond
	// quitTimeout bounds the QUIT of a session with nothing to delete: its
	// outcome does not matter, and a slow one must not eat into the wait.
	quitTimeout = 5 * time.Second
	// maxLoginDelay caps what a server's LOGIN-DELAY can impose on the poll
	// schedule: beyond it the delivery timeout would be spent waiting anyway.
	maxLoginDelay = time.Hour
	// minStall is the least time a poll must have been running when the
	// deadline ends it for Wait to blame the server (code 3 timeout) rather
	// than report the probe not found: well above what a healthy server
	// needs for a whole session, even with many new messages to read.
	minStall = 5 * time.Second
	// defaultFindLimit bounds the headers FindProbes reads when no limit is
	// given.
	defaultFindLimit = 64
)

// Options configures a Session.
type Options struct {
	// Endpoint is the POP3 server. Security none, starttls (STLS, which must
	// be offered: the session never continues in clear) or tls.
	Endpoint transport.Endpoint
	// Credentials sign in with USER/PASS, or with AUTH XOAUTH2 (or
	// Mechanism) when they hold a Token. A Token error is typed by
	// TokenType, else by its *steps.Error or *oauth.Error, else
	// token_unavailable.
	saslx.Credentials
	// AllowPlaintextAuth permits credentials on an unencrypted connection;
	// only for a user who configured security none explicitly.
	AllowPlaintextAuth bool
	// PollInterval is the upper bound between the starts of two polls
	// (default 5s). A server's LOGIN-DELAY (RFC 2449) can only widen it.
	PollInterval time.Duration
	// Learner holds where this direction's arrivals fell (package learn):
	// polls come every denseGap where they are expected. nil: a fresh one.
	Learner *learn.Learner
	Logger  *zap.Logger
	// Transcript, when set, records every connection's conversation
	// (redacted).
	Transcript *transcript.Transcript
}

// Arrival describes the probe found by Wait.
type Arrival struct {
	// UID is the message's UIDL unique-id.
	UID string
	// SeenAt is the best estimate of when the message became visible to a
	// POP3 client; it did so within SeenAt ± Uncertainty. The window runs
	// from the snapshot of the last session that did not list the message
	// to the snapshot of the session that first listed it; each snapshot is
	// bounded by the session's last authentication line and its UIDL reply
	// (conn.snap). SeenAt lies between the estimated snapshots, the +OKs
	// (never before the end of DATA), and SeenAt ± Uncertainty covers the
	// bounds.
	SeenAt      time.Time
	Uncertainty time.Duration
	// Header is the probe's header block as TOP returned it, for the caller
	// to verify.
	Header []byte
}

// Session watches one maildrop for probes. Its methods are serialised;
// Commands may be called at any time.
type Session struct {
	opts Options
	rec  *steps.Recorder
	log  *zap.Logger

	// life bounds every connection of the session: Open's context, and
	// Close. A kept session outlives the Wait that found the probe.
	life       context.Context
	lifeCancel context.CancelFunc

	cmds atomic.Int64

	mu sync.Mutex
	// held is the open session, if any: the one whose poll found the probe,
	// or the one FindProbes scanned.
	held *conn
	// baseline holds the UIDs listed before the probe was sent: none of
	// them can be the probe.
	baseline map[string]struct{}
	// lastSnap is the snapshot (conn.snap) of the last session whose
	// listing is known: a message it did not list became visible after it.
	lastSnap snap
	// stallAfter is max(PollInterval, minStall); a field for tests.
	stallAfter time.Duration
	// lastLogin and loginDelay enforce the server's LOGIN-DELAY.
	lastLogin  time.Time
	loginDelay time.Duration
	// owned maps the UIDs found by Wait or FindProbes to the token their
	// header carried: only they may be deleted, and a new session deletes
	// one only if its header still carries that token.
	owned map[string]string
	// notProbe holds UIDs whose header has no X-Emailqos-Token field at
	// all; they are never read again by this session.
	notProbe map[string]struct{}
	// noticeOwned maps the notices kept by a NoticeFunc to the digest of
	// their header: only they, besides owned, may be deleted, and a new
	// session deletes one only if its header is still the same.
	noticeOwned map[string][32]byte
	// notNotice holds UIDs whose header is not a multipart/report.
	notNotice map[string]struct{}
	closed    bool
}

var errClosed = errors.New("pop3watch: session closed")

// Open connects, authenticates and lists the maildrop's UIDs as the
// baseline: messages listed now, before the probe is sent, are never taken
// for it. It then quits, deleting nothing, so that no maildrop lock is held
// while the probe travels. Failures are code 3 (steps.CodeMailboxConnect).
//
// ctx bounds the whole session, not only Open: its connections are closed
// when it ends. Pass the probe's context.
func Open(ctx context.Context, opts Options, rec *steps.Recorder) (*Session, error) {
	if err := opts.normalize(); err != nil {
		return nil, err
	}
	s := &Session{
		opts:        opts,
		rec:         rec,
		log:         opts.Logger,
		baseline:    make(map[string]struct{}),
		owned:       make(map[string]string),
		notProbe:    make(map[string]struct{}),
		noticeOwned: make(map[string][32]byte),
		notNotice:   make(map[string]struct{}),
		stallAfter:  max(opts.PollInterval, minStall),
	}
	s.life, s.lifeCancel = context.WithCancel(ctx)
	pc, err := s.open(ctx, rec)
	if err != nil {
		s.lifeCancel()
		return nil, err
	}
	// The capabilities after login carry the per-user LOGIN-DELAY, which
	// the poll schedule must respect or the server refuses the next login.
	var caps map[string][]string
	err = s.bound(ctx, pc, func() (err error) {
		caps, err = pc.c.Capabilities()
		return err
	})
	if err != nil {
		pc.close()
		// Classified before the session's life ends, or the failure would
		// read as a cancellation.
		se := steps.Fail(s.failCtx(ctx), POP3Login, pop3.ErrorType(err), err)
		s.lifeCancel()
		return nil, se
	}
	s.loginDelay = loginDelay(caps)
	if s.loginDelay > s.opts.PollInterval {
		s.log.Warn("POP3 server imposes a login delay longer than the poll interval",
			zap.String("address", s.opts.Endpoint.Address), zap.Duration("login_delay", s.loginDelay),
			zap.Duration("poll_interval", s.opts.PollInterval))
	}
	if err := s.list(ctx, pc, rec); err != nil {
		pc.close()
		se := steps.Fail(s.failCtx(ctx), POP3List, pop3.ErrorType(err), err)
		s.lifeCancel()
		return nil, se
	}
	for _, id := range pc.ids {
		s.baseline[id.UID] = struct{}{}
	}
	s.lastSnap = pc.snap()
	s.quietQuit(ctx, pc)
	return s, nil
}

func (o *Options) normalize() error {
	invalid := func(code int, format string, args ...any) error {
		return &steps.Error{Step: POP3Connect, Code: code, Type: steps.TypeConfig, Err: fmt.Errorf(format, args...)}
	}
	if o.Endpoint.Address == "" {
		return invalid(steps.CodeMissingParams, "pop3: no server address")
	}
	if o.Username == "" && o.Token == nil {
		return invalid(steps.CodeMissingParams, "pop3: no username")
	}
	switch o.Endpoint.Security {
	case transport.None, transport.STARTTLS, transport.TLS:
	default:
		return invalid(steps.CodeInvalidInstance, "pop3: unknown security %q", o.Endpoint.Security)
	}
	if o.PollInterval <= 0 {
		o.PollInterval = defaultPollInterval
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	return nil
}

// loginDelay reads RFC 2449's "LOGIN-DELAY <seconds>".
func loginDelay(caps map[string][]string) time.Duration {
	args := caps["LOGIN-DELAY"]
	if len(args) == 0 {
		return 0
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n <= 0 {
		return 0
	}
	return min(time.Duration(n)*time.Second, maxLoginDelay)
}

// Commands returns the number of POP3 commands sent over all the sessions
// so far.
func (s *Session) Commands() int {
	return int(s.cmds.Load())
}

// Close quits the open session, if any. It is safe to call more than once
// and after failures. A QUIT that fails while deletions are pending is code
// 5 (the deletions did not happen); otherwise a failed QUIT is only logged.
// The QUIT of the session that found the probe is the pop3.quit step.
func (s *Session) Close(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	defer s.lifeCancel()
	pc := s.held
	s.held = nil
	if pc == nil {
		return nil
	}
	rec := s.rec
	if !pc.probe {
		rec = nil
	}
	err := s.quit(ctx, pc, rec)
	if err == nil {
		return nil
	}
	if pc.marked > 0 {
		return steps.Fail(s.failCtx(ctx), POP3Quit, pop3.ErrorType(err), err)
	}
	s.log.Debug("POP3 QUIT failed", zap.Error(err))
	return nil
}

// failCtx is the context whose end explains a failure: the call's, or the
// session's life when Open's context or Close ended it.
func (s *Session) failCtx(ctx context.Context) context.Context {
	if ctx.Err() == nil && s.life.Err() != nil {
		return s.life
	}
	return ctx
}
