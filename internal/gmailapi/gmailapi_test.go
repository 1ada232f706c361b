package gmailapi_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emailqos/emailqosreceiver/internal/gmailapi"
	"github.com/emailqos/emailqosreceiver/internal/gmailapitest"
	"github.com/emailqos/emailqosreceiver/internal/graph"
	"github.com/emailqos/emailqosreceiver/internal/graphtest"
	"github.com/emailqos/emailqosreceiver/internal/restcall"
)

const secret = "ya29.gmail-SECRET-456"

func tokenOK(context.Context) (string, error) { return secret, nil }

func msg(from, to, token string) []byte {
	return []byte(fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: probe %s\r\nX-Probe-Token: %s\r\n\r\nbody\r\n", from, to, token, token))
}

func newPair(t *testing.T, o gmailapitest.Options, co gmailapi.Options) (*gmailapitest.Server, *gmailapi.Client) {
	t.Helper()
	if o.Users == nil {
		o.Users = []string{"a@gw.test", "b@gw.test"}
	}
	if o.Token == "" {
		o.Token = secret
	}
	f := gmailapitest.New(o)
	t.Cleanup(f.Close)
	co.BaseURL = f.URL()
	co.HTTPClient = f.Client()
	c, err := gmailapi.New(tokenOK, co)
	if err != nil {
		t.Fatal(err)
	}
	return f, c
}

func kindOf(err error) restcall.Kind {
	var e *gmailapi.Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return ""
}

// waitFor polls History from start until a message with the token and label
// shows, bounded by ctx; it returns the message.
func waitFor(ctx context.Context, t *testing.T, c *gmailapi.Client, user string, start uint64, token, label string) gmailapi.Message {
	t.Helper()
	for {
		refs, next, err := c.History(ctx, user, start)
		if err != nil {
			t.Fatalf("history: %v", err)
		}
		start = next
		for _, r := range refs {
			m, err := c.Get(ctx, user, r.ID, "X-Probe-Token", "Subject")
			if err != nil {
				t.Fatalf("get: %v", err)
			}
			if m.Header("x-probe-token") == token && m.HasLabel(label) {
				return m
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("message %s never showed: %v", token, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func TestTransitSendFindTrashDelete(t *testing.T) {
	f, c := newPair(t, gmailapitest.Options{TLS: true, DeliveryDelay: 150 * time.Millisecond, VisibilityLag: 50 * time.Millisecond}, gmailapi.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	base, err := c.HistoryID(ctx, "b@gw.test")
	if err != nil || base == 0 {
		t.Fatalf("baseline: %d %v", base, err)
	}
	ref, err := c.Send(ctx, "a@gw.test", msg("a@gw.test", "b@gw.test", "g1"))
	if err != nil || ref.ID == "" {
		t.Fatalf("send: %+v %v", ref, err)
	}
	if n := len(f.Messages("b@gw.test", "INBOX")); n != 0 {
		t.Fatalf("delivered before the delay: %d", n)
	}
	m := waitFor(ctx, t, c, "b@gw.test", base, "g1", "INBOX")
	if m.Placement() != "inbox" || m.Category() != "personal" || m.Header("Subject") != "probe g1" || m.Received().IsZero() {
		t.Fatalf("message: %+v", m)
	}
	if m.Header("From") != "" {
		t.Fatal("metadataHeaders not honoured: From returned")
	}
	if err := c.Trash(ctx, "b@gw.test", m.ID); err != nil {
		t.Fatal(err)
	}
	if got := f.Messages("b@gw.test", "TRASH"); len(got) != 1 || len(f.Messages("b@gw.test", "INBOX")) != 0 {
		t.Fatalf("trash: %+v", got)
	}
	if err := c.Delete(ctx, "b@gw.test", m.ID); err != nil {
		t.Fatal(err)
	}
	if len(f.Messages("b@gw.test", "")) != 0 {
		t.Fatal("still there after delete")
	}
	if _, err := c.Get(ctx, "b@gw.test", m.ID); kindOf(err) != restcall.KindNotFound {
		t.Fatalf("get after delete: %v", err)
	}
}

func TestRoundTripToSelf(t *testing.T) {
	_, c := newPair(t, gmailapitest.Options{DeliveryDelay: 100 * time.Millisecond}, gmailapi.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	base, err := c.HistoryID(ctx, "a@gw.test")
	if err != nil {
		t.Fatal(err)
	}
	ref, err := c.Send(ctx, "a@gw.test", msg("a@gw.test", "a@gw.test", "self"))
	if err != nil {
		t.Fatal(err)
	}
	// The SENT copy shows at once; the same message later gains INBOX.
	m := waitFor(ctx, t, c, "a@gw.test", base, "self", "INBOX")
	if m.ID != ref.ID || !m.HasLabel("SENT") {
		t.Fatalf("self-sent: %+v (sent %s)", m, ref.ID)
	}
}

func TestSpamPlacement(t *testing.T) {
	_, c := newPair(t, gmailapitest.Options{Spam: func(string, []byte) bool { return true }}, gmailapi.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	base, _ := c.HistoryID(ctx, "b@gw.test")
	if _, err := c.Send(ctx, "a@gw.test", msg("a@gw.test", "b@gw.test", "sp")); err != nil {
		t.Fatal(err)
	}
	m := waitFor(ctx, t, c, "b@gw.test", base, "sp", "SPAM")
	if m.Placement() != "spam" || m.Category() != "" {
		t.Fatalf("placement %q category %q", m.Placement(), m.Category())
	}
}

func TestHistoryPagingAndConsistency(t *testing.T) {
	f, c := newPair(t, gmailapitest.Options{PageSize: 2, VisibilityLag: 300 * time.Millisecond}, gmailapi.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	base, _ := c.HistoryID(ctx, "b@gw.test")
	for i := range 5 {
		if err := f.Deliver("b@gw.test", msg("x@y.test", "b@gw.test", fmt.Sprint("h", i))); err != nil {
			t.Fatal(err)
		}
	}
	refs, next, err := c.History(ctx, "b@gw.test", base)
	if err != nil || len(refs) != 0 || next != base {
		t.Fatalf("visible before the lag: %d %d %v", len(refs), next, err)
	}
	time.Sleep(350 * time.Millisecond)
	before := f.Requests()
	refs, next, err = c.History(ctx, "b@gw.test", base)
	if err != nil || len(refs) != 5 || f.Requests()-before != 3 || next <= base {
		t.Fatalf("got %d refs in %d requests, next %d: %v", len(refs), f.Requests()-before, next, err)
	}
	again, _, err := c.History(ctx, "b@gw.test", next)
	if err != nil || len(again) != 0 {
		t.Fatalf("second round: %d %v", len(again), err)
	}
}

func TestHistoryTooOld(t *testing.T) {
	f, c := newPair(t, gmailapitest.Options{}, gmailapi.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	base, _ := c.HistoryID(ctx, "b@gw.test")
	_ = f.Deliver("b@gw.test", msg("x@y.test", "b@gw.test", "old"))
	f.ExpireHistory("b@gw.test")
	_, _, err := c.History(ctx, "b@gw.test", base)
	if !restcall.IsKind(err, restcall.KindResync) {
		t.Fatalf("want resync, got %v", err)
	}
	// Recovery: a new baseline works.
	nb, err := c.HistoryID(ctx, "b@gw.test")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.History(ctx, "b@gw.test", nb); err != nil {
		t.Fatal(err)
	}
}

func TestRateLimits(t *testing.T) {
	for _, tc := range []struct {
		status int
		reason string
	}{{429, "rateLimitExceeded"}, {403, "rateLimitExceeded"}, {403, "userRateLimitExceeded"}} {
		t.Run(fmt.Sprint(tc.status, tc.reason), func(t *testing.T) {
			f, c := newPair(t, gmailapitest.Options{}, gmailapi.Options{MinBackoff: 50 * time.Millisecond})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			f.Throttle(2, tc.status, tc.reason, 0)
			if _, err := c.HistoryID(ctx, "a@gw.test"); err != nil || f.Requests() != 3 {
				t.Fatalf("%v after %d requests", err, f.Requests())
			}
		})
	}
}

func TestRetryAfterBoundedByContext(t *testing.T) {
	f, c := newPair(t, gmailapitest.Options{}, gmailapi.Options{})
	f.Throttle(100, 429, "rateLimitExceeded", 20*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Send(ctx, "a@gw.test", msg("a@gw.test", "b@gw.test", "x"))
	var e *gmailapi.Error
	if !errors.As(err, &e) || e.Kind != restcall.KindThrottled || e.Code != "rateLimitExceeded" || e.RetryAfter != 20*time.Second {
		t.Fatalf("got %#v", err)
	}
	if el := time.Since(start); el > 5*time.Second || f.Requests() != 1 {
		t.Fatalf("took %v, %d requests", el, f.Requests())
	}
}

func TestForbiddenIsNotThrottling(t *testing.T) {
	f, c := newPair(t, gmailapitest.Options{}, gmailapi.Options{})
	f.Throttle(1, 403, "insufficientPermissions", 0)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.HistoryID(ctx, "a@gw.test")
	var e *gmailapi.Error
	if !errors.As(err, &e) || e.Kind != restcall.KindForbidden || e.Code != "insufficientPermissions" || f.Requests() != 1 {
		t.Fatalf("got %#v after %d requests", err, f.Requests())
	}
}

func TestOversizeAndTokenErrors(t *testing.T) {
	f, c := newPair(t, gmailapitest.Options{}, gmailapi.Options{MaxResponseBytes: 64})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.HistoryID(ctx, "a@gw.test"); kindOf(err) != restcall.KindTooLarge {
		t.Fatalf("oversize: %v", err)
	}
	bad, _ := gmailapi.New(func(context.Context) (string, error) { return "", errors.New("no key") }, gmailapi.Options{BaseURL: f.URL(), HTTPClient: f.Client()})
	n := f.Requests()
	if _, err := bad.HistoryID(ctx, "a@gw.test"); kindOf(err) != restcall.KindToken || f.Requests() != n {
		t.Fatalf("token source failure: %v", err)
	}
	wrong, _ := gmailapi.New(func(context.Context) (string, error) { return "wrong-" + secret, nil }, gmailapi.Options{BaseURL: f.URL(), HTTPClient: f.Client()})
	_, err := wrong.Send(ctx, "a@gw.test", msg("a@gw.test", "b@gw.test", "x"))
	var e *gmailapi.Error
	if !errors.As(err, &e) || e.Kind != restcall.KindAuth || e.Code != "authError" || strings.Contains(err.Error(), secret) {
		t.Fatalf("refused token: %#v", err)
	}
}

func TestBaseURLRule(t *testing.T) {
	for u, ok := range map[string]bool{
		"":                             true,
		"https://gmail.googleapis.com": true,
		"http://127.0.0.1:9":           true,
		"http://gmail.googleapis.com":  false,
		"gmail.googleapis.com":         false,
	} {
		if _, err := gmailapi.New(tokenOK, gmailapi.Options{BaseURL: u}); (err == nil) != ok {
			t.Errorf("%q: %v", u, err)
		}
	}
}

// TestMixedGraphToGmail sends through the Graph fake to an address the
// Gmail fake holds (Route hook) and finds it with the Gmail client.
func TestMixedGraphToGmail(t *testing.T) {
	gm, c := newPair(t, gmailapitest.Options{}, gmailapi.Options{})
	gr := graphtest.New(graphtest.Options{Users: []string{"a@m365.test"}, DeliveryDelay: 50 * time.Millisecond,
		Route: func(rcpt string, raw []byte) bool { return gm.Deliver(rcpt, raw) == nil }})
	defer gr.Close()
	gc, err := graph.New(tokenOK, graph.Options{BaseURL: gr.URL()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	base, _ := c.HistoryID(ctx, "b@gw.test")
	if err := gc.SendMIME(ctx, "a@m365.test", msg("a@m365.test", "b@gw.test", "mix")); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, c, "b@gw.test", base, "mix", "INBOX")
}

// Raw reads a message whole (format=raw, base64url) up to the limit; one
// longer is too_large, an unknown id not_found; Get reports sizeEstimate.
func TestRaw(t *testing.T) {
	f, c := newPair(t, gmailapitest.Options{}, gmailapi.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	const user = "a@gw.test"
	small := msg("x@other.test", user, "t1")
	big := append(msg("x@other.test", user, "t2"), strings.Repeat("x", 2<<20)...)
	for _, m := range [][]byte{small, big} {
		if err := f.Deliver(user, m); err != nil {
			t.Fatal(err)
		}
	}
	stored := f.Messages(user, "INBOX")
	if len(stored) != 2 {
		t.Fatalf("stored %d", len(stored))
	}
	got, err := c.Raw(ctx, user, stored[0].ID, 1<<20)
	if err != nil || string(got) != string(small) {
		t.Fatalf("Raw: %v, %d bytes", err, len(got))
	}
	if _, err := c.Raw(ctx, user, stored[1].ID, 1<<20); kindOf(err) != restcall.KindTooLarge {
		t.Fatalf("over the limit: %v", err)
	}
	// Just over the limit once decoded, within the response budget.
	if err := f.Deliver(user, append(msg("x@other.test", user, "t3"), strings.Repeat("y", 1<<20)...)); err != nil {
		t.Fatal(err)
	}
	stored = f.Messages(user, "INBOX")
	if _, err := c.Raw(ctx, user, stored[2].ID, 1<<20); kindOf(err) != restcall.KindTooLarge {
		t.Fatalf("decoded over the limit: %v", err)
	}
	m, err := c.Get(ctx, user, stored[1].ID)
	if err != nil || m.SizeEstimate != int64(len(big)) {
		t.Fatalf("sizeEstimate %d, %v", m.SizeEstimate, err)
	}
	if _, err := c.Raw(ctx, user, "ffff", 1<<20); kindOf(err) != restcall.KindNotFound {
		t.Fatalf("unknown id: %v", err)
	}
}
