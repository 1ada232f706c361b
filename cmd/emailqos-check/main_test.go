package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/emailqos/emailqosreceiver"
	"github.com/emailqos/emailqosreceiver/internal/mailtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	gmailPW = "gmail-secret-pw"
	o365PW  = "o365-secret-pw"
)

func startMail(t *testing.T, opts mailtest.Options) *mailtest.Server {
	t.Helper()
	// The shared fixture's alice and bob are there too, unused.
	opts.Users = []mailtest.User{
		{Address: "probe@gmail.test", Password: gmailPW},
		{Address: "probe@o365.test", Password: o365PW},
	}
	return mailtest.StartT(t, opts)
}

// writeConfig writes a collector configuration with an emailqos receiver
// against srv: a round trip of gmail and the transit gmail:o365.
func writeConfig(t *testing.T, srv *mailtest.Server, extra string) string {
	t.Helper()
	cfg := fmt.Sprintf(`
receivers:
  emailqos:
    delivery_timeout: 3s
    poll_interval: 200ms
    accounts:
      gmail:
        address: probe@gmail.test
        password: ${env:CHECK_GMAIL_PASSWORD}
        smtp: { endpoint: %[1]s, security: none }
        imap: { endpoint: %[2]s, security: none }
      o365:
        address: probe@o365.test
        password: ${CHECK_O365_PASSWORD}
        smtp: { endpoint: %[1]s, security: none }
        imap: { endpoint: %[2]s, security: none }
    roundtrip:
      - account: gmail
    transit:
      directions: [gmail:o365]
%[3]s
exporters:
  debug:
service:
  pipelines:
    metrics:
      receivers: [emailqos]
      exporters: [debug]
`, srv.SMTPAddr(), srv.IMAPAddr(), extra)
	path := filepath.Join(t.TempDir(), "collector.yaml")
	require.NoError(t, os.WriteFile(path, []byte(cfg), 0o600))
	t.Setenv("CHECK_GMAIL_PASSWORD", gmailPW)
	t.Setenv("CHECK_O365_PASSWORD", o365PW)
	return path
}

func runCheck(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := run(ctx, args, &stdout, &stderr)
	for _, s := range []string{stdout.String(), stderr.String()} {
		assert.NotContains(t, s, gmailPW, "no password is printed")
		assert.NotContains(t, s, o365PW, "no password is printed")
	}
	return code, stdout.String(), stderr.String()
}

func TestCheckSucceeds(t *testing.T) {
	srv := startMail(t, mailtest.Options{DeliveryDelay: 20 * time.Millisecond})
	path := writeConfig(t, srv, "")

	code, out, errOut := runCheck(t, "--config", path)
	require.Equal(t, exitOK, code, "stdout:\n%s\nstderr:\n%s", out, errOut)
	for _, want := range []string{
		"gmail (roundtrip gmail:gmail)", "gmail:o365 (transit gmail:o365)",
		"smtp.connect", "smtp.submit", "imap.login", "delivery.wait", "delivery latency",
		"result: OK (code 0)", "2 of 2 probes succeeded",
	} {
		assert.Contains(t, out, want)
	}
}

func TestCheckSelectsTargets(t *testing.T) {
	srv := startMail(t, mailtest.Options{})
	path := writeConfig(t, srv, "")

	code, out, _ := runCheck(t, "--config", path, "--receiver", "emailqos", "--target", "gmail:o365", "--timeout", "20s")
	require.Equal(t, exitOK, code, out)
	assert.Contains(t, out, "gmail:o365 (transit gmail:o365)")
	assert.NotContains(t, out, "(roundtrip")
	assert.Contains(t, out, "1 of 1 probes succeeded")

	code, _, errOut := runCheck(t, "--config", path, "--target", "nosuch")
	assert.Equal(t, exitConfig, code)
	assert.Contains(t, errOut, `target "nosuch" is not configured (targets: gmail, gmail:o365)`)
}

