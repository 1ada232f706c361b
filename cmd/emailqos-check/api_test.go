package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/emailqos/emailqosreceiver/internal/graphtest"
)

const (
	apiSecret = "check-api-secret-9Jw2"
	apiToken  = "check-api-token-Qm5v"
)

// emailqos-check runs Graph targets like any other: the steps, the result
// and the failure codes, without printing the client secret or the token.
func TestCheckOverGraph(t *testing.T) {
	tokens := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		w.Header().Set("Content-Type", "application/json")
		if r.PostForm.Get("client_secret") != apiSecret {
			w.WriteHeader(http.StatusUnauthorized)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": "invalid_client"})
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": apiToken, "token_type": "Bearer", "expires_in": 3600})
	}))
	defer tokens.Close()
	const user = "probe@m365.test"
	ok := graphtest.New(graphtest.Options{Users: []string{user}, Token: apiToken})
	defer ok.Close()
	refusing := graphtest.New(graphtest.Options{Users: []string{user}, Token: "another"})
	defer refusing.Close()

	account := func(base string) string {
		return fmt.Sprintf(`
        address: %s
        transport: { send: graph, read: graph, base_url: %q }
        oauth:
          provider: client_credentials
          client_id: check
          client_secret: ${env:CHECK_API_SECRET}
          token_url: %q
          scopes: [mail.probe]`, user, base, tokens.URL)
	}
	cfg := fmt.Sprintf(`
receivers:
  emailqos:
    delivery_timeout: 3s
    poll_interval: 100ms
    accounts:
      o365:%s
      o365refused:%s
    roundtrip:
      - account: o365
      - account: o365refused
exporters:
  debug:
service:
  pipelines:
    metrics:
      receivers: [emailqos]
      exporters: [debug]
`, account(ok.URL()), account(refusing.URL()))
	path := filepath.Join(t.TempDir(), "collector.yaml")
	require.NoError(t, os.WriteFile(path, []byte(cfg), 0o600))
	t.Setenv("CHECK_API_SECRET", apiSecret)

	code, out, errOut := runCheck(t, "--config", path, "--target", "o365", "--transcript")
	require.Equal(t, exitOK, code, "stdout:\n%s\nstderr:\n%s", out, errOut)
	for _, want := range []string{"graph.send", "graph.list", "graph.delete", "delivery.wait", "result: OK (code 0)",
		"transcript (redacted):", "graph C: POST /v1.0/users/" + user + "/sendMail [", "graph S: 202 "} {
		assert.Contains(t, out, want)
	}
	code, out, errOut = runCheck(t, "--config", path, "--target", "o365refused", "--timeout", "20s")
	require.Equal(t, exitFailed, code, "stdout:\n%s\nstderr:\n%s", out, errOut)
	assert.Contains(t, out, "result: FAILED code 3 (Graph connection, sign-in or permission failure), error.type auth")
	assert.NotContains(t, out, "IMAP")
	for _, s := range []string{apiSecret, apiToken} {
		assert.NotContains(t, out+errOut, s)
	}
}

// A code's meaning names the transports the target uses, not always SMTP
// and IMAP/POP3.
func TestCodeMeaningNamesTheTransports(t *testing.T) {
	for _, tc := range []struct {
		code       int
		send, read string
		want       string
	}{
		{1, "SMTP", "IMAP", "SMTP connection failure"},
		{2, "SMTP", "POP3", "SMTP send failure"},
		{3, "SMTP", "POP3", "POP3 connection or login failure"},
		{3, "SMTP", "IMAP", "IMAP connection or login failure"},
		{2, "Graph", "IMAP", "Graph send failure"},
		{2, "Gmail API", "Graph", "Gmail API send failure"},
		{3, "SMTP", "Graph", "Graph connection, sign-in or permission failure"},
		{3, "Graph", "Gmail API", "Gmail API connection, sign-in or permission failure"},
		{4, "Graph", "Graph", "probe not found within delivery_timeout"},
		{5, "Gmail API", "Gmail API", "cleanup failure"},
		{-1, "SMTP", "IMAP", "missing parameters"},
	} {
		assert.Equal(t, tc.want, codeMeaning(tc.code, tc.send, tc.read), "%d %s %s", tc.code, tc.send, tc.read)
	}
}
