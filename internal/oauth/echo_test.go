package oauth

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// Secrets of the echo test: no six-character run of either is a word of
// the receiver's own messages.
const (
	echoSecret  = "Qz8~vK2pLm9.Wx4_Rt7J"
	echoRefresh = "1//0gYh3-Bn6Jd8Kq5Zs"
)

// echoes are the ways an endpoint could write a secret back: as sent and
// URL-encoded, base64 (four alphabets, alone and as the form field), hex,
// lower- and upper-cased, as JSON \u escapes, and its halves and a middle
// part.
func echoes(secret string) []string {
	var out []string
	for _, p := range []string{secret, "client_secret=" + url.QueryEscape(secret), "refresh_token=" + url.QueryEscape(secret)} {
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
			out = append(out, enc.EncodeToString([]byte(p)))
		}
	}
	n := len(secret)
	return append(out, secret, url.QueryEscape(secret), url.PathEscape(secret), hex.EncodeToString([]byte(secret)),
		strings.ToLower(secret), strings.ToUpper(secret), jsonEscaped(secret),
		secret[:n/2], secret[n/2:], secret[n/4:3*n/4])
}

// echoBody is an endpoint's answer carrying every echo of secrets in each
// field an RFC 6749 §5.2 error response has, and in ones it has not.
func echoBody(code string, secrets ...string) string {
	var all []string
	for _, s := range secrets {
		all = append(all, echoes(s)...)
	}
	text := strings.Join(all, " ")
	return fmt.Sprintf(`{"error":%q,"error_description":%q,"error_uri":%q,"trace":%q,"error_codes":[7000215]}`,
		code, "AADSTS7000215: Invalid client secret provided: "+text, "https://login.example/error?e="+url.QueryEscape(text), text)
}

// leaked returns what of secret appears in msg: any of its echoes, or any
// run of six characters of it or of an echo, case-insensitively.
func leaked(msg, secret string) []string {
	lmsg := strings.ToLower(msg)
	var found []string
	for _, form := range echoes(secret) {
		lf := strings.ToLower(form)
		for i := 0; i+6 <= len(lf); i++ {
			if strings.Contains(lmsg, lf[i:i+6]) {
				found = append(found, lf[i:i+6]+" (of "+form+")")
				break
			}
		}
	}
	return found
}

// TestEndpointEchoNeverPrinted: whatever a token endpoint writes back, in
// any encoding and in any field, the error and the state keep only the
// endpoint, the HTTP status and a known error code.
func TestEndpointEchoNeverPrinted(t *testing.T) {
	closedForm := regexp.MustCompile(`^oauth: token_[a-z]+: token endpoint 127\.0\.0\.1:[0-9]+/[a-z/.0-9]+ returned HTTP [0-9]+( [a-z_]+)?(: not a usable token response|: no access_token in the response)?$`)
	for _, tc := range []struct {
		name     string
		status   int
		ct       string
		body     string
		wantCode string
		wantType string
	}{
		{"invalid_client", 401, "application/json", echoBody("invalid_client", echoSecret, echoRefresh), "invalid_client", ErrorRejected},
		{"invalid_grant", 400, "application/json", echoBody("invalid_grant", echoSecret, echoRefresh), "invalid_grant", ErrorRejected},
		{"code is the secret", 400, "application/json", echoBody(echoSecret+" "+echoRefresh, echoSecret, echoRefresh), "", ErrorRejected},
		{"code is base64 of it", 400, "application/json", echoBody(base64.StdEncoding.EncodeToString([]byte(echoSecret)), echoSecret, echoRefresh), "", ErrorRejected},
		{"form body", 400, "application/x-www-form-urlencoded",
			"error=invalid_client&error_description=" + url.QueryEscape(strings.Join(append(echoes(echoSecret), echoes(echoRefresh)...), " ")), "invalid_client", ErrorRejected},
		{"text body", 502, "text/html", "<html>" + strings.Join(append(echoes(echoSecret), echoes(echoRefresh)...), "<br>") + "</html>", "", ErrorUnavailable},
		{"200 with an error", 200, "application/json", echoBody("temporarily_unavailable", echoSecret, echoRefresh), "temporarily_unavailable", ErrorUnavailable},
		{"200 without a token", 200, "application/json", `{"token_type":"Bearer","note":"` + strings.Join(append(echoes(echoSecret), echoes(echoRefresh)...), " ") + `"}`, "", ErrorUnavailable},
		{"200 not JSON", 200, "application/json", strings.Join(append(echoes(echoSecret), echoes(echoRefresh)...), " "), "", ErrorUnavailable},
	} {
		e := newTokenEndpoint(t)
		e.SetRespond(func(w http.ResponseWriter, _ *http.Request, _ url.Values) {
			w.Header().Set("Content-Type", tc.ct)
			w.WriteHeader(tc.status)
			_, _ = io.WriteString(w, tc.body)
		})
		configs := map[string]Config{
			"microsoft": {Provider: ProviderMicrosoft, TenantID: "contoso.onmicrosoft.com", ClientID: testClientID,
				ClientSecret: echoSecret, AuthorityHost: e.URL},
			"google_refresh_token": {Provider: ProviderGoogleRefreshToken, ClientID: testClientID,
				ClientSecret: echoSecret, RefreshToken: echoRefresh, TokenURL: e.URL + "/token"},
			"google_service_account": {Provider: ProviderGoogleServiceAccount, TokenURL: e.URL + "/token",
				ServiceAccountKeyFile: writeSAKey(t, testKey(t, 1), "service_account", e.URL+"/token"), Subject: testSubject},
		}
		for name, c := range configs {
			t.Run(tc.name+", "+name, func(t *testing.T) {
				s := mustSource(t, c)
				_, _, err := s.Token(t.Context())
				if err == nil {
					t.Fatal("token accepted")
				}
				oe := errorType(t, err)
				if oe.Type != tc.wantType || oe.HTTPStatus != tc.status || oe.Code != tc.wantCode {
					t.Fatalf("%+v: %v", oe, err)
				}
				st := s.State()
				for _, msg := range []string{err.Error(), st.LastError} {
					if !closedForm.MatchString(msg) {
						t.Fatalf("not in the closed form: %q", msg)
					}
				}
				// Every field, not only the message.
				for _, msg := range []string{err.Error(), st.LastError, fmt.Sprintf("%+v", *oe)} {
					for _, secret := range []string{echoSecret, echoRefresh} {
						if l := leaked(msg, secret); len(l) > 0 {
							t.Fatalf("%q leaks %v", msg, l)
						}
					}
				}
			})
		}
	}
}

// TestLeakedFinds: the scan of the echo test finds what it looks for.
func TestLeakedFinds(t *testing.T) {
	for _, form := range echoes(echoSecret) {
		if len(form) < 6 {
			t.Fatalf("echo %q too short to look for", form)
		}
		if len(leaked("error: "+form[1:7]+" end", echoSecret)) == 0 {
			t.Fatalf("a part of %q is not found", form)
		}
	}
	if l := leaked("oauth: token_rejected: token endpoint 127.0.0.1:4000/contoso.onmicrosoft.com/oauth2/v2.0/token returned HTTP 401 invalid_client", echoSecret); len(l) > 0 {
		t.Fatalf("false positive %v", l)
	}
}
