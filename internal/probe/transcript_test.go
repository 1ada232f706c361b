package probe

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/emailqos/emailqosreceiver/internal/gmailapi"
	"github.com/emailqos/emailqosreceiver/internal/gmailapitest"
	"github.com/emailqos/emailqosreceiver/internal/graph"
	"github.com/emailqos/emailqosreceiver/internal/graphtest"
	"github.com/emailqos/emailqosreceiver/internal/pop3test"
	"github.com/emailqos/emailqosreceiver/internal/probemsg"
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

// Over Graph and the Gmail API the transcript has each request (method,
// path, sizes) and answer (status, Retry-After, request-id), throttled
// attempts included; never the bearer token, the sent MIME nor a message's
// headers.
func TestTranscriptOverAPIs(t *testing.T) {
	const addr = "probe@api.test"
	const token = "api-bearer-token-7Qx2Lm9"
	tok := func(context.Context) (string, error) { return token, nil }
	for name, mk := range map[string]func(t *testing.T) (*Account, func()){
		"graph": func(t *testing.T) (*Account, func()) {
			gr := graphtest.New(graphtest.Options{Users: []string{addr}, Token: token})
			t.Cleanup(gr.Close)
			c, err := graph.New(tok, graph.Options{BaseURL: gr.URL(), MinBackoff: 10 * time.Millisecond})
			require.NoError(t, err)
			return &Account{Key: addr, Address: addr, Send: SendGraph, Retrieval: RetrievalGraph, API: APIs{Graph: c},
				MACKey: probemsg.DeriveKey([]byte("k"), addr)}, func() { gr.Throttle(1, 429, time.Second) }
		},
		"gmail": func(t *testing.T) (*Account, func()) {
			gm := gmailapitest.New(gmailapitest.Options{Users: []string{addr}, Token: token})
			t.Cleanup(gm.Close)
			c, err := gmailapi.New(tok, gmailapi.Options{BaseURL: gm.URL(), MinBackoff: 10 * time.Millisecond})
			require.NoError(t, err)
			return &Account{Key: addr, Address: addr, Send: SendGmailAPI, Retrieval: RetrievalGmailAPI, API: APIs{Gmail: c},
				MACKey: probemsg.DeriveKey([]byte("k"), addr)}, func() { gm.Throttle(1, 429, "", time.Second) }
		},
	} {
		t.Run(name, func(t *testing.T) {
			a, throttle := mk(t)
			tg := apiTarget(a)
			tg.Transcript = true
			throttle()
			r := Run(context.Background(), tg, nil)
			require.NoError(t, r.Err)
			require.NotNil(t, r.Transcript)
			all := strings.Join(r.Transcript.Lines(), "\n")
			wants := map[string][]string{
				"graph": {"graph C: POST /v1.0/users/probe@api.test/sendMail [", "graph S: 202 [0 bytes]",
					"graph S: 429 [", "Retry-After: 1", "request-id: ", "/messages/delta?$deltatoken=[", "graph C: POST /v1.0/users/probe@api.test/messages/"},
				"gmail": {"gmailapi C: POST /gmail/v1/users/probe@api.test/messages/send [", "gmailapi S: 200 [",
					"gmailapi S: 429 [", "Retry-After: 1", "gmailapi C: GET /gmail/v1/users/probe@api.test/history?historyTypes=messageAdded&historyTypes=labelAdded&startHistoryId=",
					"gmailapi C: DELETE /gmail/v1/users/probe@api.test/messages/"},
			}[name]
			for _, want := range wants {
				assert.Contains(t, all, want)
			}
			for _, never := range []string{token, "Bearer", "Authorization", probemsg.MACHeader, "emailqos probe"} {
				assert.NotContains(t, all, never)
			}
		})
	}
}
