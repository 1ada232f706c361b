package opsassets

import (
	"fmt"
	"strings"
)

// Selector is a metric a query selects and the label names it matches on.
type Selector struct {
	Metric string
	Labels []string
}

// Query is what Parse found in a PromQL expression.
type Query struct {
	Selectors []Selector
	// Grouping lists the labels of by, without, on, ignoring, group_left
	// and group_right clauses.
	Grouping []string
}

// keywords are PromQL words that are neither metrics nor functions called
// with parentheses right after them.
var keywords = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true, "atan2": true,
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
	"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true,
	"limitk": true, "limit_ratio": true, "inf": true, "nan": true,
}

var groupingKeywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
}

type token struct {
	kind byte // 'i' identifier, 'n' number or duration, 's' string, 'v' $variable, else the character
	text string
}

// Parse extracts the metrics, their matchers' label names and the grouping
// labels of a PromQL expression, which may contain Grafana variables
// ($direction, ${direction}, $__rate_interval). It is a scanner, not a full
// parser: enough to know every name an expression depends on. Grafana's
// label_values(metric, label) is understood too.
func Parse(expr string) (Query, error) {
	toks, err := lex(expr)
	if err != nil {
		return Query{}, err
	}
	var q Query
	next := func(i int) token {
		if i+1 < len(toks) {
			return toks[i+1]
		}
		return token{}
	}
	for i := 0; i < len(toks); i++ {
		t := toks[i]
		switch {
		case t.kind == '[':
			// Ranges and subqueries: durations and variables only.
			for i < len(toks) && toks[i].kind != ']' {
				i++
			}
		case t.kind == '{':
			// A selector without a metric name ({__name__=...}) or the
			// matchers of the metric just recorded.
			labels, end, err := matchers(toks, i)
			if err != nil {
				return Query{}, err
			}
			if i > 0 && toks[i-1].kind == 'i' && !keywords[toks[i-1].text] && len(q.Selectors) > 0 &&
				q.Selectors[len(q.Selectors)-1].Metric == toks[i-1].text {
				q.Selectors[len(q.Selectors)-1].Labels = append(q.Selectors[len(q.Selectors)-1].Labels, labels...)
			} else {
				return Query{}, fmt.Errorf("a selector without a metric name is not supported")
			}
			i = end
		case t.kind == 'i' && groupingKeywords[t.text] && next(i).kind == '(':
			i += 2
			for ; i < len(toks) && toks[i].kind != ')'; i++ {
				if toks[i].kind == 'i' {
					q.Grouping = append(q.Grouping, toks[i].text)
				}
			}
		case t.kind == 'i' && t.text == "label_values" && next(i).kind == '(':
			// label_values(metric{...}, label): the label is grouping-like.
			depth := 0
			for j := i + 1; j < len(toks); j++ {
				switch toks[j].kind {
				case '(', '{':
					depth++
				case ')', '}':
					depth--
				case ',':
					if depth == 1 && j+1 < len(toks) && toks[j+1].kind == 'i' {
						q.Grouping = append(q.Grouping, toks[j+1].text)
						toks = append(toks[:j+1], toks[j+2:]...)
					}
				}
				if depth == 0 {
					break
				}
			}
			i++ // the '('
		case t.kind == 'i' && next(i).kind == '(':
			i++ // a function call
		case t.kind == 'i' && !keywords[t.text]:
			q.Selectors = append(q.Selectors, Selector{Metric: t.text})
		}
	}
	return q, nil
}

// matchers reads {label op "value", ...} starting at toks[i] == '{' and
// returns the label names and the index of the closing '}'.
func matchers(toks []token, i int) ([]string, int, error) {
	var labels []string
	expectLabel := true
	for i++; i < len(toks); i++ {
		switch t := toks[i]; {
		case t.kind == '}':
			return labels, i, nil
		case t.kind == ',':
			expectLabel = true
		case t.kind == 'i' && expectLabel:
			labels = append(labels, t.text)
			expectLabel = false
		}
	}
	return nil, 0, fmt.Errorf("unclosed {")
}

func lex(s string) ([]token, error) {
	var toks []token
	isIdentStart := func(c byte) bool { return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
	isIdent := func(c byte) bool { return isIdentStart(c) || c >= '0' && c <= '9' }
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '#':
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == '"' || c == '\'' || c == '`':
			j := i + 1
			for j < len(s) && s[j] != c {
				if s[j] == '\\' && c != '`' {
					j++
				}
				j++
			}
			if j >= len(s) {
				return nil, fmt.Errorf("unterminated string at %d", i)
			}
			toks = append(toks, token{kind: 's', text: s[i+1 : j]})
			i = j + 1
		case c == '$':
			j := i + 1
			if j < len(s) && s[j] == '{' {
				end := strings.IndexByte(s[j:], '}')
				if end < 0 {
					return nil, fmt.Errorf("unterminated ${ at %d", i)
				}
				j += end + 1
			} else {
				for j < len(s) && isIdent(s[j]) {
					j++
				}
			}
			toks = append(toks, token{kind: 'v', text: s[i:j]})
			i = j
		case isIdentStart(c):
			j := i
			for j < len(s) && isIdent(s[j]) {
				j++
			}
			toks = append(toks, token{kind: 'i', text: s[i:j]})
			i = j
		case c >= '0' && c <= '9' || c == '.':
			j := i
			for j < len(s) && (isIdent(s[j]) || s[j] == '.') {
				j++
			}
			toks = append(toks, token{kind: 'n', text: s[i:j]})
			i = j
		default:
			toks = append(toks, token{kind: c, text: string(c)})
			i++
		}
	}
	return toks, nil
}
