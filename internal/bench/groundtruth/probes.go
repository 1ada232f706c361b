//go:build bench

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/emailqos/emailqosreceiver/internal/imapwatch"
	"github.com/emailqos/emailqosreceiver/internal/probe"
	"github.com/emailqos/emailqosreceiver/internal/probemsg"
	"github.com/emailqos/emailqosreceiver/internal/saslx"
	"github.com/emailqos/emailqosreceiver/internal/transport"
)

// account is one mailstack account and its plain-text endpoints: the
// benchmark measures detection, so every hop uses security none on both
// sides (ours and the peer's) to keep TLS out of the CPU figures.
type account struct {
	Addr string `json:"addr"`
	Pass string `json:"pass"`
	SMTP string `json:"smtp"`
	IMAP string `json:"imap"`
	POP3 string `json:"pop3"`
	// Maildir is the account's Maildir, watched for the ground truth.
	Maildir string `json:"maildir"`
}

type stream struct {
	Sender   account `json:"sender"`
	Receiver account `json:"receiver"`
}

// probeSpec is what one child process runs: N probes spread round-robin
// over the streams, each stream one probe at a time.
type probeSpec struct {
	Prefix          string        `json:"prefix"`
	Method          string        `json:"method"` // idle, poll, precise or pop3
	N               int           `json:"n"`
	Streams         []stream      `json:"streams"`
	PollInterval    time.Duration `json:"poll_interval"`
	PreciseInterval time.Duration `json:"precise_interval"`
}

// probeOut is one probe's result as the child reports it.
type probeOut struct {
	Name        string        `json:"name"`
	Start       time.Time     `json:"start"`
	AcceptedAt  time.Time     `json:"accepted_at"`
	ArrivedAt   time.Time     `json:"arrived_at"`
	Method      string        `json:"method"`
	Uncertainty time.Duration `json:"uncertainty"`
	Commands    int           `json:"commands"`
	Delivered   bool          `json:"delivered"`
	Code        int           `json:"code"`
	Err         string        `json:"err,omitempty"`
	// Detect is the commands spent on detection (commandSplit); Verbs
	// counts the commands by verb, DONE included though it is no command.
	Detect int            `json:"detect"`
	Verbs  map[string]int `json:"verbs"`
}

func probeName(prefix string, i int) string { return fmt.Sprintf("%s-%03d", prefix, i) }

// cmdProbes is the child: its rusage, taken by the parent, is the CPU the
// probes cost, the Go runtime's start included.
func cmdProbes() error {
	var spec probeSpec
	if err := json.NewDecoder(os.Stdin).Decode(&spec); err != nil {
		return fmt.Errorf("probes: spec: %w", err)
	}
	if spec.N == 0 {
		return nil // the parent measures the process start alone
	}
	out := make(chan probeOut)
	var wg sync.WaitGroup
	for s := range spec.Streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// One target per stream for all its probes, as the receiver
			// keeps one per direction: auto detection learns from the
			// direction's earlier probes.
			t := newTarget(spec, spec.Streams[s])
			for i := s; i < spec.N; i += len(spec.Streams) {
				out <- runOne(t, probeName(spec.Prefix, i))
			}
		}()
	}
	go func() { wg.Wait(); close(out) }()
	enc := json.NewEncoder(os.Stdout)
	for r := range out {
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	return nil
}

