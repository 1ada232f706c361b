// Package gmailapitest is an in-process fake of the Gmail API (v1) on
// loopback, built from the public reference: users.getProfile,
// users.messages.send (raw), users.history.list (messageAdded/labelAdded,
// paging, 404 for a start id older than the kept history), users.messages.get
// (format=metadata, minimal and raw), users.messages.delete and users.messages.trash; bearer
// checking and rate limiting (429, 403 rateLimitExceeded) on demand. A new
// history record shows only after VisibilityLag (eventual consistency).
package gmailapitest // import "github.com/emailqos/emailqosreceiver/internal/gmailapitest"

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Options configures a Server.
type Options struct {
	// Users are the mailbox addresses ({userId}); "me" names the only user
	// when there is exactly one.
	Users []string
	// Token is the accepted bearer token; empty accepts any non-empty one.
	Token string
	// DeliveryDelay is the time between messages.send and delivery.
	DeliveryDelay time.Duration
	// VisibilityLag is the time before a history record shows in
	// history.list.
	VisibilityLag time.Duration
	// PageSize is the largest history page (default 2, so paging is
	// exercised); a smaller maxResults wins.
	PageSize int
	// TLS serves https with httptest's certificate; use Client.
	TLS bool
	// Spam, when set, decides that a delivery gets SPAM instead of INBOX.
	Spam func(rcpt string, raw []byte) bool
	// Category, when set, names the inbox tab of a delivery that is not
	// spam ("promotions", "social", "updates", "forums"; "" or "personal":
	// Primary), filed as Gmail does with a CATEGORY_* label.
	Category func(rcpt string, raw []byte) string
	// Route receives messages for addresses that are not Users; it reports
	// whether it took them.
	Route func(rcpt string, raw []byte) bool
	// Notice, when set, is asked at each delivery of a sent message for a
	// delivery status notification about it: a non-nil notice is filed in
	// the sender's INBOX (where Gmail's mailer-daemon bounces land) before
	// the delivery; deliver false drops the message (a bounce, or a
	// test that delivers it later itself), true delivers it (after a delay
	// notice: the delivery).
	Notice func(rcpt string, raw []byte) (notice []byte, deliver bool)
	// OnRequest, when set, sees every request before it is answered (tests
	// count the reads of a message's content with it).
	OnRequest func(r *http.Request)
}

// Stored is a message as kept by the fake.
type Stored struct {
	ID     string
	Labels []string
	Raw    []byte
}

type message struct {
	id       string
	labels   []string
	raw      []byte
	headers  []header
	internal time.Time
}

type header struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

type record struct {
	id        uint64
	msgID     string
	added     bool // messageAdded, else labelAdded
	labels    []string
	visibleAt time.Time
}

type mailbox struct {
	addr    string
	msgs    map[string]*message
	history []record
	floor   uint64 // start ids below this get 404
}

// Server is the fake. Close it when done.
type Server struct {
	opts     Options
	hs       *httptest.Server
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	requests atomic.Int64

	mu         sync.Mutex
	boxes      map[string]*mailbox
	hid        uint64
	nextID     uint64
	throttleN  int
	throttleSt int
	reason     string
	retryAfter time.Duration
}

// New starts a fake on 127.0.0.1.
func New(o Options) *Server {
	if o.PageSize <= 0 {
		o.PageSize = 2
	}
	s := &Server{opts: o, boxes: map[string]*mailbox{}, hid: 1000, nextID: 0x18c0000000}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	for _, u := range o.Users {
		s.boxes[strings.ToLower(u)] = &mailbox{addr: u, msgs: map[string]*message{}}
	}
	s.hs = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	if o.TLS {
		s.hs.StartTLS()
	} else {
		s.hs.Start()
	}
	return s
}

// URL is the base URL to give the client.
func (s *Server) URL() string { return s.hs.URL }

// Client is an http.Client trusting the fake's certificate.
func (s *Server) Client() *http.Client { return s.hs.Client() }

// Requests counts requests received, throttled ones included.
func (s *Server) Requests() int { return int(s.requests.Load()) }

// Close stops pending deliveries and the server.
func (s *Server) Close() {
	s.cancel()
	s.wg.Wait()
	s.hs.Close()
}

// Throttle answers the next n authenticated requests with status: 429
// (RESOURCE_EXHAUSTED) or 403 with reason ("rateLimitExceeded" or
// "userRateLimitExceeded"), with Retry-After in whole seconds when > 0.
func (s *Server) Throttle(n, status int, reason string, retryAfter time.Duration) {
	s.mu.Lock()
	s.throttleN, s.throttleSt, s.reason, s.retryAfter = n, status, reason, retryAfter
	s.mu.Unlock()
}

