package dsn

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/emailqos/emailqosreceiver/internal/probemsg"
)

var (
	testKey  = probemsg.DeriveKey([]byte("dsn test secret"), "bob@b.test")
	otherKey = probemsg.DeriveKey([]byte("dsn test secret"), "carol@c.test")
)

// newProbe builds a real probe message with key.
func newProbe(t testing.TB, key []byte) (probemsg.Probe, []byte) {
	t.Helper()
	p, err := probemsg.New("alice@a.test", "bob@b.test", "a:b", time.Date(2026, 12, 5, 18, 0, 0, 0, time.UTC))
	require.NoError(t, err)
	return p, p.Build(key)
}

// headerOf returns a message's header block without the blank line.
func headerOf(msg []byte) []byte {
	h, _, _ := bytes.Cut(msg, []byte("\r\n\r\n"))
	return append(h, "\r\n"...)
}

// sample fills a testdata template: {{HEADERS}} with the probe's header
// block, {{MESSAGE}} with the whole probe, {{TOKEN}} and {{ENVID}} with
// envid. Line ends become CRLF, as on the wire.
func sample(t testing.TB, name string, msg []byte, token, envid string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name+".eml.tmpl"))
	require.NoError(t, err)
	s := strings.ReplaceAll(string(b), "\r\n", "\n")
	s = strings.ReplaceAll(s, "\n", "\r\n")
	s = strings.ReplaceAll(s, "{{HEADERS}}", string(headerOf(msg)))
	s = strings.ReplaceAll(s, "{{MESSAGE}}", string(msg))
	s = strings.ReplaceAll(s, "{{TOKEN}}", token)
	s = strings.ReplaceAll(s, "{{ENVID}}", envid)
	return []byte(s)
}

func TestProviderSamples(t *testing.T) {
	for _, tc := range []struct {
		name      string
		action    Action
		status    string
		reply     int
		envid     bool
		recipient string
		mta       string
	}{
		{"postfix-failed", ActionFailed, "5.7.1", 554, true, "bob@b.test", "mx.a.test"},
		{"postfix-delayed", ActionDelayed, "4.3.0", 451, true, "bob@b.test", "mx.a.test"},
		{"gmail-failed", ActionFailed, "5.1.1", 550, false, "bob@b.test", "googlemail.com"},
		{"exchange-failed", ActionFailed, "5.1.10", 550, true, "bob@b.test", "AM0PR01MB1234.eurprd01.prod.exchangelabs.com"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, msg := newProbe(t, testKey)
			envid := ""
			if tc.envid {
				envid = p.Token
			}
			r, err := Parse(sample(t, tc.name, msg, p.Token, envid))
			require.NoError(t, err)
			require.Len(t, r.Recipients, 1)
			rc := r.Recipients[0]
			assert.Equal(t, tc.action, rc.Action)
			assert.Equal(t, tc.status, rc.Status)
			assert.Equal(t, tc.reply, rc.ReplyCode)
			assert.Equal(t, tc.recipient, rc.FinalRecipient)
			assert.Equal(t, tc.mta, r.ReportingMTA)
			assert.Equal(t, envid, r.OriginalEnvelopeID)
			assert.False(t, r.ArrivalDate.IsZero(), "Arrival-Date")
			_, failed := r.Failed()
			_, delayed := r.Delayed()
			assert.Equal(t, tc.action == ActionFailed, failed)
			assert.Equal(t, tc.action == ActionDelayed, delayed)

			got, err := r.Verify(testKey, p.Token)
			require.NoError(t, err)
			assert.Equal(t, p.Token, got.Token)
			assert.True(t, p.SentAt.Equal(got.SentAt))

			// The same notice proves nothing with another account's key,
			// nor about another probe.
			_, err = r.Verify(otherKey, p.Token)
			assert.ErrorIs(t, err, probemsg.ErrBadMAC)
			other, _ := newProbe(t, testKey)
			_, err = r.Verify(testKey, other.Token)
			assert.ErrorIs(t, err, ErrOtherProbe)
		})
	}
}

func TestArrivalDate(t *testing.T) {
	p, msg := newProbe(t, testKey)
	r, err := Parse(sample(t, "postfix-failed", msg, p.Token, p.Token))
	require.NoError(t, err)
	assert.Equal(t, time.Date(2026, 12, 5, 18, 0, 0, 0, time.UTC), r.ArrivalDate)
}

