// Package smtpsend submits one message over SMTP and times every step of the
// conversation: connect (with the server's greeting), TLS, EHLO, AUTH, the
// mail transaction up to the server accepting the data, and QUIT.
package smtpsend // import "github.com/emailqos/emailqosreceiver/internal/smtpsend"

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/emailqos/emailqosreceiver/internal/saslx"
	"github.com/emailqos/emailqosreceiver/internal/steps"
	"github.com/emailqos/emailqosreceiver/internal/transcript"
	"github.com/emailqos/emailqosreceiver/internal/transport"
)

const (
	defaultLocalName = "localhost"
	// replyTimeout bounds each wait of our own when ctx has no deadline;
	// it is RFC 5321's recommended command timeout.
	replyTimeout = 5 * time.Minute
	// quitTimeout bounds QUIT: the probe's outcome is known by then, and a
	// slow QUIT must not eat into the delivery wait that follows.
	quitTimeout = 5 * time.Second
)

// Message is what is submitted: the envelope and the RFC 5322 data.
type Message struct {
	From string
	To   []string
	Data []byte
}

// Result is a successful submission.
type Result struct {
	// AcceptedAt is when the server's final 250 reply to DATA was read:
	// from then on the server is responsible for delivery.
	AcceptedAt time.Time
	// DataEnd is when the client began sending the end of the data (its
	// last bytes and the final dot): the message cannot be complete on the
	// server, let alone delivered, before it. Some servers deliver before
	// their 250 reply reaches us (maddy does), so DataEnd, not AcceptedAt,
	// is the earliest instant an arrival can have.
	DataEnd time.Time
	// Reply is that reply's text, which often carries a queue ID.
	Reply string
}

// Options says where and how to submit.
type Options struct {
	Endpoint transport.Endpoint
	// Auth holds the submission credentials. An empty Username means no
	// AUTH.
	Auth saslx.Credentials
	// LocalName is the EHLO name; "localhost" when empty.
	LocalName string
	// AllowPlaintextAuth lets credentials go over an unencrypted
	// connection. The receiver sets it only for an explicit security: none.
	AllowPlaintextAuth bool
	// Transcript, when set, records the conversation (redacted).
	Transcript *transcript.Transcript
	// DSN, when set, asks for delivery status notifications (RFC 3461).
	// Off (nil) by default.
	DSN *DSN
	// Accepted, when set, is called with the result as soon as the server
	// accepted the data, before QUIT: the caller can start looking for the
	// message while QUIT is under way (an MTA may take a while to answer
	// it, Exim 200 ms in our tests), and Send still returns after QUIT.
	Accepted func(Result)
}

// DSN asks the server for notices about the message, where it advertises
// the DSN extension: MAIL FROM gets RET=HDRS ENVID=<EnvelopeID> and every
// RCPT TO NOTIFY=FAILURE,DELAY. RET=HDRS keeps the notice small while it
// still returns the probe's header fields, which prove whose notice it is.
// A server without DSN gets no parameters (RFC 3461 section 4: they must
// not be sent to it); MTAs still bounce failures then (RFC 3464).
type DSN struct {
	// EnvelopeID is the ENVID, sent xtext-encoded (RFC 3461 section 4,
	// by go-smtp's client); printable US-ASCII, at most 100 characters
	// once encoded (RFC 3461 section 4.4). Empty sends no ENVID.
	EnvelopeID string
}

// maxEnvelopeID is RFC 3461 section 4.4's limit on the encoded ENVID.
const maxEnvelopeID = 100

func (d *DSN) validate() error {
	if d == nil || d.EnvelopeID == "" {
		return nil
	}
	n := 0
	for i := 0; i < len(d.EnvelopeID); i++ {
		c := d.EnvelopeID[i]
		switch {
		case c < ' ' || c > '~':
			return fmt.Errorf("dsn envelope id %q is not printable US-ASCII", d.EnvelopeID)
		case c == ' ' || c == '+' || c == '=':
			n += 3 // xtext "+XX"
		default:
			n++
		}
	}
	if n > maxEnvelopeID {
		return fmt.Errorf("dsn envelope id is %d characters once xtext-encoded, more than RFC 3461's %d", n, maxEnvelopeID)
	}
	return nil
}

