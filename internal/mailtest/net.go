package mailtest

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// listenLoopback listens on addr after making sure it cannot be reached from
// outside the host: the test mail system has throwaway passwords.
func listenLoopback(addr string) (net.Listener, error) {
	if err := checkLoopback(addr); err != nil {
		return nil, err
	}
	return net.Listen("tcp", addr)
}

func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("mailtest: listen address %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("mailtest: refusing to listen on non-loopback address %q", addr)
}

// sibling returns an address on the same host as ln with a free port, for
// the implicit-TLS listener that goes with a plain one.
func sibling(ln net.Listener) string {
	host, _, err := net.SplitHostPort(ln.Addr().String())
	if err != nil {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, "0")
}

// connGroup tracks the connections a library serves for us, so that a stop
// can close them all (the libraries miss connections accepted while they
// shut down) and wait until the library has let go of each one.
type connGroup struct {
	mu     sync.Mutex
	closed bool
	conns  map[*trackedConn]struct{}
	wg     sync.WaitGroup
}

func newConnGroup() *connGroup {
	return &connGroup{conns: make(map[*trackedConn]struct{})}
}

// track wraps c; it reports false, after closing c, once the group is shut.
func (g *connGroup) track(c net.Conn) (*trackedConn, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		c.Close()
		return nil, false
	}
	tc := &trackedConn{Conn: c, g: g}
	g.conns[tc] = struct{}{}
	g.wg.Add(1)
	return tc, true
}

// shutdown refuses new connections and closes the open ones underneath their
// owners, which then notice and call Close themselves.
func (g *connGroup) shutdown() {
	g.mu.Lock()
	g.closed = true
	conns := make([]*trackedConn, 0, len(g.conns))
	for c := range g.conns {
		conns = append(conns, c)
	}
	g.mu.Unlock()
	for _, c := range conns {
		c.Conn.Close()
	}
}

func (g *connGroup) wait(d time.Duration) error {
	return waitTimeout(&g.wg, d)
}

func waitTimeout(wg *sync.WaitGroup, d time.Duration) error {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return nil
	case <-t.C:
		return errors.New("mailtest: timed out waiting for connections to finish")
	}
}

// trackedConn is released when its owner closes it: both servers close a
// connection as the last thing their per-connection goroutine does.
type trackedConn struct {
	net.Conn
	g    *connGroup
	once sync.Once
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.g.mu.Lock()
		delete(c.g.conns, c)
		c.g.mu.Unlock()
		c.g.wg.Done()
	})
	return err
}

// trackListener hands out tracked connections.
type trackListener struct {
	net.Listener
	g *connGroup
}

func (l trackListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if tc, ok := l.g.track(c); ok {
			return tc, nil
		}
	}
}

// pipeListener is an in-memory listener: the IMAP servers that must outlive
// StopIMAP or sit behind the IDLE filter are fed through it.
type pipeListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

// push hands c to the server; it fails once the listener is closed.
func (l *pipeListener) push(c net.Conn) error {
	select {
	case l.ch <- c:
		return nil
	case <-l.done:
		return net.ErrClosed
	}
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "mailtest-pipe" }

// dropAll closes the open connections underneath their owners, and keeps
// accepting new ones.
func (g *connGroup) dropAll() {
	g.mu.Lock()
	conns := make([]*trackedConn, 0, len(g.conns))
	for c := range g.conns {
		conns = append(conns, c)
	}
	g.mu.Unlock()
	for _, c := range conns {
		c.Conn.Close()
	}
}
