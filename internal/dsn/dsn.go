// Package dsn reads delivery status notifications (RFC 3464, carried in a
// multipart/report of RFC 6522, or RFC 6533's internationalised variants)
// and proves whether one is about a given probe. Only the machine-readable
// parts are read: the human-readable part is free text written by whoever
// sent the notice and is never trusted.
package dsn // import "github.com/emailqos/emailqosreceiver/internal/dsn"

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-message"

	"github.com/emailqos/emailqosreceiver/internal/probemsg"
	"github.com/emailqos/emailqosreceiver/internal/safetext"
	"github.com/emailqos/emailqosreceiver/internal/steps"
)

// Bounds on what Parse reads, so a hostile notice cannot blow memory or
// time. Parse reads the report's own parts only (one level below the top):
// it never descends into a human-readable part or into the returned
// message, so nesting costs no more than a linear scan.
const (
	// MaxSize is the largest notice Parse accepts. Real notices returning
	// headers (RET=HDRS) are a few KiB; with the full probe message
	// returned they are still far below this.
	MaxSize = 1 << 20
	// MaxParts is the most parts a report may have. RFC 6522 defines
	// three; providers add none at the top level.
	MaxParts = 16
	// MaxHeaderBytes bounds the top-level header, the returned header
	// block and the delivery-status part.
	MaxHeaderBytes = 64 << 10
	// MaxRecipients bounds the per-recipient blocks read.
	MaxRecipients = 100
)

var (
	// ErrTooLarge is a notice over MaxSize; it is not read.
	ErrTooLarge = errors.New("dsn: notice larger than the size cap")
	// ErrNotDSN is a message that is not an RFC 3464 delivery status
	// notification (not a multipart/report; report-type=delivery-status).
	ErrNotDSN = errors.New("dsn: not a delivery status notification")
	// ErrMalformed is a report that claims to be a DSN but cannot be read.
	ErrMalformed = errors.New("dsn: malformed delivery status notification")
	// ErrNoReturnedHeaders is a report without the original message's
	// headers: nothing in it can be verified.
	ErrNoReturnedHeaders = errors.New("dsn: notice returns no headers of the original message")
	// ErrOtherProbe is a notice about a genuine probe, but another one.
	ErrOtherProbe = errors.New("dsn: notice is about another probe")
	// ErrEnvelopeMismatch is a notice whose Original-Envelope-Id names a
	// different probe than its verified returned headers.
	ErrEnvelopeMismatch = errors.New("dsn: Original-Envelope-Id does not match the returned headers")
)

// Action is a recipient's Action field (RFC 3464 section 2.3.3).
type Action string

// The actions of RFC 3464 section 2.3.3.
const (
	ActionFailed    Action = "failed"
	ActionDelayed   Action = "delayed"
	ActionDelivered Action = "delivered"
	ActionRelayed   Action = "relayed"
	ActionExpanded  Action = "expanded"
)

// Recipient is one per-recipient block of a delivery-status part.
type Recipient struct {
	// FinalRecipient is the address of the Final-Recipient field, without
	// its address type: text from the notice's sender, bounded and with
	// control characters escaped, for logs and traces, not for metric
	// attributes.
	FinalRecipient string
	Action         Action
	// Status is the RFC 3463 status code (such as 5.1.1); empty when the
	// field is missing or not a status code.
	Status string
	// ReplyCode is the SMTP reply code of an smtp-type Diagnostic-Code
	// (such as 550); 0 when there is none. The diagnostic text itself is
	// never kept: it is free text from a remote server.
	ReplyCode int
}

// Report is what Parse reads from a notice.
type Report struct {
	// OriginalEnvelopeID is the Original-Envelope-Id, xtext-decoded
	// (RFC 3461 section 4); empty when absent.
	OriginalEnvelopeID string
	// ReportingMTA is the name part of the Reporting-MTA field, treated
	// like FinalRecipient.
	ReportingMTA string
	// ArrivalDate is the Arrival-Date; zero when absent or unreadable.
	ArrivalDate time.Time
	Recipients  []Recipient
	// ReturnedHeaders is the original message's header block, from a
	// text/rfc822-headers, message/rfc822, message/global-headers or
	// message/global part; nil when the notice has none.
	ReturnedHeaders []byte
}

