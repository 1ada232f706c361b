package pop3test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// maxLine bounds a client line; longer lines end the session. It is well
// above RFC 2449's 255 octets because SASL responses carrying OAuth tokens
// are longer.
const maxLine = 64 << 10

var errLineTooLong = errors.New("line too long")

type session struct {
	s     *Server
	conn  net.Conn
	br    *bufio.Reader
	bw    *bufio.Writer
	isTLS bool

	user    string // from USER, waiting for PASS
	authed  string // logged-in user; "" in the AUTHORIZATION state
	msgs    []*message
	deleted []bool
	// lazy: logged in, snapshot not taken yet (Options.SnapshotLazy).
	lazy bool
}

func newSession(s *Server, conn net.Conn, isTLS bool) *session {
	return &session{s: s, conn: conn, br: bufio.NewReader(conn), bw: bufio.NewWriter(conn), isTLS: isTLS}
}

func (ss *session) run() {
	ss.reply("+OK pop3test ready")
	for {
		line, err := ss.readLine()
		if err != nil {
			if errors.Is(err, errLineTooLong) {
				// Drain the rest of the line first: closing with unread input
				// makes the kernel send a reset that can destroy the reply.
				ss.discardLine(1 << 20)
				ss.reply("-ERR line too long")
			}
			return
		}
		verb, arg, _ := strings.Cut(line, " ")
		if ss.handle(strings.ToUpper(verb), strings.TrimSpace(arg)) {
			return
		}
	}
}

// handle runs one command and reports whether the session is over.
func (ss *session) handle(verb, arg string) (done bool) {
	if f := ss.s.opts.OnCommand; f != nil {
		shown := arg
		if verb == "USER" || verb == "PASS" || verb == "AUTH" {
			shown = ""
		}
		f(verb, shown)
	}
	switch verb {
	case "CAPA":
		ss.capa()
		return false
	case "QUIT":
		ss.quit()
		return true
	case "STLS":
		return ss.stls()
	}
	if ss.authed == "" {
		switch verb {
		case "USER":
			ss.user = arg
			ss.reply("+OK send PASS")
		case "PASS":
			ss.pass(arg)
		case "AUTH":
			return ss.auth(arg)
		default:
			ss.reply("-ERR command not valid before login")
		}
		return false
	}
	if ss.lazy {
		ss.lazy = false
		ss.msgs = ss.s.snapshot(ss.authed)
		ss.deleted = make([]bool, len(ss.msgs))
	}
	switch verb {
	case "STAT":
		n, size := 0, 0
		for i, m := range ss.msgs {
			if !ss.deleted[i] {
				n++
				size += len(m.wire)
			}
		}
		ss.reply("+OK " + strconv.Itoa(n) + " " + strconv.Itoa(size))
	case "LIST", "UIDL":
		ss.list(verb, arg)
	case "RETR":
		if ss.s.opts.FailRetr {
			ss.reply("-ERR [SYS/TEMP] cannot read the message now")
			return false
		}
		ss.retr(verb, arg)
	case "TOP":
		ss.retr(verb, arg)
	case "DELE":
		i, ok := ss.message(arg)
		switch {
		case !ok:
		case ss.s.opts.FailDele:
			ss.reply("-ERR [SYS/TEMP] cannot delete now")
		default:
			ss.deleted[i] = true
			ss.reply("+OK message deleted")
		}
	case "RSET":
		clear(ss.deleted)
		ss.reply("+OK")
	case "NOOP":
		ss.reply("+OK")
	case "USER", "PASS", "AUTH":
		ss.reply("-ERR already logged in")
	default:
		ss.reply("-ERR unknown command")
	}
	return false
}

