//go:build bench

package main

import (
	"testing"
	"time"
)

func TestCommandSplit(t *testing.T) {
	lines := []string{
		"+0.001s imap C: T1 CAPABILITY",
		"+0.002s imap C: T2 LOGIN [redacted]",
		"+0.003s imap C: T3 SELECT INBOX",
		"+0.004s imap C: T4 IDLE",
		"+0.005s smtp C: DATA",
		"+0.006s imap C: DONE",
		"+0.006s imap S: T5 OK NOOP completed (0.001 + 0.000 secs).",
		"+0.006s imap C: T5 NOOP",
		"+0.007s imap C: T6 UID SEARCH UID 5:*",
		"+0.008s imap C: T7 UID FETCH 5 (UID BODY.PEEK[HEADER])",
		"+0.009s imap S: T7 OK done",
		"+0.010s imap C: T8 UID STORE 5 +FLAGS.SILENT (\\Deleted)",
		"+0.011s imap C: T9 UID EXPUNGE 5",
		"+0.012s imap C: T10 UID SEARCH HEADER X-Emailqos-Token x",
		"+0.013s imap C: T11 LOGOUT",
	}
	detect, verbs := commandSplit(lines, 6*time.Millisecond)
	// IDLE, NOOP, and the search and fetch before the cleanup.
	if detect != 4 {
		t.Fatalf("detection %d, want 4 (%v)", detect, verbs)
	}
	if verbs["UID SEARCH"] != 2 || verbs["DONE"] != 1 || verbs["LOGIN"] != 1 || verbs["DATA"] != 0 {
		t.Fatalf("verbs %v", verbs)
	}
	total := 0
	for v, n := range verbs {
		if v != "DONE" {
			total += n
		}
	}
	if total != 11 {
		t.Fatalf("%d commands, want 11", total)
	}

	pop := []string{
		"+0.001s pop3 C: USER a", "+0.002s pop3 C: PASS [redacted]", "+0.003s pop3 C: UIDL", "+0.004s pop3 C: QUIT",
		"+0.010s pop3 C: USER a", "+0.011s pop3 C: PASS [redacted]", "+0.012s pop3 C: UIDL", "+0.013s pop3 C: TOP 1 0",
		"+0.014s pop3 C: DELE 1", "+0.015s pop3 C: QUIT",
	}
	if detect, _ := commandSplit(pop, 8*time.Millisecond); detect != 4 {
		t.Fatalf("POP3 detection %d, want 4", detect)
	}
}
