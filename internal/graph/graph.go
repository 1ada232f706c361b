// Package graph is a minimal Microsoft Graph mail client for the probe: send
// a MIME message, track a folder with delta queries, read headers, delete or
// move. Plain net/http, no SDK. Shapes follow the Graph v1.0 REST reference
// (user-sendmail, message-delta, message-get, message-permanentdelete,
// message-move). Timing each call is the caller's business.
package graph // import "github.com/emailqos/emailqosreceiver/internal/graph"

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

// DefaultBaseURL is the global Graph endpoint.
const DefaultBaseURL = "https://graph.microsoft.com"

// Well-known folder names (mailFolder resource reference); Graph accepts
// them case-insensitively.
const (
	FolderInbox        = "Inbox"
	FolderJunk         = "JunkEmail"
	FolderDeletedItems = "deleteditems"
	FolderSentItems    = "sentitems"
)

// Error codes this client reports (Error.Code); anything else is "other".
// From the Graph error reference and Outlook mail API errors.
var codes = map[string]bool{
	"InvalidAuthenticationToken":  true,
	"ErrorAccessDenied":           true,
	"Authorization_RequestDenied": true,
	"ErrorItemNotFound":           true,
	"ResourceNotFound":            true,
	"MailboxNotEnabledForRESTAPI": true,
	"ErrorInvalidUser":            true,
	"ErrorInvalidRecipients":      true,
	"ErrorMessageSizeExceeded":    true,
	"ErrorQuotaExceeded":          true,
	"ErrorSendAsDenied":           true,
	"ApplicationThrottled":        true,
	"TooManyRequests":             true,
	"ErrorServerBusy":             true,
	"SyncStateNotFound":           true,
	"SyncStateInvalid":            true,
	"ErrorInvalidRequest":         true,
	"BadRequest":                  true,
	"ServiceNotAvailable":         true,
	"ErrorInternalServerError":    true,
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
	HTTPClient *http.Client // default: a client without its own timeout (the context bounds calls)
	// MaxResponseBytes bounds each response body (default 4 MiB).
	MaxResponseBytes int64
	// PageSize asks for this many messages per delta page (Prefer:
	// odata.maxpagesize); 0 leaves the server default.
	PageSize int
	// MaxPages bounds the pages one Delta call follows (default 200).
	MaxPages int
	// MinBackoff is the wait after a throttled answer without Retry-After
	// (default 1 s, doubling).
	MinBackoff time.Duration
}

// Client talks to one Graph endpoint. Safe for concurrent use.
type Client struct {
	rc       restcall.Client
	base     string
	pageSize int
	maxPages int
}

// New checks the base URL (https, or http on loopback) and returns a client.
func New(token TokenFunc, o Options) (*Client, error) {
	rc, err := restcall.NewClient("graph", o.BaseURL, DefaultBaseURL, token, o.HTTPClient, o.MaxResponseBytes, classify, o.MinBackoff)
	if err != nil {
		return nil, err
	}
	return &Client{rc: rc, base: rc.Base, pageSize: o.PageSize, maxPages: restcall.MaxPages(o.MaxPages)}, nil
}

// Header is one internetMessageHeaders entry.
type Header struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Message is the subset of the message resource the probe selects.
type Message struct {
	ID                string    `json:"id"`
	Subject           string    `json:"subject"`
	InternetMessageID string    `json:"internetMessageId"`
	ReceivedDateTime  time.Time `json:"receivedDateTime"`
	ParentFolderID    string    `json:"parentFolderId"`
	Headers           []Header  `json:"internetMessageHeaders"`
	// Removed is set for delta entries reporting a deletion (@removed).
	Removed *struct {
		Reason string `json:"reason"`
	} `json:"@removed,omitempty"`
}

// Header returns the first value of the named header (case-insensitive).
func (m Message) Header(name string) string {
	for _, h := range m.Headers {
		if strings.EqualFold(h.Name, name) {
			return h.Value
		}
	}
	return ""
}

