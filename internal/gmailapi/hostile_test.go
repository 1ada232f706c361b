package gmailapi_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/emailqos/emailqosreceiver/internal/gmailapi"
	"github.com/emailqos/emailqosreceiver/internal/restcall"
)

// A broken or hostile server gets a typed error, never a panic or a hang.
func TestHostileServer(t *testing.T) {
	block := make(chan struct{})
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch strings.Split(r.URL.Path, "/")[4] { // the user segment names the case
		case "garbage":
			_, _ = w.Write([]byte("{not json"))
		case "badid":
			_, _ = w.Write([]byte(`{"historyId":"-1"}`))
		case "loop":
			_, _ = w.Write([]byte(`{"historyId":"5","nextPageToken":"again"}`))
		case "hang":
			select {
			case <-block:
			case <-r.Context().Done():
			}
		}
	}))
	defer hs.Close()
	defer close(block) // before Close, which waits for handlers
	c, err := gmailapi.New(tokenOK, gmailapi.Options{BaseURL: hs.URL, MaxPages: 5})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mode string
		want restcall.Kind
	}{
		{"garbage", restcall.KindProtocol},
		{"badid", restcall.KindProtocol},
		{"loop", restcall.KindTooLarge},
		{"hang", restcall.KindTimeout},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		_, _, err := c.History(ctx, tc.mode, 1)
		cancel()
		if kindOf(err) != tc.want {
			t.Errorf("%s: got %v, want %s", tc.mode, err, tc.want)
		}
	}
	ctx := context.Background()
	for name, err := range map[string]error{
		"user": func() error { _, err := c.HistoryID(ctx, ""); return err }(),
		"id":   c.Trash(ctx, "me", ""),
	} {
		if kindOf(err) != restcall.KindBadRequest || !strings.Contains(err.Error(), name) {
			t.Errorf("empty %s: %v", name, err)
		}
	}
}