// ExpireHistory forgets user's history so far: a later history.list with an
// older startHistoryId gets 404, as after Gmail's retention ran out.
func (s *Server) ExpireHistory(user string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b := s.boxes[strings.ToLower(user)]; b != nil {
		b.floor = s.hid
		b.history = nil
	}
}

// Deliver stores raw for user now (INBOX, or SPAM when Options.Spam says
// so), as a delivery from outside (SMTP into mailtest relayed here...).
func (s *Server) Deliver(user string, raw []byte) error {
	category := "personal"
	if s.opts.Category != nil {
		category = cmp.Or(s.opts.Category(user, raw), category)
	}
	labels := []string{"INBOX", "UNREAD", "CATEGORY_" + strings.ToUpper(category)}
	if s.opts.Spam != nil && s.opts.Spam(user, raw) {
		labels = []string{"SPAM", "UNREAD"}
	}
	_, err := s.store(user, raw, labels)
	return err
}

// Messages returns a snapshot of user's messages carrying label ("" = all).
func (s *Server) Messages(user, label string) []Stored {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.boxes[strings.ToLower(user)]
	if b == nil {
		return nil
	}
	var out []Stored
	for _, m := range b.msgs {
		if label == "" || slices.Contains(m.labels, label) {
			out = append(out, Stored{ID: m.id, Labels: slices.Clone(m.labels), Raw: m.raw})
		}
	}
	slices.SortFunc(out, func(a, b Stored) int { return strings.Compare(a.ID, b.ID) })
	return out
}

func (s *Server) store(user string, raw []byte, labels []string) (*message, error) {
	mm, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("gmailapitest: not a MIME message: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.boxes[strings.ToLower(user)]
	if b == nil {
		return nil, fmt.Errorf("gmailapitest: no mailbox %q", user)
	}
	s.nextID++
	m := &message{id: strconv.FormatUint(s.nextID, 16), labels: labels, raw: raw, internal: time.Now()}
	for k, vs := range mm.Header {
		for _, v := range vs {
			m.headers = append(m.headers, header{k, v})
		}
	}
	b.msgs[m.id] = m
	s.recordLocked(b, m, true)
	return m, nil
}

func (s *Server) recordLocked(b *mailbox, m *message, added bool) {
	s.hid += 1 + s.hid%3 // ids grow with gaps, as documented
	b.history = append(b.history, record{id: s.hid, msgID: m.id, added: added, labels: slices.Clone(m.labels),
		visibleAt: time.Now().Add(s.opts.VisibilityLag)})
}

func writeErr(w http.ResponseWriter, status int, gstatus, reason, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]any{
		"code": status, "message": msg, "status": gstatus,
		"errors": []map[string]string{{"message": msg, "domain": "global", "reason": reason}},
	}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func notFound(w http.ResponseWriter) {
	writeErr(w, 404, "NOT_FOUND", "notFound", "Requested entity was not found.")
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if s.opts.OnRequest != nil {
		s.opts.OnRequest(r)
	}
	s.requests.Add(1)
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" || (s.opts.Token != "" && tok != s.opts.Token) {
		writeErr(w, 401, "UNAUTHENTICATED", "authError", "Request had invalid authentication credentials.")
		return
	}
	s.mu.Lock()
	if s.throttleN > 0 {
		s.throttleN--
		st, reason, ra := s.throttleSt, s.reason, s.retryAfter
		s.mu.Unlock()
		if ra > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int((ra+time.Second-1)/time.Second)))
		}
		gs := "RESOURCE_EXHAUSTED"
		if st == 403 {
			gs = "PERMISSION_DENIED"
		}
		if reason == "" {
			reason = "rateLimitExceeded"
		}
		writeErr(w, st, gs, reason, "User-rate limit exceeded.")
		return
	}
	s.mu.Unlock()

	var parts []string
	for _, p := range strings.Split(strings.TrimPrefix(r.URL.EscapedPath(), "/"), "/") {
		u, err := url.PathUnescape(p)
		if err != nil {
			writeErr(w, 400, "INVALID_ARGUMENT", "badRequest", "Invalid path.")
			return
		}
		parts = append(parts, u)
	}
	if len(parts) < 5 || parts[0] != "gmail" || parts[1] != "v1" || parts[2] != "users" {
		notFound(w)
		return
	}
	user, rest := parts[3], parts[4:]
	s.mu.Lock()
	if user == "me" && len(s.opts.Users) == 1 {
		user = s.opts.Users[0]
	}
	b := s.boxes[strings.ToLower(user)]
	s.mu.Unlock()
	if b == nil {
		// Gmail answers a user outside the delegation like this.
		writeErr(w, 400, "FAILED_PRECONDITION", "failedPrecondition", "Precondition check failed.")
		return
	}
	switch {
	case r.Method == http.MethodGet && len(rest) == 1 && rest[0] == "profile":
		s.mu.Lock()
		h := s.hid
		s.mu.Unlock()
		writeJSON(w, 200, map[string]any{"emailAddress": b.addr, "messagesTotal": len(b.msgs), "historyId": strconv.FormatUint(h, 10)})
	case r.Method == http.MethodPost && len(rest) == 2 && rest[0] == "messages" && rest[1] == "send":
		s.send(w, r, b)
	case r.Method == http.MethodGet && len(rest) == 1 && rest[0] == "history":
		s.history(w, r, b)
	case r.Method == http.MethodGet && len(rest) == 2 && rest[0] == "messages":
		s.get(w, r, b, rest[1])
	case r.Method == http.MethodDelete && len(rest) == 2 && rest[0] == "messages":
		s.mu.Lock()
		_, ok := b.msgs[rest[1]]
		delete(b.msgs, rest[1])
		s.mu.Unlock()
		if !ok {
			notFound(w)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodPost && len(rest) == 3 && rest[0] == "messages" && rest[2] == "trash":
		s.mu.Lock()
		m := b.msgs[rest[1]]
		var ref map[string]any
		if m != nil {
			m.labels = slices.DeleteFunc(m.labels, func(l string) bool { return l == "INBOX" || l == "SPAM" })
			m.labels = append(m.labels, "TRASH")
			s.recordLocked(b, m, false)
			ref = map[string]any{"id": m.id, "threadId": m.id, "labelIds": m.labels}
		}
		s.mu.Unlock()
		if m == nil {
			notFound(w)
			return
		}
		writeJSON(w, 200, ref)
	default:
		notFound(w)
	}
}

