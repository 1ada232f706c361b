package probe

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/emailqos/emailqosreceiver/internal/pop3test"
)

func TestTranscriptOverPOP3(t *testing.T) {
	srv, pop := startPOP3(t, pop3test.Options{})
	a := pop3Account(srv, pop)
	tg := target(a, a)
	tg.PollInterval = 200 * time.Millisecond
	tg.Transcript = true

	r := Run(context.Background(), tg, nil)
	require.NoError(t, r.Err)
	require.NotNil(t, r.Transcript)
	all := strings.Join(r.Transcript.Lines(), "\n")
	for _, want := range []string{"pop3 S: +OK", "pop3 C: USER " + alice, "pop3 C: PASS [redacted]",
		"bytes of message data]", "pop3 C: DELE", "smtp C: AUTH PLAIN [redacted]", "smtp C: [", "smtp S: 250"} {
		assert.Contains(t, all, want)
	}
	for _, secret := range []string{"alice-pw", base64.StdEncoding.EncodeToString([]byte("\x00" + alice + "\x00alice-pw"))} {
		assert.NotContains(t, all, secret)
	}
}

func TestNoTranscriptByDefault(t *testing.T) {
	srv, pop := startPOP3(t, pop3test.Options{})
	a := pop3Account(srv, pop)
	tg := target(a, a)
	tg.PollInterval = 200 * time.Millisecond
	r := Run(context.Background(), tg, nil)
	require.NoError(t, r.Err)
	assert.Nil(t, r.Transcript)
}
