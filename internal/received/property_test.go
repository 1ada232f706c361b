package received

import (
	"math/rand/v2"
	"testing"
	"time"
)

// TestSplitProperty: for any chain, however broken its stamps, the hops and
// segments are never negative and add up to the measured latency exactly.
func TestSplitProperty(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	base := time.Date(2026, 9, 14, 10, 0, 0, 0, time.UTC)
	bys := []string{"smtp.gmail.com", "mx.google.com", "mail-wr1-f41.google.com", "a.mail.protection.outlook.com",
		"b.prod.exchangelabs.com", "gateway.relay.example", "2002:a05::1", "localhost", ""}
	span := func(max time.Duration) time.Duration { return time.Duration(rng.Int64N(int64(max))) }

	for i := range 20000 {
		sent := base.Add(span(time.Hour))
		accepted := sent.Add(span(10 * time.Second))
		arrived := accepted.Add(span(5*time.Minute) - time.Second) // sometimes before the 250
		n := rng.IntN(9)
		hops := make([]Hop, n)
		for k := range hops {
			hops[k].By = bys[rng.IntN(len(bys))]
			switch rng.IntN(10) {
			case 0: // no stamp
			case 1: // far off: forged, or a broken clock
				hops[k].Time = accepted.Add(time.Duration(rng.Int64N(1<<62)) - 1<<61).Truncate(time.Second)
				hops[k].Resolution = time.Second
			case 2: // sub-second resolution
				hops[k].Time = accepted.Add(span(time.Minute) - 30*time.Second)
				hops[k].Resolution = time.Millisecond
			default: // near the delivery, in a clock up to a minute off
				off := span(2*time.Minute) - time.Minute
				hops[k].Time = accepted.Add(off + span(arrived.Sub(accepted)+time.Second)).Truncate(time.Second)
				hops[k].Resolution = time.Second
			}
		}
		p := Probe{Sent: sent, Accepted: accepted, Arrived: arrived,
			SenderDomains: []string{"google.com"}, ReceiverDomains: []string{"outlook.com", "exchangelabs.com"}}
		b, err := Split(hops, p)
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		checkInvariants(t, b)
		if want := max(arrived.Sub(accepted), 0); b.Delivery != want {
			t.Fatalf("case %d: delivery %v, measured %v", i, b.Delivery, want)
		}
		if n > 0 && len(b.Hops) != n {
			t.Fatalf("case %d: %d hop times for %d hops", i, len(b.Hops), n)
		}
		if b.Skew.Known && (b.Skew.Offset < b.Skew.Min || b.Skew.Offset > b.Skew.Max) && !(b.Skew.Min <= 0 && b.Skew.Max >= 0) {
			t.Fatalf("case %d: skew %v outside [%v, %v]", i, b.Skew.Offset, b.Skew.Min, b.Skew.Max)
		}
	}
}
