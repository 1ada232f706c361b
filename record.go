package emailqosreceiver // import "github.com/emailqos/emailqosreceiver"

// Turning a probe's result into metrics.

import (
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.uber.org/zap"

	"github.com/emailqos/emailqosreceiver/internal/metadata"
	"github.com/emailqos/emailqosreceiver/internal/probe"
)

// recordToken reports an OAuth account's token state, the counterpart of
// LogicMonitor's Office365_Email_OAUTH DataSource. The token is cached and
// shared with the probes, so the endpoint is asked only when it is due.
func (s *emailqosScraper) recordToken(mb *metadata.MetricsBuilder, now pcommon.Timestamp, key string, st tokenState) {
	valid, left, errType := int64(1), time.Until(st.expiry).Seconds(), ""
	if st.err != nil {
		valid, left, errType = 0, 0, tokenErrorType(st.err)
		s.logger.Warn("oauth token unavailable", zap.String("account", key), zap.String("error.type", errType), zap.Error(st.err))
	}
	mb.RecordEmailqosOauthTokenValidDataPoint(now, valid)
	mb.RecordEmailqosOauthTokenExpiryDataPoint(now, max(left, 0))
	rb := mb.NewResourceBuilder()
	rb.SetEmailqosAccount(key)
	rb.SetErrorType(errType)
	mb.EmitForResource(metadata.WithResource(rb.Emit()))
}

// unknownName notes a value of the engine that metadata.yaml's enum for
// attr lacks, whose datapoint is therefore not recorded. names_test.go
// keeps the two in step; this is for a build where they drifted.
func (s *emailqosScraper) unknownName(attr, value string) {
	s.logger.Debug("value missing from metadata.yaml, datapoint not recorded",
		zap.String("attribute", attr), zap.String("value", value))
}

func (s *emailqosScraper) record(mb *metadata.MetricsBuilder, now pcommon.Timestamp, r *probe.Result) {
	t := r.Target
	if r.Transcript != nil {
		s.logger.Info("probe transcript", zap.String("target", t.Name), zap.Strings("lines", r.Transcript.Lines()))
	}
	if r.Err != nil {
		fields := []zap.Field{zap.String("target", t.Name), zap.String("direction", t.Direction),
			zap.Int("error_code", r.Code), zap.String("error.type", r.ErrorType), zap.Error(r.Err)}
		if r.SMTPReply.Code != 0 {
			fields = append(fields, zap.Int("smtp.reply_code", r.SMTPReply.Code),
				zap.String("smtp.enhanced_status", r.SMTPReply.Enhanced))
		}
		if r.Transcript != nil {
			fields = append(fields, zap.Strings("transcript", r.Transcript.Last(s.cfg.Transcript.Lines)))
		}
		s.logger.Warn("probe failed", fields...)
	} else {
		s.logger.Debug("probe succeeded",
			zap.String("target", t.Name), zap.String("direction", t.Direction),
			zap.Duration("total", r.Total), zap.Duration("delivery_latency", r.DeliveryLatency),
			zap.String("method", string(r.Method)), zap.String("placement", r.Placement), zap.Int("imap_commands", r.Commands))
	}

	if t.Kind == probe.Roundtrip {
		mb.RecordEmailqosRoundtripDurationDataPoint(now, r.Total.Seconds())
	} else {
		mb.RecordEmailqosTransitDurationDataPoint(now, r.Total.Seconds())
	}
	if r.Delivered {
		mb.RecordEmailqosDeliveryLatencyDataPoint(now, r.DeliveryLatency.Seconds())
		if method, ok := metadata.MapAttributeMethod[string(r.Method)]; ok {
			mb.RecordEmailqosDeliveryUncertaintyDataPoint(now, r.Uncertainty.Seconds(), method)
		} else {
			s.unknownName("method", string(r.Method))
		}
		junk := int64(0)
		if r.Placement == probe.PlacementJunk {
			junk = 1
		}
		mb.RecordEmailqosDeliveryJunkDataPoint(now, junk)
		if rv := t.Receiver.Retrieval; rv == "" || rv == probe.RetrievalIMAP {
			silent := int64(0)
			if r.IdleNoPush {
				silent = 1
			}
			mb.RecordEmailqosImapIdleSilentDataPoint(now, silent)
		}
	}
	if r.Commands > 0 {
		mb.RecordEmailqosImapCommandsDataPoint(now, int64(r.Commands))
	}
	mb.RecordEmailqosProbesLateDataPoint(now, int64(r.Late))
	mb.RecordEmailqosProbesSweptDataPoint(now, int64(r.Swept+r.SweptNotices))
	if r.NoticesWatched {
		mb.RecordEmailqosDeliveryDelayNoticesDataPoint(now, int64(r.DelayNotices))
		mb.RecordEmailqosProbesBouncedLateDataPoint(now, int64(r.LateBounces))
	}
	for _, tm := range r.Timings {
		if step, ok := metadata.MapAttributeStep[tm.Step]; ok {
			mb.RecordEmailqosStepDurationDataPoint(now, tm.Duration.Seconds(), step)
		} else {
			s.unknownName("step", tm.Step)
		}
	}
	for _, h := range r.TLS {
		proto, ok := metadata.MapAttributeProtocol[h.Protocol]
		if !ok {
			s.unknownName("protocol", h.Protocol)
			continue
		}
		if v := h.VersionNumber(); v > 0 {
			mb.RecordEmailqosTLSVersionDataPoint(now, v, proto)
		}
		if !h.NotAfter.IsZero() {
			mb.RecordEmailqosTLSCertificateTimeLeftDataPoint(now, h.NotAfter.Sub(now.AsTime()).Seconds(), proto)
		}
	}
	if r.SMTPReply.Code != 0 {
		mb.RecordEmailqosSMTPReplyCodeDataPoint(now, int64(r.SMTPReply.Code), r.SMTPReply.Enhanced)
	}
	recordMessage(mb, now, r)
	if r.Err == nil || r.Deferrals > 0 {
		mb.RecordEmailqosSMTPDeferralsDataPoint(now, int64(r.Deferrals))
	}
	if r.Delivered && r.Deferrals > 0 {
		mb.RecordEmailqosSMTPDeferredDurationDataPoint(now, r.DeferredFor.Seconds())
	}
	mb.RecordEmailqosErrorCodeDataPoint(now, int64(r.Code))
	success := int64(0)
	if r.Err == nil {
		success = 1
	}
	mb.RecordEmailqosSuccessDataPoint(now, success)

	mb.EmitForResource(metadata.WithResource(probeResource(mb.NewResourceBuilder(), r)))
}
