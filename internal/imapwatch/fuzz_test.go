package imapwatch

import (
	"bytes"
	"encoding/binary"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/emailqos/emailqosreceiver/internal/probemsg"
)

// What this package makes of server-provided data without a network, and
// what the fuzz targets below check about it:
//
//   - FuzzHeaderToken: the header block a FETCH BODY.PEEK[HEADER] returns
//     (relays and the server may have added anything to it) goes through
//     tokenValues/hasToken, the exact-token check of Wait and FindProbes,
//     before the probe engine's accept function (probemsg.Parse and the
//     MAC) sees it. No header may panic them, a server must not make them
//     match a token the header does not carry, and a header that
//     probemsg.Parse accepts as a genuine probe must not be dropped as a
//     lookalike before accept is asked.
//   - FuzzCandidates: the UID set a UID SEARCH returns is enumerated by
//     candidates; whatever ranges the server answers with (reversed, "*",
//     overlapping, up to 2^32-1), the result must stay within the limit,
//     above the baseline and inside the answer, and be complete when it
//     reports no more.
//   - FuzzTimeline: the counts of unilateral EXISTS and EXPUNGE responses and
//     SELECT results drive the timeline's arithmetic; interleaved in any
//     order with the session's own calls, the counts must stay within what
//     the server reported (no wrap-around) and window must return a
//     well-formed interval.

// fuzzKey is the probe MAC key of the headers in the seed corpus.
var fuzzKey = []byte("emailqos imapwatch fuzz key")

// fuzzProbeHeader is the header block (blank line included, as BODY[HEADER]
// returns it) of a probe built by probemsg, and its token.
func fuzzProbeHeader(token string) []byte {
	p := probemsg.Probe{
		Token:  token,
		SentAt: time.Date(2025, 1, 2, 3, 4, 5, 600, time.UTC),
		From:   "alice@a.test",
		To:     "bob@b.test",
		Target: "a:b",
	}
	msg := p.Build(fuzzKey)
	end := bytes.Index(msg, []byte("\r\n\r\n"))
	return msg[:end+4]
}

func FuzzHeaderToken(f *testing.F) {
	const token = "eqaaaaaaaaaaaaaaaaaaaaaaaaaa"
	const other = "eqbbbbbbbbbbbbbbbbbbbbbbbbbb"
	probe := fuzzProbeHeader(token)
	received := "Received: from mx.a.test (mx.a.test [192.0.2.1])\r\n\tby mx.b.test with ESMTPS id 4Xyz\r\n\tfor <bob@b.test>; Thu, 2 Jan 2025 03:04:06 +0000\r\n"
	for _, s := range []struct {
		header []byte
		token  string
	}{
		{probe, token},
		{probe, other},
		{append([]byte(received), probe...), token},
		{append([]byte(received+"Authentication-Results: mx.b.test; dkim=none\r\nX-Spam-Score: 0.1\r\n"), probe...), token},
		{bytes.ReplaceAll(probe, []byte("X-Emailqos-Token"), []byte("x-emailqos-token")), token},
		{bytes.ReplaceAll(probe, []byte("\r\n"), []byte("\n")), token},
		{fuzzProbeHeader(other), token},
		{[]byte("Subject: " + token + "\r\nX-Emailqos-Token: " + token + "x\r\n\r\n"), token},
		{[]byte("X-Emailqos-Token: " + other + "\r\nX-Emailqos-Token:  " + token + " \r\n\r\n"), token},
		{[]byte("X-Emailqos-Token: eq\r\n " + token + "\r\n\r\n"), token},
		{[]byte(" X-Emailqos-Token: " + token + "\r\n\r\n"), token},
		{[]byte("X-Emailqos-Token: " + token), token},
		{[]byte{}, ""},
		{[]byte("\r\n"), "eq"},
		{[]byte("X-Emailqos-Token:\xff\xfe\r\n\r\n"), "\xff\xfe"},
	} {
		f.Add(s.header, s.token)
	}
	f.Fuzz(func(t *testing.T, header []byte, token string) {
		values := tokenValues(header)
		for _, v := range values {
			if v != strings.TrimSpace(v) {
				t.Fatalf("token value %q is not trimmed", v)
			}
			if !hasToken(header, v) {
				t.Fatalf("hasToken does not find the value %q that tokenValues lists", v)
			}
		}
		if hasToken(header, token) != slices.Contains(values, token) {
			t.Fatalf("hasToken(%q) disagrees with tokenValues %q", token, values)
		}
		// A server cannot make a valid token match that the header does not
		// carry as it is (SEARCH HEADER matches substrings; this is the
		// exact check behind it).
		if probemsg.Searchable(token) && hasToken(header, token) && !bytes.Contains(header, []byte(token)) {
			t.Fatalf("hasToken matched %q, which the header does not contain", token)
		}

		// The probe engine's accept function: when it recognises the header
		// as a genuine probe, the exact-token checks in front of it must
		// not have dropped it already.
		p, err := probemsg.Parse(header, fuzzKey)
		if err != nil {
			return
		}
		if !hasToken(header, p.Token) {
			t.Fatalf("probemsg.Parse accepts the probe %s, but hasToken does not find its token (values %q): Wait would reject it as a lookalike", p.Token, values)
		}
		if !slices.ContainsFunc(values, func(v string) bool { return strings.HasPrefix(v, probemsg.TokenPrefix) }) {
			t.Fatalf("probemsg.Parse accepts the probe %s, but FindProbes would not see a probe token (values %q)", p.Token, values)
		}
	})
}

