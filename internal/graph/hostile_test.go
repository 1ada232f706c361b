package graph_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/emailqos/emailqosreceiver/internal/graph"
	"github.com/emailqos/emailqosreceiver/internal/restcall"
)

// A broken or hostile server gets a typed error, never a panic or a hang.
func TestHostileServer(t *testing.T) {
	block := make(chan struct{})
	var self string
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Query().Get("case") {
		case "garbage":
			_, _ = w.Write([]byte("{not json"))
		case "types":
			_, _ = w.Write([]byte(`{"value":[{"id":7,"receivedDateTime":"yesterday"}]}`))
		case "nolinks":
			_, _ = w.Write([]byte(`{"value":[]}`))
		case "loop":
			_, _ = w.Write([]byte(`{"value":[],"@odata.nextLink":"` + self + r.URL.Path + `?case=loop"}`))
		case "hang":
			select {
			case <-block:
			case <-r.Context().Done():
			}
		case "html500":
			w.WriteHeader(500)
			_, _ = w.Write([]byte("<html>" + strings.Repeat("x", 5<<20) + "</html>"))
		}
	}))
	defer hs.Close()
	defer close(block) // before Close, which waits for handlers
	self = hs.URL
	c, err := graph.New(tokenOK, graph.Options{BaseURL: hs.URL, MaxPages: 5})
	if err != nil {
		t.Fatal(err)
	}
	link := func(k string) string { return hs.URL + "/v1.0/users/b/mailFolders/Inbox/messages/delta?case=" + k }
	for k, want := range map[string]restcall.Kind{
		"garbage": restcall.KindProtocol,
		"types":   restcall.KindProtocol,
		"nolinks": restcall.KindProtocol,
		"loop":    restcall.KindTooLarge,
		"hang":    restcall.KindTimeout,
		"html500": restcall.KindTooLarge,
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		_, _, err := c.Delta(ctx, link(k))
		cancel()
		if kindOf(err) != want {
			t.Errorf("%s: got %v, want %s", k, err, want)
		}
	}
	ctx := context.Background()
	for name, err := range map[string]error{
		"user":   c.SendMIME(ctx, "", []byte("x")),
		"id":     c.PermanentDelete(ctx, "b", " "),
		"folder": func() error { _, err := c.Baseline(ctx, "b", ""); return err }(),
	} {
		if kindOf(err) != restcall.KindBadRequest || !strings.Contains(err.Error(), name) {
			t.Errorf("empty %s: %v", name, err)
		}
	}
}
