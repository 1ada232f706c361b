package transcript

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// RedactError keeps secrets (passwords, bearer tokens) out of an error's
// text, in case a server or library echoed them back in any of the forms
// they were sent in: as is, base64, SASL PLAIN (RFC 4616) or XOAUTH2
// (Google's "The XOAUTH2 mechanism"). err comes back as is when it holds
// none; otherwise a new error, not a wrapper, so the original text cannot
// be printed through it.
func RedactError(err error, username string, secrets ...string) error {
	if err == nil {
		return err
	}
	var forms []string
	for _, s := range secrets {
		if s == "" {
			continue
		}
		forms = append(forms, s,
			base64.StdEncoding.EncodeToString([]byte(s)),
			base64.StdEncoding.EncodeToString([]byte("\x00"+username+"\x00"+s)),
			base64.StdEncoding.EncodeToString([]byte("user="+username+"\x01auth=Bearer "+s+"\x01\x01")))
	}
	msg := err.Error()
	redacted := msg
	for _, f := range forms {
		redacted = strings.ReplaceAll(redacted, f, Redacted)
	}
	if redacted == msg {
		return err
	}
	return errors.New(redacted)
}

// SMTP: AUTH's initial response and every client line while an AUTH
// exchange runs (the answers to 334 challenges, and a "*" cancel) are
// redacted; the data after a 354 reply to DATA is counted, not kept.
type smtpState struct {
	auth      bool // AUTH sent, no final reply yet
	dataCmd   bool // DATA sent, its reply not yet read
	data      bool // sending message data
	dataBytes int64
}

func (h *smtpState) line(s *Stream, dir Dir, b *lineBuf) int64 {
	text := b.text()
	if dir == Client {
		switch {
		case h.data:
			if text == "." {
				s.emit(Client, fmt.Sprintf("[%d bytes of message data]", h.dataBytes))
				s.emit(Client, ".")
				h.data, h.dataBytes = false, 0
			} else {
				h.dataBytes += int64(b.size()) + 2
			}
		case h.auth:
			s.emit(Client, Redacted)
		default:
			verb, rest := firstWord(text)
			switch strings.ToUpper(verb) {
			case "AUTH":
				h.auth = true
				s.emit(Client, saslCommand(verb, rest))
			case "DATA":
				h.dataCmd = true
				s.emit(Client, text)
			default:
				s.emit(Client, text)
			}
		}
		return -1
	}
	s.emit(Server, text)
	// A reply's last line is "NNN text" or "NNN"; earlier ones "NNN-text".
	if len(text) >= 3 && (len(text) == 3 || text[3] == ' ') {
		code := text[:3]
		if h.auth && code != "334" {
			h.auth = false
		}
		if h.dataCmd {
			h.data = code == "354"
			h.dataCmd = false
		}
	}
	return -1
}

func (h *smtpState) literal(*Stream, Dir, int64) {}

// saslCommand renders "AUTH <mech> <initial-response>" (SMTP, POP3) or
// "<tag> AUTHENTICATE <mech> <ir>" with the response redacted: the verb
// and mechanism stay, anything after them goes.
func saslCommand(verb, rest string) string {
	mech, ir := firstWord(strings.TrimLeft(rest, " "))
	out := verb
	if mech != "" {
		out += " " + mech
	}
	if strings.TrimSpace(ir) != "" {
		out += " " + Redacted
	}
	return out
}

// POP3: PASS, APOP's digest, AUTH's initial response and every client line
// of an AUTH exchange are redacted; RETR and TOP bodies are counted.
type pop3State struct {
	auth    bool // AUTH <mech> sent, no +OK/-ERR yet
	pending []pop3Cmd
	multi   bool // reading a multi-line response
	summary bool // ... a message, counted, not kept
	bytes   int64
}

type pop3Cmd struct {
	verb   string
	hasArg bool
}

func (h *pop3State) line(s *Stream, dir Dir, b *lineBuf) int64 {
	text := b.text()
	if dir == Client {
		if h.auth {
			s.emit(Client, Redacted)
			return -1
		}
		verb, rest := firstWord(text)
		up := strings.ToUpper(verb)
		switch up {
		case "PASS":
			s.emit(Client, verb+" "+Redacted)
		case "APOP":
			user, _ := firstWord(rest)
			s.emit(Client, verb+" "+user+" "+Redacted)
		case "AUTH":
			// AUTH alone lists the mechanisms; with one it starts an
			// exchange.
			h.auth = strings.TrimSpace(rest) != ""
			s.emit(Client, saslCommand(verb, rest))
		default:
			s.emit(Client, text)
		}
		if len(h.pending) < 64 {
			h.pending = append(h.pending, pop3Cmd{verb: up, hasArg: strings.TrimSpace(rest) != ""})
		}
		return -1
	}
	if h.multi {
		switch {
		case text == ".":
			if h.summary {
				s.emit(Server, fmt.Sprintf("[%d bytes of message data]", h.bytes))
			}
			s.emit(Server, ".")
			h.multi, h.summary, h.bytes = false, false, 0
		case h.summary:
			h.bytes += int64(b.size()) + 2
		default:
			s.emit(Server, text)
		}
		return -1
	}
	s.emit(Server, text)
	ok := strings.HasPrefix(text, "+OK")
	if !ok && !strings.HasPrefix(text, "-ERR") {
		return -1 // a "+ " challenge, or noise
	}
	h.auth = false
	if len(h.pending) == 0 {
		return -1 // the greeting
	}
	cmd := h.pending[0]
	h.pending = h.pending[1:]
	if ok {
		switch cmd.verb {
		case "RETR", "TOP":
			h.multi, h.summary = true, true
		case "CAPA":
			h.multi = true
		case "LIST", "UIDL", "AUTH":
			h.multi = !cmd.hasArg
		}
	}
	return -1
}

