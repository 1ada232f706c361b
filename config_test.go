package emailqosreceiver

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/provider/envprovider"
	"go.opentelemetry.io/collector/confmap/provider/fileprovider"
	"go.opentelemetry.io/collector/receiver/receivertest"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/emailqos/emailqosreceiver/internal/metadata"
	"github.com/emailqos/emailqosreceiver/internal/probe"
	"github.com/emailqos/emailqosreceiver/internal/transport"
)

// loadConfig resolves a testdata file with the file and env providers, as
// the collector does, and unmarshals and validates the receiver's section.
func loadConfig(t *testing.T, file string) (*Config, error) {
	t.Helper()
	resolver, err := confmap.NewResolver(confmap.ResolverSettings{
		URIs:              []string{"file:" + filepath.Join("testdata", file)},
		ProviderFactories: []confmap.ProviderFactory{fileprovider.NewFactory(), envprovider.NewFactory()},
	})
	require.NoError(t, err)
	cm, err := resolver.Resolve(context.Background())
	require.NoError(t, err)
	sub, err := cm.Sub("receivers::emailqos")
	require.NoError(t, err)
	cfg := NewFactory().CreateDefaultConfig().(*Config)
	if err := sub.Unmarshal(cfg); err != nil {
		return nil, err
	}
	return cfg, confmap.Validate(cfg)
}

func TestLoadConfigExample(t *testing.T) {
	t.Setenv("EMAILQOS_TEST_GMAIL_PASSWORD", "from-the-environment")
	cfg, err := loadConfig(t, "config.yaml")
	require.NoError(t, err)

	assert.Equal(t, 5*time.Minute, cfg.CollectionInterval)
	assert.Equal(t, 10*time.Second, cfg.InitialDelay)
	assert.Equal(t, 3*time.Minute, cfg.Timeout)
	assert.Equal(t, 2*time.Minute, cfg.DeliveryTimeout)
	assert.Equal(t, 10*time.Second, cfg.PollInterval)
	require.Len(t, cfg.Accounts, 3)

	gmail := cfg.Accounts["gmail"]
	assert.Equal(t, "probe.sender@gmail.example", gmail.Address)
	assert.Equal(t, "from-the-environment", string(gmail.Password), "${env:VAR} is resolved")
	assert.Equal(t, "tls", gmail.SMTP.Security)
	assert.Equal(t, "ssl", gmail.IMAP.Security)
	assert.Equal(t, "smtp.o365.example", cfg.Accounts["o365"].SMTP.TLS.ServerName)
	assert.Equal(t, "Probes", cfg.Accounts["selfhosted"].IMAP.Mailbox)
	assert.Equal(t, []string{"gmail:o365", "o365:gmail"}, cfg.Transit.Directions)

	targets, err := buildTargets(context.Background(), cfg, nil)
	require.NoError(t, err)
	var names []string
	for _, tg := range targets {
		names = append(names, string(tg.Kind)+"/"+tg.Name)
	}
	assert.Equal(t, []string{"roundtrip/gmail", "roundtrip/selfhosted-rtt", "transit/gmail:o365", "transit/o365:gmail"}, names)

	g := targets[0].Sender
	assert.Equal(t, "probe.sender@gmail.example", g.Username)
	assert.Equal(t, transport.Endpoint{Address: "imap.gmail.example:993", Security: transport.TLS}, stripTLS(g.IMAP), "ssl is an alias of implicit tls")
	o := targets[2].Receiver
	assert.Equal(t, "imap.o365.example:143", o.IMAP.Address, "a bare host gets the port of its security")
	assert.Equal(t, transport.STARTTLS, o.IMAP.Security, "an unset security on a non-TLS port is starttls, never none")
	assert.Equal(t, "poll", string(o.Detection))
	assert.Equal(t, "INBOX", o.Mailbox)
	assert.Equal(t, probe.Transit, targets[2].Kind)
	assert.Equal(t, "gmail:o365", targets[2].Direction)
	assert.Equal(t, 3*time.Minute, targets[0].Timeout)
	assert.Equal(t, 48*time.Hour, cfg.Cleanup.OrphanAge)
	assert.Equal(t, 30*time.Minute, cfg.Cleanup.SweepInterval)
	for _, tg := range targets {
		assert.Equal(t, 48*time.Hour, tg.OrphanAge, tg.Name)
		assert.Equal(t, 30*time.Minute, tg.Receiver.SweepInterval, tg.Name)
	}
	assert.Same(t, targets[0].Receiver, targets[3].Receiver, "targets reading one mailbox share its sweep state")
	assert.NotEqual(t, targets[0].Receiver.MACKey, o.MACKey, "each mailbox has its own probe key")
}

func stripTLS(ep transport.Endpoint) transport.Endpoint {
	ep.TLSConfig = nil
	return ep
}

func TestEnvDefaultApplies(t *testing.T) {
	cfg, err := loadConfig(t, "config.yaml")
	require.NoError(t, err)
	assert.Equal(t, "gmail-app-password", string(cfg.Accounts["gmail"].Password), "the ${env:VAR:-default} fallback applies when the variable is unset")
}

func TestPasswordIsRedacted(t *testing.T) {
	cfg, err := loadConfig(t, "config.yaml")
	require.NoError(t, err)
	conf := confmap.New()
	require.NoError(t, conf.Marshal(cfg))
	out := strings.Join(func() []string {
		var s []string
		for k, v := range conf.ToStringMap() {
			s = append(s, k+"="+toString(v))
		}
		return s
	}(), "\n")
	assert.NotContains(t, out, "o365-secret")
	assert.NotContains(t, out, "selfhosted-secret")
	assert.Contains(t, out, "[REDACTED]")
}

func toString(v any) string {
	switch x := v.(type) {
	case map[string]any:
		var parts []string
		for k, e := range x {
			parts = append(parts, k+":"+toString(e))
		}
		return "{" + strings.Join(parts, ",") + "}"
	case []any:
		var parts []string
		for _, e := range x {
			parts = append(parts, toString(e))
		}
		return "[" + strings.Join(parts, ",") + "]"
	case string:
		return x
	default:
		return ""
	}
}

