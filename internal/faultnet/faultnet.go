// Package faultnet injects network faults between a mail client and a real
// in-process server for reliability tests. A Proxy listens on loopback in
// front of the server and relays its connections; Set switches its behaviour
// at any time, for new connections and for the lines still to come on open
// ones: refuse or never answer the connect, accept and stay silent, stall a
// server reply, reset the connection when the client sends a given command,
// rewrite or inject lines, or end TLS handshakes badly. It records what
// clients sent and counts what they read, so tests can assert what reached
// the server and that a client's traffic does not grow with a mailbox.
//
// Line rules see plaintext only: use them on connections without TLS (or
// before STARTTLS), and the TLS faults on implicit-TLS ones.
package faultnet // import "github.com/emailqos/emailqosreceiver/internal/faultnet"

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"net"
	"regexp"
	"sync"
	"sync/atomic"
	"time"
)

// Fault is a proxy behaviour. The zero value passes everything through.
type Fault struct {
	// Refuse closes the proxy's listening port: connects are refused.
	Refuse bool
	// Unanswered makes connects hang: the port is held by a listener whose
	// accept queue is full, so the kernel drops the client's SYNs.
	Unanswered bool
	// Silent accepts connections and never sends a byte.
	Silent bool
	// Reset accepts connections and resets them (TCP RST) at once.
	Reset bool

	// StallOn stops a connection's server-to-client stream in the middle of
	// the first server line it matches: the first half of that line is
	// forwarded, then nothing more (the connection stays open).
	StallOn *regexp.Regexp
	// ResetOn resets (TCP RST) both sides when the client sends a line it
	// matches; the line does not reach the server.
	ResetOn *regexp.Regexp
	// Client and Server rewrite whole lines (CRLF included) in each
	// direction; they return the bytes to send instead, nil to drop the
	// line. They may be called concurrently for different connections.
	Client func(line []byte) []byte
	Server func(line []byte) []byte
	// Prefix is sent to the client before anything the server says (junk
	// before a greeting, or non-TLS bytes where a TLS handshake is due).
	Prefix []byte

	// Flood replaces the first server line its On matches with Head, then
	// sends Fill again and again until the client goes away: a server that
	// never ends its answer (an endless line, continuation lines, a literal
	// that never ends).
	Flood *Flood
	// Drip, from the first server line its On matches (that line included),
	// forwards the server's stream one byte per Every: a slowloris server.
	Drip *Drip

	// TLS, when set, makes the proxy itself the TLS server of every new
	// connection with this configuration (a certificate of an unknown CA or
	// for another host name); the connection is closed after the handshake,
	// which the client is expected to refuse.
	TLS *tls.Config

	// OnConn, when set, is called as each relayed connection is accepted.
	// The line function it returns sees every complete line that client
	// sends, before any rule applies and before the line is forwarded; end
	// is called once when the connection ends. Tests use it to follow
	// sessions (from accept to LOGOUT) without a proxy of their own.
	OnConn func() (line func([]byte), end func())
}

func (f *Fault) lines() bool {
	return f.StallOn != nil || f.ResetOn != nil || f.Client != nil || f.Server != nil || f.Flood != nil || f.Drip != nil
}

// Flood is an endless answer; see Fault.Flood.
type Flood struct {
	On         *regexp.Regexp
	Head, Fill []byte
}

// Drip is a slow answer; see Fault.Drip.
type Drip struct {
	On    *regexp.Regexp
	Every time.Duration
}

// Proxy relays loopback TCP connections to a target address.
type Proxy struct {
	target string
	addr   string

	fault atomic.Pointer[Fault]

	mu       sync.Mutex
	closed   bool
	done     chan struct{} // closed by Close: ends drips
	ln       net.Listener  // nil while refusing or unanswered
	hold     *unanswered
	conns    map[net.Conn]struct{}
	sent     bytes.Buffer // every byte clients sent, all connections
	accepted int

	wg        sync.WaitGroup
	readBytes atomic.Int64 // bytes forwarded to clients
	lineCount atomic.Int64 // lines clients sent
}

// NewProxy listens on a random 127.0.0.1 port and relays to target.
func NewProxy(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{target: target, addr: ln.Addr().String(), conns: map[net.Conn]struct{}{}, done: make(chan struct{})}
	p.fault.Store(&Fault{})
	p.serve(ln)
	return p, nil
}

