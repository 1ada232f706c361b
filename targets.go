package emailqosreceiver // import "github.com/emailqos/emailqosreceiver"

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"golang.org/x/net/publicsuffix"

	"github.com/emailqos/emailqosreceiver/internal/imapwatch"
	"github.com/emailqos/emailqosreceiver/internal/oauth"
	"github.com/emailqos/emailqosreceiver/internal/probe"
	"github.com/emailqos/emailqosreceiver/internal/probemsg"
	"github.com/emailqos/emailqosreceiver/internal/restcall"
	"github.com/emailqos/emailqosreceiver/internal/saslx"
	"github.com/emailqos/emailqosreceiver/internal/steps"
	"github.com/emailqos/emailqosreceiver/internal/transport"
)

// targetSpec is one configured target, named, before it is bound to the
// engine's accounts.
type targetSpec struct {
	name             string
	kind             probe.Kind
	sender, receiver string
}

// targets lists every configured target once, in the order the receiver
// runs them (before sharding): the round trips, the listed directions, then
// the mesh's directions the list did not name. It is the one place the mesh
// is expanded; targetCount counts without expanding, for a mesh too large to
// list.
func (cfg *Config) targets() []targetSpec {
	var out []targetSpec
	for _, rt := range cfg.Roundtrip {
		out = append(out, targetSpec{name: rt.targetName(), kind: probe.Roundtrip, sender: rt.Account, receiver: rt.Account})
	}
	seen := map[string]bool{}
	addTransit := func(sender, receiver string) {
		dir := sender + ":" + receiver
		if seen[dir] {
			return
		}
		seen[dir] = true
		out = append(out, targetSpec{name: dir, kind: probe.Transit, sender: sender, receiver: receiver})
	}
	for _, dir := range cfg.Transit.Directions {
		sender, receiver, _ := strings.Cut(dir, ":")
		addTransit(sender, receiver)
	}
	for _, sender := range cfg.Transit.Mesh {
		for _, receiver := range cfg.Transit.Mesh {
			if sender != receiver {
				addTransit(sender, receiver)
			}
		}
	}
	return out
}

// tokenSources makes the OAuth2 token source of every account that signs in
// with OAuth2, keyed by account.
func tokenSources(ctx context.Context, cfg *Config) (map[string]*oauth.Source, error) {
	tokens := map[string]*oauth.Source{}
	for _, key := range sortedKeys(cfg.Accounts) {
		a := cfg.Accounts[key]
		if a.OAuth == nil {
			continue
		}
		oc := a.OAuth.engineConfig()
		if len(oc.Scopes) == 0 {
			// The API's own resource, not Exchange's or IMAP's.
			oc.Scopes = a.apiScopes()
		}
		src, err := oauth.NewSource(ctx, oc, nil)
		if err != nil {
			return nil, fmt.Errorf("accounts::%s::oauth: %w", key, err)
		}
		tokens[key] = src
	}
	return tokens, nil
}

// buildTargets turns the validated configuration into the engine's targets,
// loading TLS material once at start.
func buildTargets(ctx context.Context, cfg *Config, tokens map[string]*oauth.Source) ([]*probe.Target, error) {
	accounts := map[string]*probe.Account{}
	for _, key := range sortedKeys(cfg.Accounts) {
		acct, err := buildAccount(ctx, cfg, key, cfg.Accounts[key])
		if err != nil {
			return nil, err
		}
		if src := tokens[key]; src != nil {
			acct.Token = func(ctx context.Context) (string, error) {
				tok, _, err := src.Token(ctx)
				return tok, err
			}
			acct.TokenType = tokenErrorType
			acct.Mechanism = cfg.Accounts[key].OAuth.Mechanism
			if acct.API, err = buildAPIs(key, cfg.Accounts[key], restcall.TokenFunc(acct.Token)); err != nil {
				return nil, err
			}
		}
		accounts[key] = acct
	}
	timeout := cfg.probeTimeout()
	newTarget := func(name string, kind probe.Kind, sender, receiver string) *probe.Target {
		return &probe.Target{
			Name:            name,
			Kind:            kind,
			Sender:          accounts[sender],
			Receiver:        accounts[receiver],
			Direction:       sender + ":" + receiver,
			DeliveryTimeout: cfg.DeliveryTimeout,
			PollInterval:    cfg.PollInterval,
			PreciseInterval: cfg.PreciseInterval,
			Timeout:         timeout,
			Cleanup:         probe.Cleanup(cfg.Cleanup.Mode),
			CleanupFolder:   cfg.Cleanup.Folder,
			OrphanAge:       cfg.Cleanup.OrphanAge,
			RetryDeferred:   cfg.RetryDeferred,
			DSN:             cfg.DSN,
			Transcript:      cfg.Transcript.enabled(name),
		}
	}
	var targets []*probe.Target
	for _, t := range cfg.targets() {
		targets = append(targets, newTarget(t.name, t.kind, t.sender, t.receiver))
	}
	return cfg.Shard.shardTargets(targets), nil
}

