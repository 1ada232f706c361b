package transcript

import (
	"encoding/base64"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// chunk is one write into a stream: C for what the client sent, S for what
// it received; D for a write into the IMAP debug writer (direction
// inferred).
type chunk struct {
	dir  byte
	data string
}

func c(s string) chunk { return chunk{'C', s} }
func s(s string) chunk { return chunk{'S', s} }
func d(s string) chunk { return chunk{'D', s} }

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// run feeds chunks into a fresh stream of proto and returns the stored
// lines as "C: text" / "S: text".
func run(t testing.TB, proto Proto, chunks ...chunk) []string {
	t.Helper()
	tr := New(time.Now())
	st := tr.Stream(proto)
	dbg := st.IMAPDebug()
	for _, ch := range chunks {
		switch ch.dir {
		case 'C':
			st.Sent([]byte(ch.data))
		case 'S':
			st.Received([]byte(ch.data))
		default:
			_, _ = dbg.Write([]byte(ch.data))
		}
	}
	return texts(tr)
}

func texts(tr *Transcript) []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	out := make([]string, len(tr.lines))
	for i, l := range tr.lines {
		out[i] = fmt.Sprintf("%c: %s", l.Dir, l.Text)
	}
	return out
}

// splitEvery cuts s into pieces of n bytes, to feed a payload split across
// writes.
func splitEvery(dir byte, str string, n int) []chunk {
	var out []chunk
	for len(str) > n {
		out = append(out, chunk{dir, str[:n]})
		str = str[n:]
	}
	return append(out, chunk{dir, str})
}

// The passwords of the table: spaces, quotes, braces, backslashes,
// non-ASCII.
var passwords = []string{
	"s3cret-Pa55",
	"pass with spaces",
	`quo"te\back`,
	"{5}brace}",
	"pässwörd-ü",
	"T9 OK trick",
}

func TestSMTPRedaction(t *testing.T) {
	for _, pw := range passwords {
		plain := b64("\x00probe@a.test\x00" + pw)
		xo := b64("user=probe@a.test\x01auth=Bearer " + pw + "\x01\x01")
		tests := []struct {
			name   string
			chunks []chunk
			want   []string
		}{{
			name: "PLAIN initial response",
			chunks: []chunk{s("220 mx ready\r\n"), c("EHLO localhost\r\n"), s("250-mx\r\n250 AUTH PLAIN LOGIN\r\n"),
				c("AUTH PLAIN " + plain + "\r\n"), s("235 2.7.0 ok\r\n"), c("MAIL FROM:<probe@a.test>\r\n"), s("250 ok\r\n")},
			want: []string{"S: 220 mx ready", "C: EHLO localhost", "S: 250-mx", "S: 250 AUTH PLAIN LOGIN",
				"C: AUTH PLAIN [redacted]", "S: 235 2.7.0 ok", "C: MAIL FROM:<probe@a.test>", "S: 250 ok"},
		}, {
			name: "PLAIN after an empty challenge",
			chunks: []chunk{c("AUTH PLAIN\r\n"), s("334 \r\n"), c(plain + "\r\n"), s("535 5.7.8 no\r\n"),
				c("QUIT\r\n")},
			want: []string{"C: AUTH PLAIN", "S: 334 ", "C: [redacted]", "S: 535 5.7.8 no", "C: QUIT"},
		}, {
			name: "LOGIN, each answer separate",
			chunks: []chunk{c("AUTH LOGIN\r\n"), s("334 VXNlcm5hbWU6\r\n"), c(b64("probe@a.test") + "\r\n"),
				s("334 UGFzc3dvcmQ6\r\n"), c(b64(pw) + "\r\n"), s("235 ok\r\n"), c("NOOP\r\n")},
			want: []string{"C: AUTH LOGIN", "S: 334 VXNlcm5hbWU6", "C: [redacted]", "S: 334 UGFzc3dvcmQ6",
				"C: [redacted]", "S: 235 ok", "C: NOOP"},
		}, {
			name:   "XOAUTH2 split across writes",
			chunks: append(append([]chunk{}, splitEvery('C', "AUTH XOAUTH2 "+xo+"\r\n", 7)...), s("235 ok\r\n")),
			want:   []string{"C: AUTH XOAUTH2 [redacted]", "S: 235 ok"},
		}, {
			name: "XOAUTH2 error challenge, then the empty answer",
			chunks: []chunk{c("auth xoauth2 " + xo + "\r\n"), s("334 eyJzdGF0dXMiOiI0MDEifQ==\r\n"), c("\r\n"),
				s("535 5.7.3 failed\r\n")},
			want: []string{"C: auth xoauth2 [redacted]", "S: 334 eyJzdGF0dXMiOiI0MDEifQ==", "C: [redacted]",
				"S: 535 5.7.3 failed"},
		}, {
			name: "cancelled exchange",
			chunks: []chunk{c("AUTH LOGIN\r\n"), s("334 VXNlcm5hbWU6\r\n"), c("*\r\n"), s("501 cancelled\r\n"),
				c("RSET\r\n")},
			want: []string{"C: AUTH LOGIN", "S: 334 VXNlcm5hbWU6", "C: [redacted]", "S: 501 cancelled", "C: RSET"},
		}}
		for _, tt := range tests {
			t.Run(tt.name+"/"+pw, func(t *testing.T) {
				got := run(t, SMTP, tt.chunks...)
				assert.Equal(t, tt.want, got)
				assertNoSecret(t, got, pw)
			})
		}
	}
}