// Addr is the address clients connect to; it stays the same whatever the
// fault.
func (p *Proxy) Addr() string { return p.addr }

// Set switches the fault. Connections already open keep their socket but
// apply the new line rules and stall to what follows; Refuse and
// Unanswered take effect for new connects.
func (p *Proxy) Set(f Fault) error {
	p.fault.Store(&f)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return net.ErrClosed
	}
	wantListen := !f.Refuse && !f.Unanswered
	if p.hold != nil && !f.Unanswered {
		p.hold.Close()
		p.hold = nil
	}
	if p.ln != nil && !wantListen {
		p.ln.Close()
		p.ln = nil
	}
	switch {
	case wantListen && p.ln == nil:
		ln, err := listenRetry(p.addr)
		if err != nil {
			return err
		}
		p.serveLocked(ln)
	case f.Unanswered && p.hold == nil:
		h, err := listenUnanswered(p.addr)
		if err != nil {
			return err
		}
		p.hold = h
	}
	return nil
}

// Clear is Set(Fault{}).
func (p *Proxy) Clear() error { return p.Set(Fault{}) }

// Sent returns every byte clients sent through the proxy so far.
func (p *Proxy) Sent() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return bytes.Clone(p.sent.Bytes())
}

// Accepted is the number of connections the proxy accepted.
func (p *Proxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// ReadBytes is the number of bytes clients read through the proxy.
func (p *Proxy) ReadBytes() int64 { return p.readBytes.Load() }

// Lines is the number of lines (commands, literal lines included) clients
// sent through the proxy.
func (p *Proxy) Lines() int64 { return p.lineCount.Load() }

// ResetCounters forgets what was sent and counted so far.
func (p *Proxy) ResetCounters() {
	p.mu.Lock()
	p.sent.Reset()
	p.accepted = 0
	p.mu.Unlock()
	p.readBytes.Store(0)
	p.lineCount.Store(0)
}

// Close stops listening, closes every connection and waits for the relays.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.done)
	if p.ln != nil {
		p.ln.Close()
	}
	if p.hold != nil {
		p.hold.Close()
	}
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return nil
}

// listenRetry binds addr again after a Refuse or Unanswered phase; the port
// may take a moment to be free of the closed listener.
func listenRetry(addr string) (net.Listener, error) {
	var err error
	for range 50 {
		var ln net.Listener
		if ln, err = net.Listen("tcp", addr); err == nil {
			return ln, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil, fmt.Errorf("faultnet: listening again on %s: %w", addr, err)
}

func (p *Proxy) serve(ln net.Listener) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.serveLocked(ln)
}

func (p *Proxy) serveLocked(ln net.Listener) {
	p.ln = ln
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if !p.track(c) {
				c.Close()
				continue
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				defer p.untrack(c)
				p.handle(c)
			}()
		}
	}()
}

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	p.accepted++
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	c.Close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// handle serves one client connection under the fault current at accept.
func (p *Proxy) handle(client net.Conn) {
	f := p.fault.Load()
	switch {
	case f.Silent:
		// Hold the connection, reading what the client sends, until the
		// client or Close ends it.
		buf := make([]byte, 4096)
		for {
			n, err := client.Read(buf)
			p.mu.Lock()
			p.sent.Write(buf[:n])
			p.mu.Unlock()
			if err != nil {
				return
			}
		}
	case f.Reset:
		if tc, ok := client.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		return
	case f.TLS != nil:
		tc := tls.Server(client, f.TLS)
		_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
		_ = tc.Handshake()
		return
	}
	var d net.Dialer
	server, err := d.Dial("tcp", p.target)
	if err != nil {
		return
	}
	if !p.track(server) {
		server.Close()
		return
	}
	defer p.untrack(server)
	c := &relay{p: p, client: client, server: server}
	if f.OnConn != nil {
		var end func()
		c.watch, end = f.OnConn()
		defer end()
	}
	if len(f.Prefix) > 0 {
		if _, err := client.Write(f.Prefix); err != nil {
			return
		}
	}
	done := make(chan struct{}, 2)
	go func() { c.pump(server, client, false); done <- struct{}{} }()
	go func() { c.pump(client, server, true); done <- struct{}{} }()
	<-done
	// One side ended: end the other too, then wait for its pump.
	client.Close()
	server.Close()
	<-done
}

