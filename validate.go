package emailqosreceiver // import "github.com/emailqos/emailqosreceiver"

// Validation of the configuration. Each sub-config checks its own fields in
// its own Validate method, and the collector's walk (confmap.Validate, which
// otelcol runs on every component's configuration) composes the path: it
// calls Validate on every struct, slice, map and non-nil pointer it reaches
// through exported fields and prefixes the error with the path of the value
// ("accounts::gmail::smtp: ", a list entry as "roundtrip::0"). Config's own
// Validate keeps only what needs the whole configuration: account
// references, target names and counts, the mesh, and the rules that tie an
// account to the receiver-wide settings.
//
// The walk (confmap v1.65.0 validation.go; xconfmap v0.159.0 has none)
// prefixes only the first line of an error, so a sub-config reports all its
// problems on one line (problems), each naming its field relative to the
// sub-config; Config's errors name their full path from the receiver. It
// also walks an exported embedded struct, under its lower-cased type name,
// after calling the Validate the outer type got from it by promotion: two
// types avoid that double call, TLSConfig (configtls.ClientConfig's errors
// came twice) and IMAPConfig, which repeats EndpointConfig's fields rather
// than embedding it. Maps are walked in random order, so the accounts'
// errors come in any order, their keys as written.

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/mail"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// problems are one sub-config's problems, each naming its field relative to
// the sub-config. They make one line, so that the path the collector puts in
// front of it applies to every problem.
type problems []error

