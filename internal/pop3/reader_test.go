package pop3

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"

	"github.com/emailqos/emailqosreceiver/internal/steps"
)

// scriptConn replays canned server output and records what the client
// wrote, for tests of parsing that a well-behaved server never exercises.
type scriptConn struct {
	in  io.Reader
	out bytes.Buffer
}

func script(s string) *scriptConn { return &scriptConn{in: strings.NewReader(s)} }

func (c *scriptConn) Read(p []byte) (int, error)       { return c.in.Read(p) }
func (c *scriptConn) Write(p []byte) (int, error)      { return c.out.Write(p) }
func (c *scriptConn) Close() error                     { return nil }
func (c *scriptConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *scriptConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *scriptConn) SetDeadline(time.Time) error      { return nil }
func (c *scriptConn) SetReadDeadline(time.Time) error  { return nil }
func (c *scriptConn) SetWriteDeadline(time.Time) error { return nil }

func newScripted(t *testing.T, s string) (*Client, *scriptConn) {
	t.Helper()
	conn := script(s)
	c, err := NewClient(conn)
	if err != nil {
		t.Fatal(err)
	}
	return c, conn
}

func TestExtraSpacesAndCase(t *testing.T) {
	c, _ := newScripted(t, "+ok   hello  \r\n"+
		"+OK\r\nSASL   PLAIN    XOAUTH2\r\n  stls \r\n\r\n.\r\n"+
		"  +OK   2   300   octets\r\n"+
		"+OK\n1    uid-a  \n2\tuid-b\n.\n")
	caps, err := c.Capabilities()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(caps["SASL"], ","); got != "PLAIN,XOAUTH2" {
		t.Errorf("SASL = %q", got)
	}
	if _, ok := caps["STLS"]; !ok {
		t.Errorf("STLS missing from %v", caps)
	}
	n, size, err := c.Stat()
	if err != nil || n != 2 || size != 300 {
		t.Fatalf("Stat = %d %d %v", n, size, err)
	}
	ids, err := c.UIDL()
	if err != nil || len(ids) != 2 || ids[0] != (MessageID{1, "uid-a"}) || ids[1] != (MessageID{2, "uid-b"}) {
		t.Fatalf("UIDL = %v, %v", ids, err)
	}
}

func TestMalformedReplies(t *testing.T) {
	for _, tc := range []struct{ name, script string }{
		{"status", "+OK\r\nhello\r\n"},
		{"uidl number", "+OK\r\n+OK\r\nx uid\r\n.\r\n"},
		{"uidl missing uid", "+OK\r\n+OK\r\n1\r\n.\r\n"},
		{"uidl extra field", "+OK\r\n+OK\r\n1 a b\r\n.\r\n"},
		{"truncated", "+OK\r\n+OK\r\n1 a\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := newScripted(t, tc.script)
			if _, err := c.UIDL(); err == nil {
				t.Fatal("UIDL succeeded")
			}
			// The conversation is lost: the client must not go on.
			if err := c.Noop(); err == nil {
				t.Fatal("Noop after a broken response succeeded")
			}
		})
	}
	c, _ := newScripted(t, "+OK\r\n+OK lots\r\n+OK\r\n")
	if _, _, err := c.Stat(); err == nil {
		t.Fatal("Stat with a malformed reply succeeded")
	}
	if err := c.Noop(); err != nil {
		t.Fatalf("a malformed one-line reply must not break the session: %v", err)
	}
}

func TestResponseTooLarge(t *testing.T) {
	c, _ := newScripted(t, "+OK\r\n+OK\r\n"+strings.Repeat("0123456789\r\n", 20)+".\r\n")
	c.maxResponse = 100
	if _, err := c.Top(1, 100); !errors.Is(err, ErrResponseTooLarge) || ErrorType(err) != steps.TypeProtocol {
		t.Fatalf("Top = %v, want ErrResponseTooLarge", err)
	}
	// A line longer than the limit inside a multi-line response.
	c, _ = newScripted(t, "+OK\r\n+OK\r\n"+strings.Repeat("a", MaxLineLength+10)+"\r\n.\r\n")
	if _, err := c.Top(1, 1); !errors.Is(err, ErrLineTooLong) {
		t.Fatalf("Top = %v, want ErrLineTooLong", err)
	}
}

