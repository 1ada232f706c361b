package faultnet

import (
	"fmt"
	"net"
	"syscall"
	"time"
)

// unanswered holds a port whose connects are never answered: a listening
// socket with backlog 0 that nobody accepts on, whose only queue slot is
// taken by a connection of its own. Linux then drops further SYNs on the
// floor (the accept queue is full), so a client's connect neither succeeds
// nor fails until its own deadline, as with a firewall that drops packets.
type unanswered struct {
	fd     int
	filler net.Conn
}

// Unanswered is an endpoint on loopback that never answers a connect.
type Unanswered struct{ u *unanswered }

// NewUnanswered holds a random loopback port that never answers a connect.
func NewUnanswered() (*Unanswered, error) {
	u, err := listenUnanswered("127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	return &Unanswered{u}, nil
}

// Addr is the endpoint's address.
func (u *Unanswered) Addr() string { return u.u.addr() }

// Close frees the port; pending connects are then refused.
func (u *Unanswered) Close() error { return u.u.Close() }

func listenUnanswered(addr string) (*unanswered, error) {
	ap, err := net.ResolveTCPAddr("tcp4", addr)
	if err != nil {
		return nil, err
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	u := &unanswered{fd: fd}
	sa := &syscall.SockaddrInet4{Port: ap.Port}
	copy(sa.Addr[:], ap.IP.To4())
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		u.Close()
		return nil, err
	}
	// The port of a listener closed a moment ago may still be busy.
	for i := 0; ; i++ {
		if err = syscall.Bind(fd, sa); err == nil || i == 50 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		u.Close()
		return nil, fmt.Errorf("faultnet: bind %s: %w", addr, err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		u.Close()
		return nil, err
	}
	// Fill the single queue slot; the filler's connect completes at once.
	u.filler, err = net.DialTimeout("tcp", u.addr(), 2*time.Second)
	if err != nil {
		u.Close()
		return nil, fmt.Errorf("faultnet: filling the accept queue: %w", err)
	}
	return u, nil
}

func (u *unanswered) addr() string {
	sa, err := syscall.Getsockname(u.fd)
	if err != nil {
		return ""
	}
	in := sa.(*syscall.SockaddrInet4)
	return (&net.TCPAddr{IP: net.IP(in.Addr[:]), Port: in.Port}).String()
}

func (u *unanswered) Close() error {
	if u.filler != nil {
		u.filler.Close()
	}
	return syscall.Close(u.fd)
}
