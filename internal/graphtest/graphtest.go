// Package graphtest is an in-process fake of the Microsoft Graph mail API on
// loopback, built from the v1.0 REST reference: sendMail with a MIME body
// (202, delivered later), message delta queries with paging and deltaLinks,
// message get (JSON, or the MIME content with $value), permanentDelete and
// move, bearer checking, and throttling (429/503 with Retry-After) on
// demand; every answer carries a request-id header, as Graph's do. A new message shows in delta queries
// only after VisibilityLag, like Exchange Online's eventual consistency.
package graphtest // import "github.com/emailqos/emailqosreceiver/internal/graphtest"

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Options configures a Server.
type Options struct {
	// Users are the mailbox addresses (the {id} in /users/{id}).
	Users []string
	// Token is the accepted bearer token; empty accepts any non-empty one.
	Token string
	// DeliveryDelay is the time between sendMail's 202 and the message
	// being stored in the recipient's folder.
	DeliveryDelay time.Duration
	// VisibilityLag is the time between storage and the message showing in
	// delta queries.
	VisibilityLag time.Duration
	// PageSize is the largest delta page (default 2, so paging is exercised);
	// a smaller Prefer: odata.maxpagesize wins.
	PageSize int
	// TLS serves https with httptest's self-signed certificate; use Client.
	TLS bool
	// Junk, when set, decides that a delivery goes to JunkEmail.
	Junk func(rcpt string, raw []byte) bool
	// Route receives messages sent to addresses that are not Users (another
	// fake, mailtest.Server.Append...); it reports whether it took them.
	Route func(rcpt string, raw []byte) bool
	// Notice, when set, is asked at each delivery of a sendMail message
	// for a delivery status notification about it: a non-nil notice is
	// filed in the sender's mailbox (as a non-delivery report of Exchange
	// Online lands in the sender's Inbox) before the delivery; deliver
	// false drops the message (a bounce, or a test that delivers it later
	// itself), true delivers it (after a delay notice: the delivery).
	Notice func(rcpt string, raw []byte) (notice []byte, deliver bool)
	// OnRequest, when set, sees every request before it is answered (tests
	// count the reads of a message's content with it).
	OnRequest func(r *http.Request)
}

// Stored is a message as kept by the fake.
type Stored struct {
	ID     string
	Folder string
	Raw    []byte
}

type message struct {
	id, folder string
	raw        []byte
	received   time.Time
	headers    []header
	subject    string
	msgID      string
}

type header struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

type entry struct {
	seq       int64
	id        string
	removed   bool
	visibleAt time.Time
}

type mailbox struct {
	msgs map[string]*message
	logs map[string][]entry // folder -> change log
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
	seq        int64
	throttleN  int
	throttleSt int
	retryAfter time.Duration
}

var folders = map[string]string{"inbox": "Inbox", "junkemail": "JunkEmail", "deleteditems": "DeletedItems", "sentitems": "SentItems"}