func TestSMTPData(t *testing.T) {
	body := "Subject: probe\r\n\r\nhello\r\n..dot-stuffed\r\n"
	got := run(t, SMTP, c("DATA\r\n"), s("354 go ahead\r\n"), c(body), c(".\r\n"), s("250 2.0.0 queued as X\r\n"),
		c("QUIT\r\n"))
	assert.Equal(t, []string{"C: DATA", "S: 354 go ahead", fmt.Sprintf("C: [%d bytes of message data]", len(body)),
		"C: .", "S: 250 2.0.0 queued as X", "C: QUIT"}, got)

	// DATA refused: what follows is a command again.
	got = run(t, SMTP, c("DATA\r\n"), s("554 no valid recipients\r\n"), c("QUIT\r\n"))
	assert.Equal(t, []string{"C: DATA", "S: 554 no valid recipients", "C: QUIT"}, got)
}

func TestPOP3Redaction(t *testing.T) {
	for _, pw := range passwords {
		tests := []struct {
			name   string
			chunks []chunk
			want   []string
		}{{
			name:   "USER/PASS",
			chunks: []chunk{s("+OK ready\r\n"), c("USER probe\r\n"), s("+OK\r\n"), c("PASS " + pw + "\r\n"), s("-ERR [AUTH] no\r\n")},
			want:   []string{"S: +OK ready", "C: USER probe", "S: +OK", "C: PASS [redacted]", "S: -ERR [AUTH] no"},
		}, {
			name:   "APOP",
			chunks: []chunk{c("APOP probe " + pw + "\r\n"), s("+OK\r\n")},
			want:   []string{"C: APOP probe [redacted]", "S: +OK"},
		}, {
			name:   "AUTH PLAIN initial response",
			chunks: []chunk{c("AUTH PLAIN " + b64("\x00probe\x00"+pw) + "\r\n"), s("+OK\r\n"), c("STAT\r\n")},
			want:   []string{"C: AUTH PLAIN [redacted]", "S: +OK", "C: STAT"},
		}, {
			name: "AUTH continuation split",
			chunks: append(append([]chunk{c("AUTH XOAUTH2\r\n"), s("+ \r\n")},
				splitEvery('C', b64("user=probe\x01auth=Bearer "+pw+"\x01\x01")+"\r\n", 5)...),
				s("+ eyJzdGF0dXMiOiI0MDAifQ==\r\n"), c("\r\n"), s("-ERR [AUTH] failed\r\n"), c("QUIT\r\n")),
			want: []string{"C: AUTH XOAUTH2", "S: + ", "C: [redacted]", "S: + eyJzdGF0dXMiOiI0MDAifQ==", "C: [redacted]",
				"S: -ERR [AUTH] failed", "C: QUIT"},
		}}
		for _, tt := range tests {
			t.Run(tt.name+"/"+pw, func(t *testing.T) {
				got := run(t, POP3, tt.chunks...)
				assert.Equal(t, tt.want, got)
				assertNoSecret(t, got, pw)
			})
		}
	}
}

