package faultnet

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echo is a line server: it greets, then answers each line with "ok <line>".
func echo(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.WriteString(c, "hello there\r\n")
				br := bufio.NewReader(c)
				for {
					l, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := io.WriteString(c, "ok "+l); err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

func proxy(t *testing.T, target string) *Proxy {
	t.Helper()
	p, err := NewProxy(target)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, p.Close()) })
	return p
}

type client struct {
	net.Conn
	br *bufio.Reader
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	require.NoError(t, err)
	require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
	t.Cleanup(func() { c.Close() })
	return &client{c, bufio.NewReader(c)}
}

func (c *client) line(t *testing.T) string {
	t.Helper()
	l, err := c.br.ReadString('\n')
	require.NoError(t, err)
	return l
}

func TestPassThroughAndCounters(t *testing.T) {
	p := proxy(t, echo(t))
	c := dial(t, p.Addr())
	assert.Equal(t, "hello there\r\n", c.line(t))
	_, _ = io.WriteString(c, "A1 LOGIN x y\r\n")
	assert.Equal(t, "ok A1 LOGIN x y\r\n", c.line(t))
	assert.Equal(t, "A1 LOGIN x y\r\n", string(p.Sent()))
	assert.Equal(t, int64(1), p.Lines())
	assert.Equal(t, int64(len("hello there\r\nok A1 LOGIN x y\r\n")), p.ReadBytes())
	p.ResetCounters()
	assert.Empty(t, p.Sent())
}

func TestRewriteStallReset(t *testing.T) {
	p := proxy(t, echo(t))
	require.NoError(t, p.Set(Fault{
		Prefix: []byte("junk\r\n"),
		Client: func(l []byte) []byte {
			return regexp.MustCompile(`SELECT INBOX`).ReplaceAll(l, []byte("SELECT Nowhere"))
		},
		Server: func(l []byte) []byte {
			if string(l) == "ok drop me\r\n" {
				return nil
			}
			return l
		},
	}))
	c := dial(t, p.Addr())
	assert.Equal(t, "junk\r\n", c.line(t))
	assert.Equal(t, "hello there\r\n", c.line(t))
	_, _ = io.WriteString(c, "drop me\r\nA2 SELECT INBOX\r\n")
	assert.Equal(t, "ok A2 SELECT Nowhere\r\n", c.line(t))

	// Switched mid-connection: the next reply stalls half-way.
	require.NoError(t, p.Set(Fault{StallOn: regexp.MustCompile(`^ok A3`)}))
	_, _ = io.WriteString(c, "A3 NOOP\r\n")
	require.NoError(t, c.SetReadDeadline(time.Now().Add(300*time.Millisecond)))
	got, err := c.br.ReadString('\n')
	assert.Equal(t, "ok A3 ", got)
	assert.ErrorIs(t, err, os.ErrDeadlineExceeded)

	require.NoError(t, p.Set(Fault{ResetOn: regexp.MustCompile(`^DATA`)}))
	c2 := dial(t, p.Addr())
	c2.line(t)
	_, _ = io.WriteString(c2, "DATA\r\n")
	_, err = c2.br.ReadString('\n')
	assert.ErrorIs(t, err, syscall.ECONNRESET)
}

func TestSilent(t *testing.T) {
	p := proxy(t, echo(t))
	require.NoError(t, p.Set(Fault{Silent: true}))
	c := dial(t, p.Addr())
	_, _ = io.WriteString(c, "EHLO x\r\n")
	require.NoError(t, c.SetReadDeadline(time.Now().Add(200*time.Millisecond)))
	_, err := c.br.ReadString('\n')
	assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
	assert.Eventually(t, func() bool { return string(p.Sent()) == "EHLO x\r\n" }, 2*time.Second, 10*time.Millisecond)
}

func TestRefuseAndUnansweredThenRecover(t *testing.T) {
	p := proxy(t, echo(t))
	require.NoError(t, p.Set(Fault{Refuse: true}))
	_, err := net.DialTimeout("tcp", p.Addr(), time.Second)
	assert.ErrorIs(t, err, syscall.ECONNREFUSED)

	require.NoError(t, p.Set(Fault{Unanswered: true}))
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	var d net.Dialer
	_, err = d.DialContext(ctx, "tcp", p.Addr())
	require.Error(t, err, "the connect must hang until the deadline")
	assert.True(t, errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded), "%v", err)

	require.NoError(t, p.Clear())
	c := dial(t, p.Addr())
	assert.Equal(t, "hello there\r\n", c.line(t))
}

func TestUnansweredEndpointAndClosedAddr(t *testing.T) {
	u, err := NewUnanswered()
	require.NoError(t, err)
	defer u.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	var d net.Dialer
	_, err = d.DialContext(ctx, "tcp", u.Addr())
	assert.Error(t, err)

	addr, err := ClosedAddr()
	require.NoError(t, err)
	_, err = net.DialTimeout("tcp", addr, time.Second)
	assert.ErrorIs(t, err, syscall.ECONNREFUSED)
}

