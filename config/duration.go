package config

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Lengths humantime gives the units whose length is a convention: a month
// is 30.44 days and a year 365.25 days, to the second.
const (
	month = 2_630_016 * time.Second
	year  = 31_557_600 * time.Second
)

// durationUnits are the units a duration string may use: exactly those of
// Rust's humantime 2.1, which the original IMSErious parsed durations with
// (case matters there too: "M" is months, "m" minutes), so its
// configurations keep working, plus µs and μs for microseconds. Months and
// years are humantime's conventional lengths, as the original took them.
var durationUnits = map[string]time.Duration{
	"nanos": time.Nanosecond, "nsec": time.Nanosecond, "ns": time.Nanosecond,
	"usec": time.Microsecond, "us": time.Microsecond, "µs": time.Microsecond, "μs": time.Microsecond,
	"millis": time.Millisecond, "msec": time.Millisecond, "ms": time.Millisecond,
	"seconds": time.Second, "second": time.Second, "secs": time.Second, "sec": time.Second, "s": time.Second,
	"minutes": time.Minute, "minute": time.Minute, "min": time.Minute, "mins": time.Minute, "m": time.Minute,
	"hours": time.Hour, "hour": time.Hour, "hr": time.Hour, "hrs": time.Hour, "h": time.Hour,
	"days": 24 * time.Hour, "day": 24 * time.Hour, "d": 24 * time.Hour,
	"weeks": 7 * 24 * time.Hour, "week": 7 * 24 * time.Hour, "w": 7 * 24 * time.Hour,
	"months": month, "month": month, "M": month,
	"years": year, "year": year, "y": year,
}

// longUnits are the spelled-out units, the ones a typo is worth a guess
// for; a one- or two-letter unit has too many neighbours to guess from.
var longUnits = []string{"nanos", "nsec", "usec", "millis", "msec", "seconds", "second", "secs", "sec",
	"minutes", "minute", "mins", "min", "hours", "hour", "hrs", "days", "day", "weeks", "week",
	"months", "month", "years", "year"}

const unitHint = "use ns, us, ms, s, m, h, d, w, M (months) or y (years), or a long form such as sec, minutes or days"

// ParseDuration reads a duration such as "250ms", "5s", "30 sec",
// "1h 30m", "1h30m", "1 hour 30 minutes", "2 days" or "2w": integers each
// followed by a unit, with blanks allowed between a number and its unit
// and between parts, as humantime allowed them. Every duration in the
// configuration must be positive, so zero is an error here, as are signs,
// fractions, missing units and overflow.
//
// What humantime accepted and this does not: blanks inside a number
// ("1 0s" was 10s there), which is a typo rather than a duration.
func ParseDuration(s string) (time.Duration, error) {
	rest := strings.TrimFunc(s, unicode.IsSpace)
	if rest == "" {
		return 0, errors.New("empty duration")
	}
	var total time.Duration
	for rest != "" {
		n := 0
		for n < len(rest) && isDigit(rest[n]) {
			n++
		}
		if n == 0 {
			if rest[0] == '-' || rest[0] == '+' {
				return 0, fmt.Errorf("invalid duration %q: expected a number at %q (no sign: a duration is a positive length of time)", s, rest)
			}
			return 0, fmt.Errorf("invalid duration %q: expected a number at %q", s, rest)
		}
		num, err := strconv.ParseInt(rest[:n], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("invalid duration %q: %s is too large", s, rest[:n])
		}
		rest = rest[n:]
		if len(rest) > 1 && (rest[0] == '.' || rest[0] == ',') && isDigit(rest[1]) {
			return 0, fmt.Errorf("invalid duration %q: fractions are not allowed (use a smaller unit: \"1h 30m\", not \"1.5h\"; \"1500ms\", not \"1.5s\")", s)
		}
		rest = strings.TrimLeftFunc(rest, unicode.IsSpace)
		u := 0
		for u < len(rest) && !isDigit(rest[u]) {
			r, size := utf8.DecodeRuneInString(rest[u:])
			if unicode.IsSpace(r) {
				break
			}
			u += size
		}
		if u == 0 {
			return 0, fmt.Errorf("invalid duration %q: missing unit after %d (%s)", s, num, unitHint)
		}
		name := rest[:u]
		unit, ok := durationUnits[name]
		if !ok {
			return 0, unknownUnit(s, name)
		}
		rest = strings.TrimLeftFunc(rest[u:], unicode.IsSpace)
		if num > math.MaxInt64/int64(unit) || time.Duration(num)*unit > math.MaxInt64-total {
			return 0, fmt.Errorf("invalid duration %q: too long", s)
		}
		total += time.Duration(num) * unit
	}
	if total <= 0 {
		return 0, fmt.Errorf("invalid duration %q: must be greater than zero", s)
	}
	return total, nil
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// unknownUnit explains a unit that is not one: a unit written in the
// wrong case (units are case-sensitive, as humantime's were: "M" is
// months), a misspelled long unit, or anything else.
func unknownUnit(s, name string) error {
	if k := strings.ToLower(name); k != name {
		if _, ok := durationUnits[k]; ok {
			return fmt.Errorf("invalid duration %q: unknown unit %q (did you mean %q? units are case-sensitive: M is months, m minutes)", s, name, k)
		}
	}
	if len(name) > 3 {
		if k := suggest(name, longUnits); k != "" {
			return fmt.Errorf("invalid duration %q: unknown unit %q (did you mean %q?)", s, name, k)
		}
	}
	return fmt.Errorf("invalid duration %q: unknown unit %q (%s)", s, name, unitHint)
}