func (ss *session) capa() {
	if ss.s.opts.NoCAPA {
		ss.reply("-ERR unknown command")
		return
	}
	lines := []string{"TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "IMPLEMENTATION pop3test"}
	if ss.authed == "" {
		lines = append(lines, "USER")
		if ss.s.opts.SASL {
			mechs := "SASL PLAIN"
			if ss.s.opts.BearerCheck != nil {
				mechs += " XOAUTH2 OAUTHBEARER"
			}
			lines = append(lines, mechs)
		}
		if ss.stlsOffered() {
			lines = append(lines, "STLS")
		}
	}
	ss.multi("+OK capability list follows", func() {
		for _, l := range lines {
			ss.bw.WriteString(l + "\r\n")
		}
	})
}

func (ss *session) stlsOffered() bool {
	return ss.s.opts.TLSConfig != nil && !ss.s.opts.DisableSTLS && !ss.isTLS && ss.authed == ""
}

func (ss *session) stls() (done bool) {
	if !ss.stlsOffered() {
		ss.reply("-ERR STLS not available")
		return false
	}
	if !ss.reply("+OK begin TLS negotiation") {
		return true
	}
	// A client that pipelined data behind STLS would have it read as if
	// it had come through TLS; refuse as RFC 2595 servers should.
	if ss.br.Buffered() > 0 {
		return true
	}
	tc := tls.Server(ss.conn, ss.s.opts.TLSConfig)
	if err := tc.Handshake(); err != nil {
		return true
	}
	ss.conn, ss.isTLS, ss.user = tc, true, ""
	ss.br.Reset(tc)
	ss.bw.Reset(tc)
	return false
}

func (ss *session) pass(pass string) {
	user := ss.user
	ss.user = ""
	if user == "" {
		ss.reply("-ERR send USER first")
		return
	}
	want, ok := ss.s.opts.Users[user]
	if !ok || want != pass {
		ss.reply("-ERR [AUTH] invalid user name or password")
		return
	}
	ss.login(user)
}

func (ss *session) login(user string) {
	ss.authed = user
	if ss.s.opts.SnapshotFirst {
		ss.msgs = ss.s.snapshot(user)
	}
	time.Sleep(ss.s.opts.AuthDelay)
	if ss.s.opts.SnapshotLazy {
		ss.lazy = true
	} else if !ss.s.opts.SnapshotFirst {
		ss.msgs = ss.s.snapshot(user)
	}
	ss.deleted = make([]bool, len(ss.msgs))
	ss.reply("+OK logged in")
}

// auth runs the RFC 5034 exchange: AUTH mech [initial-response], then
// "+ challenge" / response lines until +OK or -ERR; "*" cancels.
func (ss *session) auth(arg string) (done bool) {
	name, ir, _ := strings.Cut(arg, " ")
	mech := ss.mechanism(strings.ToUpper(name))
	if mech == nil {
		ss.reply("-ERR unsupported mechanism")
		return false
	}
	var resp []byte
	if ir = strings.TrimSpace(ir); ir != "" {
		resp = []byte{}
		if ir != "=" {
			var err error
			if resp, err = base64.StdEncoding.DecodeString(ir); err != nil {
				ss.reply("-ERR invalid base64")
				return false
			}
		}
	}
	for range 8 {
		challenge, user, ok, err := mech(resp)
		if err != nil {
			ss.reply("-ERR [AUTH] authentication failed")
			return false
		}
		if ok {
			ss.login(user)
			return false
		}
		if !ss.reply("+ " + base64.StdEncoding.EncodeToString(challenge)) {
			return true
		}
		line, err := ss.readLine()
		if err != nil {
			return true
		}
		if strings.TrimSpace(line) == "*" {
			ss.reply("-ERR authentication cancelled")
			return false
		}
		if resp, err = base64.StdEncoding.DecodeString(strings.TrimSpace(line)); err != nil {
			ss.reply("-ERR invalid base64")
			return false
		}
	}
	ss.reply("-ERR too many rounds")
	return false
}

// mechanism is one step of a server-side SASL exchange. resp is nil when
// the client sent no initial response.
type mechanism func(resp []byte) (challenge []byte, user string, ok bool, err error)

func (ss *session) mechanism(name string) mechanism {
	o := ss.s.opts
	if !o.SASL {
		return nil
	}
	switch {
	case name == "PLAIN":
		return func(resp []byte) ([]byte, string, bool, error) {
			if resp == nil {
				return []byte{}, "", false, nil
			}
			parts := bytes.Split(resp, []byte{0})
			if len(parts) != 3 {
				return nil, "", false, errors.New("malformed PLAIN response")
			}
			authz, user, pass := string(parts[0]), string(parts[1]), string(parts[2])
			want, ok := o.Users[user]
			if (authz != "" && authz != user) || !ok || want != pass {
				return nil, "", false, errors.New("invalid credentials")
			}
			return nil, user, true, nil
		}
	case (name == "XOAUTH2" || name == "OAUTHBEARER") && o.BearerCheck != nil:
		failed := false
		return func(resp []byte) ([]byte, string, bool, error) {
			switch {
			case failed:
				// The client's reply to our error challenge ends the exchange.
				return nil, "", false, errors.New("invalid token")
			case resp == nil:
				return []byte{}, "", false, nil
			}
			user, token, ok := parseBearer(name, resp)
			if ok && o.BearerCheck(user, token) {
				return nil, user, true, nil
			}
			// RFC 7628 and Google's XOAUTH2 report failure as a JSON
			// challenge that the client must answer before the -ERR.
			failed = true
			return []byte(`{"status":"invalid_token","schemes":"bearer"}`), "", false, nil
		}
	}
	return nil
}

// parseBearer extracts user and token from an XOAUTH2 response
// ("user=U\x01auth=Bearer T\x01\x01") or an OAUTHBEARER one
// ("n,a=U,\x01auth=Bearer T\x01\x01").
func parseBearer(mech string, resp []byte) (user, token string, ok bool) {
	kv := string(resp)
	if mech == "OAUTHBEARER" {
		gs2 := strings.SplitN(kv, ",", 3)
		if len(gs2) != 3 || gs2[0] != "n" || !strings.HasPrefix(gs2[1], "a=") {
			return "", "", false
		}
		user, kv = strings.TrimPrefix(gs2[1], "a="), gs2[2]
	}
	for _, f := range strings.Split(kv, "\x01") {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "user":
			user = v
		case "auth":
			if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
				token = v[7:]
			}
		}
	}
	return user, token, user != "" && token != ""
}

