package load

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// counting is a test server that checks each request is what Dovecot
// sends, answers with status, and counts requests and connections.
type counting struct {
	srv     *httptest.Server
	status  atomic.Int32
	reqs    atomic.Int64
	conns   atomic.Int64
	mu      sync.Mutex
	badness []string
}

func newCounting(t *testing.T, useTLS bool) *counting {
	t.Helper()
	c := &counting{}
	c.status.Store(200)
	c.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.reqs.Add(1)
		var body map[string]any
		err := json.NewDecoder(r.Body).Decode(&body)
		switch {
		case r.Method != "PUT" || r.URL.Path != "/notify":
			c.bad("request line " + r.Method + " " + r.URL.Path)
		case r.Header.Get("Content-Type") != "application/json; charset=utf-8":
			c.bad("content type " + r.Header.Get("Content-Type"))
		case err != nil || body["user"] == nil || body["event"] != "messageNew":
			c.bad("body " + strings.TrimSpace(err.Error()))
		}
		w.WriteHeader(int(c.status.Load()))
	}))
	c.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			c.conns.Add(1)
		}
	}
	if useTLS {
		c.srv.StartTLS()
	} else {
		c.srv.Start()
	}
	t.Cleanup(c.srv.Close)
	return c
}

func (c *counting) bad(why string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.badness = append(c.badness, why)
}

func (c *counting) target(keepAlive bool) Target {
	t := Target{Addr: c.srv.Listener.Addr().String(), KeepAlive: keepAlive}
	if c.srv.TLS != nil {
		pool := x509.NewCertPool()
		pool.AddCert(c.srv.Certificate())
		t.TLS = &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
	}
	return t
}

func body(buf []byte, w, n int) []byte { return Body(buf, "user", n) }

func TestRunKeepAliveAndNewConnections(t *testing.T) {
	for _, tc := range []struct {
		name      string
		tls       bool
		keepAlive bool
	}{{"http keep-alive", false, true}, {"http new connections", false, false},
		{"https keep-alive", true, true}, {"https new connections", true, false}} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCounting(t, tc.tls)
			r := Run(Options{Target: c.target(tc.keepAlive), Conns: 4, Requests: 200, Body: body})
			if r.Requests != 200 || r.Failed != 0 || r.Err != nil {
				t.Fatalf("%d answered, %d failed: %v", r.Requests, r.Failed, r.Err)
			}
			if got := c.reqs.Load(); got != 200 {
				t.Errorf("server saw %d requests, want 200", got)
			}
			want := int64(200)
			if tc.keepAlive {
				want = 4 // one a worker
			}
			if got := c.conns.Load(); got != want {
				t.Errorf("%d connections, want %d", got, want)
			}
			if len(c.badness) > 0 {
				t.Errorf("server saw bad requests: %v", c.badness)
			}
			if len(r.Latency) != 200 || r.Percentile(0.5) <= 0 || r.Percentile(0.5) > r.Percentile(1) || r.RPS() <= 0 {
				t.Errorf("latencies %d, p50 %v, max %v, rps %v", len(r.Latency), r.Percentile(0.5), r.Percentile(1), r.RPS())
			}
		})
	}
}

// Anything but 200 is a failure, and the first one says why.
func TestRunCountsFailures(t *testing.T) {
	c := newCounting(t, false)
	c.status.Store(503)
	r := Run(Options{Target: c.target(true), Conns: 2, Requests: 10, Body: body})
	if r.Failed != 10 || r.Err == nil || !strings.Contains(r.Err.Error(), "status 503") {
		t.Errorf("%d failed, first %v; want 10, status 503", r.Failed, r.Err)
	}
	// Status sees each one instead.
	var seen atomic.Int64
	r = Run(Options{Target: c.target(true), Conns: 2, Requests: 10, Body: body,
		Status: func(_, _, status int) {
			if status == 503 {
				seen.Add(1)
			}
		}})
	if r.Failed != 0 || seen.Load() != 10 {
		t.Errorf("with Status: %d failed, %d seen", r.Failed, seen.Load())
	}
	// A server that is not there.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	r = Run(Options{Target: Target{Addr: addr}, Requests: 3, Body: body})
	if r.Failed != 3 || r.Requests != 0 || r.Err == nil {
		t.Errorf("refused: %d failed, %d answered, %v", r.Failed, r.Requests, r.Err)
	}
}

// A keep-alive connection the server closed while idle is replaced
// once, as any client does; a server that closes every connection
// before answering is a failure.
func TestClientReconnectsOnce(t *testing.T) {
	c := newCounting(t, false)
	c.srv.Config.SetKeepAlivesEnabled(true)
	cl := NewClient(c.target(true))
	defer cl.Close()
	if s, err := cl.Do(Body(nil, "u", 1)); s != 200 || err != nil {
		t.Fatalf("first: %d %v", s, err)
	}
	c.srv.CloseClientConnections()
	if s, err := cl.Do(Body(nil, "u", 2)); s != 200 || err != nil {
		t.Fatalf("after the server closed the connection: %d %v", s, err)
	}
	if c.conns.Load() != 2 {
		t.Errorf("%d connections, want 2", c.conns.Load())
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conn.Close()
		}
	}()
	cl = NewClient(Target{Addr: ln.Addr().String(), KeepAlive: true})
	defer cl.Close()
	if _, err := cl.Do(Body(nil, "u", 1)); err == nil {
		t.Error("a server that answers nothing: no error")
	}
}

// Answers the servers measured never give are errors, not guesses.
func TestClientRefusesOddAnswers(t *testing.T) {
	for name, answer := range map[string]string{
		"chunked":           "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"no length":         "HTTP/1.1 200 OK\r\n\r\n",
		"bad length":        "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
		"not http":          "SSH-2.0-OpenSSH\r\n",
		"truncated headers": "HTTP/1.1 200 OK\r\nContent-Le",
		"short body":        "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
	} {
		t.Run(name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				conn, err := ln.Accept()
				if err != nil {
					return
				}
				defer conn.Close()
				buf := make([]byte, 4096)
				conn.SetReadDeadline(time.Now().Add(5 * time.Second))
				conn.Read(buf)
				conn.Write([]byte(answer))
			}()
			cl := NewClient(Target{Addr: ln.Addr().String()})
			defer cl.Close()
			if s, err := cl.Do(Body(nil, "u", 1)); err == nil {
				t.Errorf("answer %q: status %d, no error", answer, s)
			}
		})
	}
}

func TestRunForDuration(t *testing.T) {
	c := newCounting(t, false)
	r := Run(Options{Target: c.target(true), Conns: 2, Duration: 100 * time.Millisecond, Body: body})
	if r.Requests == 0 || r.Failed != 0 || r.Elapsed < 100*time.Millisecond || r.Elapsed > 5*time.Second {
		t.Errorf("%d requests, %d failed in %v", r.Requests, r.Failed, r.Elapsed)
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i))
	}
	for p, want := range map[float64]time.Duration{0: 1, 0.5: 50, 0.99: 99, 1: 100} {
		if got := Percentile(d, p); got != want {
			t.Errorf("Percentile(1..100, %v) = %v, want %v", p, got, want)
		}
	}
	if Percentile(nil, 0.5) != 0 || Percentile(d[:1], 0.99) != 1 {
		t.Error("Percentile of nothing or of one")
	}
}

func TestBodyIsJSON(t *testing.T) {
	var v map[string]any
	b := Body([]byte("garbage left in the buffer"), "alice@example.org", 42)
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	if v["user"] != "alice@example.org" || v["imap-uid"] != 42.0 || v["event"] != "messageNew" {
		t.Errorf("decoded %v", v)
	}
}
