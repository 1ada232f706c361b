package probe

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/emailqos/emailqosreceiver/internal/gmailapi"
	"github.com/emailqos/emailqosreceiver/internal/graph"
	"github.com/emailqos/emailqosreceiver/internal/imapwatch"
	"github.com/emailqos/emailqosreceiver/internal/probemsg"
	"github.com/emailqos/emailqosreceiver/internal/restcall"
	"github.com/emailqos/emailqosreceiver/internal/steps"
)

// The API transports (issue 18): Microsoft Graph and the Gmail API, for
// sending (instead of SMTP) and for reading (instead of IMAP or POP3), per
// account, so that any mix works.

// Sending transports (Account.Send).
const (
	SendSMTP     = "smtp"
	SendGraph    = "graph"
	SendGmailAPI = "gmail_api"
)

// Retrieval over the APIs (Account.Retrieval).
const (
	RetrievalGraph    = "graph"
	RetrievalGmailAPI = "gmail_api"
)

// APIs are an account's API clients; only those its transports use are set.
type APIs struct {
	Graph *graph.Client
	Gmail *gmailapi.Client
	// User is the mailbox in API paths (/users/{User}); the address when
	// empty.
	User string
}

// apiState is what a mailbox read over an API remembers between sessions:
// where the last session's view of the mailbox ended, so that the next one
// sees what arrived in between (late probes) without a full listing.
type apiState struct {
	mu         sync.Mutex
	graphLinks map[string]string // folder -> deltaLink
	gmailStart uint64            // historyId
	// reports are the possible notices seen by any session (api_notice.go).
	reports []apiReport
}

func (a *Account) apiUser() string {
	if a.API.User != "" {
		return a.API.User
	}
	return a.Address
}

// sendsByAPI reports whether the account sends over an API instead of SMTP.
func (a *Account) sendsByAPI() bool { return a.Send == SendGraph || a.Send == SendGmailAPI }

// sendAPI submits raw over the sender's API and returns when it was
// accepted. Graph's 202 means queued for sending, not handed over like
// SMTP's 250 after DATA (user-sendmail reference): the delivery latency then
// includes Exchange's own submission queue. Gmail's 200 returns the sent
// message, already in the sender's Sent label.
// sentID is the id of the sender's own copy when the API returns one
// (Gmail), else "".
func sendAPI(ctx context.Context, s *Account, raw []byte, rec *steps.Recorder) (_ time.Time, sentID string, _ error) {
	var step string
	var call func() error
	switch s.Send {
	case SendGraph:
		step = steps.GraphSend
		call = func() error { return s.API.Graph.SendMIME(ctx, s.apiUser(), raw) }
	default:
		step = steps.GmailAPISend
		call = func() error {
			ref, err := s.API.Gmail.Send(ctx, s.apiUser(), raw)
			sentID = ref.ID
			return err
		}
	}
	if err := rec.Do(step, call); err != nil {
		return time.Time{}, "", apiFail(ctx, step, steps.CodeSMTPSend, err, s)
	}
	return time.Now(), sentID, nil
}

// removeSentCopy deletes the sender's copy of a transit probe (Gmail keeps
// what users.messages.send sent, labelled SENT), so probes do not pile up in
// the sending mailbox. Not for a round trip: there the copy is the probe
// itself, which the cleanup handles. Best effort, untimed: it is not part
// of the measurement, and a failure is only logged.
func removeSentCopy(ctx context.Context, t *Target, id string, logger *zap.Logger) {
	if id == "" || t.Sender == t.Receiver || strings.EqualFold(t.Sender.apiUser(), t.Receiver.Address) ||
		t.Cleanup == CleanupKeep || t.Sender.Send != SendGmailAPI {
		return
	}
	if err := t.Sender.API.Gmail.Delete(ctx, t.Sender.apiUser(), id); err != nil {
		logger.Warn("removing the sender's copy of the probe failed", zap.String("target", t.Name), zap.Error(err))
	}
}

