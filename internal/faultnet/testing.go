package faultnet

import "testing"

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
