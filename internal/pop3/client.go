// Package pop3 is a small POP3 client (RFC 1939) with CAPA (RFC 2449), STLS
// (RFC 2595) and SASL AUTH (RFC 5034), covering what a probe needs to find,
// read and delete one message.
//
// The client runs over a net.Conn that the caller dialled, so the caller keeps
// control of TLS and of timeouts: it starts no goroutine and sets no deadline,
// and every wait ends when the connection is closed, which is what
// transport.Bind does when the probe's context ends. A Client is not safe for
// concurrent use.
package pop3 // import "github.com/emailqos/emailqosreceiver/internal/pop3"

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
)

// Error is a -ERR reply from the server. The connection remains usable.
type Error struct {
	// Command is the command verb that was refused ("PASS", "AUTH", "DELE";
	// empty for the greeting). Arguments are never included so that a
	// password or a SASL payload cannot leak into logs.
	Command string
	// Message is the server's text after -ERR, with any RFC 2449 response
	// code such as "[AUTH]" or "[SYS/TEMP]" left in place.
	Message string
}

func (e *Error) Error() string {
	what := e.Command
	if what == "" {
		what = "greeting"
	}
	if e.Message == "" {
		return "pop3: " + what + " refused"
	}
	return "pop3: " + what + " refused: " + e.Message
}

// Code returns the extended response code (RFC 2449, RFC 3206) at the start
// of the message, in upper case, such as "AUTH", "IN-USE", "SYS/TEMP", or ""
// when there is none.
func (e *Error) Code() string {
	m := e.Message
	if !strings.HasPrefix(m, "[") {
		return ""
	}
	end := strings.IndexByte(m, ']')
	if end < 0 {
		return ""
	}
	return strings.ToUpper(strings.TrimSpace(m[1:end]))
}

// MessageID is one entry of a UIDL listing.
type MessageID struct {
	Num int
	UID string
}

// errClosed is the sticky error once Quit or Close ended the session.
var errClosed = errors.New("pop3: client closed")

// maxAuthRounds bounds the SASL dialog: every mechanism we use finishes in
// two rounds, and a server that keeps challenging is broken.
const maxAuthRounds = 16

// maxCommandLine is RFC 2449's limit on a command line, CRLF included; an
// AUTH initial response that would exceed it must be sent as a response to
// an empty challenge instead (RFC 5034 section 4).
const maxCommandLine = 255

// Client is a POP3 session.
type Client struct {
	conn net.Conn
	r    reader
	caps map[string][]string // nil until CAPA was read
	cmds int
	// err is set once the conversation cannot go on: an I/O error, or a
	// response we could not parse or did not read to its end. A -ERR
	// reply does not set it.
	err   error
	isTLS bool
	// maxResponse bounds multi-line responses; a field so tests can lower it.
	maxResponse int64
	// debug, when set, sees both directions in plaintext.
	debug Debug
	// lastSent is when the last line was handed to the connection.
	lastSent time.Time
}

// source is what the reader reads from: conn, seen by debug if set.
func (c *Client) source(conn net.Conn) io.Reader {
	if c.debug == nil {
		return conn
	}
	return debugReader{conn, c.debug}
}

type debugReader struct {
	r io.Reader
	d Debug
}

func (r debugReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if n > 0 {
		r.d.Received(p[:n])
	}
	return n, err
}

// Debug sees the conversation in plaintext, after STLS too, with its
// direction: Sent gets every line the client writes, Received every byte
// it reads. Both see credentials: an implementation must redact them.
type Debug interface {
	Sent(p []byte)
	Received(p []byte)
}

// Option configures a Client.
type Option func(*Client)

// WithDebug makes the client report its conversation to d.
func WithDebug(d Debug) Option {
	return func(c *Client) { c.debug = d }
}

// NewClient reads the server greeting from conn. A -ERR greeting is returned
// as *Error. The caller owns conn and closes it on error.
func NewClient(conn net.Conn, opts ...Option) (*Client, error) {
	c := &Client{conn: conn, maxResponse: MaxResponseSize}
	for _, o := range opts {
		o(c)
	}
	c.r = newReader(c.source(conn))
	_, isTLS := conn.(*tls.Conn)
	c.isTLS = isTLS
	if _, err := c.status(""); err != nil {
		return nil, err
	}
	return c, nil
}

// Commands returns the number of commands sent so far. SASL responses and
// the "*" that cancels an exchange are part of AUTH and not counted.
func (c *Client) Commands() int { return c.cmds }

// LastSent returns when the last line (a command, or a SASL response) was
// written, taken just before the write. After User or Auth it bounds from
// below when the server could have entered the TRANSACTION state.
func (c *Client) LastSent() time.Time { return c.lastSent }

