package emailqosreceiver

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/confmap"
	"go.yaml.in/yaml/v3"

	"github.com/emailqos/emailqosreceiver/internal/probe"
	"github.com/emailqos/emailqosreceiver/internal/probemsg"
	"github.com/emailqos/emailqosreceiver/internal/transport"
)

// exampleSection is the receivers::emailqos section of testdata/config.yaml,
// as YAML, for the seed corpus.
func exampleSection(f *testing.F) []byte {
	f.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "config.yaml"))
	if err != nil {
		f.Fatal(err)
	}
	var doc map[string]map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		f.Fatal(err)
	}
	section, ok := doc["receivers"]["emailqos"]
	if !ok {
		f.Fatal("testdata/config.yaml has no receivers::emailqos")
	}
	out, err := yaml.Marshal(section)
	if err != nil {
		f.Fatal(err)
	}
	return out
}

// configSeeds are broken variants of a configuration: each is a complete
// receivers::emailqos section.
var configSeeds = []string{
	// Minimal valid configuration.
	`accounts:
  a:
    address: a@a.test
    password: secret-a
    smtp: {endpoint: smtp.a.test:587}
    imap: {endpoint: imap.a.test}
roundtrip:
  - account: a
`,
	// Unknown account in a roundtrip, a direction and a mesh.
	`accounts:
  a: {address: a@a.test, password: pw-aaaaaa, smtp: {endpoint: "127.0.0.1:25", security: none}, imap: {endpoint: "127.0.0.1:143", security: none}}
roundtrip: [{account: nosuch}, {name: broken}]
transit: {directions: ["a:nosuch", "a", ":a", "a:a", "a:b:c"], mesh: [a, nosuch, a]}
`,
	// LogicMonitor's upper-case security spellings and other odd values.
	`accounts:
  a:
    address: a@a.test
    password: pw-aaaaaa
    smtp: {endpoint: smtp.a.test, security: TLS}
    imap: {endpoint: imap.a.test, security: SSL}
  b:
    address: b@b.test
    password: pw-bbbbbb
    smtp: {endpoint: smtp.b.test, security: " starttls"}
    imap: {endpoint: imap.b.test, security: plain}
transit: {mesh: [a, b]}
`,
	// Odd endpoints: schemes, paths, empty hosts, bad ports, IPv6.
	`accounts:
  a:
    address: a@a.test
    password: pw-aaaaaa
    smtp: {endpoint: "smtp://smtp.a.test:25"}
    imap: {endpoint: ":993"}
  b:
    address: b@b.test
    password: pw-bbbbbb
    smtp: {endpoint: "[::1]:70000"}
    imap: {endpoint: "imap.b.test:"}
  c:
    address: c@c.test
    password: pw-cccccc
    smtp: {endpoint: "[::1]:465"}
    retrieval: pop3
    pop3: {endpoint: "pop.c.test:+995"}
    imap: {endpoint: "::1"}
transit: {mesh: [a, b, c]}
`,
	// Huge durations, some beyond what time.Duration holds.
	`collection_interval: 2562047h
delivery_timeout: 2562047h
poll_interval: 1000000h
precise_interval: 9999999999h
cleanup: {orphan_age: 2562047h47m16s, sweep_interval: 1ns}
accounts:
  a: {address: a@a.test, password: pw-aaaaaa, smtp: {endpoint: "s.a.test"}, imap: {endpoint: "i.a.test"}}
roundtrip: [{account: a}]
`,
	// Negative and zero durations.
	`collection_interval: -5m
timeout: -1s
delivery_timeout: 0s
poll_interval: -10s
precise_interval: -1ms
cleanup: {mode: move, orphan_age: -24h, sweep_interval: 0s}
accounts:
  a: {address: a@a.test, password: pw-aaaaaa, smtp: {endpoint: "s.a.test"}, imap: {endpoint: "i.a.test"}}
roundtrip: [{account: a}]
`,
	// Empty maps and lists everywhere.
	`accounts: {}
roundtrip: []
transit: {}
cleanup: {}
`,
	`accounts:
  a: {}
  b: {smtp: {}, imap: {}, pop3: {}, oauth: {}}
roundtrip: [{}]
`,
	// Wrong types.
	`accounts: [a, b]
roundtrip: {account: a}
delivery_timeout: forever
detection: 7
`,
	// OAuth and POP3 combinations that are refused.
	`cleanup: {mode: move, folder: Done}
detection: precise
accounts:
  a:
    address: a@a.test
    password: pw-aaaaaa
    oauth: {provider: microsoft, tenant_id: t, client_id: c, client_secret: s, mechanism: plain}
    smtp: {endpoint: s.a.test, tls: {insecure: true}}
    retrieval: pop3
    pop3: {endpoint: p.a.test, tls: {min_version: "0.9"}}
roundtrip: [{account: a, name: "x\ny"}]
`,
	// Input that cannot travel in a command or fails every probe: control
	// characters, a quoted or commented address, an empty domain label,
	// cleanup into the watched mailbox, a key with ':' in a mesh, a huge mesh.
	`accounts:
  "a:b": {address: "\"a b\"@a.test", username: "u\0v", password: "p\r\nw", smtp: {endpoint: s.a.test}, imap: {endpoint: i.a.test, mailbox: "IN\x1bBOX"}}
  c: {address: "c@c.test (c)", password: pw, smtp: {endpoint: s.c.test}, imap: {endpoint: i.c.test}}
  d: {address: "alice@.", password: pw, smtp: {endpoint: s.d.test}, imap: {endpoint: i.d.test}}
initial_delay: -1s
precise_interval: 2000000h
cleanup: {mode: move, folder: inbox}
roundtrip: [{account: c, name: "c\u202e"}]
transit: {mesh: ["a:b", c, d, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15, x16, x17, x18, x19, x20, x21, x22, x23, x24, x25, x26, x27, x28, x29, x30, x31, x32, x33, x34, x35, x36, x37, x38, x39, x40, x41, x42, x43, x44, x45, x46, x47, x48, x49, x50, x51, x52, x53, x54, x55, x56, x57, x58, x59, x60, x61, x62, x63, x64, x65, x66, x67, x68, x69, x70, x71, x72, x73, x74, x75, x76, x77, x78, x79, x80, x81, x82, x83, x84, x85, x86, x87, x88, x89, x90, x91, x92, x93, x94, x95, x96, x97, x98, x99, x100]}
`,
	// TLS material that does not exist.
	`accounts:
  a:
    address: a@a.test
    password: pw-aaaaaa
    smtp: {endpoint: s.a.test, tls: {ca_file: testdata/nosuch.pem}}
    imap: {endpoint: i.a.test, tls: {ca_pem: "not a pem"}}
roundtrip: [{account: a}]
`,
}