// apiFail types an API failure of step. Sign-in and permission failures of
// a read are code 3 (the mailbox could not be reached), as an IMAP login
// failure is; other read failures keep the step's code.
func apiFail(ctx context.Context, step string, code int, err error, a *Account) *steps.Error {
	var re *restcall.Error
	if !errors.As(err, &re) {
		return steps.FailCode(ctx, step, code, "", err)
	}
	typ := ""
	switch re.Kind {
	case restcall.KindToken:
		typ = steps.TypeTokenUnavailable
		if a.TokenType != nil && re.Err != nil {
			typ = a.TokenType(re.Err)
		}
	case restcall.KindAuth, restcall.KindForbidden:
		typ = steps.TypeAuth
	case restcall.KindNotFound, restcall.KindBadRequest:
		typ = steps.TypeRejected
	case restcall.KindThrottled:
		typ = steps.TypeThrottled
	case restcall.KindServer:
		typ = steps.TypeUnavailable
	case restcall.KindTooLarge, restcall.KindProtocol, restcall.KindResync:
		typ = steps.TypeProtocol
	case restcall.KindTransport:
		typ = steps.Classify(re.Err)
	case restcall.KindTimeout:
		return steps.FailCode(ctx, step, code, "", err)
	}
	if code != steps.CodeSMTPSend && code != steps.CodeCleanup {
		switch re.Kind {
		case restcall.KindToken, restcall.KindAuth, restcall.KindForbidden, restcall.KindNotFound, restcall.KindTransport:
			code = steps.CodeMailboxConnect
		}
	}
	// The server's answer is the cause the user must see, even when the
	// probe's time ran out while it was being retried.
	return &steps.Error{Step: step, Code: code, Type: typ, Err: err}
}

// apiMessage is a message seen over an API, with its header block rebuilt
// from the API's header list (what probemsg, authres and received read).
type apiMessage struct {
	id        string
	folder    string // Graph folder, "" over Gmail
	placement imapwatch.Placement
	header    []byte
	// report: it may be a delivery status notification (isReport);
	// received is the server's receive time, size its size when the API
	// tells (Gmail's sizeEstimate), else 0.
	report   bool
	received time.Time
	size     int64
}

func headerBlock(n int, field func(i int) (string, string)) []byte {
	var b strings.Builder
	for i := range n {
		name, value := field(i)
		// Header values come unfolded from the APIs; a CR or LF left in one
		// would let it forge lines, so they are flattened.
		value = strings.NewReplacer("\r", " ", "\n", " ").Replace(value)
		b.WriteString(name + ": " + value + "\r\n")
	}
	b.WriteString("\r\n")
	return []byte(b.String())
}

// isCandidate narrows what accept is asked about to messages carrying a
// probe token; what makes a message a probe is still the MAC.
func isCandidate(header []byte, tokens []string) bool {
	if !strings.Contains(string(header), probemsg.TokenPrefix) {
		return false
	}
	if len(tokens) == 0 {
		return true
	}
	for _, t := range tokens {
		if strings.Contains(string(header), t) {
			return true
		}
	}
	return false
}

// apiMailbox is the shared part of the Graph and Gmail mailboxes: the poll
// loop and the messages seen by this session (for the housekeeping).
type apiMailbox struct {
	acct     *Account
	interval time.Duration
	listStep string
	rec      *steps.Recorder
	// seen are the messages this session has looked at, by id: the backlog
	// since the previous session and the arrivals during the wait.
	seen  map[string]apiMessage
	order []string
	// poll reads what is new since the last poll.
	poll func(ctx context.Context) ([]apiMessage, error)
	// fetchNotice reads a possible notice whole, at most
	// imapwatch.MaxNoticeBytes; removeNotice deletes or moves one.
	fetchNotice  func(ctx context.Context, id string) ([]byte, error)
	removeNotice func(ctx context.Context, id string, move bool, folder string) error
	logger       *zap.Logger
	// untimed: the calls are housekeeping, not the probe's steps.
	untimed bool
	// position returns a function that puts the mailbox's delta or history
	// position back where it is now.
	position func() (restore func())
}

func (m *apiMailbox) note(msgs []apiMessage) {
	m.rememberReports(msgs)
	for _, msg := range msgs {
		if _, ok := m.seen[msg.id]; !ok {
			m.order = append(m.order, msg.id)
		}
		m.seen[msg.id] = msg
	}
}

