package graph_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emailqos/emailqosreceiver/internal/graph"
	"github.com/emailqos/emailqosreceiver/internal/graphtest"
	"github.com/emailqos/emailqosreceiver/internal/restcall"
)

const secret = "tok-graph-SECRET-123"

func tokenOK(context.Context) (string, error) { return secret, nil }

func msg(from, to, token string) []byte {
	return []byte(fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: probe %s\r\nMessage-Id: <%s@probe.test>\r\nX-Probe-Token: %s\r\n\r\nbody\r\n", from, to, token, token, token))
}

func newPair(t *testing.T, o graphtest.Options, co graph.Options) (*graphtest.Server, *graph.Client) {
	t.Helper()
	if o.Users == nil {
		o.Users = []string{"a@m365.test", "b@m365.test"}
	}
	if o.Token == "" {
		o.Token = secret
	}
	f := graphtest.New(o)
	t.Cleanup(f.Close)
	co.BaseURL = f.URL()
	co.HTTPClient = f.Client()
	c, err := graph.New(tokenOK, co)
	if err != nil {
		t.Fatal(err)
	}
	return f, c
}

func kindOf(err error) restcall.Kind {
	var e *graph.Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return ""
}

// waitFor polls Delta until a message with the token shows, bounded by ctx.
func waitFor(ctx context.Context, t *testing.T, c *graph.Client, link, token string) (graph.Message, string) {
	t.Helper()
	for {
		msgs, next, err := c.Delta(ctx, link)
		if err != nil {
			t.Fatalf("delta: %v", err)
		}
		link = next
		for _, m := range msgs {
			if m.Header("X-Probe-Token") == token {
				return m, link
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("message %s never showed: %v", token, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func TestSendFindMoveDelete(t *testing.T) {
	f, c := newPair(t, graphtest.Options{TLS: true, DeliveryDelay: 150 * time.Millisecond, VisibilityLag: 50 * time.Millisecond}, graph.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 3 { // older mail: the baseline pages through and drops it
		if err := f.Deliver("b@m365.test", msg("x@old.test", "b@m365.test", fmt.Sprint("old", i))); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(60 * time.Millisecond)
	link, err := c.Baseline(ctx, "b@m365.test", graph.FolderInbox)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SendMIME(ctx, "a@m365.test", msg("a@m365.test", "b@m365.test", "tok1")); err != nil {
		t.Fatal(err)
	}
	// 202 means queued: nothing is in the inbox yet.
	if n := len(f.Messages("b@m365.test", "inbox")); n != 3 {
		t.Fatalf("inbox has %d messages right after 202, want the 3 old ones", n)
	}
	if got := len(f.Messages("a@m365.test", "sentitems")); got != 1 {
		t.Fatalf("sent items: %d", got)
	}
	m, _ := waitFor(ctx, t, c, link, "tok1")
	if m.Subject != "probe tok1" || m.ReceivedDateTime.IsZero() {
		t.Fatalf("message fields: %+v", m)
	}
	full, err := c.Get(ctx, "b@m365.test", m.ID)
	if err != nil || full.Header("message-id") != "<tok1@probe.test>" {
		t.Fatalf("get: %v %+v", err, full.Headers)
	}
	newID, err := c.Move(ctx, "b@m365.test", m.ID, graph.FolderDeletedItems)
	if err != nil || newID == "" || newID == m.ID {
		t.Fatalf("move: %q %v", newID, err)
	}
	if got := f.Messages("b@m365.test", "deleteditems"); len(got) != 1 || got[0].ID != newID {
		t.Fatalf("deleted items: %+v", got)
	}
	if err := c.PermanentDelete(ctx, "b@m365.test", newID); err != nil {
		t.Fatal(err)
	}
	if got := f.Messages("b@m365.test", "deleteditems"); len(got) != 0 {
		t.Fatalf("still there: %+v", got)
	}
	if err := c.PermanentDelete(ctx, "b@m365.test", newID); kindOf(err) != restcall.KindNotFound {
		t.Fatalf("second delete: %v", err)
	}
}

func TestJunkFolder(t *testing.T) {
	f, c := newPair(t, graphtest.Options{Junk: func(string, []byte) bool { return true }}, graph.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	link, err := c.Baseline(ctx, "b@m365.test", graph.FolderJunk)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SendMIME(ctx, "a@m365.test", msg("a@m365.test", "b@m365.test", "junk1")); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, c, link, "junk1")
	if len(f.Messages("b@m365.test", "inbox")) != 0 {
		t.Fatal("junk delivery reached the inbox")
	}
}

func TestEventualConsistency(t *testing.T) {
	f, c := newPair(t, graphtest.Options{VisibilityLag: 400 * time.Millisecond}, graph.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	link, err := c.Baseline(ctx, "b@m365.test", graph.FolderInbox)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Deliver("b@m365.test", msg("x@y.test", "b@m365.test", "ec")); err != nil {
		t.Fatal(err)
	}
	msgs, link2, err := c.Delta(ctx, link)
	if err != nil || len(msgs) != 0 {
		t.Fatalf("visible before the lag: %d %v", len(msgs), err)
	}
	// The not-yet-visible message is not lost by advancing the link.
	waitFor(ctx, t, c, link2, "ec")
}

func TestPaging(t *testing.T) {
	f, c := newPair(t, graphtest.Options{PageSize: 2}, graph.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	link, err := c.Baseline(ctx, "b@m365.test", graph.FolderInbox)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 7 {
		if err := f.Deliver("b@m365.test", msg("x@y.test", "b@m365.test", fmt.Sprint("p", i))); err != nil {
			t.Fatal(err)
		}
	}
	before := f.Requests()
	msgs, next, err := c.Delta(ctx, link)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 7 || f.Requests()-before != 4 || next == "" || next == link {
		t.Fatalf("got %d messages in %d requests, next %q", len(msgs), f.Requests()-before, next)
	}
	for i, m := range msgs {
		if m.Header("X-Probe-Token") != fmt.Sprint("p", i) {
			t.Fatalf("order: %d %q", i, m.Header("X-Probe-Token"))
		}
	}
	again, _, err := c.Delta(ctx, next)
	if err != nil || len(again) != 0 {
		t.Fatalf("second round: %d %v", len(again), err)
	}
}

func TestPageBudget(t *testing.T) {
	f, c := newPair(t, graphtest.Options{PageSize: 50}, graph.Options{PageSize: 1, MaxPages: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := range 5 {
		_ = f.Deliver("b@m365.test", msg("x@y.test", "b@m365.test", fmt.Sprint("b", i)))
	}
	_, err := c.Baseline(ctx, "b@m365.test", graph.FolderInbox)
	if kindOf(err) != restcall.KindTooLarge || f.Requests() != 3 {
		t.Fatalf("want page budget error after 3 requests, got %v after %d", err, f.Requests())
	}
}

func TestThrottling(t *testing.T) {
	for _, st := range []int{429, 503} {
		t.Run(fmt.Sprint(st), func(t *testing.T) {
			f, c := newPair(t, graphtest.Options{}, graph.Options{})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			f.Throttle(1, st, time.Second)
			start := time.Now()
			if err := c.SendMIME(ctx, "a@m365.test", msg("a@m365.test", "b@m365.test", "t")); err != nil {
				t.Fatal(err)
			}
			if el := time.Since(start); el < 900*time.Millisecond || f.Requests() != 2 {
				t.Fatalf("Retry-After not honoured: %v, %d requests", el, f.Requests())
			}
		})
	}
}

func TestThrottlingBoundedByContext(t *testing.T) {
	f, c := newPair(t, graphtest.Options{}, graph.Options{})
	f.Throttle(100, 429, 30*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Baseline(ctx, "b@m365.test", graph.FolderInbox)
	var e *graph.Error
	if !errors.As(err, &e) || e.Kind != restcall.KindThrottled || e.Code != "ApplicationThrottled" || e.RetryAfter != 30*time.Second {
		t.Fatalf("got %#v", err)
	}
	// It gives up at once rather than sleeping past the deadline.
	if el := time.Since(start); el > 5*time.Second || f.Requests() != 1 {
		t.Fatalf("took %v, %d requests", el, f.Requests())
	}
}

func TestLongRetryAfterNotSleptWithoutDeadline(t *testing.T) {
	f, c := newPair(t, graphtest.Options{}, graph.Options{})
	f.Throttle(1, 503, time.Hour)
	start := time.Now()
	_, err := c.Get(context.Background(), "b@m365.test", "AAMk1")
	if kindOf(err) != restcall.KindThrottled || time.Since(start) > 5*time.Second {
		t.Fatalf("got %v after %v", err, time.Since(start))
	}
}

func TestGatewayTimeoutNotRetriedForSend(t *testing.T) {
	f, c := newPair(t, graphtest.Options{}, graph.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f.Throttle(1, 504, 0)
	err := c.SendMIME(ctx, "a@m365.test", msg("a@m365.test", "b@m365.test", "g"))
	if kindOf(err) != restcall.KindServer || f.Requests() != 1 {
		t.Fatalf("send after 504: %v, %d requests", err, f.Requests())
	}
}

func TestOversizeResponse(t *testing.T) {
	f, c := newPair(t, graphtest.Options{}, graph.Options{MaxResponseBytes: 300})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = f.Deliver("b@m365.test", msg("x@y.test", "b@m365.test", strings.Repeat("z", 400)))
	_, err := c.Baseline(ctx, "b@m365.test", graph.FolderInbox)
	if kindOf(err) != restcall.KindTooLarge || !strings.Contains(err.Error(), "300-byte budget") {
		t.Fatalf("got %v", err)
	}
}

func TestTokenErrors(t *testing.T) {
	f := graphtest.New(graphtest.Options{Users: []string{"a@m365.test"}, Token: "right"})
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _ := graph.New(func(context.Context) (string, error) { return "", errors.New("token endpoint unreachable") }, graph.Options{BaseURL: f.URL()})
	err := c.SendMIME(ctx, "a@m365.test", msg("a@m365.test", "a@m365.test", "x"))
	if kindOf(err) != restcall.KindToken || f.Requests() != 0 {
		t.Fatalf("token source failure: %v, %d requests", err, f.Requests())
	}
	c, _ = graph.New(tokenOK, graph.Options{BaseURL: f.URL()})
	err = c.SendMIME(ctx, "a@m365.test", msg("a@m365.test", "a@m365.test", "x"))
	var e *graph.Error
	if !errors.As(err, &e) || e.Kind != restcall.KindAuth || e.Status != 401 || e.Code != "InvalidAuthenticationToken" {
		t.Fatalf("refused token: %#v", err)
	}
	if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "validation failure") {
		t.Fatalf("error leaks the token or server text: %v", err)
	}
}

func TestUnknownUserAndResync(t *testing.T) {
	f, c := newPair(t, graphtest.Options{}, graph.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.Baseline(ctx, "nobody@m365.test", graph.FolderInbox)
	var e *graph.Error
	if !errors.As(err, &e) || e.Kind != restcall.KindNotFound || e.Code != "ErrorInvalidUser" {
		t.Fatalf("unknown user: %#v", err)
	}
	for _, tok := range []string{"garbage", "x.c"} {
		_, _, err = c.Delta(ctx, f.URL()+"/v1.0/users/b@m365.test/mailFolders/Inbox/messages/delta?$deltatoken="+tok)
		if kindOf(err) != restcall.KindResync {
			t.Fatalf("expired link %q: %v", tok, err)
		}
	}
	_, _, err = c.Delta(ctx, "https://evil.test/v1.0/users/b/mailFolders/Inbox/messages/delta")
	if kindOf(err) != restcall.KindProtocol || f.Requests() != 3 {
		t.Fatalf("foreign link: %v", err)
	}
}

func TestBaseURLRule(t *testing.T) {
	for u, ok := range map[string]bool{
		"":                           true, // default https://graph.microsoft.com
		"https://graph.microsoft.us": true,
		"http://127.0.0.1:8080":      true,
		"http://localhost:1":         true,
		"http://graph.microsoft.com": false,
		"ftp://graph.microsoft.com":  false,
		"graph.microsoft.com":        false,
	} {
		_, err := graph.New(tokenOK, graph.Options{BaseURL: u})
		if (err == nil) != ok {
			t.Errorf("%q: %v", u, err)
		}
	}
	if _, err := graph.New(nil, graph.Options{}); err == nil {
		t.Error("nil token source accepted")
	}
}

// MIME reads a message's content as stored ($value) up to the limit; one
// longer is too_large, an unknown id not_found.
func TestMIME(t *testing.T) {
	f, c := newPair(t, graphtest.Options{}, graph.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	small := msg("x@other.test", "a@m365.test", "t1")
	big := append(msg("x@other.test", "a@m365.test", "t2"), strings.Repeat("x", 3<<20)...)
	for _, m := range [][]byte{small, big} {
		if err := f.Deliver("a@m365.test", m); err != nil {
			t.Fatal(err)
		}
	}
	stored := f.Messages("a@m365.test", "inbox")
	if len(stored) != 2 {
		t.Fatalf("stored %d", len(stored))
	}
	got, err := c.MIME(ctx, "a@m365.test", stored[0].ID, 1<<20)
	if err != nil || string(got) != string(small) {
		t.Fatalf("MIME: %v, %d bytes", err, len(got))
	}
	if _, err := c.MIME(ctx, "a@m365.test", stored[1].ID, 1<<20); kindOf(err) != restcall.KindTooLarge {
		t.Fatalf("over the limit: %v", err)
	}
	if _, err := c.MIME(ctx, "a@m365.test", "AAMk-none", 1<<20); kindOf(err) != restcall.KindNotFound {
		t.Fatalf("unknown id: %v", err)
	}
}