// FuzzConfig loads fuzzed YAML as the receiver's section, as the collector
// does (confmap unmarshal, then validation), and builds the probe targets of
// whatever validates. Bad input must be refused with an error, never panic;
// what validates must build into targets the probe engine can run.
func FuzzConfig(f *testing.F) {
	f.Add(exampleSection(f))
	for _, s := range configSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 64<<10 {
			return
		}
		var raw map[string]any
		if err := yaml.Unmarshal(data, &raw); err != nil || raw == nil {
			return // not a YAML map: the collector refuses it before us
		}
		cfg := createDefaultConfig().(*Config)
		if err := confmap.NewFromStringMap(raw).Unmarshal(cfg); err != nil {
			if err.Error() == "" {
				t.Fatal("unmarshal failed with an empty error")
			}
			return
		}
		if err := confmap.Validate(cfg); err != nil {
			if err.Error() == "" {
				t.Fatal("validation failed with an empty error")
			}
			return
		}
		if !safeTLSFiles(cfg) {
			return
		}
		targets, err := buildTargets(context.Background(), cfg, nil)
		if err != nil {
			// TLS material that cannot be loaded: an error is the answer.
			if err.Error() == "" {
				t.Fatal("buildTargets failed with an empty error")
			}
			return
		}
		checkTargets(t, cfg, targets)
	})
}

