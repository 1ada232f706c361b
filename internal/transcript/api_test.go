package transcript

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// An API exchange is recorded as one C: and one S: line: the path, only
// the selecting query values (delta and page tokens and anything unknown
// reduced to their size), the status, sizes and the safe headers; never a
// request header, a body, nor an unknown query value.
func TestAPIExchange(t *testing.T) {
	tr := New(time.Now())
	tr.API(Graph, Exchange{Method: "GET",
		URL:    "https://graph.microsoft.com/v1.0/users/probe%40m365.test/mailFolders/Inbox/messages/delta?$deltatoken=SECRETLOOKINGDELTA0123456789&changeType=created&access_token=tok-ABCDEFGH",
		Status: 200, RespBytes: 1234, Duration: 12 * time.Millisecond,
		Header: http.Header{"Retry-After": {"3"}, "Request-Id": {"0123-abcd"}, "Set-Cookie": {"session=COOKIEVALUE"}, "X-Other": {"OTHERVALUE"}}})
	tr.API(GmailAPI, Exchange{Method: "POST", URL: "https://gmail.googleapis.com/gmail/v1/users/a%40b.test/messages/send", ReqBytes: 999, Err: "timeout"})
	all := strings.Join(tr.Lines(), "\n")
	for _, want := range []string{
		"graph C: GET /v1.0/users/probe%40m365.test/mailFolders/Inbox/messages/delta?$deltatoken=[28 bytes]&access_token=[12 bytes]&changeType=created",
		"graph S: 200 [1234 bytes] 12.0 ms Retry-After: 3 request-id: 0123-abcd",
		"gmailapi C: POST /gmail/v1/users/a%40b.test/messages/send [999 bytes]",
		"gmailapi S: no response (timeout)",
	} {
		assert.Contains(t, all, want)
	}
	for _, never := range []string{"SECRETLOOKINGDELTA", "tok-ABCDEFGH", "COOKIEVALUE", "OTHERVALUE", "graph.microsoft.com"} {
		assert.NotContains(t, all, never)
	}
}

// A registered token is scrubbed from API lines too, and long values are
// cut.
func TestAPIExchangeScrubsAndBounds(t *testing.T) {
	tr := New(time.Now())
	tr.Secret("", "bearer-token-XYZ")
	tr.API(Graph, Exchange{Method: "GET", URL: "https://h/v1.0/users/bearer-token-XYZ/messages?$select=" + strings.Repeat("a", 500),
		Status: 200, Header: http.Header{"Request-Id": {strings.Repeat("r", 300)}}})
	all := strings.Join(tr.Lines(), "\n")
	assert.NotContains(t, all, "bearer-token-XYZ")
	assert.Contains(t, all, Redacted)
	assert.NotContains(t, all, strings.Repeat("a", maxShownValue+1))
	assert.NotContains(t, all, strings.Repeat("r", maxShownValue+1))
}