func (s *Server) send(w http.ResponseWriter, r *http.Request, b *mailbox) {
	var req struct {
		Raw string `json:"raw"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 8<<20)).Decode(&req); err != nil || req.Raw == "" {
		writeErr(w, 400, "INVALID_ARGUMENT", "invalidArgument", "'raw' RFC822 payload message string or uploading message via /upload/* URL required")
		return
	}
	raw, err := base64.URLEncoding.DecodeString(req.Raw)
	if err != nil {
		raw, err = base64.RawURLEncoding.DecodeString(req.Raw)
	}
	var mm *mail.Message
	if err == nil {
		mm, err = mail.ReadMessage(bytes.NewReader(raw))
	}
	if err != nil {
		writeErr(w, 400, "INVALID_ARGUMENT", "invalidArgument", "Invalid raw message.")
		return
	}
	var rcpts []string
	for _, h := range []string{"To", "Cc", "Bcc"} {
		if al, err := mm.Header.AddressList(h); err == nil {
			for _, a := range al {
				rcpts = append(rcpts, a.Address)
			}
		}
	}
	if len(rcpts) == 0 {
		writeErr(w, 400, "INVALID_ARGUMENT", "invalidArgument", "Recipient address required")
		return
	}
	sent, err := s.store(b.addr, raw, []string{"SENT"})
	if err != nil {
		writeErr(w, 500, "INTERNAL", "backendError", "Backend Error")
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTimer(s.opts.DeliveryDelay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-s.ctx.Done():
			return
		}
		for _, rc := range rcpts {
			if s.opts.Notice != nil {
				n, deliver := s.opts.Notice(rc, raw)
				if n != nil {
					_ = s.Deliver(b.addr, n)
				}
				if !deliver {
					continue
				}
			}
			if strings.EqualFold(rc, b.addr) {
				// Sent to oneself: Gmail keeps one message and adds INBOX to
				// the SENT copy (a labelAdded record, no new message).
				s.mu.Lock()
				if m := b.msgs[sent.id]; m != nil {
					m.labels = append(m.labels, "INBOX", "UNREAD", "CATEGORY_PERSONAL")
					s.recordLocked(b, m, false)
				}
				s.mu.Unlock()
				continue
			}
			if s.Deliver(rc, raw) != nil && s.opts.Route != nil {
				s.opts.Route(rc, raw)
			}
		}
	}()
	writeJSON(w, 200, map[string]any{"id": sent.id, "threadId": sent.id, "labelIds": []string{"SENT"}})
}

type ref struct {
	ID       string   `json:"id"`
	ThreadID string   `json:"threadId"`
	LabelIDs []string `json:"labelIds,omitempty"`
}

// history implements users.history.list. The page token is "start.end.off":
// end is fixed on the first page, before the first record not yet visible.
func (s *Server) history(w http.ResponseWriter, r *http.Request, b *mailbox) {
	q := r.URL.Query()
	start, err := strconv.ParseUint(q.Get("startHistoryId"), 10, 64)
	if err != nil {
		writeErr(w, 400, "INVALID_ARGUMENT", "invalidArgument", "Invalid startHistoryId.")
		return
	}
	types := q["historyTypes"]
	want := func(added bool) bool {
		if len(types) == 0 {
			return true
		}
		if added {
			return slices.Contains(types, "messageAdded")
		}
		return slices.Contains(types, "labelAdded")
	}
	ps := s.opts.PageSize
	if n, err := strconv.Atoi(q.Get("maxResults")); err == nil && n > 0 && n < ps {
		ps = n
	}
	var end uint64
	var off int
	if t := q.Get("pageToken"); t != "" {
		p := strings.Split(t, ".")
		if len(p) != 3 {
			writeErr(w, 400, "INVALID_ARGUMENT", "invalidArgument", "Invalid pageToken.")
			return
		}
		end, _ = strconv.ParseUint(p[1], 10, 64)
		off, _ = strconv.Atoi(p[2])
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if start < b.floor || start > s.hid {
		notFound(w)
		return
	}
	if end == 0 {
		end = start
		now := time.Now()
		for _, h := range b.history {
			if h.id <= start {
				continue
			}
			if h.visibleAt.After(now) {
				break
			}
			end = h.id
		}
	}
	var items []map[string]any
	for _, h := range b.history {
		if h.id <= start || h.id > end || !want(h.added) {
			continue
		}
		m := ref{ID: h.msgID, ThreadID: h.msgID, LabelIDs: h.labels}
		rec := map[string]any{"id": strconv.FormatUint(h.id, 10), "messages": []ref{{ID: h.msgID, ThreadID: h.msgID}}}
		if h.added {
			rec["messagesAdded"] = []map[string]any{{"message": m}}
		} else {
			rec["labelsAdded"] = []map[string]any{{"message": m, "labelIds": h.labels}}
		}
		items = append(items, rec)
	}
	lo, hi := min(off, len(items)), min(off+ps, len(items))
	page := map[string]any{"historyId": strconv.FormatUint(end, 10)}
	if hi > lo {
		page["history"] = items[lo:hi]
	}
	if hi < len(items) {
		page["nextPageToken"] = fmt.Sprintf("%d.%d.%d", start, end, hi)
	}
	writeJSON(w, 200, page)
}

func (s *Server) get(w http.ResponseWriter, r *http.Request, b *mailbox, id string) {
	q := r.URL.Query()
	f := q.Get("format")
	if f != "" && f != "metadata" && f != "minimal" && f != "raw" {
		writeErr(w, 400, "INVALID_ARGUMENT", "invalidArgument", "Only metadata, minimal and raw are faked.")
		return
	}
	want := q["metadataHeaders"]
	s.mu.Lock()
	m := b.msgs[id]
	var out map[string]any
	if m != nil {
		var hs []header
		for _, h := range m.headers {
			if len(want) == 0 || slices.ContainsFunc(want, func(n string) bool { return strings.EqualFold(n, h.Name) }) {
				hs = append(hs, h)
			}
		}
		out = map[string]any{"id": m.id, "threadId": m.id, "labelIds": slices.Clone(m.labels),
			"historyId": strconv.FormatUint(s.hid, 10), "internalDate": strconv.FormatInt(m.internal.UnixMilli(), 10),
			"sizeEstimate": len(m.raw), "payload": map[string]any{"mimeType": "text/plain", "headers": hs}}
		if f == "raw" {
			// format=raw: the whole message as base64url in "raw", no payload.
			delete(out, "payload")
			out["raw"] = base64.URLEncoding.EncodeToString(m.raw)
		}
	}
	s.mu.Unlock()
	if m == nil {
		notFound(w)
		return
	}
	writeJSON(w, 200, out)
}
