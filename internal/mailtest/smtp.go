package mailtest

import (
	"bytes"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"go.uber.org/zap"

	"github.com/emailqos/emailqosreceiver/internal/saslx"
)

var (
	errAuthRequired = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	errRcptRejected = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "Recipient rejected"}
	errNoSuchUser   = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user here"}
	errRcptDeferred = &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 2, 0}, Message: "Mailbox temporarily unavailable, try again later"}
)

func (s *Server) startSMTP(plain, implicit net.Listener) {
	srv := smtp.NewServer(smtp.BackendFunc(s.newSMTPSession))
	srv.Domain = Domain
	srv.AllowInsecureAuth = true // the client decides whether to send credentials in clear
	srv.MaxMessageBytes = 10 << 20
	srv.MaxRecipients = 100
	srv.ReadTimeout = time.Minute
	srv.WriteTimeout = time.Minute
	srv.ErrorLog = printfLogger{s.log.Named("smtp").Sugar()}
	if s.certs != nil && !s.opts.DisableSTARTTLS {
		srv.TLSConfig = s.serverTLS()
	}
	s.smtp.srv = srv
	s.smtp.conns = newConnGroup()

	serve := func(ln net.Listener) {
		s.smtp.loops.Add(1)
		go func() {
			defer s.smtp.loops.Done()
			_ = srv.Serve(ln)
		}()
	}
	serve(trackListener{plain, s.smtp.conns})
	if implicit != nil {
		serve(tls.NewListener(trackListener{implicit, s.smtp.conns}, s.serverTLS()))
	}
}

func (s *Server) stopSMTP() error {
	if s.smtp.srv == nil {
		return nil
	}
	for _, ln := range s.smtp.listeners {
		ln.Close()
	}
	// Once Serve has returned nothing adds to go-smtp's WaitGroup any more,
	// so Shutdown can wait on it safely.
	s.smtp.loops.Wait()
	s.smtp.conns.shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	if err := s.smtp.srv.Shutdown(ctx); errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("mailtest: SMTP connections did not finish: %w", err)
	}
	return s.smtp.conns.wait(stopTimeout)
}

type smtpSession struct {
	s      *Server
	conn   *smtp.Conn
	authed bool
	from   string
	envid  string // ENVID of MAIL FROM (RFC 3461), for Faults.Bounce
	rcpts  []*account
}

func (s *Server) newSMTPSession(c *smtp.Conn) (smtp.Session, error) {
	return &smtpSession{s: s, conn: c}, nil
}

var _ smtp.AuthSession = (*smtpSession)(nil)

func (ss *smtpSession) AuthMechanisms() []string {
	if ss.s.opts.BearerCheck != nil {
		return []string{sasl.Plain, sasl.Login, saslx.XOAuth2}
	}
	return []string{sasl.Plain, sasl.Login}
}

func (ss *smtpSession) Auth(mech string) (sasl.Server, error) {
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(identity, username, password string) error {
			if identity != "" && identity != username {
				return smtp.ErrAuthFailed
			}
			return ss.login(username, password)
		}), nil
	case sasl.Login:
		return &loginServer{check: ss.login}, nil
	case saslx.XOAuth2:
		if ss.s.opts.BearerCheck != nil {
			return saslErrors{saslx.NewXOAUTH2Server(ss.bearer), smtp.ErrAuthFailed}, nil
		}
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

// bearer checks an XOAUTH2 token for user (a username or an address).
func (ss *smtpSession) bearer(user, token string) error {
	if ss.s.faults().RejectAuth || !ss.s.bearerOK(user, token) {
		return smtp.ErrAuthFailed
	}
	ss.authed = true
	return nil
}

func (ss *smtpSession) login(username, password string) error {
	if ss.s.faults().RejectAuth {
		return smtp.ErrAuthFailed
	}
	a := ss.s.byUsername[username]
	if a == nil || subtle.ConstantTimeCompare([]byte(a.Password), []byte(password)) != 1 {
		return smtp.ErrAuthFailed
	}
	ss.authed = true
	return nil
}

func (ss *smtpSession) Mail(from string, opts *smtp.MailOptions) error {
	if !ss.authed {
		return errAuthRequired
	}
	if ss.s.faults().DeferMail {
		return errMailDeferred
	}
	ss.from = from
	ss.envid = ""
	if opts != nil {
		ss.envid = opts.EnvelopeID
	}
	return nil
}

func (ss *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	switch f := ss.s.faults(); {
	case f.RejectRcpt:
		return errRcptRejected
	case f.DeferRcpt:
		return errRcptDeferred
	}
	if n := ss.s.opts.GreylistRcpts; n > 0 && ss.s.greylisted.Add(1) <= int64(n) {
		return errRcptDeferred
	}
	a := ss.s.byAddress[strings.ToLower(to)]
	if a == nil {
		return errNoSuchUser
	}
	ss.rcpts = append(ss.rcpts, a)
	return nil
}

