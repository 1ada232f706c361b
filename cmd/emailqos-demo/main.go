// Command emailqos-demo runs the in-process test mail system on loopback so
// that the receiver can be tried without a real mail provider.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/emailqos/emailqosreceiver/internal/mailtest"
)

var accounts = []mailtest.User{
	{Address: "alice@demo.test", Password: "alice-demo-password"},
	{Address: "bob@example.test", Password: "bob-demo-password"},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "emailqos-demo:", err)
		}
		os.Exit(2)
	}
}

// run serves until ctx is done.
func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("emailqos-demo", flag.ContinueOnError)
	smtpAddr := fs.String("smtp", "127.0.0.1:2525", "SMTP listen address (loopback only)")
	imapAddr := fs.String("imap", "127.0.0.1:1143", "IMAP listen address (loopback only)")
	delay := fs.Duration("delay", 200*time.Millisecond, "delay between SMTP acceptance and IMAP visibility")
	useTLS := fs.Bool("tls", false, "offer STARTTLS and start implicit-TLS listeners with a throwaway CA")
	caOut := fs.String("ca-out", "", "with -tls, write the throwaway CA certificate (PEM) to this file")
	fault := fs.String("fault", "", "break the mail system to see the alerts fire: "+strings.Join(faultNames(), ", "))
	faultAfter := fs.Duration("fault-after", 0, "with -fault, run healthy for this long first")
	authResults := fs.String("auth-results", "", "stamp delivered messages with this Authentication-Results verdict (e.g. \"spf=pass; dkim=pass; dmarc=fail\")")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if *caOut != "" && !*useTLS {
		return errors.New("-ca-out needs -tls")
	}
	faults, ok := demoFaults[*fault]
	if !ok {
		return fmt.Errorf("-fault %q: unknown; one of %s", *fault, strings.Join(faultNames(), ", "))
	}
	if *faultAfter < 0 || (*faultAfter > 0 && *fault == "") {
		return errors.New("-fault-after needs -fault and a duration of 0 or more")
	}

	logger, err := zap.NewDevelopment(zap.IncreaseLevel(zap.InfoLevel))
	if err != nil {
		return err
	}
	defer func() { _ = logger.Sync() }()

	srv, err := mailtest.Start(mailtest.Options{
		Users:         accounts,
		SMTPListen:    *smtpAddr,
		IMAPListen:    *imapAddr,
		TLS:           *useTLS,
		DeliveryDelay: *delay,
		AuthResults:   *authResults,
		OnVisible: func(rcpt string, at time.Time) {
			logger.Info("message delivered", zap.String("rcpt", rcpt), zap.Time("visible_at", at))
		},
		Logger: logger,
	})
	if err != nil {
		return err
	}
	if *faultAfter == 0 {
		srv.SetFaults(faults)
	} else {
		// Healthy first, so that the dashboard has data of both kinds.
		timer := time.AfterFunc(*faultAfter, func() {
			srv.SetFaults(faults)
			logger.Info("fault switched on", zap.String("fault", *fault))
		})
		defer timer.Stop()
	}
	if *caOut != "" {
		if err := os.WriteFile(*caOut, srv.CACertPEM(), 0o644); err != nil {
			return errors.Join(err, srv.Close())
		}
	}

	security := "none (plain text, credentials in clear)"
	if *useTLS {
		security = "STARTTLS on the plain ports, implicit TLS on the TLS ports"
	}
	fmt.Fprintf(out, "emailqos demo mail system (delivery delay %v, security %s)\n", *delay, security)
	if *fault != "" {
		fmt.Fprintf(out, "  FAULT %s (after %v): %s\n", *fault, *faultAfter, faultHelp[*fault])
	}
	fmt.Fprintf(out, "  SMTP  %s\n  IMAP  %s\n", srv.SMTPAddr(), srv.IMAPAddr())
	if *useTLS {
		fmt.Fprintf(out, "  SMTPS %s\n  IMAPS %s\n", srv.SMTPSAddr(), srv.IMAPSAddr())
		if *caOut != "" {
			fmt.Fprintf(out, "  CA    %s\n", *caOut)
		}
	}
	fmt.Fprintln(out, "accounts (username = address):")
	for _, u := range accounts {
		fmt.Fprintf(out, "  %-18s password %s\n", u.Address, u.Password)
	}
	fmt.Fprintln(out, "press Ctrl-C to stop")

	<-ctx.Done()
	fmt.Fprintln(out, "stopping")
	return srv.Close()
}

// demoFaults are the failures -fault injects, one per alert a newcomer
// may want to see fire (deploy/prometheus/emailqos-alerts.yaml).
var demoFaults = map[string]mailtest.Faults{
	"":          {},
	"smtp-auth": {RejectAuth: true},
	"lost":      {Blackhole: true},
	"cleanup":   {FailExpunge: true},
	"junk":      {Junk: true},
	"bounce":    {Bounce: true},
}

var faultHelp = map[string]string{
	"smtp-auth": "SMTP AUTH refused (535): error code 2, error.type auth, alert EmailQoSProbeFailing",
	"lost":      "messages accepted and never delivered: error code 4, alert EmailQoSProbeFailing",
	"cleanup":   "IMAP EXPUNGE refused: error code 5, alert EmailQoSCleanupFailing",
	"junk":      "messages filed into Junk: alert EmailQoSProbesInJunk",
	"bounce":    "messages accepted, then refused by the next hop with a delivery status notice: error code 4, error.type bounced, alert EmailQoSProbesBounced",
}

func faultNames() []string {
	var names []string
	for n := range demoFaults {
		if n != "" {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}
