package emailqosreceiver // import "github.com/emailqos/emailqosreceiver"

import (
	"errors"
	"fmt"
	"net"
	"net/mail"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"go.opentelemetry.io/collector/config/configopaque"
	"go.opentelemetry.io/collector/config/configtls"
	"go.opentelemetry.io/collector/scraper/scraperhelper"

	"github.com/emailqos/emailqosreceiver/internal/imapwatch"
	"github.com/emailqos/emailqosreceiver/internal/metadata"
	"github.com/emailqos/emailqosreceiver/internal/probe"
	"github.com/emailqos/emailqosreceiver/internal/transport"
)

// Security values accepted in `security`. LogicMonitor's spellings map onto
// them as: blank = none, SSL = tls (implicit), TLS = starttls. Because
// LogicMonitor's "TLS" means STARTTLS while ours means implicit TLS, values are
// case-sensitive: an upper-case LogicMonitor spelling is rejected with a hint
// instead of silently picking the other mode.
// The values are the engine's (internal/transport); only the alias is ours.
const (
	securityNone     = string(transport.None)
	securityStartTLS = string(transport.STARTTLS)
	securityTLS      = string(transport.TLS)
	securitySSL      = "ssl" // alias of tls
)

// Detection methods for the arrival of a probe, as the engine names them.
const (
	detectionAuto    = string(imapwatch.MethodAuto)
	detectionIdle    = string(imapwatch.MethodIdle)
	detectionPoll    = string(imapwatch.MethodPoll)
	detectionPrecise = string(imapwatch.MethodPrecise)
)

// Retrieval protocols, as the engine names them.
const (
	retrievalIMAP = probe.RetrievalIMAP
	retrievalPOP3 = probe.RetrievalPOP3
)

// Cleanup policies for a probe message once it has been measured.
const (
	cleanupDelete = string(probe.CleanupDelete)
	cleanupMove   = string(probe.CleanupMove)
	cleanupKeep   = string(probe.CleanupKeep)
)

const (
	defaultCollectionInterval = 5 * time.Minute
	defaultDeliveryTimeout    = 2 * time.Minute
	defaultPollInterval       = 10 * time.Second
	defaultPreciseInterval    = 10 * time.Millisecond
	defaultOrphanAge          = 24 * time.Hour
	defaultSweepInterval      = time.Hour
	// setupBudget is the time a probe may spend on everything but the
	// delivery wait (connects, logins, submission, cleanup) when `timeout`
	// is not set.
	setupBudget = 30 * time.Second
	// maxDuration bounds delivery_timeout, poll_interval and timeout.
	maxDuration = 24 * time.Hour
	defaultMbox = "INBOX"
)

// Config is the configuration of the emailqos receiver.
type Config struct {
	scraperhelper.ControllerConfig `mapstructure:",squash"`
	metadata.MetricsBuilderConfig  `mapstructure:",squash"`

	// DeliveryTimeout is the maximum allowed delivery time (LogicMonitor's
	// "maximum allowed round trip"): a probe not visible this long after the
	// sending server accepted it is reported as not found (error code 4).
	DeliveryTimeout time.Duration `mapstructure:"delivery_timeout"`
	// PollInterval is the longest gap between two mailbox polls when the
	// server has no IDLE or polling was chosen.
	PollInterval time.Duration `mapstructure:"poll_interval"`
	// Detection chooses how the arrival is seen: auto, idle, poll or precise.
	Detection string `mapstructure:"detection"`
	// PreciseInterval is the fixed poll interval of the precise detection.
	PreciseInterval time.Duration `mapstructure:"precise_interval"`
	// StartSpread spreads the start of a collection's probes evenly over
	// this duration, each target at a fixed offset, so that hundreds of
	// probes do not contend for the CPU at the same instant (which would
	// blur what they measure). 0 starts them together.
	StartSpread time.Duration `mapstructure:"start_spread"`
	// RetryDeferred resubmits a probe the sending server deferred (SMTP
	// 4xx, e.g. greylisting), as a mail client would, for up to half of
	// delivery_timeout; the probe then reports the deferrals and the time
	// from the first one until the message arrived. Off: a deferral fails
	// the probe (code 2, deferred), as LogicMonitor's probe does.
	RetryDeferred bool `mapstructure:"retry_deferred"`
	// Cleanup is what happens to a measured probe: delete, move or keep.
	Cleanup CleanupConfig `mapstructure:"cleanup"`
	// ProbeSecret keys the HMAC that proves a message is this receiver's own
	// probe. When empty, a key is derived from each receiving account's
	// password, so only someone who knows it can forge a probe.
	ProbeSecret configopaque.String `mapstructure:"probe_secret"`

	Accounts  map[string]AccountConfig `mapstructure:"accounts"`
	Roundtrip []RoundtripConfig        `mapstructure:"roundtrip"`
	Transit   TransitConfig            `mapstructure:"transit"`

	// Transcript keeps protocol transcripts of chosen targets.
	Transcript TranscriptConfig `mapstructure:"transcript"`

	// Shard gives this replica of a fleet its share of the targets.
	Shard ShardConfig `mapstructure:"shard"`

	// prevent unkeyed literal initialization
	_ struct{}
}

