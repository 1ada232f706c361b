package mailtest

import (
	"bytes"
	"fmt"
	"time"

	"github.com/emersion/go-imap/v2"
)

// bounce returns the failure notice this server sends back to the sender
// when the next hop refuses msg (Faults.Bounce): an RFC 3464 report in the
// layout Postfix writes (bounce(5); https://www.postfix.org/DSN_README.html),
// returning the message's headers only (text/rfc822-headers, RET=HDRS).
func bounce(from, rcpt, envid string, msg []byte, now time.Time) []byte {
	header, _, _ := bytes.Cut(msg, []byte("\r\n\r\n"))
	const boundary = "mailtest-bounce-boundary"
	var b bytes.Buffer
	fmt.Fprintf(&b, "Return-Path: <>\r\nDate: %s\r\nFrom: MAILER-DAEMON@%s (Mail Delivery System)\r\n", now.Format(time.RFC1123Z), Domain)
	fmt.Fprintf(&b, "Subject: Undelivered Mail Returned to Sender\r\nTo: %s\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n", from)
	fmt.Fprintf(&b, "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=%q\r\n\r\n", boundary)
	fmt.Fprintf(&b, "--%s\r\nContent-Type: text/plain\r\n\r\nThis is the mail system at host %s.\r\n\r\n<%s>: host mx.next.test said: 554 5.7.1 refused\r\n\r\n", boundary, Domain, rcpt)
	fmt.Fprintf(&b, "--%s\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; %s\r\n", boundary, Domain)
	if envid != "" {
		fmt.Fprintf(&b, "Original-Envelope-Id: %s\r\n", envid)
	}
	fmt.Fprintf(&b, "\r\nFinal-Recipient: rfc822; %s\r\nAction: failed\r\nStatus: 5.7.1\r\nRemote-MTA: dns; mx.next.test\r\nDiagnostic-Code: smtp; 554 5.7.1 refused\r\n\r\n", rcpt)
	fmt.Fprintf(&b, "--%s\r\nContent-Type: text/rfc822-headers\r\n\r\n%s\r\n\r\n--%s--\r\n", boundary, header, boundary)
	return b.Bytes()
}

// sendBounce files the notice in the sender's INBOX in the background, as
// an MTA's queue would, when the sender is a user of this server (else it
// is dropped, as an undeliverable bounce).
func (s *Server) sendBounce(from, rcpt, envid string, msg []byte) {
	a := s.lookup(from)
	if a == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.deliverWG.Add(1)
	go func() {
		defer s.deliverWG.Done()
		s.fileBounce(a, from, rcpt, envid, msg)
	}()
}

func (s *Server) fileBounce(a *account, from, rcpt, envid string, msg []byte) {
	if _, err := a.mem.Append("INBOX", bytes.NewReader(bounce(from, rcpt, envid, msg, time.Now())), &imap.AppendOptions{}); err != nil {
		return
	}
	s.changes.notify()
}