func TestDefaultEndpointResolution(t *testing.T) {
	tests := []struct {
		endpoint, security string
		ports              map[string]int
		wantAddr, wantSec  string
	}{
		{"smtp.example.com", "", smtpPorts, "smtp.example.com:587", "starttls"},
		{"smtp.example.com", "tls", smtpPorts, "smtp.example.com:465", "tls"},
		{"smtp.example.com", "none", smtpPorts, "smtp.example.com:25", "none"},
		{"smtp.example.com:465", "", smtpPorts, "smtp.example.com:465", "tls"},
		{"smtp.example.com:25", "", smtpPorts, "smtp.example.com:25", "starttls"},
		{"imap.example.com", "", imapPorts, "imap.example.com:143", "starttls"},
		{"imap.example.com:993", "", imapPorts, "imap.example.com:993", "tls"},
		{"imap.example.com", "ssl", imapPorts, "imap.example.com:993", "tls"},
		{"[::1]:1143", "none", imapPorts, "[::1]:1143", "none"},
	}
	for _, tt := range tests {
		addr, sec := EndpointConfig{Endpoint: tt.endpoint, Security: tt.security}.resolve(tt.ports)
		assert.Equal(t, tt.wantAddr, addr, tt.endpoint)
		assert.Equal(t, tt.wantSec, sec, tt.endpoint)
	}
}

// validConfig returns a minimal valid configuration to break in one place.
func validConfig() *Config {
	cfg := createDefaultConfig().(*Config)
	cfg.Accounts = map[string]AccountConfig{
		"gmail": {
			Address:  "a@gmail.example",
			Password: "pw",
			SMTP:     EndpointConfig{Endpoint: "smtp.gmail.example:465", Security: "tls"},
			IMAP:     IMAPConfig{Endpoint: "imap.gmail.example:993", Security: "tls"},
		},
		"o365": {
			Address:  "b@o365.example",
			Password: "pw",
			SMTP:     EndpointConfig{Endpoint: "smtp.o365.example:587", Security: "starttls"},
			IMAP:     IMAPConfig{Endpoint: "imap.o365.example:993"},
		},
	}
	cfg.Roundtrip = []RoundtripConfig{{Account: "gmail"}}
	return cfg
}

