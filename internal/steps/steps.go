// Package steps names the steps of a probe and times them (steps.go),
// gives each failure its LogicMonitor-compatible error code (codes.go: the
// one table), classifies failures into a small closed set of error types
// (errors.go), so that no raw error text ever becomes a metric attribute,
// and carries what a TLS handshake showed (tlsinfo.go).
package steps // import "github.com/emailqos/emailqosreceiver/internal/steps"

import (
	"sort"
	"strings"
	"sync"
	"time"
)

// Step names. They are the values of the `step` metric attribute declared in
// metadata.yaml; a new step must be added there too.
const (
	SMTPConnect  = "smtp.connect"
	SMTPTLS      = "smtp.tls"
	SMTPEHLO     = "smtp.ehlo"
	SMTPAuth     = "smtp.auth"
	SMTPSubmit   = "smtp.submit"
	SMTPQuit     = "smtp.quit"
	IMAPConnect  = "imap.connect"
	IMAPTLS      = "imap.tls"
	IMAPLogin    = "imap.login"
	IMAPSelect   = "imap.select"
	DeliveryWait = "delivery.wait"
	IMAPSearch   = "imap.search"
	IMAPFetch    = "imap.fetch"
	IMAPDelete   = "imap.delete"
	IMAPLogout   = "imap.logout"
	POP3Connect  = "pop3.connect"
	POP3TLS      = "pop3.tls"
	POP3Login    = "pop3.login"
	POP3List     = "pop3.list"
	POP3Fetch    = "pop3.fetch"
	POP3Delete   = "pop3.delete"
	POP3Quit     = "pop3.quit"
	// The API transports (issue 18): one step per kind of call. list is
	// every call that reads the mailbox (baseline, delta or history pages,
	// message headers); send is Graph's 202 or Gmail's 200 answer.
	GraphSend      = "graph.send"
	GraphList      = "graph.list"
	GraphDelete    = "graph.delete"
	GmailAPISend   = "gmailapi.send"
	GmailAPIList   = "gmailapi.list"
	GmailAPIDelete = "gmailapi.delete"
)

// Protocol is the protocol a step belongs to: the part of its name before
// the first dot (smtp, imap, pop3, graph, gmailapi).
func Protocol(step string) string {
	p, _, _ := strings.Cut(step, ".")
	return p
}

// Timing is the measured duration of one step.
type Timing struct {
	Step     string
	Start    time.Time
	Duration time.Duration
}

// Recorder collects step timings of one probe. It is safe for concurrent use
// because the sending and the receiving side of a probe run concurrently.
type Recorder struct {
	mu      sync.Mutex
	timings []Timing
	tls     []TLS
}

// AddTLS records a TLS handshake. A protocol's later handshake (a
// reconnect) replaces its earlier one.
func (r *Recorder) AddTLS(t TLS) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.tls {
		if r.tls[i].Protocol == t.Protocol {
			r.tls[i] = t
			return
		}
	}
	r.tls = append(r.tls, t)
}

// TLS returns a copy of the recorded handshakes, one per protocol, in the
// order the protocols were first seen.
func (r *Recorder) TLS() []TLS {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]TLS(nil), r.tls...)
}

// Do runs fn and records its duration under step, whether it failed or not.
func (r *Recorder) Do(step string, fn func() error) error {
	start := time.Now()
	err := fn()
	r.Add(step, start, time.Since(start))
	return err
}

// Add records a step measured by the caller. A step recorded twice (for
// example a search repeated while polling) accumulates.
func (r *Recorder) Add(step string, start time.Time, d time.Duration) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.timings {
		if r.timings[i].Step == step {
			r.timings[i].Duration += d
			return
		}
	}
	r.timings = append(r.timings, Timing{Step: step, Start: start, Duration: d})
}

// Timings returns a copy of the recorded timings in the order the steps began.
func (r *Recorder) Timings() []Timing {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Timing, len(r.timings))
	copy(out, r.timings)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Start.Before(out[j].Start) })
	return out
}