// safeTLSFiles reports whether every TLS file the configuration names is
// missing or a regular file: the fuzzer must not make the test read a device
// or a FIFO, which is the file system's doing, not the configuration's.
func safeTLSFiles(cfg *Config) bool {
	for _, a := range cfg.Accounts {
		for _, tc := range []TLSConfig{a.SMTP.TLS, a.IMAP.TLS, a.POP3.TLS} {
			for _, p := range []string{tc.CAFile, tc.CertFile, tc.KeyFile, tc.TPMConfig.Path} {
				if p == "" {
					continue
				}
				if fi, err := os.Stat(p); err == nil && !fi.Mode().IsRegular() {
					return false
				}
			}
		}
	}
	return true
}

// checkTargets asserts what the engine relies on for a validated
// configuration.
func checkTargets(t *testing.T, cfg *Config, targets []*probe.Target) {
	t.Helper()
	if len(targets) == 0 {
		t.Fatal("a validated configuration built no targets")
	}
	for _, tg := range targets {
		if tg.Sender == nil || tg.Receiver == nil {
			t.Fatalf("target %q has no sender or receiver account", tg.Name)
		}
		if tg.DeliveryTimeout <= 0 || tg.PollInterval <= 0 || tg.PreciseInterval <= 0 {
			t.Fatalf("target %q: non-positive interval (delivery %s, poll %s, precise %s)",
				tg.Name, tg.DeliveryTimeout, tg.PollInterval, tg.PreciseInterval)
		}
		if tg.Timeout <= tg.DeliveryTimeout {
			t.Fatalf("target %q: probe timeout %s does not exceed delivery_timeout %s (timeout %s)",
				tg.Name, tg.Timeout, tg.DeliveryTimeout, cfg.Timeout)
		}
		if tg.OrphanAge <= tg.Timeout {
			t.Fatalf("target %q: orphan_age %s is not longer than the probe timeout %s", tg.Name, tg.OrphanAge, tg.Timeout)
		}
		// What validates is never a probe's own configuration error at
		// submission: the message takes the addresses and the name as
		// they are.
		if _, err := probemsg.New(tg.Sender.Address, tg.Receiver.Address, tg.Name, time.Now()); err != nil {
			t.Fatalf("target %q: validated, but the probe message refuses it: %v", tg.Name, err)
		}
		for _, acct := range []*probe.Account{tg.Sender, tg.Receiver} {
			checkEndpointResolved(t, acct.Key+" smtp", acct.SMTP)
			switch acct.Retrieval {
			case retrievalIMAP:
				checkEndpointResolved(t, acct.Key+" imap", acct.IMAP)
				if acct.Mailbox == "" {
					t.Fatalf("account %q: empty mailbox", acct.Key)
				}
			case retrievalPOP3:
				checkEndpointResolved(t, acct.Key+" pop3", acct.POP3)
			default:
				t.Fatalf("account %q: retrieval %q", acct.Key, acct.Retrieval)
			}
		}
	}
}

func checkEndpointResolved(t *testing.T, what string, ep transport.Endpoint) {
	t.Helper()
	switch ep.Security {
	case transport.None, transport.STARTTLS, transport.TLS:
	default:
		t.Fatalf("%s: security %q", what, ep.Security)
	}
	if ep.Security != transport.None && ep.TLSConfig == nil {
		t.Fatalf("%s: security %s without a TLS configuration", what, ep.Security)
	}
	checkHostPort(t, what, ep.Address)
}

// checkHostPort asserts that addr is host:port as a dialer takes it: a
// non-empty host and a port in 1..65535.
func checkHostPort(t *testing.T, what, addr string) {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%s: resolved address %q is not host:port: %v", what, addr, err)
	}
	if host == "" {
		t.Fatalf("%s: resolved address %q has no host", what, addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		t.Fatalf("%s: resolved address %q has an invalid port", what, addr)
	}
}

