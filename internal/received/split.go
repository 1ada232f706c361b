package received

import (
	"errors"
	"net/netip"
	"strings"
	"time"
)

// Segment names a part of a delivery.
type Segment string

const (
	// Submission is the submission server accepting the message: from the
	// probe's send instant to the server's 250 reply to DATA, measured by
	// the collector.
	Submission Segment = "submission"
	// Outbound is the sending provider relaying the message: from the 250
	// reply, through the submission server's queue and the provider's
	// other hops, until the next side stamps it.
	Outbound Segment = "outbound"
	// Relay is hops between the two providers that belong to neither
	// (a forwarder, a filtering gateway).
	Relay Segment = "relay"
	// Inbound is the receiving provider's hops, from the first one whose
	// server is in the receiver's domains until the last Received stamp.
	Inbound Segment = "inbound"
	// Store is the mailbox store: from the last Received stamp until the
	// message was seen over IMAP or POP3.
	Store Segment = "store"
)

// Probe is what the collector measured of one probe, in its own clock, and
// whose domains the providers' servers are in.
type Probe struct {
	// Sent is when the submission began; the later (the DATA command
	// rather than the connect), the tighter the clock skew estimate.
	Sent time.Time
	// Accepted is when the server's 250 reply to DATA was read.
	Accepted time.Time
	// Arrived is when the message was seen in the mailbox.
	Arrived time.Time
	// SenderDomains are the sending provider's domains ("gmail.com",
	// "google.com"); a server is in one when its name is the domain or
	// ends in "." + the domain.
	SenderDomains []string
	// ReceiverDomains are the receiving provider's domains or its MX
	// hosts. When one provider sends and receives, name its MX hosts
	// ("mx.google.com") so that its outbound hops are not taken as
	// inbound.
	ReceiverDomains []string
}

// Skew is the clock offset of the submission server against the
// collector, estimated from its Received stamp.
type Skew struct {
	// Known is false when the first hop has no readable timestamp, or one
	// more than a day from the collector's clock: no skew is then applied.
	Known bool
	// Offset is the skew applied: server clock minus collector clock. Zero
	// when the stamp is consistent with no skew.
	Offset time.Duration
	// Min and Max bound the skew: the stamp was written between Sent and
	// Accepted, truncated to its resolution.
	Min, Max time.Duration
	// Residual is the largest amount any later stamp had to be moved,
	// beyond what the skew bounds and its resolution allow, to keep hops
	// in order and within the delivery: other servers' clocks disagreeing,
	// or forged dates. Zero for a consistent chain.
	Residual time.Duration
}

// HopTime is the part of the delivery spent at one hop: from its stamp (the
// 250 reply for the first hop) until the next hop's stamp (arrival for the
// last).
type HopTime struct {
	// Hop indexes the hops given to Split; -1 when there were none.
	Hop      int
	Segment  Segment
	Start    time.Time // collector clock
	Duration time.Duration
}

// Breakdown is a probe's latency split over segments and hops.
type Breakdown struct {
	// Total is Arrived - Sent: Submission plus Delivery.
	Total time.Duration
	// Delivery is Arrived - Accepted, zero when the message was seen
	// before the 250 reply was read (as the probe reports it). Outbound,
	// Relay, Inbound and Store add up to it exactly.
	Delivery time.Duration
	Submission,
	Outbound,
	Relay,
	Inbound,
	Store time.Duration
	// Hops splits Delivery per hop, in chain order; their durations add
	// up to it exactly.
	Hops []HopTime
	Skew Skew
}