func (p *problems) add(field, format string, args ...any) {
	*p = append(*p, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
}

func (p problems) err() error {
	if len(p) == 0 {
		return nil
	}
	return oneLine(p)
}

// oneLine is errors joined with "; " instead of errors.Join's newlines.
type oneLine []error

func (e oneLine) Error() string {
	parts := make([]string, len(e))
	for i, err := range e {
		parts[i] = err.Error()
	}
	return strings.Join(parts, "; ")
}

func (e oneLine) Unwrap() []error { return e }

// Validate checks what needs the whole configuration; the collector's walk
// calls the sub-configs' own Validate methods. Every error names the path of
// the field it concerns.
func (cfg *Config) Validate() error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}

	if cfg.CollectionInterval <= 0 {
		add("collection_interval", "must be positive")
	}
	if cfg.DeliveryTimeout <= 0 {
		add("delivery_timeout", "must be positive")
	}
	// Bounds keep the derived probe timeout and the orphan age meaningful
	// (and free of overflow); a day is far beyond any real delivery.
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"delivery_timeout", cfg.DeliveryTimeout}, {"poll_interval", cfg.PollInterval}, {"timeout", cfg.Timeout}} {
		if d.v > maxDuration {
			add(d.name, "%s is longer than the maximum of %s", d.v, maxDuration)
		}
	}
	if cfg.StartSpread < 0 {
		add("start_spread", "must not be negative")
	} else if cfg.CollectionInterval > 0 && cfg.StartSpread > cfg.CollectionInterval/2 {
		add("start_spread", "%s is more than half of collection_interval %s: the probes started last would have no time left", cfg.StartSpread, cfg.CollectionInterval)
	}
	if cfg.PollInterval <= 0 {
		add("poll_interval", "must be positive")
	} else if cfg.DeliveryTimeout > 0 && cfg.DeliveryTimeout < cfg.PollInterval {
		add("delivery_timeout", "%s is shorter than poll_interval %s: a polled mailbox would be looked at once at most", cfg.DeliveryTimeout, cfg.PollInterval)
	}
	if cfg.Timeout > 0 && cfg.Timeout <= cfg.DeliveryTimeout {
		add("timeout", "%s must be longer than delivery_timeout %s, which it includes", cfg.Timeout, cfg.DeliveryTimeout)
	}
	if cfg.Timeout > 0 && cfg.Timeout < cfg.PollInterval {
		add("timeout", "%s is shorter than poll_interval %s", cfg.Timeout, cfg.PollInterval)
	}
	if cfg.PreciseInterval < time.Millisecond {
		add("precise_interval", "must be at least 1ms")
	} else if cfg.PollInterval > 0 && cfg.PreciseInterval > cfg.PollInterval {
		// precise polls more densely than poll_interval, never less.
		add("precise_interval", "%s is longer than poll_interval %s", cfg.PreciseInterval, cfg.PollInterval)
	}
	if cfg.InitialDelay < 0 {
		add("initial_delay", "must not be negative")
	}
	if err := validateDetection(cfg.Detection, false); err != nil {
		add("detection", "%v", err)
	}
	// The folder's own checks are CleanupConfig's; whether it is a mailbox
	// probes are read from needs the accounts.
	if cfg.Cleanup.Mode == cleanupMove && strings.TrimSpace(cfg.Cleanup.Folder) != "" && checkName(cfg.Cleanup.Folder) == nil {
		var readers []string
		for _, key := range sortedKeys(cfg.Accounts) {
			if a := cfg.Accounts[key]; a.readVia() == retrievalIMAP && sameMailbox(cfg.Cleanup.Folder, a.mailbox()) {
				readers = append(readers, "accounts::"+quoteKey(key))
			}
		}
		if len(readers) > 0 {
			add("cleanup::folder", "%q is the mailbox probes are read from (%s): a moved probe would stay where it is", cfg.Cleanup.Folder, strings.Join(readers, ", "))
		}
	}
	// An orphan must be a probe no run can still be waiting for.
	if cfg.Cleanup.OrphanAge <= cfg.DeliveryTimeout {
		add("cleanup::orphan_age", "%s must be longer than delivery_timeout %s", cfg.Cleanup.OrphanAge, cfg.DeliveryTimeout)
	} else if timeout := cfg.probeTimeout(); cfg.Cleanup.OrphanAge <= timeout {
		add("cleanup::orphan_age", "%s must be longer than a whole probe (timeout, or delivery_timeout + %s: %s)", cfg.Cleanup.OrphanAge, setupBudget, timeout)
	}

	for _, key := range sortedKeys(cfg.Accounts) {
		acct := cfg.Accounts[key]
		path := "accounts::" + quoteKey(key)
		if err := checkName(key); err != nil {
			add(path, "account key: %v", err)
		}
		// An account's detection falls back to the receiver's.
		detection := cmp.Or(acct.Detection, cfg.Detection)
		if via := acct.readVia(); isAPI(via) || via == retrievalPOP3 {
			// The APIs and POP3 are polled: no push.
			if detection == detectionIdle || detection == detectionPrecise {
				add(path+"::detection", "%s is not available over %s, which is polled (use auto or poll)", detection, via)
			}
		}
		// POP3 has one maildrop: probes can only be deleted or kept.
		if acct.readVia() == retrievalPOP3 && cfg.Cleanup.Mode == cleanupMove {
			add(path+"::retrieval", "pop3 has no folders to move probes to (cleanup::mode is move)")
		}
	}

	if len(cfg.Roundtrip) == 0 && len(cfg.Transit.Directions) == 0 && len(cfg.Transit.Mesh) == 0 {
		add("roundtrip", "no targets: configure at least one roundtrip or transit target")
	}
	names := map[string]string{}
	claim := func(path, name string) {
		if prev, ok := names[name]; ok {
			add(path, "target name %q is already used by %s", name, prev)
			return
		}
		names[name] = path
	}
	for i, rt := range cfg.Roundtrip {
		path := fmt.Sprintf("roundtrip::%d", i)
		if rt.Account != "" && !cfg.hasAccount(rt.Account) {
			add(path+"::account", "unknown account %q for target %s (configured: %s)", rt.Account, quoteKey(rt.targetName()), cfg.accountList())
		}
		if name := rt.targetName(); name != "" {
			claim(path, "roundtrip/"+name)
		}
	}
	for i, dir := range cfg.Transit.Directions {
		path := fmt.Sprintf("transit::directions::%d", i)
		sender, receiver, ok := splitDirection(dir)
		if !ok {
			continue // TransitConfig's
		}
		for _, k := range []string{sender, receiver} {
			if !cfg.hasAccount(k) {
				add(path, "%s: unknown account %q (configured: %s)", quoted(dir), k, cfg.accountList())
			}
		}
		claim(path, "transit/"+dir)
	}
	for i, k := range cfg.Transit.Mesh {
		if !cfg.hasAccount(k) {
			add(fmt.Sprintf("transit::mesh::%d", i), "unknown account %q (configured: %s)", k, cfg.accountList())
		}
	}
	if n := cfg.targetCount(); n > maxTargets {
		if len(cfg.Transit.Mesh) > 0 {
			add("transit::mesh", "%d targets in all (a mesh of %d accounts is %d directions): at most %d are allowed; split them over several receivers or list the directions you need", n, len(cfg.Transit.Mesh), meshSize(len(cfg.Transit.Mesh)), maxTargets)
		} else {
			add("roundtrip", "%d targets in all: at most %d are allowed; split them over several receivers", n, maxTargets)
		}
	}
	errs = append(errs, cfg.validateTranscriptTargets()...)
	return errors.Join(errs...)
}

