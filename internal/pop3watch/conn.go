package pop3watch

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/emersion/go-sasl"
	"go.uber.org/zap"

	"github.com/emailqos/emailqosreceiver/internal/oauth"
	"github.com/emailqos/emailqosreceiver/internal/pop3"
	"github.com/emailqos/emailqosreceiver/internal/saslx"
	"github.com/emailqos/emailqosreceiver/internal/steps"
	"github.com/emailqos/emailqosreceiver/internal/transcript"
	"github.com/emailqos/emailqosreceiver/internal/transport"
)

// conn is one POP3 session: one connection, one login, one snapshot of the
// maildrop.
type conn struct {
	c      *pop3.Client
	raw    net.Conn // under any TLS layer: closing it interrupts every wait
	cancel context.CancelFunc
	// broken means the connection cannot be used any more: an I/O error, or
	// closed to honour a context. Its deletions are lost.
	broken  bool
	counted int // commands already added to Session.cmds

	ids  []pop3.MessageID
	nums map[string]int // UID → message number; -1 for a UID listed twice
	// lo is when the login began (LOGIN-DELAY counts from it). authSent
	// and authOK are when the last line of the authentication was sent and
	// its +OK read, listed when the UIDL reply was read: the snapshot
	// lies between authSent and listed (snap).
	lo, authSent, authOK, listed time.Time
	marked                       int  // DELE accepted, waiting for QUIT
	probe                        bool // the session that found the probe
	// verified holds the UIDs whose header this session read and found to
	// be a probe: they may be deleted in it without reading them again.
	verified map[string]bool
}

func (pc *conn) verify(uid string) {
	if pc.verified == nil {
		pc.verified = make(map[string]bool)
	}
	pc.verified[uid] = true
}

// close drops the connection without QUIT, so the server discards any
// deletion of the session.
func (pc *conn) close() {
	if pc.raw != nil {
		// The raw connection first: closing a TLS layer would try to write
		// to a peer that may not be reading.
		_ = pc.raw.Close()
	}
	if pc.c != nil {
		_ = pc.c.Close()
	}
	pc.cancel()
	pc.broken = true
}

// bound runs a client call that must end when ctx ends: the pop3 client has
// no deadlines of its own, so the connection is closed. An I/O error also
// leaves the client unusable (its error is sticky), unlike a -ERR reply.
func (s *Session) bound(ctx context.Context, pc *conn, fn func() error) error {
	raw := pc.raw
	stop := context.AfterFunc(ctx, func() { _ = raw.Close() })
	err := fn()
	if !stop() {
		pc.broken = true
	}
	var perr *pop3.Error
	if err != nil && !errors.As(err, &perr) {
		pc.broken = true
	}
	s.account(pc)
	return err
}

func (s *Session) account(pc *conn) {
	if pc.c == nil {
		return
	}
	n := pc.c.Commands()
	s.cmds.Add(int64(n - pc.counted))
	pc.counted = n
}

