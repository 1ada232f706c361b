package probe

import (
	"context"
	"net"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/emailqos/emailqosreceiver/internal/faultnet"
	"github.com/emailqos/emailqosreceiver/internal/imapwatch"
	"github.com/emailqos/emailqosreceiver/internal/mailtest"
	"github.com/emailqos/emailqosreceiver/internal/probemsg"
	"github.com/emailqos/emailqosreceiver/internal/saslx"
	"github.com/emailqos/emailqosreceiver/internal/steps"
	"github.com/emailqos/emailqosreceiver/internal/transport"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	alice = mailtest.Alice
	bob   = mailtest.Bob
)

// startMail is the one in-process mail system fixture, with alice and bob.
var startMail = mailtest.StartT

func account(srv *mailtest.Server, key, addr, password string, method imapwatch.Method) *Account {
	return &Account{
		Key:         key,
		Address:     addr,
		Credentials: saslx.Credentials{Username: addr, Password: password},
		SMTP:        transport.Endpoint{Address: srv.SMTPAddr(), Security: transport.None},
		IMAP:        transport.Endpoint{Address: srv.IMAPAddr(), Security: transport.None},
		Mailbox:     "INBOX",
		Detection:   method,
		MACKey:      probemsg.DeriveKey([]byte(password), addr),
		// The suites run with one session per probe; with the variable set
		// (make precision runs both), through the shared session.
		ShareSession: testShareSessions,
	}
}

// testShareSessions: EMAILQOS_TEST_SHARE_SESSION set runs this package's
// probes through their mailbox's shared session (share.go).
var testShareSessions = os.Getenv("EMAILQOS_TEST_SHARE_SESSION") != ""

func target(sender, receiver *Account) *Target {
	kind := Transit
	if sender == receiver {
		kind = Roundtrip
	}
	return &Target{
		Name:            sender.Key + ":" + receiver.Key,
		Kind:            kind,
		Sender:          sender,
		Receiver:        receiver,
		Direction:       sender.Key + ":" + receiver.Key,
		DeliveryTimeout: 5 * time.Second,
		PollInterval:    200 * time.Millisecond,
		PreciseInterval: 10 * time.Millisecond,
		Timeout:         10 * time.Second,
		Cleanup:         CleanupDelete,
	}
}

func stepNames(r Result) []string {
	var out []string
	for _, tm := range r.Timings {
		out = append(out, tm.Step)
	}
	return out
}

func TestRoundtripSucceeds(t *testing.T) {
	for _, method := range []imapwatch.Method{"auto", "idle", "poll", "precise"} {
		t.Run(string(method), func(t *testing.T) {
			srv := startMail(t, mailtest.Options{DeliveryDelay: 50 * time.Millisecond})
			a := account(srv, "a", alice, "alice-pw", method)
			r := Run(context.Background(), target(a, a), nil)
			require.NoError(t, r.Err)
			assert.Equal(t, steps.CodeOK, r.Code)
			assert.Equal(t, steps.TypeNone, r.ErrorType)
			assert.True(t, r.Delivered)
			// The true latency lies within the reported window (IDLE's
			// starts at the end of DATA: the announcement delay is unknown).
			assert.GreaterOrEqual(t, r.DeliveryLatency+r.Uncertainty, 40*time.Millisecond, "the server held the message for 50ms")
			assert.Less(t, r.DeliveryLatency, 2*time.Second)
			assert.Greater(t, r.Total, r.DeliveryLatency)
			assert.Positive(t, r.Commands)
			for _, s := range []string{steps.IMAPConnect, steps.IMAPLogin, steps.IMAPSelect, steps.SMTPConnect,
				steps.SMTPAuth, steps.SMTPSubmit, steps.DeliveryWait, steps.IMAPSearch, steps.IMAPDelete, steps.IMAPLogout} {
				assert.Contains(t, stepNames(r), s)
			}
			for _, tm := range r.Timings {
				assert.Positive(t, tm.Duration, tm.Step)
			}
			switch method {
			case "auto":
				// Polled densely where arrivals are expected (the first
				// 2s after the send, with no history yet).
				assert.Equal(t, imapwatch.MethodPrecise, r.Method)
			default:
				assert.Equal(t, method, r.Method)
			}
			msgs, err := srv.Mailbox(alice)
			require.NoError(t, err)
			assert.Empty(t, msgs, "the probe removed its own message")
		})
	}
}

