package gmailtabs

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/emailqos/emailqosreceiver/internal/mailtest"
	"github.com/emailqos/emailqosreceiver/internal/saslx"
	"github.com/emailqos/emailqosreceiver/internal/transcript"
	"github.com/emailqos/emailqosreceiver/internal/transport"
)

// tabBySubject files a message in the tab its Subject names ("primary" and
// anything else: no tab).
func tabBySubject(_ string, msg []byte) string {
	for _, tab := range Tabs {
		if strings.Contains(string(msg), "Subject: "+tab+"\r\n") {
			return tab
		}
	}
	return ""
}

func message(subject string) []byte {
	return []byte("From: x@example.test\r\nTo: " + mailtest.Alice + "\r\nSubject: " + subject + "\r\n\r\nbody\r\n")
}

func gmail(t testing.TB, opts mailtest.Options) *mailtest.Server {
	opts.Personality = mailtest.PersonalityGmail
	opts.Category = tabBySubject
	return mailtest.StartT(t, opts)
}

func plainOpts(srv *mailtest.Server) Options {
	return Options{
		Endpoint:           transport.Endpoint{Address: srv.IMAPAddr(), Security: transport.None},
		Credentials:        saslx.Credentials{Username: mailtest.Alice, Password: mailtest.AlicePassword},
		AllowPlaintextAuth: true,
	}
}

func lookup(t *testing.T, opts Options, uid uint32) (Result, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return Lookup(ctx, opts, uid)
}

// Each tab, and Primary (no tab), read from the Gmail stand-in; the
// messages' flags stay as they were (EXAMINE is read-only).
func TestLookupEachTab(t *testing.T) {
	srv := gmail(t, mailtest.Options{})
	subjects := append([]string{"primary"}, Tabs...)
	for _, s := range subjects {
		require.NoError(t, srv.Append(mailtest.Alice, message(s), nil))
	}
	before, err := srv.Mailbox(mailtest.Alice)
	require.NoError(t, err)
	require.Len(t, before, len(subjects))
	for i, s := range subjects {
		tr := transcript.New(time.Now())
		opts := plainOpts(srv)
		opts.Transcript = tr
		res, err := lookup(t, opts, uint32(before[i].UID))
		require.NoError(t, err, s)
		want := s
		if s == "primary" {
			want = ""
		}
		assert.Equal(t, want, res.Tab, s)
		text := strings.Join(tr.Lines(), "\n")
		assert.Contains(t, text, `EXAMINE "INBOX"`)
		assert.NotRegexp(t, `C: G\d+ SELECT`, text)
		assert.Contains(t, text, "[READ-ONLY]")
		assert.Contains(t, text, fmt.Sprintf(`UID SEARCH UID %d X-GM-RAW "category:primary"`, before[i].UID))
		// LOGIN, EXAMINE, the searches up to the hit (Primary first),
		// LOGOUT (the greeting carries the capabilities).
		assert.Equal(t, 3+i+1, res.Commands, s)
	}
	after, err := srv.Mailbox(mailtest.Alice)
	require.NoError(t, err)
	require.Len(t, after, len(before))
	for i := range before {
		assert.Equal(t, before[i].Flags, after[i].Flags, "flags unchanged")
		assert.NotContains(t, after[i].Flags, imap.FlagSeen)
	}
	assert.Zero(t, srv.Sessions(mailtest.Alice), "logged out")
}

// A message no category names (Gmail's search has not categorised it) is
// asked for twice, a second apart, then reported as such: never as Primary.
func TestLookupUncategorised(t *testing.T) {
	srv := mailtest.StartT(t, mailtest.Options{Personality: mailtest.PersonalityGmail,
		Category: func(string, []byte) string { return "unindexed" }})
	require.NoError(t, srv.Append(mailtest.Alice, message("x"), nil))
	start := time.Now()
	res, err := lookup(t, plainOpts(srv), 1)
	require.ErrorIs(t, err, ErrUncategorised)
	var e *Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, StepSearch, e.Step)
	assert.Empty(t, res.Tab)
	assert.Equal(t, 3+2*len(categories), res.Commands, "every category, twice")
	assert.GreaterOrEqual(t, time.Since(start), retryPause)
}

func TestLookupOverTLS(t *testing.T) {
	srv := gmail(t, mailtest.Options{TLS: true})
	require.NoError(t, srv.Append(mailtest.Alice, message("social"), nil))
	for _, ep := range []transport.Endpoint{
		{Address: srv.IMAPAddr(), Security: transport.STARTTLS, TLSConfig: srv.ClientTLSConfig()},
		{Address: srv.IMAPSAddr(), Security: transport.TLS, TLSConfig: srv.ClientTLSConfig()},
	} {
		opts := plainOpts(srv)
		opts.Endpoint, opts.AllowPlaintextAuth = ep, false
		res, err := lookup(t, opts, 1)
		require.NoError(t, err, ep.Security)
		assert.Equal(t, "social", res.Tab, ep.Security)
	}
}

