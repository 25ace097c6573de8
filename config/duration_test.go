package config

import (
	"strings"
	"testing"
	"time"
)

func TestParseDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		err  string // substring of the error; "" means success
	}{
		{in: "250ms", want: 250 * time.Millisecond},
		{in: "5s", want: 5 * time.Second},
		{in: "30m", want: 30 * time.Minute},
		{in: "1h", want: time.Hour},
		{in: "1h 30m", want: 90 * time.Minute},
		{in: "1h30m", want: 90 * time.Minute},
		{in: "1h  30m\t15s", want: time.Hour + 30*time.Minute + 15*time.Second},
		{in: " 5s ", want: 5 * time.Second},
		{in: "1d", want: 24 * time.Hour},
		{in: "2w", want: 14 * 24 * time.Hour},
		{in: "100us", want: 100 * time.Microsecond},
		{in: "100µs", want: 100 * time.Microsecond},
		{in: "10ns", want: 10},
		{in: "2min", want: 2 * time.Minute},
		{in: "3hours", want: 3 * time.Hour},
		{in: "1day 2hrs", want: 26 * time.Hour},
		{in: "1h 0m", want: time.Hour},
		// The spellings humantime 2.1 took, as the original did: blanks
		// between a number and its unit and between parts, and each of its
		// unit names, case-sensitive.
		{in: "30 sec", want: 30 * time.Second},
		{in: "5 seconds", want: 5 * time.Second},
		{in: "2 days", want: 48 * time.Hour},
		{in: "1 hour 30 minutes", want: 90 * time.Minute},
		{in: "1hour30minutes", want: 90 * time.Minute},
		{in: "5 s", want: 5 * time.Second},
		{in: "5\t s", want: 5 * time.Second},
		{in: "\u00a05s\u00a0", want: 5 * time.Second}, // humantime's blanks are Unicode White_Space
		{in: "1 h\u00a030 m", want: 90 * time.Minute},
		{in: "7nanos", want: 7},
		{in: "7nsec", want: 7},
		{in: "7 usec", want: 7 * time.Microsecond},
		{in: "7μs", want: 7 * time.Microsecond}, // Greek mu, beside the micro sign
		{in: "7millis", want: 7 * time.Millisecond},
		{in: "7msec", want: 7 * time.Millisecond},
		{in: "1second", want: time.Second},
		{in: "2secs", want: 2 * time.Second},
		{in: "1minute", want: time.Minute},
		{in: "2mins", want: 2 * time.Minute},
		{in: "1hour", want: time.Hour},
		{in: "1hr", want: time.Hour},
		{in: "1day", want: 24 * time.Hour},
		{in: "1week", want: 7 * 24 * time.Hour},
		{in: "3weeks", want: 21 * 24 * time.Hour},
		{in: "1M", want: 2630016 * time.Second},
		{in: "1 month", want: 2630016 * time.Second},
		{in: "2months", want: 2 * 2630016 * time.Second},
		{in: "1y", want: 31557600 * time.Second},
		{in: "1 year", want: 31557600 * time.Second},
		{in: "2 years 1 month", want: 2*31557600*time.Second + 2630016*time.Second},
		{in: "1y 2M 3w 4d 5h 6m 7s 8ms 9us 10ns", want: 31557600*time.Second + 2*2630016*time.Second +
			21*24*time.Hour + 4*24*time.Hour + 5*time.Hour + 6*time.Minute + 7*time.Second +
			8*time.Millisecond + 9*time.Microsecond + 10},
		{in: "1s1s", want: 2 * time.Second}, // humantime adds repeated units up

		{in: "0s", err: "must be greater than zero"},
		{in: "0 seconds", err: "must be greater than zero"},
		{in: "0h 0m", err: "must be greater than zero"},
		{in: "-5s", err: `expected a number at "-5s" (no sign`},
		{in: "+5s", err: "expected a number at \"+5s\" (no sign"},
		{in: "5s -1s", err: "no sign"},
		{in: "5", err: "missing unit after 5"},
		{in: "5 ", err: "missing unit after 5"},
		{in: "1h 30", err: "missing unit after 30"},
		{in: "1 0s", err: "missing unit after 1"}, // humantime read 10s; a typo here
		{in: "1.5h", err: "fractions are not allowed"},
		{in: "0.5 s", err: "fractions are not allowed"},
		{in: "1,5h", err: "fractions are not allowed"},
		{in: "5x", err: `unknown unit "x" (use ns, us, ms, s, m, h, d, w, M (months) or y (years)`},
		{in: "5S", err: `unknown unit "S" (did you mean "s"? units are case-sensitive`},
		{in: "5 Seconds", err: `unknown unit "Seconds" (did you mean "seconds"?`},
		{in: "5H", err: `did you mean "h"?`},
		{in: "5MS", err: `did you mean "ms"?`},
		{in: "5 mintues", err: `unknown unit "mintues" (did you mean "minutes"?)`},
		{in: "5 seconsd", err: `did you mean "seconds"?`},
		{in: "5 fortnights", err: `unknown unit "fortnights" (use ns`},
		{in: "5 h.", err: `unknown unit "h."`},
		{in: "5mo", err: `unknown unit "mo"`},
		{in: "5yr", err: `unknown unit "yr"`}, // not one of humantime's
		{in: "5Y", err: `did you mean "y"?`},
		{in: "", err: "empty duration"},
		{in: "   ", err: "empty duration"},
		{in: "s", err: "expected a number"},
		{in: "garbage", err: "expected a number"},
		{in: "5s garbage", err: "expected a number"},
		{in: "99999999999999999999s", err: "too large"},
		{in: "100000000w", err: "too long"},
		{in: "300y", err: "too long"}, // a time.Duration ends near 292 years
		{in: "9223372036s 9223372036s", err: "too long"},
	} {
		got, err := ParseDuration(tc.in)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("ParseDuration(%q): %v", tc.in, err)
		case tc.err == "" && got != tc.want:
			t.Errorf("ParseDuration(%q) = %v, want %v", tc.in, got, tc.want)
		case tc.err != "" && err == nil:
			t.Errorf("ParseDuration(%q) = %v, want an error containing %q", tc.in, got, tc.err)
		case tc.err != "" && !strings.Contains(err.Error(), tc.err):
			t.Errorf("ParseDuration(%q): error %q does not contain %q", tc.in, err, tc.err)
		}
	}
}

