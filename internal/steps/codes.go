package steps

// Error codes, kept from LogicMonitor's Email_RoundTrip/Email_TransitTime so
// that their users can move dashboards and alerts over unchanged.
const (
	CodeInvalidInstance = -2
	CodeMissingParams   = -1
	CodeOK              = 0
	CodeSMTPConnect     = 1
	CodeSMTPSend        = 2
	CodeMailboxConnect  = 3
	CodeSearch          = 4
	CodeCleanup         = 5
)

// codes is the error code of a failure in each step: the one answer to
// "which code does this failure get". The codes group the steps the way
// LogicMonitor's Email_RoundTrip/Email_TransitTime do: connecting to and
// greeting the SMTP server (1), authenticating and sending (2), reaching the
// mailbox (3), finding the probe (4) and removing it (5).
var codes = map[string]int{
	SMTPConnect: CodeSMTPConnect,
	SMTPTLS:     CodeSMTPConnect,
	SMTPEHLO:    CodeSMTPConnect,
	SMTPAuth:    CodeSMTPSend,
	SMTPSubmit:  CodeSMTPSend,
	// QUIT after an accepted message does not fail a probe today; were it
	// to, the message was sent.
	SMTPQuit: CodeSMTPSend,

	IMAPConnect: CodeMailboxConnect,
	IMAPTLS:     CodeMailboxConnect,
	IMAPLogin:   CodeMailboxConnect,
	IMAPSelect:  CodeMailboxConnect,
	POP3Connect: CodeMailboxConnect,
	POP3TLS:     CodeMailboxConnect,
	POP3Login:   CodeMailboxConnect,
	// The UIDL listing at login; a listing during the wait is PollCode's.
	POP3List: CodeMailboxConnect,

	DeliveryWait: CodeSearch,
	IMAPSearch:   CodeSearch,
	IMAPFetch:    CodeSearch,
	POP3Fetch:    CodeSearch,

	IMAPDelete: CodeCleanup,
	IMAPLogout: CodeCleanup,
	POP3Delete: CodeCleanup,
	POP3Quit:   CodeCleanup,

	// The API transports: sending is code 2 (there is no connection step
	// apart from it); a list fails as a search, except at the baseline and
	// for sign-in or permission failures, which the engine reports with
	// CodeMailboxConnect (probe/api.go).
	GraphSend:      CodeSMTPSend,
	GmailAPISend:   CodeSMTPSend,
	GraphList:      CodeSearch,
	GmailAPIList:   CodeSearch,
	GraphDelete:    CodeCleanup,
	GmailAPIDelete: CodeCleanup,
}

// Code is the error code of a failure in step. A step missing from the
// table (codes_test.go keeps it complete) counts as a failed search, the
// code of a probe that was not seen through.
func Code(step string) int {
	if c, ok := codes[step]; ok {
		return c
	}
	return CodeSearch
}

// PollCode is the code of a POP3 poll (UIDL or TOP) failing after login,
// where every poll is a new session: the server refusing the command, or
// answering nonsense, is a failed search (4); anything else, a lost or
// unanswered connection, is a failure to reach the mailbox (3), as a lost
// IMAP connection is.
func PollCode(typ string) int {
	switch typ {
	case TypeRejected, TypeDeferred, TypeProtocol, TypeUnavailable, TypeInUse, TypeLimit:
		return CodeSearch
	}
	return CodeMailboxConnect
}

// Exceptions to the table, written as *Error literals where they happen:
// the configuration checks of imapwatch and pop3watch (CodeMissingParams,
// CodeInvalidInstance: no step has run), and a POP3 poll the server left
// unanswered (pop3watch's stalledErr: CodeMailboxConnect in the step it was
// stuck in), and POP3 housekeeping (pop3watch's cleanupErr: CodeCleanup
// even when its session failed to log in).

// New is a failure of step, of type typ, with the step's code: for a
// failure typed where it happens, without Fail's classification.
func New(step, typ string, err error) *Error {
	return &Error{Step: step, Code: Code(step), Type: typ, Err: err}
}
