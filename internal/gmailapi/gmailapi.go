// Package gmailapi is a minimal Gmail API (v1) client for the probe: send a
// raw MIME message, take a history baseline, list messages added since, read
// their headers and labels, delete or trash. Plain net/http, no SDK; shapes
// follow the Gmail API reference (users.getProfile, users.messages.send,
// users.history.list, users.messages.get, users.messages.delete,
// users.messages.trash). Timing each call is the caller's business.
package gmailapi // import "github.com/emailqos/emailqosreceiver/internal/gmailapi"

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/emailqos/emailqosreceiver/internal/restcall"
)

// DefaultBaseURL is the Gmail API endpoint.
const DefaultBaseURL = "https://gmail.googleapis.com"

// Error reasons this client reports (Error.Code, from error.errors[0].reason
// in Google's JSON error format); anything else is "other".
var codes = map[string]bool{
	"authError":               true,
	"insufficientPermissions": true,
	"forbidden":               true,
	"notFound":                true,
	"invalidArgument":         true,
	"badRequest":              true,
	"failedPrecondition":      true,
	"rateLimitExceeded":       true,
	"userRateLimitExceeded":   true,
	"quotaExceeded":           true,
	"backendError":            true,
	"internalError":           true,
}

type (
	// TokenFunc supplies the bearer token for each request.
	TokenFunc = restcall.TokenFunc
	// Error is the typed failure of every call.
	Error = restcall.Error
)

// Options tunes a Client; the zero value is production.
type Options struct {
	BaseURL    string       // default DefaultBaseURL
	HTTPClient *http.Client // default: no own timeout (the context bounds calls)
	// MaxResponseBytes bounds each response body (default 4 MiB).
	MaxResponseBytes int64
	// PageSize is history.list maxResults (0: the API default, 100).
	PageSize int
	// MaxPages bounds the pages one History call follows (default 200).
	MaxPages int
	// MinBackoff is the first wait after throttling without Retry-After
	// (default 1 s, doubling): Gmail asks for exponential backoff.
	MinBackoff time.Duration
}

// Client talks to one Gmail API endpoint. Safe for concurrent use.
type Client struct {
	rc       restcall.Client
	base     string
	pageSize int
	maxPages int
}

// New checks the base URL (https, or http on loopback) and returns a client.
func New(token TokenFunc, o Options) (*Client, error) {
	rc, err := restcall.NewClient("gmailapi", o.BaseURL, DefaultBaseURL, token, o.HTTPClient, o.MaxResponseBytes, classify, o.MinBackoff)
	if err != nil {
		return nil, err
	}
	return &Client{rc: rc, base: rc.Base, pageSize: o.PageSize, maxPages: restcall.MaxPages(o.MaxPages)}, nil
}

func (c *Client) userURL(user string, parts ...string) string {
	p := c.base + "/gmail/v1/users/" + url.PathEscape(user)
	for _, s := range parts {
		p += "/" + url.PathEscape(s)
	}
	return p
}

// Ref names a message (id and threadId).
type Ref struct {
	ID       string   `json:"id"`
	ThreadID string   `json:"threadId"`
	LabelIDs []string `json:"labelIds,omitempty"`
}

// Send submits raw (users.messages.send with the base64url "raw" field) and
// returns the sent message's id. Not retried on 504 (it may have gone out).
func (c *Client) Send(ctx context.Context, user string, raw []byte) (Ref, error) {
	if err := restcall.Need("gmailapi", "messages.send", "user", user); err != nil {
		return Ref{}, err
	}
	if len(raw) == 0 {
		return Ref{}, errors.New("gmailapi messages.send: empty message")
	}
	body, _ := json.Marshal(struct {
		Raw string `json:"raw"`
	}{base64.URLEncoding.EncodeToString(raw)})
	var r Ref
	_, err := c.rc.Do(ctx, restcall.Request{Op: "messages.send", Method: http.MethodPost,
		URL: c.userURL(user, "messages", "send"), ContentType: "application/json", Body: body}, &r)
	return r, err
}

// HistoryID returns the mailbox's current historyId (users.getProfile), the
// baseline for History.
func (c *Client) HistoryID(ctx context.Context, user string) (uint64, error) {
	if err := restcall.Need("gmailapi", "getProfile", "user", user); err != nil {
		return 0, err
	}
	var p struct {
		HistoryID string `json:"historyId"` // uint64 as a JSON string
	}
	if _, err := c.rc.Do(ctx, restcall.Request{Op: "getProfile", Method: http.MethodGet, URL: c.userURL(user, "profile"), Idempotent: true}, &p); err != nil {
		return 0, err
	}
	id, err := strconv.ParseUint(p.HistoryID, 10, 64)
	if err != nil {
		return 0, &Error{API: "gmailapi", Op: "getProfile", Kind: restcall.KindProtocol, Status: 200, Err: errors.New("historyId is not a number")}
	}
	return id, nil
}