// CleanupConfig says what to do with a probe once it was measured.
type CleanupConfig struct {
	// Mode is delete (default), move (to Folder) or keep.
	Mode string `mapstructure:"mode"`
	// Folder is the destination of mode move.
	Folder string `mapstructure:"folder"`
	// OrphanAge is the age from which a probe of this receiver still in a
	// mailbox is an orphan (of an earlier run or collector) to clean up; a
	// probe that missed delivery_timeout is looked for as late until then.
	OrphanAge time.Duration `mapstructure:"orphan_age"`
	// SweepInterval is the least time between two orphan sweeps of one
	// mailbox; the first run after start sweeps.
	SweepInterval time.Duration `mapstructure:"sweep_interval"`
}

// AccountConfig is one mail account, keyed by its provider name (gmail,
// o365, ...) in Config.Accounts.
type AccountConfig struct {
	// Address is the account's email address: the probe's From for the
	// sending side and its To for the receiving side.
	Address string `mapstructure:"address"`
	// Username for SMTP AUTH and IMAP LOGIN; defaults to Address.
	Username string `mapstructure:"username"`
	// Password, redacted whenever the configuration is printed. Not used
	// (and not required) when oauth is set.
	Password configopaque.String `mapstructure:"password"`
	// OAuth signs in with OAuth2 bearer tokens instead of the password.
	OAuth *OAuthConfig   `mapstructure:"oauth"`
	SMTP  EndpointConfig `mapstructure:"smtp"`
	// Retrieval is how probes are read back: imap (default) or pop3.
	Retrieval string         `mapstructure:"retrieval"`
	IMAP      IMAPConfig     `mapstructure:"imap"`
	POP3      EndpointConfig `mapstructure:"pop3"`
	// Detection overrides the receiver-wide detection for probes read from
	// this account's mailbox.
	Detection string `mapstructure:"detection"`
	// AuthServIDs are the authserv-ids of this account's receiving servers
	// whose Authentication-Results are believed ("" names the fields
	// Microsoft 365 writes without one). When empty, the topmost field's id
	// is trusted: the field the delivering server added last.
	AuthServIDs []string `mapstructure:"authserv_ids"`
	// Domains are more domains of this account's provider (its servers'
	// names end in them), to tell its hops in a Received chain apart. The
	// address's domain and the endpoints' registrable domains are always
	// included.
	Domains []string `mapstructure:"domains"`
}

// EndpointConfig is a server endpoint with its connection security.
type EndpointConfig struct {
	// Endpoint is host:port. Without a port, the port follows from security
	// (SMTP: 465 tls, 587 starttls, 25 none; IMAP: 993 tls, 143 otherwise).
	Endpoint string `mapstructure:"endpoint"`
	// Security is none, starttls or tls (alias ssl). When empty it follows
	// from the port: 465/993/995 mean tls, anything else starttls. Sending
	// credentials without encryption needs an explicit `none`.
	Security string                 `mapstructure:"security"`
	TLS      configtls.ClientConfig `mapstructure:"tls"`
}