func TestPOP3Bodies(t *testing.T) {
	hdr := "X-Emailqos-Token: abc\r\nSubject: x\r\n\r\n"
	got := run(t, POP3, c("CAPA\r\n"), s("+OK\r\nTOP\r\nUIDL\r\n.\r\n"), c("UIDL\r\n"), s("+OK\r\n1 a\r\n.\r\n"),
		c("TOP 1 0\r\n"), s("+OK\r\n"+hdr+".\r\n"), c("UIDL 1\r\n"), s("+OK 1 a\r\n"), c("QUIT\r\n"))
	assert.Equal(t, []string{"C: CAPA", "S: +OK", "S: TOP", "S: UIDL", "S: .", "C: UIDL", "S: +OK", "S: 1 a", "S: .",
		"C: TOP 1 0", "S: +OK", fmt.Sprintf("S: [%d bytes of message data]", len(hdr)), "S: .", "C: UIDL 1", "S: +OK 1 a",
		"C: QUIT"}, got)
}

func TestIMAPRedactionExactDirection(t *testing.T) {
	for _, pw := range passwords {
		tests := []struct {
			name   string
			chunks []chunk
			want   []string
		}{{
			name:   "LOGIN quoted",
			chunks: []chunk{c(`T1 LOGIN "probe@a.test" ` + quote(pw) + "\r\n"), s("T1 OK done\r\n")},
			want:   []string{`C: T1 LOGIN "probe@a.test" [redacted]`, "S: T1 OK done"},
		}, {
			name:   "LOGIN atom user",
			chunks: []chunk{c("T1 LOGIN probe " + quote(pw) + "\r\n"), s("T1 NO [AUTHENTICATIONFAILED] no\r\n")},
			want:   []string{"C: T1 LOGIN probe [redacted]", "S: T1 NO [AUTHENTICATIONFAILED] no"},
		}, {
			name: "LOGIN literal password",
			chunks: []chunk{c(`T2 LOGIN "probe" {` + fmt.Sprint(len(pw)) + "}\r\n"), s("+ Ready\r\n"), c(pw + "\r\n"),
				s("T2 OK done\r\n"), c("T3 SELECT INBOX\r\n")},
			want: []string{`C: T2 LOGIN "probe" [redacted]`, "S: + Ready", "S: T2 OK done", "C: T3 SELECT INBOX"},
		}, {
			name: "LOGIN literal user and password",
			chunks: []chunk{c("T2 LOGIN {5}\r\n"), s("+ Ready\r\n"), c("pröb {" + fmt.Sprint(len(pw)) + "}\r\n"),
				s("+ Ready\r\n"), c(pw + "\r\n"), s("T2 OK done\r\n")},
			want: []string{"C: T2 LOGIN [redacted]", "S: + Ready", "S: + Ready", "S: T2 OK done"},
		}, {
			name:   "LOGIN non-synchronising literal, one write",
			chunks: []chunk{c("T2 LOGIN probe {" + fmt.Sprint(len(pw)) + "+}\r\n" + pw + "\r\nT3 NOOP\r\n")},
			want:   []string{"C: T2 LOGIN probe [redacted]", "C: T3 NOOP"},
		}, {
			name: "AUTHENTICATE PLAIN with initial response, split",
			chunks: append(splitEvery('C', "T4 AUTHENTICATE PLAIN "+b64("\x00probe\x00"+pw)+"\r\n", 3),
				s("T4 OK [CAPABILITY IMAP4rev1] done\r\n")),
			want: []string{"C: T4 AUTHENTICATE PLAIN [redacted]", "S: T4 OK [CAPABILITY IMAP4rev1] done"},
		}, {
			// The server's tagged reply is teed before its command (the
			// client writes the connection first): both keep their side.
			name: "reply read before its command",
			chunks: []chunk{d("T1 NOOP\r\n"), d("T1 OK done\r\n"), d("T2 ok NOOP completed\r\n"), d("T2 NOOP\r\n"),
				d("T3 O"), d("K done\r\n"), d("T3 NOOP\r\n"), d("T4 SELECT INBOX\r\n")},
			want: []string{"C: T1 NOOP", "S: T1 OK done", "S: T2 ok NOOP completed", "C: T2 NOOP", "S: T3 OK done",
				"C: T3 NOOP", "C: T4 SELECT INBOX"},
		}, {
			name: "AUTHENTICATE continuation",
			chunks: []chunk{c("T4 AUTHENTICATE XOAUTH2\r\n"), s("+ \r\n"),
				c(b64("user=probe\x01auth=Bearer "+pw+"\x01\x01") + "\r\n"), s("+ eyJzdGF0dXMiOiI0MDEifQ==\r\n"), c("\r\n"),
				s("T4 NO [AUTHENTICATIONFAILED] failed\r\n"), c("T5 LOGOUT\r\n")},
			want: []string{"C: T4 AUTHENTICATE XOAUTH2", "S: + ", "C: [redacted]", "S: + eyJzdGF0dXMiOiI0MDEifQ==",
				"C: [redacted]", "S: T4 NO [AUTHENTICATIONFAILED] failed", "C: T5 LOGOUT"},
		}}
		for _, tt := range tests {
			t.Run(tt.name+"/"+pw, func(t *testing.T) {
				got := run(t, IMAP, tt.chunks...)
				assert.Equal(t, tt.want, got)
				assertNoSecret(t, got, pw)
			})
		}
	}
}

