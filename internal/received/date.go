package received

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

var months = map[string]time.Month{
	"jan": time.January, "feb": time.February, "mar": time.March, "apr": time.April,
	"may": time.May, "jun": time.June, "jul": time.July, "aug": time.August,
	"sep": time.September, "oct": time.October, "nov": time.November, "dec": time.December,
}

// zones are the obsolete zone names of RFC 5322 section 4.3, in hours.
var zones = map[string]int{
	"UT": 0, "UTC": 0, "GMT": 0, "Z": 0,
	"EST": -5, "EDT": -4, "CST": -6, "CDT": -5, "MST": -7, "MDT": -6, "PST": -8, "PDT": -7,
}

// ParseDate reads the date of a Received field: RFC 5322 date-time and the
// broken forms servers write (no day of week, a zone name or none, a zone
// comment, one-digit fields, two-digit years, "+00:00", fractions of a
// second, asctime order "Mon Sep 14 10:00:00 2026", ISO 8601). It returns
// the instant and its resolution: a second, finer with a fraction, a minute
// without seconds. A missing zone is taken as UTC.
func ParseDate(s string) (time.Time, time.Duration, error) {
	s = stripComments(s)
	if len(s) > 200 {
		return time.Time{}, 0, errors.New("received: date too long")
	}
	if t, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(s)); err == nil {
		return t, fractionResolution(strings.TrimSpace(s)), nil
	}
	f := strings.Fields(strings.ReplaceAll(s, ",", " "))
	if len(f) > 0 && isWeekday(f[0]) {
		f = f[1:]
	}
	if len(f) < 4 {
		return time.Time{}, 0, fmt.Errorf("received: not a date: %q", clip(s))
	}
	var dayS, monS, yearS, clockS string
	var rest []string
	if _, isMonth := months[strings.ToLower(prefix3(f[0]))]; isMonth {
		// asctime: Sep 14 10:00:00 2026 [zone]
		monS, dayS, clockS, yearS, rest = f[0], f[1], f[2], f[3], f[4:]
	} else {
		dayS, monS, yearS, clockS, rest = f[0], f[1], f[2], f[3], f[4:]
	}
	mon, ok := months[strings.ToLower(prefix3(monS))]
	if !ok || (len(monS) != 3 && !strings.EqualFold(monS, fullMonth(mon))) {
		return time.Time{}, 0, fmt.Errorf("received: bad month %q", clip(monS))
	}
	day, err := strconv.Atoi(dayS)
	if err != nil || len(dayS) > 2 || day < 1 || day > 31 {
		return time.Time{}, 0, fmt.Errorf("received: bad day %q", clip(dayS))
	}
	year, err := strconv.Atoi(yearS)
	switch {
	case err != nil || len(yearS) > 4 || len(yearS) == 3:
		return time.Time{}, 0, fmt.Errorf("received: bad year %q", clip(yearS))
	case len(yearS) <= 2 && year < 50:
		year += 2000
	case len(yearS) <= 2:
		year += 1900
	}
	hour, minute, sec, nsec, res, err := parseClock(clockS)
	if err != nil {
		return time.Time{}, 0, err
	}
	offset := 0
	if len(rest) > 0 {
		if offset, err = parseZone(rest[0]); err != nil {
			return time.Time{}, 0, err
		}
		if len(rest) > 1 {
			return time.Time{}, 0, fmt.Errorf("received: trailing %q after date", clip(strings.Join(rest[1:], " ")))
		}
	}
	t := time.Date(year, mon, day, hour, minute, sec, nsec, time.FixedZone("", offset))
	if t.Day() != day {
		return time.Time{}, 0, fmt.Errorf("received: no day %d in %s %d", day, mon, year)
	}
	return t, res, nil
}

// parseClock reads hh:mm[:ss[.frac]].
func parseClock(s string) (hour, minute, sec, nsec int, res time.Duration, err error) {
	bad := fmt.Errorf("received: bad time %q", clip(s))
	parts := strings.Split(s, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return 0, 0, 0, 0, 0, bad
	}
	num := func(p string, hi int) (int, bool) {
		n, err := strconv.Atoi(p)
		return n, err == nil && len(p) >= 1 && len(p) <= 2 && n >= 0 && n <= hi
	}
	var ok1, ok2, ok3 bool
	hour, ok1 = num(parts[0], 23)
	minute, ok2 = num(parts[1], 59)
	res, ok3 = time.Minute, true
	if len(parts) == 3 {
		secS, frac, hasFrac := strings.Cut(parts[2], ".")
		sec, ok3 = num(secS, 60)
		sec = min(sec, 59) // a leap second is within the second before
		res = time.Second
		if hasFrac {
			if len(frac) == 0 || len(frac) > 9 || strings.Trim(frac, "0123456789") != "" {
				return 0, 0, 0, 0, 0, bad
			}
			n, _ := strconv.Atoi(frac)
			res = time.Duration(pow10(9 - len(frac)))
			nsec = n * int(res)
		}
	}
	if !ok1 || !ok2 || !ok3 {
		return 0, 0, 0, 0, 0, bad
	}
	return hour, minute, sec, nsec, res, nil
}

// parseZone reads +hhmm, -hhmm, +hh:mm, +hh or a zone name of RFC 5322.
// Other names (CEST, a military letter) are refused: their offset is not
// known, and a wrong one would move the hop by hours.
func parseZone(s string) (int, error) {
	if h, ok := zones[strings.ToUpper(s)]; ok {
		return h * 3600, nil
	}
	if len(s) < 2 || (s[0] != '+' && s[0] != '-') {
		return 0, fmt.Errorf("received: bad zone %q", clip(s))
	}
	digits := strings.ReplaceAll(s[1:], ":", "")
	if len(digits) == 2 {
		digits += "00"
	}
	n, err := strconv.Atoi(digits)
	if err != nil || len(digits) != 4 || strings.Trim(digits, "0123456789") != "" {
		return 0, fmt.Errorf("received: bad zone %q", clip(s))
	}
	h, m := n/100, n%100
	if h > 14 || m > 59 {
		return 0, fmt.Errorf("received: bad zone %q", clip(s))
	}
	off := h*3600 + m*60
	if s[0] == '-' {
		off = -off
	}
	return off, nil
}

func stripComments(s string) string {
	if !strings.Contains(s, "(") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '(' {
			i = commentEnd(s, i)
			b.WriteByte(' ')
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isWeekday(s string) bool {
	switch strings.ToLower(s) {
	case "mon", "tue", "wed", "thu", "fri", "sat", "sun",
		"monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday":
		return true
	}
	return false
}

func prefix3(s string) string {
	if len(s) < 3 {
		return s
	}
	return s[:3]
}

func fullMonth(m time.Month) string { return m.String() }

func fractionResolution(s string) time.Duration {
	i := strings.IndexByte(s, '.')
	if i < 0 {
		return time.Second
	}
	n := 0
	for _, c := range s[i+1:] {
		if c < '0' || c > '9' {
			break
		}
		n++
	}
	return time.Duration(pow10(9 - min(n, 9)))
}

func pow10(n int) int64 {
	p := int64(1)
	for range n {
		p *= 10
	}
	return p
}

// clip shortens text quoted in an error: it comes from the message.
func clip(s string) string {
	const n = 40
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