func buildAccount(ctx context.Context, cfg *Config, key string, a AccountConfig) (*probe.Account, error) {
	smtpEP, err := buildEndpoint(ctx, a.SMTP, smtpPorts)
	if err != nil {
		return nil, fmt.Errorf("accounts::%s::smtp::tls: %w", key, err)
	}
	var imapEP, pop3EP transport.Endpoint
	retrieval := a.readVia()
	switch retrieval {
	case transportGraph, transportGmailAPI:
		// Read over the API: no IMAP endpoint.
	case retrievalPOP3:
		if pop3EP, err = buildEndpoint(ctx, a.POP3, pop3Ports); err != nil {
			return nil, fmt.Errorf("accounts::%s::pop3::tls: %w", key, err)
		}
	default:
		retrieval = retrievalIMAP
		if imapEP, err = buildEndpoint(ctx, a.IMAP.endpoint(), imapPorts); err != nil {
			return nil, fmt.Errorf("accounts::%s::imap::tls: %w", key, err)
		}
	}
	username := a.Username
	if username == "" {
		username = a.Address
	}
	mailbox := a.IMAP.Mailbox
	if mailbox == "" {
		mailbox = defaultMbox
	}
	detection := a.Detection
	if detection == "" {
		detection = cfg.Detection
	}
	// The MAC key is tied to the receiving mailbox, so any sender of this
	// collector produces probes that mailbox's reader can verify. Without a
	// password, the OAuth client secret or refresh token keys it.
	secret := []byte(cfg.ProbeSecret)
	if len(secret) == 0 {
		secret = []byte(a.Password)
	}
	if len(secret) == 0 && a.OAuth != nil {
		secret = []byte(string(a.OAuth.ClientSecret) + string(a.OAuth.RefreshToken) + a.OAuth.ClientID + a.OAuth.PrivateKeyFile + a.OAuth.ServiceAccountKeyFile)
	}
	// Placement: the configured junk folders, else the ones found at login;
	// an explicitly empty list turns it off. POP3 sees no other folder.
	var junk []string
	discoverJunk := retrieval == retrievalIMAP && a.IMAP.JunkFolders == nil
	if a.IMAP.JunkFolders != nil {
		junk = *a.IMAP.JunkFolders
	}
	return &probe.Account{
		Key:         key,
		Address:     a.Address,
		Credentials: saslx.Credentials{Username: username, Password: string(a.Password)},
		SMTP:        smtpEP,
		IMAP:        imapEP,
		Retrieval:   retrieval,
		Send:        a.sendVia(),
		POP3:        pop3EP,
		Mailbox:     mailbox,
		Detection:   imapwatch.Method(detection),
		MACKey:      probemsg.DeriveKey(secret, a.Address),
		// What the delivered probe's header is read with.
		AuthServIDs: a.AuthServIDs,
		Domains:     providerDomains(a, smtpEP, imapEP, pop3EP),
		// Sweeps are per mailbox: every target reading it shares the state.
		SweepInterval: cfg.Cleanup.SweepInterval,
		// Where else a probe may land (placement).
		JunkFolders:  junk,
		DiscoverJunk: discoverJunk,
		GmailTabs:    retrieval == retrievalIMAP && a.IMAP.GmailTabs,
		// Shared by every target reading this mailbox, like the sweeps.
		MaxSessions: cmp.Or(a.MaxSessions, defaultMaxSessions),
		// One watcher session per mailbox (issue 15) unless turned off.
		ShareSession: a.ShareSession == nil || *a.ShareSession,
	}, nil
}

// providerDomains are the domains of an account's provider, to tell its
// servers in a Received chain: the configured ones, the address's domain and
// the registrable domains of its endpoints' hosts.
func providerDomains(a AccountConfig, eps ...transport.Endpoint) []string {
	seen := map[string]bool{}
	var out []string
	addDomain := func(d string) {
		d = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(d), "."))
		if d == "" || seen[d] || net.ParseIP(d) != nil {
			return
		}
		seen[d] = true
		out = append(out, d)
	}
	for _, d := range a.Domains {
		addDomain(d)
	}
	if at := strings.LastIndexByte(a.Address, '@'); at >= 0 {
		addDomain(a.Address[at+1:])
	}
	for _, ep := range eps {
		host, _, err := net.SplitHostPort(ep.Address)
		if err != nil || host == "" || net.ParseIP(host) != nil {
			continue
		}
		if d, err := publicsuffix.EffectiveTLDPlusOne(host); err == nil {
			addDomain(d)
		} else {
			addDomain(host)
		}
	}
	return out
}

func buildEndpoint(ctx context.Context, e EndpointConfig, ports map[string]int) (transport.Endpoint, error) {
	addr, security := e.resolve(ports)
	ep := transport.Endpoint{Address: addr, Security: transport.Security(security)}
	if security == securityNone {
		return ep, nil
	}
	tlsCfg, err := e.TLS.LoadTLSConfig(ctx)
	if err != nil {
		return ep, err
	}
	ep.TLSConfig = tlsCfg
	return ep, nil
}

// resolve returns the endpoint's address with its port and its security,
// filling either in from the other. An unset security never resolves to
// none, so credentials are only sent in clear when none was written out.
func (e EndpointConfig) resolve(defaultPorts map[string]int) (addr, security string) {
	security, _ = parseSecurity(e.Security)
	host, port, err := net.SplitHostPort(e.Endpoint)
	if err != nil {
		host, port = e.Endpoint, ""
	}
	if security == "" {
		security = securityStartTLS
		switch port {
		case "465", "993", "995":
			security = securityTLS
		}
	}
	if port == "" {
		port = strconv.Itoa(defaultPorts[security])
	}
	return net.JoinHostPort(host, port), security
}

// tokenErrorType maps a token failure to its error type.
func tokenErrorType(err error) string {
	var oe *oauth.Error
	if errors.As(err, &oe) && oe.Type != "" {
		return oe.Type
	}
	return steps.TypeTokenUnavailable
}
