// Package received reads the Received header chain of a delivered message
// into hops and splits a probe's delivery latency over them: submission, the
// sending provider's outbound, third-party relays, the receiving provider's
// inbound and the mailbox store.
package received

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/emersion/go-message/textproto"
)

// FieldName is the header field this package reads.
const FieldName = "Received"

// maxHops bounds the hops kept of one message: RFC 5321 section 6.3 lets a
// server reject a message after 100 hops, so more is a loop or an attack.
const maxHops = 100

// Hop is one Received field: one server taking the message in.
type Hop struct {
	// From is the name the sending side gave (its EHLO name or address
	// literal); FromInfo the comment after it (the server's view: reverse
	// DNS name and address); FromIP the address in it, when stated.
	From     string
	FromInfo string
	FromIP   string
	// By is the receiving server's name.
	By string
	// With is the protocol: "ESMTPS", "ESMTPSA", "LMTP", "HTTPS",
	// "Microsoft SMTP Server", ...
	With string
	// ID is the server's identifier of the message (a queue id).
	ID string
	// For is the recipient address named, without angle brackets.
	For string
	// TLS reports that the hop was encrypted: stated by the protocol
	// (RFC 3848: ESMTPS, ESMTPSA, LMTPS, ...; HTTPS) or by a TLS comment.
	TLS bool
	// TLSVersion and TLSCipher are as the comment states them ("TLSv1.3",
	// "TLS1_3"; "TLS_AES_256_GCM_SHA384"), "" when not stated.
	TLSVersion string
	TLSCipher  string
	// Time is the timestamp after the final ";", in the server's clock; the
	// zero time when missing or not readable. Resolution is its unit: a
	// second usually, finer when fractions of seconds are written.
	Time       time.Time
	Resolution time.Duration
	// Raw is the unfolded field value.
	Raw string
}

// Parse reads the Received fields of a header block (or a whole message)
// and returns the hops in the order the message took them: the first hop
// (the submission server, the bottom field) first, the last hop (the
// topmost field) last.
//
// Fields are read as far as they can be: a field that is not a proper
// Received still gives a hop (with what could be read, possibly nothing but
// Raw), so that positions in the chain stay right. A header block the
// reader stopped on part-way is used as far as it was read, and the error
// says why it stopped.
func Parse(header []byte) ([]Hop, error) {
	h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(header)))
	if err != nil {
		err = fmt.Errorf("received: header: %w", err)
	}
	values := h.Values(FieldName) // topmost first
	if len(values) > maxHops {
		// The topmost fields are the receiving side's, the most trusted.
		values = values[:maxHops]
		err = errors.Join(err, fmt.Errorf("received: more than %d hops", maxHops))
	}
	hops := make([]Hop, len(values))
	for i, v := range values {
		hops[len(values)-1-i] = ParseField(v)
	}
	return hops, err
}

// ParseField reads one Received field value.
func ParseField(value string) Hop {
	h := Hop{Raw: value}
	clauses, date := splitDate(value)
	if date != "" {
		if t, res, err := ParseDate(date); err == nil {
			h.Time, h.Resolution = t, res
		}
	}

	toks := tokenize(clauses)
	var cur *string
	var curInfo *string
	for _, t := range toks {
		if t.comment {
			if curInfo != nil && *curInfo == "" {
				*curInfo = t.text
			}
			tlsComment(&h, t.text)
			continue
		}
		switch strings.ToLower(t.text) {
		case "from":
			cur, curInfo = &h.From, &h.FromInfo
			continue
		case "by":
			cur, curInfo = &h.By, nil
			continue
		case "with":
			cur, curInfo = &h.With, nil
			continue
		case "id":
			cur, curInfo = &h.ID, nil
			continue
		case "for":
			cur, curInfo = &h.For, nil
			continue
		case "via":
			cur, curInfo = nil, nil
			continue
		}
		if cur == nil {
			continue
		}
		if cur == &h.With && *cur != "" {
			*cur += " " + t.text // "with Microsoft SMTP Server"
			continue
		}
		if *cur == "" {
			*cur = t.text
		}
		if cur != &h.With {
			cur = nil // one word per clause; "via Frontend Transport" etc. dropped
		}
	}
	h.For = strings.TrimSuffix(strings.TrimPrefix(h.For, "<"), ">")
	h.FromIP = addressIn(h.FromInfo)
	if h.FromIP == "" {
		h.FromIP = addressIn(h.From)
	}
	switch w := strings.ToUpper(h.With); {
	case w == "HTTPS", strings.HasSuffix(w, "SMTPS"), strings.HasSuffix(w, "SMTPSA"),
		w == "LMTPS", w == "LMTPSA":
		h.TLS = true
	}
	return h
}