// Capabilities returns the server's CAPA listing, keyed by upper-case
// capability name with its arguments as values. A server without CAPA gives
// an empty map. The listing is cached until STLS or a login, after which
// servers may announce different capabilities.
func (c *Client) Capabilities() (map[string][]string, error) {
	if c.caps == nil {
		if err := c.readCaps(); err != nil {
			return nil, err
		}
	}
	out := make(map[string][]string, len(c.caps))
	for k, v := range c.caps {
		out[k] = append([]string(nil), v...)
	}
	return out, nil
}

func (c *Client) readCaps() error {
	_, err := c.cmd("CAPA")
	var perr *Error
	if errors.As(err, &perr) {
		// RFC 1939 servers do not know CAPA; that is not a failure.
		c.caps = map[string][]string{}
		return nil
	}
	if err != nil {
		return err
	}
	caps := map[string][]string{}
	err = c.r.readDotLines(maxCapaSize, func(line []byte) error {
		f := strings.Fields(string(line))
		if len(f) > 0 {
			caps[strings.ToUpper(f[0])] = f[1:]
		}
		return nil
	})
	if err != nil {
		return c.fail("CAPA", err)
	}
	c.caps = caps
	return nil
}

// StartTLS sends STLS and performs the TLS handshake with cfg over the same
// connection, then reads CAPA again because RFC 2595 requires the client to
// forget what it learnt in clear.
func (c *Client) StartTLS(cfg *tls.Config) error {
	if cfg == nil {
		return errors.New("pop3: STLS: nil TLS config")
	}
	if c.isTLS {
		return errors.New("pop3: STLS: connection already uses TLS")
	}
	if _, err := c.cmd("STLS"); err != nil {
		return err
	}
	// Anything the server sent after its +OK was sent in clear and would be
	// read as if it came through TLS (a command injection, CVE-2011-0411
	// style): refuse rather than use it.
	if c.r.br.Buffered() > 0 {
		return c.fail("STLS", errors.New("server sent data before the TLS handshake"))
	}
	tc := tls.Client(c.conn, cfg)
	// Handshake has no deadline of its own: closing the bound connection
	// when the probe's context ends interrupts it.
	if err := tc.Handshake(); err != nil {
		return c.fail("STLS", fmt.Errorf("tls handshake: %w", err))
	}
	c.conn = tc
	c.r.br.Reset(c.source(tc))
	c.isTLS = true
	c.caps = nil
	return c.readCaps()
}

// User logs in with USER and PASS.
func (c *Client) User(user, pass string) error {
	// Check both before sending USER, so a bad password costs no round trip.
	if err := checkArg("USER", user); err != nil {
		return err
	}
	if err := checkArg("PASS", pass); err != nil {
		return err
	}
	if _, err := c.cmd("USER", user); err != nil {
		return err
	}
	if _, err := c.cmd("PASS", pass); err != nil {
		return err
	}
	c.caps = nil
	return nil
}

// Auth logs in with a SASL mechanism (RFC 5034). The initial response goes
// on the AUTH line unless that would make the line longer than RFC 2449
// allows, as long OAuth tokens do. A mechanism error cancels the exchange
// with "*". Neither payloads nor challenges appear in returned errors.
func (c *Client) Auth(mech sasl.Client) error {
	if c.err != nil {
		return c.err
	}
	name, ir, err := mech.Start()
	if err != nil {
		return fmt.Errorf("pop3: AUTH: %w", err)
	}
	args := []string{name}
	var pending []byte // initial response waiting for the server's empty challenge
	if ir != nil {
		enc := "="
		if len(ir) > 0 {
			enc = base64.StdEncoding.EncodeToString(ir)
		}
		if len("AUTH "+name+" "+enc+"\r\n") <= maxCommandLine {
			args = append(args, enc)
		} else {
			pending = ir
		}
	}
	if err := c.send("AUTH", args...); err != nil {
		return err
	}
	for round := 0; ; round++ {
		line, err := c.r.readLine()
		if err != nil {
			return c.fail("AUTH", err)
		}
		trimmed := bytes.TrimLeft(line, " \t")
		if len(trimmed) == 0 || trimmed[0] != '+' || hasPrefixFold(trimmed, "+OK") {
			ok, text, err := parseStatus(line)
			if err != nil {
				return c.fail("AUTH", err)
			}
			if !ok {
				return &Error{Command: "AUTH", Message: text}
			}
			c.caps = nil
			return nil
		}
		if round >= maxAuthRounds {
			return c.fail("AUTH", errors.New("too many SASL challenges"))
		}
		var resp []byte
		if pending != nil {
			// The server's first challenge stands for "send your initial
			// response"; it is empty by RFC 5034 and its content is ignored.
			resp, pending = pending, nil
		} else {
			challenge, derr := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(trimmed[1:])))
			if derr != nil {
				return c.cancelAuth(errors.New("server sent a challenge that is not base64"))
			}
			resp, err = mech.Next(challenge)
			if err != nil {
				return c.cancelAuth(err)
			}
		}
		if err := c.writeLine([]byte(base64.StdEncoding.EncodeToString(resp)), "AUTH"); err != nil {
			return err
		}
	}
}

