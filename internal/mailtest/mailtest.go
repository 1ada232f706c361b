// Package mailtest runs a small in-process mail system on loopback for tests
// and the demo: an SMTP submission server that queues accepted messages and
// delivers them into an in-memory IMAP store, with switches for the faults a
// probe has to recognise.
package mailtest // import "github.com/emailqos/emailqosreceiver/internal/mailtest"

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
	"github.com/emersion/go-smtp"
	"go.uber.org/zap"
)

// Domain is the host name the SMTP server greets with and stamps in Received.
const Domain = "mailtest.local"

const (
	defaultListen = "127.0.0.1:0"
	stopTimeout   = 5 * time.Second
	inbox         = "INBOX"
)

// User is one mail account, valid for both SMTP AUTH and IMAP LOGIN.
type User struct {
	Address string
	// Username defaults to Address.
	Username string
	Password string
}

// Options configures a Server. The zero value serves no users over plain
// text on random loopback ports.
type Options struct {
	Users []User

	// SMTPListen and IMAPListen are the plain listeners' addresses; they must
	// be loopback and default to 127.0.0.1:0. The implicit-TLS listeners take
	// a random port on the same host.
	SMTPListen string
	IMAPListen string

	// TLS: when true, generate a throwaway CA + server cert for
	// 127.0.0.1/localhost in memory; the plain listeners then offer STARTTLS
	// and the implicit-TLS listeners are started too.
	TLS bool
	// DisableIDLE: IMAP CAPABILITY without IDLE (nor IMAP4rev2, which implies
	// it), and the IDLE command is rejected as unknown.
	DisableIDLE bool
	// DisableSTARTTLS: do not advertise STARTTLS even if TLS is on (for
	// "STARTTLS required but missing" tests).
	DisableSTARTTLS bool
	// RejectAuth: SMTP AUTH always fails with 535 5.7.8.
	RejectAuth bool
	// BearerCheck, when set, enables OAuth2 sign-in with SASL XOAUTH2: SMTP
	// AUTH offers it next to PLAIN and LOGIN, and IMAP offers AUTHENTICATE
	// XOAUTH2 next to PLAIN (LOGIN keeps working). user is the name the
	// client sent, a username or an address of one of Users (unknown names
	// are refused without calling BearerCheck); the token is accepted when
	// BearerCheck returns true. A refusal is answered the way Gmail and
	// Microsoft 365 do: a JSON error challenge, then SMTP 535 5.7.8 or IMAP
	// NO [AUTHENTICATIONFAILED]; the token is never echoed. RejectAuth
	// refuses XOAUTH2 over SMTP too. BearerCheck may be called concurrently.
	BearerCheck func(user, token string) bool
	// RejectRcpt: RCPT TO always fails with 550 5.1.1.
	RejectRcpt bool
	// DeferRcpt: RCPT TO fails with 450 4.2.0 (temporary).
	DeferRcpt bool
	// Blackhole: accept DATA but never deliver.
	Blackhole bool
	// FailExpunge: IMAP EXPUNGE / UID EXPUNGE answer NO (message stays).
	FailExpunge bool
	// GreylistRcpts defers the first this many RCPT TO commands of the
	// server's life with 450 4.2.0, then accepts as usual: greylisting, for
	// tests of retried submissions.
	GreylistRcpts int
	// AuthResults, when set, is stamped on each delivered message as an
	// Authentication-Results field of this server (authserv-id Domain):
	// the method results, e.g. "spf=pass smtp.mailfrom=a.test; dkim=none;
	// dmarc=fail header.from=a.test".
	AuthResults string
	// DeliveryDelay is the delay between DATA accepted and the message
	// becoming visible.
	DeliveryDelay time.Duration
	// OnDeliver, when set, is called before a message becomes visible, with
	// the bytes about to be stored; it may block to hold the delivery (tests
	// use it to control the exact instant). Returning an error drops the
	// message.
	OnDeliver func(rcpt string, msg []byte) error
	// OnVisible, when set, is called right after a message was appended to
	// the recipient's INBOX (or junk folder) with the instant it became visible (taken
	// immediately after the append returns).
	OnVisible func(rcpt string, at time.Time)
	// OnVisibleMessage is OnVisible with the message stored, to tell
	// concurrent deliveries to one mailbox apart.
	OnVisibleMessage func(rcpt string, msg []byte, at time.Time)
	// Junk files every delivery into the recipient's junk folder instead
	// of INBOX, the way a provider's spam filter does (Faults.Junk switches
	// it at runtime).
	Junk bool
	// JunkFolder names every user's junk folder, which always exists;
	// default "Junk". A LIST asking for special-use attributes marks it
	// \Junk (RFC 6154) unless NoSpecialUse.
	JunkFolder   string
	NoSpecialUse bool
	// Personality makes the IMAP side behave like a provider (see
	// Personality); the default is a plain RFC-compliant server.
	Personality Personality
	// SearchLag hides messages from SEARCH for this long after they
	// become visible, like a search index that lags delivery (default 3 s
	// for PersonalityM365, else none).
	SearchLag time.Duration
	// IdleHold delays each IDLE notification by this much (default 500 ms
	// for PersonalityLateIdle, 2 s for PersonalityM365, else none).
	IdleHold time.Duration
	// MaxSessions caps each user's concurrent logged-in IMAP sessions;
	// one more login is refused with the personality's wording (Dovecot's
	// NO [LIMIT] by default). Default 15 for PersonalityGmail, else none.
	MaxSessions int
	// Category, when set, names the Gmail tab of each delivery
	// (PersonalityGmail: "promotions", "social", "updates", "forums" or ""
	// for primary), found with X-GM-RAW "category:<tab>". Any other value
	// (e.g. "unindexed") is found by no such search, not even
	// "category:primary": a message Gmail's search has not categorised.
	Category func(rcpt string, msg []byte) string
	// ReplyAfterDelivery delivers each message before the 250 reply to
	// DATA (as PersonalityEarlyExists does) and sends that reply this much
	// later, as maddy's synchronous local delivery does.
	ReplyAfterDelivery time.Duration
	// Logger is optional; library chatter goes to it at debug level.
	Logger *zap.Logger
}

