package emailqosreceiver // import "github.com/emailqos/emailqosreceiver"

// Validation of the configuration. The paths of the fields are written here
// rather than composed by confmap from sub-configs' Validate methods:
// confmap prefixes a sub-config's error once, so the second and later
// lines of a joined error would lose their path, it writes a list index as
// "roundtrip::0" instead of naming the target, and it walks maps in random
// order; several checks also need the whole configuration (retrieval
// decides which endpoint must be set).

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

func (cfg *Config) validateTranscript() []error {
	var errs []error
	if cfg.Transcript.Lines <= 0 || cfg.Transcript.Lines > maxTranscriptLines {
		errs = append(errs, fmt.Errorf("transcript::lines: %d is not between 1 and %d", cfg.Transcript.Lines, maxTranscriptLines))
	}
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
			errs = append(errs, fmt.Errorf("transcript::targets[%d]: unknown target %q", i, t))
		}
	}
	return errs
}

// Validate checks the whole configuration and reports every problem with the
// path of the field it concerns.
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
	switch cfg.Cleanup.Mode {
	case cleanupDelete, cleanupKeep:
		if cfg.Cleanup.Folder != "" {
			add("cleanup::folder", "only used with mode move")
		}
	case cleanupMove:
		if strings.TrimSpace(cfg.Cleanup.Folder) == "" {
			add("cleanup::folder", "required with mode move")
		} else if err := checkName(cfg.Cleanup.Folder); err != nil {
			add("cleanup::folder", "%v", err)
		} else {
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
	default:
		add("cleanup::mode", "%q is not one of delete, move, keep", cfg.Cleanup.Mode)
	}
	// An orphan must be a probe no run can still be waiting for.
	if cfg.Cleanup.OrphanAge <= cfg.DeliveryTimeout {
		add("cleanup::orphan_age", "%s must be longer than delivery_timeout %s", cfg.Cleanup.OrphanAge, cfg.DeliveryTimeout)
	} else if timeout := cfg.probeTimeout(); cfg.Cleanup.OrphanAge <= timeout {
		add("cleanup::orphan_age", "%s must be longer than a whole probe (timeout, or delivery_timeout + %s: %s)", cfg.Cleanup.OrphanAge, setupBudget, timeout)
	}
	if cfg.Cleanup.SweepInterval <= 0 {
		add("cleanup::sweep_interval", "must be positive")
	}

	for _, key := range sortedKeys(cfg.Accounts) {
		acct := cfg.Accounts[key]
		path := "accounts::" + quoteKey(key)
		if err := checkName(key); err != nil {
			add(path, "account key: %v", err)
		}
		errs = append(errs, acct.validate(path)...)
		if isAPI(acct.readVia()) {
			// The APIs are polled, like POP3.
			if d := acct.Detection; d == detectionIdle || d == detectionPrecise || d == "" && (cfg.Detection == detectionIdle || cfg.Detection == detectionPrecise) {
				add(path+"::detection", "%s is not available over %s, which is polled (use auto or poll)", cmp.Or(d, cfg.Detection), acct.readVia())
			}
		}
		if acct.readVia() != retrievalPOP3 {
			continue
		}
		// POP3 has one maildrop and no push: probes can only be deleted
		// or kept, and arrivals are only ever seen by polling.
		if cfg.Cleanup.Mode == cleanupMove {
			add(path+"::retrieval", "pop3 has no folders to move probes to (cleanup::mode is move)")
		}
		detection := acct.Detection
		if detection == "" {
			detection = cfg.Detection
		}
		if detection == detectionIdle || detection == detectionPrecise {
			add(path+"::detection", "%s is not available over pop3, which is polled (use auto or poll)", detection)
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
		path := fmt.Sprintf("roundtrip[%d]", i)
		name := rt.targetName()
		if name != "" {
			path = fmt.Sprintf("roundtrip[%d] (%s)", i, quoteKey(name))
		}
		switch {
		case rt.Account == "":
			add(path+"::account", "missing: name the account to probe")
		case !cfg.hasAccount(rt.Account):
			add(path+"::account", "unknown account %q (configured: %s)", rt.Account, cfg.accountList())
		}
		if err := checkName(rt.Name); err != nil {
			add(path+"::name", "%v", err)
		}
		if name != "" {
			claim(path, "roundtrip/"+name)
		}
	}
	for i, dir := range cfg.Transit.Directions {
		path := fmt.Sprintf("transit::directions[%d] (%s)", i, quoteKey(dir))
		sender, receiver, ok := strings.Cut(dir, ":")
		if !ok || sender == "" || receiver == "" || strings.Contains(receiver, ":") {
			add(path, "must be sender:receiver, e.g. gmail:o365")
			continue
		}
		if sender == receiver {
			add(path, "sender and receiver are the same account: use a roundtrip target")
		}
		for _, k := range []string{sender, receiver} {
			if !cfg.hasAccount(k) {
				add(path, "unknown account %q (configured: %s)", k, cfg.accountList())
			}
		}
		claim(path, "transit/"+dir)
	}
	seen := map[string]bool{}
	for i, k := range cfg.Transit.Mesh {
		path := fmt.Sprintf("transit::mesh[%d]", i)
		if !cfg.hasAccount(k) {
			add(path, "unknown account %q (configured: %s)", k, cfg.accountList())
		}
		if seen[k] {
			add(path, "account %q listed twice", k)
		}
		if strings.Contains(k, ":") {
			add(path, "account key %q contains ':', which separates sender and receiver in a direction's name", k)
		}
		seen[k] = true
	}
	if len(cfg.Transit.Mesh) == 1 {
		add("transit::mesh", "needs at least two accounts")
	}
	if n := cfg.targetCount(); n > maxTargets {
		if len(cfg.Transit.Mesh) > 0 {
			add("transit::mesh", "%d targets in all (a mesh of %d accounts is %d directions): at most %d are allowed; split them over several receivers or list the directions you need", n, len(cfg.Transit.Mesh), meshSize(len(cfg.Transit.Mesh)), maxTargets)
		} else {
			add("roundtrip", "%d targets in all: at most %d are allowed; split them over several receivers", n, maxTargets)
		}
	}
	errs = append(errs, cfg.validateTranscript()...)
	errs = append(errs, cfg.Shard.validate()...)
	return errors.Join(errs...)
}

func (a AccountConfig) validate(path string) []error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s::%s: %s", path, field, fmt.Sprintf(format, args...)))
	}
	switch {
	case strings.TrimSpace(a.Address) == "":
		add("address", "missing")
	default:
		if err := checkAddress(a.Address); err != nil {
			add("address", "%v", err)
		}
	}
	for i, d := range a.Domains {
		if d == "" || strings.ContainsAny(d, " \t\r\n@/:") {
			add(fmt.Sprintf("domains[%d]", i), "%q is not a domain name", d)
		}
	}
	for i, id := range a.AuthServIDs {
		if strings.ContainsAny(id, " \t\r\n;") {
			add(fmt.Sprintf("authserv_ids[%d]", i), "%q is not an authserv-id", id)
		}
	}
	if err := checkName(a.Username); err != nil {
		add("username", "%v", err)
	}
	// Never quoted: the password must not appear in an error.
	if strings.ContainsAny(string(a.Password), "\x00\r\n") {
		add("password", "contains a NUL, CR or LF, which cannot be sent in an SMTP, IMAP or POP3 login")
	}
	switch {
	case a.OAuth != nil:
		if a.Password != "" {
			add("password", "set either password or oauth, not both")
		}
		errs = append(errs, a.OAuth.validate(path+"::oauth")...)
	case a.Password == "":
		add("password", "missing (use ${env:VAR} or ${file:path} to keep it out of the file, or configure oauth)")
	}
	if err := validateDetection(a.Detection, true); err != nil {
		add("detection", "%v", err)
	}
	if a.MaxSessions < 0 || a.MaxSessions > maxMaxSessions {
		add("max_sessions", "%d: must be between 1 and %d (unset: %d)", a.MaxSessions, maxMaxSessions, defaultMaxSessions)
	}
	if !isAPI(a.sendVia()) {
		errs = append(errs, a.SMTP.validate(path+"::smtp")...)
	}
	errs = append(errs, a.validateTransport(path)...)
	switch a.readVia() {
	case transportGraph, transportGmailAPI:
		// Read over the API: no IMAP or POP3 endpoint to check.
	case "", retrievalIMAP:
		errs = append(errs, a.IMAP.validate(path+"::imap")...)
		if a.POP3.Endpoint != "" {
			add("pop3", "configured but retrieval is imap: set retrieval: pop3 to use it")
		}
	case retrievalPOP3:
		errs = append(errs, a.POP3.validate(path+"::pop3")...)
		if a.IMAP.Endpoint != "" {
			add("imap", "configured but retrieval is pop3")
		}
	default:
		add("retrieval", "%q is not one of imap, pop3", a.Retrieval)
	}
	if err := checkName(a.IMAP.Mailbox); err != nil {
		add("imap::mailbox", "%v", err)
	}
	if a.IMAP.GmailTabs {
		switch a.readVia() {
		case retrievalPOP3:
			add("imap::gmail_tabs", "pop3 sees the maildrop only: placement is inbox or missing there")
		case transportGraph:
			add("imap::gmail_tabs", "Gmail's tabs are read over IMAP or the Gmail API, not over graph")
		case transportGmailAPI:
			add("imap::gmail_tabs", "not used over gmail_api, which reports the tab itself (its CATEGORY_* label)")
		}
	}
	if jf := a.IMAP.JunkFolders; jf != nil {
		switch a.readVia() {
		case retrievalPOP3:
			add("imap::junk_folders", "pop3 sees the maildrop only: placement is inbox or missing there")
		case transportGraph, transportGmailAPI:
			add("imap::junk_folders", "not used over %s, which watches its junk folder (spam label) itself", a.readVia())
		}
		if len(*jf) > maxJunkFolders {
			add("imap::junk_folders", "%d folders, at most %d", len(*jf), maxJunkFolders)
		}
		mailbox := a.IMAP.Mailbox
		if mailbox == "" {
			mailbox = defaultMbox
		}
		seen := map[string]bool{}
		for i, f := range *jf {
			switch {
			case strings.TrimSpace(f) == "":
				add(fmt.Sprintf("imap::junk_folders[%d]", i), "empty folder name")
			case checkName(f) != nil:
				add(fmt.Sprintf("imap::junk_folders[%d]", i), "%v", checkName(f))
			case f == mailbox || strings.EqualFold(f, defaultMbox) && strings.EqualFold(mailbox, defaultMbox):
				add(fmt.Sprintf("imap::junk_folders[%d]", i), "%q is the mailbox the probes are read from", f)
			case seen[f]:
				add(fmt.Sprintf("imap::junk_folders[%d]", i), "%q listed twice", f)
			}
			seen[f] = true
		}
	}
	return errs
}