// cancelAuth aborts a SASL exchange with "*" and reads the server's reply,
// which must be -ERR; cause says why we gave up.
func (c *Client) cancelAuth(cause error) error {
	if err := c.writeLine([]byte("*"), "AUTH"); err != nil {
		return err
	}
	_, err := c.status("AUTH")
	var perr *Error
	if errors.As(err, &perr) {
		return fmt.Errorf("pop3: AUTH cancelled: %w: %w", cause, perr)
	}
	if err != nil {
		return err
	}
	// +OK to a cancel: we do not know whose identity the server accepted.
	return c.fail("AUTH", errors.New("server accepted a cancelled authentication"))
}

// Stat returns the number of messages in the maildrop and their total size.
func (c *Client) Stat() (count int, size int64, err error) {
	text, err := c.cmd("STAT")
	if err != nil {
		return 0, 0, err
	}
	n, rest := cutField([]byte(text))
	s, _ := cutField(rest)
	cnt, ok1 := parseNumber(n)
	sz, ok2 := parseNumber(s)
	if !ok1 || !ok2 || cnt > maxListEntries {
		// A one-line reply was read in full, so the session can go on.
		return 0, 0, fmt.Errorf("pop3: STAT: malformed reply %s", quote([]byte(text)))
	}
	return int(cnt), sz, nil
}

// UIDL lists the unique ids of the messages not marked as deleted.
func (c *Client) UIDL() ([]MessageID, error) {
	if _, err := c.cmd("UIDL"); err != nil {
		return nil, err
	}
	// The ids are gathered in one buffer and turned into one string at the
	// end, so a large maildrop costs a few allocations instead of one each.
	var (
		ids   []MessageID
		arena []byte
		ends  []int
	)
	err := c.r.readDotLines(c.maxResponse, func(line []byte) error {
		if len(ids) >= maxListEntries {
			return ErrResponseTooLarge
		}
		n, rest := cutField(line)
		uid, extra := cutField(rest)
		num, ok := parseNumber(n)
		if !ok || num < 1 || num > maxListEntries || len(uid) == 0 || len(extra) != 0 {
			return fmt.Errorf("malformed UIDL line %s", quote(line))
		}
		arena = append(arena, uid...)
		ends = append(ends, len(arena))
		ids = append(ids, MessageID{Num: int(num)})
		return nil
	})
	if err != nil {
		return nil, c.fail("UIDL", err)
	}
	all, start := string(arena), 0
	for i, end := range ends {
		ids[i].UID = all[start:end]
		start = end
	}
	return ids, nil
}

// Top returns the headers of message num, the blank line after them and the
// first lines lines of its body, dot-unstuffed, each line ending in CRLF.
func (c *Client) Top(num, lines int) ([]byte, error) {
	if num < 1 || lines < 0 {
		return nil, fmt.Errorf("pop3: TOP: invalid arguments %d %d", num, lines)
	}
	if _, err := c.cmd("TOP", strconv.Itoa(num), strconv.Itoa(lines)); err != nil {
		return nil, err
	}
	var buf []byte
	err := c.r.readDotLines(min(c.maxResponse, maxTopSize), func(line []byte) error {
		buf = append(buf, line...)
		buf = append(buf, '\r', '\n')
		return nil
	})
	if err != nil {
		return nil, c.fail("TOP", err)
	}
	return buf, nil
}

// List returns the size in octets of message num (LIST n, RFC 1939
// section 5), which the server may count with other line endings than the
// ones it sends: an estimate good enough to refuse a message before reading
// it.
func (c *Client) List(num int) (int64, error) {
	if num < 1 {
		return 0, fmt.Errorf("pop3: LIST: invalid message number %d", num)
	}
	text, err := c.cmd("LIST", strconv.Itoa(num))
	if err != nil {
		return 0, err
	}
	n, rest := cutField([]byte(text))
	s, _ := cutField(rest)
	got, ok1 := parseNumber(n)
	size, ok2 := parseNumber(s)
	if !ok1 || !ok2 || got != int64(num) {
		// A one-line reply was read in full, so the session can go on.
		return 0, fmt.Errorf("pop3: LIST: malformed reply %s", quote([]byte(text)))
	}
	return size, nil
}

