package pop3watch

import (
	"bytes"
	"strings"
)

// probeTokenPrefix starts every probe token (see probemsg). It only selects
// what FindProbes considers; what makes a message a probe is accept.
const probeTokenPrefix = "eq"

// headerValues returns the values of the field name in a header block,
// unfolded and trimmed, reading up to the blank line that ends the header.
// It is exact where a search would match substrings, and tolerant of lines
// a strict parser would stop at, since relays prepend all sorts of fields.
func headerValues(header []byte, name string) []string {
	var (
		out []string
		cur []byte
		in  bool
	)
	flush := func() {
		if in {
			out = append(out, strings.TrimSpace(string(cur)))
		}
		in, cur = false, cur[:0]
	}
	for len(header) > 0 {
		var line []byte
		line, header, _ = bytes.Cut(header, []byte("\n"))
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) == 0 {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			// Folded: unfolding only removes the line break.
			if in {
				cur = append(cur, line...)
			}
			continue
		}
		flush()
		key, value, ok := bytes.Cut(line, []byte(":"))
		if ok && strings.EqualFold(string(bytes.TrimRight(key, " \t")), name) {
			in, cur = true, append(cur, value...)
		}
	}
	flush()
	return out
}

func isProbeToken(v string) bool {
	return strings.HasPrefix(v, probeTokenPrefix) && validToken(v)
}