func TestValidateRejects(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Config)
		want   []string // every substring must appear in the error
	}{
		{"unknown account in roundtrip", func(c *Config) {
			c.Roundtrip = append(c.Roundtrip, RoundtripConfig{Name: "broken", Account: "nosuch"})
		}, []string{"roundtrip::1::account: unknown account \"nosuch\" for target broken (configured: gmail, o365)", "gmail, o365"}},
		{"roundtrip without account", func(c *Config) { c.Roundtrip = []RoundtripConfig{{}} }, []string{"roundtrip::0: account: missing"}},
		{"no targets", func(c *Config) { c.Roundtrip = nil }, []string{"roundtrip: no targets"}},
		{"duplicate target name", func(c *Config) {
			c.Roundtrip = []RoundtripConfig{{Account: "gmail"}, {Account: "o365", Name: "gmail"}}
		}, []string{`roundtrip::1: target name "roundtrip/gmail" is already used by roundtrip::0`}},
		{"missing address", func(c *Config) { setAcct(c, "gmail", func(a *AccountConfig) { a.Address = "" }) }, []string{"accounts::gmail: address: missing"}},
		{"bad address", func(c *Config) { setAcct(c, "gmail", func(a *AccountConfig) { a.Address = "not-an-address" }) }, []string{"accounts::gmail: address", "not an email address"}},
		{"missing password", func(c *Config) { setAcct(c, "o365", func(a *AccountConfig) { a.Password = "" }) }, []string{"accounts::o365: password: missing"}},
		{"missing smtp endpoint", func(c *Config) { setAcct(c, "gmail", func(a *AccountConfig) { a.SMTP.Endpoint = "" }) }, []string{"accounts::gmail: smtp::endpoint: missing"}},
		{"bad imap port", func(c *Config) {
			setAcct(c, "gmail", func(a *AccountConfig) { a.IMAP.Endpoint = "imap.example:99999" })
		}, []string{"accounts::gmail::imap: endpoint", "invalid port"}},
		{"endpoint with brackets only", func(c *Config) { setAcct(c, "gmail", func(a *AccountConfig) { a.SMTP.Endpoint = "[]" }) }, []string{"accounts::gmail::smtp: endpoint", "invalid host"}},
		{"endpoint with empty port", func(c *Config) { setAcct(c, "gmail", func(a *AccountConfig) { a.SMTP.Endpoint = "smtp.example:" }) }, []string{"accounts::gmail::smtp: endpoint", "empty port"}},
		{"endpoint with a newline", func(c *Config) { setAcct(c, "gmail", func(a *AccountConfig) { a.IMAP.Endpoint = "imap.example\n" }) }, []string{"accounts::gmail::imap: endpoint", "invalid host"}},
		{"absurd delivery timeout", func(c *Config) { c.DeliveryTimeout = 2562047 * time.Hour }, []string{"delivery_timeout", "longer than the maximum"}},
		{"negative start spread", func(c *Config) { c.StartSpread = -time.Second }, []string{"start_spread: must not be negative"}},
		{"start spread beyond half the interval", func(c *Config) {
			c.CollectionInterval, c.StartSpread = time.Minute, 31*time.Second
		}, []string{"start_spread: 31s is more than half of collection_interval 1m0s"}},
		{"endpoint with scheme", func(c *Config) { setAcct(c, "gmail", func(a *AccountConfig) { a.SMTP.Endpoint = "smtp://x" }) }, []string{"accounts::gmail::smtp: endpoint", "not host:port"}},
		{"bad security", func(c *Config) { setAcct(c, "gmail", func(a *AccountConfig) { a.SMTP.Security = "maybe" }) }, []string{"accounts::gmail::smtp: security", `"maybe" is not one of`}},
		{"seed spelling TLS is ambiguous", func(c *Config) { setAcct(c, "gmail", func(a *AccountConfig) { a.IMAP.Security = "TLS" }) }, []string{"accounts::gmail::imap: security", "ambiguous", "starttls"}},
		{"seed spelling SSL upper case", func(c *Config) { setAcct(c, "gmail", func(a *AccountConfig) { a.SMTP.Security = "SSL" }) }, []string{"accounts::gmail::smtp: security", "lower case"}},
		{"junk folder is the mailbox", func(c *Config) {
			setAcct(c, "gmail", func(a *AccountConfig) { a.IMAP.JunkFolders = &[]string{"Spam", "inbox"} })
		}, []string{"accounts::gmail::imap: junk_folders::1", "mailbox the probes are read from"}},
		{"junk folder empty or twice", func(c *Config) {
			setAcct(c, "gmail", func(a *AccountConfig) { a.IMAP.JunkFolders = &[]string{" ", "Junk", "Junk"} })
		}, []string{"imap: junk_folders::0: empty folder name", `; junk_folders::2: "Junk" listed twice`}},
		{"too many junk folders", func(c *Config) {
			setAcct(c, "gmail", func(a *AccountConfig) { a.IMAP.JunkFolders = &[]string{"1", "2", "3", "4", "5", "6", "7", "8", "9"} })
		}, []string{"imap: junk_folders: 9 folders, at most 8"}},
		{"blank spelled out", func(c *Config) { setAcct(c, "gmail", func(a *AccountConfig) { a.SMTP.Security = "blank" }) }, []string{"write none"}},
		{"tls insecure instead of none", func(c *Config) { setAcct(c, "gmail", func(a *AccountConfig) { a.SMTP.TLS.Insecure = true }) }, []string{"accounts::gmail::smtp: tls::insecure", "security: none"}},
		{"delivery timeout shorter than poll interval", func(c *Config) {
			c.DeliveryTimeout, c.PollInterval = 5*time.Second, 10*time.Second
		}, []string{"delivery_timeout", "shorter than poll_interval"}},
		{"timeout not above delivery timeout", func(c *Config) { c.Timeout = c.DeliveryTimeout }, []string{"timeout:", "longer than delivery_timeout"}},
		{"timeout shorter than poll interval", func(c *Config) {
			c.DeliveryTimeout, c.PollInterval, c.Timeout = 1*time.Second, 1*time.Second, 500*time.Millisecond
		}, []string{"timeout:", "shorter than poll_interval"}},
		{"zero poll interval", func(c *Config) { c.PollInterval = 0 }, []string{"poll_interval: must be positive"}},
		{"zero delivery timeout", func(c *Config) { c.DeliveryTimeout = 0 }, []string{"delivery_timeout: must be positive"}},
		{"bad detection", func(c *Config) { c.Detection = "psychic" }, []string{"detection", `"psychic"`}},
		{"bad account detection", func(c *Config) { setAcct(c, "o365", func(a *AccountConfig) { a.Detection = "IDLE" }) }, []string{"accounts::o365: detection"}},
		{"negative max_sessions", func(c *Config) { setAcct(c, "o365", func(a *AccountConfig) { a.MaxSessions = -1 }) }, []string{"accounts::o365: max_sessions: -1: must be between 1 and 1000"}},
		{"huge max_sessions", func(c *Config) { setAcct(c, "o365", func(a *AccountConfig) { a.MaxSessions = 5000 }) }, []string{"accounts::o365: max_sessions"}},
		{"bad cleanup mode", func(c *Config) { c.Cleanup.Mode = "shred" }, []string{"cleanup: mode"}},
		{"move without folder", func(c *Config) { c.Cleanup.Mode = "move" }, []string{"cleanup: folder: required"}},
		{"orphan age not above delivery timeout", func(c *Config) { c.Cleanup.OrphanAge = c.DeliveryTimeout }, []string{"cleanup::orphan_age", "longer than delivery_timeout"}},
		{"orphan age within a whole probe", func(c *Config) {
			c.Cleanup.OrphanAge, c.Timeout = 3*time.Minute, 4*time.Minute
		}, []string{"cleanup::orphan_age", "longer than a whole probe", "4m0s"}},
		{"zero sweep interval", func(c *Config) { c.Cleanup.SweepInterval = 0 }, []string{"cleanup: sweep_interval: must be positive"}},
		{"bad transit form", func(c *Config) { c.Transit.Directions = []string{"gmail-o365"} }, []string{`transit: directions::0: "gmail-o365" must be sender:receiver`}},
		{"transit unknown account", func(c *Config) { c.Transit.Directions = []string{"gmail:yahoo"} }, []string{`transit::directions::0: "gmail:yahoo": unknown account "yahoo"`}},
		{"transit to itself", func(c *Config) { c.Transit.Directions = []string{"gmail:gmail"} }, []string{"use a roundtrip target"}},
		{"mesh of one", func(c *Config) { c.Transit.Mesh = []string{"gmail"} }, []string{"transit: mesh: needs at least two"}},
		{"mesh unknown account", func(c *Config) { c.Transit.Mesh = []string{"gmail", "nosuch"} }, []string{`transit::mesh::1: unknown account "nosuch"`}},
		{"collection interval", func(c *Config) { c.CollectionInterval = 0 }, []string{"collection_interval"}},
		{"oauth without client id", func(c *Config) {
			setAcct(c, "o365", func(a *AccountConfig) {
				a.Password = ""
				a.OAuth = &OAuthConfig{Provider: "microsoft", TenantID: "t", ClientSecret: "s"}
			})
		}, []string{"accounts::o365::oauth: client_id"}},
		{"oauth and password", func(c *Config) {
			setAcct(c, "o365", func(a *AccountConfig) {
				a.OAuth = &OAuthConfig{Provider: "microsoft", TenantID: "t", ClientID: "c", ClientSecret: "s"}
			})
		}, []string{"accounts::o365: password: set either password or oauth"}},
		{"oauth bad mechanism", func(c *Config) {
			setAcct(c, "o365", func(a *AccountConfig) {
				a.Password = ""
				a.OAuth = &OAuthConfig{Provider: "microsoft", TenantID: "t", ClientID: "c", ClientSecret: "s", Mechanism: "plain"}
			})
		}, []string{"accounts::o365::oauth: mechanism"}},
		{"oauth unknown provider", func(c *Config) {
			setAcct(c, "o365", func(a *AccountConfig) { a.Password = ""; a.OAuth = &OAuthConfig{Provider: "yahoo"} })
		}, []string{"accounts::o365::oauth: provider"}},
		{"bad retrieval", func(c *Config) { setAcct(c, "gmail", func(a *AccountConfig) { a.Retrieval = "mapi" }) }, []string{"accounts::gmail: retrieval"}},
		{"pop3 retrieval without endpoint", func(c *Config) {
			setAcct(c, "gmail", func(a *AccountConfig) { a.Retrieval = "pop3"; a.IMAP = IMAPConfig{} })
		}, []string{"accounts::gmail: pop3::endpoint: missing"}},
		{"pop3 with cleanup move", func(c *Config) {
			c.Cleanup = CleanupConfig{Mode: "move", Folder: "Probes", OrphanAge: c.Cleanup.OrphanAge, SweepInterval: c.Cleanup.SweepInterval}
			setAcct(c, "gmail", func(a *AccountConfig) {
				a.Retrieval, a.IMAP, a.POP3 = "pop3", IMAPConfig{}, EndpointConfig{Endpoint: "pop.gmail.example:995"}
			})
		}, []string{"accounts::gmail::retrieval: pop3 has no folders"}},
		{"pop3 with idle", func(c *Config) {
			setAcct(c, "gmail", func(a *AccountConfig) {
				a.Retrieval, a.IMAP, a.POP3, a.Detection = "pop3", IMAPConfig{}, EndpointConfig{Endpoint: "pop.gmail.example:995"}, "idle"
			})
		}, []string{"accounts::gmail::detection: idle is not available over pop3"}},
		{"pop3 endpoint unused", func(c *Config) {
			setAcct(c, "gmail", func(a *AccountConfig) { a.POP3 = EndpointConfig{Endpoint: "pop.gmail.example:995"} })
		}, []string{"accounts::gmail: pop3: configured but retrieval is imap"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := validConfig()
			require.NoError(t, confmap.Validate(cfg), "the base config must be valid")
			tt.modify(cfg)
			err := confmap.Validate(cfg)
			require.Error(t, err)
			for _, w := range tt.want {
				assert.Contains(t, err.Error(), w)
			}
			assertEveryLineHasPath(t, err)
		})
	}
}