func TestCheckReportsFailure(t *testing.T) {
	srv := startMail(t, mailtest.Options{RejectAuth: true})
	path := writeConfig(t, srv, "")

	code, out, errOut := runCheck(t, "--config", path, "--target", "gmail")
	require.Equal(t, exitFailed, code, "stdout:\n%s\nstderr:\n%s", out, errOut)
	assert.Contains(t, out, "result: FAILED code 2 (SMTP send failure), error.type auth")
	assert.Contains(t, out, "error: smtp.auth")
	assert.Contains(t, out, "smtp.auth", "the steps reached are timed")
	assert.NotContains(t, out, "delivery latency", "nothing was delivered")
	assert.Contains(t, out, "0 of 1 probes succeeded")
	assert.NotContains(t, out, "transcript (redacted)", "no transcript unless asked for")

	// The transcript shows the conversation up to the refusal, with the
	// credentials redacted (runCheck fails on any password in the output).
	code, out, _ = runCheck(t, "--config", path, "--target", "gmail", "--transcript")
	require.Equal(t, exitFailed, code, out)
	assert.Contains(t, out, "transcript (redacted):")
	assert.Contains(t, out, "AUTH")
	assert.Contains(t, out, "535")
}

func TestCheckConfigErrors(t *testing.T) {
	srv := startMail(t, mailtest.Options{})

	code, _, errOut := runCheck(t)
	assert.Equal(t, exitConfig, code)
	assert.Contains(t, errOut, "usage: emailqos-check")

	bad := writeConfig(t, srv, "    detection: sometimes\n  emailqos/second:\n    roundtrip: [{account: nosuch}]")
	code, _, errOut = runCheck(t, "--config", bad, "--receiver", "emailqos")
	assert.Equal(t, exitConfig, code)
	assert.Contains(t, errOut, `receivers::emailqos: detection: "sometimes" is not one of auto, idle, poll, precise`)

	code, _, errOut = runCheck(t, "--config", bad)
	assert.Equal(t, exitConfig, code)
	assert.Contains(t, errOut, "several emailqos receivers (emailqos, emailqos/second): choose one")

	code, _, errOut = runCheck(t, "--config", bad, "--receiver", "emailqos/second")
	assert.Equal(t, exitConfig, code)
	assert.Contains(t, errOut, `roundtrip::0::account: unknown account "nosuch" for target nosuch`)

	code, _, errOut = runCheck(t, "--config", bad, "--receiver", "emailqos/third")
	assert.Equal(t, exitConfig, code)
	assert.Contains(t, errOut, `no receiver "emailqos/third"`)

	code, _, errOut = runCheck(t, "--config", filepath.Join(t.TempDir(), "missing.yaml"))
	assert.Equal(t, exitConfig, code)
	assert.Contains(t, errOut, "invalid configuration")
}

// TestPrintResultCannotBeFaked gives printResult an error and transcript
// lines as a hostile server would shape them: a CR or an ESC sequence that
// erases the line and moves the cursor, then a fake "result: OK", bidi
// overrides and a BEL. The printed text holds none of those controls, so the
// only line the terminal shows as a result is the real one.
func TestPrintResultCannotBeFaked(t *testing.T) {
	fake := "  result: OK (code 0)"
	hostile := []string{
		"\r" + fake,
		"\x1b[2K\x1b[1G" + fake,
		"\x1b[1A\x1b[2K" + fake + "\n" + fake,
		"\u202e)0 edoc( KO :tluser\u202c",
		"\u009b2K\r" + fake + "\a",
	}
	var buf bytes.Buffer
	printResult(&buf, emailqosreceiver.CheckResult{
		Name: "gmail", Kind: "roundtrip", Direction: "gmail:gmail",
		Code: 3, ErrorType: "auth",
		Err:        errors.New("imap.login: NO " + strings.Join(hostile, " ")),
		Transcript: append([]string{"S: * OK ready"}, hostile...),
	})
	out := buf.String()
	for _, bad := range []string{"\r", "\x1b", "\a", "\u202e", "\u009b"} {
		assert.NotContains(t, out, bad)
	}
	results := 0
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "result:") {
			results++
			assert.Contains(t, line, "FAILED")
		}
	}
	assert.Equal(t, 1, results, out)
	// The server's text is still there to read, escaped.
	assert.Contains(t, out, `\x1b[2K\x1b[1G  result: OK (code 0)`)
}

func TestIndentEscapesEachLine(t *testing.T) {
	assert.Equal(t, "  accounts::a::username: contains \\x00\n  second \\x1b[2K line",
		indent("accounts::a::username: contains \x00\nsecond \x1b[2K line"))
}
