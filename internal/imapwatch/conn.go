package imapwatch

import (
	"bytes"
	"fmt"
	"net"
	"sync"
	"sync/atomic"

	"github.com/emailqos/emailqosreceiver/internal/transport"
)

// watchConn remembers the first I/O error of a connection, so that a command
// that failed because the server went away (reconnect) can be told apart from
// one that failed because the server sent something unparsable.
type watchConn struct {
	net.Conn

	mu     sync.Mutex
	err    error
	closed bool
}

func (c *watchConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.note(err)
	}
	return n, err
}

func (c *watchConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if err != nil {
		c.note(err)
	}
	return n, err
}

func (c *watchConn) note(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	// Errors caused by our own Close are not the server's doing. A spent
	// read budget is a protocol error, not a connection to regain.
	if !c.closed && c.err == nil && !transport.IsBudget(err) {
		c.err = err
	}
}

func (c *watchConn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	return c.Conn.Close()
}

// NetConn returns the connection underneath, for transport.Exceeded.
func (c *watchConn) NetConn() net.Conn { return c.Conn }

// lost reports whether the connection failed underneath the IMAP client.
func (c *watchConn) lost() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err != nil
}

// cmdCounter counts the commands one imapclient.Client sends. It is the
// client's DebugWriter, the only place that sees the plaintext after STARTTLS,
// and receives both directions. imapclient tags commands T1, T2, ... and
// flushes each command from its start, so a chunk that begins with the next
// tag is the next command; a server cannot echo a tag before it was sent.
// Nothing written to it is kept (it sees the password).
type cmdCounter struct {
	total *atomic.Int64
	sink  *atomic.Pointer[atomic.Int64]

	mu   sync.Mutex
	next uint64
}

func newCmdCounter(total *atomic.Int64, sink *atomic.Pointer[atomic.Int64]) *cmdCounter {
	return &cmdCounter{total: total, sink: sink, next: 1}
}

func (w *cmdCounter) Write(p []byte) (int, error) {
	if len(p) < 3 || p[0] != 'T' {
		return len(p), nil
	}
	var n uint64
	i := 1
	for ; i < len(p) && i <= 20 && p[i] >= '0' && p[i] <= '9'; i++ {
		n = n*10 + uint64(p[i]-'0')
	}
	if i == 1 || i >= len(p) || p[i] != ' ' {
		return len(p), nil
	}
	w.mu.Lock()
	if n == w.next {
		w.next++
		w.total.Add(1)
		if c := w.sink.Load(); c != nil {
			c.Add(1)
		}
	}
	w.mu.Unlock()
	return len(p), nil
}

// maxLineBytes bounds one line of the conversation. imapclient reads a
// response line whole into memory, so without a bound a server could make a
// probe hold as much as it sends before the probe's deadline. The probe reads
// headers and short responses only: a search result listing a hundred
// thousand UIDs is under 1 MiB.
const maxLineBytes = 4 << 20

// errLineTooLong ends a session whose server sent a longer line: a protocol
// error, not a lost connection to regain.
var errLineTooLong = fmt.Errorf("IMAP response line longer than %d bytes", maxLineBytes)

// lineLimit is part of imapclient's DebugWriter, which sees the plaintext
// of both directions (after STARTTLS too): imapclient reads through an
// io.TeeReader, so an error written here fails the read in progress. Client
// lines are short, so counting both directions only ever undercounts.
type lineLimit struct {
	mu   sync.Mutex
	line int
	over bool
}

// exceeded tells whether the limit ended the session.
func (l *lineLimit) exceeded() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.over
}

func (l *lineLimit) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if i := bytes.LastIndexByte(p, '\n'); i >= 0 {
		l.line = len(p) - i - 1
	} else {
		l.line += len(p)
	}
	if l.line > maxLineBytes {
		l.over = true
		return 0, errLineTooLong
	}
	return len(p), nil
}