type token struct {
	text    string
	comment bool
}

// tokenize splits the clauses into words and (outermost) comments; the
// comments' text comes without the parentheses.
func tokenize(s string) []token {
	var toks []token
	for i := 0; i < len(s); {
		switch c := s[i]; {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			i++
		case c == '(':
			end := commentEnd(s, i)
			inner := s[i+1 : end]
			if end < len(s) {
				end++
			}
			toks = append(toks, token{text: strings.TrimSpace(inner), comment: true})
			i = end
		default:
			j := i
			for j < len(s) && !strings.ContainsRune(" \t\r\n(", rune(s[j])) {
				j++
			}
			toks = append(toks, token{text: s[i:j]})
			i = j
		}
	}
	return toks
}

// commentEnd returns the index of the ")" closing the comment opening at i,
// or len(s) when it is not closed.
func commentEnd(s string, i int) int {
	depth := 0
	for ; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 {
				return i
			}
		}
	}
	return len(s)
}

// splitDate splits a field value at its last ";" outside comments into the
// clauses and the date. Without such a ";" (a broken server), the longest
// tail of words that reads as a date is taken.
func splitDate(v string) (clauses, date string) {
	semi := -1
	for i := 0; i < len(v); i++ {
		switch v[i] {
		case '(':
			i = commentEnd(v, i)
		case ';':
			semi = i
		}
	}
	if semi >= 0 {
		return v[:semi], strings.TrimSpace(v[semi+1:])
	}
	words := strings.Fields(v)
	for n := min(len(words), 8); n >= 3; n-- {
		tail := strings.Join(words[len(words)-n:], " ")
		if _, _, err := ParseDate(tail); err == nil {
			return strings.Join(words[:len(words)-n], " "), tail
		}
	}
	return v, ""
}

// tlsComment reads the TLS details servers write in comments:
//
//	Postfix: (using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) ...)
//	Gmail:   (version=TLS1_3 cipher=TLS_AES_256_GCM_SHA384 bits=256/256)
//	M365:    (version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384)
//	Gmail:   (Google Transport Security)
func tlsComment(h *Hop, c string) {
	words := strings.FieldsFunc(c, func(r rune) bool { return r == ' ' || r == ',' || r == '\t' })
	for i, w := range words {
		lw := strings.ToLower(w)
		switch {
		case lw == "using" && i+1 < len(words) && strings.HasPrefix(strings.ToUpper(words[i+1]), "TLS"):
			h.TLS, h.TLSVersion = true, words[i+1]
		case lw == "cipher" && i+1 < len(words) && h.TLS:
			h.TLSCipher = words[i+1]
		case strings.HasPrefix(lw, "version=tls"), strings.HasPrefix(lw, "version=ssl"):
			h.TLS, h.TLSVersion = true, w[len("version="):]
		case strings.HasPrefix(lw, "cipher="):
			h.TLSCipher = w[len("cipher="):]
		}
	}
	if strings.Contains(c, "Google Transport Security") {
		h.TLS = true
	}
}

// addressIn finds an IP address in a comment such as
// "mail.example.com. [192.0.2.1]", "unknown [IPv6:2001:db8::1]" or
// "2603:10a6:208:1::12", or an address literal "[192.0.2.1]".
func addressIn(s string) string {
	for _, w := range strings.Fields(s) {
		w = strings.Trim(w, "[]()<>,;")
		w = strings.TrimPrefix(strings.TrimPrefix(w, "IPv6:"), "ipv6:")
		if a, err := netip.ParseAddr(w); err == nil {
			return a.String()
		}
	}
	return ""
}
