package probe

import (
	"time"

	"go.uber.org/zap"

	"github.com/emailqos/emailqosreceiver/internal/authres"
	"github.com/emailqos/emailqosreceiver/internal/received"
	"github.com/emailqos/emailqosreceiver/internal/steps"
)

// readMessage reads what the delivered probe's header says about its way:
// the receiving side's authentication verdicts, and the delivery latency
// split along the Received chain. It measures nothing itself and never fails
// the probe; a header that says nothing usable leaves the fields nil.
func readMessage(res *Result, t *Target, header []byte, sent time.Time, logger *zap.Logger) {
	if len(header) == 0 {
		return
	}
	rep, err := authres.Evaluate(header, t.Receiver.AuthServIDs)
	if len(rep.Fields) > 0 {
		res.Auth = &rep
	}
	if err != nil {
		logger.Debug("Authentication-Results not fully read", zap.String("target", t.Name), zap.Error(err))
	}

	hops, err := received.Parse(header)
	if err != nil {
		logger.Debug("Received chain not fully read", zap.String("target", t.Name), zap.Error(err))
	}
	if len(hops) == 0 {
		return
	}
	// Received stamps are wall-clock times, so the split works on the wall
	// clock; the instants are placed around the reply to DATA by the
	// monotonic durations the probe measured, so that the split adds up to
	// the reported latency to the nanosecond.
	accepted := res.AcceptedAt.Round(0)
	b, err := received.Split(hops, received.Probe{
		Sent:            accepted.Add(-res.AcceptedAt.Sub(sent)),
		Accepted:        accepted,
		Arrived:         accepted.Add(res.DeliveryLatency),
		SenderDomains:   t.Sender.Domains,
		ReceiverDomains: t.Receiver.Domains,
	})
	if err != nil {
		logger.Debug("delivery not split along its Received chain", zap.String("target", t.Name), zap.Error(err))
		return
	}
	res.Path = &b
}

// submitStart is when the submission began: the start of the smtp.submit
// step (MAIL FROM), the closest instant before the submission server
// stamped the message, which bounds the clock skew tightly. Without it, the
// probe's own send time (taken before connecting) is used.
func submitStart(rec *steps.Recorder, fallback time.Time) time.Time {
	for _, tm := range rec.Timings() {
		switch tm.Step {
		case steps.SMTPSubmit, steps.GraphSend, steps.GmailAPISend:
			return tm.Start
		}
	}
	return fallback
}
