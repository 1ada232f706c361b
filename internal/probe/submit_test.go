package probe

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/emailqos/emailqosreceiver/internal/imapwatch"
	"github.com/emailqos/emailqosreceiver/internal/mailtest"
	"github.com/emailqos/emailqosreceiver/internal/steps"
)

// A sending server that defers (greylisting) and accepts later: with
// RetryDeferred the probe resubmits, is delivered, and reports the
// deferrals and the time from the first one until the arrival.
func TestDeferredSubmissionIsRetried(t *testing.T) {
	srv := startMail(t, mailtest.Options{GreylistRcpts: 2})
	a := account(srv, "a", alice, "alice-pw", imapwatch.MethodIdle)
	tg := target(a, a)
	tg.RetryDeferred = true
	tg.DeliveryTimeout = 8 * time.Second
	tg.Timeout = 15 * time.Second

	r := Run(context.Background(), tg, nil)
	require.NoError(t, r.Err)
	assert.True(t, r.Delivered)
	assert.Equal(t, 2, r.Deferrals)
	// Retried after 1 s and then 1 s more (the poll interval caps the
	// backoff at 1 s): the arrival is at least 2 s after the first deferral.
	// The arrival is known to lie within ±Uncertainty of the instant
	// reported.
	assert.GreaterOrEqual(t, r.DeferredFor+r.Uncertainty, 2*time.Second, "from the first deferral to the arrival")
	assert.Equal(t, 1, srv.Deliveries(), "one message delivered, however many attempts")
}

// Without RetryDeferred, and when the deferrals outlast half of the
// delivery timeout, the probe fails as deferred (code 2).
func TestDeferredSubmissionFails(t *testing.T) {
	srv := startMail(t, mailtest.Options{})
	srv.SetFaults(mailtest.Faults{DeferRcpt: true})
	a := account(srv, "a", alice, "alice-pw", imapwatch.MethodIdle)

	tg := target(a, a)
	r := Run(context.Background(), tg, nil)
	assert.Equal(t, steps.CodeSMTPSend, r.Code)
	assert.Equal(t, steps.TypeDeferred, r.ErrorType)
	assert.Equal(t, 0, r.Deferrals, "no retry configured")

	tg = target(a, a)
	tg.RetryDeferred = true
	tg.DeliveryTimeout = 3 * time.Second // retries for at most 1.5 s
	start := time.Now()
	r = Run(context.Background(), tg, nil)
	assert.Equal(t, steps.CodeSMTPSend, r.Code)
	assert.Equal(t, steps.TypeDeferred, r.ErrorType)
	assert.GreaterOrEqual(t, r.Deferrals, 2, "first try and at least one retry")
	assert.Less(t, time.Since(start), tg.Timeout+time.Second)
	assert.Zero(t, srv.Deliveries())
}