// validateTranscriptTargets checks that transcript::targets name
// configured targets.
func (cfg *Config) validateTranscriptTargets() []error {
	var errs []error
	var names map[string]bool
	for i, t := range cfg.Transcript.Targets {
		if t == transcriptAll {
			continue
		}
		if names == nil {
			// Built only when needed, and never for a refused huge mesh.
			if cfg.targetCount() > maxTargets {
				break
			}
			names = cfg.targetNames()
		}
		if !names[t] {
			errs = append(errs, fmt.Errorf("transcript::targets::%d: unknown target %q", i, t))
		}
	}
	return errs
}

// Validate checks the number of lines kept.
func (tc TranscriptConfig) Validate() error {
	if tc.Lines <= 0 || tc.Lines > maxTranscriptLines {
		return fmt.Errorf("lines: %d is not between 1 and %d", tc.Lines, maxTranscriptLines)
	}
	return nil
}

// Validate checks the mode and its folder, and the sweep interval.
func (c CleanupConfig) Validate() error {
	var p problems
	switch c.Mode {
	case cleanupDelete, cleanupKeep:
		if c.Folder != "" {
			p.add("folder", "only used with mode move")
		}
	case cleanupMove:
		if strings.TrimSpace(c.Folder) == "" {
			p.add("folder", "required with mode move")
		} else if err := checkName(c.Folder); err != nil {
			p.add("folder", "%v", err)
		}
	default:
		p.add("mode", "%q is not one of delete, move, keep", c.Mode)
	}
	if c.SweepInterval <= 0 {
		p.add("sweep_interval", "must be positive")
	}
	return p.err()
}

// Validate checks a round-trip target's own fields; whether its account
// exists is Config's.
func (rt RoundtripConfig) Validate() error {
	var p problems
	if rt.Account == "" {
		p.add("account", "missing: name the account to probe")
	}
	if err := checkName(rt.Name); err != nil {
		p.add("name", "%v", err)
	}
	return p.err()
}

// splitDirection splits a direction into its sender and receiver.
func splitDirection(dir string) (sender, receiver string, ok bool) {
	sender, receiver, ok = strings.Cut(dir, ":")
	return sender, receiver, ok && sender != "" && receiver != "" && !strings.Contains(receiver, ":")
}

// Validate checks the form of the directions and of the mesh; whether
// their accounts exist is Config's.
func (tc TransitConfig) Validate() error {
	var p problems
	for i, dir := range tc.Directions {
		field := fmt.Sprintf("directions::%d", i)
		sender, receiver, ok := splitDirection(dir)
		switch {
		case !ok:
			p.add(field, "%s must be sender:receiver, e.g. gmail:o365", quoted(dir))
		case sender == receiver:
			p.add(field, "%s: sender and receiver are the same account: use a roundtrip target", quoted(dir))
		}
	}
	seen := map[string]bool{}
	for i, k := range tc.Mesh {
		field := fmt.Sprintf("mesh::%d", i)
		if seen[k] {
			p.add(field, "account %q listed twice", k)
		}
		if strings.Contains(k, ":") {
			p.add(field, "account key %q contains ':', which separates sender and receiver in a direction's name", k)
		}
		seen[k] = true
	}
	if len(tc.Mesh) == 1 {
		p.add("mesh", "needs at least two accounts")
	}
	return p.err()
}