func TestLookupXOAUTH2(t *testing.T) {
	const good, bad = "good-token-1234", "bad-token-5678"
	srv := gmail(t, mailtest.Options{BearerCheck: func(_, token string) bool { return token == good }})
	require.NoError(t, srv.Append(mailtest.Alice, message("updates"), nil))
	opts := plainOpts(srv)
	opts.Password = ""
	opts.Token = func(context.Context) (string, error) { return good, nil }
	tr := transcript.New(time.Now())
	tr.Secret(mailtest.Alice, good)
	opts.Transcript = tr
	res, err := lookup(t, opts, 1)
	require.NoError(t, err)
	assert.Equal(t, "updates", res.Tab)
	assert.Contains(t, strings.Join(tr.Lines(), "\n"), "AUTHENTICATE XOAUTH2")

	opts.Token = func(context.Context) (string, error) { return bad, nil }
	tr = transcript.New(time.Now())
	opts.Transcript = tr
	_, err = lookup(t, opts, 1)
	var e *Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, StepLogin, e.Step)
	assert.Contains(t, err.Error(), "token rejected", "the server's error challenge is explained")
	assertNoSecret(t, err.Error(), tr, bad, mailtest.Alice)

	opts.Token = func(context.Context) (string, error) { return "", errors.New("token endpoint down") }
	_, err = lookup(t, opts, 1)
	require.ErrorAs(t, err, &e)
	assert.Equal(t, StepLogin, e.Step)
}

// assertNoSecret checks an error and a transcript for a secret in every
// form it was sent in.
func assertNoSecret(t *testing.T, errText string, tr *transcript.Transcript, secret, user string) {
	t.Helper()
	text := errText + "\n" + strings.Join(tr.Lines(), "\n")
	for _, form := range []string{secret, b64(secret), b64("\x00" + user + "\x00" + secret), b64("user=" + user + "\x01auth=Bearer " + secret + "\x01\x01")} {
		assert.NotContains(t, text, form)
	}
}

func TestLookupWrongPassword(t *testing.T) {
	srv := gmail(t, mailtest.Options{})
	require.NoError(t, srv.Append(mailtest.Alice, message("forums"), nil))
	opts := plainOpts(srv)
	opts.Password = `wrong "pw" \ here`
	tr := transcript.New(time.Now())
	opts.Transcript = tr
	res, err := lookup(t, opts, 1)
	var e *Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, StepLogin, e.Step)
	assert.Contains(t, err.Error(), "server answered NO")
	assert.Equal(t, 1, res.Commands)
	assertNoSecret(t, err.Error(), tr, opts.Password, mailtest.Alice)
	assert.Contains(t, strings.Join(tr.Lines(), "\n"), "LOGIN "+`"`+mailtest.Alice+`" [redacted]`)
}

func TestLookupRefusesPlaintextCredentials(t *testing.T) {
	srv := gmail(t, mailtest.Options{})
	opts := plainOpts(srv)
	opts.AllowPlaintextAuth = false
	tr := transcript.New(time.Now())
	opts.Transcript = tr
	_, err := lookup(t, opts, 1)
	var e *Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, StepLogin, e.Step)
	assert.Contains(t, err.Error(), "unencrypted")
	assert.NotContains(t, strings.Join(tr.Lines(), "\n"), "LOGIN")
	assert.Zero(t, srv.Logins(mailtest.Alice))
}

func TestLookupUIDValidityChanged(t *testing.T) {
	srv := gmail(t, mailtest.Options{})
	require.NoError(t, srv.Append(mailtest.Alice, message("social"), nil))
	opts := plainOpts(srv)
	opts.UIDValidity = 4242
	_, err := lookup(t, opts, 1)
	var e *Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, StepExamine, e.Step)
	assert.Contains(t, err.Error(), "UIDVALIDITY")
}

func TestLookupNoUID(t *testing.T) {
	_, err := Lookup(context.Background(), Options{}, 0)
	var e *Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, StepSearch, e.Step)
}

func TestArgument(t *testing.T) {
	for in, want := range map[string]string{
		"category:promotions": `"category:promotions"`,
		`a"b\c`:               `"a\"b\\c"`,
		"":                    `""`,
	} {
		got, err := argument("x", in)
		require.NoError(t, err, in)
		assert.Equal(t, want, got)
	}
	for _, in := range []string{"a\rb", "a\nb", "a\x00b"} {
		_, err := argument("password", in)
		require.ErrorIs(t, err, errControl)
		assert.Equal(t, "password contains CR, LF or NUL", err.Error(), "names the field, not the value")
	}
	_, err := argument("password", "pässword")
	require.ErrorIs(t, err, errEightBit)
	assert.NotContains(t, err.Error(), "pässword")
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// BenchmarkLookup is one lookup against the in-process Gmail stand-in on
// loopback, for a message in Primary (one search) and in Forums (five):
// the session's own cost, without a real server's round trips.
func BenchmarkLookup(b *testing.B) {
	srv := gmail(b, mailtest.Options{})
	require.NoError(b, srv.Append(mailtest.Alice, message("primary"), nil))
	require.NoError(b, srv.Append(mailtest.Alice, message("forums"), nil))
	for _, c := range []struct {
		name string
		uid  uint32
	}{{"primary", 1}, {"forums", 2}} {
		b.Run(c.name, func(b *testing.B) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Lookup(ctx, plainOpts(srv), c.uid); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
