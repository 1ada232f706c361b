// Package authres reads the Authentication-Results header fields (RFC 8601)
// of a delivered message and reports the receiving side's SPF, DKIM, DMARC
// and ARC verdicts.
//
// Only fields the receiving side added can be believed: the sender, or anyone
// on the way, can write an Authentication-Results field of their own into
// the message. Evaluate therefore takes a list of trusted authserv-ids (the
// receiving provider's); without one it believes the authserv-id of the
// topmost field, the one added last, by the server that delivered the
// message into the mailbox. A receiver that adds no field of its own at
// all then leaves the sender's topmost one to be believed, which is why a
// configured list is better.
//
// The parser is written for this package rather than taken from a library:
// real fields carry comments holding ";" and "=" (OpenDKIM's "(2048-bit key;
// unprotected)", Gmail's "arc=pass (i=1 spf=pass ...)"), quoted values, and
// Microsoft 365 omits the authserv-id; the selector and signature properties
// are needed to tell several DKIM signatures apart.
package authres

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/mail"
	"strings"

	"github.com/emersion/go-message/textproto"
	"golang.org/x/net/publicsuffix"
)

// FieldName is the header field this package reads.
const FieldName = "Authentication-Results"

// Result values of RFC 8601 section 2.7 (and RFC 7601's older "hardfail").
const (
	Pass      = "pass"
	Fail      = "fail"
	SoftFail  = "softfail"
	Neutral   = "neutral"
	None      = "none"
	TempError = "temperror"
	PermError = "permerror"
	Policy    = "policy"
)

// Result is one method's result (a resinfo) in an Authentication-Results
// field.
type Result struct {
	// Method is the method name in lower case, without a version: "spf",
	// "dkim", "dmarc", "arc", or any other ("compauth", "iprev", ...).
	Method string
	// Value is the result in lower case: "pass", "fail", "softfail", ...
	Value string
	// Reason is the reason= text, if any.
	Reason string
	// Props holds the properties by "ptype.property" in lower case
	// ("smtp.mailfrom", "header.d", "header.i", "header.from", ...), with
	// the values as written. Non-standard words of the form key=value
	// (Microsoft 365's "action=none") are kept under their key.
	Props map[string]string
}

// Prop returns the property key ("header.d"), or "".
func (r Result) Prop(key string) string { return r.Props[strings.ToLower(key)] }

// Field is one parsed Authentication-Results header field.
type Field struct {
	// AuthServID names the server that evaluated the message; "" when the
	// field has none (Microsoft 365 writes it that way).
	AuthServID string
	Results    []Result
}

// Verdict is the receiving side's verdict for one method.
type Verdict struct {
	// Value is the aggregate result; "" when the trusted fields report
	// nothing for the method (unlike "none": checked, nothing to check).
	Value string
	// Aligned reports, for SPF and DKIM, whether the passing identity's
	// domain is aligned (relaxed, as DMARC defines it) with the From
	// domain. False when nothing passed or there is no From domain.
	Aligned bool
	// Results are the method's results the verdict was made from, in the
	// order written: for DKIM one per signature.
	Results []Result
}

// Report is what Evaluate found.
type Report struct {
	// Fields are the trusted fields the verdicts come from, topmost first.
	Fields []Field
	// Ignored counts the Authentication-Results fields not believed.
	Ignored int
	// FromDomain is the author domain alignment was checked against: the
	// DMARC result's header.from, else the message's From address.
	FromDomain string
	SPF        Verdict
	DKIM       Verdict
	DMARC      Verdict
	ARC        Verdict
	// Other holds the results of any other method (compauth, iprev, auth,
	// ...), topmost field first.
	Other []Result
}

