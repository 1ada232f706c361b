package emailqosreceiver // import "github.com/emailqos/emailqosreceiver"

import (
	"go.opentelemetry.io/collector/pdata/pcommon"

	"github.com/emailqos/emailqosreceiver/internal/authres"
	"github.com/emailqos/emailqosreceiver/internal/metadata"
	"github.com/emailqos/emailqosreceiver/internal/probe"
	"github.com/emailqos/emailqosreceiver/internal/received"
)

// recordMessage reports what the delivered probe's header said: the
// receiving side's authentication verdicts and the delivery split along the
// Received chain.
func recordMessage(mb *metadata.MetricsBuilder, now pcommon.Timestamp, r *probe.Result) {
	if r.Auth != nil {
		for _, v := range []struct {
			method  metadata.AttributeAuthMethod
			verdict authres.Verdict
		}{
			{metadata.AttributeAuthMethodSpf, r.Auth.SPF},
			{metadata.AttributeAuthMethodDkim, r.Auth.DKIM},
			{metadata.AttributeAuthMethodDmarc, r.Auth.DMARC},
			{metadata.AttributeAuthMethodArc, r.Auth.ARC},
		} {
			// Only verdicts the receiver reported: a method it did not
			// check has no series rather than a made-up one.
			if result, ok := verdictValue(v.verdict.Value); ok {
				mb.RecordEmailqosAuthResultDataPoint(now, 1, v.method, result)
			}
		}
	}
	if p := r.Path; p != nil {
		mb.RecordEmailqosDeliveryHopsDataPoint(now, int64(countHops(p)))
		if p.Skew.Known {
			mb.RecordEmailqosDeliveryClockSkewDataPoint(now, p.Skew.Offset.Seconds())
		}
		for _, seg := range []struct {
			name metadata.AttributeSegment
			d    float64
		}{
			{metadata.AttributeSegmentSubmission, p.Submission.Seconds()},
			{metadata.AttributeSegmentOutbound, p.Outbound.Seconds()},
			{metadata.AttributeSegmentRelay, p.Relay.Seconds()},
			{metadata.AttributeSegmentInbound, p.Inbound.Seconds()},
			{metadata.AttributeSegmentStore, p.Store.Seconds()},
		} {
			mb.RecordEmailqosDeliverySegmentDurationDataPoint(now, seg.d, seg.name)
		}
	}
}

// verdictValue keeps the attribute's values to the registered results, so
// that a server's odd word cannot open new series.
func verdictValue(v string) (string, bool) {
	switch v {
	case authres.Pass, authres.Fail, authres.SoftFail, authres.Neutral, authres.None,
		authres.TempError, authres.PermError, authres.Policy:
		return v, true
	case "":
		return "", false
	default:
		return "other", true
	}
}

// countHops counts the Received hops a breakdown was made from.
func countHops(p *received.Breakdown) int {
	n := 0
	for _, h := range p.Hops {
		if h.Hop >= 0 {
			n++
		}
	}
	return n
}
