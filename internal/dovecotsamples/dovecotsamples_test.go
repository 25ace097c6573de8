package dovecotsamples

import (
	"strings"
	"testing"
)

func TestAll(t *testing.T) {
	samples := Load(t)
	seen := map[string]bool{}
	for _, s := range samples {
		if s.Case == "" || seen[s.Case] {
			t.Errorf("case %q empty or repeated", s.Case)
		}
		seen[s.Case] = true
		if !strings.HasPrefix(s.RequestLine, "PUT /") || !strings.HasSuffix(s.RequestLine, " HTTP/1.1") {
			t.Errorf("%s: request line %q", s.Case, s.RequestLine)
		}
		if len(s.Headers) == 0 || len(s.Body) == 0 {
			t.Errorf("%s: %d headers, %d body bytes", s.Case, len(s.Headers), len(s.Body))
		}
	}
	// Fresh slices each time: one test changing its copy cannot break
	// another.
	samples[0].Body[0] ^= 0xff
	if again := Load(t); again[0].Body[0] == samples[0].Body[0] {
		t.Error("All shares its bodies between calls")
	}
}

func TestParseRejects(t *testing.T) {
	ok := `{"case":"c","request_line":"PUT / HTTP/1.1","headers":["Host: h"],"body":"{}","body_b64":"e30="}`
	if s, err := parse([]byte(ok+"\n"), 1); err != nil || len(s) != 1 || string(s[0].Body) != "{}" {
		t.Fatalf("parse(valid) = %+v, %v", s, err)
	}
	for name, in := range map[string]string{
		"body differs":    strings.Replace(ok, `"body":"{}"`, `"body":"{ }"`, 1),
		"bad base64":      strings.Replace(ok, `"e30="`, `"e30"`, 1),
		"bad json":        ok[1:],
		"too few samples": "",
		"too many":        ok + "\n" + ok,
	} {
		if s, err := parse([]byte(in), 1); err == nil {
			t.Errorf("%s: parse = %+v, want an error", name, s)
		}
	}
}
