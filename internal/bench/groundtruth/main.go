//go:build bench

// Command groundtruth measures how wrong the receiver's arrival instant is
// on the real Postfix/Dovecot stack of scripts/mailstack.sh, and does the
// same for the Nagios plugin check_email_delivery. The ground truth is the
// instant the message file lands in the receiving Maildir, seen with
// inotify on this machine's clock, the clock the probe also reads.
//
//	groundtruth run [flags]      the whole benchmark; writes groundtruth.md and peer.md
//	groundtruth relay [flags]    an SMTP relay that holds every message for -delay
//	groundtruth probes           (child) runs the probes a JSON spec on stdin names
//
// scripts/bench-mailstack.sh starts the stack, adds the accounts, routes
// a.test's mail for b.test through the relay and runs `groundtruth run`.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: groundtruth run|relay|probes [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = cmdRun(os.Args[2:])
	case "relay":
		err = cmdRelay(os.Args[2:])
	case "probes":
		err = cmdProbes()
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "groundtruth:", err)
		os.Exit(1)
	}
}
