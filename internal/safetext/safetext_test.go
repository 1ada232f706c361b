package safetext

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func TestEscape(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain text: 250 2.0.0 Ok", "plain text: 250 2.0.0 Ok"},
		{`C:\path and "quotes"`, `C:\path and "quotes"`},
		{"héllo wörld, 日本語", "héllo wörld, 日本語"},
		{"a\r\nb", `a\r\nb`},
		{"bell\a", `bell\x07`},
		{"\x1b[2K\x1b[1Aresult: OK", `\x1b[2K\x1b[1Aresult: OK`},
		{"nul\x00tab\t", `nul\x00tab\t`},
		{"del\x7f", `del\x7f`},
		{"c1 \u009b31m \u0085", `c1 \u009b31m \u0085`},
		{"raw 8-bit CSI \x9b", `raw 8-bit CSI \x9b`},
		{"bidi \u202eKO\u202c \u2066x\u2069 \u200e\u200f\u061c", `bidi \u202eKO\u202c \u2066x\u2069 \u200e\u200f\u061c`},
		{"lsep\u2028psep\u2029", `lsep\u2028psep\u2029`},
		{"", ""},
	} {
		if got := Escape(tc.in); got != tc.want {
			t.Errorf("Escape(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestEscapeLeavesNothingActive checks every rune up to U+FFFF and every
// byte: the output never holds a control, a bidi control or invalid UTF-8.
func TestEscapeLeavesNothingActive(t *testing.T) {
	var b strings.Builder
	for r := rune(0); r <= 0xffff; r++ {
		if r >= 0xd800 && r <= 0xdfff {
			continue
		}
		b.WriteRune(r)
	}
	for c := 0x80; c <= 0xff; c++ {
		b.WriteByte(byte(c))
	}
	out := Escape(b.String())
	for i, r := range out {
		if r == 0xfffd && !strings.HasPrefix(out[i:], "\ufffd") {
			t.Fatalf("invalid UTF-8 at %d", i)
		}
		if unsafeRune(r, len(string(r))) {
			t.Fatalf("unsafe rune %U left at %d", r, i)
		}
	}
}

func TestLogger(t *testing.T) {
	var buf bytes.Buffer
	for _, enc := range []zapcore.Encoder{
		zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()),
		zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()),
	} {
		buf.Reset()
		l := Logger(zap.New(zapcore.NewCore(enc, zapcore.AddSync(&buf), zapcore.DebugLevel)))
		hostile := "x\u202e\x1b[2K\r\u009bfake"
		l.With(zap.String("with", hostile)).Warn("msg "+hostile,
			zap.String("s", hostile),
			zap.Error(errors.New(hostile)),
			zap.Strings("lines", []string{hostile, "ok"}),
			zap.ByteString("b", []byte(hostile)),
		)
		out := buf.String()
		if strings.ContainsAny(strings.TrimSuffix(out, "\n"), "\x1b\r\n\u202e\u009b") {
			t.Errorf("log line holds raw controls: %q", out)
		}
		if n := strings.Count(out, "fake"); n != 6 {
			t.Errorf("want the text kept 6 times, got %d: %s", n, out)
		}
	}
}