func (e EndpointConfig) validate(path string) []error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s::%s: %s", path, field, fmt.Sprintf(format, args...)))
	}
	if _, err := parseSecurity(e.Security); err != nil {
		add("security", "%v", err)
	}
	if strings.TrimSpace(e.Endpoint) == "" {
		add("endpoint", "missing (host:port)")
	} else if err := checkEndpoint(e.Endpoint); err != nil {
		add("endpoint", "%v", err)
	}
	if e.TLS.Insecure {
		add("tls::insecure", "not used here: set security: none to connect without TLS")
	}
	// configtls's own Validate is not called here: the collector's
	// confmap.Validate walks into the tls block and calls it already (on the
	// block and on its squashed Config), so calling it again printed every
	// TLS error once more. What configtls checks only when the probe first
	// dials, that the files exist, is checked here, at startup.
	for _, f := range []struct{ name, path string }{
		{"ca_file", e.TLS.CAFile}, {"cert_file", e.TLS.CertFile}, {"key_file", e.TLS.KeyFile},
	} {
		if f.path == "" {
			continue
		}
		if fi, err := os.Stat(f.path); err != nil {
			add("tls::"+f.name, "%v", err)
		} else if fi.IsDir() {
			add("tls::"+f.name, "%q is a directory", f.path)
		}
	}
	return errs
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
