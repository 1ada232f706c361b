package received

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func readSample(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	require.NoError(t, err)
	return b
}

func mustTime(t testing.TB, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339Nano, s)
	require.NoError(t, err)
	return v
}

// hopSummary is what the sample tests compare of each hop.
type hopSummary struct {
	By, With string
	TLS      bool
	Time     string // RFC 3339 in UTC, "" for none
}

func summarize(hops []Hop) []hopSummary {
	out := make([]hopSummary, len(hops))
	for i, h := range hops {
		out[i] = hopSummary{By: h.By, With: h.With, TLS: h.TLS}
		if !h.Time.IsZero() {
			out[i].Time = h.Time.UTC().Format(time.RFC3339Nano)
		}
	}
	return out
}

var (
	gmailDomains = []string{"gmail.com", "google.com"}
	m365Domains  = []string{"outlook.com", "office365.com", "exchangelabs.com"}
)

func TestSamples(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		file  string
		hops  []hopSummary
		probe Probe
		want  Breakdown // Hops and Skew.Known/Min/Max compared separately
		per   []time.Duration
		segs  []Segment
		skew  Skew
	}{{
		file: "gmail-to-gmail.eml",
		hops: []hopSummary{
			{"smtp.gmail.com", "ESMTPSA", true, "2026-09-14T10:04:05Z"},
			{"mx.google.com", "SMTPS", true, "2026-09-14T10:04:06Z"},
			{"2002:a05:7208:3104:b0:a4:2a4c:5a27", "SMTP", false, "2026-09-14T10:04:07Z"},
		},
		probe: Probe{
			Sent: mustTime(t, "2026-09-14T10:04:04.8Z"), Accepted: mustTime(t, "2026-09-14T10:04:05.6Z"),
			Arrived:       mustTime(t, "2026-09-14T10:04:08.2Z"),
			SenderDomains: gmailDomains, ReceiverDomains: []string{"mx.google.com"},
		},
		want: Breakdown{Total: 3400 * ms, Delivery: 2600 * ms, Submission: 800 * ms, Outbound: 900 * ms, Inbound: 1000 * ms, Store: 700 * ms},
		per:  []time.Duration{900 * ms, 1000 * ms, 700 * ms},
		segs: []Segment{Outbound, Inbound, Store},
		skew: Skew{Known: true, Min: -600 * ms, Max: 1200 * ms},
	}, {
		file: "gmail-to-m365.eml",
		hops: []hopSummary{
			{"smtp.gmail.com", "ESMTPSA", true, "2026-09-14T10:04:05Z"},
			{"mail-wr1-f41.google.com", "SMTP", false, "2026-09-14T10:04:06Z"},
			{"AM2PEPF0001C70F.mail.protection.outlook.com", "Microsoft SMTP Server", true, "2026-09-14T10:04:07Z"},
			{"AM6PR04CA0047.outlook.office365.com", "Microsoft SMTP Server", true, "2026-09-14T10:04:08Z"},
			{"AM0PR01MB6418.eurprd01.prod.exchangelabs.com", "Microsoft SMTP Server", true, "2026-09-14T10:04:08Z"},
			{"AS8PR01MB7431.eurprd01.prod.exchangelabs.com", "HTTPS", true, "2026-09-14T10:04:09Z"},
		},
		probe: Probe{
			Sent: mustTime(t, "2026-09-14T10:04:04.7Z"), Accepted: mustTime(t, "2026-09-14T10:04:05.4Z"),
			Arrived:       mustTime(t, "2026-09-14T10:04:10.3Z"),
			SenderDomains: gmailDomains, ReceiverDomains: m365Domains,
		},
		want: Breakdown{Total: 5600 * ms, Delivery: 4900 * ms, Submission: 700 * ms, Outbound: 2100 * ms, Inbound: 2000 * ms, Store: 800 * ms},
		per:  []time.Duration{1100 * ms, 1000 * ms, 1000 * ms, 0, 1000 * ms, 800 * ms},
		segs: []Segment{Outbound, Outbound, Inbound, Inbound, Inbound, Store},
		skew: Skew{Known: true, Min: -400 * ms, Max: 1300 * ms},
	}, {
		file: "m365-to-gmail.eml",
		hops: []hopSummary{
			{"AM9P195CA0021.outlook.office365.com", "Microsoft SMTP Server", true, "2026-09-14T10:10:01Z"},
			{"DB9PR01MB8262.eurprd01.prod.exchangelabs.com", "Microsoft SMTP Server", true, "2026-09-14T10:10:01Z"},
			{"AS8PR01MB7431.eurprd01.prod.exchangelabs.com", "Microsoft SMTP Server", true, "2026-09-14T10:10:02Z"},
			{"mx.google.com", "ESMTPS", true, "2026-09-14T10:10:03Z"},
			{"2002:a05:7208:3104:b0:a4:2a4c:5a27", "SMTP", false, "2026-09-14T10:10:04Z"},
		},
		probe: Probe{
			Sent: mustTime(t, "2026-09-14T10:10:00.9Z"), Accepted: mustTime(t, "2026-09-14T10:10:01.8Z"),
			Arrived:       mustTime(t, "2026-09-14T10:10:05.1Z"),
			SenderDomains: m365Domains, ReceiverDomains: gmailDomains,
		},
		// The second hop's stamp (10:10:01, taken as 01.5) lies before the
		// 250 reply (01.8) within its second: moved, no residual.
		want: Breakdown{Total: 4200 * ms, Delivery: 3300 * ms, Submission: 900 * ms, Outbound: 1700 * ms, Inbound: 1000 * ms, Store: 600 * ms},
		per:  []time.Duration{0, 700 * ms, 1000 * ms, 1000 * ms, 600 * ms},
		segs: []Segment{Outbound, Outbound, Outbound, Inbound, Store},
		skew: Skew{Known: true, Min: -800 * ms, Max: 1100 * ms},
	}, {
		file: "postfix-dovecot.eml",
		hops: []hopSummary{
			{"mx.a.test", "ESMTPSA", true, "2026-11-21T19:38:52Z"},
			{"mx.b.test", "ESMTPS", true, "2026-11-21T19:38:52Z"},
			{"mail.b.test", "LMTP", false, "2026-11-21T19:38:52Z"},
		},
		probe: Probe{
			Sent: mustTime(t, "2026-11-21T19:38:52.1Z"), Accepted: mustTime(t, "2026-11-21T19:38:52.18Z"),
			Arrived:       mustTime(t, "2026-11-21T19:38:52.4Z"),
			SenderDomains: []string{"a.test"}, ReceiverDomains: []string{"b.test"},
		},
		// Sub-second delivery in one second of stamps: the hops' share
		// cannot be resolved; it all stays with the first.
		want: Breakdown{Total: 300 * ms, Delivery: 220 * ms, Submission: 80 * ms, Outbound: 220 * ms},
		per:  []time.Duration{220 * ms, 0, 0},
		segs: []Segment{Outbound, Inbound, Store},
		skew: Skew{Known: true, Min: -180 * ms, Max: 900 * ms},
	}, {
		// The collector's clock is 30 s behind the providers'.
		file: "gmail-to-m365.eml",
		hops: nil, // as above
		probe: Probe{
			Sent: mustTime(t, "2026-09-14T10:03:34.7Z"), Accepted: mustTime(t, "2026-09-14T10:03:35.4Z"),
			Arrived:       mustTime(t, "2026-09-14T10:03:40.3Z"),
			SenderDomains: gmailDomains, ReceiverDomains: m365Domains,
		},
		want: Breakdown{Total: 5600 * ms, Delivery: 4900 * ms, Submission: 700 * ms, Outbound: 2500 * ms, Inbound: 2000 * ms, Store: 400 * ms},
		per:  []time.Duration{1500 * ms, 1000 * ms, 1000 * ms, 0, 1000 * ms, 400 * ms},
		segs: []Segment{Outbound, Outbound, Inbound, Inbound, Inbound, Store},
		skew: Skew{Known: true, Offset: 29600 * ms, Min: 29600 * ms, Max: 31300 * ms},
	}}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			raw := readSample(t, tc.file)
			hops, err := Parse(raw)
			require.NoError(t, err)
			if tc.hops != nil {
				assert.Equal(t, tc.hops, summarize(hops))
			}
			// CRLF, as IMAP and POP3 deliver it, reads the same.
			crlf, err := Parse(bytes.ReplaceAll(raw, []byte("\n"), []byte("\r\n")))
			require.NoError(t, err)
			assert.Equal(t, summarize(hops), summarize(crlf))

			got, err := Split(hops, tc.probe)
			require.NoError(t, err)
			checkInvariants(t, got)
			assert.Equal(t, tc.skew, got.Skew)
			var per []time.Duration
			var segs []Segment
			for _, h := range got.Hops {
				per = append(per, h.Duration)
				segs = append(segs, h.Segment)
			}
			assert.Equal(t, tc.per, per)
			assert.Equal(t, tc.segs, segs)
			got.Hops, got.Skew = nil, Skew{}
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestHostileSample(t *testing.T) {
	hops, err := Parse(readSample(t, "hostile.eml"))
	require.NoError(t, err)
	require.Len(t, hops, 8)
	for _, i := range []int{1, 2, 3, 4} {
		assert.True(t, hops[i].Time.IsZero(), "hop %d: %q has no usable date", i, hops[i].Raw)
	}
	assert.Equal(t, 2034, hops[5].Time.Year())

	ms := time.Millisecond
	got, err := Split(hops, Probe{
		Sent: mustTime(t, "2026-09-14T10:04:04.8Z"), Accepted: mustTime(t, "2026-09-14T10:04:05.6Z"),
		Arrived:       mustTime(t, "2026-09-14T10:04:08.2Z"),
		SenderDomains: gmailDomains, ReceiverDomains: []string{"mx.google.com"},
	})
	require.NoError(t, err)
	checkInvariants(t, got)
	// The forged future stamp moves down to the next hop's: it takes no
	// time, the honest hops keep theirs, and the residual shows the lie.
	assert.Equal(t, 900*ms, got.Outbound)
	assert.Equal(t, time.Duration(0), got.Relay)
	assert.Equal(t, 1000*ms, got.Inbound)
	assert.Equal(t, 700*ms, got.Store)
	assert.Greater(t, got.Skew.Residual, 24*time.Hour*365*7)
	segs := make([]Segment, len(got.Hops))
	for i, h := range got.Hops {
		segs[i] = h.Segment
	}
	assert.Equal(t, []Segment{Outbound, Outbound, Outbound, Outbound, Outbound, Relay, Inbound, Store}, segs)
}

