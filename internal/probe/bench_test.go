package probe

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/emailqos/emailqosreceiver/internal/bench/scale"
	"github.com/emailqos/emailqosreceiver/internal/imapwatch"
	"github.com/emailqos/emailqosreceiver/internal/probemsg"
	"github.com/emailqos/emailqosreceiver/internal/saslx"
	"github.com/emailqos/emailqosreceiver/internal/transport"
)

// serveEnv makes this test binary the mail servers' process of the
// servers=child benchmarks (before the testing package parses flags).
const serveEnv = "EMAILQOS_BENCH_SERVE"

func init() {
	if os.Getenv(serveEnv) == "1" {
		os.Exit(scale.Main(os.Args[1:]))
	}
}

type costCase struct {
	name      string
	security  transport.Security
	detection imapwatch.Method
	pop3      bool
	delay     time.Duration
}

// BenchmarkProbe is the cost of one round-trip probe end to end: connects,
// TLS handshakes, logins, submission, detection, cleanup and logout. It
// reports cpu-ms/op, the process's CPU time (getrusage user+system) per
// probe. With servers=inproc the in-process mail servers run in the same
// process and their CPU is included; with servers=child they run in a child
// process, so cpu-ms/op (and B/op, allocs/op) are the probing client's
// alone and server-cpu-ms/op is the servers' share.
func BenchmarkProbe(b *testing.B) {
	cases := []costCase{
		{name: "conn=plain/detect=idle", security: transport.None, detection: imapwatch.MethodIdle},
		{name: "conn=starttls/detect=idle", security: transport.STARTTLS, detection: imapwatch.MethodIdle},
		{name: "conn=tls/detect=idle", security: transport.TLS, detection: imapwatch.MethodIdle},
		{name: "conn=plain/detect=precise", security: transport.None, detection: imapwatch.MethodPrecise},
		{name: "conn=tls/detect=precise", security: transport.TLS, detection: imapwatch.MethodPrecise},
		// A delivery that takes 100ms: IDLE waits for free, precise polls
		// every 10ms meanwhile.
		{name: "conn=plain/detect=idle/delay=100ms", security: transport.None, detection: imapwatch.MethodIdle, delay: 100 * time.Millisecond},
		{name: "conn=plain/detect=precise/delay=100ms", security: transport.None, detection: imapwatch.MethodPrecise, delay: 100 * time.Millisecond},
		{name: "conn=plain/retrieval=pop3", security: transport.None, detection: imapwatch.MethodPoll, pop3: true},
	}
	for _, c := range cases {
		for _, where := range []string{"inproc", "child"} {
			b.Run(c.name+"/servers="+where, func(b *testing.B) { benchProbe(b, c, where == "child") })
		}
	}
}

func benchProbe(b *testing.B, c costCase, child bool) {
	opts := scale.ServeOptions{Users: 1, POP3: c.pop3, TLS: c.security != transport.None, DelayMin: c.delay, DelayMax: c.delay}
	var srv *scale.Servers
	var err error
	if child {
		exe, err := os.Executable()
		if err != nil {
			b.Fatal(err)
		}
		cmd := exec.Command(exe, opts.Args()...)
		cmd.Env = append(os.Environ(), serveEnv+"=1")
		srv, err = scale.StartChild(cmd)
	} else {
		srv, err = scale.StartInProcess(opts)
	}
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if _, err := srv.Close(); err != nil {
			b.Error(err)
		}
	})

	addr, pw := scale.User(0)
	if c.pop3 {
		addr, pw = scale.POP3User, "bench-pw-pop"
	}
	ep := func(plain, implicit string) transport.Endpoint {
		e := transport.Endpoint{Address: srv.Addr[plain], Security: c.security, TLSConfig: srv.ClientTLS()}
		if c.security == transport.TLS {
			e.Address = srv.Addr[implicit]
		}
		return e
	}
	a := &Account{
		Key: "bench", Address: addr, Credentials: saslx.Credentials{Username: addr, Password: pw},
		SMTP: ep("smtp", "smtps"), IMAP: ep("imap", "imaps"), Mailbox: "INBOX",
		Detection: c.detection,
		MACKey:    probemsg.DeriveKey([]byte(pw), addr),
	}
	if c.pop3 {
		a.Retrieval, a.IMAP = RetrievalPOP3, transport.Endpoint{}
		a.POP3 = transport.Endpoint{Address: srv.Addr["pop3"], Security: transport.None}
	}
	t := &Target{
		Name: "bench", Kind: Roundtrip, Sender: a, Receiver: a, Direction: "bench:bench",
		DeliveryTimeout: 5 * time.Second, PollInterval: 200 * time.Millisecond,
		PreciseInterval: 10 * time.Millisecond, Timeout: 10 * time.Second, Cleanup: CleanupDelete,
	}
	// One probe outside the measurement warms up the servers and this
	// process (TLS session state is not reused between probes: every probe
	// dials afresh, as the receiver does).
	if r := Run(context.Background(), t, nil); r.Err != nil {
		b.Fatal(r.Err)
	}

	b.ReportAllocs()
	b.ResetTimer()
	cpu0, srv0 := scale.SelfCPU(), srv.CPU()
	for b.Loop() {
		if r := Run(context.Background(), t, nil); r.Err != nil {
			b.Fatal(r.Err)
		}
	}
	cpu, srvCPU := scale.SelfCPU()-cpu0, srv.CPU()-srv0
	b.StopTimer()
	b.ReportMetric(float64(cpu)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
	if child {
		b.ReportMetric(float64(srvCPU)/float64(time.Millisecond)/float64(b.N), "server-cpu-ms/op")
	}
}
