// Package gmailtabs finds the Gmail inbox tab (Promotions, Social, Updates,
// Forums) of one message over IMAP, on a short read-only session of its own:
// connect, greeting, login, EXAMINE INBOX, one UID SEARCH per category with
// Gmail's X-GM-RAW search key until one names the message, LOGOUT.
//
// It is a small IMAP client of its own because go-imap v2.0.0-beta.8 (and
// beta.9) cannot send X-GM-RAW: its client's commands are fixed methods over
// an unexported encoder, and its SEARCH keys are a fixed set. Gmail
// documents X-GM-RAW in
// https://developers.google.com/gmail/imap/imap-extensions#extension_of_the_search_command_x-gm-raw
// and the `category:` operator in https://support.google.com/mail/answer/7190.
//
// Every read is bounded (line length, literal size, untagged responses per
// command, and the transport's read budget) and every wait ends with ctx,
// which closes the connection. Credentials never appear in an error.
package gmailtabs // import "github.com/emailqos/emailqosreceiver/internal/gmailtabs"

import (
	"bufio"
	"bytes"
	"context"
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

	"github.com/emailqos/emailqosreceiver/internal/safetext"
	"github.com/emailqos/emailqosreceiver/internal/saslx"
	"github.com/emailqos/emailqosreceiver/internal/steps"
	"github.com/emailqos/emailqosreceiver/internal/transcript"
	"github.com/emailqos/emailqosreceiver/internal/transport"
)

// Tabs are Gmail's inbox tabs other than Primary, as the `category:` search
// operator names them.
var Tabs = []string{"promotions", "social", "updates", "forums"}

// primary is the category of the Primary tab. It is asked for first: a
// probe from a known sender usually lands there, and a message no category
// names is one Gmail's search has not categorised (yet), not Primary.
const primary = "primary"

var categories = append([]string{primary}, Tabs...)

// ErrUncategorised: no category names the message, twice. Gmail's search,
// which X-GM-RAW uses, may not have indexed a message just delivered.
var ErrUncategorised = errors.New("no category (primary, promotions, social, updates, forums) names the message: Gmail's search has not categorised it")

// retryPause is how long a message no category names is given before it is
// asked for once more.
const retryPause = time.Second

// Bounds of what a server can make the session read. The answers it needs
// are a greeting, a capability list, EXAMINE's few lines and SEARCH results
// naming one UID: all far below these.
const (
	// maxLine bounds one response line, literals included.
	maxLine = 64 << 10
	// maxLiteral bounds one literal in a response; none is expected.
	maxLiteral = 16 << 10
	// maxUntagged bounds the untagged responses read for one command.
	maxUntagged = 1000
	// maxAuthRounds bounds the SASL challenges of one AUTHENTICATE; the
	// mechanisms used finish in two.
	maxAuthRounds = 4
	// maxServerText bounds the server text quoted in an error.
	maxServerText = 200
)

// Steps of the session, named in its errors.
const (
	StepConnect  = "connect"
	StepGreeting = "greeting"
	StepStartTLS = "starttls"
	StepLogin    = "login"
	StepExamine  = "examine"
	StepSearch   = "search"
)

// Options configures a lookup.
type Options struct {
	Endpoint transport.Endpoint
	// Credentials sign in with LOGIN (AUTHENTICATE PLAIN where LOGIN is
	// disabled), or with AUTHENTICATE XOAUTH2 or OAUTHBEARER when they hold
	// a Token, as the probe's own IMAP session does.
	saslx.Credentials
	// AllowPlaintextAuth permits credentials on an unencrypted connection;
	// only for a user who configured security none explicitly.
	AllowPlaintextAuth bool
	// UIDValidity is INBOX's UIDVALIDITY as the session that found the
	// message saw it; when it differs from EXAMINE's, the UID names another
	// message and the lookup fails. 0 skips the check.
	UIDValidity uint32
	// Transcript, when set, records the conversation (redacted).
	Transcript *transcript.Transcript
}

