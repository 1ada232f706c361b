package transcript

import (
	"bytes"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
)

// tailBytes is how much of a line's end is kept beside its first
// MaxLineBytes, enough to see an IMAP literal marker ending a long line.
const tailBytes = 32

// Stream is one connection's conversation. It assembles the bytes of each
// direction into lines and hands every line to the protocol's redactor,
// which alone decides what is stored; a partial line is held only until
// its end arrives. A nil *Stream records nothing.
type Stream struct {
	t     *Transcript
	proto Proto

	mu   sync.Mutex
	dirs [2]lineBuf // client, server
	h    handler
	imap *imapState // the IMAP redactor, for the direction inference
	dbg  imapDebugState
}

// handler redacts one protocol. line returns the size of a literal that
// follows the line (IMAP), or -1.
type handler interface {
	line(s *Stream, dir Dir, l *lineBuf) int64
	literal(s *Stream, dir Dir, size int64)
}

// Stream starts the record of one connection of proto.
func (t *Transcript) Stream(proto Proto) *Stream {
	if t == nil {
		return nil
	}
	s := &Stream{t: t, proto: proto}
	switch proto {
	case SMTP:
		s.h = &smtpState{}
	case POP3:
		s.h = &pop3State{}
	default:
		s.imap = &imapState{}
		s.h = s.imap
		s.dbg.nextTag = 1
	}
	return s
}

// Sent records bytes the client sent.
func (s *Stream) Sent(p []byte) {
	if s == nil || len(p) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.feed(Client, p)
}

// Received records bytes the client received.
func (s *Stream) Received(p []byte) {
	if s == nil || len(p) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.feed(Server, p)
}

// Conn returns c with every byte read recorded as the server's and every
// byte written as the client's: the direction is exact. Wrap the plaintext
// connection (the TLS one once TLS is up). A nil Stream returns c.
func (s *Stream) Conn(c net.Conn) net.Conn {
	if s == nil {
		return c
	}
	return &tapConn{Conn: c, s: s}
}

type tapConn struct {
	net.Conn
	s *Stream
}

func (c *tapConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.s.Received(p[:n])
	return n, err
}

func (c *tapConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.s.Sent(p[:n])
	return n, err
}

func (s *Stream) emit(dir Dir, text string) {
	s.t.add(s.proto, dir, text)
}

// lineBuf assembles one direction's current line: its first MaxLineBytes
// and its last tailBytes, and how long it is.
type lineBuf struct {
	head []byte
	tail [tailBytes]byte
	n    int // bytes of the line so far, CR included
	// lit is what remains of a literal being consumed, litSize its size.
	lit, litSize int64
	// cont: the current line continues a command or response after a
	// literal.
	cont bool
}

func (b *lineBuf) write(p []byte) {
	if room := MaxLineBytes + 1 - len(b.head); room > 0 {
		b.head = append(b.head, p[:min(room, len(p))]...)
	}
	// Shift the tail by what p adds.
	if len(p) >= tailBytes {
		copy(b.tail[:], p[len(p)-tailBytes:])
	} else {
		copy(b.tail[:], b.tail[len(p):])
		copy(b.tail[tailBytes-len(p):], p)
	}
	b.n += len(p)
}

// text is the line without its CR, cut to MaxLineBytes with a note of
// what was cut.
func (b *lineBuf) text() string {
	size := b.size()
	if size <= MaxLineBytes {
		return string(b.head[:size])
	}
	return fmt.Sprintf("%s...[+%d bytes]", cutUTF8(string(b.head), MaxLineBytes), size-MaxLineBytes)
}

// size is the line's length without CR.
func (b *lineBuf) size() int {
	if b.n > 0 && b.tail[tailBytes-1] == '\r' {
		return b.n - 1
	}
	return b.n
}

// end is the last bytes of the line without its CR.
func (b *lineBuf) end() []byte {
	k := min(b.n, tailBytes)
	e := b.tail[tailBytes-k:]
	return bytes.TrimSuffix(e, []byte("\r"))
}

func (b *lineBuf) reset() {
	b.head = b.head[:0]
	b.n = 0
}

func dirIndex(d Dir) int {
	if d == Client {
		return 0
	}
	return 1
}

func (s *Stream) feed(dir Dir, p []byte) {
	b := &s.dirs[dirIndex(dir)]
	for len(p) > 0 {
		if b.lit > 0 {
			k := int64(len(p))
			if k > b.lit {
				k = b.lit
			}
			b.lit -= k
			p = p[k:]
			if b.lit == 0 {
				s.h.literal(s, dir, b.litSize)
				b.cont = true
			}
			continue
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			b.write(p)
			return
		}
		b.write(p[:i])
		p = p[i+1:]
		lit := s.h.line(s, dir, b)
		b.reset()
		if lit > 0 {
			b.lit, b.litSize = lit, lit
		} else {
			b.cont = false
			if lit == 0 {
				// An empty literal ends at once.
				s.h.literal(s, dir, 0)
				b.cont = true
			}
		}
	}
}

// literalAt parses an IMAP literal marker ending a line: {n}, {n+}, {n-}
// or ~{n}. It returns -1 when there is none; sync tells whether the sender
// waits for a continuation request before sending it.
func literalAt(end []byte) (size int64, sync bool) {
	if len(end) < 3 || end[len(end)-1] != '}' {
		return -1, false
	}
	i := bytes.LastIndexByte(end, '{')
	if i < 0 {
		return -1, false
	}
	num := end[i+1 : len(end)-1]
	sync = true
	if len(num) > 0 && (num[len(num)-1] == '+' || num[len(num)-1] == '-') {
		num, sync = num[:len(num)-1], false
	}
	n, err := strconv.ParseInt(string(num), 10, 64)
	if err != nil || n < 0 || len(num) == 0 || num[0] == '+' {
		return -1, false
	}
	return n, sync
}

// firstWord splits off the first space-separated word of s.
func firstWord(s string) (word, rest string) {
	word, rest, _ = strings.Cut(s, " ")
	return word, rest
}
