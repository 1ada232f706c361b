package pop3

import (
	"errors"
	"io"

	"github.com/emailqos/emailqosreceiver/internal/steps"
)

// ErrorType maps an error from this package to a steps error type, reading
// the RFC 2449 / RFC 3206 response codes that steps.Classify cannot know.
// Context-caused failures are left to steps.Fail, which checks the context
// first.
func ErrorType(err error) string {
	if err == nil {
		return steps.TypeNone
	}
	var perr *Error
	if errors.As(err, &perr) {
		if steps.TooManyConnections(perr.Message) {
			// Dovecot's connection limit, whatever code it comes with.
			return steps.TypeLimit
		}
		switch perr.Code() {
		case "AUTH": // RFC 3206: the credentials
			return steps.TypeAuth
		case "SYS/TEMP": // RFC 3206: a temporary system problem
			return steps.TypeUnavailable
		case "IN-USE": // RFC 2449: the maildrop is locked by another session
			return steps.TypeInUse
		case "LOGIN-DELAY": // RFC 2449: logged in too soon after the last login
			return steps.TypeLimit
		case "SYS/PERM":
			return steps.TypeRejected
		}
		switch perr.Command {
		case "USER", "PASS", "AUTH":
			return steps.TypeAuth
		case "STLS":
			return steps.TypeTLS
		}
		return steps.TypeRejected
	}
	switch {
	case errors.Is(err, ErrInvalidArgument):
		return steps.TypeConfig
	case errors.Is(err, ErrLineTooLong), errors.Is(err, ErrResponseTooLarge):
		return steps.TypeProtocol
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		// The server hung up on us: the same outcome as a reset.
		return steps.TypeConnect
	}
	return steps.Classify(err)
}