// Evaluate reads the Authentication-Results fields of a header block (or a
// whole message) and reports the verdicts of the fields it trusts: those
// whose authserv-id is in trusted (case-insensitive; "" names a field
// without one), or, when trusted is empty, those with the authserv-id of
// the topmost field. The topmost field was added last, by the server that
// delivered the message into the mailbox, so it is the receiving side's;
// its other fields with that id are believed too because some receivers
// write one field per check (Postfix with the OpenDKIM, OpenDMARC and SPF
// milters).
//
// A method's results come from the topmost trusted field that reports the
// method: a receiver that reports a method once per message is not
// overruled by a copy of its authserv-id further down, which is where a
// field written by the sender would be.
//
// Fields that do not parse completely still give the results that did; the
// error then says what was wrong. A header block the reader stopped on
// part-way is used as far as it was read: servers prepend their fields.
func Evaluate(header []byte, trusted []string) (Report, error) {
	h, readErr := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(header)))
	var rep Report
	var errs []error
	if readErr != nil {
		errs = append(errs, fmt.Errorf("header: %w", readErr))
	}
	values := h.Values(FieldName) // topmost first
	if len(trusted) == 0 && len(values) > 0 {
		// The topmost field is the receiving side's: believe its
		// authserv-id.
		f, _ := ParseField(values[0])
		trusted = []string{f.AuthServID}
	}
	for _, v := range values {
		f, err := ParseField(v)
		if !isTrusted(f.AuthServID, trusted) {
			rep.Ignored++
			continue
		}
		if err != nil {
			errs = append(errs, err)
		}
		rep.Fields = append(rep.Fields, f)
	}

	seen := map[string]bool{}
	byMethod := map[string][]Result{}
	for _, f := range rep.Fields {
		here := map[string]bool{}
		for _, r := range f.Results {
			if seen[r.Method] {
				continue // a lower field's copy of a method already reported
			}
			here[r.Method] = true
			switch r.Method {
			case "spf", "dkim", "dmarc", "arc":
				byMethod[r.Method] = append(byMethod[r.Method], r)
			default:
				rep.Other = append(rep.Other, r)
			}
		}
		for m := range here {
			seen[m] = true
		}
	}

	rep.FromDomain = fromDomain(byMethod["dmarc"], h.Get("From"))
	rep.SPF = single(byMethod["spf"])
	if rep.SPF.Value == Pass {
		rep.SPF.Aligned = aligned(domainOf(rep.SPF.Results[0].Prop("smtp.mailfrom")), rep.FromDomain)
	}
	rep.DKIM = dkimVerdict(byMethod["dkim"], rep.FromDomain)
	rep.DMARC = single(byMethod["dmarc"])
	rep.ARC = single(byMethod["arc"])
	return rep, errors.Join(errs...)
}

func isTrusted(id string, trusted []string) bool {
	id = normHost(id)
	for _, t := range trusted {
		if normHost(t) == id {
			return true
		}
	}
	return false
}

func normHost(s string) string { return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(s)), ".") }

// single is the verdict of a method reported once per message: the first
// result written.
func single(rs []Result) Verdict {
	if len(rs) == 0 {
		return Verdict{}
	}
	return Verdict{Value: rs[0].Value, Results: rs}
}

// dkimRank orders DKIM results from best to worst: when no signature
// passes, the most definite failure is reported.
var dkimRank = map[string]int{Pass: 0, Fail: 1, PermError: 2, TempError: 3, Policy: 4, Neutral: 5, SoftFail: 6, None: 7}

// dkimVerdict aggregates the signatures' results: pass and aligned if any
// aligned signature passed, else pass (not aligned) if any passed, else the
// worst failure.
func dkimVerdict(rs []Result, from string) Verdict {
	if len(rs) == 0 {
		return Verdict{}
	}
	v := Verdict{Results: rs}
	best := -1
	for i, r := range rs {
		if r.Value == Pass && aligned(dkimDomain(r), from) {
			v.Value, v.Aligned = Pass, true
			return v
		}
		if best < 0 || rank(r.Value) < rank(rs[best].Value) {
			best = i
		}
	}
	v.Value = rs[best].Value
	return v
}

func rank(value string) int {
	if r, ok := dkimRank[value]; ok {
		return r
	}
	return len(dkimRank)
}

// dkimDomain is the signing domain: header.d, else the domain of header.i.
func dkimDomain(r Result) string {
	if d := r.Prop("header.d"); d != "" {
		return d
	}
	return domainOf(r.Prop("header.i"))
}

// fromDomain is the author domain: the DMARC result's header.from (what the
// receiver evaluated), else the message's From address.
func fromDomain(dmarc []Result, from string) string {
	for _, r := range dmarc {
		if d := normHost(r.Prop("header.from")); d != "" {
			return d
		}
	}
	if a, err := mail.ParseAddress(from); err == nil {
		return normHost(domainOf(a.Address))
	}
	return ""
}

// domainOf is the part after the last "@", or s itself when it has none.
func domainOf(s string) string {
	return normHost(s[strings.LastIndexByte(s, '@')+1:])
}

// aligned reports relaxed identifier alignment (RFC 7489 section 3.1): both
// domains share one organizational domain.
func aligned(a, b string) bool {
	a, b = normHost(a), normHost(b)
	if a == "" || b == "" {
		return false
	}
	if a == b {
		return true
	}
	oa, err1 := publicsuffix.EffectiveTLDPlusOne(a)
	ob, err2 := publicsuffix.EffectiveTLDPlusOne(b)
	return err1 == nil && err2 == nil && oa == ob
}