// Send submits msg and records each step in rec. Every wait is bounded by
// ctx. Failures are *steps.Error values with code CodeSMTPConnect up to and
// including EHLO and CodeSMTPSend from AUTH on; no error text contains the
// password.
func Send(ctx context.Context, opts Options, msg Message, rec *steps.Recorder) (Result, error) {
	s := &sender{ctx: ctx, opts: opts, rec: rec, localName: opts.LocalName,
		tr: opts.Transcript.Stream(transcript.SMTP)}
	if s.localName == "" {
		s.localName = defaultLocalName
	}
	if err := s.validate(msg); err != nil {
		return Result{}, err
	}
	conn, err := transport.Dial(ctx, opts.Endpoint, steps.SMTPConnect, steps.SMTPTLS, rec)
	if err != nil {
		return Result{}, s.fail(dialStep(opts.Endpoint, err), "", err)
	}
	defer conn.Close()

	smtpConn, err := s.open(conn)
	if err != nil {
		return Result{}, err
	}
	guard := &cancelGuard{Conn: smtpConn}
	s.guard = guard
	c := smtp.NewClient(guard)
	// go-smtp sets its own per-command deadlines (5 and 12 minutes). They
	// are left alone: conn is bound to ctx and closed when ctx ends, which
	// ends any of go-smtp's waits at ctx's deadline; the library's own
	// deadlines only matter for a ctx without one.
	defer c.Close()

	if err := s.rec.Do(steps.SMTPEHLO, func() error { return c.Hello(s.localName) }); err != nil {
		return Result{}, s.fail(steps.SMTPEHLO, "", err)
	}
	if opts.Auth.Username != "" {
		if err := s.auth(c); err != nil {
			s.quit(c, err)
			return Result{}, err
		}
	}
	res, err := s.submit(c, msg)
	if err != nil {
		s.quit(c, err)
		return Result{}, err
	}
	if opts.Accepted != nil {
		opts.Accepted(res)
	}
	// The server accepted the data and with it the responsibility for
	// delivery (RFC 5321 §4.1.1.4): a failed QUIT cannot take the message
	// back, so it is timed but does not fail the probe.
	s.quit(c, nil)
	return res, nil
}

type sender struct {
	ctx       context.Context
	opts      Options
	rec       *steps.Recorder
	localName string
	encrypted bool
	token     string // the bearer token in use, kept out of errors
	guard     *cancelGuard
	// tr records the plaintext conversation; nil without a transcript.
	tr *transcript.Stream
}

func (s *sender) validate(msg Message) error {
	if strings.ContainsAny(s.localName, " \t\r\n") {
		return s.fail(steps.SMTPEHLO, steps.TypeConfig,
			fmt.Errorf("invalid EHLO name %q", s.localName))
	}
	if len(msg.To) == 0 {
		return s.fail(steps.SMTPSubmit, steps.TypeConfig, errors.New("no recipients"))
	}
	for _, a := range append([]string{msg.From}, msg.To...) {
		if strings.ContainsAny(a, "\r\n<>") {
			return s.fail(steps.SMTPSubmit, steps.TypeConfig,
				fmt.Errorf("invalid envelope address %q", a))
		}
	}
	if err := s.opts.DSN.validate(); err != nil {
		return s.fail(steps.SMTPSubmit, steps.TypeConfig, err)
	}
	return nil
}

