package transport

import (
	"errors"
	"fmt"
	"net"
	"sync"
)

// Budget bounds what a server can make one connection read. The protocol
// libraries read without limit (go-smtp's textproto reader joins every
// continuation line of a reply; go-imap's decoder copies a line or a
// literal whole into memory), so the bound is enforced here, below them and
// below TLS, where every byte from the server passes, STARTTLS exchanges in
// clear included.
type Budget struct {
	// Session is the most bytes read over the whole connection.
	Session int64
	// Response is the most bytes read between two writes of the client: all
	// a server sends in answer to one command (a reply and its continuation
	// lines, an IMAP response with its literals and the untagged data around
	// it, a POP3 multi-line answer), or unprompted while the client waits
	// (a greeting, IMAP IDLE). Counted on the wire, so under TLS it includes
	// the record overhead (under 1%).
	Response int64
}

// Budgets are sized far above what a probe reads (a few hundred KB over a
// whole probe, under 10 KB for most answers), yet low enough that a hostile
// server cannot make one probe hold more than a few MB. The largest real
// answers are an IMAP FETCH of up to 64 header blocks (Postfix caps a header
// block at 100 KB by default) and a POP3 UIDL listing (2.2 MB for 30,000
// messages); POP3 opens a connection per poll, so its session is one
// listing plus the orphan sweep's TOPs. An IMAP session lasts the whole
// delivery wait: precise detection polls every 10 ms by default, tens of
// bytes an answer, so its session budget allows hours of it.
var budgets = map[string]Budget{
	"smtp": {Session: 4 << 20, Response: 1 << 20},
	"imap": {Session: 256 << 20, Response: 8 << 20},
	"pop3": {Session: 32 << 20, Response: 8 << 20},
}

// defaultBudget covers a protocol not listed above.
var defaultBudget = Budget{Session: 16 << 20, Response: 1 << 20}

// BudgetFor returns the read budget of protocol's connections (smtp, imap,
// pop3).
func BudgetFor(protocol string) Budget {
	if b, ok := budgets[protocol]; ok {
		return b
	}
	return defaultBudget
}

// BudgetError ends a connection whose server sent more than its budget: a
// protocol error (never a lost connection to retry), whose text names the
// protocol and the limit.
type BudgetError struct {
	Protocol string
	// Scope is "response" or "session".
	Scope string
	Limit int64
}

func (e *BudgetError) Error() string {
	in := "in one response"
	if e.Scope == "session" {
		in = "over the connection"
	}
	return fmt.Sprintf("%s read budget exceeded: the server sent more than %d bytes (%s) %s",
		e.Protocol, e.Limit, mib(e.Limit), in)
}

func mib(n int64) string {
	if n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d KiB", n>>10)
}

// IsBudget tells whether err is, or wraps, a BudgetError.
func IsBudget(err error) bool {
	var be *BudgetError
	return errors.As(err, &be)
}

// Exceeded returns the BudgetError that ended conn, or nil. conn is a
// connection from Dial, or one wrapping it (a *tls.Conn, or any wrapper
// with a NetConn method). Libraries that format read errors with %v lose
// the error's type; this gets it back.
func Exceeded(conn net.Conn) error {
	for conn != nil {
		switch c := conn.(type) {
		case *boundConn:
			return c.exceeded()
		case interface{ NetConn() net.Conn }:
			conn = c.NetConn()
		default:
			return nil
		}
	}
	return nil
}

// meter counts a connection's reads against its budget.
type meter struct {
	budget   Budget
	protocol string

	mu       sync.Mutex
	session  int64
	response int64
	over     *BudgetError
}

// room is how much the next read may return; an error once the budget is
// spent and more is asked for.
func (m *meter) room(want int) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.over != nil {
		return 0, m.over
	}
	left, scope, limit := m.budget.Response-m.response, "response", m.budget.Response
	if s := m.budget.Session - m.session; s < left {
		left, scope, limit = s, "session", m.budget.Session
	}
	if left <= 0 {
		m.over = &BudgetError{Protocol: m.protocol, Scope: scope, Limit: limit}
		return 0, m.over
	}
	return int(min(int64(want), left)), nil
}

func (m *meter) read(n int) {
	m.mu.Lock()
	m.session += int64(n)
	m.response += int64(n)
	m.mu.Unlock()
}

// wrote starts a new response: the server answers what was just sent.
func (m *meter) wrote() {
	m.mu.Lock()
	m.response = 0
	m.mu.Unlock()
}
