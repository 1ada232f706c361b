//go:build bench

package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/emersion/go-smtp"
)

// cmdRelay runs a store-and-forward SMTP relay that holds each message for
// a fixed delay after its DATA arrived, then hands it to the next hop, and
// answers the sender only after that: the injected delay is exact and the
// message is never queued twice.
func cmdRelay(args []string) error {
	fs := flag.NewFlagSet("relay", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.3:12725", "address to listen on")
	to := fs.String("to", "", "next hop (host:port), e.g. b.test's MX")
	delay := fs.Duration("delay", time.Second, "how long each message is held")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *to == "" {
		return errors.New("relay: -to is required")
	}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		return &relaySession{to: *to, delay: *delay}, nil
	}))
	srv.Addr = *listen
	srv.Domain = "relay.test"
	srv.ReadTimeout = 2 * time.Minute
	srv.WriteTimeout = 2 * time.Minute
	srv.MaxMessageBytes = 10 << 20
	srv.ErrorLog = log.New(io.Discard, "", 0)
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		_ = srv.Close()
	}()
	fmt.Fprintf(os.Stderr, "relay: %s -> %s, delay %s\n", *listen, *to, *delay)
	if err := srv.Serve(l); err != nil && !errors.Is(err, smtp.ErrServerClosed) {
		return err
	}
	return nil
}

type relaySession struct {
	to    string
	delay time.Duration
	from  string
	rcpts []string
}

func (s *relaySession) Reset()        { s.from, s.rcpts = "", nil }
func (s *relaySession) Logout() error { return nil }

func (s *relaySession) Mail(from string, _ *smtp.MailOptions) error {
	s.from = from
	return nil
}

func (s *relaySession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.rcpts = append(s.rcpts, to)
	return nil
}

func (s *relaySession) Data(r io.Reader) error {
	msg, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	time.Sleep(s.delay)
	c, err := smtp.Dial(s.to)
	if err != nil {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 1}, Message: "next hop: " + err.Error()}
	}
	defer c.Close()
	if err := c.Hello("relay.test"); err != nil {
		return err
	}
	if err := c.SendMail(s.from, s.rcpts, bytes.NewReader(msg)); err != nil {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "next hop: " + err.Error()}
	}
	_ = c.Quit()
	return nil
}
