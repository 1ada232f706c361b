// Package restcall is the small HTTP core shared by the Graph and Gmail API
// clients: bearer token per attempt, a response-size budget, throttling
// retries bounded by the caller's context, and a typed error that carries
// only a status, a code from a closed set and a kind, never free text from
// the server nor the token.
package restcall // import "github.com/emailqos/emailqosreceiver/internal/restcall"

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/emailqos/emailqosreceiver/internal/oauth"
	"github.com/emailqos/emailqosreceiver/internal/transcript"
)

// Kind is the closed set of failure classes the engine maps onto error codes.
type Kind string

const (
	KindToken      Kind = "token"       // the token source failed; no request was sent
	KindAuth       Kind = "auth"        // 401: token refused
	KindForbidden  Kind = "forbidden"   // 403: permission missing (Mail.Send, scope, RBAC)
	KindNotFound   Kind = "not_found"   // 404: user, folder or message unknown
	KindResync     Kind = "resync"      // delta/history token no longer valid: take a new baseline
	KindThrottled  Kind = "throttled"   // 429/503 (or Gmail 403 rate limit) still refused when the context ran out
	KindBadRequest Kind = "bad_request" // other 4xx
	KindServer     Kind = "server"      // 5xx
	KindTooLarge   Kind = "too_large"   // response over the size budget
	KindProtocol   Kind = "protocol"    // malformed response
	KindTransport  Kind = "transport"   // connection, TLS, DNS
	KindTimeout    Kind = "timeout"     // the context ended
)

// Error is a failed API call. It never holds the token or the server's
// free-text message.
type Error struct {
	API    string // "graph" or "gmailapi"
	Op     string // e.g. "sendMail", "delta", "history.list"
	Kind   Kind
	Status int    // HTTP status, 0 when no response
	Code   string // API error code from the package's closed set, or "other"
	// RetryAfter is the server's last requested wait, when it asked for one.
	RetryAfter time.Duration
	Err        error // transport or context cause, when any
}