// selectFields is what a probe needs from each message.
const selectFields = "id,subject,internetMessageId,receivedDateTime,parentFolderId,internetMessageHeaders"

func (c *Client) userURL(user string, parts ...string) string {
	p := c.base + "/v1.0/users/" + url.PathEscape(user)
	for _, s := range parts {
		p += "/" + url.PathEscape(s)
	}
	return p
}

// SendMIME submits raw as MIME (user-sendmail, "send a message using MIME
// format": text/plain body holding the base64 MIME), so the probe's headers
// travel unchanged. Success is 202 Accepted: queued, not yet sent, unlike
// SMTP's 250 after DATA. Not retried on 504 (it may have been accepted).
func (c *Client) SendMIME(ctx context.Context, user string, raw []byte) error {
	if err := restcall.Need("graph", "sendMail", "user", user); err != nil {
		return err
	}
	if len(raw) == 0 {
		return errors.New("graph sendMail: empty message")
	}
	body := []byte(base64.StdEncoding.EncodeToString(raw))
	status, err := c.rc.Do(ctx, restcall.Request{Op: "sendMail", Method: http.MethodPost,
		URL: c.userURL(user, "sendMail"), ContentType: "text/plain", Body: body}, nil)
	if err != nil {
		return err
	}
	if status != http.StatusAccepted {
		return &Error{API: "graph", Op: "sendMail", Kind: restcall.KindProtocol, Status: status}
	}
	return nil
}

type deltaPage struct {
	Value     []Message `json:"value"`
	NextLink  string    `json:"@odata.nextLink"`
	DeltaLink string    `json:"@odata.deltaLink"`
}

// Baseline runs the initial round of a delta sync of folder, restricted to
// created messages, and returns the deltaLink for Delta. The messages already
// there are read and dropped (page by page), so use it on probe mailboxes.
func (c *Client) Baseline(ctx context.Context, user, folder string) (string, error) {
	if err := restcall.Need("graph", "delta", "user", user, "folder", folder); err != nil {
		return "", err
	}
	q := url.Values{}
	q.Set("changeType", "created")
	q.Set("$select", selectFields)
	u := c.userURL(user, "mailFolders", folder, "messages", "delta") + "?" + q.Encode()
	_, link, err := c.follow(ctx, u, false)
	return link, err
}

// Delta follows deltaLink and its @odata.nextLink pages and returns the
// messages created since, with the next deltaLink. Graph may return a
// message more than once across rounds (documented for delta queries):
// callers deduplicate by ID. A KindResync error (410 / SyncStateNotFound)
// means the link expired: take a new Baseline.
func (c *Client) Delta(ctx context.Context, deltaLink string) ([]Message, string, error) {
	if err := c.sameOrigin(deltaLink); err != nil {
		return nil, "", err
	}
	return c.follow(ctx, deltaLink, true)
}

func (c *Client) follow(ctx context.Context, u string, keep bool) ([]Message, string, error) {
	var out []Message
	var hdr http.Header
	if c.pageSize > 0 {
		hdr = http.Header{"Prefer": {"odata.maxpagesize=" + strconv.Itoa(c.pageSize)}}
	}
	for range c.maxPages {
		var p deltaPage
		if _, err := c.rc.Do(ctx, restcall.Request{Op: "delta", Method: http.MethodGet, URL: u, Header: hdr, Idempotent: true}, &p); err != nil {
			return nil, "", err
		}
		if keep {
			out = append(out, p.Value...)
		}
		switch {
		case p.NextLink != "":
			if err := c.sameOrigin(p.NextLink); err != nil {
				return nil, "", err
			}
			u = p.NextLink
		case p.DeltaLink != "":
			return out, p.DeltaLink, nil
		default:
			return nil, "", &Error{API: "graph", Op: "delta", Kind: restcall.KindProtocol, Status: 200,
				Err: errors.New("page has neither @odata.nextLink nor @odata.deltaLink")}
		}
	}
	return nil, "", &Error{API: "graph", Op: "delta", Kind: restcall.KindTooLarge,
		Err: errors.New("delta exceeds the page budget (" + strconv.Itoa(c.maxPages) + " pages)")}
}

