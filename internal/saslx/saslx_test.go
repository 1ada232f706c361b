package saslx

import (
	"errors"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

const (
	testUser  = "probe@example.com"
	testToken = "ya29.SECRET-token-value"
)

func TestXOAUTH2InitialResponseByteExact(t *testing.T) {
	mech, ir, err := NewXOAUTH2Client(testUser, testToken).Start()
	if err != nil {
		t.Fatal(err)
	}
	want := []byte("user=probe@example.com\x01auth=Bearer ya29.SECRET-token-value\x01\x01")
	if mech != "XOAUTH2" || string(ir) != string(want) {
		t.Fatalf("got %q %q, want XOAUTH2 %q", mech, ir, want)
	}
}

func TestXOAUTH2StartRejectsBadInput(t *testing.T) {
	for name, c := range map[string]sasl.Client{
		"empty token":   NewXOAUTH2Client(testUser, ""),
		"empty user":    NewXOAUTH2Client("", testToken),
		"ctrl in token": NewXOAUTH2Client(testUser, testToken+"\x01x"),
		"ctrl in user":  NewXOAUTH2Client("a\r\nb", testToken),
	} {
		_, _, err := c.Start()
		if err == nil {
			t.Errorf("%s: Start succeeded", name)
		} else if strings.Contains(err.Error(), testToken) {
			t.Errorf("%s: error leaks token: %v", name, err)
		}
	}
}

func TestXOAUTH2ErrorChallenge(t *testing.T) {
	c := NewXOAUTH2Client(testUser, testToken)
	if _, _, err := c.Start(); err != nil {
		t.Fatal(err)
	}
	challenge := []byte(`{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}`)
	resp, err := c.Next(challenge)
	if err != nil {
		t.Fatalf("Next returned error %v; want empty response so the server sends the final failure", err)
	}
	if resp == nil || len(resp) != 0 {
		t.Fatalf("response = %q (nil=%v), want non-nil empty", resp, resp == nil)
	}
	be := ServerError(c)
	if be == nil || be.Status != "400" || be.Scope != "https://mail.google.com/" || be.Mechanism != XOAuth2 {
		t.Fatalf("ServerError = %+v", be)
	}

	final := errors.New("535 5.7.8 Username and Password not accepted")
	err = Explain(c, final)
	msg := err.Error()
	for _, want := range []string{"status=400", "scope=https://mail.google.com/", "535 5.7.8"} {
		if !strings.Contains(msg, want) {
			t.Errorf("Explain message %q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, testToken) {
		t.Errorf("Explain leaks token: %q", msg)
	}
	if !errors.Is(err, final) {
		t.Error("Explain result does not wrap the protocol error")
	}
	var got *BearerError
	if !errors.As(err, &got) {
		t.Error("Explain result does not wrap *BearerError")
	}

	// A second error challenge is a protocol violation: abort.
	if _, err := c.Next(challenge); err == nil {
		t.Error("second challenge accepted")
	}
}

func TestXOAUTH2NonJSONChallenge(t *testing.T) {
	c := NewXOAUTH2Client(testUser, testToken)
	resp, err := c.Next([]byte("not json " + testToken))
	if err != nil || resp == nil || len(resp) != 0 {
		t.Fatalf("got %q, %v", resp, err)
	}
	if msg := Explain(c, errors.New("NO")).Error(); strings.Contains(msg, testToken) || !strings.Contains(msg, "rejected") {
		t.Fatalf("message %q", msg)
	}
}

func TestXOAUTH2EmptyChallengeSendsInitialResponse(t *testing.T) {
	c := NewXOAUTH2Client(testUser, testToken)
	resp, err := c.Next([]byte{})
	if err != nil || !strings.HasPrefix(string(resp), "user="+testUser+"\x01") {
		t.Fatalf("got %q, %v", resp, err)
	}
	if _, err := c.Next([]byte{}); err == nil {
		t.Fatal("second empty challenge accepted")
	}
}

func TestExplainPassThrough(t *testing.T) {
	if Explain(NewXOAUTH2Client(testUser, testToken), nil) != nil {
		t.Fatal("nil error not preserved")
	}
	e := errors.New("x")
	if Explain(NewXOAUTH2Client(testUser, testToken), e) != e {
		t.Fatal("error without challenge changed")
	}
	if Explain(sasl.NewPlainClient("", "u", "p"), e) != e {
		t.Fatal("foreign client changed error")
	}
}

// drive runs a SASL exchange between c and s the way go-smtp/go-imap do and
// returns the server's final error.
func drive(t *testing.T, c sasl.Client, s sasl.Server) error {
	t.Helper()
	_, resp, err := c.Start()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		challenge, done, serr := s.Next(resp)
		if done || serr != nil {
			return serr
		}
		resp, err = c.Next(challenge)
		if err != nil {
			t.Fatalf("client aborted: %v", err)
		}
	}
	t.Fatal("exchange did not finish")
	return nil
}

func checkToken(user, token string) error {
	if user == testUser && token == testToken {
		return nil
	}
	return errors.New("invalid credentials")
}

func TestXOAUTH2ClientServerRoundTrip(t *testing.T) {
	if err := drive(t, NewXOAUTH2Client(testUser, testToken), NewXOAUTH2Server(checkToken)); err != nil {
		t.Fatalf("good token: %v", err)
	}

	c := NewXOAUTH2Client(testUser, "wrong")
	err := drive(t, c, NewXOAUTH2Server(checkToken))
	if err == nil || err.Error() != "invalid credentials" {
		t.Fatalf("bad token: %v", err)
	}
	if be := ServerError(c); be == nil || be.Status != "401" || be.Schemes != "Bearer" {
		t.Fatalf("ServerError = %+v", be)
	}

	// check may choose the challenge fields.
	c = NewXOAUTH2Client(testUser, "wrong")
	drive(t, c, NewXOAUTH2Server(func(string, string) error {
		return &BearerError{Status: "400", Scope: "https://outlook.office365.com/.default"}
	}))
	if be := ServerError(c); be == nil || be.Status != "400" || be.Scope != "https://outlook.office365.com/.default" {
		t.Fatalf("ServerError = %+v", be)
	}
}

func TestXOAUTH2ServerWithoutInitialResponse(t *testing.T) {
	s := NewXOAUTH2Server(checkToken)
	ch, done, err := s.Next(nil)
	if err != nil || done || ch == nil || len(ch) != 0 {
		t.Fatalf("got %q %v %v", ch, done, err)
	}
	c := NewXOAUTH2Client(testUser, testToken)
	resp, err := c.Next(ch)
	if err != nil {
		t.Fatal(err)
	}
	if _, done, err := s.Next(resp); !done || err != nil {
		t.Fatalf("done=%v err=%v", done, err)
	}
	if _, _, err := s.Next([]byte("more")); err == nil {
		t.Fatal("response after completion accepted")
	}
}

func TestXOAUTH2ServerMalformed(t *testing.T) {
	for _, in := range []string{
		"", "user=a\x01auth=Bearer t\x01", "auth=Bearer t\x01user=a\x01\x01",
		"user=a\x01auth=Basic t\x01\x01", "user=\x01auth=Bearer t\x01\x01", "user=a\x01auth=Bearer \x01\x01",
	} {
		called := false
		_, done, err := NewXOAUTH2Server(func(string, string) error { called = true; return nil }).Next([]byte(in))
		if !done || err == nil || called {
			t.Errorf("%q: done=%v err=%v called=%v", in, done, err, called)
		}
	}
	// Scheme is case-insensitive.
	if _, _, err := NewXOAUTH2Server(checkToken).Next([]byte("user=" + testUser + "\x01auth=bearer " + testToken + "\x01\x01")); err != nil {
		t.Errorf("lower-case scheme: %v", err)
	}
}

func TestOAuthBearerInteropWithGoSASLServer(t *testing.T) {
	auth := func(o sasl.OAuthBearerOptions) *sasl.OAuthBearerError {
		if o.Username == testUser && o.Token == testToken {
			return nil
		}
		return &sasl.OAuthBearerError{Status: "invalid_token", Schemes: "bearer", Scope: "https://mail.google.com/"}
	}
	if err := drive(t, NewOAuthBearerClient(testUser, testToken), sasl.NewOAuthBearerServer(auth)); err != nil {
		t.Fatalf("good token: %v", err)
	}

	c := NewOAuthBearerClient(testUser, "wrong")
	err := drive(t, c, sasl.NewOAuthBearerServer(auth))
	var oe *sasl.OAuthBearerError
	if !errors.As(err, &oe) || oe.Status != "invalid_token" {
		t.Fatalf("bad token: server error %v", err)
	}
	be := ServerError(c)
	if be == nil || be.Status != "invalid_token" || be.Scope != "https://mail.google.com/" || be.Mechanism != OAuthBearer {
		t.Fatalf("ServerError = %+v", be)
	}
	if msg := Explain(c, err).Error(); strings.Contains(msg, "wrong") || !strings.Contains(msg, "status=invalid_token") {
		t.Fatalf("Explain = %q", msg)
	}
}

func TestOAuthBearerDummyResponse(t *testing.T) {
	c := NewOAuthBearerClient(testUser, testToken)
	resp, err := c.Next([]byte(`{"status":"invalid_token"}`))
	if err != nil || string(resp) != "\x01" {
		t.Fatalf("got %q, %v; want %%x01", resp, err)
	}
	if _, _, err := NewOAuthBearerClient("a,b", testToken).Start(); err == nil {
		t.Fatal("username with ',' accepted")
	}
}

func TestPick(t *testing.T) {
	cases := []struct {
		offered  []string
		prefer   string
		wantMech string
		wantErr  bool
	}{
		{[]string{"PLAIN", "XOAUTH2", "OAUTHBEARER"}, "", XOAuth2, false},
		{[]string{"PLAIN", "oauthbearer"}, "", OAuthBearer, false},
		{[]string{"AUTH=PLAIN", "AUTH=XOAUTH2"}, "", XOAuth2, false},
		{nil, "", XOAuth2, false},
		{[]string{"PLAIN", "LOGIN"}, "", "", true},
		{[]string{"XOAUTH2", "OAUTHBEARER"}, "oauthbearer", OAuthBearer, false},
		{[]string{"PLAIN"}, "XOAUTH2", XOAuth2, false}, // prefer overrides what is advertised
		{[]string{"XOAUTH2"}, "PLAIN", "", true},
	}
	for _, tc := range cases {
		c, mech, err := Pick(tc.offered, testUser, testToken, tc.prefer)
		if tc.wantErr {
			if err == nil {
				t.Errorf("%v/%q: no error", tc.offered, tc.prefer)
			}
			continue
		}
		if err != nil || mech != tc.wantMech {
			t.Errorf("%v/%q: got %q, %v; want %q", tc.offered, tc.prefer, mech, err, tc.wantMech)
			continue
		}
		if m, _, err := c.Start(); err != nil || m != mech {
			t.Errorf("%v/%q: client starts %q, %v", tc.offered, tc.prefer, m, err)
		}
	}
	if _, _, err := Pick([]string{"XOAUTH2"}, testUser, "", ""); err == nil {
		t.Error("empty token accepted")
	}
	if _, _, err := Pick([]string{"XOAUTH2"}, "", testToken, ""); err == nil {
		t.Error("empty username accepted for XOAUTH2")
	}
}

// smtpBackend accepts XOAUTH2 only; everything else is irrelevant here.
type smtpBackend struct{}

func (smtpBackend) NewSession(*smtp.Conn) (smtp.Session, error) { return smtpSession{}, nil }

type smtpSession struct{}

func (smtpSession) Reset()                               {}
func (smtpSession) Logout() error                        { return nil }
func (smtpSession) Mail(string, *smtp.MailOptions) error { return nil }
func (smtpSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (smtpSession) Data(r io.Reader) error               { _, err := io.Copy(io.Discard, r); return err }
func (smtpSession) AuthMechanisms() []string             { return []string{XOAuth2} }
func (smtpSession) Auth(string) (sasl.Server, error)     { return NewXOAUTH2Server(checkToken), nil }

// TestXOAUTH2OverSMTP checks the empty dummy response survives a real
// go-smtp client/server pair on loopback and that Explain reports the JSON.
func TestXOAUTH2OverSMTP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := smtp.NewServer(smtpBackend{})
	srv.AllowInsecureAuth = true
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	for _, tc := range []struct {
		token string
		ok    bool
	}{{testToken, true}, {"wrong-token", false}} {
		cl, err := smtp.Dial(ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		offered := []string{XOAuth2}
		sc, _, err := Pick(offered, testUser, tc.token, "")
		if err != nil {
			t.Fatal(err)
		}
		err = Explain(sc, cl.Auth(sc))
		if tc.ok != (err == nil) {
			t.Fatalf("token ok=%v: Auth err %v", tc.ok, err)
		}
		if !tc.ok && (!strings.Contains(err.Error(), "status=401") || strings.Contains(err.Error(), tc.token)) {
			t.Fatalf("error %q", err)
		}
		// The connection must still be usable after a failed exchange.
		if err := cl.Noop(); err != nil {
			t.Fatalf("NOOP after auth: %v", err)
		}
		cl.Close()
	}
}
