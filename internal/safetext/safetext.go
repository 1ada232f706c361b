// Package safetext makes text that a server controls safe to print on a
// terminal or to write into a log: control characters, terminal escape
// sequences and Unicode bidi controls are shown as escapes instead of acting
// on the reader's terminal (a server could otherwise erase a line, move the
// cursor or reorder text, and fake a "result: OK").
package safetext // import "github.com/emailqos/emailqosreceiver/internal/safetext"

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Escape returns s with every character that can act on a terminal written
// as a Go-style escape: C0 controls (CR, LF, BEL, ESC, TAB...), DEL, C1
// controls (U+0080-U+009F, which 8-bit terminals read as CSI and others),
// invalid UTF-8 bytes (a lone 0x9B is CSI to such terminals), the Unicode
// bidi controls (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069) and
// the line and paragraph separators (U+2028, U+2029). Everything else,
// including a backslash, is kept as it is, so ordinary text reads unchanged.
func Escape(s string) string {
	i := 0
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		if unsafeRune(r, size) {
			break
		}
		i += size
	}
	if i == len(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	b.WriteString(s[:i])
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case !unsafeRune(r, size):
			b.WriteString(s[i : i+size])
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x80:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			fmt.Fprintf(&b, `\u%04x`, r)
		}
		i += size
	}
	return b.String()
}

func unsafeRune(r rune, size int) bool {
	switch {
	case r == utf8.RuneError && size == 1:
		return true
	case r < 0x20, r >= 0x7f && r <= 0x9f:
		return true
	case r == 0x061c, r == 0x200e, r == 0x200f,
		r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069,
		r == 0x2028, r == 0x2029:
		return true
	}
	return false
}

// Strings escapes each of ss; nil stays nil.
func Strings(ss []string) []string {
	if ss == nil {
		return nil
	}
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = Escape(s)
	}
	return out
}
