package scale

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// startTimeout bounds the wait for the servers' "ready".
const startTimeout = 30 * time.Second

// Servers is a running set of mail servers, in a child process or in this
// one, as seen through the line protocol.
type Servers struct {
	// Addr maps smtp, smtps, imap, imaps and pop3 to listener addresses.
	Addr map[string]string
	// CAPEM is the throwaway CA (TLS only).
	CAPEM []byte

	cmd   *exec.Cmd // nil when in this process
	stdin io.Closer
	stop  context.CancelFunc
	done  chan error

	mu      sync.Mutex
	visible map[string][]time.Time
}

// StartChild starts cmd, a process running Main, and waits until it serves.
func StartChild(cmd *exec.Cmd) (*Servers, error) {
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if cmd.Stderr == nil {
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &Servers{cmd: cmd, stdin: in}
	if err := s.handshake(out); err != nil {
		in.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, err
	}
	return s, nil
}

// StartInProcess runs Serve in this process, for comparison with a child.
func StartInProcess(opts ServeOptions) (*Servers, error) {
	ctx, cancel := context.WithCancel(context.Background())
	r, w := io.Pipe()
	s := &Servers{stop: cancel, done: make(chan error, 1)}
	serveDone := make(chan error, 1)
	go func() {
		err := Serve(ctx, opts, w)
		w.CloseWithError(err) // nil: io.EOF
		serveDone <- err
	}()
	if err := s.handshake(r); err != nil {
		cancel()
		return nil, errors.Join(err, <-serveDone)
	}
	go func() { s.done <- <-serveDone }()
	return s, nil
}

func (s *Servers) handshake(out io.Reader) error {
	s.Addr = map[string]string{}
	s.visible = map[string][]time.Time{}
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	ready := make(chan error, 1)
	go func() {
		isReady := false
		for sc.Scan() {
			name, value, _ := strings.Cut(sc.Text(), " ")
			switch {
			case name == "ready":
				isReady = true
				ready <- nil
			case name == "visible":
				s.recordVisible(value)
			case isReady:
			case name == "ca":
				pem, err := base64.StdEncoding.DecodeString(value)
				if err != nil {
					ready <- fmt.Errorf("bad CA line: %w", err)
					return
				}
				s.CAPEM = pem
			default:
				s.Addr[name] = value
			}
		}
		if !isReady {
			ready <- fmt.Errorf("servers exited before ready: %v", sc.Err())
		}
		// Drained to the end, so the server never blocks on a full pipe.
		_, _ = io.Copy(io.Discard, out)
	}()
	select {
	case err := <-ready:
		return err
	case <-time.After(startTimeout):
		return errors.New("servers not ready in time")
	}
}

func (s *Servers) recordVisible(value string) {
	rcpt, ns, _ := strings.Cut(value, " ")
	n, err := strconv.ParseInt(ns, 10, 64)
	if err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.visible[rcpt] = append(s.visible[rcpt], time.Unix(0, n))
}

// Visible is every instant a message to rcpt became visible, in order.
func (s *Servers) Visible(rcpt string) []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.visible[rcpt]...)
}

// ClientTLS trusts the servers' CA (nil without TLS).
func (s *Servers) ClientTLS() *tls.Config {
	if s.CAPEM == nil {
		return nil
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.CAPEM)
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

// CPU is the CPU time (user+system) the child has used so far; zero for
// servers in this process.
func (s *Servers) CPU() time.Duration {
	if s.cmd == nil {
		return 0
	}
	cpu, err := procCPU(s.cmd.Process.Pid)
	if err != nil {
		return 0
	}
	return cpu
}

// Close stops the servers and, for a child, returns its resource usage.
func (s *Servers) Close() (*syscall.Rusage, error) {
	if s.cmd == nil {
		s.stop()
		return nil, <-s.done
	}
	s.stdin.Close()
	waited := make(chan error, 1)
	go func() { waited <- s.cmd.Wait() }()
	var err error
	select {
	case err = <-waited:
	case <-time.After(2 * startTimeout):
		_ = s.cmd.Process.Kill()
		err = errors.Join(errors.New("servers did not stop in time"), <-waited)
	}
	ru, _ := s.cmd.ProcessState.SysUsage().(*syscall.Rusage)
	return ru, err
}
