package imapwatch

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
	"github.com/emersion/go-sasl"

	"github.com/emailqos/emailqosreceiver/internal/saslx"
	"github.com/emailqos/emailqosreceiver/internal/transport"
)

const (
	testUser     = "probe@example.com"
	testPassword = "s3cret-Pa55word"
)

type serverOpts struct {
	security transport.Security
	// noStartTLS makes a plain server that does not offer STARTTLS.
	noStartTLS bool
	caps       imap.CapSet
	hideIdle   bool
	// silentIdle never announces anything during IDLE.
	silentIdle bool
	// bearer, when set, is the only OAuth2 token AUTHENTICATE XOAUTH2 accepts.
	bearer string
}

// testServer is an in-process IMAP server (imapmemserver) on 127.0.0.1 with
// hooks to misbehave.
type testServer struct {
	t        testing.TB
	addr     string
	security transport.Security
	user     *imapmemserver.User
	srv      *imapserver.Server
	hideIdle bool
	silent   bool

	failExpunge atomic.Bool
	hideHits    atomic.Bool
	// noHeaderSearch: a SEARCH with a HEADER key finds nothing, like a
	// server that indexes standard fields only (Stalwart).
	noHeaderSearch atomic.Bool
	// badHeaderSearch: such a SEARCH is answered BAD.
	badHeaderSearch atomic.Bool
	// subjectOnly: a HEADER key other than Subject finds nothing.
	subjectOnly   atomic.Bool
	searches      atomic.Int32
	logins        atomic.Int32
	plainExpunges atomic.Int32
	commands      atomic.Int64 // tagged commands read on plain connections
	statuses      atomic.Int32
	selects       atomic.Int32
	lists         atomic.Int32

	mu    sync.Mutex
	conns []net.Conn
}

var (
	certOnce sync.Once
	certPair tls.Certificate
	certPool *x509.CertPool
)

// testCert is a self-signed certificate for 127.0.0.1, made once per run.
func testCert(t testing.TB) (tls.Certificate, *x509.CertPool) {
	certOnce.Do(func() {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber:          big.NewInt(1),
			Subject:               pkix.Name{CommonName: "imapwatch test"},
			NotBefore:             time.Now().Add(-time.Hour),
			NotAfter:              time.Now().Add(24 * time.Hour),
			IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
			KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
			ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			IsCA:                  true,
			BasicConstraintsValid: true,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			panic(err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			panic(err)
		}
		certPair = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}
		certPool = x509.NewCertPool()
		certPool.AddCert(cert)
	})
	return certPair, certPool
}

func newTestServer(t testing.TB, so serverOpts) *testServer {
	t.Helper()
	if so.security == "" {
		so.security = transport.None
	}
	if so.caps == nil {
		so.caps = imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapUIDPlus: {}, imap.CapMove: {}}
	}
	mem := imapmemserver.New()
	user := imapmemserver.NewUser(testUser, testPassword)
	if err := user.Create("INBOX", nil); err != nil {
		t.Fatal(err)
	}
	mem.AddUser(user)
	ts := &testServer{t: t, security: so.security, user: user, hideIdle: so.hideIdle, silent: so.silentIdle}

	cert, _ := testCert(t)
	tlsConf := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	opts := &imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			sess := &testSession{Session: mem.NewSession(), ts: ts}
			if so.bearer != "" {
				return &bearerSession{testSession: sess, token: so.bearer}, nil, nil
			}
			return sess, nil, nil
		},
		Caps:         so.caps,
		Logger:       log.New(io.Discard, "", 0),
		InsecureAuth: true,
	}
	if so.security == transport.STARTTLS && !so.noStartTLS {
		opts.TLSConfig = tlsConf
	}
	ts.srv = imapserver.New(opts)

	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.addr = raw.Addr().String()
	var ln net.Listener = &trackListener{Listener: raw, ts: ts}
	if so.security == transport.TLS {
		ln = tls.NewListener(ln, tlsConf)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = ts.srv.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = ts.srv.Close()
		<-done
		ts.dropAll()
	})
	return ts
}

