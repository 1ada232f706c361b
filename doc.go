// Package emailqosreceiver implements an OpenTelemetry Collector receiver
// that measures email quality of service: it sends a probe message over
// SMTP and finds it again in a mailbox over IMAP or POP3, timing every step.
package emailqosreceiver // import "github.com/emailqos/emailqosreceiver"
