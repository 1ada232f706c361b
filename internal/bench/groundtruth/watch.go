//go:build bench

package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// landings is the ground truth: when each message file first appeared in a
// watched Maildir, keyed by what identifies it (see keyOf).
type landings struct {
	fd   int
	dirs map[int32]string

	mu    sync.Mutex
	first map[string]time.Time
	// unread counts files gone before they could be read.
	unread int

	stop chan struct{}
	done chan struct{}
}

// watchMaildirs watches new/ and cur/ of every Maildir: Dovecot's LMTP
// writes a message into tmp/ and renames it into new/ (IN_MOVED_TO); a
// link or a direct write shows up as IN_CREATE.
func watchMaildirs(maildirs []string) (*landings, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify: %w", err)
	}
	l := &landings{fd: fd, dirs: map[int32]string{}, first: map[string]time.Time{},
		stop: make(chan struct{}), done: make(chan struct{})}
	for _, md := range maildirs {
		for _, sub := range []string{"new", "cur"} {
			dir := filepath.Join(md, sub)
			wd, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE|unix.IN_MOVED_TO)
			if err != nil {
				unix.Close(fd)
				return nil, fmt.Errorf("inotify %s: %w", dir, err)
			}
			l.dirs[int32(wd)] = dir
		}
	}
	go l.loop()
	return l, nil
}

func (l *landings) loop() {
	defer close(l.done)
	buf := make([]byte, 64<<10)
	fds := []unix.PollFd{{Fd: int32(l.fd), Events: unix.POLLIN}}
	for {
		select {
		case <-l.stop:
			return
		default:
		}
		// A bounded poll so that stop is noticed; an event wakes it at once.
		if _, err := unix.Poll(fds, 100); err != nil && !errors.Is(err, unix.EINTR) {
			return
		}
		n, err := unix.Read(l.fd, buf)
		// One instant for every event of this read: they were all queued
		// by then, and reading the files must not delay the timestamp.
		now := time.Now()
		if err != nil || n <= 0 {
			continue
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			nameBytes := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
			off += unix.SizeofInotifyEvent + int(ev.Len)
			name := string(bytes.TrimRight(nameBytes, "\x00"))
			if ev.Mask&unix.IN_ISDIR != 0 || name == "" {
				continue
			}
			l.record(l.dirs[ev.Wd], name, now)
		}
	}
}

// record reads the new file's header for its key; a file already moved on
// (new/ -> cur/ with flags) is looked for under its base name.
func (l *landings) record(dir, name string, at time.Time) {
	head, err := readHead(filepath.Join(dir, name))
	if err != nil {
		base, _, _ := strings.Cut(name, ":")
		md := filepath.Dir(dir)
		for _, sub := range []string{"cur", "new"} {
			m, _ := filepath.Glob(filepath.Join(md, sub, base+"*"))
			if len(m) > 0 {
				head, err = readHead(m[0])
				break
			}
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.unread++
		return
	}
	k := keyOf(head)
	if k == "" {
		return
	}
	if _, ok := l.first[k]; !ok {
		l.first[k] = at
	}
}

func readHead(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, 8<<10)
	n, err := f.Read(b)
	if n == 0 {
		return nil, err
	}
	return b[:n], nil
}

var (
	targetRe = regexp.MustCompile(`(?mi)^X-Emailqos-Target: *(\S+)\r?$`)
	peerRe   = regexp.MustCompile(`(?mi)^Subject: *emailqos-peer +(\S+)\r?$`)
	idleRe   = regexp.MustCompile(`(?mi)^Subject: *emailqos-idle +(\S+)\r?$`)
)

// keyOf identifies a message: ours by its target header (one name per
// probe), the peer's by the token in its subject.
func keyOf(head []byte) string {
	if m := targetRe.FindSubmatch(head); m != nil {
		return "ours:" + string(m[1])
	}
	if m := peerRe.FindSubmatch(head); m != nil {
		return "peer:" + string(m[1])
	}
	if m := idleRe.FindSubmatch(head); m != nil {
		return "idle:" + string(m[1])
	}
	return ""
}

func (l *landings) get(key string) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t, ok := l.first[key]
	return t, ok
}

func (l *landings) close() {
	close(l.stop)
	<-l.done
	unix.Close(l.fd)
}

// idleWatch is a bare IMAP IDLE session on one mailbox that notes when
// Dovecot announces each new message: the server's own announcement delay,
// apart from anything the receiver does.
type idleWatch struct {
	conn net.Conn
	mu   sync.Mutex
	seen []time.Time
	done chan struct{}
}

func startIdleWatch(addr, user, pass string) (*idleWatch, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	expect := func(tag string) error {
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return err
			}
			if tag == "" || strings.HasPrefix(line, tag+" ") {
				if tag != "" && !strings.HasPrefix(line, tag+" OK") {
					return fmt.Errorf("imap: %s", strings.TrimSpace(line))
				}
				return nil
			}
		}
	}
	w := &idleWatch{conn: c, done: make(chan struct{})}
	steps := []struct{ cmd, tag string }{
		{"", ""},
		{fmt.Sprintf("a LOGIN %q %q\r\n", user, pass), "a"},
	}
	for _, s := range steps {
		if s.cmd != "" {
			if _, err := c.Write([]byte(s.cmd)); err != nil {
				c.Close()
				return nil, err
			}
		}
		if err := expect(s.tag); err != nil {
			c.Close()
			return nil, err
		}
	}
	if _, err := c.Write([]byte("b SELECT INBOX\r\nc IDLE\r\n")); err != nil {
		c.Close()
		return nil, err
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			c.Close()
			return nil, err
		}
		if strings.HasPrefix(line, "+ ") {
			break
		}
		if strings.HasPrefix(line, "b ") && !strings.HasPrefix(line, "b OK") {
			c.Close()
			return nil, fmt.Errorf("imap: %s", strings.TrimSpace(line))
		}
	}
	_ = c.SetDeadline(time.Time{})
	go func() {
		defer close(w.done)
		for {
			line, err := br.ReadString('\n')
			now := time.Now()
			if err != nil {
				return
			}
			// Dovecot sends EXISTS only when messages were added (an
			// expunge alone shrinks the count implicitly).
			if _, ok := existsCount(line); ok {
				w.mu.Lock()
				w.seen = append(w.seen, now)
				w.mu.Unlock()
			}
		}
	}()
	return w, nil
}

func existsCount(line string) (int, bool) {
	f := strings.Fields(line)
	if len(f) == 3 && f[0] == "*" && strings.EqualFold(f[2], "EXISTS") {
		n, err := strconv.Atoi(f[1])
		return n, err == nil
	}
	return 0, false
}

// after is the first announcement at or after t.
func (w *idleWatch) after(t time.Time) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range w.seen {
		if !s.Before(t) {
			return s, true
		}
	}
	return time.Time{}, false
}

func (w *idleWatch) close() {
	_ = w.conn.SetDeadline(time.Now().Add(2 * time.Second))
	_, _ = w.conn.Write([]byte("DONE\r\nd LOGOUT\r\n"))
	select {
	case <-w.done:
	case <-time.After(3 * time.Second):
	}
	w.conn.Close()
	<-w.done
}
