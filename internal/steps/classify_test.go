package steps

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/emailqos/emailqosreceiver/internal/testpki"
)

func TestClassifyFlattenedConnectionErrors(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("wrapped: %w", syscall.ECONNRESET), TypeConnect},
		// go-imap formats the cause with %v: only the text is left.
		{fmt.Errorf("in response: cannot read tag: %v", fmt.Errorf("read tcp 127.0.0.1:1->127.0.0.1:2: read: %w", syscall.ECONNRESET)), TypeConnect},
		{fmt.Errorf("in response: %v", io.EOF), TypeConnect},
		{fmt.Errorf("in response: %v", io.ErrUnexpectedEOF), TypeConnect},
		{fmt.Errorf("in response: %v", syscall.EPIPE), TypeConnect},
		{errors.New("imapwire: expected CRLF, got \"3\""), TypeProtocol},
		{errors.New("EOF marker missing in the server's greeting"), TypeProtocol},
	} {
		if got := Classify(tc.err); got != tc.want {
			t.Errorf("Classify(%q) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

// TestClassifyTLSVersionRefusal: a server that only speaks TLS 1.1 answers
// the client's TLS 1.2+ hello with a protocol_version alert, which
// crypto/tls returns as a *net.OpError ("remote error"); that is a TLS
// failure, not a lost connection.
func TestClassifyTLSVersionRefusal(t *testing.T) {
	ca, err := testpki.NewCA("steps test")
	if err != nil {
		t.Fatal(err)
	}
	srvConf, err := ca.ServerConfig("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	srvConf.MinVersion, srvConf.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_ = tls.Server(c, srvConf).Handshake()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d := tls.Dialer{Config: &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}}
	conn, err := d.DialContext(ctx, "tcp", l.Addr().String())
	if err == nil {
		conn.Close()
		t.Fatal("handshake with a TLS 1.1 server succeeded")
	}
	<-done
	if got := Classify(fmt.Errorf("imap: %w", err)); got != TypeTLS {
		t.Errorf("Classify(%v) = %q, want %q", err, got, TypeTLS)
	}

	for _, tc := range []struct {
		err  error
		want string
	}{
		// A TLS 1.1 ServerHello to a client that offered 1.2 and up.
		{fmt.Errorf("smtp: %w", errors.New("tls: server selected unsupported protocol version 302")), TypeTLS},
		{&net.OpError{Op: "local error", Err: errors.New("tls: unexpected message")}, TypeTLS},
		// A server echoing the text in a reply is still a protocol reply.
		{errors.New("imap: NO tls: server selected unsupported protocol version"), TypeProtocol},
		{&net.OpError{Op: "read", Err: syscall.ECONNRESET}, TypeConnect},
	} {
		if got := Classify(tc.err); got != tc.want {
			t.Errorf("Classify(%q) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

func TestTooManyConnections(t *testing.T) {
	if !TooManyConnections("Maximum number of connections from user+IP exceeded (mail_max_userip_connections=10)") {
		t.Error("Dovecot's text not recognised")
	}
	if !TooManyConnections("Too many simultaneous connections. (Failure)") {
		t.Error("Gmail's text not recognised")
	}
	if TooManyConnections("Authentication failed.") {
		t.Error("an ordinary refusal taken for a connection limit")
	}
}

func TestIsEnhancedStatus(t *testing.T) {
	for s, want := range map[string]bool{
		"5.1.1": true, "4.7.0": true, "2.0.0": true, "5.7.123": true, "5.1.10": true,
		"3.1.1": false, "5.1": false, "5.1.1.1": false, "5.a.1": false, "5..1": false, "55.1.1": false,
		"5.1.1234": false, "5.1234.1": false, "": false,
	} {
		if got := IsEnhancedStatus(s); got != want {
			t.Errorf("IsEnhancedStatus(%q) = %v, want %v", s, got, want)
		}
	}
}