// Message is one message of a mailbox snapshot.
type Message struct {
	UID          imap.UID
	Flags        []imap.Flag
	InternalDate time.Time
	Raw          []byte
}

type account struct {
	User
	mem      *imapmemserver.User
	folders  folders
	gm       gmailState
	visible  visibleTimes
	sessions sessionCount
}

// Server is a running mail system. All methods are safe for concurrent use.
type Server struct {
	opts  Options
	t     traits
	log   *zap.Logger
	certs *certs

	accounts   []*account
	byUsername map[string]*account
	byAddress  map[string]*account // lower-cased
	mem        *imapmemserver.Server

	smtpAddr, smtpsAddr string
	imapAddr, imapsAddr string

	smtp  smtpSide
	imap  imapSide
	inner innerIMAP

	ctx    context.Context // cancelled by Close: drops queued deliveries
	cancel context.CancelFunc

	mu         sync.Mutex
	closed     bool
	deliverWG  sync.WaitGroup
	changes    broadcast // wakes IDLE sessions
	deliveries atomic.Int64
	greylisted atomic.Int64 // RCPTs seen while GreylistRcpts lasts
	queueID    atomic.Uint64
	runtime    atomic.Pointer[Faults] // SetFaults
}

type smtpSide struct {
	srv       *smtp.Server
	listeners []net.Listener
	conns     *connGroup
	loops     sync.WaitGroup
	once      sync.Once
	err       error
}

type imapSide struct {
	srv       *imapserver.Server
	listeners []net.Listener
	conns     *connGroup    // connections imapserver serves
	front     *connGroup    // client connections held by the IDLE filter
	backend   *pipeListener // feeds imapserver behind the IDLE filter
	loops     sync.WaitGroup
	once      sync.Once
	err       error
}

// innerIMAP serves Mailbox snapshots; it survives StopIMAP.
type innerIMAP struct {
	srv   *imapserver.Server
	ln    *pipeListener
	conns *connGroup
	loop  sync.WaitGroup
}

