package mailtest

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-smtp"
)

// Faults are the switches that can be flipped while the server runs, for
// tests that break a server and then check the client recovers. Each one
// adds to the Options field of the same name, which holds for the server's
// whole life.
type Faults struct {
	// RejectAuth: SMTP AUTH fails with 535 5.7.8.
	RejectAuth bool
	// DeferMail: MAIL FROM fails with 451 4.3.0 (temporary).
	DeferMail bool
	// RejectRcpt: RCPT TO fails with 550 5.1.1.
	RejectRcpt bool
	// DeferRcpt: RCPT TO fails with 450 4.2.0 (temporary).
	DeferRcpt bool
	// Blackhole: DATA is accepted and the message never delivered.
	Blackhole bool
	// FailExpunge: IMAP EXPUNGE / UID EXPUNGE answer NO.
	FailExpunge bool
	// Junk: deliveries are filed into the recipient's junk folder.
	Junk bool
	// Bounce: DATA is accepted, then the next hop refuses the message
	// (554 5.7.1): it is not delivered, and the sender, when a user of
	// this server, gets a failure notice (RFC 3464) returning its headers.
	Bounce bool
}

var errMailDeferred = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Temporary local problem, try again later"}

// SetFaults replaces the runtime fault switches; sessions already open see
// the change at their next command.
func (s *Server) SetFaults(f Faults) { s.runtime.Store(&f) }

// faults is the switches in force: the Options and the runtime ones.
func (s *Server) faults() Faults {
	f := Faults{}
	if p := s.runtime.Load(); p != nil {
		f = *p
	}
	o := s.opts
	f.RejectAuth = f.RejectAuth || o.RejectAuth
	f.RejectRcpt = f.RejectRcpt || o.RejectRcpt
	f.DeferRcpt = f.DeferRcpt || o.DeferRcpt
	f.Blackhole = f.Blackhole || o.Blackhole
	f.FailExpunge = f.FailExpunge || o.FailExpunge
	f.Junk = f.Junk || o.Junk
	return f
}

// UserMail is a generated mailbox of ordinary user mail for data-safety
// tests: look-alikes of probes by subject, forged probe headers that no
// receiver's key authenticates, and the flags a user sets (\Deleted
// included, which no client but the user's may expunge).
type UserMail struct {
	Raw   []byte
	Flags []imap.Flag
}

// GenerateUserMail returns n ordinary messages to to, the same for the same
// seed, dated before now.
func GenerateUserMail(to string, n int, seed uint64, now time.Time) []UserMail {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	token := func() string {
		const alphabet = "abcdefghijklmnopqrstuvwxyz234567"
		var sb strings.Builder
		sb.WriteString("eq")
		for range 26 {
			sb.WriteByte(alphabet[rng.IntN(len(alphabet))])
		}
		return sb.String()
	}
	out := make([]UserMail, 0, n)
	for i := range n {
		var b bytes.Buffer
		fmt.Fprintf(&b, "From: sender%d@example.test\r\nTo: %s\r\nDate: %s\r\nMessage-ID: <u%d.%d@example.test>\r\n",
			i, to, now.Add(-time.Duration(i+1)*time.Hour).Format(time.RFC1123Z), seed, i)
		switch i % 5 {
		case 0:
			fmt.Fprintf(&b, "Subject: Re: meeting %d\r\n", i)
		case 1:
			fmt.Fprintf(&b, "Subject: emailqos probe %s\r\n", token())
		case 2:
			fmt.Fprintf(&b, "Subject: emailqos probe\r\nX-Emailqos-Token: %s\r\nX-Emailqos-Sent: %s\r\nX-Emailqos-Mac: %064x\r\n",
				token(), now.Add(-72*time.Hour).UTC().Format(time.RFC3339Nano), rng.Uint64())
		case 3:
			fmt.Fprintf(&b, "Subject: tokens without MAC\r\nX-Emailqos-Token: %s\r\n", token())
		case 4:
			fmt.Fprintf(&b, "Subject: body only\r\n")
		}
		b.WriteString("\r\n")
		for range rng.IntN(20) {
			fmt.Fprintf(&b, "line of message %d, X-Emailqos-Token: %s\r\n", i, token())
		}
		var flags []imap.Flag
		if i%4 == 0 {
			flags = append(flags, imap.FlagDeleted)
		}
		if rng.IntN(2) == 0 {
			flags = append(flags, imap.FlagSeen)
		}
		if rng.IntN(8) == 0 {
			flags = append(flags, imap.FlagFlagged)
		}
		out = append(out, UserMail{Raw: b.Bytes(), Flags: flags})
	}
	return out
}