// open reads the greeting as part of the connect step and, for STARTTLS,
// negotiates TLS. It returns the connection go-smtp is to use, which replays
// the greeting already read: go-smtp reads the greeting lazily, together
// with EHLO, and would otherwise fold a slow greeting into the EHLO time.
func (s *sender) open(conn net.Conn) (net.Conn, error) {
	// What is read and written in clear is recorded through plain; the TLS
	// handshake runs on conn itself, and the TLS connection is recorded
	// on its own, so the transcript holds plaintext only.
	plain := s.tr.Conn(conn)
	var seen bytes.Buffer
	br := bufio.NewReader(io.TeeReader(plain, &seen))
	tp := textproto.NewReader(br)
	_ = conn.SetDeadline(transport.Deadline(s.ctx, replyTimeout))
	err := s.rec.Do(steps.SMTPConnect, func() error {
		_, _, err := tp.ReadResponse(220)
		return err
	})
	if err != nil {
		return nil, s.fail(steps.SMTPConnect, "", err)
	}
	s.encrypted = s.opts.Endpoint.Security == transport.TLS
	if s.opts.Endpoint.Security != transport.STARTTLS {
		_ = conn.SetDeadline(time.Time{})
		// Everything read so far, even beyond the greeting, goes to go-smtp.
		return &replayConn{Conn: plain, pending: seen.Bytes()}, nil
	}
	greeting := bytes.Clone(seen.Bytes()[:seen.Len()-br.Buffered()])
	tlsConn, err := s.startTLS(conn, plain, br, tp)
	if err != nil {
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	s.encrypted = true
	return &replayConn{Conn: s.tr.Conn(tlsConn), pending: greeting}, nil
}

// startTLS runs EHLO and STARTTLS in clear. A server that does not offer
// STARTTLS gets nothing more: falling back to clear would let anyone on the
// path strip TLS and read the credentials.
func (s *sender) startTLS(conn, plain net.Conn, br *bufio.Reader, tp *textproto.Reader) (net.Conn, error) {
	offered := false
	err := s.rec.Do(steps.SMTPEHLO, func() error {
		if _, err := io.WriteString(plain, "EHLO "+s.localName+"\r\n"); err != nil {
			return err
		}
		_, text, err := tp.ReadResponse(250)
		if err != nil {
			return err
		}
		for _, line := range strings.Split(text, "\n")[1:] {
			if kw, _, _ := strings.Cut(line, " "); strings.EqualFold(kw, "STARTTLS") {
				offered = true
			}
		}
		return nil
	})
	if err != nil {
		return nil, s.fail(steps.SMTPEHLO, "", err)
	}
	if !offered {
		return nil, s.fail(steps.SMTPTLS, steps.TypeTLS,
			errors.New("server does not offer STARTTLS; not continuing in clear"))
	}
	var tlsConn *tls.Conn
	typ := ""
	err = s.rec.Do(steps.SMTPTLS, func() error {
		if _, err := io.WriteString(plain, "STARTTLS\r\n"); err != nil {
			return err
		}
		if _, _, err := tp.ReadResponse(220); err != nil {
			typ = replyType(err, steps.TypeTLS)
			return err
		}
		// Bytes after the 220 were sent before TLS and would be taken as
		// protected replies (the STARTTLS command injection attack).
		if br.Buffered() > 0 {
			typ = steps.TypeTLS
			return errors.New("server sent data after its STARTTLS reply")
		}
		tlsConn = tls.Client(conn, s.opts.Endpoint.RecordingTLSConfig(s.rec, steps.Protocol(steps.SMTPTLS)))
		return tlsConn.HandshakeContext(s.ctx)
	})
	if err != nil {
		return nil, s.fail(steps.SMTPTLS, typ, err)
	}
	return tlsConn, nil
}

func (s *sender) auth(c *smtp.Client) error {
	a := s.opts.Auth
	if !s.encrypted && !s.opts.AllowPlaintextAuth {
		return s.fail(steps.SMTPAuth, steps.TypeAuth,
			errors.New("credentials withheld on an unencrypted connection"))
	}
	ok, mechs := c.Extension("AUTH")
	if !ok {
		return s.fail(steps.SMTPAuth, steps.TypeAuth,
			errors.New("server does not offer AUTH but credentials are configured"))
	}
	var client sasl.Client
	switch {
	case a.Token != nil:
		token, err := a.Token(s.ctx)
		if err != nil {
			typ := steps.TypeTokenUnavailable
			if a.TokenType != nil {
				typ = a.TokenType(err)
			}
			return s.fail(steps.SMTPAuth, typ, err)
		}
		s.token = token
		client, _, err = saslx.Pick(strings.Fields(mechs), a.Username, token, a.Mechanism)
		if err != nil {
			return s.fail(steps.SMTPAuth, steps.TypeAuth, err)
		}
	case c.SupportsAuth(sasl.Plain):
		client = sasl.NewPlainClient("", a.Username, a.Password)
	case c.SupportsAuth(sasl.Login):
		client = &loginClient{username: a.Username, password: a.Password}
	default:
		return s.fail(steps.SMTPAuth, steps.TypeAuth,
			fmt.Errorf("no supported AUTH mechanism among %q", mechs))
	}
	s.guard.arm(true)
	err := s.rec.Do(steps.SMTPAuth, func() error { return c.Auth(client) })
	s.guard.arm(false)
	if err != nil {
		typ := ""
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			typ = steps.TypeAuth
		}
		if a.Token != nil {
			err = saslx.Explain(client, err)
		}
		return s.fail(steps.SMTPAuth, typ, err)
	}
	return nil
}