func TestParseField(t *testing.T) {
	tests := []struct {
		name, value string
		want        Hop
	}{{
		// The in-process mail system's stamp (internal/mailtest).
		name:  "mailtest",
		value: "from localhost (127.0.0.1)\r\n\tby mailtest.local with ESMTPSA id 3\r\n\tfor <probe@example.com>; Mon, 14 Sep 2026 10:00:00 +0000",
		want: Hop{From: "localhost", FromInfo: "127.0.0.1", FromIP: "127.0.0.1", By: "mailtest.local", With: "ESMTPSA",
			ID: "3", For: "probe@example.com", TLS: true},
	}, {
		name:  "plain ESMTP, address literal, IPv6 tag",
		value: "from [IPv6:2001:db8::1] by mx.example.com with ESMTP id abc; 14 Sep 2026 10:00:00 GMT",
		want:  Hop{From: "[IPv6:2001:db8::1]", FromIP: "2001:db8::1", By: "mx.example.com", With: "ESMTP", ID: "abc"},
	}, {
		name:  "no semicolon before the date",
		value: "from a.example by b.example with SMTP Mon, 14 Sep 2026 10:00:00 +0000",
		want:  Hop{From: "a.example", By: "b.example", With: "SMTP"},
	}, {
		name:  "semicolon inside a comment",
		value: "from a.example (x; y) by b.example; Mon, 14 Sep 2026 10:00:00 +0000",
		want:  Hop{From: "a.example", FromInfo: "x; y", By: "b.example"},
	}, {
		name:  "nothing",
		value: "",
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := ParseField(tc.value)
			tc.want.Raw = tc.value
			if tc.value != "" {
				assert.Equal(t, mustTime(t, "2026-09-14T10:00:00Z"), got.Time.UTC())
				assert.Equal(t, time.Second, got.Resolution)
			}
			got.Time, got.Resolution = time.Time{}, 0
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestParseDate(t *testing.T) {
	tests := []struct {
		in   string
		want string // RFC 3339 UTC; "" = error
		res  time.Duration
	}{
		{"Mon, 14 Sep 2026 03:04:05 -0700 (PDT)", "2026-09-14T10:04:05Z", time.Second},
		{"Mon, 14 Sep 2026 10:04:05 +0000", "2026-09-14T10:04:05Z", time.Second},
		{"14 Sep 2026 10:04:05 +0000", "2026-09-14T10:04:05Z", time.Second},
		{"Mon,14 Sep 2026 10:04:05 +0000", "2026-09-14T10:04:05Z", time.Second},
		{"  Mon, 14\r\n Sep 2026\t10:04:05   +0000  ", "2026-09-14T10:04:05Z", time.Second},
		{"Monday, 14 September 2026 10:04:05 +0000", "2026-09-14T10:04:05Z", time.Second},
		{"Mon, 4 Sep 2026 1:4:5 +0000", "2026-09-04T01:04:05Z", time.Second},
		{"Mon, 14 Sep 26 10:04:05 GMT", "2026-09-14T10:04:05Z", time.Second},
		{"Mon, 14 Sep 99 10:04:05 UT", "1999-09-14T10:04:05Z", time.Second},
		{"Mon, 14 Sep 2026 10:04:05 EDT", "2026-09-14T14:04:05Z", time.Second},
		{"Mon, 14 Sep 2026 10:04:05 +02:00", "2026-09-14T08:04:05Z", time.Second},
		{"Mon, 14 Sep 2026 10:04:05", "2026-09-14T10:04:05Z", time.Second},
		{"Mon, 14 Sep 2026 10:04 +0000", "2026-09-14T10:04:00Z", time.Minute},
		{"Mon, 14 Sep 2026 10:04:05.123 +0000", "2026-09-14T10:04:05.123Z", time.Millisecond},
		{"Mon, 14 Sep 2026 10:04:05.1234567 +0000", "2026-09-14T10:04:05.1234567Z", 100 * time.Nanosecond},
		{"Mon, 14 Sep 2026 23:59:60 +0000", "2026-09-14T23:59:59Z", time.Second},
		{"Mon Sep 14 10:04:05 2026", "2026-09-14T10:04:05Z", time.Second},
		{"Sep 14 10:04:05 2026 +0100", "2026-09-14T09:04:05Z", time.Second},
		{"2026-09-14T10:04:05Z", "2026-09-14T10:04:05Z", time.Second},
		{"2026-09-14T10:04:05.25+02:00", "2026-09-14T08:04:05.25Z", 10 * time.Millisecond},
		{"", "", 0},
		{"garbage", "", 0},
		{"30 Feb 2026 10:00:00 +0000", "", 0},
		{"14 Foo 2026 10:00:00 +0000", "", 0},
		{"14 Sep 2026 25:00:00 +0000", "", 0},
		{"14 Sep 2026 10:61:00 +0000", "", 0},
		{"14 Sep 2026 10:00:00 +9999", "", 0},
		{"14 Sep 2026 10:00:00 CEST", "", 0},
		{"14 Sep 2026 10:00:00 +0000 trailing", "", 0},
		{"14 Sep 202 10:00:00 +0000", "", 0},
		{"14 Sep 2026 10:00:00.x +0000", "", 0},
		{"-1 Sep 2026 10:00:00 +0000", "", 0},
	}
	for _, tc := range tests {
		got, res, err := ParseDate(tc.in)
		if tc.want == "" {
			assert.Error(t, err, "%q", tc.in)
			continue
		}
		if assert.NoError(t, err, "%q", tc.in) {
			assert.Equal(t, tc.want, got.UTC().Format(time.RFC3339Nano), "%q", tc.in)
			assert.Equal(t, tc.res, res, "%q", tc.in)
		}
	}
}

func TestSplitEdges(t *testing.T) {
	sent := mustTime(t, "2026-09-14T10:00:00Z")
	accepted := sent.Add(500 * time.Millisecond)
	arrived := accepted.Add(2 * time.Second)
	stamp := func(s string) Hop { return ParseField("from x by mx.example.com with ESMTP; " + s) }

	t.Run("no hops: all delivery is store", func(t *testing.T) {
		got, err := Split(nil, Probe{Sent: sent, Accepted: accepted, Arrived: arrived})
		require.NoError(t, err)
		checkInvariants(t, got)
		assert.Equal(t, 2*time.Second, got.Store)
		assert.Equal(t, []HopTime{{Hop: -1, Segment: Store, Start: accepted, Duration: 2 * time.Second}}, got.Hops)
		assert.False(t, got.Skew.Known)
	})
	t.Run("one hop (round trip on one server)", func(t *testing.T) {
		got, err := Split([]Hop{stamp("14 Sep 2026 10:00:00 +0000")}, Probe{Sent: sent, Accepted: accepted, Arrived: arrived})
		require.NoError(t, err)
		checkInvariants(t, got)
		assert.Equal(t, 2*time.Second, got.Store)
		assert.True(t, got.Skew.Known)
		assert.Equal(t, time.Duration(0), got.Skew.Offset)
	})
	t.Run("seen before the 250 reply", func(t *testing.T) {
		got, err := Split([]Hop{stamp("14 Sep 2026 10:00:00 +0000"), stamp("14 Sep 2026 10:00:00 +0000")},
			Probe{Sent: sent, Accepted: accepted, Arrived: accepted.Add(-time.Millisecond)})
		require.NoError(t, err)
		checkInvariants(t, got)
		assert.Equal(t, time.Duration(0), got.Delivery)
		assert.Equal(t, 500*time.Millisecond, got.Total)
	})
	t.Run("first stamp a day off is not a skew", func(t *testing.T) {
		got, err := Split([]Hop{stamp("15 Sep 2026 10:00:01 +0000"), stamp("14 Sep 2026 10:00:01 +0000")},
			Probe{Sent: sent, Accepted: accepted, Arrived: arrived})
		require.NoError(t, err)
		checkInvariants(t, got)
		assert.False(t, got.Skew.Known)
		assert.Equal(t, time.Duration(0), got.Skew.Residual)
		assert.Equal(t, time.Second, got.Outbound) // 10:00:00.5 to 10:00:01.5
	})
	t.Run("late stamp beyond arrival", func(t *testing.T) {
		got, err := Split([]Hop{stamp("14 Sep 2026 10:00:00 +0000"), stamp("14 Sep 2026 10:00:09 +0000")},
			Probe{Sent: sent, Accepted: accepted, Arrived: arrived})
		require.NoError(t, err)
		checkInvariants(t, got)
		assert.Equal(t, 2*time.Second, got.Outbound)
		// The stamp allows 10:00:08 (T - Skew.Max) at the earliest; it
		// was moved to the arrival, 10:00:02.5.
		assert.Equal(t, 5500*time.Millisecond, got.Skew.Residual)
	})
	t.Run("errors", func(t *testing.T) {
		_, err := Split(nil, Probe{Sent: sent, Accepted: sent.Add(-time.Second), Arrived: arrived})
		assert.Error(t, err)
		_, err = Split(nil, Probe{Accepted: accepted, Arrived: arrived})
		assert.Error(t, err)
	})
}

func TestParseBounds(t *testing.T) {
	var b bytes.Buffer
	for i := range 150 {
		b.WriteString("Received: from a by b" + string(rune('a'+i%26)) + ".example; 14 Sep 2026 10:00:00 +0000\r\n")
	}
	b.WriteString("\r\n")
	hops, err := Parse(b.Bytes())
	assert.Error(t, err)
	assert.Len(t, hops, maxHops)

	// A header cut off mid-field (the reader's size limit) still gives the
	// fields read.
	hops, err = Parse([]byte("Received: from a by b.example; 14 Sep 2026 10:00:00 +0000\r\nX-Broken no colon\r\n"))
	assert.Error(t, err)
	assert.Len(t, hops, 1)
}

// checkInvariants checks what Split promises for any input.
func checkInvariants(t testing.TB, b Breakdown) {
	t.Helper()
	for _, d := range []time.Duration{b.Total, b.Delivery, b.Submission, b.Outbound, b.Relay, b.Inbound, b.Store, b.Skew.Residual} {
		if d < 0 {
			t.Fatalf("negative duration in %+v", b)
		}
	}
	if b.Submission+b.Delivery != b.Total {
		t.Fatalf("submission %v + delivery %v != total %v", b.Submission, b.Delivery, b.Total)
	}
	if s := b.Outbound + b.Relay + b.Inbound + b.Store; s != b.Delivery {
		t.Fatalf("segments add up to %v, delivery is %v: %+v", s, b.Delivery, b)
	}
	var sum time.Duration
	bySeg := map[Segment]time.Duration{}
	for i, h := range b.Hops {
		if h.Duration < 0 {
			t.Fatalf("hop %d negative: %+v", i, h)
		}
		if i > 0 && !h.Start.Equal(b.Hops[i-1].Start.Add(b.Hops[i-1].Duration)) {
			t.Fatalf("hop %d does not start where hop %d ends", i, i-1)
		}
		sum += h.Duration
		bySeg[h.Segment] += h.Duration
	}
	if len(b.Hops) == 0 || sum != b.Delivery {
		t.Fatalf("hops add up to %v, delivery is %v", sum, b.Delivery)
	}
	if bySeg[Outbound] != b.Outbound || bySeg[Relay] != b.Relay || bySeg[Inbound] != b.Inbound || bySeg[Store] != b.Store || bySeg[Submission] != 0 {
		t.Fatalf("hops per segment %v disagree with %+v", bySeg, b)
	}
}
