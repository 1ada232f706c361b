// Package probemsg builds and recognises the probe message: a small text
// message carrying a random token, its send time and an HMAC over both, so
// that the receiving side only ever matches the probe it sent itself.
package probemsg // import "github.com/emailqos/emailqosreceiver/internal/probemsg"

import (
	"bufio"
	"bytes"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"net/mail"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-message/textproto"
)

// Header names of the probe fields.
const (
	TokenHeader = "X-Emailqos-Token"
	SentHeader  = "X-Emailqos-Sent"
	MACHeader   = "X-Emailqos-Mac"
	// TargetHeader names the probe target for people reading the message;
	// it is informational and not covered by the MAC.
	TargetHeader = "X-Emailqos-Target"
)

// TokenPrefix starts every probe token. Watchers use it only to narrow
// what they look at; what makes a message a probe is the MAC.
const TokenPrefix = "eq"

const (
	tokenBytes = 16 // 128 bits
	// tokenLen is the prefix plus 128 bits in unpadded base32.
	tokenLen = len(TokenPrefix) + (tokenBytes*8+4)/5
	// maxTarget bounds the target header so that, even Q-encoded, it stays
	// far below the 998-octet line limit and never needs folding.
	maxTarget = 128
	keyInfo   = "emailqos probe key v1"
)

var (
	// ErrNotProbe is returned by Parse for a message without a probe token.
	ErrNotProbe = errors.New("probemsg: not a probe message")
	// ErrBadMAC is returned by Parse for a probe whose MAC is missing or
	// does not verify: a forgery, a tampered copy or a different key.
	ErrBadMAC = errors.New("probemsg: probe MAC does not verify")
	// ErrMalformed is returned by Parse for a probe header that cannot be
	// read: an unreadable header block, a bad token or send time.
	ErrMalformed = errors.New("probemsg: malformed probe header")
)

var tokenEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// Probe is one probe message.
type Probe struct {
	Token  string
	SentAt time.Time
	From   string
	To     string
	Target string
}

// New creates a probe with a fresh random token. The addresses must be plain
// addresses and the target a single line: they end up in header fields.
func New(from, to, target string, now time.Time) (Probe, error) {
	for _, a := range []string{from, to} {
		if err := checkAddress(a); err != nil {
			return Probe{}, err
		}
	}
	if hasControl(target) || !utf8.ValidString(target) {
		return Probe{}, fmt.Errorf("probemsg: target name %q contains control characters or invalid UTF-8", target)
	}
	var b [tokenBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return Probe{}, fmt.Errorf("probemsg: token: %w", err)
	}
	return Probe{
		Token: TokenPrefix + tokenEncoding.EncodeToString(b[:]),
		// Round(0) drops the monotonic reading so the value equals what
		// Parse reads back from the header.
		SentAt: now.UTC().Round(0),
		From:   from,
		To:     to,
		Target: target,
	}, nil
}

func checkAddress(a string) error {
	if hasControl(a) {
		return fmt.Errorf("probemsg: address %q contains control characters", a)
	}
	addr, err := mail.ParseAddress(a)
	if err != nil {
		return fmt.Errorf("probemsg: address %q: %w", a, err)
	}
	if addr.Name != "" || addr.Address != a {
		return fmt.Errorf("probemsg: %q is not a plain address", a)
	}
	return nil
}

// Build renders the probe as an RFC 5322 message with CRLF line ends. Every
// field is sanitised again here, so a Probe built by hand cannot inject
// header lines either.
func (p Probe) Build(key []byte) []byte {
	sent := p.SentAt.UTC()
	token := cleanToken(p.Token)
	var b bytes.Buffer
	b.Grow(768)
	field := func(k, v string) {
		b.WriteString(k)
		b.WriteString(": ")
		b.WriteString(v)
		b.WriteString("\r\n")
	}
	field("From", headerAddress(p.From))
	field("To", headerAddress(p.To))
	field("Date", sent.Format(time.RFC1123Z))
	field("Message-ID", "<"+token+"@emailqos.invalid>")
	field("Subject", "emailqos probe "+token)
	field("MIME-Version", "1.0")
	field("Content-Type", "text/plain; charset=us-ascii")
	field("Content-Transfer-Encoding", "7bit")
	field("Auto-Submitted", "auto-generated")
	field(TokenHeader, token)
	sentText := sent.Format(time.RFC3339Nano)
	field(SentHeader, sentText)
	field(MACHeader, hex.EncodeToString(mac(key, token, sentText)))
	if t := headerText(p.Target); t != "" {
		field(TargetHeader, t)
	}
	b.WriteString("\r\n")
	b.WriteString("This is an automated delivery probe sent by emailqos to measure how\r\n")
	b.WriteString("long email takes to arrive. It is safe to delete; emailqos normally\r\n")
	b.WriteString("removes it by itself.\r\n")
	return b.Bytes()
}

