package mailtest

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
)

// idleFilter relays one client connection to imapserver while hiding IDLE,
// which imapserver cannot be configured to drop: the IDLE token is removed
// from capability lists and the IDLE command is renamed so that the server
// answers BAD as for any unknown command. Literals (message bodies) are
// relayed untouched. After a successful STARTTLS it terminates TLS on both
// sides, so it keeps working on clear text.
type idleFilter struct {
	frontRaw, backRaw    net.Conn // client socket, pipe to imapserver
	front, back          net.Conn // the same, or TLS over them
	serverTLS, clientTLS *tls.Config

	hideIDLE          bool     // Options.DisableIDLE
	addCaps, dropCaps []string // the personality's capability changes
	gmRaw             bool     // Gmail: serve X-GM-RAW "category:..."

	startTLS chan string   // tag of a STARTTLS sent by the client
	upgraded chan *tlsPair // nil when the server refused it
	quit     chan struct{}
	once     sync.Once
}

type tlsPair struct{ front, back net.Conn }

const renamedIDLE = "XMAILTEST-IDLE-DISABLED"

func (f *idleFilter) run() {
	f.startTLS = make(chan string, 1)
	f.upgraded = make(chan *tlsPair)
	f.quit = make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		f.up()
		f.stop()
	}()
	go func() {
		defer wg.Done()
		f.down()
		f.stop()
	}()
	wg.Wait()
}

func (f *idleFilter) stop() {
	f.once.Do(func() {
		close(f.quit)
		f.frontRaw.Close()
		f.backRaw.Close()
	})
}

// up relays client commands.
func (f *idleFilter) up() {
	r := bufio.NewReader(f.front)
	w := f.back
	for {
		line, err := r.ReadBytes('\n')
		tag, name := command(line)
		out := line
		switch name {
		case "IDLE":
			if f.hideIDLE {
				out = []byte(tag + " " + renamedIDLE + "\r\n")
			}
		case "STARTTLS":
			// Sent before the command so the other pump has it when the
			// answer arrives.
			f.startTLS <- tag
		}
		if f.gmRaw {
			out = rewriteGmRaw(out)
		}
		if !relay(w, r, out, line, err) {
			return
		}
		if name == "STARTTLS" {
			select {
			case p := <-f.upgraded:
				if p != nil {
					// Drop anything sent in clear after STARTTLS.
					r = bufio.NewReader(p.front)
					w = p.back
				}
			case <-f.quit:
				return
			}
		}
	}
}

// down relays server responses.
func (f *idleFilter) down() {
	r := bufio.NewReader(f.back)
	w := f.front
	pending := ""
	for {
		line, err := r.ReadBytes('\n')
		select {
		case t := <-f.startTLS:
			pending = t
		default:
		}
		if !relay(w, r, f.caps(line), line, err) {
			return
		}
		if pending == "" {
			continue
		}
		fields := strings.Fields(string(line))
		if len(fields) < 2 || fields[0] != pending {
			continue
		}
		pending = ""
		var p *tlsPair
		if strings.EqualFold(fields[1], "OK") && f.serverTLS != nil {
			p = &tlsPair{front: tls.Server(f.frontRaw, f.serverTLS), back: tls.Client(f.backRaw, f.clientTLS)}
			r = bufio.NewReader(p.back)
			w = p.front
		}
		select {
		case f.upgraded <- p:
		case <-f.quit:
			return
		}
	}
}

// relay writes out (line, possibly rewritten) and then the literals line
// announces together with the rest of the logical line, unmodified. It
// reports whether the connection is still usable.
func relay(w io.Writer, r *bufio.Reader, out, line []byte, err error) bool {
	for {
		if len(out) > 0 {
			if _, werr := w.Write(out); werr != nil {
				return false
			}
		}
		if err != nil {
			return false
		}
		n, ok := literalSize(line)
		if !ok {
			return true
		}
		if _, err := io.CopyN(w, r, n); err != nil {
			return false
		}
		line, err = r.ReadBytes('\n')
		out = line
	}
}

// command returns the tag and upper-cased name of a command without
// arguments, such as "a1 IDLE".
func command(line []byte) (tag, name string) {
	f := strings.Fields(string(line))
	if len(f) != 2 {
		return "", ""
	}
	return f[0], strings.ToUpper(f[1])
}

// literalSize parses a trailing literal announcement: {n}, {n+}, {n-}, ~{n}.
func literalSize(line []byte) (int64, bool) {
	l := bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
	if !bytes.HasSuffix(l, []byte("}")) {
		return 0, false
	}
	i := bytes.LastIndexByte(l, '{')
	if i < 0 {
		return 0, false
	}
	num := bytes.TrimRight(l[i+1:len(l)-1], "+-")
	n, err := strconv.ParseInt(string(num), 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}

// caps rewrites a capability list the way this filter is set to.
func (f *idleFilter) caps(line []byte) []byte {
	drop := f.dropCaps
	if f.hideIDLE {
		drop = append([]string{"IDLE"}, drop...)
	}
	return rewriteCaps(line, drop, f.addCaps)
}

// stripIDLE removes IDLE from a "* CAPABILITY" response or from a
// [CAPABILITY] code of an OK or PREAUTH status response.
func stripIDLE(line []byte) []byte { return rewriteCaps(line, []string{"IDLE"}, nil) }

// rewriteCaps removes drop from, and appends add to, a "* CAPABILITY"
// response or a [CAPABILITY] code of an OK or PREAUTH status response.
func rewriteCaps(line []byte, drop, add []string) []byte {
	if len(drop) == 0 && len(add) == 0 {
		return line
	}
	s := string(line)
	u := strings.ToUpper(s)
	var start, end int
	if strings.HasPrefix(u, "* CAPABILITY ") {
		start = len("* CAPABILITY")
		end = len(strings.TrimRight(s, "\r\n"))
	} else {
		i := strings.Index(u, " [CAPABILITY ")
		if i < 0 {
			return line
		}
		if f := strings.Fields(u[:i]); len(f) != 2 || (f[1] != "OK" && f[1] != "PREAUTH") {
			return line
		}
		start = i + len(" [CAPABILITY")
		j := strings.IndexByte(s[start:], ']')
		if j < 0 {
			return line
		}
		end = start + j
	}
	kept := make([]string, 0, 16)
next:
	for _, c := range strings.Fields(s[start:end]) {
		for _, d := range drop {
			if strings.EqualFold(c, d) {
				continue next
			}
		}
		kept = append(kept, c)
	}
	kept = append(kept, add...)
	return []byte(s[:start] + " " + strings.Join(kept, " ") + s[end:])
}