// TestVerdicts covers the notices that must not be taken as this probe's,
// and the malformed ones, each with its expected verdict.
func TestVerdicts(t *testing.T) {
	p, msg := newProbe(t, testKey)
	good := sample(t, "postfix-failed", msg, p.Token, p.Token)

	// A forged copy: the probe's token and send time, a MAC made up.
	forgedMsg := bytes.Replace(msg, []byte(probemsg.MACHeader+": "), []byte(probemsg.MACHeader+": 00"), 1)
	forged := sample(t, "postfix-failed", forgedMsg, p.Token, p.Token)

	ordinary := []byte("From: <alice@a.test>\r\nTo: <bob@b.test>\r\nSubject: lunch\r\nMessage-ID: <x@a.test>\r\n\r\nhi\r\n")
	notProbe := sample(t, "postfix-failed", ordinary, p.Token, "")

	// A bounce of a bounce: the returned message is itself a notice about
	// the probe; the outer notice is about that notice, not the probe.
	inner := sample(t, "postfix-failed", msg, p.Token, p.Token)
	nested := sample(t, "gmail-failed", inner, p.Token, "")

	// A forwarded notice: the report is not the top-level content.
	forwarded := []byte("From: <carol@c.test>\r\nTo: <alice@a.test>\r\nSubject: Fwd\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=\"fw\"\r\n\r\n--fw\r\nContent-Type: text/plain\r\n\r\nsee below\r\n" +
		"--fw\r\nContent-Type: message/rfc822\r\n\r\n" + string(good) + "\r\n--fw--\r\n")

	// A probe message itself, and a report of another type.
	mdn := bytes.Replace(good, []byte("report-type=delivery-status"), []byte("report-type=disposition-notification"), 1)

	// An envelope id naming another probe than the verified headers.
	other, _ := newProbe(t, testKey)
	mismatch := sample(t, "postfix-failed", msg, p.Token, other.Token)

	noHeaders := removePart(t, good, "text/rfc822-headers")
	twoReturned := addPart(good, "Content-Type: text/rfc822-headers\r\n\r\n"+string(headerOf(msg)))
	noStatus := removePart(t, good, "message/delivery-status")
	badAction := bytes.Replace(good, []byte("Action: failed"), []byte("Action: exploded"), 1)
	noAction := bytes.Replace(good, []byte("Action: failed\r\n"), nil, 1)

	cut := bytes.Index(good, []byte("Final-Recipient"))
	truncated := good[:cut]

	huge := append(bytes.Clone(good), bytes.Repeat([]byte("x"), MaxSize)...)
	var many bytes.Buffer
	many.WriteString("MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n")
	for i := 0; i < MaxParts+1; i++ {
		many.WriteString("--b\r\nContent-Type: text/plain\r\n\r\nx\r\n")
	}
	many.WriteString("--b--\r\n")

	for _, tc := range []struct {
		name     string
		notice   []byte
		parseErr error // expected Parse error
		probeErr error // expected Verify error when Parse succeeds
	}{
		{"genuine", good, nil, nil},
		{"probe message itself", msg, ErrNotDSN, nil},
		{"not a probe", notProbe, nil, probemsg.ErrNotProbe},
		{"forged MAC with matching envelope id", forged, nil, probemsg.ErrBadMAC},
		{"nested report", nested, nil, probemsg.ErrNotProbe},
		{"forwarded report", forwarded, ErrNotDSN, nil},
		{"disposition notification", mdn, ErrNotDSN, nil},
		{"envelope id of another probe", mismatch, nil, ErrEnvelopeMismatch},
		{"no returned headers", noHeaders, nil, ErrNoReturnedHeaders},
		{"two returned messages", twoReturned, ErrMalformed, nil},
		{"no delivery-status part", noStatus, ErrMalformed, nil},
		{"unknown action", badAction, ErrMalformed, nil},
		{"no action", noAction, ErrMalformed, nil},
		{"truncated", truncated, ErrMalformed, nil},
		{"huge", huge, ErrTooLarge, nil},
		{"too many parts", many.Bytes(), ErrMalformed, nil},
		{"empty", nil, ErrNotDSN, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Parse(tc.notice)
			if tc.parseErr != nil {
				require.ErrorIs(t, err, tc.parseErr)
				assert.Nil(t, r)
				return
			}
			require.NoError(t, err)
			_, err = r.Verify(testKey, p.Token)
			if tc.probeErr == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tc.probeErr)
			_, err = r.Probe(testKey)
			require.Error(t, err, "Probe must refuse what Verify refuses")
		})
	}
}

// TestHumanPartNotTrusted puts a genuine probe's headers only in the
// human-readable part: the notice proves nothing.
func TestHumanPartNotTrusted(t *testing.T) {
	p, msg := newProbe(t, testKey)
	good := sample(t, "postfix-failed", msg, p.Token, p.Token)
	n := removePart(t, good, "text/rfc822-headers")
	n = bytes.Replace(n, []byte("The mail system\r\n"), append([]byte("The mail system\r\n\r\n"), headerOf(msg)...), 1)
	r, err := Parse(n)
	require.NoError(t, err)
	_, err = r.Verify(testKey, p.Token)
	assert.ErrorIs(t, err, ErrNoReturnedHeaders)
}

func TestReplyCodeAndStatus(t *testing.T) {
	for v, want := range map[string]int{
		"smtp; 550 5.1.1 no":      550,
		"SMTP;421-4.7.0 try":      421,
		"smtp; 5501 x":            0,
		"x-unix; 550 5.1.1":       0,
		"smtp; 650 x":             0,
		"smtp;":                   0,
		"smtp; 55":                0,
		"smtp; 25a":               0,
		"smtp;\t452\t4.2.2 quota": 452,
	} {
		assert.Equal(t, want, replyCode(v), v)
	}
	assert.Equal(t, "a+b=c", decodeXtext("a+2Bb+3Dc"))
	assert.Equal(t, "a+zz", decodeXtext("a+zz"))
}

// removePart drops the part of content type ct from a sample.
func removePart(t *testing.T, notice []byte, ct string) []byte {
	t.Helper()
	s := string(notice)
	i := strings.Index(s, "Content-Type: "+ct)
	require.GreaterOrEqual(t, i, 0, ct)
	start := strings.LastIndex(s[:i], "\r\n--")
	end := strings.Index(s[i:], "\r\n--")
	require.True(t, start >= 0 && end >= 0)
	return []byte(s[:start] + s[i+end:])
}

// addPart adds a part before the closing boundary of a Postfix sample.
func addPart(notice []byte, part string) []byte {
	const b = "--4R1x2Y3Z4bz9sWq.1764957601/mx.a.test"
	return bytes.Replace(notice, []byte(b+"--"), []byte(b+"\r\n"+part+"\r\n"+b+"--"), 1)
}