type historyPage struct {
	History []struct {
		ID            string `json:"id"`
		MessagesAdded []struct {
			Message Ref `json:"message"`
		} `json:"messagesAdded"`
		LabelsAdded []struct {
			Message  Ref      `json:"message"`
			LabelIDs []string `json:"labelIds"`
		} `json:"labelsAdded"`
	} `json:"history"`
	NextPageToken string `json:"nextPageToken"`
	HistoryID     string `json:"historyId"`
}

// History lists messages added since start (users.history.list with
// historyTypes messageAdded and labelAdded, following nextPageToken) and
// returns them in history order, each once, with the mailbox's historyId to
// use as the next start. labelAdded is included because a message sent to
// oneself is one message that gets INBOX after SENT. A KindResync error
// (HTTP 404) means start is too old: take a new baseline with HistoryID.
func (c *Client) History(ctx context.Context, user string, start uint64) ([]Ref, uint64, error) {
	if err := restcall.Need("gmailapi", "history.list", "user", user); err != nil {
		return nil, 0, err
	}
	q := url.Values{}
	q.Set("startHistoryId", strconv.FormatUint(start, 10))
	q.Add("historyTypes", "messageAdded")
	q.Add("historyTypes", "labelAdded")
	if c.pageSize > 0 {
		q.Set("maxResults", strconv.Itoa(c.pageSize))
	}
	seen := map[string]int{}
	var out []Ref
	add := func(r Ref) {
		if i, ok := seen[r.ID]; ok {
			out[i] = r // the later record has the newer labels
			return
		}
		seen[r.ID] = len(out)
		out = append(out, r)
	}
	for range c.maxPages {
		var p historyPage
		if _, err := c.rc.Do(ctx, restcall.Request{Op: "history.list", Method: http.MethodGet,
			URL: c.userURL(user, "history") + "?" + q.Encode(), Idempotent: true}, &p); err != nil {
			return nil, 0, err
		}
		for _, h := range p.History {
			for _, m := range h.MessagesAdded {
				add(m.Message)
			}
			for _, m := range h.LabelsAdded {
				add(m.Message)
			}
		}
		if p.NextPageToken == "" {
			next, err := strconv.ParseUint(p.HistoryID, 10, 64)
			if err != nil {
				return nil, 0, &Error{API: "gmailapi", Op: "history.list", Kind: restcall.KindProtocol, Status: 200, Err: errors.New("historyId is not a number")}
			}
			return out, next, nil
		}
		q.Set("pageToken", p.NextPageToken)
	}
	return nil, 0, &Error{API: "gmailapi", Op: "history.list", Kind: restcall.KindTooLarge,
		Err: errors.New("history exceeds the page budget (" + strconv.Itoa(c.maxPages) + " pages)")}
}

// Message is users.messages.get with format=metadata.
type Message struct {
	ID           string   `json:"id"`
	ThreadID     string   `json:"threadId"`
	LabelIDs     []string `json:"labelIds"`
	HistoryID    string   `json:"historyId"`
	InternalDate string   `json:"internalDate"` // ms since the epoch, as a string
	SizeEstimate int64    `json:"sizeEstimate"`
	Payload      struct {
		Headers []Header `json:"headers"`
	} `json:"payload"`
}

// Header is one payload header.
type Header struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Header returns the first value of the named header (case-insensitive).
func (m Message) Header(name string) string {
	for _, h := range m.Payload.Headers {
		if strings.EqualFold(h.Name, name) {
			return h.Value
		}
	}
	return ""
}