// FuzzSecurityAndEndpoint checks the endpoint validation against what
// resolve makes of it: an endpoint that validates resolves, with every
// protocol's default ports, to a dialable host:port and a known security;
// parseSecurity accepts exactly the lower-case spellings (and ssl) and names
// any other value in its error.
func FuzzSecurityAndEndpoint(f *testing.F) {
	for _, s := range [][2]string{
		{"smtp.example.com:587", "starttls"},
		{"smtp.example.com", ""},
		{"smtp.example.com", "none"},
		{"imap.example.com:993", ""},
		{"imap.example.com", "ssl"},
		{"imap.example.com", "tls"},
		{"pop.example.com:995", "TLS"},
		{"[::1]:143", "SSL"},
		{"[::1]:143", ""},
		{"::1", " starttls"},
		{"[::1]", "StartTLS"},
		{"[::1]", ""},
		{"fe80::1%eth0", "none"},
		{"mail.example.com.", "tls"},
		{"127.0.0.1:0", "plain"},
		{"127.0.0.1:65536", "blank"},
		{"127.0.0.1:-1", "None"},
		{":25", ""},
		{"host:", ""},
		{"smtp://host:25", ""},
		{"host/path", ""},
		{"host name", ""},
		{"", ""},
		{" ", "\t"},
		{"host:25:26", "tls\n"},
		{"h\u00e9st:0025", "t\u0131s"},
	} {
		f.Add(s[0], s[1])
	}
	accepted := map[string]string{"": "", "none": "none", "starttls": "starttls", "tls": "tls", "ssl": "tls"}
	f.Fuzz(func(t *testing.T, endpoint, security string) {
		sec, err := parseSecurity(security)
		if want, ok := accepted[security]; ok {
			if err != nil || sec != want {
				t.Fatalf("parseSecurity(%q) = %q, %v; want %q", security, sec, err, want)
			}
		} else {
			if err == nil {
				t.Fatalf("parseSecurity(%q) accepted it as %q", security, sec)
			}
			if !strings.Contains(err.Error(), strconv.Quote(security)) {
				t.Fatalf("parseSecurity(%q): error does not name the value: %v", security, err)
			}
		}

		epErr := checkEndpoint(endpoint)
		if epErr != nil && !strings.Contains(epErr.Error(), strconv.Quote(endpoint)) {
			t.Fatalf("checkEndpoint(%q): error does not name the value: %v", endpoint, epErr)
		}
		e := EndpointConfig{Endpoint: endpoint, Security: security}
		if err := e.Validate(); err != nil {
			for _, p := range err.(interface{ Unwrap() []error }).Unwrap() {
				if !strings.HasPrefix(p.Error(), "security: ") && !strings.HasPrefix(p.Error(), "endpoint: ") {
					t.Fatalf("Validate(%q, %q): a problem without its field: %v", endpoint, security, p)
				}
			}
			return
		}
		if strings.TrimSpace(endpoint) == "" {
			return // missing: the account that needs it says so
		}
		if epErr != nil {
			t.Fatalf("validate accepted %q that checkEndpoint refused: %v", endpoint, epErr)
		}
		for proto, ports := range map[string]map[string]int{"smtp": smtpPorts, "imap": imapPorts, "pop3": pop3Ports} {
			addr, got := e.resolve(ports)
			what := proto + " " + strconv.Quote(endpoint) + " security " + strconv.Quote(security)
			switch {
			case got != securityNone && got != securityStartTLS && got != securityTLS:
				t.Fatalf("%s: resolved security %q", what, got)
			case sec != "" && got != sec:
				t.Fatalf("%s: resolved security %q, configured %q", what, got, sec)
			case sec == "" && got == securityNone:
				t.Fatalf("%s: an unset security resolved to none", what)
			}
			checkHostPort(t, what, addr)
		}
	})
}
