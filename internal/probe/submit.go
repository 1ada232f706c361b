package probe

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/emailqos/emailqosreceiver/internal/smtpsend"
	"github.com/emailqos/emailqosreceiver/internal/steps"
)

// deferral is what the sending server's temporary refusals cost a probe.
type deferral struct {
	count int
	first time.Time
}

// firstRetry is the wait after the first deferral; each next wait doubles,
// up to the target's poll interval.
const firstRetry = time.Second

// submit sends the probe. A deferral (4xx: greylisting, a busy server) ends
// the probe as deferred unless the target retries them; then the submission
// is repeated, as a mail client would, for up to half of the delivery
// timeout from the first deferral, so that the delivery wait keeps the
// other half. The step timings add up over the attempts.
func submit(ctx context.Context, t *Target, opts smtpsend.Options, msg smtpsend.Message, rec *steps.Recorder, logger *zap.Logger) (smtpsend.Result, deferral, error) {
	var d deferral
	wait := firstRetry
	for {
		sent, err := smtpsend.Send(ctx, opts, msg, rec)
		var se *steps.Error
		if err == nil || !t.RetryDeferred || !errors.As(err, &se) || se.Type != steps.TypeDeferred {
			return sent, d, err
		}
		if d.count == 0 {
			d.first = time.Now()
		}
		d.count++
		if time.Since(d.first)+wait > t.DeliveryTimeout/2 {
			return sent, d, err
		}
		logger.Info("probe submission deferred, retrying",
			zap.String("target", t.Name), zap.Int("deferrals", d.count), zap.Duration("retry_in", wait))
		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return sent, d, err
		}
		if wait *= 2; t.PollInterval > 0 && wait > t.PollInterval {
			wait = max(t.PollInterval, firstRetry)
		}
	}
}