// Validate checks the account's own fields and how its blocks fit together
// (which endpoints its transports need); the endpoints', the oauth block's
// and the transport block's values are checked by their own Validate.
func (a AccountConfig) Validate() error {
	var p problems
	switch {
	case strings.TrimSpace(a.Address) == "":
		p.add("address", "missing")
	default:
		if err := checkAddress(a.Address); err != nil {
			p.add("address", "%v", err)
		}
	}
	for i, d := range a.Domains {
		if d == "" || strings.ContainsAny(d, " \t\r\n@/:") {
			p.add(fmt.Sprintf("domains::%d", i), "%q is not a domain name", d)
		}
	}
	for i, id := range a.AuthServIDs {
		if strings.ContainsAny(id, " \t\r\n;") {
			p.add(fmt.Sprintf("authserv_ids::%d", i), "%q is not an authserv-id", id)
		}
	}
	if err := checkName(a.Username); err != nil {
		p.add("username", "%v", err)
	}
	// Never quoted: the password must not appear in an error.
	if strings.ContainsAny(string(a.Password), "\x00\r\n") {
		p.add("password", "contains a NUL, CR or LF, which cannot be sent in an SMTP, IMAP or POP3 login")
	}
	switch {
	case a.OAuth != nil:
		if a.Password != "" {
			p.add("password", "set either password or oauth, not both")
		}
	case a.Password == "":
		p.add("password", "missing (use ${env:VAR} or ${file:path} to keep it out of the file, or configure oauth)")
	}
	if err := validateDetection(a.Detection, true); err != nil {
		p.add("detection", "%v", err)
	}
	if a.MaxSessions < 0 || a.MaxSessions > maxMaxSessions {
		p.add("max_sessions", "%d: must be between 1 and %d (unset: %d)", a.MaxSessions, maxMaxSessions, defaultMaxSessions)
	}
	if !isAPI(a.sendVia()) && strings.TrimSpace(a.SMTP.Endpoint) == "" {
		p.add("smtp::endpoint", "missing (host:port)")
	}
	a.checkTransport(&p)
	switch a.readVia() {
	case transportGraph, transportGmailAPI:
		// Read over the API: no IMAP or POP3 endpoint needed.
	case "", retrievalIMAP:
		if strings.TrimSpace(a.IMAP.Endpoint) == "" {
			p.add("imap::endpoint", "missing (host:port)")
		}
		if a.POP3.Endpoint != "" {
			p.add("pop3", "configured but retrieval is imap: set retrieval: pop3 to use it")
		}
	case retrievalPOP3:
		if strings.TrimSpace(a.POP3.Endpoint) == "" {
			p.add("pop3::endpoint", "missing (host:port)")
		}
		if a.IMAP.Endpoint != "" {
			p.add("imap", "configured but retrieval is pop3")
		}
	default:
		p.add("retrieval", "%q is not one of imap, pop3", a.Retrieval)
	}
	if a.IMAP.JunkFolders != nil {
		switch a.readVia() {
		case retrievalPOP3:
			p.add("imap::junk_folders", "pop3 sees the maildrop only: placement is inbox or missing there")
		case transportGraph, transportGmailAPI:
			p.add("imap::junk_folders", "not used over %s, which watches its junk folder (spam label) itself", a.readVia())
		}
	}
	if a.IMAP.GmailTabs {
		switch a.readVia() {
		case retrievalPOP3:
			p.add("imap::gmail_tabs", "pop3 sees the maildrop only: placement is inbox or missing there")
		case transportGraph:
			p.add("imap::gmail_tabs", "Gmail's tabs are read over IMAP or the Gmail API, not over graph")
		case transportGmailAPI:
			p.add("imap::gmail_tabs", "not used over gmail_api, which reports the tab itself (its CATEGORY_* label)")
		}
	}
	return p.err()
}