// fuzzUIDSet reads a UID set from b, eight bytes (start, stop) per range.
func fuzzUIDSet(b []byte) imap.UIDSet {
	var set imap.UIDSet
	for len(b) >= 8 && len(set) < 64 {
		set = append(set, imap.UIDRange{
			Start: imap.UID(binary.LittleEndian.Uint32(b)),
			Stop:  imap.UID(binary.LittleEndian.Uint32(b[4:])),
		})
		b = b[8:]
	}
	return set
}

func fuzzRanges(rs ...[2]uint32) []byte {
	var b []byte
	for _, r := range rs {
		b = binary.LittleEndian.AppendUint32(b, r[0])
		b = binary.LittleEndian.AppendUint32(b, r[1])
	}
	return b
}

func FuzzCandidates(f *testing.F) {
	const top = 1<<32 - 1
	f.Add(fuzzRanges([2]uint32{3, 5}, [2]uint32{9, 9}), uint32(5), uint8(9), uint32(9))
	f.Add(fuzzRanges([2]uint32{1, 100}), uint32(1), uint8(2), uint32(0))
	f.Add(fuzzRanges([2]uint32{top - 5, top}), uint32(1), uint8(99), uint32(top))
	f.Add(fuzzRanges([2]uint32{top, 1}), uint32(top), uint8(63), uint32(1))
	f.Add(fuzzRanges([2]uint32{0, 7}, [2]uint32{7, 0}, [2]uint32{0, 0}), uint32(1), uint8(63), uint32(7))
	f.Add(fuzzRanges([2]uint32{1, 10}, [2]uint32{5, 15}, [2]uint32{10, 1}), uint32(4), uint8(63), uint32(6))
	f.Add([]byte{}, uint32(0), uint8(0), uint32(0))
	f.Fuzz(func(t *testing.T, ranges []byte, baseline uint32, limit uint8, rejectedUID uint32) {
		set := fuzzUIDSet(ranges)
		base := imap.UID(baseline)
		// search and FindProbes pass a positive limit (maxHits or their
		// caller's, defaulted); the rejected UIDs are ones fetched before.
		lim := int(limit) + 1
		rejected := map[imap.UID]struct{}{imap.UID(rejectedUID): {}, base: {}, base + 1: {}}
		got, more := candidates(&imap.SearchData{All: set}, base, rejected, lim)

		if len(got) > lim || more && len(got) != lim {
			t.Fatalf("%d candidates (more %v) for limit %d", len(got), more, lim)
		}
		inSet := func(u imap.UID) bool {
			for _, r := range set {
				lo, hi := min(r.Start, r.Stop), max(r.Start, r.Stop)
				if lo != 0 && lo <= u && u <= hi {
					return true
				}
			}
			return false
		}
		for _, u := range got {
			if _, ok := rejected[u]; ok || u == 0 || u < base || !inSet(u) {
				t.Fatalf("candidate %d: rejected, zero, below baseline %d or not in %v", u, base, set)
			}
		}
		if more {
			return
		}
		// Without more, every UID of the answer that may be the probe is
		// listed; checked where the answer is small enough to enumerate.
		var total uint64
		for _, r := range set {
			total += uint64(max(r.Start, r.Stop) - min(r.Start, r.Stop))
		}
		if total > 4096 {
			return
		}
		for _, r := range set {
			lo, hi := min(r.Start, r.Stop), max(r.Start, r.Stop)
			if lo == 0 {
				continue
			}
			for u := uint64(max(lo, base)); u <= uint64(hi); u++ {
				if _, ok := rejected[imap.UID(u)]; !ok && !slices.Contains(got, imap.UID(u)) {
					t.Fatalf("UID %d of %v is missing from the candidates %v (baseline %d)", u, set, got, base)
				}
			}
		}
	})
}

// Timeline operations of FuzzTimeline, one byte each followed by a 32-bit
// argument.
const (
	tlExists = iota
	tlExpunge
	tlSelect
	tlCheckpoint
	tlIdle
	tlSearched
	tlWindow
	tlQuery
	tlOps
)

func fuzzOps(ops ...[2]uint32) []byte {
	var b []byte
	for _, op := range ops {
		b = append(b, byte(op[0]))
		b = binary.LittleEndian.AppendUint32(b, op[1])
	}
	return b
}