// New starts a fake on 127.0.0.1.
func New(o Options) *Server {
	if o.PageSize <= 0 {
		o.PageSize = 2
	}
	s := &Server{opts: o, boxes: map[string]*mailbox{}}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	for _, u := range o.Users {
		s.boxes[strings.ToLower(u)] = &mailbox{msgs: map[string]*message{}, logs: map[string][]entry{}}
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

// Throttle answers the next n authenticated requests with status (429 or
// 503) and Retry-After (whole seconds, rounded up; none when 0).
func (s *Server) Throttle(n, status int, retryAfter time.Duration) {
	s.mu.Lock()
	s.throttleN, s.throttleSt, s.retryAfter = n, status, retryAfter
	s.mu.Unlock()
}

// Deliver stores raw in user's Inbox (or JunkEmail when Options.Junk says
// so) now, as a delivery from outside (SMTP into mailtest relayed here...).
// It shows in delta queries after VisibilityLag.
func (s *Server) Deliver(user string, raw []byte) error {
	f := "Inbox"
	if s.opts.Junk != nil && s.opts.Junk(user, raw) {
		f = "JunkEmail"
	}
	_, err := s.store(user, f, raw)
	return err
}

// Messages returns a snapshot of user's folder (a well-known name).
func (s *Server) Messages(user, folder string) []Stored {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.boxes[strings.ToLower(user)]
	f := folders[strings.ToLower(folder)]
	var out []Stored
	if b == nil {
		return nil
	}
	for _, e := range b.logs[f] {
		if m := b.msgs[e.id]; !e.removed && m != nil && m.folder == f {
			out = append(out, Stored{ID: m.id, Folder: f, Raw: m.raw})
		}
	}
	return out
}

func (s *Server) store(user, folder string, raw []byte) (string, error) {
	mm, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return "", fmt.Errorf("graphtest: not a MIME message: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.boxes[strings.ToLower(user)]
	if b == nil {
		return "", fmt.Errorf("graphtest: no mailbox %q", user)
	}
	s.seq++
	m := &message{id: "AAMk" + strconv.FormatInt(s.seq, 10), folder: folder, raw: raw, received: time.Now().UTC(),
		subject: mm.Header.Get("Subject"), msgID: mm.Header.Get("Message-Id")}
	for k, vs := range mm.Header {
		for _, v := range vs {
			m.headers = append(m.headers, header{k, v})
		}
	}
	b.msgs[m.id] = m
	b.logs[folder] = append(b.logs[folder], entry{seq: s.seq, id: m.id, visibleAt: time.Now().Add(s.opts.VisibilityLag)})
	return m.id, nil
}

// removeLocked logs m leaving its folder.
func (s *Server) removeLocked(b *mailbox, m *message) {
	s.seq++
	b.logs[m.folder] = append(b.logs[m.folder], entry{seq: s.seq, id: m.id, removed: true, visibleAt: time.Now()})
}

type graphErr struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func writeErr(w http.ResponseWriter, status int, code, msg string) {
	var e graphErr
	e.Error.Code, e.Error.Message = code, msg
	writeJSON(w, status, e)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if s.opts.OnRequest != nil {
		s.opts.OnRequest(r)
	}
	n := s.requests.Add(1)
	// Graph names each answer for its support (request-id, a GUID).
	w.Header().Set("request-id", fmt.Sprintf("00000000-0000-4000-8000-%012d", n))
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" || (s.opts.Token != "" && tok != s.opts.Token) {
		// Like Graph: the token is never echoed.
		writeErr(w, 401, "InvalidAuthenticationToken", "Access token validation failure.")
		return
	}
	s.mu.Lock()
	if s.throttleN > 0 {
		s.throttleN--
		st, ra := s.throttleSt, s.retryAfter
		s.mu.Unlock()
		if ra > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int((ra+time.Second-1)/time.Second)))
		}
		code := "ApplicationThrottled"
		if st == 503 {
			code = "ServiceNotAvailable"
		}
		writeErr(w, st, code, "Application is over its MailboxConcurrency limit.")
		return
	}
	s.mu.Unlock()

	var parts []string
	for _, p := range strings.Split(strings.TrimPrefix(r.URL.EscapedPath(), "/"), "/") {
		u, err := url.PathUnescape(p)
		if err != nil {
			writeErr(w, 400, "BadRequest", "Invalid path.")
			return
		}
		parts = append(parts, u)
	}
	if len(parts) < 4 || parts[0] != "v1.0" || parts[1] != "users" {
		writeErr(w, 400, "BadRequest", "Resource not found for the segment.")
		return
	}
	user, rest := parts[2], parts[3:]
	s.mu.Lock()
	b := s.boxes[strings.ToLower(user)]
	s.mu.Unlock()
	if b == nil {
		writeErr(w, 404, "ErrorInvalidUser", "The requested user is invalid.")
		return
	}
	switch {
	case r.Method == http.MethodPost && len(rest) == 1 && rest[0] == "sendMail":
		s.sendMail(w, r, user)
	case r.Method == http.MethodGet && len(rest) == 4 && rest[0] == "mailFolders" && rest[2] == "messages" && rest[3] == "delta":
		s.delta(w, r, user, rest[1])
	case r.Method == http.MethodGet && len(rest) == 2 && rest[0] == "messages":
		s.get(w, b, rest[1])
	case r.Method == http.MethodGet && len(rest) == 3 && rest[0] == "messages" && rest[2] == "$value":
		s.value(w, b, rest[1])
	case r.Method == http.MethodPost && len(rest) == 3 && rest[0] == "messages" && rest[2] == "permanentDelete":
		s.permanentDelete(w, b, rest[1])
	case r.Method == http.MethodPost && len(rest) == 3 && rest[0] == "messages" && rest[2] == "move":
		s.move(w, r, b, rest[1])
	default:
		writeErr(w, 400, "BadRequest", "Unsupported request.")
	}
}