// Start starts the servers and returns once they accept connections.
func Start(opts Options) (_ *Server, err error) {
	s := &Server{
		opts:       opts,
		log:        opts.Logger,
		byUsername: make(map[string]*account),
		byAddress:  make(map[string]*account),
		mem:        imapmemserver.New(),
	}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	if s.t, err = traitsOf(opts); err != nil {
		return nil, err
	}
	if s.opts.SMTPListen == "" {
		s.opts.SMTPListen = defaultListen
	}
	if s.opts.IMAPListen == "" {
		s.opts.IMAPListen = defaultListen
	}
	for _, addr := range []string{s.opts.SMTPListen, s.opts.IMAPListen} {
		if err := checkLoopback(addr); err != nil {
			return nil, err
		}
	}
	if err := s.addUsers(opts.Users); err != nil {
		return nil, err
	}
	if opts.TLS {
		if s.certs, err = newCerts(); err != nil {
			return nil, fmt.Errorf("mailtest: generating certificates: %w", err)
		}
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())

	// Listen everywhere before serving anything, so a failure has only
	// listeners to undo.
	var lns []net.Listener
	defer func() {
		if err != nil {
			for _, ln := range lns {
				ln.Close()
			}
			s.cancel()
		}
	}()
	listen := func(addr string) (net.Listener, error) {
		ln, err := listenLoopback(addr)
		if err == nil {
			lns = append(lns, ln)
		}
		return ln, err
	}
	smtpLn, err := listen(s.opts.SMTPListen)
	if err != nil {
		return nil, err
	}
	imapLn, err := listen(s.opts.IMAPListen)
	if err != nil {
		return nil, err
	}
	s.smtpAddr, s.imapAddr = smtpLn.Addr().String(), imapLn.Addr().String()
	s.smtp.listeners = []net.Listener{smtpLn}
	s.imap.listeners = []net.Listener{imapLn}
	var smtpsLn, imapsLn net.Listener
	if opts.TLS {
		if smtpsLn, err = listen(sibling(smtpLn)); err != nil {
			return nil, err
		}
		if imapsLn, err = listen(sibling(imapLn)); err != nil {
			return nil, err
		}
		s.smtpsAddr, s.imapsAddr = smtpsLn.Addr().String(), imapsLn.Addr().String()
		s.smtp.listeners = append(s.smtp.listeners, smtpsLn)
		s.imap.listeners = append(s.imap.listeners, imapsLn)
	}

	s.startSMTP(smtpLn, smtpsLn)
	s.startIMAP(imapLn, imapsLn)
	s.startInner()
	return s, nil
}

func (s *Server) addUsers(users []User) error {
	for _, u := range users {
		if u.Address == "" {
			return errors.New("mailtest: user without an address")
		}
		if u.Username == "" {
			u.Username = u.Address
		}
		key := strings.ToLower(u.Address)
		if s.byAddress[key] != nil || s.byUsername[u.Username] != nil {
			return fmt.Errorf("mailtest: duplicate user %q", u.Address)
		}
		mu := imapmemserver.NewUser(u.Username, u.Password)
		for _, mbox := range append([]string{inbox}, s.t.folders...) {
			if err := mu.Create(mbox, nil); err != nil && mbox != inbox {
				return err
			}
		}
		s.mem.AddUser(mu)
		a := &account{User: u, mem: mu}
		s.accounts = append(s.accounts, a)
		s.byAddress[key] = a
		s.byUsername[u.Username] = a
	}
	return nil
}

// lookup finds an account by username or address.
func (s *Server) lookup(user string) *account {
	if a := s.byUsername[user]; a != nil {
		return a
	}
	return s.byAddress[strings.ToLower(user)]
}

func (s *Server) serverTLS() *tls.Config {
	if s.certs == nil {
		return nil
	}
	return s.certs.serverConfig()
}

// SMTPAddr is the plain SMTP listener; it offers STARTTLS when TLS is on.
func (s *Server) SMTPAddr() string { return s.smtpAddr }

// SMTPSAddr is the implicit-TLS SMTP listener ("" when TLS is off).
func (s *Server) SMTPSAddr() string { return s.smtpsAddr }

// IMAPAddr is the plain IMAP listener; it offers STARTTLS when TLS is on.
func (s *Server) IMAPAddr() string { return s.imapAddr }

// IMAPSAddr is the implicit-TLS IMAP listener ("" when TLS is off).
func (s *Server) IMAPSAddr() string { return s.imapsAddr }

// CACertPEM is the throwaway CA, nil when TLS is off.
func (s *Server) CACertPEM() []byte {
	if s.certs == nil {
		return nil
	}
	return bytes.Clone(s.certs.caPEM)
}