// The same conversations through the debug writer, as imapclient writes
// them: the direction is inferred.
func TestIMAPDebugWriterInference(t *testing.T) {
	for _, pw := range passwords {
		n := fmt.Sprint(len(pw))
		tests := []struct {
			name   string
			chunks []chunk
			want   []string
		}{{
			name: "STARTTLS then LOGIN quoted",
			chunks: []chunk{d("* OK [CAPABILITY IMAP4rev1 STARTTLS] hi\r\n"), d("T1 STARTTLS\r\n"), d("T1 OK go\r\n"),
				d("T2 CAPABILITY\r\n"), d("* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\nT2 OK done\r\n"),
				d(`T3 LOGIN "probe" ` + quote(pw) + "\r\n"), d("T3 OK done\r\n")},
			want: []string{"S: * OK [CAPABILITY IMAP4rev1 STARTTLS] hi", "C: T1 STARTTLS", "S: T1 OK go", "C: T2 CAPABILITY",
				"S: * CAPABILITY IMAP4rev1 AUTH=PLAIN", "S: T2 OK done", `C: T3 LOGIN "probe" [redacted]`, "S: T3 OK done"},
		}, {
			name: "LOGIN literals, server reply split",
			chunks: []chunk{d("T1 LOGIN {5}\r\n"), d("+ Re"), d("ady\r\n"), d("pröb {" + n + "}\r\n"), d("+ Ready\r\n"),
				d(pw + "\r\n"), d("T1 OK"), d(" done\r\n"), d("T2 SELECT INBOX\r\n")},
			want: []string{"C: T1 LOGIN [redacted]", "S: + Ready", "S: + Ready", "S: T1 OK done", "C: T2 SELECT INBOX"},
		}, {
			// The server's tagged reply is teed before its command (the
			// client writes the connection first): both keep their side.
			name: "reply read before its command",
			chunks: []chunk{d("T1 NOOP\r\n"), d("T1 OK done\r\n"), d("T2 ok NOOP completed\r\n"), d("T2 NOOP\r\n"),
				d("T3 O"), d("K done\r\n"), d("T3 NOOP\r\n"), d("T4 SELECT INBOX\r\n")},
			want: []string{"C: T1 NOOP", "S: T1 OK done", "S: T2 ok NOOP completed", "C: T2 NOOP", "S: T3 OK done",
				"C: T3 NOOP", "C: T4 SELECT INBOX"},
		}, {
			name: "AUTHENTICATE continuation",
			chunks: []chunk{d("T1 AUTHENTICATE PLAIN\r\n"), d("+ \r\n"), d(b64("\x00probe\x00"+pw) + "\r\n"),
				d("T1 NO [AUTHENTICATIONFAILED] no\r\n")},
			want: []string{"C: T1 AUTHENTICATE PLAIN", "S: + ", "C: [redacted]", "S: T1 NO [AUTHENTICATIONFAILED] no"},
		}, {
			name: "IDLE and FETCH literal",
			chunks: []chunk{d("T1 IDLE\r\n"), d("+ idling\r\n"), d("* 3 EXI"), d("DONE\r\n"), d("STS\r\n"),
				d("T1 OK done\r\n"), d("T2 UID FETCH 7 (BODY.PEEK[HEADER])\r\n"),
				d("* 3 FETCH (UID 7 BODY[HEADER] {12}\r\nSubject: x\r\n"), d(")\r\nT2 OK done\r\n")},
			want: []string{"C: T1 IDLE", "S: + idling", "C: DONE", "S: * 3 EXISTS", "S: T1 OK done",
				"C: T2 UID FETCH 7 (BODY.PEEK[HEADER])", "S: * 3 FETCH (UID 7 BODY[HEADER] {12}",
				"S: [12 bytes of message data]", "S: )", "S: T2 OK done"},
		}}
		for _, tt := range tests {
			t.Run(tt.name+"/"+pw, func(t *testing.T) {
				got := run(t, IMAP, tt.chunks...)
				assert.Equal(t, tt.want, got)
				assertNoSecret(t, got, pw)
			})
		}
	}
}