// IMAPConfig is the IMAP endpoint and the mailbox the probes are read from.
type IMAPConfig struct {
	EndpointConfig `mapstructure:",squash"`
	// Mailbox the probes are delivered to; default INBOX.
	Mailbox string `mapstructure:"mailbox"`
	// JunkFolders are the folders a provider files spam into, watched
	// during the delivery wait so that a probe found there counts as
	// delivered with placement junk instead of lost. Unset: found at login
	// (the folder marked \Junk, else one named Junk, Spam, ...); an empty
	// list turns placement checks off.
	JunkFolders *[]string `mapstructure:"junk_folders"`
}

// maxJunkFolders bounds imap::junk_folders: each costs a STATUS per poll.
const maxJunkFolders = 8

// Target counts: a mesh of n accounts is n×(n−1) directions, so a long list
// grows fast (1,000 accounts are 999,000 probes per collection). Above
// maxTargets the configuration is refused; above warnTargets the receiver
// warns at start with the number.
const (
	maxTargets  = 10000
	warnTargets = 1000
)

// RoundtripConfig is a round-trip target: the account sends to itself.
type RoundtripConfig struct {
	// Account is the key of the account in accounts.
	Account string `mapstructure:"account"`
	// Name of the target; defaults to the account key.
	Name string `mapstructure:"name"`
}

// TransitConfig lists the transit directions to probe.
type TransitConfig struct {
	// Directions in LogicMonitor's `sender:receiver` form, e.g. gmail:o365.
	Directions []string `mapstructure:"directions"`
	// Mesh expands a list of account keys into every direction between them.
	Mesh []string `mapstructure:"mesh"`
}

// TranscriptConfig chooses the targets whose SMTP, IMAP and POP3
// conversations are recorded (redacted) and logged, the counterpart of
// LogicMonitor's protocol debug logs.
type TranscriptConfig struct {
	// Targets are target names (a round-trip name or a transit direction);
	// "*" is every target.
	Targets []string `mapstructure:"targets"`
	// Lines is how many of the last lines a failed probe's log entry
	// carries.
	Lines int `mapstructure:"lines"`
}

const (
	defaultTranscriptLines = 30
	maxTranscriptLines     = 10000
	transcriptAll          = "*"
)

// enabled tells whether the target named name keeps a transcript.
func (tc TranscriptConfig) enabled(name string) bool {
	for _, t := range tc.Targets {
		if t == transcriptAll || t == name {
			return true
		}
	}
	return false
}

