package emailqosreceiver

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/receiver/receivertest"

	"github.com/emailqos/emailqosreceiver/internal/imapwatch"
	"github.com/emailqos/emailqosreceiver/internal/mailtest"
	"github.com/emailqos/emailqosreceiver/internal/metadata"
	"github.com/emailqos/emailqosreceiver/internal/probe"
	"github.com/emailqos/emailqosreceiver/internal/steps"
)

func traceTarget(name string, kind probe.Kind, from, to string) *probe.Target {
	return &probe.Target{
		Name: name, Kind: kind, Direction: from + ":" + to,
		Sender: &probe.Account{Key: from}, Receiver: &probe.Account{Key: to},
	}
}

func TestBuildTracesOneTracePerProbe(t *testing.T) {
	t0 := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	ok := probe.Result{
		Target: traceTarget("gmail", probe.Roundtrip, "gmail", "gmail"),
		Start:  t0, Total: 900 * time.Millisecond,
		Delivered: true, DeliveryLatency: 700 * time.Millisecond,
		Method: imapwatch.MethodIdle, Uncertainty: time.Millisecond, Commands: 7,
		Timings: []steps.Timing{
			{Step: steps.IMAPConnect, Start: at(0), Duration: 20 * time.Millisecond},
			{Step: steps.IMAPLogin, Start: at(20), Duration: 30 * time.Millisecond},
			{Step: steps.SMTPConnect, Start: at(60), Duration: 10 * time.Millisecond},
			{Step: steps.SMTPSubmit, Start: at(80), Duration: 100 * time.Millisecond},
			{Step: steps.DeliveryWait, Start: at(180), Duration: 700 * time.Millisecond},
			// Cleanup runs after the measured total.
			{Step: steps.IMAPDelete, Start: at(950), Duration: 50 * time.Millisecond},
		},
	}
	secretText := errors.New("dial tcp 127.0.0.1:25: connection refused (host secret.example)")
	failed := probe.Result{
		Target: traceTarget("gmail:o365", probe.Transit, "gmail", "o365"),
		Start:  t0, Total: 15 * time.Millisecond,
		Timings: []steps.Timing{
			{Step: steps.IMAPConnect, Start: at(0), Duration: 5 * time.Millisecond},
			{Step: steps.SMTPConnect, Start: at(6), Duration: 9 * time.Millisecond},
		},
		Code: steps.CodeSMTPConnect, ErrorType: steps.TypeConnect,
		Err: &steps.Error{Step: steps.SMTPConnect, Code: steps.CodeSMTPConnect, Type: steps.TypeConnect, Err: secretText},
	}

	td := buildTraces(metadata.DefaultResourceAttributesConfig(), []probe.Result{ok, failed})
	require.Equal(t, 2, td.ResourceSpans().Len())
	assert.Equal(t, 2+len(ok.Timings)+len(failed.Timings), td.SpanCount())

	seenTraces := map[pcommon.TraceID]bool{}
	seenSpans := map[pcommon.SpanID]bool{}
	for i, r := range []probe.Result{ok, failed} {
		rs := td.ResourceSpans().At(i)
		dir, _ := rs.Resource().Attributes().Get("emailqos.direction")
		assert.Equal(t, r.Target.Direction, dir.Str())
		code, _ := rs.Resource().Attributes().Get("emailqos.error_code")
		assert.Equal(t, int64(r.Code), code.Int())

		spans := rs.ScopeSpans().At(0).Spans()
		require.Equal(t, 1+len(r.Timings), spans.Len())
		root := spans.At(0)
		assert.Equal(t, spanProbe, root.Name())
		assert.True(t, root.ParentSpanID().IsEmpty())
		assert.False(t, seenTraces[root.TraceID()], "a trace per probe")
		seenTraces[root.TraceID()] = true

		for j := 0; j < spans.Len(); j++ {
			sp := spans.At(j)
			assert.False(t, seenSpans[sp.SpanID()], "span IDs are unique")
			seenSpans[sp.SpanID()] = true
			assert.Equal(t, root.TraceID(), sp.TraceID())
			if j == 0 {
				continue
			}
			tm := r.Timings[j-1]
			assert.Equal(t, tm.Step, sp.Name())
			assert.Equal(t, root.SpanID(), sp.ParentSpanID())
			assert.Equal(t, pcommon.NewTimestampFromTime(tm.Start), sp.StartTimestamp())
			assert.Equal(t, tm.Duration, sp.EndTimestamp().AsTime().Sub(sp.StartTimestamp().AsTime()))
			// The root covers every step, cleanup after the total included.
			assert.GreaterOrEqual(t, sp.StartTimestamp(), root.StartTimestamp())
			assert.LessOrEqual(t, sp.EndTimestamp(), root.EndTimestamp())
		}
	}

	okSpans := td.ResourceSpans().At(0).ScopeSpans().At(0).Spans()
	assert.Equal(t, ptrace.StatusCodeOk, okSpans.At(0).Status().Code())
	lat, _ := okSpans.At(0).Attributes().Get(attrLatency)
	assert.InDelta(t, 700.0, lat.Double(), 1e-9)
	assert.Equal(t, pcommon.NewTimestampFromTime(at(1000)), okSpans.At(0).EndTimestamp())
	assert.Equal(t, ptrace.SpanKindInternal, okSpans.At(5).Kind(), "delivery wait")
	assert.Equal(t, ptrace.SpanKindClient, okSpans.At(1).Kind())

	failSpans := td.ResourceSpans().At(1).ScopeSpans().At(0).Spans()
	assert.Equal(t, ptrace.StatusCodeError, failSpans.At(0).Status().Code())
	assert.Equal(t, steps.TypeConnect, failSpans.At(0).Status().Message())
	assert.Equal(t, ptrace.StatusCodeUnset, failSpans.At(1).Status().Code(), "imap.connect did not fail")
	assert.Equal(t, ptrace.StatusCodeError, failSpans.At(2).Status().Code(), "smtp.connect failed")
	// No raw error text anywhere in the trace.
	var all []string
	for j := 0; j < failSpans.Len(); j++ {
		sp := failSpans.At(j)
		all = append(all, sp.Status().Message())
		sp.Attributes().Range(func(_ string, v pcommon.Value) bool { all = append(all, v.AsString()); return true })
	}
	for _, s := range all {
		assert.NotContains(t, s, "secret.example")
		assert.NotContains(t, s, "refused")
	}
}