func FuzzTimeline(f *testing.F) {
	f.Add(fuzzOps(
		[2]uint32{tlSelect, 10}, [2]uint32{tlIdle, 1}, [2]uint32{tlExists, 11},
		[2]uint32{tlWindow, 11}, [2]uint32{tlSearched, 0}, [2]uint32{tlExpunge, 3},
		[2]uint32{tlWindow, 10}, [2]uint32{tlQuery, 0},
	))
	f.Add(fuzzOps(
		[2]uint32{tlSelect, 0}, [2]uint32{tlCheckpoint, 0}, [2]uint32{tlExists, 1},
		[2]uint32{tlExists, 2}, [2]uint32{tlCheckpoint, 0}, [2]uint32{tlExpunge, 1},
		[2]uint32{tlExpunge, 1}, [2]uint32{tlWindow, 1}, [2]uint32{tlQuery, 0},
	))
	// A reconnect (odd SELECT argument), with updates while it is in flight.
	f.Add(fuzzOps(
		[2]uint32{tlSelect, 4}, [2]uint32{tlExists, 6}, [2]uint32{tlSelect + 2*tlOps, 0},
		[2]uint32{tlExists, 7}, [2]uint32{tlExpunge, 2}, [2]uint32{tlSelect + 3*tlOps, 7},
		[2]uint32{tlWindow, 5}, [2]uint32{tlQuery, 0},
	))
	f.Add(fuzzOps(
		[2]uint32{tlSelect, 1<<32 - 2}, [2]uint32{tlExists, 1<<32 - 1}, [2]uint32{tlExpunge, 1<<32 - 1},
		[2]uint32{tlWindow, 1<<32 - 1}, [2]uint32{tlWindow, 0}, [2]uint32{tlQuery, 0},
	))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, ops []byte) {
		tl := newTimeline()
		// maxCount is the largest count the server reported: the timeline
		// only ever lowers counts (EXPUNGE) or takes them from the server.
		var maxCount uint32
		selecting := false
		check := func(op string) {
			tl.mu.Lock()
			defer tl.mu.Unlock()
			for _, c := range []struct {
				name string
				n    uint32
			}{{"count", tl.count}, {"searched", tl.searched}, {"base", tl.base}} {
				if c.n > maxCount {
					t.Fatalf("after %s: %s %d exceeds every count the server reported (max %d)", op, c.name, c.n, maxCount)
				}
			}
			for _, e := range tl.events {
				if e.count > maxCount {
					t.Fatalf("after %s: event count %d exceeds every count the server reported (max %d)", op, e.count, maxCount)
				}
			}
			for _, c := range tl.checks {
				if c.count > maxCount {
					t.Fatalf("after %s: check count %d exceeds every count the server reported (max %d)", op, c.count, maxCount)
				}
			}
		}
		for i := 0; i+5 <= len(ops) && i < 5*256; i += 5 {
			arg := binary.LittleEndian.Uint32(ops[i+1:])
			code := ops[i] % tlOps
			// The high bits choose a variant: for a SELECT, whether it is
			// only begun (2), a reconnect (1) or a first SELECT (0).
			variant := ops[i] / tlOps % 4
			var op string
			switch code {
			case tlExists:
				op = "EXISTS"
				maxCount = max(maxCount, arg)
				tl.onExists(arg)
			case tlExpunge:
				op = "EXPUNGE"
				tl.onExpunge(arg)
			case tlSelect:
				op = "SELECT"
				if !selecting {
					floor := tl.reconnectFloor()
					tl.beginSelect()
					selecting = true
					if variant == 2 {
						break // updates may arrive before it completes
					}
					start := time.Now()
					if floor.IsZero() {
						floor = start
					}
					maxCount = max(maxCount, arg)
					tl.finishSelect(start, time.Now(), arg, variant&1 == 1, floor)
				} else {
					floor := tl.reconnectFloor()
					if floor.IsZero() {
						floor = time.Now()
					}
					maxCount = max(maxCount, arg)
					tl.finishSelect(time.Now(), time.Now(), arg, variant&1 == 1, floor)
				}
				selecting = false
			case tlCheckpoint:
				op = "checkpoint"
				tl.checkpoint(time.Now())
			case tlIdle:
				op = "setIdling"
				tl.setIdling(arg&1 == 1)
			case tlSearched:
				op = "markSearched"
				tl.markSearched()
			case tlWindow:
				op = "window"
				fallback := time.Now()
				lo, hi, _ := tl.window(arg, fallback)
				if lo.IsZero() || hi.IsZero() || lo.After(hi) || hi.After(fallback) {
					t.Fatalf("window(%d) = [%v, %v], fallback %v", arg, lo, hi, fallback)
				}
			case tlQuery:
				op = "query"
				now := time.Now()
				_, _ = tl.pending(), tl.foreign()
				if floor := tl.reconnectFloor(); floor.After(now) {
					t.Fatalf("reconnectFloor %v is in the future (now %v)", floor, now)
				}
			}
			check(op)
		}
	})
}