// targetNames is the set of every configured target's name.
func (cfg *Config) targetNames() map[string]bool {
	names := map[string]bool{}
	for _, t := range cfg.targets() {
		names[t.name] = true
	}
	return names
}

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
				if a := cfg.Accounts[key]; a.Retrieval != retrievalPOP3 && sameMailbox(cfg.Cleanup.Folder, a.mailbox()) {
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
		if acct.Retrieval != retrievalPOP3 {
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

// probeTimeout is the bound of one whole probe: timeout, or the delivery
// timeout plus the setup budget when timeout is not set.
func (cfg *Config) probeTimeout() time.Duration {
	if cfg.Timeout > 0 {
		return cfg.Timeout
	}
	return cfg.DeliveryTimeout + setupBudget
}

// targetCount is the number of targets the configuration runs, counted
// without expanding the mesh: round trips, the directions the mesh does not
// already cover, and every direction of the mesh.
func (cfg *Config) targetCount() int {
	inMesh := make(map[string]bool, len(cfg.Transit.Mesh))
	for _, k := range cfg.Transit.Mesh {
		inMesh[k] = true
	}
	n := len(cfg.Roundtrip) + meshSize(len(inMesh))
	seen := map[string]bool{}
	for _, dir := range cfg.Transit.Directions {
		sender, receiver, _ := strings.Cut(dir, ":")
		if seen[dir] || sender != receiver && inMesh[sender] && inMesh[receiver] {
			continue
		}
		seen[dir] = true
		n++
	}
	return n
}

// meshSize is the number of directions between n accounts.
func meshSize(n int) int { return n * (n - 1) }

func (cfg *Config) hasAccount(key string) bool {
	_, ok := cfg.Accounts[key]
	return ok
}

func (cfg *Config) accountList() string {
	if len(cfg.Accounts) == 0 {
		return "none"
	}
	keys := sortedKeys(cfg.Accounts)
	more := ""
	if len(keys) > 20 {
		keys, more = keys[:20], fmt.Sprintf(" and %d more", len(keys)-20)
	}
	for i, k := range keys {
		keys[i] = quoteKey(k)
	}
	return strings.Join(keys, ", ") + more
}

func (rt RoundtripConfig) targetName() string {
	if rt.Name != "" {
		return rt.Name
	}
	return rt.Account
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
	for _, err := range a.SMTP.validate(path + "::smtp") {
		errs = append(errs, err)
	}
	switch a.Retrieval {
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
	if jf := a.IMAP.JunkFolders; jf != nil {
		if a.Retrieval == retrievalPOP3 {
			add("imap::junk_folders", "pop3 sees the maildrop only: placement is inbox or missing there")
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

// parseSecurity normalises a security value. The empty string is "not set".
func parseSecurity(s string) (string, error) {
	switch s {
	case "", securityNone, securityStartTLS, securityTLS:
		return s, nil
	case securitySSL:
		return securityTLS, nil
	}
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "tls":
		return "", fmt.Errorf("%q is ambiguous: LogicMonitor's TLS means STARTTLS here (starttls); implicit TLS is tls (or ssl); values are lower case", s)
	case "ssl":
		return "", fmt.Errorf("%q: write ssl or tls (implicit TLS); values are lower case", s)
	case "starttls", "none":
		return "", fmt.Errorf("%q: values are lower case (none, starttls, tls)", s)
	case "blank", "plain", "plaintext", "clear":
		return "", fmt.Errorf("%q: write none for an unencrypted connection", s)
	}
	return "", fmt.Errorf("%q is not one of none, starttls, tls (alias ssl)", s)
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

// RFC 5321 4.5.3.1: size limits of a local part, a domain and a path (the
// address between its angle brackets).
const (
	maxLocalPart = 64
	maxDomain    = 255
	maxPath      = 256
)

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

// quoted is s quoted for an error message, cut after 80 octets so that a
// huge value does not make a huge message.
func quoted(s string) string {
	const limit = 80
	if len(s) <= limit {
		return strconv.Quote(s)
	}
	return fmt.Sprintf("%s… (%d octets)", strconv.Quote(s[:limit]), len(s))
}

// quoteKey is an account key as it appears in a field's path: quoted when
// it holds characters that would garble the message.
func quoteKey(key string) string {
	if checkName(key) != nil {
		return strconv.Quote(key)
	}
	return key
}

// mailbox is the mailbox an account's probes are read from.
func (a AccountConfig) mailbox() string {
	if a.IMAP.Mailbox == "" {
		return defaultMbox
	}
	return a.IMAP.Mailbox
}

// sameMailbox compares two mailbox names: exactly, except INBOX, which is
// case-insensitive (RFC 3501 5.1).
func sameMailbox(a, b string) bool {
	return a == b || strings.EqualFold(a, defaultMbox) && strings.EqualFold(b, defaultMbox)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

var (
	smtpPorts = map[string]int{securityNone: 25, securityStartTLS: 587, securityTLS: 465}
	imapPorts = map[string]int{securityNone: 143, securityStartTLS: 143, securityTLS: 993}
	pop3Ports = map[string]int{securityNone: 110, securityStartTLS: 110, securityTLS: 995}
)
