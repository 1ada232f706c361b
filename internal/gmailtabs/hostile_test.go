package gmailtabs

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/emailqos/emailqosreceiver/internal/saslx"
	"github.com/emailqos/emailqosreceiver/internal/transport"
)

// scripted serves one connection on loopback with script, which answers
// the client's commands as a hostile or broken server would.
func scripted(t *testing.T, script func(c net.Conn, r *bufio.Reader)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		// Bounds the script whatever the client does.
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		script(c, bufio.NewReader(c))
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

// next reads one command: its tag and verb.
func next(r *bufio.Reader) (tag, verb string, ok bool) {
	line, err := r.ReadString('\n')
	if err != nil {
		return "", "", false
	}
	f := strings.Fields(line)
	if len(f) < 2 {
		return "", "", false
	}
	return f[0], strings.ToUpper(f[1]), true
}

// upTo answers OK to every command until verb, and returns its tag.
func upTo(c net.Conn, r *bufio.Reader, verb string) (string, bool) {
	for {
		tag, v, ok := next(r)
		if !ok {
			return "", false
		}
		if v == verb {
			return tag, true
		}
		switch v {
		case "EXAMINE":
			fmt.Fprintf(c, "* OK [UIDVALIDITY 7] ok\r\n%s OK [READ-ONLY] done\r\n", tag)
		default:
			fmt.Fprintf(c, "%s OK done\r\n", tag)
		}
	}
}

const greeting = "* OK [CAPABILITY IMAP4rev1 X-GM-EXT-1 AUTH=PLAIN] ready\r\n"

// flood writes chunk until the client goes away.
func flood(c net.Conn, chunk string) {
	b := []byte(strings.Repeat(chunk, 1024))
	for {
		if _, err := c.Write(b); err != nil {
			return
		}
	}
}

func TestLookupHostileServers(t *testing.T) {
	for _, tc := range []struct {
		name   string
		script func(c net.Conn, r *bufio.Reader)
		step   string
		want   string
	}{
		{"endless greeting line", func(c net.Conn, _ *bufio.Reader) {
			fmt.Fprint(c, "* OK ")
			flood(c, "a")
		}, StepGreeting, "longer than"},
		{"BYE greeting", func(c net.Conn, _ *bufio.Reader) {
			fmt.Fprint(c, "* BYE [UNAVAILABLE] go away\r\n")
		}, StepGreeting, "refused the connection"},
		{"PREAUTH", func(c net.Conn, _ *bufio.Reader) {
			fmt.Fprint(c, "* PREAUTH hello\r\n")
		}, StepGreeting, "PREAUTH"},
		{"huge literal", func(c net.Conn, r *bufio.Reader) {
			fmt.Fprint(c, greeting)
			if _, ok := upTo(c, r, "EXAMINE"); ok {
				fmt.Fprint(c, "* 1 FETCH (BODY[] {100000000}\r\n")
				flood(c, "x")
			}
		}, StepExamine, "literal of 100000000 bytes"},
		{"small literal, then an endless line", func(c net.Conn, r *bufio.Reader) {
			fmt.Fprint(c, greeting)
			if _, ok := upTo(c, r, "EXAMINE"); ok {
				fmt.Fprint(c, "* 1 FETCH (BODY[] {5}\r\nhello")
				flood(c, "y")
			}
		}, StepExamine, "longer than"},
		{"endless untagged responses", func(c net.Conn, r *bufio.Reader) {
			fmt.Fprint(c, greeting)
			if _, ok := upTo(c, r, "UID"); ok {
				flood(c, "* OK still here\r\n")
			}
		}, StepSearch, "untagged responses"},
		{"search refused", func(c net.Conn, r *bufio.Reader) {
			fmt.Fprint(c, greeting)
			if tag, ok := upTo(c, r, "UID"); ok {
				fmt.Fprintf(c, "%s BAD Could not parse command\r\n", tag)
			}
		}, StepSearch, "server answered BAD"},
		{"malformed search answer", func(c net.Conn, r *bufio.Reader) {
			fmt.Fprint(c, greeting)
			if tag, ok := upTo(c, r, "UID"); ok {
				fmt.Fprintf(c, "* SEARCH one\r\n%s OK done\r\n", tag)
			}
		}, StepSearch, "malformed SEARCH"},
		{"hang-up during the search", func(c net.Conn, r *bufio.Reader) {
			fmt.Fprint(c, greeting)
			upTo(c, r, "UID")
		}, StepSearch, "unexpected EOF"},
		{"wrong tag", func(c net.Conn, r *bufio.Reader) {
			fmt.Fprint(c, greeting)
			if _, ok := upTo(c, r, "LOGIN"); ok {
				fmt.Fprint(c, "X9 OK [CAPABILITY IMAP4rev1] sure\r\n")
			}
		}, StepLogin, "unexpected response"},
		{"no UIDVALIDITY", func(c net.Conn, r *bufio.Reader) {
			fmt.Fprint(c, greeting)
			if tag, ok := upTo(c, r, "EXAMINE"); ok {
				fmt.Fprintf(c, "%s OK [READ-ONLY] done\r\n", tag)
			}
		}, StepExamine, "no UIDVALIDITY"},
		{"endless SASL challenges", func(c net.Conn, r *bufio.Reader) {
			fmt.Fprint(c, "* OK [CAPABILITY IMAP4rev1 X-GM-EXT-1 LOGINDISABLED AUTH=PLAIN] ready\r\n")
			if _, v, ok := next(r); ok && v == "AUTHENTICATE" {
				for {
					if _, err := fmt.Fprint(c, "+ e30=\r\n"); err != nil {
						return
					}
					if _, err := r.ReadString('\n'); err != nil {
						return
					}
				}
			}
		}, StepLogin, "too many SASL challenges"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := scripted(t, tc.script)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			start := time.Now()
			_, err := Lookup(ctx, Options{
				Endpoint:           transport.Endpoint{Address: addr, Security: transport.None},
				Credentials:        saslx.Credentials{Username: "u@gmail.test", Password: "hostile-secret-pw"},
				AllowPlaintextAuth: true,
				UIDValidity:        7,
			}, 5)
			var e *Error
			require.ErrorAs(t, err, &e)
			assert.Equal(t, tc.step, e.Step, err.Error())
			assert.Contains(t, err.Error(), tc.want)
			assert.NotContains(t, err.Error(), "hostile-secret-pw")
			assert.Less(t, len(err.Error()), 600, "server text bounded")
			// Bounded by the session's own limits, well before ctx.
			assert.Less(t, time.Since(start), 5*time.Second)
		})
	}
}