// options are client options for this server.
func (ts *testServer) options(method Method) Options {
	_, pool := testCert(ts.t)
	o := Options{
		Endpoint:     transport.Endpoint{Address: ts.addr, Security: ts.security},
		Credentials:  saslx.Credentials{Username: testUser, Password: testPassword},
		Method:       method,
		PollInterval: 100 * time.Millisecond,
	}
	if ts.security == transport.None {
		o.AllowPlaintextAuth = true
	} else {
		o.Endpoint.TLSConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return o
}

// dropAll closes every server-side connection, as a server restart would.
func (ts *testServer) dropAll() {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	for _, c := range ts.conns {
		_ = c.Close()
	}
	ts.conns = nil
}

func probeMessage(tokenLine, extra string) []byte {
	return []byte("From: sender@example.com\r\n" +
		"To: " + testUser + "\r\n" +
		"Subject: emailqos probe\r\n" +
		"X-Emailqos-Token: " + tokenLine + "\r\n" +
		extra +
		"Message-Id: <" + tokenLine + "@example.com>\r\n" +
		"\r\n" +
		"probe body\r\n")
}

// appendMsg delivers a message as an MTA would, returning its UID and the
// instants just before and after.
func (ts *testServer) appendMsg(mailbox string, msg []byte, flags ...imap.Flag) (uid imap.UID, before, after time.Time) {
	ts.t.Helper()
	before = time.Now()
	data, err := ts.user.Append(mailbox, bytes.NewReader(msg), &imap.AppendOptions{Flags: flags})
	after = time.Now()
	if err != nil {
		ts.t.Fatal(err)
	}
	return data.UID, before, after
}

// inspect lists the UIDs and flags of a mailbox over a separate read-only
// connection.
func (ts *testServer) inspect(mailbox string) map[imap.UID][]imap.Flag {
	ts.t.Helper()
	_, pool := testCert(ts.t)
	var conn net.Conn
	var err error
	if ts.security == transport.TLS {
		conn, err = tls.Dial("tcp", ts.addr, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
	} else {
		conn, err = net.Dial("tcp", ts.addr)
	}
	if err != nil {
		ts.t.Fatal(err)
	}
	c := imapclient.New(conn, nil)
	defer c.Close()
	if err := c.Login(testUser, testPassword).Wait(); err != nil {
		ts.t.Fatal(err)
	}
	if _, err := c.Select(mailbox, &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		ts.t.Fatal(err)
	}
	msgs, err := c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, Flags: true}).Collect()
	if err != nil {
		ts.t.Fatal(err)
	}
	out := make(map[imap.UID][]imap.Flag)
	for _, m := range msgs {
		out[m.UID] = m.Flags
	}
	_ = c.Logout().Wait()
	return out
}

type trackListener struct {
	net.Listener
	ts *testServer
}

func (l *trackListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.ts.mu.Lock()
	l.ts.conns = append(l.ts.conns, c)
	l.ts.mu.Unlock()
	return &serverConn{Conn: c, ts: l.ts, lineStart: true}, nil
}

// serverConn hides IDLE from CAPABILITY when asked and counts the tagged
// commands the server reads (meaningful on plain connections).
type serverConn struct {
	net.Conn
	ts *testServer

	lineStart bool
	prefix    []byte
}

func (c *serverConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	for _, b := range p[:n] {
		switch {
		case b == '\n':
			c.lineStart, c.prefix = true, c.prefix[:0]
		case !c.lineStart:
		case b == ' ':
			if len(c.prefix) > 1 && c.prefix[0] == 'T' {
				c.ts.commands.Add(1)
			}
			c.lineStart = false
		case len(c.prefix) == 0 && b == 'T', len(c.prefix) > 0 && b >= '0' && b <= '9':
			c.prefix = append(c.prefix, b)
		default:
			c.lineStart = false
		}
	}
	return n, err
}