// Failed returns the first recipient whose action is failed.
func (r *Report) Failed() (Recipient, bool) { return r.first(ActionFailed) }

// Delayed returns the first recipient whose action is delayed.
func (r *Report) Delayed() (Recipient, bool) { return r.first(ActionDelayed) }

func (r *Report) first(a Action) (Recipient, bool) {
	for _, rc := range r.Recipients {
		if rc.Action == a {
			return rc, true
		}
	}
	return Recipient{}, false
}

// Parse reads a notice (a whole RFC 5322 message). It returns ErrTooLarge
// over MaxSize, ErrNotDSN for any message that is not a delivery status
// notification and an error wrapping ErrMalformed, naming what is wrong,
// for a report it cannot read. It never panics on any input.
func Parse(msg []byte) (*Report, error) {
	if len(msg) > MaxSize {
		return nil, fmt.Errorf("%w (%d bytes, cap %d)", ErrTooLarge, len(msg), MaxSize)
	}
	e, err := message.ReadWithOptions(bytes.NewReader(msg), &message.ReadOptions{MaxHeaderBytes: MaxHeaderBytes})
	if err != nil && !message.IsUnknownCharset(err) && !message.IsUnknownEncoding(err) {
		// The reader's error quotes the offending line: notice text is
		// kept out of errors.
		return nil, fmt.Errorf("%w: unreadable header", ErrNotDSN)
	}
	if e == nil {
		return nil, ErrNotDSN
	}
	mt, params, err := e.Header.ContentType()
	// RFC 6522 section 3: the report is the top-level content; a report
	// nested in another message (a forwarded bounce) is not a notice to us.
	if err != nil || mt != "multipart/report" || !strings.EqualFold(params["report-type"], "delivery-status") &&
		!strings.EqualFold(params["report-type"], "global-delivery-status") {
		return nil, ErrNotDSN
	}
	mr := e.MultipartReader()
	if mr == nil {
		return nil, fmt.Errorf("%w: multipart/report without a boundary", ErrMalformed)
	}
	r := &Report{}
	var haveStatus, haveReturned bool
	for n := 0; ; n++ {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil && !message.IsUnknownCharset(err) && !message.IsUnknownEncoding(err) {
			return nil, fmt.Errorf("%w: part %d unreadable", ErrMalformed, n+1)
		}
		if n >= MaxParts {
			return nil, fmt.Errorf("%w: more than %d parts", ErrMalformed, MaxParts)
		}
		pt, _, _ := p.Header.ContentType()
		switch pt {
		case "message/delivery-status", "message/global-delivery-status":
			if haveStatus {
				return nil, fmt.Errorf("%w: more than one delivery-status part", ErrMalformed)
			}
			haveStatus = true
			body, err := readCapped(p.Body, MaxHeaderBytes)
			if err != nil {
				return nil, fmt.Errorf("%w: delivery-status part: %v", ErrMalformed, err)
			}
			if err := r.parseStatus(body); err != nil {
				return nil, err
			}
		case "text/rfc822-headers", "message/global-headers", "message/rfc822", "message/global":
			// Two returned messages would leave it open which one the
			// notice is about.
			if haveReturned {
				return nil, fmt.Errorf("%w: more than one returned message part", ErrMalformed)
			}
			haveReturned = true
			h, err := headerBlock(p.Body)
			if err != nil {
				return nil, fmt.Errorf("%w: returned headers: %v", ErrMalformed, err)
			}
			r.ReturnedHeaders = h
		}
		// Other parts (the human-readable text, Exchange's HTML) are
		// left unread; the multipart reader skips them.
	}
	if !haveStatus {
		return nil, fmt.Errorf("%w: no message/delivery-status part", ErrMalformed)
	}
	if len(r.Recipients) == 0 {
		return nil, fmt.Errorf("%w: no per-recipient fields", ErrMalformed)
	}
	return r, nil
}