func setAcct(c *Config, key string, f func(*AccountConfig)) {
	a := c.Accounts[key]
	f(&a)
	c.Accounts[key] = a
}

func TestOAuthAndPOP3AccountsValidate(t *testing.T) {
	cfg := validConfig()
	setAcct(cfg, "o365", func(a *AccountConfig) {
		a.Password = ""
		a.OAuth = &OAuthConfig{Provider: "microsoft", TenantID: "contoso", ClientID: "app", ClientSecret: "secret"}
	})
	setAcct(cfg, "gmail", func(a *AccountConfig) {
		a.Retrieval = "pop3"
		a.IMAP = IMAPConfig{}
		a.POP3 = EndpointConfig{Endpoint: "pop.gmail.example"}
	})
	require.NoError(t, confmap.Validate(cfg))
	addr, sec := cfg.Accounts["gmail"].POP3.resolve(pop3Ports)
	assert.Equal(t, "pop.gmail.example:110", addr)
	assert.Equal(t, "starttls", sec)
}

func TestInvalidTestdataNamesTargetAndAccount(t *testing.T) {
	_, err := loadConfig(t, "invalid_unknown_account.yaml")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "broken")
	assert.Contains(t, err.Error(), `"nosuch"`)
}

func TestUnknownFieldRejected(t *testing.T) {
	cm := confmap.NewFromStringMap(map[string]any{"acounts": map[string]any{}})
	cfg := createDefaultConfig().(*Config)
	err := cm.Unmarshal(cfg)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "acounts")
}

func TestMeshExpandsToEveryDirection(t *testing.T) {
	cfg := validConfig()
	cfg.Accounts["yahoo"] = cfg.Accounts["gmail"]
	cfg.Roundtrip = nil
	cfg.Transit = TransitConfig{Directions: []string{"gmail:o365"}, Mesh: []string{"gmail", "o365", "yahoo"}}
	require.NoError(t, confmap.Validate(cfg))
	targets, err := buildTargets(context.Background(), cfg, nil)
	require.NoError(t, err)
	var dirs []string
	for _, tg := range targets {
		dirs = append(dirs, tg.Direction)
	}
	assert.Equal(t, []string{"gmail:o365", "gmail:yahoo", "o365:gmail", "o365:yahoo", "yahoo:gmail", "yahoo:o365"}, dirs)
}

func TestTranscriptConfig(t *testing.T) {
	cfg := validConfig()
	assert.Equal(t, 30, cfg.Transcript.Lines, "default")
	assert.Empty(t, cfg.Transcript.Targets, "off by default")

	// The documented shape unmarshals.
	cm := confmap.NewFromStringMap(map[string]any{
		"transcript": map[string]any{"targets": []any{"gmail", "gmail:o365"}, "lines": 12},
	})
	require.NoError(t, cm.Unmarshal(cfg))
	assert.Equal(t, TranscriptConfig{Targets: []string{"gmail", "gmail:o365"}, Lines: 12}, cfg.Transcript)
	cfg.Transit.Directions = []string{"gmail:o365"}
	require.NoError(t, confmap.Validate(cfg))
	assert.True(t, cfg.Transcript.enabled("gmail"))
	assert.True(t, cfg.Transcript.enabled("gmail:o365"))
	assert.False(t, cfg.Transcript.enabled("o365:gmail"))

	// A mesh's directions and a round trip's own name are target names.
	cfg = validConfig()
	cfg.Roundtrip = []RoundtripConfig{{Account: "gmail", Name: "gm-rtt"}}
	cfg.Transit.Mesh = []string{"gmail", "o365"}
	cfg.Transcript.Targets = []string{"gm-rtt", "o365:gmail", "*"}
	require.NoError(t, confmap.Validate(cfg))
	assert.True(t, cfg.Transcript.enabled("anything"), "* is every target")

	// Targets are wired: only the chosen ones keep a transcript.
	cfg = validConfig()
	cfg.Transit.Directions = []string{"gmail:o365"}
	cfg.Transcript.Targets = []string{"gmail:o365"}
	targets, err := buildTargets(context.Background(), cfg, nil)
	require.NoError(t, err)
	require.Len(t, targets, 2)
	assert.False(t, targets[0].Transcript, targets[0].Name)
	assert.True(t, targets[1].Transcript, targets[1].Name)
}

