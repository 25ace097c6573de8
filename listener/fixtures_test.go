package listener

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"os"
	"strings"
	"testing"
)

// sample is one request captured from Dovecot 2.3 (testdata, copied from
// the project's shared fixtures).
type sample struct {
	Case        string   `json:"case"`
	RequestLine string   `json:"request_line"`
	Headers     []string `json:"headers"`
	BodyB64     string   `json:"body_b64"`
}

func loadSamples(tb testing.TB) []sample {
	tb.Helper()
	f, err := os.Open("testdata/dovecot-ox-samples.jsonl")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	var out []sample
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var s sample
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			tb.Fatalf("testdata line %d: %v", len(out)+1, err)
		}
		out = append(out, s)
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	if len(out) != 20 {
		tb.Fatalf("%d samples, want 20", len(out))
	}
	return out
}

func (s sample) body(tb testing.TB) []byte {
	b, err := base64.StdEncoding.DecodeString(s.BodyB64)
	if err != nil {
		tb.Fatalf("%s: body_b64: %v", s.Case, err)
	}
	return b
}

// raw rebuilds the request byte for byte as Dovecot sent it, with only the
// Host header pointing at the test server.
func (s sample) raw(tb testing.TB, host string) string {
	var b strings.Builder
	b.WriteString(s.RequestLine + "\r\n")
	for _, h := range s.Headers {
		if strings.HasPrefix(h, "Host: ") {
			h = "Host: " + host
		}
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	b.Write(s.body(tb))
	return b.String()
}

// config is what an operator would configure for the URL Dovecot used:
// its path as endpoint, its userinfo as credentials, and a handler for the
// user in the body.
func (s sample) config(tb testing.TB) Config {
	fields := strings.Fields(s.RequestLine)
	u, err := url.ParseRequestURI(fields[1])
	if err != nil {
		tb.Fatalf("%s: %v", s.Case, err)
	}
	var body struct{ User string }
	if err := json.Unmarshal(s.body(tb), &body); err != nil {
		tb.Fatalf("%s: %v", s.Case, err)
	}
	cfg := testConfig()
	cfg.Endpoint = u.Path
	cfg.Auth = nil
	cfg.Routes = []Route{{User: body.User, Event: "MessageNew", Target: 3}}
	for _, h := range s.Headers {
		if v, ok := strings.CutPrefix(h, "Authorization: Basic "); ok {
			dec, err := base64.StdEncoding.DecodeString(v)
			if err != nil {
				tb.Fatalf("%s: %v", s.Case, err)
			}
			user, pass, _ := strings.Cut(string(dec), ":")
			cfg.Auth = &Auth{User: user, Pass: pass}
		}
	}
	return cfg
}

// TestDovecotSamples replays every captured Dovecot request over a real
// connection: each is answered 200 and its exact body reaches the handler's
// exec channel. The two LMTP recipients share one keep-alive connection,
// as LMTP sends them.
func TestDovecotSamples(t *testing.T) {
	samples := loadSamples(t)
	var lmtp []sample
	for _, s := range samples {
		if strings.HasPrefix(s.Case, "LMTP") {
			lmtp = append(lmtp, s)
			continue
		}
		t.Run(s.Case, func(t *testing.T) {
			rec := &recorder{}
			addr := start(t, New(s.config(t), rec.deliver, nil))
			rc := dial(t, addr)
			resp, body := rc.do(s.raw(t, addr))
			if resp.StatusCode != 200 || body != "" {
				t.Fatalf("status %d body %q, want 200 and no body", resp.StatusCode, body)
			}
			calls := rec.get()
			if len(calls) != 1 || calls[0].target != 3 || !bytes.Equal([]byte(calls[0].body), s.body(t)) ||
				calls[0].remote.String() != rc.c.LocalAddr().String() {
				t.Errorf("calls %+v", calls)
			}
		})
	}
	if len(lmtp) != 2 {
		t.Fatalf("%d LMTP samples, want 2", len(lmtp))
	}
	t.Run("LMTP on one connection", func(t *testing.T) {
		cfg := lmtp[0].config(t)
		cfg.Routes = append(cfg.Routes, lmtp[1].config(t).Routes...)
		rec := &recorder{}
		addr := start(t, New(cfg, rec.deliver, nil))
		rc := dial(t, addr)
		for i, s := range lmtp {
			resp, _ := rc.do(s.raw(t, addr))
			if resp.StatusCode != 200 || resp.Close {
				t.Fatalf("recipient %d: status %d close %v, want 200 kept alive", i+1, resp.StatusCode, resp.Close)
			}
		}
		calls := rec.get()
		if len(calls) != 2 || calls[0].body != string(lmtp[0].body(t)) || calls[1].body != string(lmtp[1].body(t)) {
			t.Errorf("calls %+v", calls)
		}
	})
}