// open starts a session: connect, greeting, STLS when configured, login.
// rec receives the connect, TLS and login steps; it is nil for every session
// but the first, whose times are the mailbox's connection times. Failures are
// code 3 *steps.Error.
//
// The connection lives as long as the Session (life), so that the session
// that finds the probe survives the Wait; only its setup is bounded by ctx,
// and each later call by its own context.
func (s *Session) open(ctx context.Context, rec *steps.Recorder) (*conn, error) {
	ep := s.opts.Endpoint
	cctx, cancel := context.WithCancel(s.life)
	pc := &conn{cancel: cancel}
	fail := func(step, typ string, err error) (*conn, error) {
		pc.close()
		return nil, steps.Fail(s.failCtx(ctx), step, typ, err)
	}

	stop := context.AfterFunc(ctx, cancel)
	nc, err := transport.Dial(cctx, ep, POP3Connect, POP3TLS, rec)
	if !stop() && err == nil {
		nc.Close()
		err = context.Cause(ctx)
	}
	if err != nil {
		step := POP3Connect
		var op *net.OpError
		if ep.Security == transport.TLS && !(errors.As(err, &op) && op.Op == "dial") && ctx.Err() == nil {
			step = POP3TLS
		}
		return fail(step, "", err)
	}
	pc.raw = nc
	if tc, ok := nc.(*tls.Conn); ok {
		pc.raw = tc.NetConn()
	}

	start := time.Now()
	err = s.bound(ctx, pc, func() (err error) {
		var opts []pop3.Option
		if st := s.opts.Transcript.Stream(transcript.POP3); st != nil {
			opts = append(opts, pop3.WithDebug(st))
		}
		pc.c, err = pop3.NewClient(nc, opts...)
		return err
	})
	rec.Add(POP3Connect, start, time.Since(start))
	if err != nil {
		return fail(POP3Connect, pop3.ErrorType(err), err)
	}

	if ep.Security == transport.STARTTLS {
		start := time.Now()
		err := s.bound(ctx, pc, func() error { return pc.c.StartTLS(ep.RecordingTLSConfig(rec, "pop3")) })
		rec.Add(POP3TLS, start, time.Since(start))
		if err != nil {
			typ := pop3.ErrorType(err)
			var perr *pop3.Error
			if errors.As(err, &perr) && perr.Command == "STLS" {
				// Not offered or refused: the session ends here, before
				// any credential is sent in clear.
				err = fmt.Errorf("pop3: STLS not offered or refused: %w", err)
				typ = steps.TypeTLS
			} else if typ == steps.TypeProtocol && !tooMuch(err) {
				typ = steps.TypeTLS
			}
			return fail(POP3TLS, typ, err)
		}
	}

	if err := s.login(ctx, pc, rec); err != nil {
		pc.close()
		return nil, err
	}
	if pc.broken {
		// ctx ended just as the login completed.
		return fail(POP3Login, "", context.Cause(s.failCtx(ctx)))
	}
	return pc, nil
}

// login authenticates with SASL or USER/PASS, never in clear unless allowed.
func (s *Session) login(ctx context.Context, pc *conn, rec *steps.Recorder) error {
	fail := func(typ string, err error) error {
		return steps.Fail(s.failCtx(ctx), POP3Login, typ, err)
	}
	if s.opts.Endpoint.Security == transport.None && !s.opts.AllowPlaintextAuth {
		return fail(steps.TypeAuth, errors.New("pop3: refusing to send credentials over an unencrypted connection"))
	}
	var mech sasl.Client
	if s.opts.Token != nil {
		// Before the login's timer starts: a token refresh is not the
		// server's login time. A token per login: one may expire while the
		// probe waits.
		token, err := s.opts.Token(ctx)
		if err == nil {
			// No mechanism list: the session does not read CAPA's SASL
			// line, so Pick takes Mechanism, else XOAUTH2.
			mech, _, err = saslx.Pick(nil, s.opts.Username, token, s.opts.Mechanism)
		}
		if err != nil {
			typ := tokenType(err)
			if s.opts.TokenType != nil {
				typ = s.opts.TokenType(err)
			}
			return fail(typ, err)
		}
	}
	pc.lo = time.Now()
	s.lastLogin = pc.lo
	err := s.bound(ctx, pc, func() error {
		if mech != nil {
			return saslx.Explain(mech, pc.c.Auth(mech))
		}
		return pc.c.User(s.opts.Username, s.opts.Password)
	})
	pc.authOK = time.Now()
	pc.authSent = pc.c.LastSent()
	if pc.authSent.Before(pc.lo) || pc.authSent.After(pc.authOK) {
		pc.authSent = pc.lo // a clock step: the whole login bounds it
	}
	rec.Add(POP3Login, pc.lo, pc.authOK.Sub(pc.lo))
	if err != nil {
		// Typed before redacting, which drops the error's chain.
		typ := pop3.ErrorType(err)
		return fail(typ, transcript.RedactError(err, s.opts.Username, s.opts.Password))
	}
	return nil
}

