package oauth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/oauth2"
)

// fuzzSecret turns fuzzed bytes into a secret the redactor is expected to
// catch wherever it appears: at least 16 characters (so addPEM registers it
// as a key line too), from the alphabet of client secrets and tokens
// ([A-Za-z0-9_~+/=-]), with an upper-case letter and a digit. Spaces, colons,
// brackets and dots are left out: they would let a secret be made up of the
// error's own wording ("token_unavailable: token request", "[REDACTED]",
// the "..." of a truncation) instead of anything the endpoint sent.
func fuzzSecret(b string) string {
	var s strings.Builder
	s.WriteString("K9")
	for _, c := range []byte(b) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9',
			c == '_', c == '~', c == '+', c == '/', c == '=', c == '-':
			s.WriteByte(c)
		}
	}
	for s.Len() < 16 {
		s.WriteString("x7")
	}
	return s.String()
}

// jsonEscaped writes every character of s as a \u escape, as a JSON encoder
// may: the secret appears only once the body is decoded.
func jsonEscaped(s string) string {
	var b strings.Builder
	for _, r := range s {
		fmt.Fprintf(&b, `\u%04x`, r)
	}
	return b.String()
}

// endpointErrorRE is every message an endpoint's error response can give.
var endpointErrorRE = regexp.MustCompile(`^oauth: token_[a-z]+: token (endpoint returned HTTP -?[0-9]+( [a-z_]+)?|request failed)$`)

// FuzzTokenResponse feeds token endpoint error responses through classify,
// which parses the bodies of the jwt flow (x/oauth2 leaves them unparsed)
// and builds the error the receiver logs and reports. In the fuzzed body
// $S stands for the secret, $Q for its URL-encoded form and $J for it as
// JSON \u escapes. Whatever the endpoint answers, classify must not panic,
// must return a typed single-line error, a response must leave nothing but
// its status and a known error code, and a secret registered with the
// redactor (as a static secret, a rotating one or a PEM key line) must not
// appear in the error string, raw or URL-encoded.
func FuzzTokenResponse(f *testing.F) {
	for _, s := range []struct {
		body   string
		status int
		secret string
		mode   uint8
	}{
		{`{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided: $S"}`, 401, "Q~abc123DEF456ghi789", 0},
		{`{"error":"invalid_grant","error_description":"Bad refresh token $J\r\nTrace ID: 1"}`, 400, "1//0gAbCdEfGhIjKlMn", 3},
		{`error=invalid_grant&error_description=token+$Q+expired`, 400, "ya29+A0ARrdaM/xyz=", 6},
		{`error=$Q&error_description=$S`, 400, "Abc/123+def=ghi", 1},
		{`{"error":"$S","error_description":"$S$S$S$S$S$S$S$S$S$S$S$S$S$S$S$S$S$S$S$S$S$S$S$S"}`, 400, "SECRETsecret1234", 4},
		{`{"error":"invalid_scope","error_description":"scope https://outlook.office365.com/.default is invalid"}`, 400, "Zz9-unused-secret", 1},
		{`{"error":"temporarily_unavailable"}`, 503, "Yy8_unused_secret", 0},
		{`{"error":7,"error_description":["$S"]}`, 500, "Xx7~unused~secret", 0},
		{`<html><body>502 Bad Gateway $S</body></html>`, 502, "Ww6/html/secret", 0},
		{`Post "https://login.example/token?client_secret=$Q&grant_type=x": dial tcp: lookup login.example: no such host`, 0, "Vv5+dial+secret", 2},
		{`Post "https://login.example/token": context deadline exceeded $S`, 0, "Uu4=ctx=secret", 5},
		{`eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln $S`, 400, "Tt3-jwt-secret", 0},
		{``, 0, "", 0},
		{`{"error":"","error_description":""}`, 200, "", 7},
	} {
		f.Add([]byte(s.body), s.status, s.secret, s.mode)
	}
	f.Fuzz(func(t *testing.T, tmpl []byte, status int, rawSecret string, mode uint8) {
		if len(tmpl) > 16<<10 {
			return
		}
		secret := fuzzSecret(rawSecret)
		body := strings.NewReplacer("$S", secret, "$Q", url.QueryEscape(secret), "$J", jsonEscaped(secret)).Replace(string(tmpl))

		red := &redactor{}
		switch mode / 3 % 3 {
		case 0:
			red.add(secret) // client secret, refresh token
		case 1:
			red.set("access_token", secret)
		case 2:
			red.addPEM("-----BEGIN PRIVATE KEY-----\n" + secret + "\n-----END PRIVATE KEY-----\n")
		}

		ctx := context.Background()
		var err error
		switch mode % 3 {
		case 0: // jwt flow: x/oauth2 hands over the body unparsed
			re := &oauth2.RetrieveError{Body: []byte(body)}
			if status != 0 {
				re.Response = &http.Response{StatusCode: status, Status: fmt.Sprint(status)}
			}
			err = re
		case 1: // other flows: x/oauth2 parsed error and error_description
			code, desc, _ := strings.Cut(body, "&")
			err = &oauth2.RetrieveError{
				Response:         &http.Response{StatusCode: status, Status: fmt.Sprint(status)},
				Body:             []byte(body),
				ErrorCode:        code,
				ErrorDescription: desc,
			}
		case 2: // transport failure, its message echoing the request
			var cancel context.CancelFunc
			ctx, cancel = context.WithCancel(ctx)
			if mode&0x80 != 0 {
				cancel()
			}
			defer cancel()
			err = fmt.Errorf("oauth2: %w", errors.New(body))
		}

		e := classify(err, ctx, nil, red.apply)
		if e == nil {
			t.Fatal("classify returned nil")
		}
		switch e.Type {
		case ErrorRejected, ErrorScope, ErrorUnavailable:
		default:
			t.Fatalf("error type %q", e.Type)
		}
		msg := e.Error()
		if strings.ContainsAny(msg, "\r\n") {
			t.Fatalf("error is not a single line: %q", msg)
		}
		// An endpoint's answer leaves only its status and a known code:
		// no text of its own, whatever the encoding of an echo.
		if mode%3 != 2 {
			if !endpointErrorRE.MatchString(msg) || (e.Code != "" && !knownCodes[e.Code]) {
				t.Fatalf("endpoint text in the error: %q", msg)
			}
		}
		for _, form := range []string{secret, url.QueryEscape(secret)} {
			if strings.Contains(msg, form) {
				t.Fatalf("secret %q appears in the error: %q", form, msg)
			}
		}
		if !errors.Is(e, err) && mode%3 == 2 {
			t.Fatalf("the transport error is not in the chain of %v", e)
		}
	})
}