func (h *pop3State) literal(*Stream, Dir, int64) {}

// IMAP: LOGIN's arguments (quoted strings, atoms and literals) after the
// user name, AUTHENTICATE's initial response and every client line of an
// AUTHENTICATE exchange are redacted; literals are counted, not kept.
type imapState struct {
	// secretTag is the tag of a LOGIN or AUTHENTICATE in flight, authTag
	// that of an AUTHENTICATE: until its tagged reply, client lines are
	// SASL responses.
	secretTag, authTag string
	// swallow: inside a LOGIN command, whose literals and continuation
	// lines are covered by its [redacted].
	swallow bool
	// Direction inference state (see imapDebug).
	awaitSync   bool // the client announced a synchronising literal
	contPending bool // a continuation request arrived, not yet answered
	idle        bool // IDLE sent, DONE not yet
}

func (h *imapState) line(s *Stream, dir Dir, b *lineBuf) int64 {
	text := b.text()
	size, sync := literalAt(b.end())
	if dir == Client {
		h.contPending = false
		h.awaitSync = size >= 0 && sync
		switch {
		case b.cont && h.swallow:
			if size < 0 {
				h.swallow = false
			}
			return size
		case b.cont:
			s.emit(Client, text)
			return size
		case h.authTag != "":
			// A SASL response, or "*" to cancel.
			s.emit(Client, Redacted)
			return size
		}
		tag, rest := firstWord(text)
		verb, args := firstWord(rest)
		switch strings.ToUpper(verb) {
		case "LOGIN":
			h.secretTag = tag
			out := tag + " " + verb
			if user, ok := imapUser(args); ok {
				out += " " + user
			}
			s.emit(Client, out+" "+Redacted)
			h.swallow = size >= 0
		case "AUTHENTICATE":
			h.secretTag, h.authTag = tag, tag
			s.emit(Client, tag+" "+saslCommand(verb, args))
			h.swallow = size >= 0
		case "IDLE":
			h.idle = true
			s.emit(Client, text)
		case "DONE":
			h.idle = false
			s.emit(Client, text)
		default:
			s.emit(Client, text)
		}
		return size
	}

	if !b.cont {
		tag, _ := firstWord(text)
		if strings.HasPrefix(text, "+") {
			h.contPending = true
		}
		if h.secretTag != "" && tag == h.secretTag {
			h.secretTag, h.authTag, h.swallow = "", "", false
		}
		if h.secretTag != "" && !plausibleServerLine(text) {
			// While credentials are in flight, anything that does not
			// look like a server's reply may be a client line whose
			// direction was inferred wrongly: it is not kept.
			s.emit(Server, Redacted)
			return size
		}
	}
	s.emit(Server, text)
	return size
}

func (h *imapState) literal(s *Stream, dir Dir, size int64) {
	switch {
	case dir == Client && h.swallow:
		// Part of a LOGIN or AUTHENTICATE, already shown as [redacted].
	case dir == Client && h.secretTag != "":
		s.emit(Client, Redacted)
	case dir == Client:
		s.emit(Client, fmt.Sprintf("[%d bytes of literal data]", size))
	default:
		s.emit(Server, fmt.Sprintf("[%d bytes of message data]", size))
	}
}

// imapUser returns LOGIN's first argument when it is an atom or a complete
// quoted string followed by the password; a literal user name is not shown.
func imapUser(args string) (string, bool) {
	if args == "" {
		return "", false
	}
	if args[0] == '"' {
		for i := 1; i < len(args); i++ {
			switch args[i] {
			case '\\':
				i++
			case '"':
				if i+1 < len(args) && args[i+1] == ' ' {
					return args[:i+1], true
				}
				return "", false
			}
		}
		return "", false
	}
	if args[0] == '{' {
		return "", false
	}
	user, rest, ok := strings.Cut(args, " ")
	if !ok || rest == "" || strings.ContainsAny(user, "\"{}()\\") {
		return "", false
	}
	return user, true
}

// plausibleServerLine tells whether a line has the shape of a server
// response: untagged ("* "), a continuation request ("+"), or tagged
// ("T12 OK ...").
func plausibleServerLine(text string) bool {
	if strings.HasPrefix(text, "* ") || strings.HasPrefix(text, "+") {
		return true
	}
	tag, rest := firstWord(text)
	status, _ := firstWord(rest)
	switch strings.ToUpper(status) {
	case "OK", "NO", "BAD":
		return tag != ""
	}
	return false
}
