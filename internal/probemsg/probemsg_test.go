package probemsg

import (
	"bytes"
	"errors"
	"io"
	"net/mail"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var (
	testKey = DeriveKey([]byte("secret"), "bob@b.test")
	sentAt  = time.Date(2025, 3, 4, 5, 6, 7, 123456789, time.FixedZone("X", 3600))
)

func newProbe(t testing.TB) Probe {
	t.Helper()
	p, err := New("alice@a.test", "bob@b.test", "a:b", sentAt)
	require.NoError(t, err)
	return p
}

func TestNewToken(t *testing.T) {
	re := regexp.MustCompile(`^eq[a-z2-7]{26}$`)
	seen := map[string]bool{}
	for range 100 {
		p := newProbe(t)
		assert.Regexp(t, re, p.Token)
		assert.False(t, seen[p.Token], "tokens are unique")
		seen[p.Token] = true
	}
	p := newProbe(t)
	assert.Equal(t, time.UTC, p.SentAt.Location())
	assert.True(t, p.SentAt.Equal(sentAt))
}

func TestNewRejectsUnsafeInput(t *testing.T) {
	for _, tc := range []struct{ from, to, target string }{
		{"alice@a.test\r\nBcc: x@y.test", "bob@b.test", "t"},
		{"alice@a.test", "bob@b.test\n", "t"},
		{"Alice <alice@a.test>", "bob@b.test", "t"},
		{"not an address", "bob@b.test", "t"},
		{"alice@a.test", "bob@b.test", "t\r\nBcc: x@y.test"},
		{"alice@a.test", "bob@b.test", "bad\xffutf8"},
	} {
		_, err := New(tc.from, tc.to, tc.target, sentAt)
		assert.Error(t, err, "%q %q %q", tc.from, tc.to, tc.target)
	}
}

func TestBuildIsValidMessage(t *testing.T) {
	p := newProbe(t)
	raw := p.Build(testKey)
	assert.NotContains(t, strings.ReplaceAll(string(raw), "\r\n", ""), "\n", "every line ends in CRLF")
	m, err := mail.ReadMessage(bytes.NewReader(raw))
	require.NoError(t, err)
	h := m.Header
	assert.Equal(t, "<alice@a.test>", h.Get("From"))
	assert.Equal(t, "<bob@b.test>", h.Get("To"))
	assert.Equal(t, "<"+p.Token+"@emailqos.invalid>", h.Get("Message-Id"))
	assert.Equal(t, "emailqos probe "+p.Token, h.Get("Subject"))
	assert.Equal(t, "1.0", h.Get("Mime-Version"))
	assert.True(t, strings.HasPrefix(h.Get("Content-Type"), "text/plain"))
	assert.Equal(t, p.Token, h.Get(TokenHeader))
	assert.Equal(t, "2025-03-04T04:06:07.123456789Z", h.Get(SentHeader))
	assert.Regexp(t, `^[0-9a-f]{64}$`, h.Get(MACHeader))
	d, err := h.Date()
	require.NoError(t, err)
	assert.True(t, d.Equal(sentAt.Truncate(time.Second)))
	body, err := io.ReadAll(m.Body)
	require.NoError(t, err)
	assert.Contains(t, string(body), "safe to delete")
}

func TestBuildSanitisesHandMadeProbe(t *testing.T) {
	p := Probe{
		Token:  "eq\r\nBcc: victim@x.test",
		SentAt: sentAt,
		From:   "alice@a.test\r\nBcc: victim@x.test",
		To:     "bob@b.test",
		Target: "t\r\nBcc: victim@x.test\r\n\r\nbody",
	}
	m, err := mail.ReadMessage(bytes.NewReader(p.Build(testKey)))
	require.NoError(t, err)
	assert.Empty(t, m.Header.Get("Bcc"))
	for k, vs := range m.Header {
		for _, v := range vs {
			assert.NotContains(t, v, "\n", k)
			assert.NotContains(t, v, "\r", k)
		}
	}
}

func TestParseRoundTrip(t *testing.T) {
	p, err := New("alice@a.test", "bob@b.test", "transit Ünïcødé "+strings.Repeat("x", 200), sentAt)
	require.NoError(t, err)
	raw := p.Build(testKey)
	headerOnly := raw[:bytes.Index(raw, []byte("\r\n\r\n"))+2]
	relayed := append([]byte("Received: from mx.b.test by mx.b.test;\r\n\tMon, 3 Mar 2025 00:00:00 +0000\r\nX-Spam: no\r\n"), raw...)
	lf := bytes.ReplaceAll(raw, []byte("\r\n"), []byte("\n"))
	for name, in := range map[string][]byte{"message": raw, "header": headerOnly, "relayed": relayed, "lf": lf} {
		t.Run(name, func(t *testing.T) {
			got, err := Parse(in, testKey)
			require.NoError(t, err)
			assert.Equal(t, p.Token, got.Token)
			assert.True(t, got.SentAt.Equal(p.SentAt))
			assert.Equal(t, p.SentAt, got.SentAt)
			assert.Equal(t, "alice@a.test", got.From)
			assert.Equal(t, "bob@b.test", got.To)
			assert.True(t, strings.HasPrefix(p.Target, got.Target), "target is truncated, not altered")
			assert.True(t, strings.HasPrefix(got.Target, "transit Ünïcødé xxx"))
		})
	}
}

func TestParseErrors(t *testing.T) {
	p := newProbe(t)
	raw := string(p.Build(testKey))
	macLine := regexp.MustCompile(`X-Emailqos-Mac: [0-9a-f]+`)
	sentLine := regexp.MustCompile(`X-Emailqos-Sent: \S+`)
	for _, tc := range []struct {
		name string
		in   string
		key  []byte
		want error
	}{
		{"not a probe", "From: a@b.test\r\nSubject: hi\r\n\r\nbody", testKey, ErrNotProbe},
		{"empty", "", testKey, ErrNotProbe},
		{"wrong key", raw, DeriveKey([]byte("secret"), "carol@c.test"), ErrBadMAC},
		{"no mac", macLine.ReplaceAllString(raw, "X-Other: 1"), testKey, ErrBadMAC},
		{"mac not hex", macLine.ReplaceAllString(raw, "X-Emailqos-Mac: zz"), testKey, ErrBadMAC},
		{"time changed", sentLine.ReplaceAllString(raw, "X-Emailqos-Sent: 2025-03-04T04:06:08.123456789Z"), testKey, ErrBadMAC},
		{"time malformed", sentLine.ReplaceAllString(raw, "X-Emailqos-Sent: yesterday"), testKey, ErrMalformed},
		{"token changed", strings.Replace(raw, TokenHeader+": "+p.Token, TokenHeader+": eq"+strings.Repeat("a", 26), 1), testKey, ErrBadMAC},
		{"token malformed", strings.Replace(raw, TokenHeader+": "+p.Token, TokenHeader+": EQ!", 1), testKey, ErrMalformed},
		{"garbage", "\x00\x01 nonsense without colon\r\n", testKey, ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.in), tc.key)
			assert.ErrorIs(t, err, tc.want)
		})
	}
}