func TestTranscriptConfigRejects(t *testing.T) {
	for _, tt := range []struct {
		name   string
		modify func(*TranscriptConfig)
		want   string
	}{
		{"unknown target", func(tc *TranscriptConfig) { tc.Targets = []string{"gmail", "x"} }, `transcript::targets::1: unknown target "x"`},
		{"transit direction not configured", func(tc *TranscriptConfig) { tc.Targets = []string{"o365:gmail"} }, `transcript::targets::0: unknown target "o365:gmail"`},
		{"account key of no target", func(tc *TranscriptConfig) { tc.Targets = []string{"o365"} }, `transcript::targets::0: unknown target "o365"`},
		{"zero lines", func(tc *TranscriptConfig) { tc.Lines = 0 }, "transcript: lines: 0 is not between 1 and 10000"},
		{"negative lines", func(tc *TranscriptConfig) { tc.Lines = -1 }, "transcript: lines: -1 is not between 1 and 10000"},
		{"too many lines", func(tc *TranscriptConfig) { tc.Lines = 10001 }, "transcript: lines: 10001 is not between 1 and 10000"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := validConfig()
			tt.modify(&cfg.Transcript)
			err := confmap.Validate(cfg)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

// Input that cannot travel in an SMTP, IMAP or POP3 command, or that fails
// every probe, is refused at startup with the field's path.
func TestValidateRejectsUnsafeInput(t *testing.T) {
	long := func(n int) string { return strings.Repeat("a", n) }
	addr := func(v string) func(*Config) {
		return func(c *Config) { setAcct(c, "gmail", func(a *AccountConfig) { a.Address = v }) }
	}
	move := func(folder string) func(*Config) {
		return func(c *Config) { c.Cleanup.Mode, c.Cleanup.Folder = "move", folder }
	}
	tests := []struct {
		name   string
		modify func(*Config)
		want   []string // every substring must appear in the error
	}{
		{"NUL in the address", addr("a\x00b@gmail.example"), []string{"accounts::gmail: address", "control character U+0000"}},
		{"CR LF in the address", addr("a@gmail.example\r\nRCPT TO:<x@y.test>"), []string{"accounts::gmail: address", "control character U+000D"}},
		{"ESC in the address", addr("a\x1b[2J@gmail.example"), []string{"accounts::gmail: address", "U+001B"}},
		{"invalid UTF-8 in the address", addr("a\xff@gmail.example"), []string{"accounts::gmail: address", "not valid UTF-8"}},
		{"quoted local part with a space", addr(`"a b"@gmail.example`), []string{"accounts::gmail: address", "not a plain address"}},
		{"quoted local part", addr(`"ab"@gmail.example`), []string{"accounts::gmail: address", "not a plain address"}},
		{"display name", addr("Alice <a@gmail.example>"), []string{"accounts::gmail: address", "not a plain address"}},
		{"comment", addr("a@gmail.example (c)"), []string{"accounts::gmail: address", "not a plain address"}},
		{"bare comment", addr("a(c)@gmail.example"), []string{"accounts::gmail: address", "not a plain address"}},
		{"domain is a dot", addr("alice@."), []string{"accounts::gmail: address", "not a domain name"}},
		{"domain with a trailing dot", addr("alice@x."), []string{"accounts::gmail: address", "not a domain name"}},
		{"domain with an empty label", addr("alice@x..test"), []string{"accounts::gmail: address", "not a domain name"}},
		{"domain label starting with a hyphen", addr("alice@-x.test"), []string{"accounts::gmail: address", "not a domain name"}},
		{"domain label of 64 octets", addr("alice@" + long(64) + ".test"), []string{"accounts::gmail: address", "not a domain name"}},
		{"domain with an underscore", addr("alice@x_y.test"), []string{"accounts::gmail: address", "not a domain name"}},
		{"IPv6 literal", addr("alice@[IPv6:::1]"), []string{"accounts::gmail: address", "IPv4 literal"}},
		{"bad IPv4 literal", addr("alice@[300.1.1.1]"), []string{"accounts::gmail: address", "IPv4 literal"}},
		{"two at signs", addr("a@b@gmail.example"), []string{"accounts::gmail: address", "not a dot-string"}},
		{"local part with two dots", addr("a..b@gmail.example"), []string{"accounts::gmail: address", "not a dot-string"}},
		{"local part starting with a dot", addr(".a@gmail.example"), []string{"accounts::gmail: address", "not a dot-string"}},
		{"local part with a colon", addr("a:b@gmail.example"), []string{"accounts::gmail: address", "not a dot-string"}},
		{"no local part", addr("@gmail.example"), []string{"accounts::gmail: address", "local part has 0 octets"}},
		{"no domain", addr("alice@"), []string{"accounts::gmail: address", "domain has 0 octets"}},
		{"local part of 65 octets", addr(long(65) + "@gmail.example"), []string{"accounts::gmail: address", "local part has 65 octets, it must have 1 to 64"}},
		{"domain of 256 octets", addr("a@" + strings.Repeat(long(63)+".", 4)[:256]), []string{"accounts::gmail: address", "domain has 256 octets"}},
		{"path of 257 octets", addr(long(64) + "@" + strings.Repeat(long(62)+".", 3) + long(1)), []string{"accounts::gmail: address", "path <address> has 257 octets, at most 256"}},
		{"100 KB address", addr(long(100<<10) + "@gmail.example"), []string{"accounts::gmail: address", "local part has 102400 octets"}},
		{"NUL in the username", func(c *Config) { setAcct(c, "gmail", func(a *AccountConfig) { a.Username = "a\x00b" }) },
			[]string{"accounts::gmail: username", "U+0000"}},
		{"bidi override in the username", func(c *Config) { setAcct(c, "gmail", func(a *AccountConfig) { a.Username = "a\u202eb" }) },
			[]string{"accounts::gmail: username", "U+202E"}},
		{"NUL in the password", func(c *Config) { setAcct(c, "gmail", func(a *AccountConfig) { a.Password = "pw\x00x" }) },
			[]string{"accounts::gmail: password: contains a NUL, CR or LF"}},
		{"NUL in an account key", func(c *Config) { c.Accounts["bad\x00key"] = c.Accounts["o365"] },
			[]string{`accounts::"bad\x00key": account key:`, "U+0000"}},
		{"ESC in a target name", func(c *Config) { c.Roundtrip[0].Name = "gm\x1b]0;ok\x07" },
			[]string{`roundtrip::0: name: "gm\x1b]0;ok\a"`, "U+001B"}},
		{"bidi override in a direction", func(c *Config) { c.Transit.Directions = []string{"gmail:o365\u202e"} },
			[]string{`transit::directions::0: "gmail:o365\u202e": unknown account`, "unknown account"}},
		{"NUL in the mailbox", func(c *Config) { setAcct(c, "gmail", func(a *AccountConfig) { a.IMAP.Mailbox = "IN\x00BOX" }) },
			[]string{"accounts::gmail::imap: mailbox", "U+0000"}},
		{"LF in a junk folder", func(c *Config) {
			setAcct(c, "gmail", func(a *AccountConfig) { a.IMAP.JunkFolders = &[]string{"Junk\nx"} })
		}, []string{"accounts::gmail::imap: junk_folders::0", "U+000A"}},
		{"NUL in cleanup.folder", move("Pro\x00bes"), []string{"cleanup: folder", "U+0000"}},
		{"cleanup.folder is INBOX in another case", move("inbox"), []string{`cleanup::folder: "inbox" is the mailbox probes are read from (accounts::gmail, accounts::o365)`}},
		{"cleanup.folder is a configured mailbox", func(c *Config) {
			setAcct(c, "o365", func(a *AccountConfig) { a.IMAP.Mailbox = "Probes" })
			setAcct(c, "gmail", func(a *AccountConfig) { a.IMAP.Mailbox = "Monitoring" })
			c.Cleanup.Mode, c.Cleanup.Folder = "move", "Probes"
		}, []string{`cleanup::folder: "Probes" is the mailbox probes are read from (accounts::o365)`}},
		{"precise_interval longer than poll_interval", func(c *Config) { c.PreciseInterval = 2000000 * time.Hour },
			[]string{"precise_interval: 2000000h0m0s is longer than poll_interval 10s"}},
		{"negative initial_delay", func(c *Config) { c.InitialDelay = -time.Second }, []string{"initial_delay: must not be negative"}},
		{"missing ca_file", func(c *Config) {
			setAcct(c, "gmail", func(a *AccountConfig) { a.SMTP.TLS.CAFile = filepath.Join(t.TempDir(), "nosuch.pem") })
		}, []string{"accounts::gmail::smtp: tls::ca_file", "no such file"}},
		{"cert_file is a directory", func(c *Config) {
			setAcct(c, "gmail", func(a *AccountConfig) { a.IMAP.TLS.CertFile, a.IMAP.TLS.KeyFile = t.TempDir(), "testdata/config.yaml" })
		}, []string{"accounts::gmail::imap: tls::cert_file", "is a directory"}},
		{"missing key_file over pop3", func(c *Config) {
			setAcct(c, "gmail", func(a *AccountConfig) {
				a.Retrieval, a.IMAP = "pop3", IMAPConfig{}
				a.POP3 = EndpointConfig{Endpoint: "pop.gmail.example:995"}
				a.POP3.TLS.CertFile, a.POP3.TLS.KeyFile = "testdata/config.yaml", "testdata/nosuch.key"
			})
		}, []string{"accounts::gmail::pop3: tls::key_file", "no such file"}},
		{"missing oauth private key", func(c *Config) {
			setAcct(c, "o365", func(a *AccountConfig) {
				a.Password = ""
				a.OAuth = &OAuthConfig{Provider: "microsoft", TenantID: "t", ClientID: "c",
					CertificateFile: "testdata/config.yaml", PrivateKeyFile: "testdata/nosuch.key"}
			})
		}, []string{"accounts::o365::oauth: private_key_file", "no such file"}},
		{"missing service account key", func(c *Config) {
			setAcct(c, "gmail", func(a *AccountConfig) {
				a.Password = ""
				a.OAuth = &OAuthConfig{Provider: "google_service_account", ServiceAccountKeyFile: "testdata/nosuch.json", Subject: "a@gmail.example"}
			})
		}, []string{"accounts::gmail::oauth: service_account_key_file", "no such file"}},
		{"account key with a colon in a mesh", func(c *Config) {
			c.Accounts["o365:eu"] = c.Accounts["o365"]
			c.Transit.Mesh = []string{"gmail", "o365:eu"}
		}, []string{`transit: mesh::1: account key "o365:eu" contains ':'`}},
		{"mesh above the limit", func(c *Config) {
			c.Accounts, c.Transit.Mesh = meshAccounts(c, 101)
			c.Roundtrip[0].Account = "acct0000"
		},
			[]string{"transit::mesh: 10101 targets in all (a mesh of 101 accounts is 10100 directions): at most 10000"}},
		{"1,000-account mesh", func(c *Config) { c.Accounts, c.Transit.Mesh = meshAccounts(c, 1000); c.Roundtrip = nil },
			[]string{"transit::mesh: 999000 targets in all (a mesh of 1000 accounts is 999000 directions)"}},
		{"unknown account among many", func(c *Config) { c.Accounts, _ = meshAccounts(c, 1000) },
			[]string{`unknown account "gmail" for target gmail (configured: acct0000, acct0001,`, "acct0019 and 980 more)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := validConfig()
			require.NoError(t, confmap.Validate(cfg), "the base config must be valid")
			tt.modify(cfg)
			err := confmap.Validate(cfg)
			require.Error(t, err)
			for _, w := range tt.want {
				assert.Contains(t, err.Error(), w)
			}
			assertEveryLineHasPath(t, err)
			assert.NotContains(t, err.Error(), "pw\x00x", "no password in errors")
			assert.Less(t, len(err.Error()), 2048, "a huge value is cut in the message")
		})
	}
}

// meshAccounts returns n copies of c's gmail account and their keys.
func meshAccounts(c *Config, n int) (map[string]AccountConfig, []string) {
	accts := map[string]AccountConfig{}
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("acct%04d", i)
		a := c.Accounts["gmail"]
		a.Address = keys[i] + "@gmail.example"
		accts[keys[i]] = a
	}
	return accts, keys
}

// What the rules above must not refuse.
func TestValidateAccepts(t *testing.T) {
	long := func(n int) string { return strings.Repeat("a", n) }
	addr := func(v string) func(*Config) {
		return func(c *Config) { setAcct(c, "gmail", func(a *AccountConfig) { a.Address = v }) }
	}
	for _, tt := range []struct {
		name   string
		modify func(*Config)
	}{
		{"plus and dots", addr("probe.sender+qos@mail.gmail.example")},
		{"every atext special", addr("!#$%&'*+-/=?^_`{|}~@gmail.example")},
		{"single-label domain", addr("probe@localhost")},
		{"IPv4 literal", addr("probe@[192.0.2.1]")},
		{"UTF-8 (RFC 6531)", addr("jörg@bücher.example")},
		{"local part of 64 octets", addr(long(64) + "@gmail.example")},
		{"path of 256 octets", addr(long(64) + "@" + long(62) + "." + long(62) + "." + long(63))},
		{"username with a space and UTF-8", func(c *Config) { setAcct(c, "gmail", func(a *AccountConfig) { a.Username = `DOMAIN\jörg müller` }) }},
		{"password with spaces and symbols", func(c *Config) { setAcct(c, "gmail", func(a *AccountConfig) { a.Password = ` p"w\ {}` }) }},
		{"account key with a colon outside a mesh", func(c *Config) {
			c.Accounts["o365:eu"] = c.Accounts["o365"]
			c.Roundtrip = append(c.Roundtrip, RoundtripConfig{Account: "o365:eu", Name: "o365-eu"})
		}},
		{"cleanup.folder differs from every mailbox", func(c *Config) { c.Cleanup.Mode, c.Cleanup.Folder = "move", "Probes" }},
		{"cleanup.folder differs from a mailbox in case only (not INBOX)", func(c *Config) {
			c.Cleanup.Mode, c.Cleanup.Folder = "move", "probes"
			setAcct(c, "gmail", func(a *AccountConfig) { a.IMAP.Mailbox = "Probes" })
		}},
		{"precise_interval equal to poll_interval", func(c *Config) { c.PreciseInterval = c.PollInterval }},
		{"initial_delay zero", func(c *Config) { c.InitialDelay = 0 }},
		{"existing ca_file", func(c *Config) {
			setAcct(c, "gmail", func(a *AccountConfig) { a.SMTP.TLS.CAFile = filepath.Join("testdata", "config.yaml") })
		}},
		{"mesh at the limit", func(c *Config) {
			c.Accounts, c.Transit.Mesh = meshAccounts(c, 100) // 9,900 directions
			c.Roundtrip = []RoundtripConfig{{Account: "acct0000"}}
			c.Transit.Directions = []string{"acct0000:acct0001"} // in the mesh: counted once
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := validConfig()
			tt.modify(cfg)
			require.NoError(t, confmap.Validate(cfg))
			assert.LessOrEqual(t, cfg.targetCount(), maxTargets)
		})
	}
}

func TestTargetCount(t *testing.T) {
	cfg := validConfig()
	cfg.Accounts["yahoo"] = cfg.Accounts["gmail"]
	cfg.Transit = TransitConfig{Directions: []string{"gmail:o365", "o365:yahoo"}, Mesh: []string{"gmail", "o365", "yahoo"}}
	targets, err := buildTargets(context.Background(), cfg, nil)
	require.NoError(t, err)
	assert.Equal(t, len(targets), cfg.targetCount(), "counted as buildTargets expands them")
	assert.Equal(t, 7, cfg.targetCount())
	cfg.Transit.Mesh = []string{"gmail", "o365"}
	targets, err = buildTargets(context.Background(), cfg, nil)
	require.NoError(t, err)
	assert.Equal(t, len(targets), cfg.targetCount())
	assert.Equal(t, 4, cfg.targetCount())
}

// configtls's checks are reported once, by the collector's walk of the tls
// block: walked as configtls.ClientConfig they came twice ("tls" and
// "tls::config"), and the receiver's own Validate methods leave them alone.
// A file that does not exist is the receiver's check, and reported once.
func TestTLSErrorsReportedOnce(t *testing.T) {
	cfg := validConfig()
	setAcct(cfg, "gmail", func(a *AccountConfig) {
		a.SMTP.TLS.MinVersion = "0.9"
		a.IMAP.TLS.CAFile = filepath.Join(t.TempDir(), "nosuch.pem")
		a.IMAP.TLS.CAPem = "not a pem"
	})
	setAcct(cfg, "o365", func(a *AccountConfig) { a.SMTP.TLS.CertFile = "testdata/config.yaml" })
	err := confmap.Validate(cfg)
	require.Error(t, err)
	msg := err.Error()
	for want, count := range map[string]int{
		`accounts::gmail::smtp::tls: invalid TLS min_version: unsupported TLS version: "0.9"`:          1,
		"accounts::gmail::imap::tls: provide either a CA file or the PEM-encoded string, but not both": 1,
		"accounts::o365::smtp::tls: TLS configuration must include both certificate and key":           1,
		"nosuch.pem":          1,
		"min_version":         1,
		"PEM-encoded":         1,
		"certificate and key": 1,
		"tls::config":         0,
	} {
		assert.Equal(t, count, strings.Count(msg, want), "%q in:\n%s", want, msg)
	}
	a := cfg.Accounts["gmail"]
	for _, v := range []confmap.Validator{cfg, a, a.SMTP, a.IMAP} {
		if err := v.Validate(); err != nil {
			assert.NotContains(t, err.Error(), "min_version", "left to configtls")
			assert.NotContains(t, err.Error(), "PEM-encoded", "left to configtls")
		}
	}
}

// Every shipped example and the testdata configuration still validate.
func TestExamplesValidate(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("examples", "*.yaml"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	files = append(files, filepath.Join("testdata", "config.yaml"))
	envRef := regexp.MustCompile(`\$\{env:([A-Z0-9_]+)`)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			require.NoError(t, err)
			for _, m := range envRef.FindAllStringSubmatch(string(data), -1) {
				v := "example-value"
				if strings.HasSuffix(m[1], "_FILE") {
					// A path the validation checks exists.
					v = filepath.Join(t.TempDir(), "key.json")
					require.NoError(t, os.WriteFile(v, []byte("{}"), 0o600))
				}
				t.Setenv(m[1], v)
			}
			resolver, err := confmap.NewResolver(confmap.ResolverSettings{
				URIs:              []string{"file:" + f},
				ProviderFactories: []confmap.ProviderFactory{fileprovider.NewFactory(), envprovider.NewFactory()},
			})
			require.NoError(t, err)
			cm, err := resolver.Resolve(context.Background())
			require.NoError(t, err)
			sub, err := cm.Sub("receivers::emailqos")
			require.NoError(t, err)
			cfg := NewFactory().CreateDefaultConfig().(*Config)
			require.NoError(t, sub.Unmarshal(cfg))
			require.NoError(t, confmap.Validate(cfg))
		})
	}
}