func newTarget(spec probeSpec, st stream) *probe.Target {
	acct := func(a account, key string) *probe.Account {
		pa := &probe.Account{
			Key:         key,
			Address:     a.Addr,
			Credentials: saslx.Credentials{Username: a.Addr, Password: a.Pass},
			SMTP:        transport.Endpoint{Address: a.SMTP, Security: transport.None},
			IMAP:        transport.Endpoint{Address: a.IMAP, Security: transport.None},
			Mailbox:     "INBOX",
			Detection:   imapwatch.Method(spec.Method),
			MACKey:      probemsg.DeriveKey([]byte(a.Pass), a.Addr),
		}
		if spec.Method == "pop3" {
			pa.Retrieval = probe.RetrievalPOP3
			pa.Detection = imapwatch.MethodAuto
			pa.IMAP = transport.Endpoint{}
			pa.POP3 = transport.Endpoint{Address: a.POP3, Security: transport.None}
		}
		return pa
	}
	sender, receiver := acct(st.Sender, "s"), acct(st.Receiver, "r")
	kind := probe.Transit
	if st.Sender.Addr == st.Receiver.Addr {
		kind, sender = probe.Roundtrip, receiver
	}
	return &probe.Target{
		Kind:            kind,
		Sender:          sender,
		Receiver:        receiver,
		Direction:       "s:r",
		DeliveryTimeout: time.Minute,
		PollInterval:    spec.PollInterval,
		PreciseInterval: spec.PreciseInterval,
		Timeout:         90 * time.Second,
		Cleanup:         probe.CleanupDelete,
		// For the command breakdown (commandSplit); its CPU is in the
		// figures.
		Transcript: true,
	}
}

// runOne runs one probe of t named name. The name goes into the probe's
// X-Emailqos-Target header: the ground truth finds each probe's file by it.
// A stream's probes run one at a time, so t is not shared meanwhile.
func runOne(t *probe.Target, name string) probeOut {
	t.Name = name
	r := probe.Run(context.Background(), t, nil)
	o := probeOut{
		Name: name, Start: r.Start, AcceptedAt: r.AcceptedAt, ArrivedAt: r.ArrivedAt,
		Method: string(r.Method), Uncertainty: r.Uncertainty, Commands: r.Commands,
		Delivered: r.Delivered, Code: r.Code,
	}
	if r.Err != nil {
		o.Err = r.Err.Error()
	}
	o.Detect, o.Verbs = commandSplit(r.Transcript.Lines(), r.AcceptedAt.Sub(r.Start))
	return o
}

// commandSplit sorts the mailbox commands of a probe's transcript lines
// ("+1.234s imap C: T5 NOOP") into detection and fixed session cost:
// detection is every IDLE and NOOP, and every command sent from the 250
// reply to DATA (accepted, from the probe's start) until the first cleanup
// command (STORE, EXPUNGE, MOVE, COPY, LOGOUT; POP3 DELE): the polls and
// the search and fetch that found the probe, and for POP3 every command of
// the poll sessions. The rest (login to select, the baseline, cleanup,
// housekeeping, logout) is the session's fixed cost. DONE is counted in
// verbs only, as the receiver does not count it as a command.
func commandSplit(lines []string, accepted time.Duration) (detect int, verbs map[string]int) {
	verbs = map[string]int{}
	acceptedMs := accepted.Truncate(time.Millisecond)
	cleaning := false
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) < 4 || (f[1] != "imap" && f[1] != "pop3") || f[2] != "C:" {
			continue
		}
		off, err := time.ParseDuration(strings.TrimPrefix(f[0], "+"))
		if err != nil {
			continue
		}
		verb := f[3]
		if f[1] == "imap" {
			if verb == "DONE" {
				verbs["DONE"]++
				continue
			}
			if len(f) < 5 || !strings.HasPrefix(verb, "T") {
				continue // a SASL response or a literal
			}
			verb = strings.ToUpper(f[4])
			if verb == "UID" && len(f) > 5 {
				verb += " " + strings.ToUpper(f[5])
			}
		}
		verb = strings.ToUpper(verb)
		if f[1] == "pop3" && (strings.HasPrefix(verb, "[") || strings.HasPrefix(verb, "*")) {
			continue // a SASL response
		}
		verbs[verb]++
		switch strings.TrimPrefix(verb, "UID ") {
		case "STORE", "EXPUNGE", "MOVE", "COPY", "LOGOUT", "DELE":
			if off >= acceptedMs {
				cleaning = true
			}
		}
		switch {
		case verb == "IDLE" || verb == "NOOP":
			detect++
		case off >= acceptedMs && !cleaning:
			detect++
		}
	}
	return detect, verbs
}