func (c *serverConn) Write(p []byte) (int, error) {
	if c.ts.hideIdle && bytes.Contains(p, []byte("CAPABILITY")) {
		q := bytes.ReplaceAll(p, []byte(" IDLE"), nil)
		if _, err := c.Conn.Write(q); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// testSession wraps an imapmemserver session to count logins, refuse
// expunges and hold back search hits.
type testSession struct {
	imapserver.Session
	ts *testServer
}

// bearerSession accepts AUTHENTICATE XOAUTH2 with one valid token.
type bearerSession struct {
	*testSession
	token string
}

func (s *bearerSession) AuthenticateMechanisms() []string { return []string{saslx.XOAuth2} }

func (s *bearerSession) Authenticate(string) (sasl.Server, error) {
	return saslx.NewXOAUTH2Server(func(user, token string) error {
		if user != testUser || token != s.token {
			return errors.New("invalid token")
		}
		return s.testSession.Session.Login(testUser, testPassword)
	}), nil
}

var (
	_ imapserver.SessionMove      = (*testSession)(nil)
	_ imapserver.SessionNamespace = (*testSession)(nil)
)

func (s *testSession) Login(username, password string) error {
	s.ts.logins.Add(1)
	return s.Session.Login(username, password)
}

func (s *testSession) Status(mailbox string, options *imap.StatusOptions) (*imap.StatusData, error) {
	s.ts.statuses.Add(1)
	return s.Session.Status(mailbox, options)
}

func (s *testSession) Select(mailbox string, options *imap.SelectOptions) (*imap.SelectData, error) {
	s.ts.selects.Add(1)
	return s.Session.Select(mailbox, options)
}

func (s *testSession) List(w *imapserver.ListWriter, ref string, patterns []string, options *imap.ListOptions) error {
	s.ts.lists.Add(1)
	return s.Session.List(w, ref, patterns, options)
}

func (s *testSession) Expunge(w *imapserver.ExpungeWriter, uids *imap.UIDSet) error {
	if uids == nil {
		s.ts.plainExpunges.Add(1)
	}
	if s.ts.failExpunge.Load() {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Text: "expunge refused by test"}
	}
	return s.Session.Expunge(w, uids)
}

func (s *testSession) Search(kind imapserver.NumKind, criteria *imap.SearchCriteria, options *imap.SearchOptions) (*imap.SearchData, error) {
	s.ts.searches.Add(1)
	if len(criteria.Header) > 0 && s.ts.badHeaderSearch.Load() {
		return nil, &imap.Error{Type: imap.StatusResponseTypeBad, Text: "Command Argument Error. 11"}
	}
	custom := false
	for _, h := range criteria.Header {
		custom = custom || !strings.EqualFold(h.Key, "Subject")
	}
	if s.ts.hideHits.Load() || (len(criteria.Header) > 0 && s.ts.noHeaderSearch.Load()) || (custom && s.ts.subjectOnly.Load()) {
		if kind == imapserver.NumKindUID {
			return &imap.SearchData{All: imap.UIDSet{}}, nil
		}
		return &imap.SearchData{All: imap.SeqSet{}}, nil
	}
	return s.Session.Search(kind, criteria, options)
}

// Idle announces within a couple of milliseconds. imapmemserver's own IDLE
// loses the updates that happen between its "+ idling" and the start of its
// watch, which would make the tests depend on scheduling.
func (s *testSession) Idle(w *imapserver.UpdateWriter, stop <-chan struct{}) error {
	if s.ts.silent {
		<-stop
		return nil
	}
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return nil
		case <-tick.C:
			if err := s.Session.Poll(w, true); err != nil {
				return err
			}
		}
	}
}

func (s *testSession) Move(w *imapserver.MoveWriter, numSet imap.NumSet, dest string) error {
	return s.Session.(imapserver.SessionMove).Move(w, numSet, dest)
}

func (s *testSession) Namespace() (*imap.NamespaceData, error) {
	return s.Session.(imapserver.SessionNamespace).Namespace()
}

func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func tokenFor(t testing.TB) string {
	return fmt.Sprintf("tok-%d-%s", time.Now().UnixNano(), t.Name())
}