// Split splits a probe's latency over the hops of its Received chain (as
// Parse returns it: the submission server first).
//
// The first hop is the submission server. Its stamp was written between
// Sent and Accepted, so it bounds the skew between its clock and the
// collector's (Skew.Min, Skew.Max, widened by its resolution); the skew
// applied is the bound nearest zero, zero when the bounds hold it. It is
// applied to every stamp: the big providers' servers keep time, so a skew
// is most likely the collector's own.
//
// Each later stamp marks when that hop took the message in. A stamp of
// resolution r stands for the middle of its unit (T + r/2), the expected
// instant of a truncated clock. The stamps are then brought within
// [Accepted, Arrived] and into order, so that no hop is negative: either
// each is raised to the one before it or each is lowered to the one after
// it, whichever moves them less in total, so that one broken or forged
// date moves its own hop only. The most any stamp had to move beyond its
// uncertainty (resolution and skew bounds) is reported as Skew.Residual.
// A hop without a readable stamp takes no time; the hop before it keeps
// it.
//
// Every duration is a difference of consecutive instants from Accepted to
// Arrived, so the hops and segments add up to Delivery exactly, to the
// nanosecond; nothing is rounded.
//
// Hops are classified by their By server: the first hop after the
// submission server whose server is in ReceiverDomains begins Inbound, and
// every hop after it is Inbound; before it, hops in SenderDomains are
// Outbound and others Relay, and a hop whose server has no domain name (an
// address, a bare name) belongs with the hop before.
// The submission server's time after its 250 reply counts as Outbound, and
// the last hop's time (from the last stamp to arrival) as Store.
func Split(hops []Hop, p Probe) (Breakdown, error) {
	if p.Sent.IsZero() || p.Accepted.IsZero() || p.Arrived.IsZero() {
		return Breakdown{}, errors.New("received: sent, accepted and arrived instants are required")
	}
	if p.Accepted.Before(p.Sent) {
		return Breakdown{}, errors.New("received: accepted before sent")
	}
	// Strip the monotonic clock readings: stamps have none, and mixing
	// would make differences depend on which instant carries one.
	sent, accepted, arrived := p.Sent.Round(0), p.Accepted.Round(0), p.Arrived.Round(0)
	if arrived.Before(accepted) {
		arrived = accepted
	}
	b := Breakdown{
		Submission: accepted.Sub(sent),
		Delivery:   arrived.Sub(accepted),
	}
	b.Total = b.Submission + b.Delivery

	if len(hops) == 0 {
		b.Store = b.Delivery
		b.Hops = []HopTime{{Hop: -1, Segment: Store, Start: accepted, Duration: b.Delivery}}
		return b, nil
	}

	b.Skew = estimateSkew(hops[0], sent, accepted)
	classes := classify(hops, p.SenderDomains, p.ReceiverDomains)

	// points[k] is when hop k took the message in, in the collector's
	// clock; points[0] is the 250 reply, points[n] the arrival.
	n := len(hops)
	points := make([]time.Time, n+1)
	points[0], points[n] = accepted, arrived
	var timed []int
	var want []time.Time
	for k := 1; k < n; k++ {
		if h := hops[k]; !h.Time.IsZero() {
			timed = append(timed, k)
			want = append(want, clampTime(h.Time.Add(h.Resolution/2-b.Skew.Offset), accepted, arrived))
		}
	}
	got := inOrder(want, accepted, arrived)
	for j, k := range timed {
		points[k] = got[j]
		b.Skew.Residual = max(b.Skew.Residual, beyond(hops[k], got[j], b.Skew))
	}
	// An untimed hop takes the next stamp: no time of its own.
	for k, j := n-1, len(timed)-1; k >= 1; k-- {
		if j >= 0 && timed[j] == k {
			j--
			continue
		}
		points[k] = points[k+1]
	}

	b.Hops = make([]HopTime, n)
	for k := 0; k < n; k++ {
		seg := classes[k]
		if k == n-1 {
			seg = Store
		}
		d := points[k+1].Sub(points[k])
		b.Hops[k] = HopTime{Hop: k, Segment: seg, Start: points[k], Duration: d}
		switch seg {
		case Outbound:
			b.Outbound += d
		case Relay:
			b.Relay += d
		case Inbound:
			b.Inbound += d
		case Store:
			b.Store += d
		}
	}
	return b, nil
}