func (s *Server) sendMail(w http.ResponseWriter, r *http.Request, user string) {
	if !strings.HasPrefix(r.Header.Get("Content-Type"), "text/plain") {
		writeErr(w, 400, "ErrorInvalidRequest", "MIME content must be sent as text/plain.")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	if err != nil {
		writeErr(w, 400, "ErrorInvalidRequest", "Cannot read body.")
		return
	}
	raw, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(body)))
	if err != nil {
		writeErr(w, 400, "ErrorMimeContentInvalidBase64String", "Invalid base64 string for MIME content.")
		return
	}
	mm, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		writeErr(w, 400, "ErrorMimeContentInvalid", "The MIME content is invalid.")
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
		writeErr(w, 400, "ErrorInvalidRecipients", "At least one recipient is not valid.")
		return
	}
	if _, err := s.store(user, "SentItems", raw); err != nil {
		writeErr(w, 500, "ErrorInternalServerError", "Store failed.")
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
					_ = s.Deliver(user, n)
				}
				if !deliver {
					continue
				}
			}
			if s.Deliver(rc, raw) != nil && s.opts.Route != nil {
				s.opts.Route(rc, raw)
			}
		}
	}()
	w.WriteHeader(http.StatusAccepted)
}

type jsonMessage struct {
	ID                string   `json:"id"`
	Subject           string   `json:"subject,omitempty"`
	InternetMessageID string   `json:"internetMessageId,omitempty"`
	ReceivedDateTime  string   `json:"receivedDateTime,omitempty"`
	ParentFolderID    string   `json:"parentFolderId,omitempty"`
	Headers           []header `json:"internetMessageHeaders,omitempty"`
	Removed           *struct {
		Reason string `json:"reason"`
	} `json:"@removed,omitempty"`
}

func toJSON(m *message) jsonMessage {
	return jsonMessage{ID: m.id, Subject: m.subject, InternetMessageID: m.msgID,
		ReceivedDateTime: m.received.Format(time.RFC3339), ParentFolderID: m.folder, Headers: m.headers}
}

// delta implements message-delta: no token = initial round from the start of
// the log; $deltatoken=T = changes after T; $skiptoken=T.E.off = a page.
// Tokens also carry whether changeType=created was asked (encoded in links,
// as Graph does).
func (s *Server) delta(w http.ResponseWriter, r *http.Request, user, folder string) {
	f := folders[strings.ToLower(folder)]
	if f == "" {
		writeErr(w, 404, "ErrorInvalidIdMalformed", "Id is malformed.")
		return
	}
	q := r.URL.Query()
	var from, end, off int64 = 0, -1, 0
	created := q.Get("changeType") == "created"
	bad := func() { writeErr(w, 410, "SyncStateNotFound", "The sync state could not be found.") }
	if t := q.Get("$deltatoken"); t != "" {
		p := strings.Split(t, ".")
		if len(p) != 2 {
			bad()
			return
		}
		var err error
		if from, err = strconv.ParseInt(p[0], 10, 64); err != nil {
			bad()
			return
		}
		created = p[1] == "c"
	} else if t := q.Get("$skiptoken"); t != "" {
		p := strings.Split(t, ".")
		if len(p) != 4 {
			bad()
			return
		}
		from, _ = strconv.ParseInt(p[0], 10, 64)
		end, _ = strconv.ParseInt(p[1], 10, 64)
		off, _ = strconv.ParseInt(p[2], 10, 64)
		created = p[3] == "c"
	}
	ps := s.opts.PageSize
	if pref := r.Header.Get("Prefer"); strings.HasPrefix(pref, "odata.maxpagesize=") {
		if n, err := strconv.Atoi(strings.TrimPrefix(pref, "odata.maxpagesize=")); err == nil && n > 0 && n < ps {
			ps = n
		}
	}
	s.mu.Lock()
	b := s.boxes[strings.ToLower(user)]
	log := b.logs[f]
	now := time.Now()
	if end < 0 {
		// Stop before the first change not yet visible, so it is not lost:
		// it comes in a later round.
		end = from
		for _, e := range log {
			if e.seq <= from {
				continue
			}
			if e.visibleAt.After(now) {
				break
			}
			end = e.seq
		}
	}
	last := map[string]entry{}
	var order []string
	for _, e := range log {
		if e.seq > from && e.seq <= end {
			if _, ok := last[e.id]; !ok {
				order = append(order, e.id)
			}
			last[e.id] = e
		}
	}
	var items []jsonMessage
	for _, id := range order {
		e := last[id]
		m := b.msgs[id]
		switch {
		case e.removed && created:
		case e.removed || m == nil || m.folder != f:
			if !created {
				items = append(items, jsonMessage{ID: id, Removed: &struct {
					Reason string `json:"reason"`
				}{"deleted"}})
			}
		default:
			items = append(items, toJSON(m))
		}
	}
	s.mu.Unlock()
	flag := "a"
	if created {
		flag = "c"
	}
	base := s.hs.URL + r.URL.Path + "?"
	page := map[string]any{"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(message)"}
	lo := min(off, int64(len(items)))
	hi := min(off+int64(ps), int64(len(items)))
	page["value"] = items[lo:hi]
	if hi < int64(len(items)) {
		page["@odata.nextLink"] = base + "$skiptoken=" + fmt.Sprintf("%d.%d.%d.%s", from, end, hi, flag)
	} else {
		page["@odata.deltaLink"] = base + "$deltatoken=" + fmt.Sprintf("%d.%s", end, flag)
	}
	writeJSON(w, 200, page)
}

