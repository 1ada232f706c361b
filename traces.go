package emailqosreceiver // import "github.com/emailqos/emailqosreceiver"

import (
	"crypto/rand"
	"errors"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/emailqos/emailqosreceiver/internal/metadata"
	"github.com/emailqos/emailqosreceiver/internal/probe"
	"github.com/emailqos/emailqosreceiver/internal/steps"
)

// Span names and attributes of a probe's trace. The root span covers the whole
// probe; each recorded step is a child span, so a tracing backend shows the
// probe as a waterfall.
const (
	spanProbe = "emailqos.probe"
	// eventNotice is a delivery status notification about the probe.
	eventNotice = "emailqos.delivery_status_notice"

	attrStep        = "emailqos.step"
	attrErrorCode   = "emailqos.error_code"
	attrErrorType   = "error.type"
	attrLatency     = "emailqos.delivery.latency_ms"
	attrMethod      = "emailqos.delivery.method"
	attrUncertainty = "emailqos.delivery.uncertainty_ms"
	attrCommands    = "emailqos.imap.commands"
)

// buildTraces makes one trace per probe result. Each trace is its own
// resource, with the same resource attributes as the probe's metrics, so
// traces and metrics of one direction join on them. Raw error text stays out
// of the spans, as it stays out of the metrics: the status carries the
// error.type only.
func buildTraces(rac metadata.ResourceAttributesConfig, results []probe.Result) ptrace.Traces {
	td := ptrace.NewTraces()
	for i := range results {
		r := &results[i]
		rs := td.ResourceSpans().AppendEmpty()
		probeResource(metadata.NewResourceBuilder(rac), r).MoveTo(rs.Resource())
		ss := rs.ScopeSpans().AppendEmpty()
		ss.Scope().SetName(metadata.ScopeName)
		appendProbeSpans(ss.Spans(), r)
	}
	return td
}

// probeResource is the resource of a probe's metrics and trace.
func probeResource(rb *metadata.ResourceBuilder, r *probe.Result) pcommon.Resource {
	t := r.Target
	if t.Kind == probe.Roundtrip {
		rb.SetEmailqosProbeKindRoundtrip()
	} else {
		rb.SetEmailqosProbeKindTransit()
	}
	rb.SetEmailqosTarget(t.Name)
	rb.SetEmailqosSender(t.Sender.Key)
	rb.SetEmailqosReceiver(t.Receiver.Key)
	rb.SetEmailqosDirection(t.Direction)
	rb.SetEmailqosErrorCode(int64(r.Code))
	rb.SetErrorType(r.ErrorType)
	switch r.Placement {
	case probe.PlacementInbox:
		rb.SetEmailqosPlacementInbox()
	case probe.PlacementJunk:
		rb.SetEmailqosPlacementJunk()
	case probe.PlacementMissing:
		rb.SetEmailqosPlacementMissing()
	case probe.PlacementPromotions:
		rb.SetEmailqosPlacementPromotions()
	case probe.PlacementSocial:
		rb.SetEmailqosPlacementSocial()
	case probe.PlacementUpdates:
		rb.SetEmailqosPlacementUpdates()
	case probe.PlacementForums:
		rb.SetEmailqosPlacementForums()
	}
	return rb.Emit()
}

func appendProbeSpans(spans ptrace.SpanSlice, r *probe.Result) {
	traceID := newTraceID()
	rootID := newSpanID()

	end := r.Start.Add(r.Total)
	// Steps after the measurement (cleanup, logout) end after Total; the
	// root span covers them all.
	for _, tm := range r.Timings {
		if e := tm.Start.Add(tm.Duration); e.After(end) {
			end = e
		}
	}

	root := spans.AppendEmpty()
	root.SetTraceID(traceID)
	root.SetSpanID(rootID)
	root.SetName(spanProbe)
	root.SetKind(ptrace.SpanKindInternal)
	root.SetStartTimestamp(pcommon.NewTimestampFromTime(r.Start))
	root.SetEndTimestamp(pcommon.NewTimestampFromTime(end))
	attrs := root.Attributes()
	attrs.PutInt(attrErrorCode, int64(r.Code))
	if r.Delivered {
		attrs.PutDouble(attrLatency, ms(r.DeliveryLatency))
		attrs.PutStr(attrMethod, string(r.Method))
		attrs.PutDouble(attrUncertainty, ms(r.Uncertainty))
	}
	if r.Commands > 0 {
		attrs.PutInt(attrCommands, int64(r.Commands))
	}

	// A verified delivery status notice about the probe (RFC 3464): a
	// failure ended it as bounced, a delay did not.
	for _, n := range r.Notices {
		ev := root.Events().AppendEmpty()
		ev.SetName(eventNotice)
		ev.SetTimestamp(pcommon.NewTimestampFromTime(n.At))
		ev.Attributes().PutStr("emailqos.notice.action", n.Action)
		if n.Status != "" {
			ev.Attributes().PutStr("smtp.enhanced_status", n.Status)
		}
		if n.ReplyCode != 0 {
			ev.Attributes().PutInt("emailqos.smtp.reply_code", int64(n.ReplyCode))
		}
		if n.ReportingMTA != "" {
			ev.Attributes().PutStr("emailqos.notice.reporting_mta", n.ReportingMTA)
		}
	}

	failedStep := ""
	if r.Err != nil {
		attrs.PutStr(attrErrorType, r.ErrorType)
		root.Status().SetCode(ptrace.StatusCodeError)
		root.Status().SetMessage(r.ErrorType)
		var se *steps.Error
		if errors.As(r.Err, &se) {
			failedStep = se.Step
		}
	} else {
		root.Status().SetCode(ptrace.StatusCodeOk)
	}

	for _, tm := range r.Timings {
		sp := spans.AppendEmpty()
		sp.SetTraceID(traceID)
		sp.SetSpanID(newSpanID())
		sp.SetParentSpanID(rootID)
		sp.SetName(tm.Step)
		sp.SetKind(stepKind(tm.Step))
		sp.SetStartTimestamp(pcommon.NewTimestampFromTime(tm.Start))
		sp.SetEndTimestamp(pcommon.NewTimestampFromTime(tm.Start.Add(tm.Duration)))
		sp.Attributes().PutStr(attrStep, tm.Step)
		if tm.Step == failedStep {
			sp.Attributes().PutStr(attrErrorType, r.ErrorType)
			sp.Status().SetCode(ptrace.StatusCodeError)
			sp.Status().SetMessage(r.ErrorType)
		}
	}
}

// stepKind: the delivery wait is this collector waiting, every other step is
// a conversation with a server.
func stepKind(step string) ptrace.SpanKind {
	if step == steps.DeliveryWait {
		return ptrace.SpanKindInternal
	}
	return ptrace.SpanKindClient
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func newTraceID() pcommon.TraceID {
	var id pcommon.TraceID
	_, _ = rand.Read(id[:]) // never fails (crypto/rand documents it)
	return id
}

func newSpanID() pcommon.SpanID {
	var id pcommon.SpanID
	_, _ = rand.Read(id[:])
	return id
}
