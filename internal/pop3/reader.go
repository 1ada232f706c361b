package pop3

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// Limits on what a server can make the client hold in memory. A POP3 line
// is at most 512 octets by RFC 1939 and 255 for commands by RFC 2449; the
// larger bounds here only tolerate sloppy servers while still refusing a
// hostile or broken one that never ends a line or a response.
const (
	// MaxLineLength is the longest reply line accepted, without its CRLF.
	MaxLineLength = 64 << 10
	// MaxResponseSize is the most a multi-line response (TOP, UIDL) may
	// carry, counting each line with its CRLF after dot-unstuffing.
	MaxResponseSize = 16 << 20
	// maxTopSize bounds a TOP answer: a message's header block (and the
	// body lines asked for, none for a probe), which is rarely over 100 KB
	// (Postfix's header_size_limit is 102,400 by default).
	maxTopSize = 1 << 20
	// maxRetrSlack is what RETR may read beyond maxTopSize: a notice of
	// up to 1 MiB (internal/dsn's MaxSize) counted with bare LFs grows by
	// its CRs on the wire.
	maxRetrSlack = 64 << 10
	// maxCapaSize bounds a CAPA listing, which is a handful of short lines.
	maxCapaSize = 64 << 10
	// maxListEntries bounds UIDL so that a flood of tiny lines cannot turn
	// the input into far more memory of MessageID values (about 32 bytes
	// each, from 5 bytes of "1 a" CRLF): 262,144 messages, far above a
	// probe's maildrop (the fault table's huge one has 30,000).
	maxListEntries = 1 << 18
)

var (
	// ErrLineTooLong is returned when a reply line exceeds MaxLineLength.
	ErrLineTooLong = fmt.Errorf("pop3: response line longer than %d bytes", MaxLineLength)
	// ErrResponseTooLarge is returned when a multi-line response exceeds
	// its size limit.
	ErrResponseTooLarge = fmt.Errorf("pop3: multi-line response larger than its limit (%d bytes for CAPA, %d for TOP, %d for others, %d entries for UIDL)",
		maxCapaSize, maxTopSize, MaxResponseSize, maxListEntries)
)

// reader reads CRLF-terminated lines with a hard length bound. It exists
// instead of net/textproto.Reader because textproto's ReadLine grows its
// buffer without limit.
type reader struct {
	br  *bufio.Reader
	buf []byte // accumulates a line longer than bufio's buffer
	max int
}

func newReader(r io.Reader) reader {
	return reader{br: bufio.NewReaderSize(r, 4096), max: MaxLineLength}
}

// readLine returns the next line without its terminator (CRLF, or a bare LF
// from lenient servers). The slice is only valid until the next call.
func (r *reader) readLine() ([]byte, error) {
	r.buf = r.buf[:0]
	for {
		frag, err := r.br.ReadSlice('\n')
		switch {
		case err == nil:
			line := frag
			if len(r.buf) > 0 {
				r.buf = append(r.buf, frag...)
				line = r.buf
			}
			line = line[:len(line)-1]
			if n := len(line); n > 0 && line[n-1] == '\r' {
				line = line[:n-1]
			}
			if len(line) > r.max {
				return nil, ErrLineTooLong
			}
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			// +1 leaves room for the CR of a line of exactly max octets.
			if len(r.buf)+len(frag) > r.max+1 {
				return nil, ErrLineTooLong
			}
			r.buf = append(r.buf, frag...)
		default:
			if errors.Is(err, io.EOF) && len(r.buf)+len(frag) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

// readDotLines reads the body of a multi-line response up to the line
// holding a single ".", passing each dot-unstuffed line to fn. limit bounds
// the total size, counting two octets of terminator per line.
func (r *reader) readDotLines(limit int64, fn func(line []byte) error) error {
	var total int64
	for {
		line, err := r.readLine()
		if err != nil {
			return err
		}
		if len(line) > 0 && line[0] == '.' {
			if len(line) == 1 {
				return nil
			}
			line = line[1:]
		}
		total += int64(len(line)) + 2
		if total > limit {
			return ErrResponseTooLarge
		}
		if err := fn(line); err != nil {
			return err
		}
	}
}

// parseStatus splits a status line into its indicator and text. Servers are
// tolerated that use lower case, leading blanks or several spaces.
func parseStatus(line []byte) (ok bool, text string, err error) {
	line = bytes.TrimLeft(line, " \t")
	switch {
	case hasPrefixFold(line, "+OK"):
		return true, string(bytes.TrimSpace(line[3:])), nil
	case hasPrefixFold(line, "-ERR"):
		return false, string(bytes.TrimSpace(line[4:])), nil
	}
	return false, "", errors.New("malformed status line " + quote(line))
}

func hasPrefixFold(b []byte, prefix string) bool {
	return len(b) >= len(prefix) && bytes.EqualFold(b[:len(prefix)], []byte(prefix))
}

// quote renders server text for an error message, shortened so that a
// hostile server cannot blow up logs through our errors.
func quote(b []byte) string {
	const max = 64
	if len(b) > max {
		return `"` + printable(b[:max]) + `"...`
	}
	return `"` + printable(b) + `"`
}

func printable(b []byte) string {
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c < 0x20 || c > 0x7e {
			c = '?'
		}
		out = append(out, c)
	}
	return string(out)
}

// cutField returns the first blank-separated field of b and the rest,
// tolerating runs of spaces or tabs.
func cutField(b []byte) (field, rest []byte) {
	b = bytes.TrimLeft(b, " \t")
	i := bytes.IndexAny(b, " \t")
	if i < 0 {
		return b, nil
	}
	return b[:i], bytes.TrimLeft(b[i:], " \t")
}

// parseNumber parses a non-negative decimal without allocating, refusing
// values that would not fit an int64.
func parseNumber(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}
