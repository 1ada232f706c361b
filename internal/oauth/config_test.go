package oauth

import (
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emailqos/emailqosreceiver/internal/oauthtest"
)

func TestValidate(t *testing.T) {
	ms := Config{Provider: ProviderMicrosoft, TenantID: "contoso.onmicrosoft.com", ClientID: testClientID, ClientSecret: testClientSecret}
	valid := []Config{
		ms,
		{Provider: ProviderMicrosoft, TenantID: "tid", ClientID: "c", CertificateFile: "c.pem", PrivateKeyFile: "k.pem", AuthorityHost: "login.microsoftonline.us"},
		{Provider: ProviderMicrosoft, ClientID: "c", ClientSecret: "s", TokenURL: "http://127.0.0.1:1/token"},
		{Provider: ProviderGoogleServiceAccount, ServiceAccountKeyFile: "sa.json", Subject: testSubject},
		{Provider: ProviderGoogleRefreshToken, ClientID: "c", ClientSecret: "s", RefreshToken: testRefreshToken},
		{Provider: ProviderClientCredentials, ClientID: "c", ClientSecret: "s", TokenURL: "https://idp.example/token", EndpointParams: map[string][]string{"resource": {"x"}}},
	}
	for i, c := range valid {
		if err := c.Validate(); err != nil {
			t.Errorf("valid[%d]: %v", i, err)
		}
	}

	with := func(f func(*Config)) Config { c := ms; f(&c); return c }
	invalid := []struct {
		c     Config
		field string
	}{
		{Config{}, "provider"},
		{Config{Provider: "okta"}, "provider"},
		{with(func(c *Config) { c.TenantID = "" }), "tenant_id"},
		{with(func(c *Config) { c.TenantID = "../evil" }), "tenant_id"},
		{with(func(c *Config) { c.ClientID = "" }), "client_id"},
		{with(func(c *Config) { c.ClientSecret = "" }), "client_secret"},
		{with(func(c *Config) { c.CertificateFile = "c.pem"; c.PrivateKeyFile = "k.pem" }), "client_secret"}, // both
		{with(func(c *Config) { c.ClientSecret = ""; c.CertificateFile = "c.pem" }), "private_key_file"},
		{with(func(c *Config) { c.ClientSecret = ""; c.PrivateKeyFile = "k.pem" }), "certificate_file"},
		{with(func(c *Config) { c.TokenURL = "http://idp.example/token" }), "token_url"},
		{with(func(c *Config) { c.TokenURL = "not a url" }), "token_url"},
		{with(func(c *Config) { c.TokenURL = "https://x/t"; c.AuthorityHost = "https://y" }), "authority_host"},
		{with(func(c *Config) { c.AuthorityHost = "http://login.example" }), "authority_host"},
		{with(func(c *Config) { c.Scopes = []string{"a b"} }), "scopes[0]"},
		{with(func(c *Config) { c.RefreshToken = testRefreshToken }), "refresh_token"},
		{with(func(c *Config) { c.EndpointParams = map[string][]string{"client_secret": {"x"}} }), "endpoint_params"},
		{Config{Provider: ProviderGoogleServiceAccount, Subject: testSubject}, "service_account_key_file"},
		{Config{Provider: ProviderGoogleServiceAccount, ServiceAccountKeyFile: "sa.json"}, "subject"},
		{Config{Provider: ProviderGoogleServiceAccount, ServiceAccountKeyFile: "sa.json", Subject: "u", ClientSecret: testClientSecret}, "client_secret"},
		{Config{Provider: ProviderGoogleRefreshToken, ClientID: "c", ClientSecret: testClientSecret}, "refresh_token"},
		{Config{Provider: ProviderGoogleRefreshToken, ClientID: "c", RefreshToken: testRefreshToken}, "client_secret"},
		{Config{Provider: ProviderGoogleRefreshToken, ClientID: "c", ClientSecret: "s", RefreshToken: "r", Scopes: []string{"x"}}, "scopes"},
		{Config{Provider: ProviderClientCredentials, ClientID: "c", ClientSecret: testClientSecret}, "token_url"},
	}
	for i, tc := range invalid {
		err := tc.c.Validate()
		if err == nil {
			t.Errorf("invalid[%d]: no error, want %s", i, tc.field)
			continue
		}
		if !strings.Contains(err.Error(), tc.field+":") {
			t.Errorf("invalid[%d]: %q does not name %s", i, err, tc.field)
		}
		assertNoSecrets(t, err.Error())
	}
}