// A server that never answers holds the lookup only as long as ctx.
func TestLookupSilentServer(t *testing.T) {
	for _, at := range []string{"greeting", "login", "search"} {
		t.Run(at, func(t *testing.T) {
			addr := scripted(t, func(c net.Conn, r *bufio.Reader) {
				if at != "greeting" {
					fmt.Fprint(c, greeting)
					verb := "LOGIN"
					if at == "search" {
						verb = "UID"
					}
					upTo(c, r, verb)
				}
				// Silent until the client hangs up.
				_, _ = r.ReadByte()
			})
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := Lookup(ctx, Options{
				Endpoint:           transport.Endpoint{Address: addr, Security: transport.None},
				Credentials:        saslx.Credentials{Username: "u@gmail.test", Password: "pw"},
				AllowPlaintextAuth: true,
			}, 5)
			require.Error(t, err)
			assert.ErrorIs(t, err, context.DeadlineExceeded)
			assert.Contains(t, err.Error(), at)
			assert.Less(t, time.Since(start), 5*time.Second)
		})
	}
}

// A server that echoes the credentials back in its refusal does not get
// them into the error.
func TestLookupEchoedSecretRedacted(t *testing.T) {
	const pw = "echo-me-secret"
	addr := scripted(t, func(c net.Conn, r *bufio.Reader) {
		fmt.Fprint(c, greeting)
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		tag, rest, _ := strings.Cut(strings.TrimRight(line, "\r\n"), " ")
		fmt.Fprintf(c, "%s NO [AUTHENTICATIONFAILED] you sent %s\r\n", tag, rest)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := Lookup(ctx, Options{
		Endpoint:           transport.Endpoint{Address: addr, Security: transport.None},
		Credentials:        saslx.Credentials{Username: "u@gmail.test", Password: pw},
		AllowPlaintextAuth: true,
	}, 5)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "AUTHENTICATIONFAILED")
	assert.NotContains(t, err.Error(), pw)
}