func TestAutoFallsBackToPollWithoutIdle(t *testing.T) {
	srv := startMail(t, mailtest.Options{DisableIDLE: true})
	a := account(srv, "a", alice, "alice-pw", "auto")
	tg := target(a, a)
	r := Run(context.Background(), tg, nil)
	require.NoError(t, r.Err)
	// Within the dense window: seen by a precise poll.
	assert.Equal(t, imapwatch.MethodPrecise, r.Method)
}

func TestTransitReadsTheReceiversMailbox(t *testing.T) {
	srv := startMail(t, mailtest.Options{})
	a := account(srv, "a", alice, "alice-pw", "auto")
	b := account(srv, "b", bob, "bob-pw", "auto")
	require.NoError(t, srv.Append(bob, []byte("From: x@y.test\r\nSubject: hello\r\n\r\nordinary\r\n"), nil))
	r := Run(context.Background(), target(a, b), nil)
	require.NoError(t, r.Err)
	assert.True(t, r.Delivered)
	msgs, err := srv.Mailbox(bob)
	require.NoError(t, err)
	require.Len(t, msgs, 1, "only the ordinary message is left")
}

// closedPort is a loopback address where connections are refused.
var closedPort = faultnet.ClosedPort

func TestErrorCodes(t *testing.T) {
	tests := []struct {
		name     string
		opts     mailtest.Options
		modify   func(a *Account, tg *Target, t *testing.T)
		wantCode int
		wantType string
	}{
		{
			name:     "smtp connection refused",
			modify:   func(a *Account, _ *Target, t *testing.T) { a.SMTP.Address = closedPort(t) },
			wantCode: steps.CodeSMTPConnect, wantType: steps.TypeConnect,
		},
		{
			name:     "smtp auth rejected",
			opts:     mailtest.Options{RejectAuth: true},
			wantCode: steps.CodeSMTPSend, wantType: steps.TypeAuth,
		},
		{
			name:     "rcpt rejected",
			opts:     mailtest.Options{RejectRcpt: true},
			wantCode: steps.CodeSMTPSend, wantType: steps.TypeRejected,
		},
		{
			name:     "rcpt deferred",
			opts:     mailtest.Options{DeferRcpt: true},
			wantCode: steps.CodeSMTPSend, wantType: steps.TypeDeferred,
		},
		{
			name:     "imap bad login",
			modify:   func(a *Account, _ *Target, _ *testing.T) { a.Password = "wrong" },
			wantCode: steps.CodeMailboxConnect, wantType: steps.TypeAuth,
		},
		{
			name:     "imap connection refused",
			modify:   func(a *Account, _ *Target, t *testing.T) { a.IMAP.Address = closedPort(t) },
			wantCode: steps.CodeMailboxConnect, wantType: steps.TypeConnect,
		},
		{
			name:     "message never arrives",
			opts:     mailtest.Options{Blackhole: true},
			modify:   func(_ *Account, tg *Target, _ *testing.T) { tg.DeliveryTimeout = 300 * time.Millisecond },
			wantCode: steps.CodeSearch, wantType: steps.TypeNotFound,
		},
		{
			name:     "delete fails",
			opts:     mailtest.Options{FailExpunge: true},
			wantCode: steps.CodeCleanup, wantType: steps.TypeRejected,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startMail(t, tt.opts)
			a := account(srv, "a", alice, "alice-pw", "auto")
			tg := target(a, a)
			if tt.modify != nil {
				tt.modify(a, tg, t)
			}
			start := time.Now()
			r := Run(context.Background(), tg, nil)
			require.Error(t, r.Err)
			assert.Equal(t, tt.wantCode, r.Code, "error: %v", r.Err)
			assert.Equal(t, tt.wantType, r.ErrorType, "error: %v", r.Err)
			assert.False(t, r.Delivered && tt.wantCode < steps.CodeCleanup)
			assert.NotContains(t, r.Err.Error(), "alice-pw", "no password in errors")
			assert.Less(t, time.Since(start), tg.Timeout)
		})
	}
}