func TestTLSFaults(t *testing.T) {
	trusted, err := NewCA("trusted")
	require.NoError(t, err)
	unknown, err := NewCA("unknown")
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(trusted.PEM))
	clientCfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}

	p := proxy(t, echo(t))
	handshake := func() error {
		c, err := net.DialTimeout("tcp", p.Addr(), time.Second)
		require.NoError(t, err)
		defer c.Close()
		require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
		return tls.Client(c, clientCfg).Handshake()
	}

	other, err := trusted.ServerConfig("mail.other.test")
	require.NoError(t, err)
	require.NoError(t, p.Set(Fault{TLS: other}))
	var hostErr x509.HostnameError
	assert.ErrorAs(t, handshake(), &hostErr)

	stranger, err := unknown.ServerConfig("127.0.0.1")
	require.NoError(t, err)
	require.NoError(t, p.Set(Fault{TLS: stranger}))
	var authErr x509.UnknownAuthorityError
	assert.ErrorAs(t, handshake(), &authErr)

	right, err := trusted.ServerConfig("127.0.0.1")
	require.NoError(t, err)
	require.NoError(t, p.Set(Fault{TLS: right}))
	assert.NoError(t, handshake())

	require.NoError(t, p.Set(Fault{Prefix: NotTLS}))
	var rec tls.RecordHeaderError
	assert.ErrorAs(t, handshake(), &rec)
}

func TestFloodNeverEnds(t *testing.T) {
	p := proxy(t, echo(t))
	require.NoError(t, p.Set(Fault{Flood: &Flood{On: regexp.MustCompile(`^ok A1`), Head: []byte("* LIST () \"/\" {999999999}\r\n"), Fill: []byte("xy\r\n")}}))
	c := dial(t, p.Addr())
	assert.Equal(t, "hello there\r\n", c.line(t), "lines before the match pass")
	_, _ = io.WriteString(c, "A1 LIST \"\" *\r\n")
	assert.Equal(t, "* LIST () \"/\" {999999999}\r\n", c.line(t))
	// Far more than the echo server would ever send, all fill.
	n, err := io.CopyN(io.Discard, io.TeeReader(c.br, &fillCheck{t: t}), 4<<20)
	require.NoError(t, err)
	assert.Equal(t, int64(4<<20), n)
	assert.Greater(t, p.ReadBytes(), int64(4<<20))
}

// fillCheck asserts that everything it sees is the flood's fill.
type fillCheck struct {
	t   *testing.T
	off int
}

func (f *fillCheck) Write(p []byte) (int, error) {
	for _, b := range p {
		if want := "xy\r\n"[f.off%4]; b != want {
			f.t.Fatalf("byte %d is %q, want %q", f.off, b, want)
		}
		f.off++
	}
	return len(p), nil
}

func TestDripOneByteAtATime(t *testing.T) {
	p := proxy(t, echo(t))
	require.NoError(t, p.Set(Fault{Drip: &Drip{On: regexp.MustCompile(`^ok A1`), Every: 100 * time.Millisecond}}))
	c := dial(t, p.Addr())
	assert.Equal(t, "hello there\r\n", c.line(t), "lines before the match pass at full speed")
	start := time.Now()
	_, _ = io.WriteString(c, "A1\r\n")
	buf := make([]byte, 3)
	_, err := io.ReadFull(c, buf)
	require.NoError(t, err)
	assert.Equal(t, "ok ", string(buf))
	// Three bytes at one per 100 ms: at least 200 ms between the first and
	// the third (a lower bound, which load cannot break).
	assert.GreaterOrEqual(t, time.Since(start), 200*time.Millisecond)
}

func TestBlackHole(t *testing.T) {
	addr := BlackHole(t)
	// Two connections: each is accepted and neither gets a byte.
	for range 2 {
		c := dial(t, addr)
		_, _ = io.WriteString(c, "A1 NOOP\r\n")
		require.NoError(t, c.SetReadDeadline(time.Now().Add(200*time.Millisecond)))
		_, err := c.br.ReadString('\n')
		assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
	}
}

func TestResetAtAccept(t *testing.T) {
	p := proxy(t, echo(t))
	require.NoError(t, p.Set(Fault{Reset: true}))
	// On loopback the reset may beat the end of connect: either fails.
	c, err := net.DialTimeout("tcp", p.Addr(), 2*time.Second)
	if err == nil {
		defer c.Close()
		require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
		_, err = c.Read(make([]byte, 1))
	}
	require.Error(t, err)
	assert.ErrorIs(t, err, syscall.ECONNRESET, "a reset, not an orderly close")
	// Back to relaying for the next connection.
	require.NoError(t, p.Clear())
	assert.Equal(t, "hello there\r\n", dial(t, p.Addr()).line(t))
}

func TestOnConnSeesLinesAndEnd(t *testing.T) {
	p := proxy(t, echo(t))
	lines := make(chan string, 8)
	ended := make(chan struct{})
	conns := 0
	require.NoError(t, p.Set(Fault{OnConn: func() (func([]byte), func()) {
		conns++ // accepts are serial: no lock needed
		return func(l []byte) { lines <- string(l) }, func() { close(ended) }
	}}))
	c := dial(t, p.Addr())
	assert.Equal(t, "hello there\r\n", c.line(t))
	// A line in two writes is seen once, whole, before the server answers.
	_, _ = io.WriteString(c, "A1 NO")
	time.Sleep(20 * time.Millisecond)
	_, _ = io.WriteString(c, "OP\r\nA2 LOGOUT\r\n")
	assert.Equal(t, "ok A1 NOOP\r\n", c.line(t))
	assert.Equal(t, "ok A2 LOGOUT\r\n", c.line(t))
	assert.Equal(t, "A1 NOOP\r\n", <-lines)
	assert.Equal(t, "A2 LOGOUT\r\n", <-lines)
	require.NoError(t, c.Close())
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("end not called after the client closed")
	}
	assert.Equal(t, 1, conns)
}

func TestClosedPortRefuses(t *testing.T) {
	addr := ClosedPort(t)
	for range 3 {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			t.Fatalf("connected to %s", addr)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("dial %s: %v, want connection refused", addr, err)
		}
	}
}
