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
		{in: "0s", err: "must be greater than zero"},
		{in: "0h 0m", err: "must be greater than zero"},
		{in: "-5s", err: `expected a number at "-5s"`},
		{in: "+5s", err: "expected a number"},
		{in: "5", err: "missing unit after 5"},
		{in: "5 s", err: "missing unit"},
		{in: "1.5h", err: `unknown unit "."`},
		{in: "5x", err: `unknown unit "x"`},
		{in: "5S", err: `unknown unit "S"`},
		{in: "5M", err: `unknown unit "M"`}, // months are not supported
		{in: "", err: "empty duration"},
		{in: "   ", err: "empty duration"},
		{in: "s", err: "expected a number"},
		{in: "garbage", err: "expected a number"},
		{in: "5s garbage", err: "expected a number"},
		{in: "99999999999999999999s", err: "too large"},
		{in: "100000000w", err: "too long"},
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
	for _, s := range []string{"5s", "1h 30m", "2w", "0s", "-1s", "99999999999w", "1d1h1m1s1ms1us1ns"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDuration(s)
		if err == nil && d <= 0 {
			t.Fatalf("ParseDuration(%q) = %v without error", s, d)
		}
	})
}