// Result is what a lookup found.
type Result struct {
	// Tab is the message's tab (one of Tabs), or "" when it is in none of
	// them: the Primary tab, or a message Gmail did not categorise.
	Tab string
	// Commands counts the IMAP commands sent, also when the lookup failed.
	Commands int
}

// Error is a failed lookup: the step it failed in and why. Its text never
// holds a credential.
type Error struct {
	Step string
	Err  error
}

func (e *Error) Error() string { return "gmail tabs: " + e.Step + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Lookup signs in to opts.Endpoint, examines INBOX read-only and asks,
// category by category (Primary first), whether the message uid is in it,
// until one answers yes. The message's flags are not changed (EXAMINE,
// SEARCH only). When none does, they are asked once more after a second;
// still none is ErrUncategorised.
func Lookup(ctx context.Context, opts Options, uid uint32) (res Result, err error) {
	if uid == 0 {
		return res, &Error{Step: StepSearch, Err: errors.New("no message UID")}
	}
	s := &session{opts: opts}
	defer func() {
		res.Commands = s.cmds
		if err != nil {
			err = s.wrap(ctx, err)
		}
	}()
	if err := s.open(ctx); err != nil {
		return res, err
	}
	defer s.close()
	if err := s.login(ctx); err != nil {
		return res, err
	}
	if err := s.examine(); err != nil {
		return res, err
	}
	for round := 0; ; round++ {
		cat, err := s.category(uid)
		if err != nil {
			return res, err
		}
		if cat != "" {
			if cat != primary {
				res.Tab = cat
			}
			break
		}
		if round == 1 {
			s.logout()
			return res, fail(StepSearch, ErrUncategorised)
		}
		select {
		case <-time.After(retryPause):
		case <-ctx.Done():
			return res, fail(StepSearch, ErrUncategorised)
		}
	}
	// The answer is known: a failed LOGOUT changes nothing.
	s.logout()
	return res, nil
}

// category asks for each category in turn; "" when none names uid.
func (s *session) category(uid uint32) (string, error) {
	for _, cat := range categories {
		hit, err := s.search(uid, cat)
		if err != nil || hit {
			return cat, err
		}
	}
	return "", nil
}

type session struct {
	opts   Options
	raw    net.Conn // from transport.Dial, closed at the end
	conn   net.Conn // what commands are written to (TLS once up)
	r      *bufio.Reader
	stream *transcript.Stream
	tag    int
	cmds   int
	caps   map[string]bool
	// secrets are kept out of every error (RedactError).
	secrets []string
}

// fail is an error of step.
func fail(step string, err error) error { return &Error{Step: step, Err: err} }

// wrap redacts credentials and, when ctx ended, says so: a closed
// connection is then the context's doing.
func (s *session) wrap(ctx context.Context, err error) error {
	var e *Error
	if !errors.As(err, &e) {
		e = &Error{Step: StepConnect, Err: err}
	}
	inner := e.Err
	if ctx.Err() != nil && !errors.Is(inner, ctx.Err()) {
		inner = fmt.Errorf("%w (%v)", context.Cause(ctx), inner)
	}
	return &Error{Step: e.Step, Err: transcript.RedactError(inner, s.opts.Username, append([]string{s.opts.Password}, s.secrets...)...)}
}

func (s *session) open(ctx context.Context) error {
	ep := s.opts.Endpoint
	// Not recorded as steps: the lookup is no step of the measured probe.
	raw, err := transport.Dial(ctx, ep, steps.IMAPConnect, steps.IMAPTLS, nil)
	if err != nil {
		return fail(StepConnect, err)
	}
	s.raw = raw
	s.stream = s.opts.Transcript.Stream(transcript.IMAP)
	s.use(raw)
	caps, err := s.greeting()
	if err != nil {
		return err
	}
	if ep.Security == transport.STARTTLS {
		if err := s.startTLS(ctx); err != nil {
			return err
		}
		// RFC 3501 section 6.2.1: what was learnt in clear is forgotten.
		caps = nil
	}
	if caps == nil {
		if caps, err = s.capability(); err != nil {
			return err
		}
	}
	s.caps = caps
	return nil
}

func (s *session) use(c net.Conn) {
	s.conn = s.stream.Conn(c)
	s.r = bufio.NewReaderSize(s.conn, 4096)
}

func (s *session) close() {
	if s.raw != nil {
		_ = s.raw.Close()
	}
}

// greeting reads the server's first line and the capabilities it may carry
// (nil when it carries none).
func (s *session) greeting() (map[string]bool, error) {
	line, err := s.readLine()
	if err != nil {
		return nil, fail(StepGreeting, err)
	}
	kind, text, ok := untagged(line)
	switch {
	case !ok:
		return nil, fail(StepGreeting, fmt.Errorf("not an IMAP greeting: %s", quote(line)))
	case strings.EqualFold(kind, "OK"):
	case strings.EqualFold(kind, "PREAUTH"):
		// Signed in already, without our credentials: not the account.
		return nil, fail(StepGreeting, errors.New("server greeted with PREAUTH; the account's credentials could not be used"))
	default:
		return nil, fail(StepGreeting, fmt.Errorf("server refused the connection: %s", quote(line)))
	}
	return capsFromCode(text), nil
}

func (s *session) startTLS(ctx context.Context) error {
	if _, err := s.command(StepStartTLS, "STARTTLS"); err != nil {
		return err
	}
	if s.r.Buffered() > 0 {
		// Bytes sent before the handshake would be read as if protected
		// (the STARTTLS injection of CVE-2011-0411).
		return fail(StepStartTLS, errors.New("server sent data after its STARTTLS reply"))
	}
	tc := tls.Client(s.raw, s.opts.Endpoint.ClientTLSConfig())
	if err := tc.HandshakeContext(ctx); err != nil {
		return fail(StepStartTLS, fmt.Errorf("tls handshake: %w", err))
	}
	s.use(tc)
	return nil
}

func (s *session) capability() (map[string]bool, error) {
	lines, err := s.command(StepGreeting, "CAPABILITY")
	if err != nil {
		return nil, err
	}
	caps := map[string]bool{}
	for _, l := range lines {
		if kind, rest, _ := strings.Cut(l, " "); strings.EqualFold(kind, "CAPABILITY") {
			addCaps(caps, rest)
		}
	}
	return caps, nil
}

// capsFromCode reads a [CAPABILITY ...] response code; nil without one.
func capsFromCode(text string) map[string]bool {
	if !strings.HasPrefix(text, "[") {
		return nil
	}
	code, _, ok := strings.Cut(text[1:], "]")
	if !ok {
		return nil
	}
	kind, rest, _ := strings.Cut(code, " ")
	if !strings.EqualFold(kind, "CAPABILITY") {
		return nil
	}
	caps := map[string]bool{}
	addCaps(caps, rest)
	return caps
}

func addCaps(caps map[string]bool, list string) {
	for _, c := range strings.Fields(list) {
		caps[strings.ToUpper(c)] = true
	}
}

func (s *session) mechanisms() []string {
	var out []string
	for c := range s.caps {
		if m, ok := strings.CutPrefix(c, "AUTH="); ok {
			out = append(out, m)
		}
	}
	return out
}

func (s *session) login(ctx context.Context) error {
	o := s.opts
	if o.Endpoint.Security == transport.None && !o.AllowPlaintextAuth {
		return fail(StepLogin, errors.New("refusing to send credentials over an unencrypted connection"))
	}
	if o.Username == "" {
		return fail(StepLogin, errors.New("no username"))
	}
	if o.Token != nil {
		token, err := o.Token(ctx)
		if err != nil {
			return fail(StepLogin, fmt.Errorf("no OAuth token: %w", err))
		}
		s.secrets = append(s.secrets, token)
		c, _, err := saslx.Pick(s.mechanisms(), o.Username, token, o.Mechanism)
		if err != nil {
			return fail(StepLogin, err)
		}
		return s.authenticate(c)
	}
	if s.caps["LOGINDISABLED"] {
		if !s.caps["AUTH=PLAIN"] {
			return fail(StepLogin, errors.New("LOGIN disabled and AUTHENTICATE PLAIN not offered"))
		}
		return s.authenticate(sasl.NewPlainClient("", o.Username, o.Password))
	}
	user, uerr := argument("username", o.Username)
	pass, perr := argument("password", o.Password)
	if err := errors.Join(uerr, perr); err != nil {
		if errors.Is(err, errEightBit) && s.caps["AUTH=PLAIN"] && !errors.Is(err, errControl) {
			// 8-bit text needs a literal in LOGIN; PLAIN carries it in
			// base64 (RFC 4616 allows UTF-8).
			return s.authenticate(sasl.NewPlainClient("", o.Username, o.Password))
		}
		return fail(StepLogin, err)
	}
	_, err := s.command(StepLogin, "LOGIN", user, pass)
	return err
}

// authenticate runs one SASL exchange (RFC 3501 section 6.2.2), the
// initial response on the command line where the server has SASL-IR
// (RFC 4959).
func (s *session) authenticate(c sasl.Client) error {
	mech, ir, err := c.Start()
	if err != nil {
		return fail(StepLogin, err)
	}
	tag := s.nextTag()
	cmd := tag + " AUTHENTICATE " + mech
	pending := ir != nil
	if pending && s.caps["SASL-IR"] {
		cmd += " " + encode(ir)
		pending = false
	}
	if err := s.write(StepLogin, cmd+"\r\n"); err != nil {
		return err
	}
	for rounds := 0; ; rounds++ {
		line, err := s.readLine()
		if err != nil {
			return fail(StepLogin, err)
		}
		if strings.HasPrefix(line, "* ") {
			if rounds > maxUntagged {
				return fail(StepLogin, errors.New("too many untagged responses"))
			}
			continue
		}
		if ch, ok := strings.CutPrefix(line, "+"); ok {
			if rounds >= maxAuthRounds {
				return fail(StepLogin, errors.New("too many SASL challenges"))
			}
			var resp []byte
			if pending {
				resp, pending = ir, false
			} else {
				challenge, err := base64.StdEncoding.DecodeString(strings.TrimSpace(ch))
				if err != nil {
					return fail(StepLogin, errors.New("SASL challenge is not base64"))
				}
				if resp, err = c.Next(challenge); err != nil {
					// Cancel the exchange (RFC 3501 section 6.2.2) and
					// read its tagged end.
					if err := s.write(StepLogin, "*\r\n"); err != nil {
						return err
					}
					continue
				}
			}
			// An empty response is an empty line (RFC 3501 section
			// 6.2.2), not "=", which only marks an empty initial response.
			if err := s.write(StepLogin, base64.StdEncoding.EncodeToString(resp)+"\r\n"); err != nil {
				return err
			}
			continue
		}
		st, text, err := s.tagged(tag, line)
		if err != nil {
			return fail(StepLogin, err)
		}
		if st != "OK" {
			return fail(StepLogin, saslx.Explain(c, refused(st, text)))
		}
		return nil
	}
}

func encode(ir []byte) string {
	if len(ir) == 0 {
		return "=" // RFC 4959: an empty initial response
	}
	return base64.StdEncoding.EncodeToString(ir)
}

// examine opens INBOX read-only (RFC 3501 section 6.3.2): nothing the
// session does can set \Seen or any other flag.
func (s *session) examine() error {
	lines, err := s.command(StepExamine, "EXAMINE", `"INBOX"`)
	if err != nil {
		return err
	}
	if s.opts.UIDValidity == 0 {
		return nil
	}
	for _, l := range lines {
		_, text, _ := strings.Cut(l, " ")
		if v, ok := codeNumber(text, "UIDVALIDITY"); ok {
			if v != s.opts.UIDValidity {
				return fail(StepExamine, fmt.Errorf("UIDVALIDITY of INBOX is %d, the probe's session saw %d: the UID names another message", v, s.opts.UIDValidity))
			}
			return nil
		}
	}
	return fail(StepExamine, errors.New("EXAMINE reported no UIDVALIDITY"))
}

// codeNumber reads a "[NAME n]" response code at the start of text.
func codeNumber(text, name string) (uint32, bool) {
	rest, ok := strings.CutPrefix(text, "[")
	if !ok {
		return 0, false
	}
	code, _, ok := strings.Cut(rest, "]")
	if !ok {
		return 0, false
	}
	k, v, _ := strings.Cut(code, " ")
	if !strings.EqualFold(k, name) {
		return 0, false
	}
	n, err := strconv.ParseUint(v, 10, 32)
	return uint32(n), err == nil
}

// search asks whether uid is in tab: UID SEARCH UID <uid> X-GM-RAW
// "category:<tab>", which answers with the UID or with nothing.
func (s *session) search(uid uint32, tab string) (bool, error) {
	want := strconv.FormatUint(uint64(uid), 10)
	term, err := argument("search term", "category:"+tab)
	if err != nil {
		return false, fail(StepSearch, err)
	}
	lines, err := s.command(StepSearch, "UID SEARCH UID", want, "X-GM-RAW", term)
	if err != nil {
		return false, err
	}
	hit := false
	for _, l := range lines {
		kind, rest, _ := strings.Cut(l, " ")
		if !strings.EqualFold(kind, "SEARCH") {
			continue
		}
		for _, f := range strings.Fields(rest) {
			if _, err := strconv.ParseUint(f, 10, 32); err != nil {
				return false, fail(StepSearch, fmt.Errorf("malformed SEARCH response: %s", quote("* "+l)))
			}
			hit = hit || f == want
		}
	}
	return hit, nil
}

func (s *session) logout() {
	_, _ = s.command("logout", "LOGOUT")
}

func (s *session) nextTag() string {
	s.tag++
	s.cmds++
	return "G" + strconv.Itoa(s.tag)
}

func (s *session) write(step, text string) error {
	if _, err := io.WriteString(s.conn, text); err != nil {
		return fail(step, err)
	}
	return nil
}

// command sends one command and reads to its tagged reply, returning the
// untagged responses (without "* "). A NO or BAD is an error.
func (s *session) command(step, verb string, args ...string) ([]string, error) {
	tag := s.nextTag()
	line := tag + " " + verb
	if len(args) > 0 {
		line += " " + strings.Join(args, " ")
	}
	if err := s.write(step, line+"\r\n"); err != nil {
		return nil, err
	}
	var out []string
	for {
		l, err := s.readLine()
		if err != nil {
			return nil, fail(step, err)
		}
		if rest, ok := strings.CutPrefix(l, "* "); ok {
			if len(out) == maxUntagged {
				return nil, fail(step, fmt.Errorf("more than %d untagged responses to one command", maxUntagged))
			}
			if kind, _, _ := strings.Cut(rest, " "); strings.EqualFold(kind, "BYE") && verb != "LOGOUT" {
				return nil, fail(step, fmt.Errorf("server closed the session: %s", quote(l)))
			}
			out = append(out, rest)
			continue
		}
		st, text, err := s.tagged(tag, l)
		if err != nil {
			return nil, fail(step, err)
		}
		if st != "OK" {
			return nil, fail(step, refused(st, text))
		}
		return out, nil
	}
}

// tagged parses the reply to tag: its status (OK, NO, BAD) and text.
func (s *session) tagged(tag, line string) (status, text string, _ error) {
	t, rest, _ := strings.Cut(line, " ")
	if t != tag {
		return "", "", fmt.Errorf("unexpected response: %s", quote(line))
	}
	st, text, _ := strings.Cut(rest, " ")
	st = strings.ToUpper(st)
	switch st {
	case "OK", "NO", "BAD":
		return st, text, nil
	}
	return "", "", fmt.Errorf("malformed tagged response: %s", quote(line))
}

func refused(status, text string) error {
	return fmt.Errorf("server answered %s: %s", status, quote(text))
}

// quote is server text fit for an error: bounded and escaped.
func quote(s string) string {
	if len(s) > maxServerText {
		s = s[:maxServerText] + "..."
	}
	return strconv.Quote(safetext.Escape(s))
}

var errLineTooLong = fmt.Errorf("response line longer than %d bytes", maxLine)

// readLine reads one response line without its CRLF. A literal it announces
// ({n} at its end) is read and left out, up to maxLiteral bytes, and the
// line goes on after it; the whole stays within maxLine.
func (s *session) readLine() (string, error) {
	var line []byte
	for {
		part, err := s.readRaw(maxLine - len(line))
		if err != nil {
			return "", err
		}
		line = append(line, part...)
		n, ok, err := literalSize(part)
		if err != nil {
			return "", err
		}
		if !ok {
			return string(line), nil
		}
		if n > maxLiteral {
			return "", fmt.Errorf("server announced a literal of %d bytes, more than the %d accepted", n, maxLiteral)
		}
		if n > int64(maxLine-len(line)) {
			return "", errLineTooLong
		}
		if _, err := io.CopyN(io.Discard, s.r, n); err != nil {
			return "", err
		}
		line = append(line, " "...)
	}
}

// readRaw reads up to a CRLF (or LF), at most room bytes.
func (s *session) readRaw(room int) ([]byte, error) {
	var line []byte
	for {
		frag, err := s.r.ReadSlice('\n')
		if len(line)+len(frag) > room {
			return nil, errLineTooLong
		}
		line = append(line, frag...)
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("reading the response: %w", err)
		}
	}
	line = bytes.TrimSuffix(line, []byte("\n"))
	return bytes.TrimSuffix(line, []byte("\r")), nil
}