// message resolves a message-number argument, replying -ERR itself when it
// does not name a live message.
func (ss *session) message(arg string) (int, bool) {
	n, err := strconv.Atoi(arg)
	if err != nil || n < 1 || n > len(ss.msgs) {
		ss.reply("-ERR no such message")
		return 0, false
	}
	if ss.deleted[n-1] {
		ss.reply("-ERR message already deleted")
		return 0, false
	}
	return n - 1, true
}

func (ss *session) list(verb, arg string) {
	value := func(m *message) string {
		if verb == "UIDL" {
			return m.uid
		}
		return strconv.Itoa(len(m.wire))
	}
	if arg != "" {
		if i, ok := ss.message(arg); ok {
			ss.reply("+OK " + strconv.Itoa(i+1) + " " + value(ss.msgs[i]))
		}
		return
	}
	ss.multi("+OK listing follows", func() {
		var num []byte
		for i, m := range ss.msgs {
			if !ss.deleted[i] {
				num = strconv.AppendInt(num[:0], int64(i+1), 10)
				ss.bw.Write(num)
				ss.bw.WriteByte(' ')
				ss.bw.WriteString(value(m))
				ss.bw.WriteString("\r\n")
			}
		}
	})
}

func (ss *session) retr(verb, arg string) {
	num, lines, _ := strings.Cut(arg, " ")
	body := -1
	if verb == "TOP" {
		n, err := strconv.Atoi(strings.TrimSpace(lines))
		if err != nil || n < 0 {
			ss.reply("-ERR TOP needs a message number and a line count")
			return
		}
		body = n
	}
	i, ok := ss.message(num)
	if !ok {
		return
	}
	ss.multi("+OK message follows", func() { writeDotStuffed(ss.bw, ss.msgs[i].wire, body) })
}

// writeDotStuffed writes the header of a CRLF message, and its body up to
// bodyLines lines (all when negative), doubling a leading '.'.
func writeDotStuffed(w *bufio.Writer, wire []byte, bodyLines int) {
	inBody, n := false, 0
	for len(wire) > 0 {
		line, rest, _ := bytes.Cut(wire, []byte("\r\n"))
		if inBody {
			if bodyLines >= 0 && n >= bodyLines {
				return
			}
			n++
		}
		if len(line) > 0 && line[0] == '.' {
			w.WriteByte('.')
		}
		w.Write(line)
		w.WriteString("\r\n")
		inBody = inBody || len(line) == 0
		wire = rest
	}
}

func (ss *session) quit() {
	if ss.authed == "" {
		ss.reply("+OK bye")
		return
	}
	if ss.s.opts.FailQuit {
		ss.reply("-ERR [SYS/TEMP] unable to update maildrop")
		return
	}
	gone := map[*message]bool{}
	for i, m := range ss.msgs {
		if ss.deleted[i] {
			gone[m] = true
		}
	}
	// UPDATE state: deletions are applied before the +OK that confirms them.
	ss.s.expunge(ss.authed, gone)
	ss.reply("+OK bye")
}

// reply writes one line and reports whether it was sent.
func (ss *session) reply(line string) bool {
	ss.bw.WriteString(line + "\r\n")
	return ss.bw.Flush() == nil
}

// multi writes a status line, the body written by fn, and the final ".".
func (ss *session) multi(status string, fn func()) {
	ss.bw.WriteString(status + "\r\n")
	fn()
	ss.reply(".")
}

// discardLine skips input up to the next LF, reading at most limit octets.
func (ss *session) discardLine(limit int) {
	for limit > 0 {
		frag, err := ss.br.ReadSlice('\n')
		limit -= len(frag)
		if !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

// readLine reads one line of at most maxLine octets, without its CRLF.
func (ss *session) readLine() (string, error) {
	var buf []byte
	for {
		frag, err := ss.br.ReadSlice('\n')
		if len(buf)+len(frag) > maxLine+2 {
			return "", errLineTooLong
		}
		switch {
		case err == nil:
			buf = append(buf, frag...)
			return strings.TrimRight(string(buf), "\r\n"), nil
		case errors.Is(err, bufio.ErrBufferFull):
			buf = append(buf, frag...)
		default:
			if errors.Is(err, io.EOF) && len(buf)+len(frag) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return "", err
		}
	}
}
