// Package scale supports the benchmarks: it runs the in-process mail
// servers (mailtest, pop3test) in a process of their own, so that the
// measuring process's CPU time and memory are the probing client's alone, and
// reads a process's resource use.
//
// The server process speaks a line protocol on its standard output: one
// "<name> <value>" line per listener and the CA, then "ready", then a
// "visible <rcpt> <unix-ns>" line each time a message becomes visible. It
// stops when its standard input closes.
package scale // import "github.com/emailqos/emailqosreceiver/internal/bench/scale"

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"time"

	"github.com/emailqos/emailqosreceiver/internal/mailtest"
	"github.com/emailqos/emailqosreceiver/internal/pop3test"
)

// Domain is the mail domain of the generated users.
const Domain = "bench.test"

// POP3User is the address whose deliveries go to the POP3 maildrop.
const POP3User = "pop@" + Domain

// User returns the address and password of generated user i.
func User(i int) (address, password string) {
	return fmt.Sprintf("u%d@%s", i, Domain), fmt.Sprintf("bench-pw-%d", i)
}

// ServeOptions configures the mail servers.
type ServeOptions struct {
	// Users is the number of IMAP users, User(0) .. User(Users-1).
	Users int
	// POP3 also starts a POP3 server holding the maildrop of POP3User.
	POP3 bool
	// TLS offers STARTTLS and implicit TLS with a throwaway CA.
	TLS bool
	// DelayMin and DelayMax bound the random delay between the SMTP server
	// accepting a message and it becoming visible, so that arrivals do not
	// fall in step with a poll.
	DelayMin, DelayMax time.Duration
}

// Args is opts as command-line arguments for ParseArgs.
func (o ServeOptions) Args() []string {
	return []string{
		fmt.Sprintf("-users=%d", o.Users), fmt.Sprintf("-pop3=%t", o.POP3), fmt.Sprintf("-tls=%t", o.TLS),
		"-delay-min=" + o.DelayMin.String(), "-delay-max=" + o.DelayMax.String(),
	}
}

// ParseArgs reads the arguments Args wrote.
func ParseArgs(args []string) (ServeOptions, error) {
	var o ServeOptions
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.IntVar(&o.Users, "users", 1, "number of IMAP users")
	fs.BoolVar(&o.POP3, "pop3", false, "also serve POP3 for "+POP3User)
	fs.BoolVar(&o.TLS, "tls", false, "offer STARTTLS and implicit TLS")
	fs.DurationVar(&o.DelayMin, "delay-min", 0, "least delivery delay")
	fs.DurationVar(&o.DelayMax, "delay-max", 0, "greatest delivery delay")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if o.DelayMax < o.DelayMin {
		o.DelayMax = o.DelayMin
	}
	return o, nil
}

// Main is the server process: it serves until its standard input closes and
// returns the exit status.
func Main(args []string) int {
	opts, err := ParseArgs(args)
	if err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		return 2
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		// The parent closes our standard input to stop us, or dies.
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	if err := Serve(ctx, opts, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		return 1
	}
	return 0
}

// Serve runs the servers until ctx is done, writing the line protocol to out.
func Serve(ctx context.Context, opts ServeOptions, out io.Writer) error {
	w := &lineWriter{w: bufio.NewWriter(out)}
	users := make([]mailtest.User, 0, opts.Users+1)
	for i := range opts.Users {
		addr, pw := User(i)
		users = append(users, mailtest.User{Address: addr, Password: pw})
	}
	var pop *pop3test.Server
	if opts.POP3 {
		addr, pw := POP3User, "bench-pw-pop"
		users = append(users, mailtest.User{Address: addr, Password: pw})
		var popOpts pop3test.Options
		popOpts.Users = map[string]string{addr: pw}
		var err error
		if pop, err = pop3test.Start(popOpts); err != nil {
			return err
		}
		defer pop.Close()
	}
	errRouted := errors.New("delivered to the POP3 maildrop")
	srv, err := mailtest.Start(mailtest.Options{
		Users: users,
		TLS:   opts.TLS,
		OnDeliver: func(rcpt string, msg []byte) error {
			if d := opts.DelayMin + rand.N(opts.DelayMax-opts.DelayMin+1); d > 0 {
				time.Sleep(d)
			}
			if pop != nil && rcpt == POP3User {
				pop.Add(rcpt, msg)
				// The POP3 maildrop is the only one that sees it.
				w.line("visible %s %d", rcpt, time.Now().UnixNano())
				return errRouted
			}
			return nil
		},
		OnVisible: func(rcpt string, at time.Time) { w.line("visible %s %d", rcpt, at.UnixNano()) },
	})
	if err != nil {
		return err
	}
	w.line("smtp %s", srv.SMTPAddr())
	w.line("imap %s", srv.IMAPAddr())
	if opts.TLS {
		w.line("smtps %s", srv.SMTPSAddr())
		w.line("imaps %s", srv.IMAPSAddr())
		w.line("ca %s", base64.StdEncoding.EncodeToString(srv.CACertPEM()))
	}
	if pop != nil {
		w.line("pop3 %s", pop.Addr())
	}
	w.line("ready")
	<-ctx.Done()
	return srv.Close()
}

// lineWriter writes whole lines, flushed at once, from any goroutine.
type lineWriter struct {
	mu sync.Mutex
	w  *bufio.Writer
}

func (l *lineWriter) line(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, format+"\n", args...)
	_ = l.w.Flush()
}