func (ss *smtpSession) Data(r io.Reader) error {
	msg, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if ss.s.faults().Blackhole {
		return nil
	}
	if ss.s.faults().Bounce {
		for _, rcpt := range ss.rcpts {
			ss.s.sendBounce(ss.from, rcpt.Address, ss.envid, ss.stamp("bounced", rcpt.Address, msg))
		}
		return nil
	}
	id := fmt.Sprintf("%08X", ss.s.queueID.Add(1))
	// Stored before the 250 is written, as maddy does; ReplyAfterDelivery
	// then holds the reply.
	early := ss.s.t.earlyExists || ss.s.opts.ReplyAfterDelivery > 0
	for _, rcpt := range ss.rcpts {
		if early {
			ss.s.deliverNow(rcpt, ss.stamp(id, rcpt.Address, msg))
			continue
		}
		ss.s.enqueue(rcpt, ss.stamp(id, rcpt.Address, msg))
	}
	if d := ss.s.opts.ReplyAfterDelivery; d > 0 {
		time.Sleep(d)
	}
	return nil
}

// stamp prefixes the trace headers a delivering MTA adds.
func (ss *smtpSession) stamp(id, rcpt string, msg []byte) []byte {
	proto := "ESMTPA"
	if _, isTLS := ss.conn.TLSConnectionState(); isTLS {
		proto = "ESMTPSA"
	}
	remote := "unknown"
	if host, _, err := net.SplitHostPort(ss.conn.Conn().RemoteAddr().String()); err == nil {
		remote = host
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "Return-Path: <%s>\r\n", ss.from)
	if ar := ss.s.opts.AuthResults; ar != "" {
		fmt.Fprintf(&b, "Authentication-Results: %s; %s\r\n", Domain, ar)
	}
	fmt.Fprintf(&b, "Received: from %s (%s)\r\n\tby %s with %s id %s\r\n\tfor <%s>; %s\r\n",
		ss.conn.Hostname(), remote, Domain, proto, id, rcpt, time.Now().Format(time.RFC1123Z))
	b.Write(msg)
	return b.Bytes()
}

func (ss *smtpSession) Reset() {
	ss.from = ""
	ss.rcpts = nil
}

func (ss *smtpSession) Logout() error { return nil }

// enqueue delivers msg in the background, as an MTA queue would.
func (s *Server) enqueue(rcpt *account, msg []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.deliverWG.Add(1)
	go s.deliver(rcpt, msg)
}

// deliverNow delivers msg before returning (PersonalityEarlyExists).
func (s *Server) deliverNow(rcpt *account, msg []byte) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.deliverWG.Add(1)
	s.mu.Unlock()
	s.deliver(rcpt, msg)
}

func (s *Server) deliver(rcpt *account, msg []byte) {
	defer s.deliverWG.Done()
	if d := s.opts.DeliveryDelay; d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-s.ctx.Done():
			t.Stop()
			return
		}
	}
	if f := s.opts.OnDeliver; f != nil {
		if err := f(rcpt.Address, msg); err != nil {
			s.log.Debug("delivery dropped by OnDeliver", zap.String("rcpt", rcpt.Address), zap.Error(err))
			return
		}
	}
	if s.ctx.Err() != nil {
		return
	}
	// Counted first, so whoever sees the message sees it counted.
	s.deliveries.Add(1)
	if _, err := s.store(rcpt, s.folderFor(), msg, nil); err != nil {
		s.deliveries.Add(-1)
		s.log.Warn("delivery failed", zap.String("rcpt", rcpt.Address), zap.Error(err))
		return
	}
	at := time.Now()
	s.changes.notify()
	if f := s.opts.OnVisible; f != nil {
		f(rcpt.Address, at)
	}
	if f := s.opts.OnVisibleMessage; f != nil {
		f(rcpt.Address, msg, at)
	}
}

// loginServer is the server side of SASL LOGIN, which go-sasl lacks. The
// client may send the username as initial response.
type loginServer struct {
	check    func(username, password string) error
	username []byte
	state    int
}

func (l *loginServer) Next(response []byte) ([]byte, bool, error) {
	switch l.state {
	case 0:
		l.state = 1
		if response == nil {
			return []byte("Username:"), false, nil
		}
		fallthrough
	case 1:
		l.username = response
		l.state = 2
		return []byte("Password:"), false, nil
	case 2:
		l.state = 3
		if err := l.check(string(l.username), string(response)); err != nil {
			return nil, false, err
		}
		return nil, true, nil
	}
	return nil, false, sasl.ErrUnexpectedClientResponse
}