// Parse reads the probe fields from a header block or a whole message and
// verifies the MAC with key. The returned probe has SentAt in UTC.
func Parse(header []byte, key []byte) (Probe, error) {
	h, readErr := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(header)))
	// A header the reader stopped on part-way is still used when it got as
	// far as the probe fields: relays prepend theirs, never append.
	token := strings.TrimSpace(h.Get(TokenHeader))
	if token == "" {
		if readErr != nil {
			return Probe{}, fmt.Errorf("%w: %v", ErrMalformed, readErr)
		}
		return Probe{}, ErrNotProbe
	}
	if !validToken(token) {
		return Probe{}, fmt.Errorf("%w: bad token", ErrMalformed)
	}
	sentText := strings.TrimSpace(h.Get(SentHeader))
	sent, err := time.Parse(time.RFC3339Nano, sentText)
	if err != nil {
		return Probe{}, fmt.Errorf("%w: send time: %v", ErrMalformed, err)
	}
	got, err := hex.DecodeString(strings.TrimSpace(h.Get(MACHeader)))
	if err != nil || !hmac.Equal(got, mac(key, token, sentText)) {
		return Probe{}, ErrBadMAC
	}
	p := Probe{Token: token, SentAt: sent.UTC(), From: parseAddress(h.Get("From")), To: parseAddress(h.Get("To"))}
	if t := h.Get(TargetHeader); t != "" {
		var dec mime.WordDecoder
		if d, err := dec.DecodeHeader(t); err == nil {
			t = d
		}
		p.Target = t
	}
	return p, nil
}

// DeriveKey derives the probe MAC key from a secret, separated by context
// (the receiving address) so one mailbox's key cannot verify another's.
func DeriveKey(secret []byte, context string) []byte {
	k, err := hkdf.Key(sha256.New, secret, nil, keyInfo+context, sha256.Size)
	if err != nil {
		// Only a key length beyond 255 hash blocks fails.
		panic(err)
	}
	return k
}

func mac(key []byte, token, sent string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(token))
	m.Write([]byte{'\n'})
	m.Write([]byte(sent))
	return m.Sum(nil)
}

func validToken(t string) bool {
	if len(t) != tokenLen || !strings.HasPrefix(t, TokenPrefix) {
		return false
	}
	for i := len(TokenPrefix); i < len(t); i++ {
		if c := t[i]; !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return false
		}
	}
	return true
}

// cleanToken keeps only the token alphabet, so a hand-made Probe cannot
// smuggle anything into the header lines the token appears in.
func cleanToken(t string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '2' && r <= '7' {
			return r
		}
		return -1
	}, t)
}

func headerAddress(a string) string {
	if addr, err := mail.ParseAddress(a); err == nil && !hasControl(a) {
		return (&mail.Address{Address: addr.Address}).String()
	}
	return headerText(a)
}

// headerText makes s safe as an unstructured header value: control
// characters dropped, length bounded, non-ASCII as an encoded word.
func headerText(s string) string {
	s = strings.ToValidUTF8(s, "")
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
	if len(s) > maxTarget {
		n := maxTarget
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		s = s[:n]
	}
	return mime.QEncoding.Encode("utf-8", strings.TrimSpace(s))
}

func parseAddress(v string) string {
	if a, err := mail.ParseAddress(v); err == nil {
		return a.Address
	}
	return strings.TrimSpace(v)
}

func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return true
		}
	}
	return false
}

// TokenValues returns the values of the token header in a header block,
// read exactly as Parse reads it. Mailbox searches match substrings and
// servers prepend fields of their own, so the readers check a hit's token
// with this, and never disagree with Parse about what a header carries.
func TokenValues(header []byte) []string {
	h, _ := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(header)))
	var out []string
	for _, v := range h.Values(TokenHeader) {
		out = append(out, strings.TrimSpace(v))
	}
	return out
}

// Searchable reports whether a token can be put in a server-side search as
// it is: non-empty printable ASCII without spaces, at most 200 bytes. The
// readers check it before searching; New's tokens always pass.
func Searchable(token string) bool {
	if token == "" || len(token) > 200 {
		return false
	}
	for i := 0; i < len(token); i++ {
		if token[i] <= ' ' || token[i] > '~' {
			return false
		}
	}
	return true
}
