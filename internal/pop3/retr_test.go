package pop3_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/emailqos/emailqosreceiver/internal/pop3"
	"github.com/emailqos/emailqosreceiver/internal/pop3test"
	"github.com/emailqos/emailqosreceiver/internal/transport"
)

// TestListAndRetr: LIST n gives the size the server counts (RFC 1939
// section 5), RETR the whole message, dot-unstuffed, with CRLF endings.
func TestListAndRetr(t *testing.T) {
	s := startServer(t, pop3test.Options{})
	first := msg("one", "a\r\n.dotted\r\nb\r\n")
	s.Add(user, first)
	s.Add(user, msg("two", "x\r\n"))
	c := connect(t, s.Addr(), transport.None, nil)
	if err := c.User(user, pass); err != nil {
		t.Fatal(err)
	}
	size, err := c.List(1)
	if err != nil {
		t.Fatal(err)
	}
	if size != int64(len(first)) {
		t.Fatalf("LIST 1 = %d, want %d", size, len(first))
	}
	got, err := c.Retr(1, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, first) {
		t.Fatalf("RETR 1 = %q, want %q", got, first)
	}
	// -ERR for a message that does not exist leaves the session usable.
	var perr *pop3.Error
	if _, err := c.List(3); !errors.As(err, &perr) || perr.Command != "LIST" {
		t.Fatalf("LIST 3: %v, want a LIST refusal", err)
	}
	if _, err := c.Retr(3, 1<<20); !errors.As(err, &perr) || perr.Command != "RETR" {
		t.Fatalf("RETR 3: %v, want a RETR refusal", err)
	}
	if _, err := c.List(0); err == nil {
		t.Fatal("LIST 0 was sent")
	}
	if err := c.Noop(); err != nil {
		t.Fatalf("session unusable after refusals: %v", err)
	}
}

// TestRetrBounded: a message longer than the caller's limit is not read
// into memory: ErrResponseTooLarge, and the session is over.
func TestRetrBounded(t *testing.T) {
	s := startServer(t, pop3test.Options{})
	s.Add(user, msg("big", strings.Repeat("0123456789\r\n", 2000)))
	c := connect(t, s.Addr(), transport.None, nil)
	if err := c.User(user, pass); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Retr(1, 4096); !errors.Is(err, pop3.ErrResponseTooLarge) {
		t.Fatalf("RETR over the limit: %v, want ErrResponseTooLarge", err)
	}
	if err := c.Noop(); err == nil {
		t.Fatal("session went on after an unread response")
	}
}