func TestLargeTargetCountWarns(t *testing.T) {
	for _, tc := range []struct {
		accounts int
		warn     bool
	}{{32, false}, {33, true}} { // 992 and 1,056 directions
		t.Run(fmt.Sprint(tc.accounts), func(t *testing.T) {
			cfg := validConfig()
			cfg.Accounts, cfg.Transit.Mesh = meshAccounts(cfg, tc.accounts)
			cfg.Roundtrip = nil
			require.NoError(t, confmap.Validate(cfg))
			core, logs := observer.New(zapcore.WarnLevel)
			settings := receivertest.NewNopSettings(metadata.Type)
			settings.Logger = zap.New(core)
			s := newScraper(cfg, settings, context.Background())
			require.NoError(t, s.start(context.Background(), componenttest.NewNopHost()))
			warned := logs.FilterMessageSnippet("targets are probed in every collection").All()
			if !tc.warn {
				assert.Empty(t, warned)
				return
			}
			require.Len(t, warned, 1)
			assert.Contains(t, warned[0].Message, "1056 targets")
			assert.Equal(t, int64(1056), warned[0].ContextMap()["targets"])
		})
	}
}

// TestDSNConfig: dsn is on by default and reaches every target; `dsn:
// false` turns it off, and the probe then sends no DSN parameters and reads
// no notices (internal/probe TestBounceIgnoredWithoutDSN).
func TestDSNConfig(t *testing.T) {
	cfg := validConfig()
	assert.True(t, cfg.DSN, "on by default")
	targets, err := buildTargets(context.Background(), cfg, nil)
	require.NoError(t, err)
	require.NotEmpty(t, targets)
	for _, tg := range targets {
		assert.True(t, tg.DSN, tg.Name)
	}

	cm := confmap.NewFromStringMap(map[string]any{"dsn": false})
	require.NoError(t, cm.Unmarshal(cfg))
	assert.False(t, cfg.DSN)
	targets, err = buildTargets(context.Background(), cfg, nil)
	require.NoError(t, err)
	for _, tg := range targets {
		assert.False(t, tg.DSN, tg.Name)
	}
}