// Wait polls until the probe is among the new messages. The arrival lies
// between the start of the last poll that did not show it and the end of
// the one that did; SeenAt is the middle, Uncertainty half the width. An
// API's eventual consistency (a new message shows in delta or history
// queries a moment after it is stored) is inside that window as far as the
// client can tell, and documented as part of the API's latency. Before the
// first poll the window starts at floor, the end of the send: the message
// may have arrived before the wait began.
func (m *apiMailbox) Wait(ctx context.Context, floor time.Time, token string, accept func([]byte) bool) (arrival, error) {
	a, _, err := m.wait(ctx, floor, token, accept, nil)
	return a, err
}

// wait is Wait that, with judge, also reads and judges the reports among
// the new messages (api_notice.go); it then returns the notices kept, and
// ends with imapwatch.ErrNoticeStop when judge stops it.
func (m *apiMailbox) wait(ctx context.Context, floor time.Time, token string, accept func([]byte) bool, judge imapwatch.NoticeFunc) (arrival, []noticeRef, error) {
	var refs []noticeRef
	var queue noticeQueue
	prev := time.Now()
	defer func(start time.Time) { m.rec.Add(steps.DeliveryWait, start, time.Since(start)) }(prev)
	if !floor.IsZero() && floor.Before(prev) {
		prev = floor
	}
	for {
		start := time.Now()
		msgs, err := m.poll(ctx)
		end := time.Now()
		if err != nil {
			if ctx.Err() != nil {
				return arrival{}, refs, waitEnded(ctx)
			}
			return arrival{}, refs, apiFail(ctx, m.listStep, steps.CodeSearch, err, m.acct)
		}
		m.note(msgs)
		// Notices first: a delay notice that came with the probe is still
		// counted. The arrival window is already fixed (end), so reading
		// them does not move it.
		if judge != nil {
			for _, msg := range msgs {
				if msg.report {
					queue.msgs = append(queue.msgs, msg)
				}
			}
			kept, stop, err := m.judgeQueued(ctx, &queue, judge)
			refs = append(refs, kept...)
			if stop {
				return arrival{}, refs, imapwatch.ErrNoticeStop
			}
			if err != nil {
				return arrival{}, refs, waitEnded(ctx)
			}
		}
		for _, msg := range msgs {
			if isCandidate(msg.header, []string{token}) && accept(msg.header) {
				half := end.Sub(prev) / 2
				return arrival{ID: msg.id, SeenAt: prev.Add(half), Uncertainty: half, Method: imapwatch.MethodPoll,
					Header: msg.header, Placement: msg.placement, Folder: msg.folder}, refs, nil
			}
		}
		prev = start
		t := time.NewTimer(m.interval)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return arrival{}, refs, waitEnded(ctx)
		}
	}
}

func waitEnded(ctx context.Context) error {
	typ := steps.TypeNotFound
	if errors.Is(context.Cause(ctx), context.Canceled) {
		typ = steps.TypeCanceled
	}
	return steps.New(steps.DeliveryWait, typ, fmt.Errorf("probe not found: %w", context.Cause(ctx)))
}

// FindProbes looks among the messages this session saw (what arrived since
// the previous session of this mailbox, and during this one): the APIs
// cannot search custom headers, and a listing of the whole mailbox per run
// is what delta and history queries exist to avoid.
func (m *apiMailbox) FindProbes(_ context.Context, tokens []string, limit int, accept func([]byte) bool) ([]string, error) {
	var ids []string
	for _, id := range m.order {
		msg := m.seen[id]
		if len(ids) >= limit {
			break
		}
		if isCandidate(msg.header, tokens) && accept(msg.header) {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// forget drops removed messages from what the session saw.
func (m *apiMailbox) forget(id string) { delete(m.seen, id) }

// minAPIInterval bounds the poll interval of an API mailbox from below:
// Graph allows 10,000 requests per 10 minutes per app and mailbox, Gmail
// 250 quota units per user per second (their throttling documentation);
// polling faster would only earn 429s.
const minAPIInterval = 100 * time.Millisecond

func newAPIMailbox(a *Account, t *Target, listStep string, rec *steps.Recorder, logger *zap.Logger) *apiMailbox {
	return &apiMailbox{acct: a, interval: max(t.PollInterval, minAPIInterval), listStep: listStep, rec: rec, seen: map[string]apiMessage{}, logger: logger}
}

// timed runs one API call as part of step; untimed, during housekeeping.
func (m *apiMailbox) timed(step string, fn func() error) error {
	if m.untimed {
		return fn()
	}
	return m.rec.Do(step, fn)
}