// Validate checks the IMAP endpoint, the mailbox and the junk folders.
func (c IMAPConfig) Validate() error {
	p := c.endpoint().problems()
	if err := checkName(c.Mailbox); err != nil {
		p.add("mailbox", "%v", err)
	}
	if jf := c.JunkFolders; jf != nil {
		if len(*jf) > maxJunkFolders {
			p.add("junk_folders", "%d folders, at most %d", len(*jf), maxJunkFolders)
		}
		mailbox := cmp.Or(c.Mailbox, defaultMbox)
		seen := map[string]bool{}
		for i, f := range *jf {
			field := fmt.Sprintf("junk_folders::%d", i)
			switch {
			case strings.TrimSpace(f) == "":
				p.add(field, "empty folder name")
			case checkName(f) != nil:
				p.add(field, "%v", checkName(f))
			case sameMailbox(f, mailbox):
				p.add(field, "%q is the mailbox the probes are read from", f)
			case seen[f]:
				p.add(field, "%q listed twice", f)
			}
			seen[f] = true
		}
	}
	return p.err()
}

// Validate checks the values an endpoint block sets; whether the account
// needs the endpoint is AccountConfig's, and configtls's own checks run
// when the collector walks the tls block.
func (e EndpointConfig) Validate() error {
	return e.problems().err()
}

func (e EndpointConfig) problems() problems {
	var p problems
	if _, err := parseSecurity(e.Security); err != nil {
		p.add("security", "%v", err)
	}
	if strings.TrimSpace(e.Endpoint) != "" {
		if err := checkEndpoint(e.Endpoint); err != nil {
			p.add("endpoint", "%v", err)
		}
	}
	if e.TLS.Insecure {
		p.add("tls::insecure", "not used here: set security: none to connect without TLS")
	}
	// What configtls checks only when the probe first dials, that the
	// files exist, is checked here, at startup.
	for _, f := range []struct{ name, path string }{
		{"ca_file", e.TLS.CAFile}, {"cert_file", e.TLS.CertFile}, {"key_file", e.TLS.KeyFile},
	} {
		if f.path == "" {
			continue
		}
		if fi, err := os.Stat(f.path); err != nil {
			p.add("tls::"+f.name, "%v", err)
		} else if fi.IsDir() {
			p.add("tls::"+f.name, "%q is a directory", f.path)
		}
	}
	return p
}

func checkEndpoint(ep string) error {
	if strings.ContainsAny(ep, "/ ") {
		return fmt.Errorf("%q is not host:port (no scheme or path)", ep)
	}
	host, port, err := net.SplitHostPort(ep)
	if err != nil {
		// A bare host name gets its port from the security mode; an IPv6
		// address needs the [addr]:port form.
		if strings.Contains(ep, ":") {
			return fmt.Errorf("%q is not host:port", ep)
		}
		host, port = ep, ""
	}
	if !validHost(host) {
		return fmt.Errorf("%q has an invalid host %q", ep, host)
	}
	if port == "" && err == nil {
		return fmt.Errorf("%q has an empty port", ep)
	}
	if port != "" {
		n, perr := strconv.Atoi(port)
		if perr != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%q has an invalid port %q", ep, port)
		}
	}
	return nil
}