func TestNewSourceFileErrors(t *testing.T) {
	key, other := testKey(t, 0), testKey(t, 1)
	certFile, keyFile, _ := writeCert(t, key, key)
	_, wrongKeyFile, _ := writeCert(t, key, other)
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "junk.pem")
	writeFile(t, notPEM, "junk "+testClientSecret)

	cert := func(c, k string) Config {
		return Config{Provider: ProviderMicrosoft, TenantID: "t", ClientID: "c", CertificateFile: c, PrivateKeyFile: k}
	}
	sa := func(path string) Config {
		return Config{Provider: ProviderGoogleServiceAccount, ServiceAccountKeyFile: path, Subject: testSubject}
	}
	for _, tc := range []struct {
		name  string
		c     Config
		field string
	}{
		{"missing cert", cert(filepath.Join(dir, "nope.pem"), keyFile), "certificate_file"},
		{"cert not PEM", cert(notPEM, keyFile), "certificate_file"},
		{"key not PEM", cert(certFile, notPEM), "private_key_file"},
		{"key mismatch", cert(certFile, wrongKeyFile), "private_key_file"},
		{"sa missing", sa(filepath.Join(dir, "nope.json")), "service_account_key_file"},
		{"sa not JSON", sa(notPEM), "service_account_key_file"},
		{"sa wrong type", sa(writeSAKey(t, key, "authorized_user", "https://oauth2.googleapis.com/token")), "service_account_key_file"},
	} {
		_, err := NewSource(t.Context(), tc.c, nil)
		if err == nil || !strings.HasPrefix(err.Error(), tc.field+":") {
			t.Errorf("%s: %v, want %s error", tc.name, err, tc.field)
			continue
		}
		assertNoSecrets(t, err.Error(), keyPEM(t, key), keyPEM(t, other))
	}
	// Same file for certificate and key works.
	combined := filepath.Join(dir, "combined.pem")
	writeFile(t, combined, readFile(t, certFile)+keyPEM(t, key))
	if _, err := NewSource(t.Context(), cert(combined, combined), nil); err != nil {
		t.Fatalf("combined PEM: %v", err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// assertNoSecrets fails if s holds a test secret or any line of the given
// PEM documents.
func assertNoSecrets(t *testing.T, s string, pems ...string) {
	t.Helper()
	for _, secret := range []string{testClientSecret, testRefreshToken, "rotated-refresh-token"} {
		if strings.Contains(s, secret) || strings.Contains(s, url.QueryEscape(secret)) {
			t.Errorf("message leaks a secret: %q", s)
		}
	}
	for _, p := range pems {
		for _, line := range strings.Split(p, "\n") {
			if len(line) >= 16 && !strings.HasPrefix(line, "-----") && strings.Contains(s, line) {
				t.Errorf("message leaks private key material: %q", s)
			}
		}
	}
}

// TestErrorsNeverContainSecrets drives every provider against an endpoint
// that echoes the whole request body (credentials included) in its error
// description, and against a dead endpoint, and checks errors and State.
func TestErrorsNeverContainSecrets(t *testing.T) {
	key := testKey(t, 0)
	certFile, keyFile, _ := writeCert(t, key, key)
	echo := func(status int, code string) func(http.ResponseWriter, *http.Request, url.Values) {
		return func(w http.ResponseWriter, _ *http.Request, form url.Values) {
			oauthtest.WriteJSON(w, status, map[string]string{"error": code, "error_description": "got " + form.Encode() + " raw " + strings.Join(flatten(form), " ")})
		}
	}
	var assertions []string
	for _, status := range []int{400, 500} {
		e := newTokenEndpoint(t)
		e.SetRespond(echo(status, "invalid_client"))
		dead := closedPortURL(t)
		configs := []Config{
			microsoftSecretConfig(e),
			{Provider: ProviderMicrosoft, ClientID: testClientID, TokenURL: e.URL, CertificateFile: certFile, PrivateKeyFile: keyFile},
			{Provider: ProviderGoogleServiceAccount, ServiceAccountKeyFile: writeSAKey(t, key, "service_account", e.URL), Subject: testSubject},
			{Provider: ProviderGoogleRefreshToken, ClientID: testClientID, ClientSecret: testClientSecret, RefreshToken: testRefreshToken, TokenURL: e.URL},
			{Provider: ProviderClientCredentials, ClientID: testClientID, ClientSecret: testClientSecret, TokenURL: e.URL},
			{Provider: ProviderMicrosoft, ClientID: testClientID, ClientSecret: testClientSecret, TokenURL: dead},
			{Provider: ProviderGoogleRefreshToken, ClientID: testClientID, ClientSecret: testClientSecret, RefreshToken: testRefreshToken, TokenURL: dead},
		}
		for i, c := range configs {
			s := mustSource(t, c)
			_, _, err := s.Token(t.Context())
			if err == nil {
				t.Fatalf("config %d: no error", i)
			}
			for _, msg := range []string{err.Error(), s.State().LastError} {
				assertNoSecrets(t, msg, keyPEM(t, key))
				if strings.Contains(msg, "client_assertion=ey") || strings.Contains(msg, "assertion=ey") {
					t.Errorf("config %d: message leaks an assertion: %q", i, msg)
				}
			}
		}
		for _, f := range e.Forms() {
			for _, k := range []string{"client_assertion", "assertion"} {
				if v := f.Get(k); v != "" {
					assertions = append(assertions, v)
				}
			}
		}
	}
	if len(assertions) == 0 {
		t.Fatal("no assertion flow exercised")
	}
}

func flatten(v url.Values) []string {
	var out []string
	for _, vs := range v {
		out = append(out, vs...)
	}
	return out
}