func TestLineOfExactlyMaxLength(t *testing.T) {
	c, _ := newScripted(t, "+OK\r\n+OK\r\n"+strings.Repeat("a", MaxLineLength)+"\r\n.\r\n")
	top, err := c.Top(1, 1)
	if err != nil || len(top) != MaxLineLength+2 {
		t.Fatalf("Top = %d octets, %v", len(top), err)
	}
}

func TestSTLSRefusesPipelinedData(t *testing.T) {
	c, _ := newScripted(t, "+OK\r\n+OK begin\r\n+OK injected\r\n")
	err := c.StartTLS(&tls.Config{ServerName: "x"})
	if err == nil || !strings.Contains(err.Error(), "before the TLS handshake") {
		t.Fatalf("StartTLS = %v", err)
	}
	if err := c.StartTLS(nil); err == nil {
		t.Fatal("StartTLS(nil) succeeded")
	}
}

func TestArgumentInjection(t *testing.T) {
	c, conn := newScripted(t, "+OK\r\n")
	err := c.User("alice\r\nDELE 1", "x")
	if err == nil || strings.Contains(err.Error(), "DELE 1") {
		t.Fatalf("User = %v", err)
	}
	if err := c.User("alice", "p\nDELE 1"); err == nil || strings.Contains(err.Error(), "DELE") {
		t.Fatalf("User = %v", err)
	}
	if conn.out.Len() != 0 {
		t.Fatalf("sent %q", conn.out.String())
	}
}

func TestAuthDialog(t *testing.T) {
	// Initial response on the AUTH line, then success.
	c, conn := newScripted(t, "+OK\r\n+OK welcome\r\n")
	if err := c.Auth(sasl.NewPlainClient("", "u", "p")); err != nil {
		t.Fatal(err)
	}
	if got := conn.out.String(); got != "AUTH PLAIN AHUAcA==\r\n" {
		t.Errorf("sent %q", got)
	}

	// A challenge that is not base64 cancels with "*".
	c, conn = newScripted(t, "+OK\r\n+ !!notbase64\r\n-ERR cancelled\r\n")
	err := c.Auth(sasl.NewOAuthBearerClient(&sasl.OAuthBearerOptions{Username: "u", Token: "tok"}))
	var perr *Error
	if !errors.As(err, &perr) || ErrorType(err) != steps.TypeAuth {
		t.Fatalf("Auth = %v", err)
	}
	if !strings.HasSuffix(conn.out.String(), "\r\n*\r\n") {
		t.Errorf("sent %q, want a cancel", conn.out.String())
	}
	if strings.Contains(err.Error(), "dG9r") || strings.Contains(err.Error(), "tok") {
		t.Errorf("error reveals the payload: %v", err)
	}

	// A server that challenges forever.
	c, _ = newScripted(t, "+OK\r\n"+strings.Repeat("+ \r\n", 100))
	if err := c.Auth(loopMech{}); err == nil || !strings.Contains(err.Error(), "too many") {
		t.Fatalf("Auth = %v", err)
	}

	// +OK to a cancel is not a login we can trust.
	c, _ = newScripted(t, "+OK\r\n+ eA==\r\n+OK\r\n")
	if err := c.Auth(sasl.NewPlainClient("", "u", "p")); err == nil {
		t.Fatal("Auth accepted +OK after cancel")
	}
}

type loopMech struct{}

func (loopMech) Start() (string, []byte, error) { return "LOOP", nil, nil }
func (loopMech) Next([]byte) ([]byte, error)    { return []byte{}, nil }