// An address or target name the probe message cannot carry is the target's
// configuration at fault: typed config (it was protocol), before anything
// is submitted.
func TestUnusableAddressIsConfig(t *testing.T) {
	for name, modify := range map[string]func(a *Account, tg *Target){
		"quoted local part":   func(a *Account, _ *Target) { a.Address = `"alice"@a.test` },
		"comment":             func(a *Account, _ *Target) { a.Address = alice + " (probe)" },
		"control in the name": func(_ *Account, tg *Target) { tg.Name = "a\x1b[2Jb" },
	} {
		t.Run(name, func(t *testing.T) {
			srv := startMail(t, mailtest.Options{})
			a := account(srv, "a", alice, "alice-pw", "auto")
			tg := target(a, a)
			modify(a, tg)
			r := Run(context.Background(), tg, nil)
			require.Error(t, r.Err)
			assert.Equal(t, steps.CodeSMTPSend, r.Code, "error: %v", r.Err)
			assert.Equal(t, steps.TypeConfig, r.ErrorType, "error: %v", r.Err)
			assert.NotContains(t, stepNames(r), steps.SMTPConnect, "nothing was submitted")
		})
	}
}

func TestIMAPStoppedMidProbe(t *testing.T) {
	srv := startMail(t, mailtest.Options{Blackhole: true})
	a := account(srv, "a", alice, "alice-pw", "auto")
	tg := target(a, a)
	tg.DeliveryTimeout = 2 * time.Second
	go func() {
		time.Sleep(300 * time.Millisecond)
		srv.StopIMAP()
	}()
	start := time.Now()
	r := Run(context.Background(), tg, nil)
	require.Error(t, r.Err)
	assert.Contains(t, []int{steps.CodeMailboxConnect, steps.CodeSearch}, r.Code, "error: %v", r.Err)
	assert.Less(t, time.Since(start), tg.DeliveryTimeout+time.Second)
}

func TestCanceledProbeReturnsPromptly(t *testing.T) {
	srv := startMail(t, mailtest.Options{Blackhole: true})
	a := account(srv, "a", alice, "alice-pw", "idle")
	tg := target(a, a)
	tg.DeliveryTimeout = time.Minute
	tg.Timeout = 2 * time.Minute
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	start := time.Now()
	r := Run(ctx, tg, nil)
	require.Error(t, r.Err)
	assert.Equal(t, steps.TypeCanceled, r.ErrorType, "error: %v", r.Err)
	assert.Less(t, time.Since(start), 3*time.Second)
}

// A server that accepts connections and never answers must end the probe at
// its deadline, not hang it.
func TestSilentIMAPServerTimesOut(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		var conns []net.Conn
		for {
			c, err := l.Accept()
			if err != nil {
				for _, c := range conns {
					c.Close()
				}
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() { l.Close(); <-done })

	srv := startMail(t, mailtest.Options{})
	a := account(srv, "a", alice, "alice-pw", "auto")
	a.IMAP.Address = l.Addr().String()
	tg := target(a, a)
	tg.Timeout = 500 * time.Millisecond
	start := time.Now()
	r := Run(context.Background(), tg, nil)
	assert.Equal(t, steps.CodeMailboxConnect, r.Code)
	assert.Equal(t, steps.TypeTimeout, r.ErrorType)
	assert.Less(t, time.Since(start), tg.Timeout+time.Second)
}
