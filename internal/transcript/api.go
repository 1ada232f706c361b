package transcript

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Protocols of the mail APIs (issue 18): their exchanges are recorded one
// request and one response per line, not byte by byte.
const (
	Graph    Proto = "graph"
	GmailAPI Proto = "gmailapi"
)

// shownQuery are the query parameters whose values an API line shows: they
// select what is asked (fields, formats, history types), never state.
// Every other value (delta and skip tokens, page tokens, anything unknown)
// is shown as its size only, so that nothing opaque, and nothing that could
// one day be a credential, reaches a transcript.
var shownQuery = []string{"$select", "changeType", "format", "historyTypes", "maxResults", "metadataHeaders", "startHistoryId"}

// shownHeaders are the response headers an API line shows: the server's
// throttling request and the ids its support asks for (Graph's request-id
// and client-request-id). Never a request header: Authorization is never
// recorded.
var shownHeaders = []string{"Retry-After", "request-id", "client-request-id"}

// maxShownValue bounds a shown query or header value.
const maxShownValue = 64

// Exchange is one API request and its answer, as recorded.
type Exchange struct {
	Method string
	URL    string
	// ReqBytes is the request body's size (a sent message's MIME is not
	// recorded, as SMTP DATA is not).
	ReqBytes int
	// Status is 0 when no response came; Err then names why (a kind such
	// as "transport" or "timeout", never a server's text).
	Status int
	Err    string
	// Header are the response's headers; only shownHeaders are recorded.
	Header map[string][]string
	// RespBytes is the response body's size; the body itself is not
	// recorded (message headers and MIME are what IMAP transcripts
	// summarise as byte counts).
	RespBytes int
	Duration  time.Duration
}

// API records one exchange of proto (Graph or GmailAPI): a C: line with
// the method, the path and the query as shownQuery allows, a S: line with
// the status, the body size, the duration and the shownHeaders.
func (t *Transcript) API(proto Proto, x Exchange) {
	if t == nil {
		return
	}
	req := x.Method + " " + apiURL(x.URL)
	if x.ReqBytes > 0 {
		req += fmt.Sprintf(" [%d bytes]", x.ReqBytes)
	}
	t.add(proto, Client, req)
	var resp string
	if x.Status == 0 {
		resp = "no response"
		if x.Err != "" {
			resp += " (" + x.Err + ")"
		}
	} else {
		resp = fmt.Sprintf("%d [%d bytes] %.1f ms", x.Status, x.RespBytes, float64(x.Duration)/float64(time.Millisecond))
	}
	for _, h := range shownHeaders {
		for k, vs := range x.Header {
			if strings.EqualFold(k, h) && len(vs) > 0 {
				resp += " " + h + ": " + shown(vs[0])
			}
		}
	}
	t.add(proto, Server, resp)
}

// apiURL is the path of raw and its query, each value shown or reduced to
// its size (shownQuery). Scheme and host are left out: they are the
// configured base_url.
func apiURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Sprintf("[unparsable URL, %d bytes]", len(raw))
	}
	out := u.EscapedPath()
	if u.RawQuery == "" {
		return out
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return out + fmt.Sprintf("?[%d bytes]", len(u.RawQuery))
	}
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		for _, v := range q[k] {
			if slices.Contains(shownQuery, k) {
				parts = append(parts, shown(k)+"="+shown(v))
			} else {
				parts = append(parts, fmt.Sprintf("%s=[%d bytes]", shown(k), len(v)))
			}
		}
	}
	return out + "?" + strings.Join(parts, "&")
}

// shown bounds a value and keeps it on one line.
func shown(v string) string {
	v = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, v)
	if len(v) > maxShownValue {
		return cutUTF8(v, maxShownValue) + fmt.Sprintf("...[%d bytes]", len(v))
	}
	return v
}
