package authres

import (
	"errors"
	"fmt"
	"strings"
)

// maxResults bounds the results kept of one field: a hostile field cannot
// make the report grow without end.
const maxResults = 64

// ParseField parses the value of one Authentication-Results field (the text
// after the colon, unfolded or not).
//
// It is lenient where real servers are: a missing authserv-id (Microsoft
// 365), a missing space after ";", key=value words that are not
// properties. A resinfo it cannot read is skipped up to the next ";" and
// reported in the error; the field then holds every result that was read.
func ParseField(value string) (Field, error) {
	p := &parser{s: value}
	var f Field
	var errs []error

	p.skipCFWS()
	start := p.i
	if w := p.word(); w != "" {
		p.skipCFWS()
		if p.peek() == '=' {
			// "spf=pass ...": no authserv-id, the first resinfo follows.
			p.i = start
		} else {
			f.AuthServID = w
			if p.peek() != ';' && !p.eof() {
				// authres-version: only version 1 is defined.
				if v := p.word(); v != "1" {
					return f, fmt.Errorf("authres: unsupported version %q", clip(v))
				}
				p.skipCFWS()
			}
			if !p.eof() && p.peek() != ';' {
				return f, fmt.Errorf("authres: unexpected %q after authserv-id", clip(p.rest()))
			}
		}
	} else if p.peek() == '"' {
		id, err := p.quoted()
		if err != nil {
			return f, err
		}
		f.AuthServID = id
	}

	for {
		p.skipCFWS()
		if p.peek() == ';' {
			p.i++
			continue
		}
		if p.eof() {
			break
		}
		r, err := p.resinfo()
		if err != nil {
			errs = append(errs, err)
			p.skipTo(';')
			if r.Value == "" {
				continue
			}
			// A result read before the trouble is kept.
		}
		if r.Method == "none" && r.Value == "" {
			continue // "; none": nothing was evaluated
		}
		if len(f.Results) == maxResults {
			errs = append(errs, fmt.Errorf("authres: more than %d results", maxResults))
			break
		}
		f.Results = append(f.Results, r)
	}
	return f, errors.Join(errs...)
}

// resinfo reads: method[/version] = result [reason=value] *(ptype.prop=value)
// up to the next ";" (not consumed) or the end.
func (p *parser) resinfo() (Result, error) {
	method, _, _ := strings.Cut(strings.ToLower(p.word()), "/") // method version: only 1 exists
	if method == "" {
		return Result{}, fmt.Errorf("authres: expected a method at %q", clip(p.rest()))
	}
	p.skipCFWS()
	if p.peek() != '=' {
		if method == "none" {
			return Result{Method: method}, nil
		}
		return Result{}, fmt.Errorf("authres: method %q without a result", clip(method))
	}
	p.i++
	p.skipCFWS()
	value := strings.ToLower(p.word())
	if value == "" {
		return Result{}, fmt.Errorf("authres: method %q without a result", clip(method))
	}
	r := Result{Method: method, Value: value}
	var err error
	for {
		p.skipCFWS()
		if p.eof() || p.peek() == ';' {
			return r, err
		}
		key := strings.ToLower(p.word())
		p.skipCFWS()
		if key == "" || p.peek() != '=' {
			if key == "" {
				p.i++ // a stray special character
			}
			if err == nil {
				err = fmt.Errorf("authres: %s: stray %q", method, clip(key))
			}
			continue
		}
		p.i++
		p.skipCFWS()
		val, verr := p.pvalue()
		if verr != nil {
			return r, verr
		}
		if key == "reason" {
			r.Reason = val
			continue
		}
		if r.Props == nil {
			r.Props = map[string]string{}
		}
		if _, dup := r.Props[key]; !dup && len(r.Props) < maxResults {
			r.Props[key] = val
		}
	}
}

type parser struct {
	s string
	i int
}

func (p *parser) eof() bool { return p.i >= len(p.s) }

func (p *parser) peek() byte {
	if p.eof() {
		return 0
	}
	return p.s[p.i]
}

func (p *parser) rest() string { return p.s[p.i:] }

// skipCFWS skips white space and comments; an unterminated comment runs to
// the end.
func (p *parser) skipCFWS() {
	for !p.eof() {
		switch c := p.s[p.i]; {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			p.i++
		case c == '(':
			p.comment()
		default:
			return
		}
	}
}

// comment skips a comment, nested comments and quoted pairs included.
func (p *parser) comment() {
	depth := 0
	for ; !p.eof(); p.i++ {
		switch p.s[p.i] {
		case '\\':
			if p.i+1 < len(p.s) {
				p.i++
			}
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 {
				p.i++
				return
			}
		}
	}
}

// word reads a run of characters up to white space or one of ( ) ; = ".
func (p *parser) word() string {
	start := p.i
	for !p.eof() && !isSpecial(p.s[p.i]) && p.s[p.i] != '=' {
		p.i++
	}
	return p.s[start:p.i]
}

// pvalue reads a value: a quoted string, or a run up to white space, a
// comment or ";". "=" is part of it (base64 header.b values end in "=").
func (p *parser) pvalue() (string, error) {
	if p.peek() == '"' {
		return p.quoted()
	}
	start := p.i
	for !p.eof() && !isSpecial(p.s[p.i]) {
		p.i++
	}
	return p.s[start:p.i], nil
}

// quoted reads a quoted string and returns its content.
func (p *parser) quoted() (string, error) {
	p.i++ // opening quote
	var b strings.Builder
	for !p.eof() {
		c := p.s[p.i]
		p.i++
		switch c {
		case '"':
			return b.String(), nil
		case '\\':
			if !p.eof() {
				b.WriteByte(p.s[p.i])
				p.i++
			}
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), errors.New("authres: unterminated quoted string")
}

// skipTo moves to the next c outside comments and quoted strings.
func (p *parser) skipTo(c byte) {
	for !p.eof() {
		switch p.s[p.i] {
		case c:
			return
		case '(':
			p.comment()
		case '"':
			_, _ = p.quoted()
		default:
			p.i++
		}
	}
}

func isSpecial(c byte) bool {
	switch c {
	case ' ', '\t', '\r', '\n', '(', ')', ';', '"':
		return true
	}
	return false
}

// clip shortens text quoted in an error: it comes from the message.
func clip(s string) string {
	const n = 40
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