func TestErrorCode(t *testing.T) {
	for msg, want := range map[string]string{
		"[AUTH] bad":       "AUTH",
		"[sys/temp] later": "SYS/TEMP",
		"[IN-USE]":         "IN-USE",
		"no code":          "",
		"[unterminated":    "",
		"":                 "",
	} {
		if got := (&Error{Message: msg}).Code(); got != want {
			t.Errorf("Code(%q) = %q, want %q", msg, got, want)
		}
	}
	for err, want := range map[error]string{
		nil:                     steps.TypeNone,
		&Error{Command: "DELE"}: steps.TypeRejected,
		&Error{Command: "DELE", Message: "[SYS/PERM]"}:                                                   steps.TypeRejected,
		&Error{Command: "PASS", Message: "[IN-USE]"}:                                                     steps.TypeInUse,
		&Error{Command: "PASS", Message: "[SYS/TEMP] Authentication service down"}:                       steps.TypeUnavailable,
		&Error{Command: "PASS", Message: "[LOGIN-DELAY] Wait 15 minutes"}:                                steps.TypeLimit,
		&Error{Command: "PASS", Message: "[AUTH] Authentication failed"}:                                 steps.TypeAuth,
		&Error{Command: "PASS", Message: "Maximum number of connections from user+IP exceeded"}:          steps.TypeLimit,
		&Error{Command: "PASS", Message: "[IN-USE] Maximum number of connections from user+IP exceeded"}: steps.TypeLimit,
		&Error{Command: "PASS", Message: "Authentication failed"}:                                        steps.TypeAuth,
		&Error{Command: "USER"}: steps.TypeAuth,
		&Error{Command: "STLS"}: steps.TypeTLS,
		io.ErrUnexpectedEOF:     steps.TypeConnect,
		errors.New("something"): steps.TypeProtocol,
	} {
		if got := ErrorType(err); got != want {
			t.Errorf("ErrorType(%v) = %q, want %q", err, got, want)
		}
	}
}

// FuzzReadResponse drives the client's parsers with arbitrary server output.
// They must never panic, and what they return must stay within the limits.
func FuzzReadResponse(f *testing.F) {
	for _, seed := range []string{
		"+OK hi\r\n+OK\r\nTOP\r\nSASL PLAIN\r\n.\r\n+OK 1 2\r\n+OK\r\n1 a\r\n.\r\n+OK\r\n..x\r\n.\r\n",
		"-ERR no\r\n",
		"+OK\n+OK\n.\n+OK 0 0\n+OK\n.\n+OK\n.\n+OK\n",
		"+OK\r\n+ \r\n+ eA==\r\n-ERR [AUTH] x\r\n",
		"+OK\r\n-ERR\r\n+OK   3   10\r\n+OK\r\n1  a\r\n2\tb\r\n.",
		"+OK\r\n+OK\r\n" + strings.Repeat("x", 300) + "\r\n",
	} {
		f.Add([]byte(seed))
	}
	const limit = 1 << 12
	f.Fuzz(func(t *testing.T, data []byte) {
		conn := &scriptConn{in: bytes.NewReader(data)}
		c, err := NewClient(conn)
		if err != nil {
			return
		}
		c.r.max = 256 // small bounds so the fuzzer can reach them
		c.maxResponse = limit
		if caps, err := c.Capabilities(); err == nil && caps == nil {
			t.Fatal("nil capabilities without error")
		}
		if n, size, err := c.Stat(); err == nil && (n < 0 || size < 0) {
			t.Fatalf("Stat = %d, %d", n, size)
		}
		if ids, err := c.UIDL(); err == nil {
			for _, id := range ids {
				if id.Num < 1 || id.UID == "" {
					t.Fatalf("bad id %+v", id)
				}
			}
			if len(ids) > limit/4 {
				t.Fatalf("%d ids from a %d-octet limit", len(ids), limit)
			}
		}
		if top, err := c.Top(1, 1); err == nil && len(top) > limit {
			t.Fatalf("Top returned %d octets over a %d limit", len(top), limit)
		}
		_ = c.Auth(sasl.NewPlainClient("", "u", "p"))
		_ = c.Dele(1)
		_ = c.Noop()
		_ = c.Quit()
	})
}
