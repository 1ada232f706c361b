// Package oauth obtains OAuth2 access tokens for the mailbox protocols
// (SMTP/IMAP/POP3 XOAUTH2 or OAUTHBEARER) from Microsoft Entra ID, Google, or
// a generic client-credentials endpoint, caches them and refreshes them
// before they expire. It is built on golang.org/x/oauth2.
//
// Secrets (client secret, refresh token, private keys, client assertions,
// access tokens) never appear in an error string: messages name fields, the
// endpoint, HTTP statuses and known error codes only, never text an endpoint
// wrote. Token requests never follow redirects and read at most
// maxResponseBytes.
package oauth

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"
)

// Providers.
const (
	ProviderMicrosoft            = "microsoft"              // Entra ID client credentials (secret or certificate)
	ProviderGoogleServiceAccount = "google_service_account" // JWT bearer grant with domain-wide delegation
	ProviderGoogleRefreshToken   = "google_refresh_token"   // installed-app refresh token
	ProviderClientCredentials    = "client_credentials"     // any RFC 6749 §4.4 endpoint
)

// Default endpoints and scopes.
const (
	DefaultMicrosoftAuthority = "https://login.microsoftonline.com"
	DefaultMicrosoftScope     = "https://outlook.office365.com/.default"
	DefaultGoogleScope        = "https://mail.google.com/"
	DefaultGoogleTokenURL     = "https://oauth2.googleapis.com/token"
)

// Config selects a provider and its credentials. Field names in error
// messages are the snake_case names the receiver configuration uses.
type Config struct {
	Provider string

	TenantID     string
	ClientID     string
	ClientSecret string
	// CertificateFile and PrivateKeyFile (PEM, may be the same file) replace
	// ClientSecret with an RFC 7523 client assertion signed by the key.
	CertificateFile string
	PrivateKeyFile  string

	// Scopes default per provider: microsoft DefaultMicrosoftScope,
	// google_service_account DefaultGoogleScope. National clouds need
	// their own (e.g. https://outlook.office365.us/.default).
	Scopes []string

	// TokenURL overrides the token endpoint. For microsoft the default is
	// <AuthorityHost>/<TenantID>/oauth2/v2.0/token.
	TokenURL string
	// AuthorityHost replaces https://login.microsoftonline.com (national
	// clouds); a bare host name means https.
	AuthorityHost string

	// ServiceAccountKeyFile is a Google JSON key of type service_account;
	// Subject is the mailbox user the service account acts as.
	ServiceAccountKeyFile string
	Subject               string

	// RefreshToken, with ClientID/ClientSecret, for google_refresh_token.
	RefreshToken string

	// EndpointParams are extra token request parameters (microsoft and
	// client_credentials), e.g. "resource" or "audience".
	EndpointParams map[string][]string
}

// reservedParams are set by the flows themselves; letting EndpointParams
// override them would silently change the grant or leak a second secret.
var reservedParams = map[string]bool{
	"grant_type": true, "scope": true, "client_id": true, "client_secret": true,
	"client_assertion": true, "client_assertion_type": true, "assertion": true,
	"refresh_token": true,
}

var tenantRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.-]*$`)

// Validate reports every problem in c, naming the field. Values of secret
// fields are never included.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	required := func(field, v string) {
		if strings.TrimSpace(v) == "" {
			bad(field, "required for provider %q", c.Provider)
		}
	}
	// unused flags fields the provider would ignore, so nobody believes a
	// credential is in use when it is not.
	unused := func(field string, set bool) {
		if set {
			bad(field, "not used by provider %q", c.Provider)
		}
	}
	hasCert := c.CertificateFile != "" || c.PrivateKeyFile != ""
	clientAuth := func() {
		required("client_id", c.ClientID)
		switch {
		case c.ClientSecret != "" && hasCert:
			bad("client_secret", "set either client_secret or certificate_file/private_key_file, not both")
		case c.ClientSecret == "" && !hasCert:
			bad("client_secret", "required (or certificate_file and private_key_file) for provider %q", c.Provider)
		case hasCert && c.CertificateFile == "":
			bad("certificate_file", "required with private_key_file")
		case hasCert && c.PrivateKeyFile == "":
			bad("private_key_file", "required with certificate_file")
		}
	}

	switch c.Provider {
	case ProviderMicrosoft:
		clientAuth()
		if c.TokenURL != "" && c.AuthorityHost != "" {
			bad("authority_host", "set either token_url or authority_host, not both")
		}
		if c.TokenURL == "" {
			required("tenant_id", c.TenantID)
		}
		if c.TenantID != "" && !tenantRE.MatchString(c.TenantID) {
			bad("tenant_id", "must be a tenant GUID or domain name")
		}
		if c.AuthorityHost != "" {
			if err := checkURL(authorityURL(c.AuthorityHost)); err != nil {
				bad("authority_host", "%v", err)
			}
		}
		unused("service_account_key_file", c.ServiceAccountKeyFile != "")
		unused("subject", c.Subject != "")
		unused("refresh_token", c.RefreshToken != "")
	case ProviderClientCredentials:
		clientAuth()
		required("token_url", c.TokenURL)
		unused("tenant_id", c.TenantID != "")
		unused("authority_host", c.AuthorityHost != "")
		unused("service_account_key_file", c.ServiceAccountKeyFile != "")
		unused("subject", c.Subject != "")
		unused("refresh_token", c.RefreshToken != "")
	case ProviderGoogleServiceAccount:
		required("service_account_key_file", c.ServiceAccountKeyFile)
		// A service account has no mailbox of its own: without a subject
		// Gmail has no user to authenticate.
		required("subject", c.Subject)
		unused("tenant_id", c.TenantID != "")
		unused("client_id", c.ClientID != "")
		unused("client_secret", c.ClientSecret != "")
		unused("certificate_file", c.CertificateFile != "")
		unused("private_key_file", c.PrivateKeyFile != "")
		unused("authority_host", c.AuthorityHost != "")
		unused("refresh_token", c.RefreshToken != "")
		unused("endpoint_params", len(c.EndpointParams) > 0)
	case ProviderGoogleRefreshToken:
		required("client_id", c.ClientID)
		required("client_secret", c.ClientSecret)
		required("refresh_token", c.RefreshToken)
		unused("tenant_id", c.TenantID != "")
		unused("certificate_file", c.CertificateFile != "")
		unused("private_key_file", c.PrivateKeyFile != "")
		unused("authority_host", c.AuthorityHost != "")
		unused("service_account_key_file", c.ServiceAccountKeyFile != "")
		unused("subject", c.Subject != "")
		unused("endpoint_params", len(c.EndpointParams) > 0)
		// A refresh grant cannot widen scopes: consent fixed them when the
		// refresh token was issued.
		unused("scopes", len(c.Scopes) > 0)
	case "":
		bad("provider", "required (one of %s, %s, %s, %s)", ProviderMicrosoft, ProviderGoogleServiceAccount, ProviderGoogleRefreshToken, ProviderClientCredentials)
		return errors.Join(errs...)
	default:
		bad("provider", "unknown provider %q (want one of %s, %s, %s, %s)", limit(c.Provider, 40), ProviderMicrosoft, ProviderGoogleServiceAccount, ProviderGoogleRefreshToken, ProviderClientCredentials)
		return errors.Join(errs...)
	}

	if c.TokenURL != "" {
		if err := checkURL(c.TokenURL); err != nil {
			bad("token_url", "%v", err)
		}
	}
	for i, s := range c.Scopes {
		if s == "" || strings.ContainsAny(s, " \t\r\n") {
			bad(fmt.Sprintf("scopes[%d]", i), "must be non-empty and contain no whitespace")
		}
	}
	for k := range c.EndpointParams {
		if reservedParams[k] {
			bad("endpoint_params", "parameter %q is set by the provider flow and cannot be overridden", limit(k, 40))
		}
	}
	return errors.Join(errs...)
}

// CheckURL is checkURL for other clients that send bearer tokens (the Graph
// and Gmail API clients), so every credential-bearing URL follows one rule.
func CheckURL(raw string) error { return checkURL(raw) }

// checkURL requires an absolute https URL; plain http is allowed only to
// loopback (tests, local proxies) since the request carries credentials.
func checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return errors.New("must be an absolute URL")
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		host := u.Hostname()
		if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
			return nil
		}
		return errors.New("must use https (http is allowed only for loopback)")
	default:
		return errors.New("must be an https URL")
	}
}

func authorityURL(host string) string {
	if !strings.Contains(host, "://") {
		host = "https://" + host
	}
	return strings.TrimRight(host, "/")
}

// tokenURL is the effective token endpoint (empty for Google service
// accounts without an override: the key file names it).
func (c Config) tokenURL() string {
	if c.TokenURL != "" {
		return c.TokenURL
	}
	switch c.Provider {
	case ProviderMicrosoft:
		authority := DefaultMicrosoftAuthority
		if c.AuthorityHost != "" {
			authority = authorityURL(c.AuthorityHost)
		}
		return authority + "/" + url.PathEscape(c.TenantID) + "/oauth2/v2.0/token"
	case ProviderGoogleRefreshToken:
		return DefaultGoogleTokenURL
	}
	return ""
}

func (c Config) scopes() []string {
	if len(c.Scopes) > 0 {
		return append([]string(nil), c.Scopes...)
	}
	switch c.Provider {
	case ProviderMicrosoft:
		return []string{DefaultMicrosoftScope}
	case ProviderGoogleServiceAccount:
		return []string{DefaultGoogleScope}
	}
	return nil
}

func limit(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
