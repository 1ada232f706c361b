package dsn

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestGlobalReport reads RFC 6533's internationalised report: a
// message/global-delivery-status part and the original as message/global,
// which, unlike message/rfc822, may be base64-encoded (RFC 6532 section 3.5).
func TestGlobalReport(t *testing.T) {
	p, msg := newProbe(t, testKey)
	for _, returned := range []string{"message/global-headers", "message/global"} {
		t.Run(returned, func(t *testing.T) {
			n := string(sample(t, "postfix-failed", msg, p.Token, p.Token))
			n = strings.Replace(n, "Content-Type: message/delivery-status", "Content-Type: message/global-delivery-status", 1)
			body := headerOf(msg)
			if returned == "message/global" {
				body = msg
			}
			enc := base64.StdEncoding.EncodeToString(body)
			i := strings.Index(n, "Content-Type: text/rfc822-headers")
			end := strings.LastIndex(n, "\r\n--")
			n = n[:i] + "Content-Type: " + returned + "\r\nContent-Transfer-Encoding: base64\r\n\r\n" + enc + n[end:]
			r, err := Parse([]byte(n))
			require.NoError(t, err)
			rc, ok := r.Failed()
			require.True(t, ok)
			assert.Equal(t, "5.7.1", rc.Status)
			_, err = r.Verify(testKey, p.Token)
			require.NoError(t, err)
		})
	}
}

// TestDeepNesting hides a deeply nested multipart in the human-readable
// part and in the returned message: Parse reads neither, so it stays fast
// and the report is still read.
func TestDeepNesting(t *testing.T) {
	p, msg := newProbe(t, testKey)
	const depth = 10000
	var nest strings.Builder
	for i := 0; i < depth; i++ {
		fmt.Fprintf(&nest, "Content-Type: multipart/mixed; boundary=\"n%d\"\r\n\r\n--n%d\r\n", i, i)
	}
	nest.WriteString("Content-Type: text/plain\r\n\r\nbottom\r\n")
	for i := depth - 1; i >= 0; i-- {
		fmt.Fprintf(&nest, "--n%d--\r\n", i)
	}
	n := string(sample(t, "postfix-failed", msg, p.Token, p.Token))
	n = strings.Replace(n, "Content-Description: Notification\r\nContent-Type: text/plain; charset=utf-8\r\n", nest.String()+"\r\n", 1)
	require.Less(t, len(n), MaxSize)
	start := time.Now()
	r, err := Parse([]byte(n))
	require.NoError(t, err)
	_, err = r.Verify(testKey, p.Token)
	require.NoError(t, err)
	// Generous bound for a busy machine; a recursive reader would take
	// far longer or exhaust the stack.
	assert.Less(t, time.Since(start), 5*time.Second)
}

func TestHeaderCaps(t *testing.T) {
	p, msg := newProbe(t, testKey)
	good := sample(t, "postfix-failed", msg, p.Token, p.Token)

	// A top-level header over MaxHeaderBytes is not read.
	filler := strings.Repeat("X-Filler: "+strings.Repeat("a", 900)+"\r\n", MaxHeaderBytes/912+1)
	_, err := Parse(append([]byte(filler), good...))
	assert.ErrorIs(t, err, ErrNotDSN)
	// The same notice with a header just under the cap is read.
	_, err = Parse(append([]byte(filler[:len(filler)-2*912]), good...))
	assert.NoError(t, err)

	// Returned headers over MaxHeaderBytes are refused, not truncated.
	received := bytes.Repeat([]byte("Received: from x by y; Sat, 5 Dec 2026 18:00:00 +0000\r\n"), MaxHeaderBytes/50)
	huge := bytes.Replace(good, []byte("Return-Path: <alice@a.test>\r\n"), received, 1)
	_, err = Parse(huge)
	assert.ErrorIs(t, err, ErrMalformed)
	assert.ErrorContains(t, err, "returned headers")

	// Too many recipients.
	var rcpts strings.Builder
	for i := 0; i <= MaxRecipients; i++ {
		fmt.Fprintf(&rcpts, "Final-Recipient: rfc822; u%d@b.test\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n", i)
	}
	many := bytes.Replace(good, []byte("Final-Recipient: rfc822; bob@b.test\r\n"), []byte(rcpts.String()+"Final-Recipient: rfc822; bob@b.test\r\n"), 1)
	_, err = Parse(many)
	assert.ErrorIs(t, err, ErrMalformed)
	assert.ErrorContains(t, err, "recipients")
}

func BenchmarkParse(b *testing.B) {
	p, msg := newProbe(b, testKey)
	for _, name := range []string{"postfix-failed", "gmail-failed", "exchange-failed"} {
		n := sample(b, name, msg, p.Token, p.Token)
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(n)))
			for b.Loop() {
				r, err := Parse(n)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := r.Verify(testKey, p.Token); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	// The worst accepted size: a notice padded to MaxSize in its human part.
	good := string(sample(b, "postfix-failed", msg, p.Token, p.Token))
	pad := strings.Repeat(strings.Repeat("x", 76)+"\r\n", (MaxSize-len(good))/78-1)
	n := []byte(strings.Replace(good, "The mail system\r\n", "The mail system\r\n"+pad, 1))
	b.Run("max-size", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(n)))
		for b.Loop() {
			if _, err := Parse(n); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestErrorsQuoteNoNoticeText: a notice's text never reaches an error, so
// whoever sends one cannot write into the collector's logs through it.
func TestErrorsQuoteNoNoticeText(t *testing.T) {
	const mark = "INJECTED\x1b[2Ktext"
	p, msg := newProbe(t, testKey)
	good := sample(t, "postfix-failed", msg, p.Token, p.Token)
	for name, n := range map[string][]byte{
		"top header":      append([]byte(mark+"\r\n"), good...),
		"action":          bytes.Replace(good, []byte("Action: failed"), []byte("Action: "+mark), 1),
		"part header":     bytes.Replace(good, []byte("Content-Description: Delivery report\r\n"), []byte(mark+"\r\n"), 1),
		"returned header": bytes.Replace(good, []byte("Return-Path: <alice@a.test>\r\n"), []byte(mark+"\r\n"), 1),
	} {
		r, err := Parse(n)
		if err == nil {
			_, err = r.Verify(testKey, p.Token)
		}
		require.Error(t, err, name)
		assert.NotContains(t, err.Error(), "INJECTED", name)
	}
}