// A server line arriving between the continuation request and the
// client's literal misleads the inference; the literal must still not be
// kept.
func TestIMAPInferenceMisjudgedStaysRedacted(t *testing.T) {
	pw := "hunter2-literal"
	got := run(t, IMAP, d("T1 LOGIN probe {15}\r\n"), d("+ Ready\r\n"), d("* OK still here\r\n"), d(pw+"\r\n"),
		d("T1 NO [AUTHENTICATIONFAILED] no\r\n"))
	assertNoSecret(t, got, pw)
}

func TestSecretScrubbing(t *testing.T) {
	tr := New(time.Now())
	tr.Secret("probe@a.test", "tok-ABCDEF")
	st := tr.Stream(SMTP)
	st.Received([]byte("550 rejected tok-ABCDEF " + b64("\x00probe@a.test\x00tok-ABCDEF") + "\r\n"))
	assert.Equal(t, []string{"S: 550 rejected [redacted] [redacted]"}, texts(tr))
	// Too short to scrub without mangling ordinary text.
	tr.Secret("u", "ab")
	assert.Len(t, tr.secrets, 5)
}

func TestBounds(t *testing.T) {
	tr := New(time.Now())
	st := tr.Stream(SMTP)
	long := strings.Repeat("x", 3*MaxLineBytes)
	st.Received([]byte("250 " + long + "\r\n"))
	lines := texts(tr)
	require.Len(t, lines, 1)
	assert.Contains(t, lines[0], fmt.Sprintf("...[+%d bytes]", len(long)+4-MaxLineBytes))
	assert.LessOrEqual(t, len(lines[0]), MaxLineBytes+40)

	for i := 0; i < MaxLines+10; i++ {
		st.Sent([]byte("NOOP\r\n"))
	}
	assert.Equal(t, MaxLines, tr.Len())
	last := tr.Last(3)
	require.Len(t, last, 4)
	assert.Equal(t, fmt.Sprintf("[%d earlier lines not shown]", MaxLines+11-3), last[0])
	assert.Regexp(t, `^\+\d+\.\d{3}s smtp C: NOOP$`, last[3])

	// Bytes bound the transcript too.
	tr = New(time.Now())
	st = tr.Stream(POP3)
	for i := 0; i < 2*MaxBytes/MaxLineBytes; i++ {
		st.Received([]byte("+OK " + long + "\r\n"))
	}
	tr.mu.Lock()
	assert.LessOrEqual(t, tr.bytes, MaxBytes)
	assert.Positive(t, tr.dropped)
	tr.mu.Unlock()
}

func TestNilTranscriptCostsNothing(t *testing.T) {
	var tr *Transcript
	st := tr.Stream(IMAP)
	assert.Nil(t, st)
	assert.Nil(t, st.IMAPDebug())
	st.Sent([]byte("x"))
	st.Received([]byte("x"))
	tr.Secret("u", "secret")
	assert.Nil(t, tr.Lines())
	assert.Zero(t, tr.Len())
	a, _ := net.Pipe()
	defer a.Close()
	assert.Same(t, a, st.Conn(a))
}

func TestConnDirections(t *testing.T) {
	tr := New(time.Now())
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	conn := tr.Stream(POP3).Conn(a)
	go func() {
		_, _ = b.Write([]byte("+OK hi\r\n"))
		buf := make([]byte, 64)
		_, _ = b.Read(buf)
	}()
	buf := make([]byte, 64)
	n, err := conn.Read(buf)
	require.NoError(t, err)
	require.Equal(t, "+OK hi\r\n", string(buf[:n]))
	_, err = conn.Write([]byte("PASS secret-pw\r\n"))
	require.NoError(t, err)
	assert.Equal(t, []string{"S: +OK hi", "C: PASS [redacted]"}, texts(tr))
}

func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// assertNoSecret fails if the secret or its base64 appears in any line.
func assertNoSecret(t testing.TB, lines []string, secret string) {
	t.Helper()
	all := strings.Join(lines, "\n")
	for _, form := range []string{secret, b64(secret)} {
		if strings.Contains(all, form) {
			t.Fatalf("secret %q found in transcript:\n%s", form, all)
		}
	}
}
