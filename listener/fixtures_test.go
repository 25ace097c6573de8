package listener

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"strings"
	"testing"

	"github.com/imserious/imserious/internal/dovecotsamples"
)

// sampleRequest rebuilds the request byte for byte as Dovecot sent it,
// with only the Host header pointing at the test server.
func sampleRequest(s dovecotsamples.Sample, host string) string {
	var b strings.Builder
	b.WriteString(s.RequestLine + "\r\n")
	for _, h := range s.Headers {
		if strings.HasPrefix(h, "Host: ") {
			h = "Host: " + host
		}
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	b.Write(s.Body)
	return b.String()
}

// sampleConfig is what an operator would configure for the URL Dovecot
// used: its path as endpoint, its userinfo as credentials, and a handler
// for the user in the body.
func sampleConfig(tb testing.TB, s dovecotsamples.Sample) Config {
	fields := strings.Fields(s.RequestLine)
	u, err := url.ParseRequestURI(fields[1])
	if err != nil {
		tb.Fatalf("%s: %v", s.Case, err)
	}
	var body struct{ User string }
	if err := json.Unmarshal(s.Body, &body); err != nil {
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
	samples := dovecotsamples.Load(t)
	var lmtp []dovecotsamples.Sample
	for _, s := range samples {
		if strings.HasPrefix(s.Case, "LMTP") {
			lmtp = append(lmtp, s)
			continue
		}
		t.Run(s.Case, func(t *testing.T) {
			rec := &recorder{}
			addr := start(t, New(sampleConfig(t, s), rec.deliver, nil))
			rc := dial(t, addr)
			resp, body := rc.do(sampleRequest(s, addr))
			if resp.StatusCode != 200 || body != "" {
				t.Fatalf("status %d body %q, want 200 and no body", resp.StatusCode, body)
			}
			calls := rec.get()
			if len(calls) != 1 || calls[0].target != 3 || !bytes.Equal([]byte(calls[0].body), s.Body) ||
				calls[0].remote.String() != rc.c.LocalAddr().String() {
				t.Errorf("calls %+v", calls)
			}
		})
	}
	if len(lmtp) != 2 {
		t.Fatalf("%d LMTP samples, want 2", len(lmtp))
	}
	t.Run("LMTP on one connection", func(t *testing.T) {
		cfg := sampleConfig(t, lmtp[0])
		cfg.Routes = append(cfg.Routes, sampleConfig(t, lmtp[1]).Routes...)
		rec := &recorder{}
		addr := start(t, New(cfg, rec.deliver, nil))
		rc := dial(t, addr)
		for i, s := range lmtp {
			resp, _ := rc.do(sampleRequest(s, addr))
			if resp.StatusCode != 200 || resp.Close {
				t.Fatalf("recipient %d: status %d close %v, want 200 kept alive", i+1, resp.StatusCode, resp.Close)
			}
		}
		calls := rec.get()
		if len(calls) != 2 || calls[0].body != string(lmtp[0].Body) || calls[1].body != string(lmtp[1].Body) {
			t.Errorf("calls %+v", calls)
		}
	})
}
