package steps

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
)

// Error types: the finer classification carried in the `error.type` resource
// attribute. The set is closed; see README.md.
const (
	TypeNone     = ""
	TypeConnect  = "connect"   // TCP connection refused, unreachable, reset
	TypeTimeout  = "timeout"   // a deadline passed while waiting on the network
	TypeTLS      = "tls"       // TLS handshake or certificate failure, STARTTLS missing
	TypeAuth     = "auth"      // credentials rejected, or none could be sent safely
	TypeRejected = "rejected"  // the server refused a command permanently (5xx, NO/BAD)
	TypeDeferred = "deferred"  // the server refused a command temporarily (4xx)
	TypeProtocol = "protocol"  // the server spoke something we could not understand
	TypeNotFound = "not_found" // the probe did not arrive within delivery_timeout
	TypeBounced  = "bounced"   // a delivery status notification proved the probe failed (RFC 3464)
	TypeCanceled = "canceled"  // the collector shut down during the probe
	TypeConfig   = "config"    // the target could not run with its configuration
	// Refusals whose response code names the cause (RFC 5530 IMAP codes,
	// RFC 2449/3206 POP3 codes), so an alert does not send people to reset
	// a password that is fine.
	TypeLimit       = "limit"       // a per-user limit was hit: too many connections, logins too frequent, quota
	TypeUnavailable = "unavailable" // the server (or a subsystem behind it) is temporarily unable to serve
	TypeInUse       = "in_use"      // the mailbox is locked or busy, held by another session
	// TypeThrottled: a mail API (Graph, Gmail) kept answering 429/503 (or
	// Gmail's 403 rateLimitExceeded) until the probe's time ran out.
	TypeThrottled = "throttled"
	// OAuth2 token failures, before anything was sent with the token.
	TypeTokenRejected    = "token_rejected"    // the token endpoint refused the credentials (revoked secret, expired refresh token)
	TypeTokenScope       = "token_scope"       // the token endpoint refused the requested scope
	TypeTokenUnavailable = "token_unavailable" // the token endpoint could not be reached or failed
)

// Types is the closed set of error types, TypeNone excepted: each must be
// documented in metadata.yaml, README.md and TROUBLESHOOTING.md.
var Types = []string{
	TypeConnect, TypeTimeout, TypeTLS, TypeAuth, TypeRejected, TypeDeferred,
	TypeLimit, TypeUnavailable, TypeInUse, TypeThrottled, TypeProtocol, TypeNotFound, TypeBounced,
	TypeCanceled, TypeConfig, TypeTokenRejected, TypeTokenScope, TypeTokenUnavailable,
}

// Error is a probe failure tagged with the step it happened in, its error code
// and its type.
type Error struct {
	Step string
	Code int
	Type string
	Err  error
	// Reply is the SMTP server's refusal behind the failure; zero when the
	// failure was not an SMTP reply.
	Reply Reply
}

// Reply is an SMTP reply's codes, without its free text (which may echo
// anything, addresses included).
type Reply struct {
	// Code is the basic reply code, such as 550.
	Code int
	// Enhanced is the RFC 3463 enhanced status code, such as "5.1.1";
	// empty when the server gave none.
	Enhanced string
}

