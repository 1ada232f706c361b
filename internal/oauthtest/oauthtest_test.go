package oauthtest

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func post(t *testing.T, e *Endpoint, path string, form url.Values) (int, map[string]any) {
	t.Helper()
	resp, err := e.Client().Post(e.URL+path, "application/x-www-form-urlencoded", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

func TestIssuesRecordsAndChecks(t *testing.T) {
	e := New(t)
	e.SetTokenFormat("tok-%d-mark")
	status, body := post(t, e, "/tenant/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {"app"}})
	if status != http.StatusOK || body["access_token"] != "tok-1-mark" || body["expires_in"] != float64(3600) {
		t.Fatalf("%d %v", status, body)
	}
	if e.Hits() != 1 || e.Paths()[0] != "/tenant/token" || e.LastForm(t).Get("client_id") != "app" {
		t.Fatalf("not recorded: hits %d, paths %v, forms %v", e.Hits(), e.Paths(), e.Forms())
	}
	if got := e.Headers()[0].Get("Content-Type"); got != "application/x-www-form-urlencoded" {
		t.Fatalf("header %q", got)
	}
	if !e.Check("tok-1-mark") || e.Check("tok-2-mark") || e.Check("forged") {
		t.Fatal("Check accepts only the issued token")
	}
	if p := e.Presented(); len(p) != 3 || p[2] != "forged" {
		t.Fatalf("presented %v", p)
	}
}

func TestRespondReplacesTheAnswer(t *testing.T) {
	e := New(t)
	e.SetRespond(Error(http.StatusUnauthorized, "invalid_client", "no"))
	if status, body := post(t, e, "/", nil); status != http.StatusUnauthorized || body["error"] != "invalid_client" {
		t.Fatalf("%d %v", status, body)
	}
	if len(e.Tokens()) != 0 {
		t.Fatal("an error issued a token")
	}
	e.SetRespond(nil)
	if _, body := post(t, e, "/", nil); body["access_token"] != "access-token-1" {
		t.Fatalf("numbered by tokens issued, not requests: %v", body)
	}
	if e.Hits() != 2 {
		t.Fatalf("hits %d", e.Hits())
	}
}

func TestTokensExpire(t *testing.T) {
	e := New(t)
	e.SetExpiresIn(time.Second)
	_, body := post(t, e, "/", nil)
	tok, _ := body["access_token"].(string)
	if body["expires_in"] != float64(1) || !e.Check(tok) {
		t.Fatalf("%v", body)
	}
	e.WaitExpired()
	if e.Check(tok) {
		t.Fatal("an expired token is accepted")
	}
}