// Retr returns message num whole (RETR, RFC 1939 section 5), dot-unstuffed,
// each line ending in CRLF, reading at most limit octets (and never more
// than TOP may): a longer answer is ErrResponseTooLarge, after which the
// session cannot go on. Callers check the size with List first.
func (c *Client) Retr(num int, limit int64) ([]byte, error) {
	if num < 1 || limit <= 0 {
		return nil, fmt.Errorf("pop3: RETR: invalid arguments %d %d", num, limit)
	}
	if _, err := c.cmd("RETR", strconv.Itoa(num)); err != nil {
		return nil, err
	}
	var buf []byte
	err := c.r.readDotLines(min(c.maxResponse, maxTopSize+maxRetrSlack, limit), func(line []byte) error {
		buf = append(buf, line...)
		buf = append(buf, '\r', '\n')
		return nil
	})
	if err != nil {
		return nil, c.fail("RETR", err)
	}
	return buf, nil
}

// Dele marks message num as deleted. The server removes it only when it
// acknowledges QUIT.
func (c *Client) Dele(num int) error {
	if num < 1 {
		return fmt.Errorf("pop3: DELE: invalid message number %d", num)
	}
	_, err := c.cmd("DELE", strconv.Itoa(num))
	return err
}

// Noop sends NOOP.
func (c *Client) Noop() error {
	_, err := c.cmd("NOOP")
	return err
}

// Quit sends QUIT and closes the connection. Deletions take effect only when
// the server answers +OK, so anything else, a lost connection included, is
// an error.
func (c *Client) Quit() error {
	_, err := c.cmd("QUIT")
	if cerr := c.Close(); err == nil && cerr != nil && !errors.Is(cerr, net.ErrClosed) {
		err = cerr
	}
	return err
}

// Close closes the connection without QUIT, so the server discards any
// deletion of this session.
func (c *Client) Close() error {
	if c.err == nil {
		c.err = errClosed
	}
	return c.conn.Close()
}

// cmd sends a command and reads its status line, returning the text after
// +OK, or *Error for -ERR.
func (c *Client) cmd(verb string, args ...string) (string, error) {
	if err := c.send(verb, args...); err != nil {
		return "", err
	}
	return c.status(verb)
}

func (c *Client) send(verb string, args ...string) error {
	if c.err != nil {
		return c.err
	}
	line := make([]byte, 0, 64)
	line = append(line, verb...)
	for _, a := range args {
		if err := checkArg(verb, a); err != nil {
			return err
		}
		line = append(line, ' ')
		line = append(line, a...)
	}
	c.cmds++
	return c.writeLine(line, verb)
}

// checkArg refuses an argument with a line break, which would smuggle in a
// second command. The argument is not quoted in the error: it may be a
// password.
func checkArg(verb, arg string) error {
	if strings.ContainsAny(arg, "\r\n\x00") {
		return fmt.Errorf("pop3: %s: %w", verb, ErrInvalidArgument)
	}
	return nil
}

// ErrInvalidArgument is a command argument (a configured user name or
// password) that cannot be sent: the probe's configuration, not the server,
// is at fault.
var ErrInvalidArgument = errors.New("argument contains a line break or NUL")

// writeLine writes one line with its CRLF in a single Write.
func (c *Client) writeLine(line []byte, verb string) error {
	if c.err != nil {
		return c.err
	}
	line = append(line, '\r', '\n')
	c.lastSent = time.Now()
	n, err := c.conn.Write(line)
	if c.debug != nil {
		c.debug.Sent(line[:n])
	}
	if err != nil {
		return c.fail(verb, err)
	}
	return nil
}

func (c *Client) status(verb string) (string, error) {
	if c.err != nil {
		return "", c.err
	}
	line, err := c.r.readLine()
	if err != nil {
		return "", c.fail(verb, err)
	}
	ok, text, err := parseStatus(line)
	if err != nil {
		return "", c.fail(verb, err)
	}
	if !ok {
		return "", &Error{Command: verb, Message: text}
	}
	return text, nil
}

// fail records err as the reason the session cannot continue: after it we
// no longer know where the server is in the conversation.
func (c *Client) fail(verb string, err error) error {
	what := verb
	if what == "" {
		what = "greeting"
	}
	err = fmt.Errorf("pop3: %s: %w", what, err)
	if c.err == nil {
		c.err = err
	}
	return err
}