func (s *Server) get(w http.ResponseWriter, b *mailbox, id string) {
	s.mu.Lock()
	m := b.msgs[id]
	var j jsonMessage
	if m != nil {
		j = toJSON(m)
	}
	s.mu.Unlock()
	if m == nil {
		writeErr(w, 404, "ErrorItemNotFound", "The specified object was not found in the store.")
		return
	}
	writeJSON(w, 200, j)
}

// value serves the message's MIME content as stored (message-get, "get
// MIME content of a message").
func (s *Server) value(w http.ResponseWriter, b *mailbox, id string) {
	s.mu.Lock()
	var raw []byte
	if m := b.msgs[id]; m != nil {
		raw = m.raw
	}
	s.mu.Unlock()
	if raw == nil {
		writeErr(w, 404, "ErrorItemNotFound", "The specified object was not found in the store.")
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("Content-Length", strconv.Itoa(len(raw)))
	w.WriteHeader(200)
	_, _ = w.Write(raw)
}

func (s *Server) permanentDelete(w http.ResponseWriter, b *mailbox, id string) {
	s.mu.Lock()
	m := b.msgs[id]
	if m != nil {
		delete(b.msgs, id)
		s.removeLocked(b, m)
	}
	s.mu.Unlock()
	if m == nil {
		writeErr(w, 404, "ErrorItemNotFound", "The specified object was not found in the store.")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) move(w http.ResponseWriter, r *http.Request, b *mailbox, id string) {
	var req struct {
		DestinationID string `json:"destinationId"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
		writeErr(w, 400, "ErrorInvalidRequest", "Invalid request body.")
		return
	}
	dest := folders[strings.ToLower(req.DestinationID)]
	if dest == "" {
		writeErr(w, 404, "ErrorItemNotFound", "The destination folder was not found.")
		return
	}
	s.mu.Lock()
	m := b.msgs[id]
	var j jsonMessage
	if m != nil {
		// A move gives the item a new id in the destination (message-move).
		delete(b.msgs, id)
		s.removeLocked(b, m)
		s.seq++
		n := *m
		n.id, n.folder = "AAMk"+strconv.FormatInt(s.seq, 10), dest
		b.msgs[n.id] = &n
		b.logs[dest] = append(b.logs[dest], entry{seq: s.seq, id: n.id, visibleAt: time.Now()})
		j = toJSON(&n)
	}
	s.mu.Unlock()
	if m == nil {
		writeErr(w, 404, "ErrorItemNotFound", "The specified object was not found in the store.")
		return
	}
	writeJSON(w, 201, j)
}