func TestDeriveKey(t *testing.T) {
	a := DeriveKey([]byte("s"), "bob@b.test")
	assert.Len(t, a, 32)
	assert.Equal(t, a, DeriveKey([]byte("s"), "bob@b.test"))
	assert.NotEqual(t, a, DeriveKey([]byte("s"), "carol@c.test"))
	assert.NotEqual(t, a, DeriveKey([]byte("t"), "bob@b.test"))
	assert.Len(t, DeriveKey(nil, ""), 32)
}

func FuzzParse(f *testing.F) {
	p, err := New("alice@a.test", "bob@b.test", "a:b", sentAt)
	require.NoError(f, err)
	raw := p.Build(testKey)
	f.Add(raw)
	f.Add(raw[:bytes.Index(raw, []byte("\r\n\r\n"))])
	f.Add([]byte("X-Emailqos-Token: eqaaaaaaaaaaaaaaaaaaaaaaaaaa\r\nX-Emailqos-Sent: 2025-01-01T00:00:00Z\r\n"))
	f.Add([]byte(" leading space\r\n"))
	f.Add([]byte("X-Emailqos-Target: =?utf-8?q?=FF?=\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := Parse(in, testKey)
		if err != nil {
			if !errors.Is(err, ErrNotProbe) && !errors.Is(err, ErrBadMAC) && !errors.Is(err, ErrMalformed) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		// Anything accepted must rebuild into a message that parses to the
		// same probe.
		again, err := Parse(got.Build(testKey), testKey)
		if err != nil || again.Token != got.Token || !again.SentAt.Equal(got.SentAt) {
			t.Fatalf("rebuilt probe does not parse back: %v", err)
		}
	})
}

func BenchmarkBuild(b *testing.B) {
	p := newProbe(b)
	b.ReportAllocs()
	for b.Loop() {
		_ = p.Build(testKey)
	}
}

func BenchmarkParse(b *testing.B) {
	raw := newProbe(b).Build(testKey)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(raw, testKey); err != nil {
			b.Fatal(err)
		}
	}
}