func (s *sender) submit(c *smtp.Client, msg Message) (Result, error) {
	var res Result
	err := s.rec.Do(steps.SMTPSubmit, func() error {
		mo := &smtp.MailOptions{Size: int64(len(msg.Data))}
		for _, a := range append([]string{msg.From}, msg.To...) {
			if !isASCII(a) {
				mo.UTF8 = true
			}
		}
		if mo.UTF8 {
			// go-smtp refuses this itself, with an error that would read
			// as the server's fault (RFC 6531 3.4: no SMTPUTF8, no UTF-8
			// address).
			if ok, _ := c.Extension("SMTPUTF8"); !ok {
				return errNoSMTPUTF8
			}
		}
		var ro *smtp.RcptOptions
		// Checked here as well as in go-smtp, so that what is sent never
		// depends on the library silently dropping parameters.
		if dsn, _ := c.Extension("DSN"); dsn && s.opts.DSN != nil {
			mo.Return = smtp.DSNReturnHeaders
			mo.EnvelopeID = s.opts.DSN.EnvelopeID
			ro = &smtp.RcptOptions{Notify: []smtp.DSNNotify{smtp.DSNNotifyFailure, smtp.DSNNotifyDelayed}}
		}
		if err := c.Mail(msg.From, mo); err != nil {
			return err
		}
		for _, to := range msg.To {
			if err := c.Rcpt(to, ro); err != nil {
				return err
			}
		}
		w, err := c.Data()
		if err != nil {
			return err
		}
		if _, err := w.Write(msg.Data); err != nil {
			return err
		}
		// go-smtp buffers the data; Close flushes it with the final dot.
		dataEnd := time.Now()
		resp, err := w.CloseWithResponse()
		if err != nil {
			return err
		}
		res = Result{AcceptedAt: time.Now(), DataEnd: dataEnd, Reply: resp.StatusText}
		return nil
	})
	if err != nil {
		typ := ""
		if errors.Is(err, errNoSMTPUTF8) {
			typ = steps.TypeConfig
		}
		return Result{}, s.fail(steps.SMTPSubmit, typ, err)
	}
	return res, nil
}

// errNoSMTPUTF8 is a configured address in UTF-8 that the sending server
// cannot carry.
var errNoSMTPUTF8 = errors.New("smtp: an address is not ASCII and the server does not offer SMTPUTF8: use an ASCII address for this account")

// quit says goodbye after a success or after the server refused something;
// after a network failure or a done ctx there is nobody left to tell.
func (s *sender) quit(c *smtp.Client, cause error) {
	var se *steps.Error
	if cause != nil && errors.As(cause, &se) &&
		se.Type != steps.TypeAuth && se.Type != steps.TypeRejected && se.Type != steps.TypeDeferred {
		return
	}
	if s.ctx.Err() != nil {
		return
	}
	c.CommandTimeout = quitTimeout
	_ = s.rec.Do(steps.SMTPQuit, c.Quit)
}

