package graphtest_test

import (
	"bytes"
	"context"
	"errors"
	"net/smtp"
	"testing"
	"time"

	"github.com/emailqos/emailqosreceiver/internal/graph"
	"github.com/emailqos/emailqosreceiver/internal/graphtest"
	"github.com/emailqos/emailqosreceiver/internal/mailtest"
)

// The fakes share mailboxes with mailtest through hooks, so a later phase
// can run mixed transits: SMTP into mailtest delivered into a Graph mailbox
// (mailtest OnDeliver -> Deliver), and Graph sendMail to a mailtest user
// (Route -> mailtest Append).
func TestMixedWithMailtest(t *testing.T) {
	var gr *graphtest.Server
	mt, err := mailtest.Start(mailtest.Options{
		Users: []mailtest.User{{Address: "b@m365.test", Password: "pw-b"}, {Address: "c@dovecot.test", Password: "pw-c"}},
		OnDeliver: func(rcpt string, raw []byte) error {
			if rcpt == "b@m365.test" {
				if err := gr.Deliver(rcpt, raw); err != nil {
					return err
				}
				return errors.New("handed to the Graph fake")
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer mt.Close()
	gr = graphtest.New(graphtest.Options{Users: []string{"b@m365.test"},
		Route: func(rcpt string, raw []byte) bool { return mt.Append(rcpt, raw, nil) == nil }})
	defer gr.Close()

	raw := []byte("From: <c@dovecot.test>\r\nTo: <b@m365.test>\r\nSubject: smtp to graph\r\n\r\nx\r\n")
	auth := smtp.PlainAuth("", "c@dovecot.test", "pw-c", "127.0.0.1")
	if err := smtp.SendMail(mt.SMTPAddr(), auth, "c@dovecot.test", []string{"b@m365.test"}, raw); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(gr.Messages("b@m365.test", "inbox")) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("SMTP delivery never reached the Graph mailbox")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := gr.Messages("b@m365.test", "inbox")[0].Raw; !bytes.Contains(got, []byte("Subject: smtp to graph")) {
		t.Fatalf("raw: %q", got)
	}
	// And back: Graph sendMail to the mailtest user.
	gc, err := graph.New(func(context.Context) (string, error) { return "t", nil }, graph.Options{BaseURL: gr.URL()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	back := []byte("From: <b@m365.test>\r\nTo: <c@dovecot.test>\r\nSubject: graph to imap\r\n\r\nx\r\n")
	if err := gc.SendMIME(ctx, "b@m365.test", back); err != nil {
		t.Fatal(err)
	}
	for {
		box, err := mt.Mailbox("c@dovecot.test")
		if err != nil {
			t.Fatal(err)
		}
		if len(box) == 1 && bytes.Contains(box[0].Raw, []byte("Subject: graph to imap")) {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("Graph send never reached the mailtest mailbox")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