// tokenType types a failure of Options.Token without a TokenType, which
// usually means that no token could be obtained.
func tokenType(err error) string {
	var se *steps.Error
	if errors.As(err, &se) && se.Type != "" {
		return se.Type
	}
	var oe *oauth.Error
	if errors.As(err, &oe) && oe.Type != "" {
		return oe.Type
	}
	return steps.TypeTokenUnavailable
}

// list reads the session's UIDL listing; rec, when not nil, times it as
// pop3.list.
func (s *Session) list(ctx context.Context, pc *conn, rec *steps.Recorder) error {
	start := time.Now()
	var ids []pop3.MessageID
	err := s.bound(ctx, pc, func() (err error) {
		ids, err = pc.c.UIDL()
		return err
	})
	pc.listed = time.Now()
	rec.Add(POP3List, start, pc.listed.Sub(start))
	if err != nil {
		return err
	}
	pc.ids = ids
	pc.nums = make(map[string]int, len(ids))
	for _, id := range ids {
		if _, dup := pc.nums[id.UID]; dup {
			// A broken server: a DELE by this UID could hit either
			// message, so neither is ever touched.
			pc.nums[id.UID] = -1
			continue
		}
		pc.nums[id.UID] = id.Num
	}
	return nil
}

// top reads the header block of message num; rec, when not nil, adds the
// time to pop3.fetch.
func (s *Session) top(ctx context.Context, pc *conn, num int, rec *steps.Recorder) ([]byte, error) {
	start := time.Now()
	var header []byte
	err := s.bound(ctx, pc, func() (err error) {
		header, err = pc.c.Top(num, 0)
		return err
	})
	rec.Add(POP3Fetch, start, time.Since(start))
	return header, err
}

var errDeletionsLost = errors.New("pop3: connection lost before QUIT: the deletions were not applied")

// quit ends the session with QUIT, which applies its deletions when, and
// only when, the server acknowledges it. rec, when not nil, times it as
// pop3.quit.
func (s *Session) quit(ctx context.Context, pc *conn, rec *steps.Recorder) error {
	if pc.broken {
		pc.close()
		if pc.marked > 0 {
			return errDeletionsLost
		}
		return nil
	}
	start := time.Now()
	err := s.bound(ctx, pc, pc.c.Quit)
	rec.Add(POP3Quit, start, time.Since(start))
	pc.close()
	return err
}

// quietQuit ends a session that deleted nothing: only the lock it holds
// matters, so its QUIT is bounded short and its failure only logged.
func (s *Session) quietQuit(ctx context.Context, pc *conn) {
	qctx, cancel := context.WithTimeout(ctx, quitTimeout)
	defer cancel()
	if err := s.quit(qctx, pc, nil); err != nil {
		s.log.Debug("POP3 QUIT failed", zap.String("address", s.opts.Endpoint.Address), zap.Error(err))
	}
}

// snap is when the session's maildrop snapshot was taken. RFC 1939
// section 8 has the server take it as the session enters the TRANSACTION
// state: after it read the last line of the authentication (PASS, or
// AUTH's last response) and before its +OK. Dovecot 2.3 takes it later: a
// message delivered after its +OK to PASS shows in the UIDL that follows
// (measured on scripts/mailstack.sh; pop3test's SnapshotLazy). So lo is
// the last authentication line and hi the UIDL reply, which holds on both,
// and the estimate at is the +OK, between the two.
func (pc *conn) snap() snap {
	return snap{lo: pc.authSent, at: pc.authOK, hi: pc.listed}
}

// snap is a session's snapshot instant: between lo and hi, estimated at.
type snap struct{ lo, at, hi time.Time }

// tooMuch tells whether err is a read bound's: the server sent too much,
// which is a protocol error even in answer to STLS.
func tooMuch(err error) bool {
	return transport.IsBudget(err) || errors.Is(err, pop3.ErrLineTooLong) || errors.Is(err, pop3.ErrResponseTooLarge)
}
