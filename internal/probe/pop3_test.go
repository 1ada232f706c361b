package probe

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/emailqos/emailqosreceiver/internal/imapwatch"
	"github.com/emailqos/emailqosreceiver/internal/mailtest"
	"github.com/emailqos/emailqosreceiver/internal/pop3test"
	"github.com/emailqos/emailqosreceiver/internal/steps"
	"github.com/emailqos/emailqosreceiver/internal/transport"
)

// startPOP3 starts a POP3 server and a mail server whose deliveries land in
// the POP3 maildrop instead of the IMAP mailbox.
func startPOP3(t *testing.T, opts pop3test.Options) (*mailtest.Server, *pop3test.Server) {
	t.Helper()
	opts.Users = map[string]string{alice: "alice-pw"}
	pop, err := pop3test.Start(opts)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, pop.Close()) })
	srv := startMail(t, mailtest.Options{
		DeliveryDelay: 30 * time.Millisecond,
		OnDeliver: func(rcpt string, msg []byte) error {
			pop.Add(rcpt, msg)
			return errDelivered
		},
	})
	return srv, pop
}

var errDelivered = assert.AnError

func pop3Account(srv *mailtest.Server, pop *pop3test.Server) *Account {
	a := account(srv, "a", alice, "alice-pw", "auto")
	a.Retrieval = RetrievalPOP3
	a.POP3 = transport.Endpoint{Address: pop.Addr(), Security: transport.None}
	a.IMAP = transport.Endpoint{}
	return a
}

func TestRoundtripOverPOP3(t *testing.T) {
	srv, pop := startPOP3(t, pop3test.Options{})
	ordinary := []byte("From: x@y.test\r\nSubject: keep me\r\n\r\nordinary\r\n")
	pop.Add(alice, ordinary)
	a := pop3Account(srv, pop)
	tg := target(a, a)
	tg.PollInterval = 200 * time.Millisecond

	r := Run(context.Background(), tg, nil)
	require.NoError(t, r.Err)
	assert.True(t, r.Delivered)
	assert.Equal(t, imapwatch.MethodPoll, r.Method)
	assert.GreaterOrEqual(t, r.DeliveryLatency, 20*time.Millisecond)
	assert.Positive(t, r.Uncertainty)
	assert.Positive(t, r.Commands)
	names := stepNames(r)
	for _, s := range []string{steps.POP3Connect, steps.POP3Login, steps.SMTPSubmit, steps.DeliveryWait, steps.POP3Fetch, steps.POP3Delete} {
		assert.Contains(t, names, s)
	}
	assert.Equal(t, [][]byte{ordinary}, pop.Messages(alice), "only the probe was deleted")
}

func TestPOP3FailuresHaveTheirCodes(t *testing.T) {
	t.Run("bad login", func(t *testing.T) {
		srv, pop := startPOP3(t, pop3test.Options{})
		a := pop3Account(srv, pop)
		a.Password = "wrong"
		r := Run(context.Background(), target(a, a), nil)
		assert.Equal(t, steps.CodeMailboxConnect, r.Code, "%v", r.Err)
		assert.Equal(t, steps.TypeAuth, r.ErrorType)
	})
	t.Run("failed QUIT after DELE", func(t *testing.T) {
		srv, pop := startPOP3(t, pop3test.Options{FailQuit: true})
		a := pop3Account(srv, pop)
		tg := target(a, a)
		tg.PollInterval = 200 * time.Millisecond
		r := Run(context.Background(), tg, nil)
		assert.Equal(t, steps.CodeCleanup, r.Code, "%v", r.Err)
		assert.True(t, r.Delivered, "the probe was measured before its cleanup failed")
		assert.Len(t, pop.Messages(alice), 1, "a deletion takes effect only on a clean QUIT")
	})
	t.Run("never arrives", func(t *testing.T) {
		srv, pop := startPOP3(t, pop3test.Options{})
		a := pop3Account(srv, pop)
		tg := target(a, a)
		tg.DeliveryTimeout = 10 * time.Millisecond
		tg.PollInterval = 100 * time.Millisecond
		r := Run(context.Background(), tg, nil)
		assert.Equal(t, steps.CodeSearch, r.Code, "%v", r.Err)
		assert.Equal(t, steps.TypeNotFound, r.ErrorType)
		_ = srv
	})
}
