package emailqosreceiver // import "github.com/emailqos/emailqosreceiver"

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/collector/config/configopaque"
	"go.opentelemetry.io/collector/config/configtls"
	"go.opentelemetry.io/collector/confmap"
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
	// DSN asks the sending server for delivery status notifications
	// (RFC 3461: RET=HDRS, ENVID=<probe token>, NOTIFY=FAILURE,DELAY) and
	// watches the sending account's mailbox, when it has one, for notices
	// about the probe during the delivery wait: a failure notice ends the
	// probe at once as bounced. On by default; off sends no DSN parameters
	// and never reads the sender's mailbox for notices.
	DSN bool `mapstructure:"dsn"`
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
	// Transport chooses Microsoft Graph or the Gmail API instead of SMTP
	// and/or IMAP/POP3 (config_api.go).
	Transport TransportConfig `mapstructure:"transport"`
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
	// MaxSessions caps the IMAP (or POP3) sessions the receiver holds on
	// this account's mailbox at once, whatever the number of probes reading
	// it; more probes wait for a session (default 8, below the caps of
	// Dovecot, Gmail and Yahoo; iCloud needs 4 or less).
	MaxSessions int `mapstructure:"max_sessions"`
	// ShareSession watches this mailbox (IMAP) with one session for all
	// the probes reading it at the same time, and for the bounce watches
	// of the transits it sends, instead of one session (and login) each.
	// Unset: true; false keeps one session per probe.
	ShareSession *bool `mapstructure:"share_session"`
}

// defaultMaxSessions is accounts::<key>::max_sessions unset: below Dovecot's
// mail_max_userip_connections (10), Gmail's 15 and Yahoo's reported 10,
// leaving room for the user's own clients.
const defaultMaxSessions = 8

// maxMaxSessions bounds accounts::<key>::max_sessions.
const maxMaxSessions = 1000

// EndpointConfig is a server endpoint with its connection security.
type EndpointConfig struct {
	// Endpoint is host:port. Without a port, the port follows from security
	// (SMTP: 465 tls, 587 starttls, 25 none; IMAP: 993 tls, 143 otherwise).
	Endpoint string `mapstructure:"endpoint"`
	// Security is none, starttls or tls (alias ssl). When empty it follows
	// from the port: 465/993/995 mean tls, anything else starttls. Sending
	// credentials without encryption needs an explicit `none`.
	Security string    `mapstructure:"security"`
	TLS      TLSConfig `mapstructure:"tls"`
}

// TLSConfig is configtls's client block, embedded under an unexported name
// so that the collector's validation walk calls its Validate once: walking
// configtls.ClientConfig itself calls Config.Validate twice, once promoted
// on the block ("tls") and once on its exported squashed Config
// ("tls::config"), so every TLS error was printed twice (confmap v1.65.0
// validation.go). Its fields are promoted: tls.CAFile, tls.LoadTLSConfig...
type TLSConfig struct {
	tlsClientConfig `mapstructure:",squash"`
}

type tlsClientConfig = configtls.ClientConfig

// Marshal writes the block's fields: confmap's encoder skips the
// unexported embedded field, which would print an empty tls block.
func (t TLSConfig) Marshal(conf *confmap.Conf) error {
	return conf.Marshal(t.tlsClientConfig)
}

// IMAPConfig is the IMAP endpoint and the mailbox the probes are read from.
// It repeats EndpointConfig's fields rather than embedding it: the
// validation walk would call the embedded EndpointConfig's Validate a
// second time, under a path segment ("endpointconfig") no YAML has.
type IMAPConfig struct {
	Endpoint string    `mapstructure:"endpoint"`
	Security string    `mapstructure:"security"`
	TLS      TLSConfig `mapstructure:"tls"`
	// Mailbox the probes are delivered to; default INBOX.
	Mailbox string `mapstructure:"mailbox"`
	// JunkFolders are the folders a provider files spam into, watched
	// during the delivery wait so that a probe found there counts as
	// delivered with placement junk instead of lost. Unset: found at login
	// (the folder marked \Junk, else one named Junk, Spam, ...); an empty
	// list turns placement checks off.
	JunkFolders *[]string `mapstructure:"junk_folders"`
	// GmailTabs reports the Gmail inbox tab of a probe found in INBOX
	// (promotions, social, updates, forums) as its placement, looked up on
	// a second, short session (one more login per probe) when the server
	// has Gmail's IMAP extensions. Default false: see README, Placement.
	GmailTabs bool `mapstructure:"gmail_tabs"`
}

// endpoint is the IMAP endpoint as an EndpointConfig.
func (c IMAPConfig) endpoint() EndpointConfig {
	return EndpointConfig{Endpoint: c.Endpoint, Security: c.Security, TLS: c.TLS}
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

// RFC 5321 4.5.3.1: size limits of a local part, a domain and a path (the
// address between its angle brackets).
const (
	maxLocalPart = 64
	maxDomain    = 255
	maxPath      = 256
)

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