func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"5s", "1h 30m", "2w", "0s", "-1s", "99999999999w", "1d1h1m1s1ms1us1ns", "1 hour 30 minutes", "2 years 1 M"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDuration(s)
		if err == nil && d <= 0 {
			t.Fatalf("ParseDuration(%q) = %v without error", s, d)
		}
	})
}

// TestDurationUnitsAreHumantimes: the unit names are humantime 2.1's,
// exactly (its parse_unit), with the micro sign and Greek mu beside "us";
// and a unit one letter off in case, which humantime refused too, is
// still refused here.
func TestDurationUnitsAreHumantimes(t *testing.T) {
	humantime := map[string]time.Duration{
		"nanos": 1, "nsec": 1, "ns": 1,
		"usec": time.Microsecond, "us": time.Microsecond,
		"millis": time.Millisecond, "msec": time.Millisecond, "ms": time.Millisecond,
		"seconds": time.Second, "second": time.Second, "secs": time.Second, "sec": time.Second, "s": time.Second,
		"minutes": time.Minute, "minute": time.Minute, "min": time.Minute, "mins": time.Minute, "m": time.Minute,
		"hours": time.Hour, "hour": time.Hour, "hr": time.Hour, "hrs": time.Hour, "h": time.Hour,
		"days": 86400 * time.Second, "day": 86400 * time.Second, "d": 86400 * time.Second,
		"weeks": 7 * 86400 * time.Second, "week": 7 * 86400 * time.Second, "w": 7 * 86400 * time.Second,
		"months": 2_630_016 * time.Second, "month": 2_630_016 * time.Second, "M": 2_630_016 * time.Second,
		"years": 31_557_600 * time.Second, "year": 31_557_600 * time.Second, "y": 31_557_600 * time.Second,
	}
	want := map[string]time.Duration{"µs": time.Microsecond, "μs": time.Microsecond}
	for k, v := range humantime {
		want[k] = v
	}
	for k, v := range want {
		if got, err := ParseDuration("3" + k); err != nil || got != 3*v {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", "3"+k, got, err, 3*v)
		}
		if got, err := ParseDuration("3 " + k); err != nil || got != 3*v {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", "3 "+k, got, err, 3*v)
		}
	}
	for k := range durationUnits {
		if _, ok := want[k]; !ok {
			t.Errorf("unit %q is not humantime's", k)
		}
	}
	for _, k := range longUnits {
		if _, ok := durationUnits[k]; !ok {
			t.Errorf("longUnits has %q, which is no unit", k)
		}
	}
}