// fail builds the step error. typ, when empty, comes from the SMTP reply
// code or, failing that, from steps.Classify.
func (s *sender) fail(step string, typ string, err error) *steps.Error {
	if typ == "" {
		typ = replyType(err, "")
	}
	if dl, ok := s.ctx.Deadline(); ok && typ == "" && !time.Now().Before(dl) {
		// A read deadline set at ctx's deadline can fire just before ctx
		// reports it, cutting a reply short ("short response").
		typ = steps.TypeTimeout
	}
	se := steps.Fail(s.ctx, step, typ, err)
	// Taken before redaction, which may drop the original error.
	if se.Reply.Code == 0 {
		se.Reply = reply(se.Err)
	}
	se.Err = transcript.RedactError(se.Err, s.opts.Auth.Username, s.opts.Auth.Password, s.token)
	return se
}

// reply extracts the codes of the server's refusal behind err, if any.
// go-smtp parses the enhanced code of the replies it reads; the replies
// read here directly (greeting, STARTTLS) are parsed alike.
func reply(err error) steps.Reply {
	var se *smtp.SMTPError
	var te *textproto.Error
	switch {
	case errors.As(err, &se):
		r := steps.Reply{Code: se.Code}
		if c := se.EnhancedCode; c[0] > 0 {
			r.Enhanced = fmt.Sprintf("%d.%d.%d", c[0], c[1], c[2])
		}
		return r
	case errors.As(err, &te):
		r := steps.Reply{Code: te.Code}
		if first, _, _ := strings.Cut(te.Msg, " "); steps.IsEnhancedStatus(first) {
			r.Enhanced = first
		}
		return r
	}
	return steps.Reply{}
}

// replyType maps a reply code to an error type: 4xx is temporary, 5xx
// permanent. A connection dropped mid-conversation is a connect failure.
func replyType(err error, orElse string) string {
	code := 0
	var se *smtp.SMTPError
	var te *textproto.Error
	switch {
	case transport.IsBudget(err):
		// Not a refusal of STARTTLS: the server sent too much.
		return steps.TypeProtocol
	case errors.As(err, &se):
		code = se.Code
	case errors.As(err, &te):
		code = te.Code
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return steps.TypeConnect
	}
	switch {
	case orElse != "" && code != 0:
		return orElse
	case code >= 500:
		return steps.TypeRejected
	case code >= 400:
		return steps.TypeDeferred
	case code != 0:
		return steps.TypeProtocol
	}
	return orElse
}

// dialStep tells which of the steps transport.Dial records failed.
func dialStep(ep transport.Endpoint, err error) string {
	var op *net.OpError
	if ep.Security != transport.TLS || (errors.As(err, &op) && op.Op == "dial") {
		return steps.SMTPConnect
	}
	return steps.SMTPTLS
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// replayConn hands go-smtp bytes already read from the connection before
// reading on.
type replayConn struct {
	net.Conn
	pending []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// loginClient is the LOGIN mechanism. go-sasl has one, but it insists on an
// exact "Password:" prompt after sending the username unasked; servers vary
// in both, so this one waits to be asked and answers by prompt, or by turn
// when the prompt is unfamiliar.
type loginClient struct {
	username, password string
	turn               int
}

func (a *loginClient) Start() (string, []byte, error) {
	return sasl.Login, nil, nil
}

func (a *loginClient) Next(challenge []byte) ([]byte, error) {
	a.turn++
	prompt := strings.ToLower(string(challenge))
	switch {
	case a.turn > 2:
		return nil, errors.New("unexpected extra LOGIN challenge")
	case strings.Contains(prompt, "user"):
		return []byte(a.username), nil
	case strings.Contains(prompt, "pass"):
		return []byte(a.password), nil
	case a.turn == 1:
		return []byte(a.username), nil
	default:
		return []byte(a.password), nil
	}
}
