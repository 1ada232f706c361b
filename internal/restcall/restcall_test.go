package restcall

import (
	"context"
	"net/http"
	"testing"
	"time"
)

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 12, 5, 18, 0, 0, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"0": 0,
		"7": 7 * time.Second,
		now.Add(90 * time.Second).Format(http.TimeFormat): 90 * time.Second,
		now.Add(-time.Minute).Format(http.TimeFormat):     0,
	} {
		got, ok := retryAfter(v, now)
		if !ok || got != want {
			t.Errorf("%q: %v %v, want %v", v, got, ok, want)
		}
	}
	for _, v := range []string{"", "-3", "soon", "1.5"} {
		if _, ok := retryAfter(v, now); ok {
			t.Errorf("%q accepted", v)
		}
	}
}

func TestOneOf(t *testing.T) {
	set := map[string]bool{"A": true}
	if OneOf("A", set) != "A" || OneOf("free text from the server", set) != "other" || OneOf("", set) != "" {
		t.Fatal("OneOf does not keep the set closed")
	}
}

type fakeSource struct{}

func (fakeSource) Token(context.Context) (string, time.Time, error) {
	return "t0k", time.Time{}, nil
}

func TestFromSource(t *testing.T) {
	if tok, err := FromSource(fakeSource{})(context.Background()); tok != "t0k" || err != nil {
		t.Fatal(tok, err)
	}
}
