// Package pop3test is an in-process POP3 server for tests: RFC 1939 with
// CAPA, STLS, implicit TLS and SASL AUTH (PLAIN, XOAUTH2, OAUTHBEARER). It
// listens on loopback only and keeps maildrops in memory.
package pop3test // import "github.com/emailqos/emailqosreceiver/internal/pop3test"

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// Options configures a Server.
type Options struct {
	// Users maps user names to passwords.
	Users map[string]string
	// TLSConfig, when set, makes STLS available on the plain listener and
	// opens a second, implicit-TLS listener.
	TLSConfig *tls.Config
	// DisableSTLS withholds STLS even when TLSConfig is set.
	DisableSTLS bool
	// SASL offers AUTH PLAIN, and XOAUTH2 and OAUTHBEARER when BearerCheck
	// is set.
	SASL bool
	// BearerCheck validates OAuth bearer tokens for XOAUTH2 and OAUTHBEARER.
	BearerCheck func(user, token string) bool
	// FailDele makes every DELE fail with -ERR [SYS/TEMP].
	FailDele bool
	// FailQuit makes QUIT in the TRANSACTION state fail with -ERR and apply
	// no deletion, as a server that cannot update the maildrop must.
	FailQuit bool
	// FailRetr makes every RETR fail with -ERR [SYS/TEMP].
	FailRetr bool
	// NoCAPA makes the server an RFC 1939 one that does not know CAPA.
	NoCAPA bool
	// AuthDelay is how long a successful login takes on the server before
	// its +OK: by default the maildrop snapshot is taken at its end, just
	// before the +OK, as Dovecot does (it opens the maildrop in the user's
	// pop3 process, started after authentication); with SnapshotFirst it is
	// taken as soon as the credentials are read. RFC 1939 section 8 allows
	// anything between the two.
	AuthDelay     time.Duration
	SnapshotFirst bool
	// SnapshotLazy takes the snapshot only at the first command after the
	// +OK, as Dovecot 2.3 behaves (a message delivered between its +OK to
	// PASS and the UIDL that follows is listed: measured with
	// scripts/mailstack.sh), against RFC 1939.
	SnapshotLazy bool
	// OnCommand, when set, sees every command's verb (upper case) and, but
	// for USER, PASS and AUTH, its argument, so tests can tell what was
	// read. It is called from the session's goroutine.
	OnCommand func(verb, arg string)
}

// message is one message of a maildrop. Sessions hold pointers to it, so
// deletion at QUIT removes exactly the messages the session saw.
type message struct {
	uid  string
	raw  []byte // as added
	wire []byte // CRLF line endings, not dot-stuffed; its length is the size
}

// Server is a running POP3 server.
type Server struct {
	opts  Options
	ln    net.Listener
	tlsLn net.Listener
	wg    sync.WaitGroup

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
	boxes  map[string][]*message
	seq    int
}

// Start listens on 127.0.0.1 on an ephemeral port, and on a second one for
// implicit TLS when opts.TLSConfig is set.
func Start(opts Options) (*Server, error) {
	s := &Server{
		opts:  opts,
		conns: map[net.Conn]struct{}{},
		boxes: map[string][]*message{},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.ln = ln
	if opts.TLSConfig != nil {
		tl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			ln.Close()
			return nil, err
		}
		s.tlsLn = tl
	}
	s.wg.Add(1)
	go s.serve(s.ln, false)
	if s.tlsLn != nil {
		s.wg.Add(1)
		go s.serve(s.tlsLn, true)
	}
	return s, nil
}

// Addr is the address of the plain listener.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// TLSAddr is the address of the implicit-TLS listener, or "" without one.
func (s *Server) TLSAddr() string {
	if s.tlsLn == nil {
		return ""
	}
	return s.tlsLn.Addr().String()
}

// Add appends a message to user's maildrop. Sessions see the maildrop as it
// was when they logged in, so only later sessions see it.
func (s *Server) Add(user string, raw []byte) {
	m := &message{raw: bytes.Clone(raw), wire: toCRLF(raw)}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	m.uid = fmt.Sprintf("pop3test-%08d", s.seq)
	s.boxes[user] = append(s.boxes[user], m)
}

// Messages returns copies of the messages in user's maildrop, in order.
func (s *Server) Messages(user string) [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([][]byte, 0, len(s.boxes[user]))
	for _, m := range s.boxes[user] {
		out = append(out, bytes.Clone(m.raw))
	}
	return out
}

// Close stops the listeners, closes open sessions without applying their
// deletions, and waits for every goroutine of the server to return.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	err := s.ln.Close()
	if s.tlsLn != nil {
		err = errors.Join(err, s.tlsLn.Close())
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

func (s *Server) serve(ln net.Listener, implicitTLS bool) {
	defer s.wg.Done()
	for {
		raw, err := ln.Accept()
		if err != nil {
			return // closed by Close; loopback accepts do not fail otherwise
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			raw.Close()
			return
		}
		// The raw connection is tracked, not a TLS wrapper, so that Close
		// interrupts a session even in the middle of a handshake.
		s.conns[raw] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, raw)
				s.mu.Unlock()
				raw.Close()
			}()
			var conn net.Conn = raw
			if implicitTLS {
				conn = tls.Server(raw, s.opts.TLSConfig)
			}
			newSession(s, conn, implicitTLS).run()
		}()
	}
}

// snapshot returns the maildrop of user at login, as RFC 1939's exclusive
// view of it.
func (s *Server) snapshot(user string) []*message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*message(nil), s.boxes[user]...)
}

// expunge removes the given messages from user's maildrop (UPDATE state).
func (s *Server) expunge(user string, gone map[*message]bool) {
	if len(gone) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	kept := s.boxes[user][:0:0]
	for _, m := range s.boxes[user] {
		if !gone[m] {
			kept = append(kept, m)
		}
	}
	s.boxes[user] = kept
}

// toCRLF normalises line endings to CRLF, ending the last line too.
func toCRLF(raw []byte) []byte {
	var out bytes.Buffer
	out.Grow(len(raw) + len(raw)/32 + 2)
	for len(raw) > 0 {
		line, rest, found := bytes.Cut(raw, []byte("\n"))
		line = bytes.TrimSuffix(line, []byte("\r"))
		out.Write(line)
		out.WriteString("\r\n")
		raw = rest
		if !found {
			break
		}
	}
	return out.Bytes()
}