func (e *Error) Error() string {
	s := fmt.Sprintf("%s %s: %s", e.API, e.Op, e.Kind)
	if e.Status != 0 {
		s += fmt.Sprintf(" (HTTP %d", e.Status)
		if e.Code != "" {
			s += " " + e.Code
		}
		s += ")"
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// IsKind reports whether err is an *Error of kind k.
func IsKind(err error, k Kind) bool {
	var e *Error
	return errors.As(err, &e) && e.Kind == k
}

// TokenFunc returns a bearer token; FromSource adapts an *oauth.Source.
type TokenFunc func(ctx context.Context) (string, error)

// Classifier maps an error response to a code of the API's closed set, a
// kind, and whether it is throttling worth retrying.
type Classifier func(op string, status int, body []byte) (code string, kind Kind, throttled bool)

// Client is shared by the API packages; they fill it in New.
type Client struct {
	API      string
	Base     string // scheme://host, checked by CheckBase
	HTTP     *http.Client
	Token    TokenFunc
	MaxBody  int64
	Classify Classifier
	// MinBackoff is the wait when a throttled response names none; it
	// doubles per attempt up to MaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	MaxAttempts            int
	// MaxWait caps one throttling wait (default 2 min): a longer Retry-After
	// is reported at once, even when the context has no deadline.
	MaxWait time.Duration
}

// DefaultMaxBody is the response budget when none is set: far above a page
// of message headers, far below anything that could hurt the collector.
const DefaultMaxBody = 4 << 20

// DefaultMaxPages bounds the pages one listing call follows when the client
// sets no bound of its own.
const DefaultMaxPages = 200

// MaxPages is n, or DefaultMaxPages when n sets no bound.
func MaxPages(n int) int {
	if n <= 0 {
		return DefaultMaxPages
	}
	return n
}

// NewClient is the construction the API clients share: a token source is
// required, base (defaultBase when empty) must pass CheckBase, and a nil
// hc is a client without its own timeout (the context bounds each call).
func NewClient(api, base, defaultBase string, token TokenFunc, hc *http.Client, maxBody int64, classify Classifier, minBackoff time.Duration) (Client, error) {
	if token == nil {
		return Client{}, fmt.Errorf("%s: a token source is required", api)
	}
	base = strings.TrimRight(base, "/")
	if base == "" {
		base = defaultBase
	}
	if err := CheckBase(api, base); err != nil {
		return Client{}, err
	}
	if hc == nil {
		hc = &http.Client{}
	}
	return Client{API: api, Base: base, HTTP: hc, Token: token, MaxBody: maxBody, Classify: classify, MinBackoff: minBackoff}, nil
}

// CheckBase applies oauth.CheckURL to a base URL: https, or http on loopback.
func CheckBase(api, base string) error {
	if err := oauth.CheckURL(base); err != nil {
		return fmt.Errorf("%s: base_url: %w", api, err)
	}
	return nil
}

// Request describes one call.
type Request struct {
	Op          string
	Method      string
	URL         string // absolute
	ContentType string
	Body        []byte
	Header      http.Header
	// Idempotent allows retrying 504 too; a send is not, since a gateway
	// timeout may follow an accepted message and a retry would duplicate it.
	Idempotent bool
	// MaxBody, when set, is this call's response budget instead of the
	// client's (a notice's MIME is read up to its own cap).
	MaxBody int64
}

// Do performs r, retrying throttled answers while the context allows the
// wait, and decodes a 2xx JSON body into out (when non-nil). It returns the
// final status.
func (c *Client) Do(ctx context.Context, r Request, out any) (int, error) {
	status, body, err := c.do(ctx, r)
	if err == nil && out != nil && len(body) > 0 {
		if err := json.Unmarshal(body, out); err != nil {
			return status, &Error{API: c.API, Op: r.Op, Kind: KindProtocol, Status: status, Err: errors.New("response is not the documented JSON")}
		}
	}
	return status, err
}

// DoRaw is Do for a body that is not JSON (a message's MIME): it returns
// the 2xx body as it came, within the budget.
func (c *Client) DoRaw(ctx context.Context, r Request) (int, []byte, error) {
	return c.do(ctx, r)
}

func (c *Client) do(ctx context.Context, r Request) (int, []byte, error) {
	attempts := c.MaxAttempts
	if attempts <= 0 {
		attempts = 6
	}
	backoff := c.MinBackoff
	if backoff <= 0 {
		backoff = time.Second
	}
	maxBackoff := c.MaxBackoff
	if maxBackoff <= 0 {
		maxBackoff = 30 * time.Second
	}
	for i := 1; ; i++ {
		status, body, hdr, err := c.once(ctx, r)
		if err != nil {
			return status, nil, err
		}
		if status >= 200 && status < 300 {
			return status, body, nil
		}
		code, kind, throttled := c.Classify(r.Op, status, body)
		if status == http.StatusGatewayTimeout && !r.Idempotent {
			throttled, kind = false, KindServer
		}
		e := &Error{API: c.API, Op: r.Op, Kind: kind, Status: status, Code: code}
		if !throttled {
			return status, nil, e
		}
		e.Kind = KindThrottled
		wait, named := retryAfter(hdr.Get("Retry-After"), time.Now())
		if named {
			e.RetryAfter = wait
		} else {
			wait = backoff
			backoff = min(2*backoff, maxBackoff)
		}
		maxWait := c.MaxWait
		if maxWait <= 0 {
			maxWait = 2 * time.Minute
		}
		if i >= attempts || wait > maxWait {
			return status, nil, e
		}
		// Never sleep past the deadline: a wait that cannot end in time is
		// reported now as throttling, the cause the user must see.
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			return status, nil, e
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return status, nil, e
		}
	}
}

// once is one attempt of r, recorded in the probe's transcript when ctx
// carries one (WithTranscript).
func (c *Client) once(ctx context.Context, r Request) (int, []byte, http.Header, error) {
	tr, _ := ctx.Value(transcriptKey{}).(*transcript.Transcript)
	if tr == nil {
		return c.attempt(ctx, r, nil)
	}
	start := time.Now()
	status, body, hdr, err := c.attempt(ctx, r, tr)
	x := transcript.Exchange{Method: r.Method, URL: r.URL, ReqBytes: len(r.Body), Status: status, Header: hdr,
		RespBytes: len(body), Duration: time.Since(start)}
	var e *Error
	if errors.As(err, &e) {
		if e.Kind == KindToken {
			// Nothing was sent.
			return status, body, hdr, err
		}
		x.Err = string(e.Kind)
	}
	tr.API(transcript.Proto(c.API), x)
	return status, body, hdr, err
}

type transcriptKey struct{}

// WithTranscript returns ctx carrying tr: the calls made with it are
// recorded there (method, path, status, sizes, a few safe headers; never
// the Authorization header nor a body), and every token they present is
// registered with tr as a secret to scrub. The API clients are one per
// account, shared by the probes running at once, so the probe's transcript
// travels with the probe's context rather than in the client.
func WithTranscript(ctx context.Context, tr *transcript.Transcript) context.Context {
	if tr == nil {
		return ctx
	}
	return context.WithValue(ctx, transcriptKey{}, tr)
}

func (c *Client) attempt(ctx context.Context, r Request, tr *transcript.Transcript) (int, []byte, http.Header, error) {
	if err := ctx.Err(); err != nil {
		return 0, nil, nil, &Error{API: c.API, Op: r.Op, Kind: KindTimeout, Err: err}
	}
	tok, err := c.Token(ctx)
	if err != nil || tok == "" {
		if err == nil {
			err = errors.New("token source returned an empty token")
		}
		// oauth errors are already redacted; anything else is reduced to
		// its kind by the caller's mapping, so wrapping is safe.
		return 0, nil, nil, &Error{API: c.API, Op: r.Op, Kind: KindToken, Err: err}
	}
	tr.Secret("", tok)
	var body io.Reader
	if r.Body != nil {
		body = bytes.NewReader(r.Body)
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, r.URL, body)
	if err != nil {
		return 0, nil, nil, &Error{API: c.API, Op: r.Op, Kind: KindBadRequest, Err: errors.New("cannot build the request URL")}
	}
	for k, v := range r.Header {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Accept", "application/json")
	if r.ContentType != "" {
		req.Header.Set("Content-Type", r.ContentType)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return 0, nil, nil, &Error{API: c.API, Op: r.Op, Kind: KindTimeout, Err: ctx.Err()}
		}
		// net/http errors name the method and URL, never headers.
		return 0, nil, nil, &Error{API: c.API, Op: r.Op, Kind: KindTransport, Err: err}
	}
	defer resp.Body.Close()
	max := c.MaxBody
	if r.MaxBody > 0 {
		max = r.MaxBody
	}
	if max <= 0 {
		max = DefaultMaxBody
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
	if err != nil {
		k := KindTransport
		if ctx.Err() != nil {
			k = KindTimeout
		}
		return resp.StatusCode, nil, nil, &Error{API: c.API, Op: r.Op, Kind: k, Status: resp.StatusCode, Err: err}
	}
	if int64(len(b)) > max {
		return resp.StatusCode, nil, nil, &Error{API: c.API, Op: r.Op, Kind: KindTooLarge, Status: resp.StatusCode,
			Err: fmt.Errorf("response exceeds the %d-byte budget", max)}
	}
	return resp.StatusCode, b, resp.Header, nil
}

// retryAfter parses Retry-After (RFC 9110 section 10.2.3): delay-seconds or
// an HTTP-date.
func retryAfter(v string, now time.Time) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if n, err := strconv.Atoi(v); err == nil && n >= 0 {
		return time.Duration(n) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// KindForStatus is the default status mapping the API classifiers start from.
func KindForStatus(status int) Kind {
	switch {
	case status == 401:
		return KindAuth
	case status == 403:
		return KindForbidden
	case status == 404:
		return KindNotFound
	case status == 429:
		return KindThrottled
	case status >= 500:
		return KindServer
	default:
		return KindBadRequest
	}
}

// OneOf returns code when it is in set, else "other", so codes stay a closed set.
func OneOf(code string, set map[string]bool) string {
	if code == "" {
		return ""
	}
	if set[code] {
		return code
	}
	return "other"
}

// FromSource adapts a token source shaped like oauth.Source.Token.
func FromSource(s interface {
	Token(ctx context.Context) (string, time.Time, error)
}) TokenFunc {
	return func(ctx context.Context) (string, error) {
		t, _, err := s.Token(ctx)
		return t, err
	}
}

// Need refuses a call whose named inputs (name, value pairs) are empty, with
// an error naming the field, before anything is sent.
func Need(api, op string, kv ...string) error {
	for i := 0; i+1 < len(kv); i += 2 {
		if strings.TrimSpace(kv[i+1]) == "" {
			return &Error{API: api, Op: op, Kind: KindBadRequest, Err: fmt.Errorf("%s is empty", kv[i])}
		}
	}
	return nil
}