// ClientTLSConfig trusts the throwaway CA and verifies the name 127.0.0.1
// (the certificate also covers ::1 and localhost); nil when TLS is off.
func (s *Server) ClientTLSConfig() *tls.Config {
	if s.certs == nil {
		return nil
	}
	return s.certs.clientConfig()
}

// Deliveries is how many messages were put into a mailbox so far; a message
// to two local recipients counts twice. A message is counted no later than
// it becomes visible.
func (s *Server) Deliveries() int { return int(s.deliveries.Load()) }

// StopSMTP closes the SMTP listeners and every open SMTP connection. Queued
// deliveries still happen, like a real MTA whose submission port went away.
func (s *Server) StopSMTP() {
	s.smtp.once.Do(func() { s.smtp.err = s.stopSMTP() })
}

// DropIMAP closes every open IMAP connection, as a server restart or a NAT
// timeout would, and goes on accepting new ones.
func (s *Server) DropIMAP() {
	if s.imap.front != nil {
		s.imap.front.dropAll()
	}
	s.imap.conns.dropAll()
}

// StopIMAP closes the IMAP listeners and every open IMAP connection (fault
// injection). The mailboxes stay readable through Mailbox.
func (s *Server) StopIMAP() {
	s.imap.once.Do(func() { s.imap.err = s.stopIMAP() })
}

// Close stops everything and waits for every goroutine it started.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()

	s.StopSMTP()
	s.StopIMAP()
	s.cancel()
	errs := []error{s.smtp.err, s.imap.err}
	if err := waitTimeout(&s.deliverWG, stopTimeout); err != nil {
		errs = append(errs, fmt.Errorf("mailtest: deliveries still running (blocked in OnDeliver?): %w", err))
	}
	errs = append(errs, s.stopInner())
	return errors.Join(errs...)
}

// Append stores raw in user's INBOX as an ordinary message, announcing it to
// open sessions like a delivery does. user is a username or an address.
func (s *Server) Append(user string, raw []byte, flags []imap.Flag) error {
	a := s.lookup(user)
	if a == nil {
		return fmt.Errorf("mailtest: no user %q", user)
	}
	return s.AppendTo(user, inbox, raw, flags)
}

// Mailbox returns a snapshot of user's INBOX. It reads through an internal
// IMAP session, so it sees exactly what clients see and keeps working after
// StopIMAP.
func (s *Server) Mailbox(user string) ([]Message, error) {
	return s.Folder(user, inbox)
}

// Folder returns a snapshot of user's mailbox name, like Mailbox.
func (s *Server) Folder(user, name string) ([]Message, error) {
	a := s.lookup(user)
	if a == nil {
		return nil, fmt.Errorf("mailtest: no user %q", user)
	}
	conn, err := s.dialInner()
	if err != nil {
		return nil, err
	}
	if err := conn.SetDeadline(time.Now().Add(stopTimeout)); err != nil {
		conn.Close()
		return nil, err
	}
	c := imapclient.New(conn, nil)
	defer c.Close()

	if err := c.Login(a.Username, a.Password).Wait(); err != nil {
		return nil, fmt.Errorf("mailtest: snapshot login: %w", err)
	}
	sel, err := c.Select(name, &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		return nil, fmt.Errorf("mailtest: snapshot select: %w", err)
	}
	var out []Message
	if sel.NumMessages > 0 {
		var all imap.SeqSet
		all.AddRange(1, 0)
		body := &imap.FetchItemBodySection{Peek: true}
		bufs, err := c.Fetch(all, &imap.FetchOptions{
			UID: true, Flags: true, InternalDate: true,
			BodySection: []*imap.FetchItemBodySection{body},
		}).Collect()
		if err != nil {
			return nil, fmt.Errorf("mailtest: snapshot fetch: %w", err)
		}
		for _, b := range bufs {
			out = append(out, Message{
				UID:          b.UID,
				Flags:        b.Flags,
				InternalDate: b.InternalDate,
				Raw:          b.FindBodySection(body),
			})
		}
	}
	_ = c.Logout().Wait()
	return out, nil
}

// printfLogger adapts zap to the libraries' Printf loggers. Their messages
// are mostly dropped connections, which fault tests cause on purpose.
type printfLogger struct{ l *zap.SugaredLogger }

func (p printfLogger) Printf(format string, args ...any) { p.l.Debugf(format, args...) }
func (p printfLogger) Println(args ...any)               { p.l.Debugln(args...) }
