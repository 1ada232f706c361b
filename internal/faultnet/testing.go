package faultnet

import (
	"net"
	"strconv"
	"syscall"
	"testing"
)

// ProxyT is NewProxy for tests: it fails t on error and closes the proxy
// when t ends.
func ProxyT(t testing.TB, target string) *Proxy {
	t.Helper()
	p, err := NewProxy(target)
	if err != nil {
		t.Fatalf("faultnet: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// BlackHole returns the address of a loopback server that accepts
// connections and never says a word (a Silent proxy with nothing behind
// it), closed when t ends. The one black hole every package's tests use.
func BlackHole(t testing.TB) string {
	t.Helper()
	p := ProxyT(t, "")
	if err := p.Set(Fault{Silent: true}); err != nil {
		t.Fatalf("faultnet: %v", err)
	}
	return p.Addr()
}

// ClosedPort returns a loopback address where connections are refused, for
// as long as t runs. The port is bound by a socket that never listens, so
// no other listener of a busy test process can be given it meanwhile (a
// port closed right after Listen can be, and then a "refused" case
// connects to somebody else's server).
func ClosedPort(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("faultnet: socket: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("faultnet: bind: %v", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatalf("faultnet: getsockname: %v", err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
}