// A receiver in a metrics and a traces pipeline runs each probe once and
// reports it to both: the same directions, and as many traces as probes.
func TestMetricsAndTracesShareOneReceiver(t *testing.T) {
	srv := startMail(t, mailtest.Options{})
	cfg := testConfig(map[string]AccountConfig{
		"a": mailAccount(srv, alice, "alice-pw"),
		"b": mailAccount(srv, bob, "bob-pw"),
	})
	cfg.CollectionInterval = time.Hour // one collection, at start
	cfg.InitialDelay = 0
	cfg.Roundtrip = []RoundtripConfig{{Account: "a"}}
	cfg.Transit.Directions = []string{"a:b"}
	// One session per probe, so that every probe has the IMAP login span
	// (sharing a's mailbox, a:a might join the session a:b's bounce watch
	// opened, with no login of its own).
	for k, a := range cfg.Accounts {
		a.ShareSession = new(bool)
		cfg.Accounts[k] = a
	}
	require.NoError(t, confmap.Validate(cfg))

	f := NewFactory()
	set := receivertest.NewNopSettings(metadata.Type)
	metricsSink, tracesSink := new(consumertest.MetricsSink), new(consumertest.TracesSink)
	mr, err := f.CreateMetrics(context.Background(), set, cfg, metricsSink)
	require.NoError(t, err)
	tr, err := f.CreateTraces(context.Background(), set, cfg, tracesSink)
	require.NoError(t, err)
	assert.Same(t, mr, tr, "one receiver per configuration")

	host := componenttest.NewNopHost()
	require.NoError(t, mr.Start(context.Background(), host))
	require.NoError(t, tr.Start(context.Background(), host))
	require.Eventually(t, func() bool {
		return len(metricsSink.AllMetrics()) > 0 && len(tracesSink.AllTraces()) > 0
	}, 20*time.Second, 20*time.Millisecond)
	require.NoError(t, tr.Shutdown(context.Background()))
	require.NoError(t, mr.Shutdown(context.Background()))

	require.Len(t, metricsSink.AllMetrics(), 1)
	require.Len(t, tracesSink.AllTraces(), 1)
	assert.Equal(t, 2, srv.Deliveries(), "each probe ran once")

	td := tracesSink.AllTraces()[0]
	dirs := map[string]bool{}
	for i := 0; i < td.ResourceSpans().Len(); i++ {
		rs := td.ResourceSpans().At(i)
		dir, _ := rs.Resource().Attributes().Get("emailqos.direction")
		code, _ := rs.Resource().Attributes().Get("emailqos.error_code")
		assert.Equal(t, int64(0), code.Int())
		dirs[dir.Str()] = true
		spans := rs.ScopeSpans().At(0).Spans()
		names := map[string]bool{}
		for j := 0; j < spans.Len(); j++ {
			names[spans.At(j).Name()] = true
		}
		for _, step := range []string{spanProbe, steps.SMTPConnect, steps.SMTPSubmit, steps.DeliveryWait, steps.IMAPLogin} {
			assert.True(t, names[step], "%s: span %s in %v", dir.Str(), step, names)
		}
	}
	assert.Equal(t, map[string]bool{"a:a": true, "a:b": true}, dirs)

	// A second Start or Shutdown of the shared receiver is harmless, and a
	// new receiver can be made for the same configuration afterwards.
	require.NoError(t, mr.Shutdown(context.Background()))
	again, err := f.CreateMetrics(context.Background(), set, cfg, metricsSink)
	require.NoError(t, err)
	assert.NotSame(t, mr, again)
	require.NoError(t, again.Shutdown(context.Background()))
}