// literalSize reads a literal marker "{n}" (or "{n+}") ending a line.
func literalSize(line []byte) (int64, bool, error) {
	if !bytes.HasSuffix(line, []byte("}")) {
		return 0, false, nil
	}
	i := bytes.LastIndexByte(line, '{')
	if i < 0 {
		return 0, false, nil
	}
	digits := bytes.TrimSuffix(line[i+1:len(line)-1], []byte("+"))
	if len(digits) == 0 || len(digits) > 19 {
		return 0, false, fmt.Errorf("malformed literal size in %s", quote(string(line[i:])))
	}
	n, err := strconv.ParseInt(string(digits), 10, 64)
	if err != nil || n < 0 {
		return 0, false, fmt.Errorf("malformed literal size in %s", quote(string(line[i:])))
	}
	return n, true, nil
}

// untagged splits "* KIND text".
func untagged(line string) (kind, text string, ok bool) {
	rest, ok := strings.CutPrefix(line, "* ")
	if !ok {
		return "", "", false
	}
	kind, text, _ = strings.Cut(rest, " ")
	return kind, text, true
}

var (
	errControl  = errors.New("contains CR, LF or NUL")
	errEightBit = errors.New("is not 7-bit ASCII, which an IMAP quoted string cannot carry")
)

// argument writes s as an IMAP quoted string (RFC 3501 section 4.3): 7-bit
// text without CR, LF or NUL, with \ and " escaped. A value that cannot be
// quoted is refused, naming the field, never the value: the session sends
// no literal, which LOGIN would otherwise need for 8-bit text.
func argument(field, s string) (string, error) {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == 0 || c == '\r' || c == '\n':
			return "", fmt.Errorf("%s %w", field, errControl)
		case c >= 0x80:
			return "", fmt.Errorf("%s %w", field, errEightBit)
		case c == '\\' || c == '"':
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
	b.WriteByte('"')
	return b.String(), nil
}
