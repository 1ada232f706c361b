package emailqosreceiver // import "github.com/emailqos/emailqosreceiver"

import (
	"errors"
	"os"
	"strings"

	"go.opentelemetry.io/collector/config/configopaque"

	"github.com/emailqos/emailqosreceiver/internal/oauth"
)

// OAuthConfig signs an account in with OAuth2 bearer tokens (SASL XOAUTH2 or
// OAUTHBEARER) instead of a password, as Microsoft 365 requires for IMAP and
// POP3 and Gmail prefers. Secrets are configopaque values.
type OAuthConfig struct {
	// Provider is microsoft (client credentials: secret or certificate),
	// google_service_account (domain-wide delegation), google_refresh_token
	// or client_credentials (any token endpoint).
	Provider     string              `mapstructure:"provider"`
	TenantID     string              `mapstructure:"tenant_id"`
	ClientID     string              `mapstructure:"client_id"`
	ClientSecret configopaque.String `mapstructure:"client_secret"`
	// CertificateFile and PrivateKeyFile replace the client secret with a
	// signed client assertion (microsoft).
	CertificateFile string `mapstructure:"certificate_file"`
	PrivateKeyFile  string `mapstructure:"private_key_file"`
	// Scopes default per provider (Exchange Online, Gmail).
	Scopes []string `mapstructure:"scopes"`
	// TokenURL overrides the token endpoint (national clouds, tests);
	// AuthorityHost replaces login.microsoftonline.com.
	TokenURL      string `mapstructure:"token_url"`
	AuthorityHost string `mapstructure:"authority_host"`
	// ServiceAccountKeyFile is a Google service account JSON key; Subject
	// the user it acts as.
	ServiceAccountKeyFile string              `mapstructure:"service_account_key_file"`
	Subject               string              `mapstructure:"subject"`
	RefreshToken          configopaque.String `mapstructure:"refresh_token"`
	EndpointParams        map[string][]string `mapstructure:"endpoint_params"`
	// Mechanism forces xoauth2 or oauthbearer; by default XOAUTH2 when the
	// server offers it (Microsoft 365 accepts only that), else OAUTHBEARER.
	Mechanism string `mapstructure:"mechanism"`
}

func (o *OAuthConfig) engineConfig() oauth.Config {
	return oauth.Config{
		Provider:              o.Provider,
		TenantID:              o.TenantID,
		ClientID:              o.ClientID,
		ClientSecret:          string(o.ClientSecret),
		CertificateFile:       o.CertificateFile,
		PrivateKeyFile:        o.PrivateKeyFile,
		Scopes:                o.Scopes,
		TokenURL:              o.TokenURL,
		AuthorityHost:         o.AuthorityHost,
		ServiceAccountKeyFile: o.ServiceAccountKeyFile,
		Subject:               o.Subject,
		RefreshToken:          string(o.RefreshToken),
		EndpointParams:        o.EndpointParams,
	}
}

// Validate checks the oauth block: the engine's rules for the provider,
// the key files and the mechanism.
func (o OAuthConfig) Validate() error {
	var p problems
	if err := o.engineConfig().Validate(); err != nil {
		// oauth names fields in snake case and never quotes a secret; its
		// joined errors become one line each here.
		for _, line := range strings.Split(err.Error(), "\n") {
			p = append(p, errors.New(line))
		}
	}
	// The files are read when the receiver starts; a missing one is named
	// here, as validate runs, rather than when the collector starts.
	for _, f := range []struct{ name, path string }{
		{"certificate_file", o.CertificateFile}, {"private_key_file", o.PrivateKeyFile},
		{"service_account_key_file", o.ServiceAccountKeyFile},
	} {
		if f.path == "" {
			continue
		}
		if fi, err := os.Stat(f.path); err != nil {
			p.add(f.name, "%v", err)
		} else if fi.IsDir() {
			p.add(f.name, "%q is a directory", f.path)
		}
	}
	switch strings.ToUpper(o.Mechanism) {
	case "", "XOAUTH2", "OAUTHBEARER":
	default:
		p.add("mechanism", "%q is not one of xoauth2, oauthbearer", o.Mechanism)
	}
	return p.err()
}