func TestMaxSessionsConfig(t *testing.T) {
	load := func(extra map[string]any) *probe.Account {
		t.Helper()
		acct := map[string]any{
			"address": alice, "password": "pw",
			"smtp": map[string]any{"endpoint": "127.0.0.1:25", "security": "none"},
			"imap": map[string]any{"endpoint": "127.0.0.1:143", "security": "none"},
		}
		for k, v := range extra {
			acct[k] = v
		}
		cfg := NewFactory().CreateDefaultConfig().(*Config)
		cm := confmap.NewFromStringMap(map[string]any{
			"accounts":  map[string]any{"a": acct},
			"roundtrip": []any{map[string]any{"account": "a"}},
		})
		require.NoError(t, cm.Unmarshal(cfg))
		require.NoError(t, confmap.Validate(cfg))
		targets, err := buildTargets(context.Background(), cfg, nil)
		require.NoError(t, err)
		return targets[0].Receiver
	}
	assert.Equal(t, defaultMaxSessions, load(nil).MaxSessions, "unset: the default")
	assert.Equal(t, 4, load(map[string]any{"max_sessions": 4}).MaxSessions)
	assert.True(t, load(nil).ShareSession, "unset: one session per mailbox")
	assert.False(t, load(map[string]any{"share_session": false}).ShareSession)
	assert.True(t, load(map[string]any{"share_session": true}).ShareSession)
}