// validHost accepts an IP address or a DNS name (letters, digits, '-',
// '_' and dots), so that what validates can always be dialed as host:port.
func validHost(host string) bool {
	if host == "" {
		return false
	}
	if net.ParseIP(host) != nil {
		return true
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func validateDetection(d string, allowEmpty bool) error {
	switch d {
	case detectionAuto, detectionIdle, detectionPoll, detectionPrecise:
		return nil
	case "":
		if allowEmpty {
			return nil
		}
	}
	return fmt.Errorf("%q is not one of auto, idle, poll, precise", d)
}

// checkAddress accepts a plain addr-spec as it travels in MAIL FROM and RCPT
// TO (RFC 5321 4.1.2): a dot-string local part, a domain of non-empty labels
// or an IPv4 address literal, within RFC 5321's size limits. UTF-8 is allowed
// in both halves (RFC 6531). Quoted local parts, display names and comments
// are refused: the probe message is built from the address as written
// (net/mail would unquote or drop them), so they failed every probe.
func checkAddress(addr string) error {
	if err := checkName(addr); err != nil {
		return err
	}
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return fmt.Errorf("%s is not an email address (local@domain)", quoted(addr))
	}
	local, domain := addr[:at], addr[at+1:]
	switch {
	case strings.ContainsAny(addr, "<>()\"\\, \t"):
		return fmt.Errorf("%s is not a plain address: write local@domain only, without display name, quotes, comments or angle brackets", quoted(addr))
	case len(local) == 0 || len(local) > maxLocalPart:
		return fmt.Errorf("%s: the local part has %d octets, it must have 1 to %d (RFC 5321 4.5.3.1.1)", quoted(addr), len(local), maxLocalPart)
	case len(domain) == 0 || len(domain) > maxDomain:
		return fmt.Errorf("%s: the domain has %d octets, it must have 1 to %d (RFC 5321 4.5.3.1.2)", quoted(addr), len(domain), maxDomain)
	case len(addr)+2 > maxPath:
		return fmt.Errorf("%s: the path <address> has %d octets, at most %d (RFC 5321 4.5.3.1.3)", quoted(addr), len(addr)+2, maxPath)
	}
	if !dotString(local, isAtext) {
		return fmt.Errorf("%s: the local part %s is not a dot-string (no empty parts, no special characters)", quoted(addr), quoted(local))
	}
	if !validDomain(domain) {
		return fmt.Errorf("%s: the domain %s is not a domain name (labels of letters, digits and '-', none empty) or an IPv4 literal [a.b.c.d]", quoted(addr), quoted(domain))
	}
	// What the probe message is built with must take it as it is.
	if p, err := mail.ParseAddress(addr); err != nil || p.Address != addr || p.Name != "" {
		return fmt.Errorf("%s is not a plain address", quoted(addr))
	}
	return nil
}

// dotString reports whether s is parts of allowed characters joined by
// single dots.
func dotString(s string, allowed func(rune) bool) bool {
	for _, part := range strings.Split(s, ".") {
		if part == "" {
			return false
		}
		for _, r := range part {
			if !allowed(r) {
				return false
			}
		}
	}
	return true
}

// isAtext is RFC 5322's atext, with RFC 6531's UTF-8 (printable only).
func isAtext(r rune) bool {
	switch {
	case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		return true
	case r < utf8.RuneSelf:
		return strings.ContainsRune("!#$%&'*+-/=?^_`{|}~", r)
	}
	return unicode.IsGraphic(r) && !unicode.IsSpace(r)
}

// validDomain accepts RFC 5321's Domain (labels of letters, digits and
// inner hyphens, each 1 to 63 octets; U-labels in UTF-8 per RFC 6531) or an
// IPv4 address literal. A trailing dot is refused: MAIL FROM has none.
func validDomain(d string) bool {
	if strings.HasPrefix(d, "[") && strings.HasSuffix(d, "]") {
		ip := net.ParseIP(d[1 : len(d)-1])
		return ip != nil && ip.To4() != nil && !strings.Contains(d, ":")
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' ||
				r >= utf8.RuneSelf && unicode.IsGraphic(r) && !unicode.IsSpace(r)) {
				return false
			}
		}
	}
	return true
}

// checkName refuses what cannot travel in an SMTP, IMAP or POP3 command or
// be shown safely: invalid UTF-8, control characters (NUL, CR, LF, ESC, ...)
// and bidi controls, which can disguise a name in logs and terminals.
func checkName(s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("%s is not valid UTF-8", quoted(s))
	}
	for _, r := range s {
		if unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) {
			return fmt.Errorf("%s contains the control character %U", quoted(s), r)
		}
	}
	return nil
}
