package transport

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// floodServer accepts one loopback connection and, after each line the
// client sends, answers with n bytes (n < 0: without end).
func floodServer(t *testing.T, n int) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		chunk := []byte(strings.Repeat("x", 1000) + "\r\n")
		buf := make([]byte, 64)
		for {
			if n < 0 {
				if _, err := c.Write(chunk); err != nil {
					return
				}
				continue
			}
			if _, err := c.Read(buf); err != nil {
				return
			}
			if _, err := c.Write([]byte(strings.Repeat("y", n))); err != nil {
				return
			}
		}
	}()
	return l.Addr().String()
}

func dialBudget(t *testing.T, addr string, b Budget) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	raw, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	c := withBudget(ctx, raw, "imap", b)
	t.Cleanup(func() { c.Close() })
	return c
}

func TestBudgetEndsAnEndlessResponse(t *testing.T) {
	c := dialBudget(t, floodServer(t, -1), Budget{Session: 1 << 20, Response: 64 << 10})
	n, err := io.Copy(io.Discard, c)
	var be *BudgetError
	require.ErrorAs(t, err, &be)
	assert.Equal(t, int64(64<<10), n, "exactly the budget is delivered, no byte more")
	assert.Equal(t, "response", be.Scope)
	assert.Equal(t, "imap read budget exceeded: the server sent more than 65536 bytes (64 KiB) in one response", be.Error())
	assert.ErrorIs(t, Exceeded(c), be, "the budget's error is kept for libraries that flatten it")
	_, err = c.Write([]byte("A1 NOOP\r\n"))
	assert.ErrorAs(t, err, &be, "writes report the budget too, not a closed connection")
}

func TestBudgetResetsAtEachCommand(t *testing.T) {
	// 40 KB answers to each of 5 commands: every answer fits the 64 KiB
	// response budget; together they spend the 150 KB session budget.
	c := dialBudget(t, floodServer(t, 40_000), Budget{Session: 150_000, Response: 64 << 10})
	buf := make([]byte, 40_000)
	var err error
	answered := 0
	for range 5 {
		if _, err = c.Write([]byte("A NOOP\r\n")); err != nil {
			break
		}
		if _, err = io.ReadFull(c, buf); err != nil {
			break
		}
		answered++
	}
	var be *BudgetError
	require.ErrorAs(t, err, &be)
	assert.Equal(t, "session", be.Scope)
	assert.Equal(t, 3, answered, "three answers of 40 KB fit 150 KB, the fourth does not")
	assert.Contains(t, be.Error(), "over the connection")
}

func TestBudgetForProtocols(t *testing.T) {
	for _, p := range []string{"smtp", "imap", "pop3", "other"} {
		b := BudgetFor(p)
		assert.Greater(t, b.Response, int64(256<<10), "%s: far above a real answer", p)
		assert.GreaterOrEqual(t, b.Session, b.Response, p)
		assert.LessOrEqual(t, b.Response, int64(8<<20), "%s: a probe holds a few MB at most", p)
	}
	// A POP3 UIDL listing of 30,000 messages (2.2 MB) is one answer.
	assert.Greater(t, BudgetFor("pop3").Response, int64(2_200_000))
	assert.False(t, IsBudget(errors.New("imap read budget exceeded")), "by type, not by text")
}