// readCapped reads all of rd, refusing more than limit bytes.
func readCapped(rd io.Reader, limit int) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(rd, int64(limit)+1))
	if err != nil {
		return nil, err
	}
	if len(b) > limit {
		return nil, fmt.Errorf("larger than %d bytes", limit)
	}
	return b, nil
}

// headerBlock reads the header block at the start of rd, up to and
// including the blank line that ends it (or the end of rd: RET=HDRS parts
// often have no blank line). Only MaxHeaderBytes are read.
func headerBlock(rd io.Reader) ([]byte, error) {
	br := bufio.NewReader(io.LimitReader(rd, MaxHeaderBytes+1))
	var out bytes.Buffer
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, errors.New("line too long")
		}
		out.Write(line)
		if out.Len() > MaxHeaderBytes {
			return nil, fmt.Errorf("larger than %d bytes", MaxHeaderBytes)
		}
		if len(bytes.TrimRight(line, "\r\n")) == 0 && len(line) > 0 || err != nil {
			if err != nil && !errors.Is(err, io.EOF) {
				return nil, err
			}
			break
		}
	}
	b := out.Bytes()
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, errors.New("empty")
	}
	if !bytes.HasSuffix(b, []byte("\n")) {
		b = append(b, "\r\n"...)
	}
	if !bytes.HasSuffix(b, []byte("\n\n")) && !bytes.HasSuffix(b, []byte("\n\r\n")) {
		b = append(b, "\r\n"...)
	}
	return b, nil
}

// parseStatus reads the per-message block and the per-recipient blocks of
// a delivery-status body (RFC 3464 section 2.1).
func (r *Report) parseStatus(body []byte) error {
	blocks := fieldBlocks(body)
	if len(blocks) == 0 {
		return fmt.Errorf("%w: empty delivery-status part", ErrMalformed)
	}
	for _, f := range blocks[0] {
		switch f.name {
		case "original-envelope-id":
			r.OriginalEnvelopeID = decodeXtext(strings.TrimSpace(f.value))
		case "reporting-mta":
			r.ReportingMTA = typedValue(f.value)
		case "arrival-date":
			if t, err := mail.ParseDate(strings.TrimSpace(f.value)); err == nil {
				r.ArrivalDate = t.UTC()
			}
		}
	}
	for i, b := range blocks[1:] {
		if len(r.Recipients) >= MaxRecipients {
			return fmt.Errorf("%w: more than %d recipients", ErrMalformed, MaxRecipients)
		}
		var rc Recipient
		for _, f := range b {
			switch f.name {
			case "final-recipient":
				rc.FinalRecipient = typedValue(f.value)
			case "action":
				a := Action(strings.ToLower(firstWord(f.value)))
				switch a {
				case ActionFailed, ActionDelayed, ActionDelivered, ActionRelayed, ActionExpanded:
					rc.Action = a
				default:
					return fmt.Errorf("%w: recipient %d: Action is not one of RFC 3464's", ErrMalformed, i+1)
				}
			case "status":
				if s := firstWord(f.value); steps.IsEnhancedStatus(s) {
					rc.Status = s
				}
			case "diagnostic-code":
				rc.ReplyCode = replyCode(f.value)
			}
		}
		if rc.Action == "" {
			return fmt.Errorf("%w: recipient %d: no Action field", ErrMalformed, i+1)
		}
		r.Recipients = append(r.Recipients, rc)
	}
	return nil
}

type field struct{ name, value string }

// fieldBlocks splits a delivery-status body into blocks of fields separated
// by blank lines, unfolding continuation lines. Lines that are not fields
// are ignored, as the RFC 3464 parser of a monitor should be lenient with
// what MTAs write, and strict only in what it concludes.
func fieldBlocks(body []byte) [][]field {
	var blocks [][]field
	var cur []field
	flush := func() {
		if len(cur) > 0 {
			blocks = append(blocks, cur)
			cur = nil
		}
	}
	for _, line := range strings.Split(string(body), "\n") {
		line = strings.TrimRight(line, "\r")
		switch {
		case strings.TrimSpace(line) == "":
			flush()
		case line[0] == ' ' || line[0] == '\t':
			if len(cur) > 0 {
				cur[len(cur)-1].value += " " + strings.TrimSpace(line)
			}
		default:
			name, value, ok := strings.Cut(line, ":")
			if ok {
				cur = append(cur, field{strings.ToLower(strings.TrimSpace(name)), strings.TrimSpace(value)})
			}
		}
	}
	flush()
	return blocks
}

