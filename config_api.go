package emailqosreceiver // import "github.com/emailqos/emailqosreceiver"

import (
	"fmt"
	"strings"

	"github.com/emailqos/emailqosreceiver/internal/gmailapi"
	"github.com/emailqos/emailqosreceiver/internal/graph"
	"github.com/emailqos/emailqosreceiver/internal/oauth"
	"github.com/emailqos/emailqosreceiver/internal/probe"
	"github.com/emailqos/emailqosreceiver/internal/restcall"
)

// Transports of an account (issue 18), as the engine names them.
const (
	transportSMTP     = probe.SendSMTP
	transportGraph    = probe.SendGraph
	transportGmailAPI = probe.SendGmailAPI
)

// Default token scopes of the API transports: Graph application
// permissions come as the resource's .default scope (client credentials
// flow); the Gmail API's full scope is the one users.messages.delete needs.
const (
	graphScope = "https://graph.microsoft.com/.default"
	gmailScope = oauth.DefaultGoogleScope
)

// TransportConfig chooses Microsoft Graph or the Gmail API instead of SMTP
// for sending and/or instead of IMAP or POP3 for reading, for tenants where
// SMTP AUTH, IMAP and POP are switched off. Tokens come from the account's
// oauth block (app-only: client credentials, or a Google service account
// with domain-wide delegation).
type TransportConfig struct {
	// Send is smtp (default), graph or gmail_api.
	Send string `mapstructure:"send"`
	// Read is imap (default, or what retrieval says), pop3, graph or
	// gmail_api.
	Read string `mapstructure:"read"`
	// BaseURL replaces the API's endpoint (https://graph.microsoft.com,
	// https://gmail.googleapis.com): for sovereign clouds
	// (https://graph.microsoft.us, https://microsoftgraph.chinacloudapi.cn)
	// and for tests. https only; plain http is accepted for loopback alone,
	// since every request carries a bearer token.
	BaseURL string `mapstructure:"base_url"`
}

// sendVia is the account's sending transport.
func (a AccountConfig) sendVia() string {
	if a.Transport.Send == "" {
		return transportSMTP
	}
	return a.Transport.Send
}

// readVia is the account's reading transport: transport::read, else
// retrieval, else imap.
func (a AccountConfig) readVia() string {
	switch {
	case a.Transport.Read != "":
		return a.Transport.Read
	case a.Retrieval != "":
		return a.Retrieval
	}
	return retrievalIMAP
}

func isAPI(t string) bool { return t == transportGraph || t == transportGmailAPI }

// api is the API the account uses ("" when none): one per account, since
// one base_url and one token serve it.
func (a AccountConfig) api() string {
	if isAPI(a.sendVia()) {
		return a.sendVia()
	}
	if isAPI(a.readVia()) {
		return a.readVia()
	}
	return ""
}

// usesProtocols reports whether the account sends over SMTP or reads over
// IMAP or POP3.
func (a AccountConfig) usesProtocols() bool {
	return !isAPI(a.sendVia()) || !isAPI(a.readVia())
}

// Validate checks the transport block's values; how they fit the rest of
// the account is AccountConfig's (checkTransport).
func (t TransportConfig) Validate() error {
	var p problems
	switch t.Send {
	case "", transportSMTP, transportGraph, transportGmailAPI:
	default:
		p.add("send", "%s is not one of smtp, graph, gmail_api", quoted(t.Send))
	}
	switch t.Read {
	case "", retrievalIMAP, retrievalPOP3, transportGraph, transportGmailAPI:
	default:
		p.add("read", "%s is not one of imap, pop3, graph, gmail_api", quoted(t.Read))
	}
	if t.BaseURL != "" {
		if err := oauth.CheckURL(t.BaseURL); err != nil {
			p.add("base_url", "%v", err)
		}
	}
	return p.err()
}

// checkTransport checks the transport block against the rest of the
// account.
func (a AccountConfig) checkTransport(p *problems) {
	t := a.Transport
	if t.Read != "" && a.Retrieval != "" && a.Retrieval != t.Read {
		p.add("transport::read", "%s contradicts retrieval %s: set one of them", quoted(t.Read), quoted(a.Retrieval))
	}
	api := a.api()
	if isAPI(a.sendVia()) && isAPI(a.readVia()) && a.sendVia() != a.readVia() {
		p.add("transport", "send %s and read %s: one account is one provider's mailbox; use two accounts", a.sendVia(), a.readVia())
	}
	if t.BaseURL != "" && api == "" {
		p.add("transport::base_url", "only used with graph or gmail_api")
	}
	if api == "" {
		return
	}
	if a.OAuth == nil {
		p.add("oauth", "required with transport %s: the API takes app-only OAuth2 tokens, not a password", api)
		return
	}
	prov := a.OAuth.Provider
	switch {
	case api == transportGraph && prov != oauth.ProviderMicrosoft && prov != oauth.ProviderClientCredentials:
		p.add("oauth::provider", "%s cannot sign in to Microsoft Graph (use microsoft)", quoted(prov))
	case api == transportGmailAPI && prov != oauth.ProviderGoogleServiceAccount && prov != oauth.ProviderGoogleRefreshToken && prov != oauth.ProviderClientCredentials:
		p.add("oauth::provider", "%s cannot sign in to the Gmail API (use google_service_account)", quoted(prov))
	}
	// A Microsoft token is issued for one resource: Graph's cannot log in
	// to Exchange's SMTP or IMAP, nor the other way round (Microsoft
	// identity platform, ".default scope").
	if api == transportGraph && prov == oauth.ProviderMicrosoft && a.usesProtocols() {
		p.add("transport", "graph for one side and SMTP/IMAP/POP3 for the other need tokens for two resources: use graph for both, or two accounts")
	}
}

// apiScopes are the default scopes of the account's token when it uses an
// API and configures none.
func (a AccountConfig) apiScopes() []string {
	switch a.api() {
	case transportGraph:
		return []string{graphScope}
	case transportGmailAPI:
		return []string{gmailScope}
	}
	return nil
}

// buildAPIs makes the account's API client, its requests signed with token.
func buildAPIs(key string, a AccountConfig, token restcall.TokenFunc) (probe.APIs, error) {
	var out probe.APIs
	var err error
	switch a.api() {
	case transportGraph:
		out.Graph, err = graph.New(token, graph.Options{BaseURL: strings.TrimSpace(a.Transport.BaseURL)})
	case transportGmailAPI:
		out.Gmail, err = gmailapi.New(token, gmailapi.Options{BaseURL: strings.TrimSpace(a.Transport.BaseURL)})
	}
	if err != nil {
		return out, fmt.Errorf("accounts::%s::transport: %w", key, err)
	}
	return out, nil
}
