//go:build bench

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// measureIdleDelay times Dovecot's IDLE announcement alone: a bare IDLE
// session on a quiet mailbox, messages submitted one at a time with a quiet
// gap (a change in the mailbox arms Dovecot's notification timer, so a
// message landing while it runs is announced early), none deleted while
// the session idles. The messages are removed from the Maildir afterwards.
func measureIdleDelay(truth *landings, acct account, n int) (idleRow, error) {
	w, err := startIdleWatch(acct.IMAP, acct.Addr, acct.Pass)
	if err != nil {
		return idleRow{}, fmt.Errorf("idle watch: %w", err)
	}
	defer removeIdleMessages(acct.Maildir)
	defer w.close()
	time.Sleep(1500 * time.Millisecond)
	var ds []time.Duration
	run := time.Now().Unix()
	for i := 0; i < n; i++ {
		key := fmt.Sprintf("%d-%03d", run, i)
		msg := fmt.Sprintf("From: %s\r\nTo: %s\r\nSubject: emailqos-idle %s\r\n\r\nIDLE delay sample\r\n", acct.Addr, acct.Addr, key)
		if err := submitPlain(acct, msg); err != nil {
			return idleRow{}, fmt.Errorf("idle sample: submit: %w", err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			if landed, ok := truth.get("idle:" + key); ok {
				if seen, ok := w.after(landed); ok {
					ds = append(ds, seen.Sub(landed))
					break
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(1500 * time.Millisecond)
	}
	return idleRow{n: len(ds), median: median(ds), p99: p99(ds)}, nil
}

// removeIdleMessages deletes the samples' files once no session is open.
func removeIdleMessages(maildir string) {
	for _, sub := range []string{"new", "cur"} {
		files, _ := filepath.Glob(filepath.Join(maildir, sub, "*"))
		for _, f := range files {
			if head, err := readHead(f); err == nil && strings.HasPrefix(keyOf(head), "idle:") {
				_ = os.Remove(f)
			}
		}
	}
}

// submitPlain submits msg with AUTH PLAIN on the stack's plain-text
// submission port (loopback test accounts only).
func submitPlain(acct account, msg string) error {
	c, err := smtp.Dial(acct.SMTP)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("groundtruth.test"); err != nil {
		return err
	}
	if err := c.Auth(sasl.NewPlainClient("", acct.Addr, acct.Pass)); err != nil {
		return err
	}
	if err := c.SendMail(acct.Addr, []string{acct.Addr}, strings.NewReader(msg)); err != nil {
		return err
	}
	return c.Quit()
}