// TestTraceBounceEvent: each verified notice seen during the wait is an
// event of the root span, with its action, status, reply code and
// reporting MTA; a bounced probe's root span is an error of type bounced.
func TestTraceBounceEvent(t *testing.T) {
	t0 := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	r := probe.Result{
		Target: traceTarget("a:b", probe.Transit, "a", "b"),
		Start:  t0, Total: 600 * time.Millisecond,
		Notices: []probe.NoticeEvent{
			{At: t0.Add(300 * time.Millisecond), Action: "delayed", Status: "4.3.0", ReplyCode: 451, ReportingMTA: "mx.a.test"},
			{At: t0.Add(550 * time.Millisecond), Action: "failed", Status: "5.7.1", ReplyCode: 554, ReportingMTA: "mx.a.test"},
		},
		Code: steps.CodeSearch, ErrorType: steps.TypeBounced,
		Err: &steps.Error{Step: steps.DeliveryWait, Code: steps.CodeSearch, Type: steps.TypeBounced, Err: errors.New("bounced")},
	}
	td := buildTraces(metadata.DefaultResourceAttributesConfig(), []probe.Result{r})
	root := td.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0)
	require.Equal(t, spanProbe, root.Name())
	assert.Equal(t, ptrace.StatusCodeError, root.Status().Code())
	assert.Equal(t, steps.TypeBounced, root.Status().Message())
	require.Equal(t, 2, root.Events().Len())
	for i, want := range r.Notices {
		ev := root.Events().At(i)
		assert.Equal(t, eventNotice, ev.Name())
		assert.Equal(t, want.At, ev.Timestamp().AsTime())
		a := ev.Attributes().AsRaw()
		assert.Equal(t, want.Action, a["emailqos.notice.action"])
		assert.Equal(t, want.Status, a["smtp.enhanced_status"])
		assert.Equal(t, int64(want.ReplyCode), a["emailqos.smtp.reply_code"])
		assert.Equal(t, want.ReportingMTA, a["emailqos.notice.reporting_mta"])
	}
}