// IsEnhancedStatus tells whether s is an RFC 3463 status code: class 2, 4
// or 5, then a subject and a detail of 1 to 3 digits each, such as 5.1.1.
func IsEnhancedStatus(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 || len(parts[0]) != 1 || !strings.ContainsAny(parts[0], "245") {
		return false
	}
	for _, p := range parts[1:] {
		if len(p) < 1 || len(p) > 3 || strings.Trim(p, "0123456789") != "" {
			return false
		}
	}
	return true
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s: %v", e.Step, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Fail wraps err as a failure of step, with the step's code (see Code).
// When typ is empty the type is derived from err and from ctx: a done
// context is a timeout or a cancellation whatever error the library
// returned for its closed connection. An err that already is a step
// failure is returned as it is.
func Fail(ctx context.Context, step string, typ string, err error) *Error {
	return FailCode(ctx, step, Code(step), typ, err)
}

// FailCode is Fail with a code other than the step's, for the exceptions
// listed in codes.go.
func FailCode(ctx context.Context, step string, code int, typ string, err error) *Error {
	var se *Error
	if errors.As(err, &se) {
		return se
	}
	if ctxType := contextType(ctx); ctxType != "" {
		typ = ctxType
	} else if typ == "" {
		typ = Classify(err)
	}
	return &Error{Step: step, Code: code, Type: typ, Err: err}
}

func contextType(ctx context.Context) string {
	if ctx == nil || ctx.Err() == nil {
		return ""
	}
	if errors.Is(context.Cause(ctx), context.Canceled) {
		return TypeCanceled
	}
	return TypeTimeout
}

// Classify maps a network or TLS error to an error type. Protocol-level
// rejections are classified by the protocol packages, which know the reply
// codes; anything unrecognised is a protocol error.
func Classify(err error) string {
	if err == nil {
		return TypeNone
	}
	var (
		certErr     *tls.CertificateVerificationError
		unknownAuth x509.UnknownAuthorityError
		hostErr     x509.HostnameError
		invalidErr  x509.CertificateInvalidError
		recordErr   tls.RecordHeaderError
		alertErr    tls.AlertError
		netErr      net.Error
		opErr       *net.OpError
	)
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return TypeTimeout
	case errors.Is(err, context.Canceled):
		return TypeCanceled
	case errors.As(err, &certErr), errors.As(err, &unknownAuth), errors.As(err, &hostErr),
		errors.As(err, &invalidErr), errors.As(err, &recordErr), errors.As(err, &alertErr):
		return TypeTLS
	case errors.As(err, &netErr) && netErr.Timeout():
		return TypeTimeout
	case isTLSError(err):
		return TypeTLS
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH),
		errors.Is(err, net.ErrClosed), errors.Is(err, syscall.EPIPE):
		return TypeConnect
	case errors.As(err, &opErr):
		return TypeConnect
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return TypeConnect
	}
	return classifyText(err.Error())
}

// isTLSError reports a handshake failure that crypto/tls returns without a
// typed error: a received alert (a server that only speaks TLS 1.1 answers
// with protocol_version) comes as a *net.OpError with Op "remote error", an
// alert we sent as Op "local error", and checks such as "tls: server
// selected unsupported protocol version 302" as plain errors. All of
// crypto/tls's own errors begin with "tls: "; only an error value's own text
// is looked at, not a wrapper's, so a server cannot produce it by echoing
// that text in a reply.
func isTLSError(err error) bool {
	var opErr *net.OpError
	if errors.As(err, &opErr) && (opErr.Op == "remote error" || opErr.Op == "local error") {
		return true
	}
	for e := err; e != nil; e = errors.Unwrap(e) {
		if _, wraps := e.(interface{ Unwrap() error }); wraps {
			continue
		}
		if strings.HasPrefix(e.Error(), "tls: ") {
			return true
		}
	}
	return false
}

// lostConnection are the texts of the connection failures above. Some
// libraries (go-imap's response reader) format the cause with %v, so only
// its text is left: a connection reset in the middle of a reply must still
// read as a lost connection, not as a server speaking nonsense.
var lostConnection = []string{
	syscall.ECONNRESET.Error(), syscall.EPIPE.Error(), syscall.ECONNREFUSED.Error(),
	net.ErrClosed.Error(), io.ErrUnexpectedEOF.Error(),
}

func classifyText(msg string) string {
	for _, s := range lostConnection {
		if strings.Contains(msg, s) {
			return TypeConnect
		}
	}
	if strings.HasSuffix(msg, ": "+io.EOF.Error()) {
		return TypeConnect
	}
	return TypeProtocol
}

// TooManyConnections reports Dovecot's refusal for its
// mail_max_userip_connections limit ("Maximum number of connections from
// user+IP exceeded", Dovecot 2.3 imap and pop3), which some versions and
// proxies send without a response code, and Gmail's ("Too many
// simultaneous connections. (Failure)", with [ALERT], Gmail help answer
// 97150): a limit, not bad credentials.
func TooManyConnections(serverText string) bool {
	t := strings.ToLower(serverText)
	return strings.Contains(t, "maximum number of connections") || strings.Contains(t, "too many simultaneous connections")
}
