package config

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// durationUnits are the units a duration string may use. The long forms
// are those of Rust's humantime, which the original IMSErious used, so its
// configurations keep working; months and years are left out on purpose
// (their length is a convention, not a fact).
var durationUnits = map[string]time.Duration{
	"ns": time.Nanosecond,
	"us": time.Microsecond, "µs": time.Microsecond, "μs": time.Microsecond,
	"ms": time.Millisecond,
	"s":  time.Second, "sec": time.Second, "secs": time.Second, "second": time.Second, "seconds": time.Second,
	"m": time.Minute, "min": time.Minute, "mins": time.Minute, "minute": time.Minute, "minutes": time.Minute,
	"h": time.Hour, "hr": time.Hour, "hrs": time.Hour, "hour": time.Hour, "hours": time.Hour,
	"d": 24 * time.Hour, "day": 24 * time.Hour, "days": 24 * time.Hour,
	"w": 7 * 24 * time.Hour, "week": 7 * 24 * time.Hour, "weeks": 7 * 24 * time.Hour,
}

const unitHint = "use ms, s, m, h, d or w"

// ParseDuration reads a duration such as "250ms", "5s", "1h 30m", "1h30m",
// "1d" or "2w": integers each followed by a unit, optionally separated by
// blanks. Every duration in the configuration must be positive, so zero is
// an error here, as are signs, fractions, missing units and overflow.
func ParseDuration(s string) (time.Duration, error) {
	rest := strings.Trim(s, " \t")
	if rest == "" {
		return 0, errors.New("empty duration")
	}
	var total time.Duration
	for rest != "" {
		n := 0
		for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
			n++
		}
		if n == 0 {
			return 0, fmt.Errorf("invalid duration %q: expected a number at %q", s, rest)
		}
		num, err := strconv.ParseInt(rest[:n], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("invalid duration %q: %s is too large", s, rest[:n])
		}
		rest = rest[n:]
		u := 0
		for u < len(rest) && rest[u] != ' ' && rest[u] != '\t' && (rest[u] < '0' || rest[u] > '9') {
			u++
		}
		if u == 0 {
			return 0, fmt.Errorf("invalid duration %q: missing unit after %d (%s)", s, num, unitHint)
		}
		unit, ok := durationUnits[rest[:u]]
		if !ok {
			return 0, fmt.Errorf("invalid duration %q: unknown unit %q (%s)", s, rest[:u], unitHint)
		}
		rest = strings.TrimLeft(rest[u:], " \t")
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