// sameOrigin refuses links pointing elsewhere: the token must only go to
// the configured endpoint.
func (c *Client) sameOrigin(link string) error {
	u, err := url.Parse(link)
	b, _ := url.Parse(c.base)
	if err != nil || u.Scheme != b.Scheme || u.Host != b.Host {
		return &Error{API: "graph", Op: "delta", Kind: restcall.KindProtocol, Err: errors.New("delta link is not on the configured base_url")}
	}
	return nil
}

// Get reads one message with its internetMessageHeaders.
func (c *Client) Get(ctx context.Context, user, id string) (Message, error) {
	if err := restcall.Need("graph", "get", "user", user, "message id", id); err != nil {
		return Message{}, err
	}
	var m Message
	_, err := c.rc.Do(ctx, restcall.Request{Op: "get", Method: http.MethodGet,
		URL: c.userURL(user, "messages", id) + "?$select=" + url.QueryEscape(selectFields), Idempotent: true}, &m)
	return m, err
}

// MIME reads the message's MIME content (message-get, "get MIME content":
// GET .../messages/{id}/$value), at most limit bytes: a longer one is a
// KindTooLarge error, read no further than limit + 1 bytes.
func (c *Client) MIME(ctx context.Context, user, id string, limit int64) ([]byte, error) {
	if err := restcall.Need("graph", "get $value", "user", user, "message id", id); err != nil {
		return nil, err
	}
	_, b, err := c.rc.DoRaw(ctx, restcall.Request{Op: "get $value", Method: http.MethodGet,
		URL: c.userURL(user, "messages", id, "$value"), Idempotent: true, MaxBody: limit})
	return b, err
}

// PermanentDelete removes the message for good (message-permanentdelete:
// 204). Retried on 504: deleting twice is harmless (the second is a 404).
func (c *Client) PermanentDelete(ctx context.Context, user, id string) error {
	if err := restcall.Need("graph", "permanentDelete", "user", user, "message id", id); err != nil {
		return err
	}
	_, err := c.rc.Do(ctx, restcall.Request{Op: "permanentDelete", Method: http.MethodPost,
		URL: c.userURL(user, "messages", id, "permanentDelete"), Idempotent: true}, nil)
	return err
}

// Move moves the message to destination (a folder id or well-known name,
// e.g. FolderDeletedItems) and returns the moved message's new id (message-
// move: 201 with the message).
func (c *Client) Move(ctx context.Context, user, id, destination string) (string, error) {
	if err := restcall.Need("graph", "move", "user", user, "message id", id, "destination", destination); err != nil {
		return "", err
	}
	body, _ := json.Marshal(struct {
		DestinationID string `json:"destinationId"`
	}{destination})
	var m Message
	_, err := c.rc.Do(ctx, restcall.Request{Op: "move", Method: http.MethodPost,
		URL: c.userURL(user, "messages", id, "move"), ContentType: "application/json", Body: body}, &m)
	return m.ID, err
}

// classify maps a Graph error response ({"error":{"code":..,"message":..}})
// to a code of the closed set; the message is never kept.
func classify(op string, status int, body []byte) (string, restcall.Kind, bool) {
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	_ = json.Unmarshal(body, &e)
	code := restcall.OneOf(e.Error.Code, codes)
	kind := restcall.KindForStatus(status)
	// Delta token expiry: 410 Gone with SyncStateNotFound (delta query
	// overview, "Synchronization reset").
	if op == "delta" && (status == http.StatusGone || code == "SyncStateNotFound" || code == "SyncStateInvalid") {
		kind = restcall.KindResync
	}
	// Throttling guidance: 429 with Retry-After; 503/504 may carry one too.
	throttled := status == 429 || status == 503 || status == 504
	return code, kind, throttled
}
