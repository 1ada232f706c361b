// Package transport opens the network connections of a probe: TCP, with
// implicit TLS when asked, each tied to the probe's context so that a silent
// or black-holed server ends the probe at its deadline instead of hanging it.
package transport // import "github.com/emailqos/emailqosreceiver/internal/transport"

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/emailqos/emailqosreceiver/internal/steps"
)

// Security is how a connection is protected.
type Security string

const (
	// None is a plain TCP connection; credentials are sent in clear. It is
	// only ever used when a user configured it explicitly.
	None Security = "none"
	// STARTTLS upgrades a plain connection with the protocol's own command
	// (SMTP STARTTLS, IMAP STARTTLS, POP3 STLS) before any credential is sent.
	STARTTLS Security = "starttls"
	// TLS is implicit TLS from the first byte (ports 465, 993, 995).
	TLS Security = "tls"
)

// Endpoint is one server a probe talks to.
type Endpoint struct {
	// Address is host:port.
	Address  string
	Security Security
	// TLSConfig is used for TLS and STARTTLS. When nil, or when its
	// ServerName is empty, the server name is taken from Address.
	TLSConfig *tls.Config
}

// ClientTLSConfig returns the TLS configuration to use for ep, with the
// server name filled in from the address when it was not configured.
func (ep Endpoint) ClientTLSConfig() *tls.Config {
	var cfg *tls.Config
	if ep.TLSConfig != nil {
		cfg = ep.TLSConfig.Clone()
	} else {
		cfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(ep.Address)
		if err != nil {
			host = ep.Address
		}
		cfg.ServerName = host
	}
	return cfg
}

// RecordingTLSConfig is ClientTLSConfig with an observer that records each
// handshake's version and the server's leaf certificate validity into rec
// under protocol (smtp, imap, pop3). Every handshake of a probe, implicit
// TLS and STARTTLS alike, goes through it. The observer is
// VerifyConnection, which runs after the normal verification and also
// when verification is skipped, so a certificate that failed verification
// is never recorded, and an unverified one is marked as such.
func (ep Endpoint) RecordingTLSConfig(rec *steps.Recorder, protocol string) *tls.Config {
	cfg := ep.ClientTLSConfig()
	if rec == nil {
		return cfg
	}
	next, unverified := cfg.VerifyConnection, cfg.InsecureSkipVerify
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if next != nil {
			if err := next(cs); err != nil {
				return err
			}
		}
		t := steps.TLS{Protocol: protocol, Version: cs.Version, Unverified: unverified}
		if len(cs.PeerCertificates) > 0 {
			t.NotAfter = cs.PeerCertificates[0].NotAfter
		}
		rec.AddTLS(t)
		return nil
	}
	return cfg
}

// Dial connects to ep and, for implicit TLS, completes the handshake. The
// connect and TLS steps are recorded under connectStep and tlsStep, and the
// handshake under tlsStep's protocol (see RecordingTLSConfig). The
// returned connection is closed as soon as ctx is done, which unblocks any
// read or write the protocol libraries are waiting in; closing it stops that
// watch. Every byte read from the server counts against the protocol's
// read budget (see Budget), before and after any TLS.
func Dial(ctx context.Context, ep Endpoint, connectStep, tlsStep string, rec *steps.Recorder) (net.Conn, error) {
	var d net.Dialer
	var raw net.Conn
	err := rec.Do(connectStep, func() error {
		var err error
		raw, err = d.DialContext(ctx, "tcp", ep.Address)
		return err
	})
	if err != nil {
		return nil, err
	}
	conn := bind(ctx, raw, steps.Protocol(tlsStep))
	if ep.Security != TLS {
		return conn, nil
	}
	tlsConn := tls.Client(conn, ep.RecordingTLSConfig(rec, steps.Protocol(tlsStep)))
	err = rec.Do(tlsStep, func() error { return tlsConn.HandshakeContext(ctx) })
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("tls handshake: %w", err)
	}
	return tlsConn, nil
}

// Bind ties conn to ctx: when ctx is done the connection is closed. The
// returned connection's Close also releases the watch. Its reads count
// against the default budget; Dial uses the protocol's.
func Bind(ctx context.Context, conn net.Conn) net.Conn {
	return bind(ctx, conn, "")
}

func bind(ctx context.Context, conn net.Conn, protocol string) net.Conn {
	b := &boundConn{Conn: conn, meter: meter{budget: BudgetFor(protocol), protocol: protocol}}
	if b.meter.protocol == "" {
		b.meter.protocol = "connection"
	}
	b.stop = context.AfterFunc(ctx, func() { _ = conn.Close() })
	return b
}

// withBudget is Bind with an explicit budget, for tests of the limits.
func withBudget(ctx context.Context, conn net.Conn, protocol string, budget Budget) net.Conn {
	b := bind(ctx, conn, protocol).(*boundConn)
	b.meter.budget = budget
	return b
}

type boundConn struct {
	net.Conn
	stop  func() bool
	once  sync.Once
	meter meter
}

func (b *boundConn) Read(p []byte) (int, error) {
	room, err := b.meter.room(len(p))
	if err != nil {
		return 0, err
	}
	n, err := b.Conn.Read(p[:room])
	b.meter.read(n)
	return n, err
}

// Write fails once the budget is spent, so that whatever call of the
// library notices first reports the budget, not a closed connection. What
// the server reads after a write is the answer to it: a new response.
func (b *boundConn) Write(p []byte) (int, error) {
	if err := b.exceeded(); err != nil {
		return 0, err
	}
	n, err := b.Conn.Write(p)
	if n > 0 {
		b.meter.wrote()
	}
	return n, err
}

func (b *boundConn) exceeded() error {
	b.meter.mu.Lock()
	defer b.meter.mu.Unlock()
	if b.meter.over == nil {
		return nil
	}
	return b.meter.over
}

func (b *boundConn) Close() error {
	b.once.Do(func() { b.stop() })
	return b.Conn.Close()
}

// Deadline returns the earlier of ctx's deadline and now+max, for libraries
// that take a timeout rather than a context.
func Deadline(ctx context.Context, max time.Duration) time.Time {
	d := time.Now().Add(max)
	if dl, ok := ctx.Deadline(); ok && dl.Before(d) {
		return dl
	}
	return d
}