// typedValue returns the value of a "type; value" field (Final-Recipient,
// Reporting-MTA), bounded in length and with control characters escaped.
func typedValue(v string) string {
	if _, rest, ok := strings.Cut(v, ";"); ok {
		v = rest
	}
	v = strings.Trim(strings.TrimSpace(v), "<>")
	return clip(safetext.Escape(v))
}

func firstWord(v string) string {
	v = strings.TrimSpace(v)
	if i := strings.IndexAny(v, " \t(;"); i >= 0 {
		v = v[:i]
	}
	return v
}

func clip(s string) string {
	const limit = 256
	if len(s) > limit {
		return s[:limit]
	}
	return s
}

// replyCode returns the SMTP reply code at the start of an smtp-type
// Diagnostic-Code ("smtp; 550 5.1.1 ..."), or 0.
func replyCode(v string) int {
	typ, rest, ok := strings.Cut(v, ";")
	if !ok || !strings.EqualFold(strings.TrimSpace(typ), "smtp") {
		return 0
	}
	rest = strings.TrimSpace(rest)
	if len(rest) < 3 {
		return 0
	}
	code := rest[:3]
	if code[0] < '2' || code[0] > '5' || strings.Trim(code, "0123456789") != "" {
		return 0
	}
	// The code is followed by a space, a hyphen (multi-line reply) or
	// nothing; "5501" is not a reply code.
	if len(rest) > 3 && rest[3] != ' ' && rest[3] != '-' && rest[3] != '\t' {
		return 0
	}
	n, _ := strconv.Atoi(code)
	return n
}

// decodeXtext decodes RFC 3461 section 4 xtext; a value that is not valid
// xtext is returned as it is.
func decodeXtext(s string) string {
	if !strings.Contains(s, "+") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '+' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) {
			return s
		}
		v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
		if err != nil {
			return s
		}
		b.WriteByte(byte(v))
		i += 2
	}
	return b.String()
}

// Probe proves the notice is about a probe sent with key: its returned
// headers carry a probe token whose MAC verifies with key. It returns that
// probe. When the notice also has an Original-Envelope-Id, it must be the
// same token. Nothing else in the notice (subject, human-readable text,
// envelope id alone) is taken as proof. The orphan sweep, which knows no
// token, uses this; a running probe uses Verify.
func (r *Report) Probe(key []byte) (probemsg.Probe, error) {
	if len(r.ReturnedHeaders) == 0 {
		return probemsg.Probe{}, ErrNoReturnedHeaders
	}
	p, err := probemsg.Parse(r.ReturnedHeaders, key)
	if err != nil {
		// Only the sentinel: probemsg's detail can quote a header line.
		for _, sentinel := range []error{probemsg.ErrNotProbe, probemsg.ErrBadMAC, probemsg.ErrMalformed} {
			if errors.Is(err, sentinel) {
				err = sentinel
				break
			}
		}
		return probemsg.Probe{}, fmt.Errorf("dsn: returned headers: %w", err)
	}
	if r.OriginalEnvelopeID != "" && r.OriginalEnvelopeID != p.Token {
		return probemsg.Probe{}, ErrEnvelopeMismatch
	}
	return p, nil
}

// Verify proves the notice is about the probe with token, sent with key:
// Probe's proof, and the verified token is token.
func (r *Report) Verify(key []byte, token string) (probemsg.Probe, error) {
	p, err := r.Probe(key)
	if err != nil {
		return probemsg.Probe{}, err
	}
	if p.Token != token {
		return probemsg.Probe{}, ErrOtherProbe
	}
	return p, nil
}
