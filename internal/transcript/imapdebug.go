package transcript

import (
	"bytes"
	"io"
)

// IMAPDebug returns a writer for imapclient's Options.DebugWriter that
// records into s. A nil Stream returns nil.
//
// imapclient (go-imap v2.0.0-beta.8) is the only place that sees the
// plaintext after STARTTLS, because it upgrades the connection itself, but
// its DebugWriter carries both directions through one Write without saying
// which: the client wraps its connection in io.TeeReader(conn, w) for what
// it reads and io.MultiWriter(conn, w) for what it writes (and the same
// again around the TLS connection after STARTTLS). Reads happen in the
// client's reader goroutine in chunks of whatever the connection returned
// (a bufio.Reader fill, so anywhere in a line); writes come from the
// command's goroutine as whole flushes of its bufio.Writer: a command up to
// its CRLF, or up to a synchronising literal's "{n}" CRLF, after which the
// literal and the rest of the command follow once the server's "+" was
// read. The direction is therefore inferred, by these rules in order:
//
//  1. A write continuing a client write that filled imapclient's 4 KiB
//     buffer without ending a line is the client's.
//  2. A chunk that begins with the next unused tag ("T<n> ", imapclient
//     numbers T1, T2, ...) followed by a whole word that is not OK, NO or
//     BAD is a client command. The client's MultiWriter writes to the
//     connection before the debug writer, so a fast server's tagged reply
//     can be read (and teed here) before its command: a reply's word is a
//     status (RFC 3501 section 7.1), a command's never is, and a client
//     write always carries its whole command word.
//  3. While IDLE runs, a chunk that is exactly "DONE\r\n" is the client's
//     (a server line never is "DONE").
//  4. When the client announced a synchronising literal or runs an
//     AUTHENTICATE exchange, and a continuation request ("+ ...") was read
//     completely and not yet answered, the next chunk is the client's
//     answer: imapclient writes it only after decoding that whole line.
//  5. Anything else is the server's.
//
// A misjudged chunk can mislabel a line but cannot leak a credential:
// while a LOGIN or AUTHENTICATE is in flight, a "server" line that does not
// look like a server response is stored as [redacted], and the
// transcript's registered secrets are scrubbed from every line.
func (s *Stream) IMAPDebug() io.Writer {
	if s == nil || s.imap == nil {
		return nil
	}
	return imapDebug{s}
}

type imapDebugState struct {
	nextTag uint64
	// clientMid: the last client write filled the buffer mid-line.
	clientMid bool
}

// imapBufferSize is imapclient's bufio.Writer size (the bufio default).
const imapBufferSize = 4096

type imapDebug struct{ s *Stream }

func (w imapDebug) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s := w.s
	s.mu.Lock()
	defer s.mu.Unlock()
	dir := s.classify(p)
	if dir == Client {
		s.dbg.clientMid = len(p) >= imapBufferSize && p[len(p)-1] != '\n'
	}
	s.feed(dir, p)
	return len(p), nil
}

func (s *Stream) classify(p []byte) Dir {
	h, d := s.imap, &s.dbg
	srv := &s.dirs[dirIndex(Server)]
	switch {
	case d.clientMid:
		return Client
	case hasTag(p, d.nextTag) && isCommand(p):
		d.nextTag++
		return Client
	case h.idle && bytes.Equal(p, []byte("DONE\r\n")):
		return Client
	case h.contPending && (h.awaitSync || h.authTag != "") && srv.n == 0 && srv.lit == 0:
		h.contPending, h.awaitSync = false, false
		return Client
	}
	return Server
}

// hasTag reports whether p begins with "T<n> ".
func hasTag(p []byte, n uint64) bool {
	if len(p) < 3 || p[0] != 'T' {
		return false
	}
	var v uint64
	i := 1
	for ; i < len(p) && i <= 20 && p[i] >= '0' && p[i] <= '9'; i++ {
		v = v*10 + uint64(p[i]-'0')
	}
	return i > 1 && i < len(p) && p[i] == ' ' && v == n
}

// isCommand reports whether the word after p's tag is complete and is not
// a status a server ends a command with (OK, NO, BAD).
func isCommand(p []byte) bool {
	_, rest, _ := bytes.Cut(p, []byte(" "))
	end := bytes.IndexAny(rest, " \r\n")
	if end <= 0 {
		return false
	}
	switch string(bytes.ToUpper(rest[:end])) {
	case "OK", "NO", "BAD":
		return false
	}
	return true
}