// maxSkew bounds a believable skew: a first stamp further off is a broken
// or forged date, not a clock, and is not used.
const maxSkew = 24 * time.Hour

// inOrder returns the instants of want (each within [lo, hi]) made
// non-decreasing, either by raising each to the one before it or by
// lowering each to the one after it, whichever moves them less in total:
// one broken or forged stamp then moves only itself, whether it is too
// early (raised) or too late (lowered).
func inOrder(want []time.Time, lo, hi time.Time) []time.Time {
	up := make([]time.Time, len(want))
	down := make([]time.Time, len(want))
	prev := lo
	for j, t := range want {
		if t.Before(prev) {
			t = prev
		}
		up[j], prev = t, t
	}
	next := hi
	for j := len(want) - 1; j >= 0; j-- {
		t := want[j]
		if t.After(next) {
			t = next
		}
		down[j], next = t, t
	}
	var moveUp, moveDown time.Duration
	for j := range want {
		moveUp += up[j].Sub(want[j])
		moveDown += want[j].Sub(down[j])
	}
	if moveDown < moveUp {
		return down
	}
	return up
}

func clampTime(t, lo, hi time.Time) time.Time {
	if t.Before(lo) {
		return lo
	}
	if t.After(hi) {
		return hi
	}
	return t
}

// estimateSkew bounds the first hop's clock against the collector's: its
// stamp T, of resolution r, was written at a collector instant c in
// [sent, accepted], so T <= c + skew < T + r.
func estimateSkew(h Hop, sent, accepted time.Time) Skew {
	if h.Time.IsZero() || h.Time.Sub(accepted).Abs() > maxSkew {
		return Skew{}
	}
	res := h.Resolution
	if res <= 0 {
		res = time.Second
	}
	s := Skew{Known: true, Min: h.Time.Sub(accepted), Max: h.Time.Add(res).Sub(sent)}
	switch {
	case s.Min > 0:
		s.Offset = s.Min
	case s.Max < 0:
		s.Offset = s.Max
	}
	return s
}

// beyond is how far instant t (collector clock) lies outside what hop h's
// stamp allows given the skew bounds: [T - Max, T + r - Min].
func beyond(h Hop, t time.Time, s Skew) time.Duration {
	lo, hi := h.Time.Add(-s.Offset), h.Time.Add(h.Resolution-s.Offset)
	if s.Known {
		lo, hi = h.Time.Add(-s.Max), h.Time.Add(h.Resolution-s.Min)
	}
	switch {
	case t.Before(lo):
		return lo.Sub(t)
	case t.After(hi):
		return t.Sub(hi)
	}
	return 0
}

// classify gives each hop its segment by its By server; hop 0 (the
// submission server) counts as Outbound after its 250 reply.
func classify(hops []Hop, sender, receiver []string) []Segment {
	out := make([]Segment, len(hops))
	out[0] = Outbound
	inbound := false
	for k := 1; k < len(hops); k++ {
		by := hostName(hops[k].By)
		switch {
		case inbound || inDomains(by, receiver):
			inbound = true
			out[k] = Inbound
		case by == "":
			out[k] = out[k-1]
		case inDomains(by, sender):
			out[k] = Outbound
		default:
			out[k] = Relay
		}
	}
	return out
}

// hostName is s as a lower-case domain name, or "" when it is an address
// or has no dot (an internal name says nothing about whose it is).
func hostName(s string) string {
	s = strings.TrimSuffix(strings.ToLower(strings.Trim(s, "[]")), ".")
	if _, err := netip.ParseAddr(strings.TrimPrefix(s, "ipv6:")); err == nil || !strings.Contains(s, ".") {
		return ""
	}
	return s
}

func inDomains(host string, domains []string) bool {
	if host == "" {
		return false
	}
	for _, d := range domains {
		d = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), ".")
		if d != "" && (host == d || strings.HasSuffix(host, "."+d)) {
			return true
		}
	}
	return false
}