// Received is internalDate as a time (zero when absent).
func (m Message) Received() time.Time {
	ms, err := strconv.ParseInt(m.InternalDate, 10, 64)
	if err != nil {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// HasLabel reports whether the message carries label (e.g. "INBOX").
func (m Message) HasLabel(label string) bool {
	for _, l := range m.LabelIDs {
		if l == label {
			return true
		}
	}
	return false
}

// Placement is where the user sees the message: "spam", "trash", "inbox",
// "sent" (only), or "" when none of these; Category gives the inbox tab.
func (m Message) Placement() string {
	switch {
	case m.HasLabel("SPAM"):
		return "spam"
	case m.HasLabel("TRASH"):
		return "trash"
	case m.HasLabel("INBOX"):
		return "inbox"
	case m.HasLabel("SENT"):
		return "sent"
	}
	return ""
}

// Category is the inbox tab in lower case ("personal", "promotions",
// "social", "updates", "forums"), "" when none.
func (m Message) Category() string {
	for _, l := range m.LabelIDs {
		if c, ok := strings.CutPrefix(l, "CATEGORY_"); ok {
			return strings.ToLower(c)
		}
	}
	return ""
}

// Get reads a message's labels and the named headers (format=metadata;
// all headers when none are named).
func (c *Client) Get(ctx context.Context, user, id string, headers ...string) (Message, error) {
	if err := restcall.Need("gmailapi", "messages.get", "user", user, "message id", id); err != nil {
		return Message{}, err
	}
	q := url.Values{}
	q.Set("format", "metadata")
	for _, h := range headers {
		q.Add("metadataHeaders", h)
	}
	var m Message
	_, err := c.rc.Do(ctx, restcall.Request{Op: "messages.get", Method: http.MethodGet,
		URL: c.userURL(user, "messages", id) + "?" + q.Encode(), Idempotent: true}, &m)
	return m, err
}

// Raw reads the whole message (users.messages.get, format=raw: its MIME
// as base64url in "raw"), refusing one larger than limit bytes: from its
// sizeEstimate when the metadata is at hand (the caller's business), here
// by a response budget that holds limit bytes once encoded, and by the
// decoded size.
func (c *Client) Raw(ctx context.Context, user, id string, limit int64) ([]byte, error) {
	if err := restcall.Need("gmailapi", "messages.get raw", "user", user, "message id", id); err != nil {
		return nil, err
	}
	var m struct {
		Raw string `json:"raw"`
	}
	// base64 grows 4/3; the rest of the resource (ids, labels, payload
	// metadata) fits in 64 KiB.
	budget := (limit+2)/3*4 + 64<<10
	_, err := c.rc.Do(ctx, restcall.Request{Op: "messages.get raw", Method: http.MethodGet,
		URL: c.userURL(user, "messages", id) + "?format=raw", Idempotent: true, MaxBody: budget}, &m)
	if err != nil {
		return nil, err
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(m.Raw, "="))
	if err != nil {
		return nil, &Error{API: "gmailapi", Op: "messages.get raw", Kind: restcall.KindProtocol, Status: 200, Err: errors.New("raw is not base64url")}
	}
	if int64(len(b)) > limit {
		return nil, &Error{API: "gmailapi", Op: "messages.get raw", Kind: restcall.KindTooLarge, Status: 200,
			Err: errors.New("message exceeds " + strconv.FormatInt(limit, 10) + " bytes")}
	}
	return b, nil
}

// Delete removes the message permanently (users.messages.delete, 204; needs
// the https://mail.google.com/ scope).
func (c *Client) Delete(ctx context.Context, user, id string) error {
	if err := restcall.Need("gmailapi", "messages.delete", "user", user, "message id", id); err != nil {
		return err
	}
	_, err := c.rc.Do(ctx, restcall.Request{Op: "messages.delete", Method: http.MethodDelete,
		URL: c.userURL(user, "messages", id), Idempotent: true}, nil)
	return err
}

// Trash moves the message to the trash (users.messages.trash).
func (c *Client) Trash(ctx context.Context, user, id string) error {
	if err := restcall.Need("gmailapi", "messages.trash", "user", user, "message id", id); err != nil {
		return err
	}
	_, err := c.rc.Do(ctx, restcall.Request{Op: "messages.trash", Method: http.MethodPost,
		URL: c.userURL(user, "messages", id, "trash"), Idempotent: true}, nil)
	return err
}

// classify maps Google's JSON error ({"error":{"code":..,"status":..,
// "errors":[{"reason":..}]}}) to the closed set; the message is never kept.
func classify(op string, status int, body []byte) (string, restcall.Kind, bool) {
	var e struct {
		Error struct {
			Status string `json:"status"`
			Errors []struct {
				Reason string `json:"reason"`
			} `json:"errors"`
		} `json:"error"`
	}
	_ = json.Unmarshal(body, &e)
	reason := ""
	if len(e.Error.Errors) > 0 {
		reason = e.Error.Errors[0].Reason
	}
	code := restcall.OneOf(reason, codes)
	kind := restcall.KindForStatus(status)
	// history.list: "Supplying an invalid or out of date startHistoryId
	// typically returns an HTTP 404" (users.history.list reference).
	if op == "history.list" && status == http.StatusNotFound {
		kind = restcall.KindResync
	}
	// Usage limits guide: 403 rateLimitExceeded/userRateLimitExceeded and
	// 429 are throttling, retried with exponential backoff; 503 likewise.
	throttled := status == 429 || status == 503 || status == 504 ||
		(status == 403 && (reason == "rateLimitExceeded" || reason == "userRateLimitExceeded"))
	return code, kind, throttled
}
