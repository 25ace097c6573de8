package listener

import (
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

// benchBody is a typical Dovecot notification (the first captured sample).
const benchBody = `{"user":"alice","event":"messageNew","folder":"INBOX","imap-uidvalidity":1795613200,"imap-uid":2,"from":"Alice Sender <sender@example.org>","subject":"Hello plain","snippet":"This is the first test body. Second line.","unseen":2}`

func benchConfig() Config {
	cfg := testConfig()
	cfg.Allow = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	cfg.Routes = append(cfg.Routes,
		Route{User: "alice", Event: "MessageNew", Target: 1},
		Route{User: "bob", Event: "MessageNew", Target: 2})
	return cfg
}

func nopDeliver(int, netip.AddrPort, []byte) error { return nil }

// nullWriter is the cheapest ResponseWriter: the benchmark measures the
// handler, not a recorder.
type nullWriter struct {
	h      http.Header
	status int
}

func (w *nullWriter) Header() http.Header         { return w.h }
func (w *nullWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *nullWriter) WriteHeader(status int)      { w.status = status }

// BenchmarkServeNotify runs the handler in process on a valid, routed,
// authenticated notification: everything this package adds to a request,
// without net/http's connection handling.
func BenchmarkServeNotify(b *testing.B) {
	h := New(benchConfig(), nopDeliver, nil).Handler()
	body := strings.NewReader(benchBody)
	r, err := http.NewRequest("PUT", "http://127.0.0.1/notify", io.NopCloser(body))
	if err != nil {
		b.Fatal(err)
	}
	r.ContentLength = int64(len(benchBody))
	r.RemoteAddr = "127.0.0.1:40000"
	r.Header.Set("Authorization", basic("puser", "ppass"))
	r.Header.Set("Content-Type", "application/json; charset=utf-8")
	w := &nullWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		body.Reset(benchBody)
		w.status = 0
		h.ServeHTTP(w, r)
		if w.status != http.StatusOK {
			b.Fatalf("status %d", w.status)
		}
	}
}

// BenchmarkServeNotifyTCP is what Dovecot sees: one notification after
// another on a keep-alive loopback connection, through net/http. The
// client side (writing the request, parsing the answer) is included.
func BenchmarkServeNotifyTCP(b *testing.B) {
	addr := start(b, New(benchConfig(), nopDeliver, nil))
	rc := dial(b, addr)
	q := put(benchBody).String()
	b.ReportAllocs()
	for b.Loop() {
		resp, _ := rc.do(q)
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
}