// relay is one proxied connection.
type relay struct {
	p              *Proxy
	client, server net.Conn
	stalled        atomic.Bool
	dripping       atomic.Bool
	watch          func([]byte) // from Fault.OnConn at accept; nil without
}

// pump copies src to dst. fromClient tells the direction.
func (r *relay) pump(src, dst net.Conn, fromClient bool) {
	buf := make([]byte, 32<<10)
	var pending []byte
	for {
		n, err := src.Read(buf)
		if n > 0 {
			data := buf[:n]
			if fromClient {
				r.p.mu.Lock()
				r.p.sent.Write(data)
				r.p.mu.Unlock()
				r.p.lineCount.Add(int64(bytes.Count(data, []byte{'\n'})))
			}
			f := r.p.fault.Load()
			if !f.lines() && r.watch == nil && len(pending) == 0 {
				if !r.forward(dst, data, fromClient) {
					return
				}
			} else {
				pending = append(pending, data...)
				for {
					i := bytes.IndexByte(pending, '\n')
					if i < 0 {
						break
					}
					line := pending[:i+1]
					if fromClient && r.watch != nil {
						r.watch(bytes.Clone(line))
					}
					if !r.line(dst, bytes.Clone(line), fromClient, r.p.fault.Load()) {
						return
					}
					pending = pending[i+1:]
				}
				if !r.p.fault.Load().lines() && r.watch == nil && len(pending) > 0 {
					// Rules switched off: what is left is not held back.
					if !r.forward(dst, pending, fromClient) {
						return
					}
					pending = nil
				}
			}
		}
		if err != nil {
			return
		}
	}
}

// line applies f to one complete line; false ends the relay.
func (r *relay) line(dst net.Conn, line []byte, fromClient bool, f *Fault) bool {
	if fromClient {
		if f.ResetOn != nil && f.ResetOn.Match(line) {
			r.reset()
			return false
		}
		if f.Client != nil {
			if line = f.Client(line); line == nil {
				return true
			}
		}
		return r.forward(dst, line, true)
	}
	if f.StallOn != nil && !r.stalled.Load() && f.StallOn.Match(line) {
		r.forward(dst, line[:len(line)/2], false)
		r.stalled.Store(true)
		return true
	}
	if f.Flood != nil && f.Flood.On.Match(line) {
		r.flood(dst, f.Flood)
		return false
	}
	if f.Drip != nil && !r.dripping.Load() && f.Drip.On.Match(line) {
		r.dripping.Store(true)
	}
	if f.Server != nil {
		if line = f.Server(line); line == nil {
			return true
		}
	}
	if r.dripping.Load() && f.Drip != nil {
		return r.drip(dst, line, f.Drip.Every)
	}
	return r.forward(dst, line, false)
}

// flood sends fl's head, then its fill until a write fails (the client
// closed, or the proxy did).
func (r *relay) flood(dst net.Conn, fl *Flood) {
	if !r.forward(dst, fl.Head, false) {
		return
	}
	fill := fl.Fill
	for len(fill) > 0 && len(fill) < 32<<10 {
		fill = append(fill, fl.Fill...)
	}
	for len(fill) > 0 && r.forward(dst, fill, false) {
	}
}

// drip sends data one byte per every; a failed write (the client closed)
// or the proxy closing ends it.
func (r *relay) drip(dst net.Conn, data []byte, every time.Duration) bool {
	for i := range data {
		if !r.forward(dst, data[i:i+1], false) {
			return false
		}
		select {
		case <-time.After(every):
		case <-r.p.done:
			return false
		}
	}
	return true
}

func (r *relay) forward(dst net.Conn, data []byte, fromClient bool) bool {
	if !fromClient {
		if r.stalled.Load() {
			return true // swallowed: the client waits for the rest
		}
		r.p.readBytes.Add(int64(len(data)))
	}
	_, err := dst.Write(data)
	return err == nil
}

// reset aborts both connections with a TCP RST instead of a FIN.
func (r *relay) reset() {
	for _, c := range []net.Conn{r.client, r.server} {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		c.Close()
	}
}

// ClosedAddr returns a loopback address nothing listens on: a connect to it
// is refused.
func ClosedAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	return addr, ln.Close()
}