// imapAt is an IMAP block with endpoint e's fields.
func imapAt(e EndpointConfig) IMAPConfig {
	return IMAPConfig{Endpoint: e.Endpoint, Security: e.Security, TLS: e.TLS}
}

// setEndpoint replaces the block's endpoint fields with e's.
func (c *IMAPConfig) setEndpoint(e EndpointConfig) {
	c.Endpoint, c.Security, c.TLS = e.Endpoint, e.Security, e.TLS
}

// configKey is a line of a validation error: the path of a field of the
// receiver's configuration, then the problem. controllerconfig is where the
// collector's walk puts scraperhelper's own check of collection_interval
// (the squashed ControllerConfig); its message quotes the field.
var configKey = regexp.MustCompile(`^(accounts|roundtrip|transit|cleanup|transcript|shard|controllerconfig|collection_interval|delivery_timeout|poll_interval|timeout|start_spread|precise_interval|initial_delay|detection)(::\S+?)*: `)

// assertEveryLineHasPath checks that every line of err says which field it
// is about: the collector prefixes only the first line of a sub-config's
// error with the path.
func assertEveryLineHasPath(t *testing.T, err error) {
	t.Helper()
	for _, line := range strings.Split(err.Error(), "\n") {
		assert.Regexp(t, configKey, line, "a line of the error without its field's path")
	}
}

// lineWith is the line of s that contains sub.
func lineWith(s, sub string) string {
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, sub) {
			return line
		}
	}
	return ""
}

// The tls block survives a round trip through confmap (as `otelcol
// print-config` marshals it): TLSConfig embeds configtls's block under an
// unexported name, which confmap's encoder would skip.
func TestTLSConfigMarshals(t *testing.T) {
	cfg := validConfig()
	setAcct(cfg, "gmail", func(a *AccountConfig) {
		a.SMTP.TLS.CAFile = "testdata/config.yaml"
		a.IMAP.TLS.ServerName = "imap.gmail.example"
		a.IMAP.TLS.CAPem = "pem"
	})
	conf := confmap.New()
	require.NoError(t, conf.Marshal(cfg))
	assert.Equal(t, "testdata/config.yaml", conf.Get("accounts::gmail::smtp::tls::ca_file"))
	assert.Equal(t, "[REDACTED]", conf.Get("accounts::gmail::imap::tls::ca_pem"))
	back := createDefaultConfig().(*Config)
	require.NoError(t, conf.Unmarshal(back))
	assert.Equal(t, "testdata/config.yaml", back.Accounts["gmail"].SMTP.TLS.CAFile)
	assert.Equal(t, "imap.gmail.example", back.Accounts["gmail"].IMAP.TLS.ServerName)
}

// The error as the collector prints it: otelcol validates its own Config,
// whose receivers map holds each receiver's configuration under its id, so
// paths start at receivers::<id>. The walk puts that path in front of the
// first line of each Validate's error only: every line must still say
// which field it is about, and each problem must be reported once.
func TestCollectorValidationNamesEveryField(t *testing.T) {
	cfg, err := loadConfig(t, "invalid_fields.yaml")
	require.Error(t, err)
	err = confmap.Validate(&struct {
		Receivers map[component.ID]component.Config `mapstructure:"receivers"`
	}{map[component.ID]component.Config{component.MustNewID("emailqos"): cfg}})
	require.Error(t, err)
	msg := err.Error()
	for _, want := range []string{
		`receivers::emailqos::accounts::demo::smtp: security: "TLS" is ambiguous: LogicMonitor's TLS means STARTTLS here (starttls); implicit TLS is tls (or ssl); values are lower case; endpoint: "127.0.0.1:99999" has an invalid port "99999"`,
		`receivers::emailqos::accounts::demo::imap: junk_folders::0: empty folder name; junk_folders::1: "INBOX" is the mailbox the probes are read from`,
		`receivers::emailqos::accounts::demo::imap::tls: invalid TLS min_version: unsupported TLS version: "0.9"`,
		`receivers::emailqos::accounts::demo: max_sessions: -1: must be between 1 and 1000`,
		`receivers::emailqos::accounts::other: address: missing`,
		`roundtrip::1::account: unknown account "nosuch" for target broken (configured: demo, other)`,
		`receivers::emailqos::transit: directions::0: "demo-other" must be sender:receiver`,
		`receivers::emailqos::transcript: lines: 0 is not between 1 and 10000`,
	} {
		assert.Equal(t, 1, strings.Count(msg, want), "once: %q in\n%s", want, msg)
	}
	assert.Equal(t, 1, strings.Count(msg, "min_version"), msg)
	for _, line := range strings.Split(msg, "\n") {
		if !strings.HasPrefix(line, "receivers::emailqos") {
			assert.Regexp(t, configKey, line, "a line of the error without its field's path")
		}
	}
}
