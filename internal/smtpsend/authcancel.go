package smtpsend

import (
	"bytes"
	"net"
	"sync"
)

// cancelGuard sits between go-smtp and the connection. go-smtp v0.25.1's
// Client.Auth answers every failed AUTH with the SASL cancel "*", also after
// a final reply such as 535; RFC 4954 section 4 allows "*" only while a 334
// challenge is outstanding, and after a final reply the server takes it as a
// new (unknown) command. The guard remembers the code of the last reply line
// read and, while armed (during AUTH only), keeps a "*" that does not answer
// a 334 off the wire. go-smtp then waits for the cancel's reply, so the guard
// hands it a local one; go-smtp discards it.
type cancelGuard struct {
	net.Conn

	mu      sync.Mutex
	armed   bool
	head    [3]byte // the first bytes of the reply line being read
	col     int     // bytes of that line read so far
	last    [3]byte // the code of the last complete reply line
	pending []byte  // local reply owed for a withheld "*"
}

// localCancelReply is what go-smtp reads for a withheld "*"; it never
// reaches the server or the transcript.
var localCancelReply = []byte("501 5.5.4 AUTH already ended, cancel not sent\r\n")

func (g *cancelGuard) arm(on bool) {
	g.mu.Lock()
	g.armed = on
	g.mu.Unlock()
}

func (g *cancelGuard) Read(p []byte) (int, error) {
	g.mu.Lock()
	if len(g.pending) > 0 {
		n := copy(p, g.pending)
		g.pending = g.pending[n:]
		g.mu.Unlock()
		return n, nil
	}
	g.mu.Unlock()
	n, err := g.Conn.Read(p)
	g.mu.Lock()
	for _, b := range p[:n] {
		if g.col < len(g.head) {
			g.head[g.col] = b
		}
		g.col++
		if b == '\n' {
			g.last, g.col = g.head, 0
		}
	}
	g.mu.Unlock()
	return n, err
}

func (g *cancelGuard) Write(p []byte) (int, error) {
	g.mu.Lock()
	withhold := g.armed && bytes.Equal(p, []byte("*\r\n")) && string(g.last[:]) != "334"
	if withhold {
		g.pending = append(g.pending, localCancelReply...)
	}
	g.mu.Unlock()
	if withhold {
		return len(p), nil
	}
	return g.Conn.Write(p)
}
