// Package transcript keeps a redacted record of one probe's SMTP, IMAP and
// POP3 conversations: every line in both directions, marked C: (client) or
// S: (server), with its time offset from the probe's start.
//
// Nothing is stored before it is redacted: credentials (SMTP AUTH, IMAP
// LOGIN and AUTHENTICATE, POP3 PASS, APOP and AUTH, and every SASL response)
// become [redacted], and message bodies (SMTP DATA, POP3 RETR/TOP, IMAP
// literals) are summarised as a byte count. A transcript is bounded in lines
// and bytes and keeps the latest lines.
//
// A nil *Transcript records nothing and costs nothing: every method accepts
// a nil receiver, so that targets without a transcript carry no buffer.
package transcript // import "github.com/emailqos/emailqosreceiver/internal/transcript"

import (
	"encoding/base64"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Bounds of one probe's transcript.
const (
	// MaxLines is the most lines a transcript keeps; older lines are
	// dropped first.
	MaxLines = 10000
	// MaxBytes bounds the text a transcript keeps.
	MaxBytes = 1 << 20
	// MaxLineBytes is the longest line kept; the rest is counted.
	MaxLineBytes = 512
)

// Redacted replaces every credential.
const Redacted = "[redacted]"

// Proto names the protocol of a line.
type Proto string

const (
	SMTP Proto = "smtp"
	IMAP Proto = "imap"
	POP3 Proto = "pop3"
)

// Dir is the direction of a line: 'C' from the client, 'S' from the server.
type Dir byte

const (
	Client Dir = 'C'
	Server Dir = 'S'
)

// Line is one redacted line of a conversation.
type Line struct {
	// At is the offset from the start of the probe.
	At    time.Duration
	Proto Proto
	Dir   Dir
	Text  string
}

// String renders a line as "+1.234s smtp C: EHLO localhost".
func (l Line) String() string {
	return fmt.Sprintf("+%.3fs %s %c: %s", l.At.Seconds(), l.Proto, l.Dir, l.Text)
}

// Transcript is one probe's record. It is safe for concurrent use.
type Transcript struct {
	start time.Time

	mu      sync.Mutex
	lines   []Line
	bytes   int
	dropped int
	// secrets are scrubbed from every line as a second line of defence,
	// should a credential ever appear where the protocol redactor does not
	// expect it.
	secrets []string
}

// New starts a transcript whose offsets count from start.
func New(start time.Time) *Transcript {
	return &Transcript{start: start}
}

// Secret registers a credential (a password or bearer token) and user it
// is presented for: the credential and its usual SASL encodings are
// scrubbed from every later line. Values shorter than 4 bytes are not
// scrubbed (they would mangle ordinary text); the protocol redaction
// covers them.
func (t *Transcript) Secret(user, secret string) {
	if t == nil || len(secret) < 4 {
		return
	}
	b64 := base64.StdEncoding.EncodeToString
	forms := []string{
		secret,
		b64([]byte(secret)),
		b64([]byte("\x00" + user + "\x00" + secret)),
		b64([]byte("user=" + user + "\x01auth=Bearer " + secret + "\x01\x01")),
		b64([]byte("n,a=" + user + ",\x01auth=Bearer " + secret + "\x01\x01")),
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, f := range forms {
		dup := false
		for _, s := range t.secrets {
			dup = dup || s == f
		}
		if !dup {
			t.secrets = append(t.secrets, f)
		}
	}
}

// add stores a line, redacted already by the caller's protocol handler.
func (t *Transcript) add(proto Proto, dir Dir, text string) {
	if len(text) > MaxLineBytes+64 {
		// Lines are cut as they are assembled; this bounds text a
		// redactor composed.
		text = fmt.Sprintf("%s...[+%d bytes]", cutUTF8(text, MaxLineBytes), len(text)-MaxLineBytes)
	}
	at := time.Since(t.start)
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, s := range t.secrets {
		if strings.Contains(text, s) {
			text = strings.ReplaceAll(text, s, Redacted)
		}
	}
	t.lines = append(t.lines, Line{At: at, Proto: proto, Dir: dir, Text: text})
	t.bytes += len(text)
	for len(t.lines) > MaxLines || t.bytes > MaxBytes {
		t.bytes -= len(t.lines[0].Text)
		t.lines[0] = Line{}
		t.lines = t.lines[1:]
		t.dropped++
	}
}

// Len is the number of lines kept.
func (t *Transcript) Len() int {
	if t == nil {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.lines)
}

// Lines renders every kept line, preceded by a note of how many earlier
// lines the bounds dropped, if any.
func (t *Transcript) Lines() []string {
	return t.Last(MaxLines + 1)
}

// Last renders the last n lines (all when fewer), with a note of how many
// earlier lines were left out.
func (t *Transcript) Last(n int) []string {
	if t == nil || n <= 0 {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	lines := t.lines
	skipped := t.dropped
	if len(lines) > n {
		skipped += len(lines) - n
		lines = lines[len(lines)-n:]
	}
	out := make([]string, 0, len(lines)+1)
	if skipped > 0 {
		out = append(out, fmt.Sprintf("[%d earlier lines not shown]", skipped))
	}
	for _, l := range lines {
		out = append(out, l.String())
	}
	return out
}

// cutUTF8 cuts s to at most n bytes without splitting a UTF-8 sequence.
func cutUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && n < len(s) && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}
