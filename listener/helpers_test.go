package listener

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imserious/imserious/internal/prefix"
)

// guard bounds every client read and write, so a server that wrongly waits
// fails the test instead of hanging it. It is never waited out on success.
const guard = 10 * time.Second

// longTimeout is the server Timeout for tests that must not hit it: an
// answer that arrives within guard cannot be a timeout's.
const longTimeout = time.Minute

const goodBody = `{"user":"alice","event":"messageNew","folder":"INBOX","imap-uid":7}`

func basic(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

// testConfig is a server config with credentials puser:ppass and one route
// for alice's MessageNew to target 0.
func testConfig() Config {
	return Config{
		Endpoint:       "/notify",
		MaxConnections: 8,
		Timeout:        longTimeout,
		Auth:           &Auth{User: "puser", Pass: "ppass"},
		Routes:         []Route{{User: "alice", Event: "MessageNew", Target: 0}},
	}
}

// call is one Deliver call.
type call struct {
	target int
	remote netip.AddrPort
	body   string
}

// recorder is a Deliver that records its calls. When hold is set, each
// call announces itself on entered and then waits for a value on hold.
type recorder struct {
	mu      sync.Mutex
	calls   []call
	fail    map[int]error
	hold    chan struct{}
	entered chan call
}

func (rec *recorder) deliver(target int, remote netip.AddrPort, body []byte) error {
	c := call{target, remote, string(body)}
	if rec.entered != nil {
		rec.entered <- c
	}
	if rec.hold != nil {
		<-rec.hold
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	rec.calls = append(rec.calls, c)
	return rec.fail[target]
}

func (rec *recorder) get() []call {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]call(nil), rec.calls...)
}

// logBuffer collects JSON log lines from concurrent goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) lines() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := strings.TrimSpace(b.buf.String())
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func newLogger(b *logBuffer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// start serves s on a fresh 127.0.0.1 port and shuts it down at the end of
// the test, checking that Serve then returns nil.
func start(t testing.TB, s *Server) string {
	t.Helper()
	ln, err := listen()
	if err != nil {
		t.Fatal(err)
	}
	return serveOn(t, s, ln)
}

func listen() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }

// listenDualStack listens on IPv6 and IPv4 at once (Linux, BSD with
// net.inet6.ip6.v6only=0), where IPv4 peers appear IPv4-mapped.
func listenDualStack() (net.Listener, error) { return net.Listen("tcp", "[::]:0") }

func serveOn(t testing.TB, s *Server, ln net.Listener) string {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), guard)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := recv(t, done, "return from Serve"); err != nil {
			t.Errorf("serve returned %v after shutdown, want nil", err)
		}
	})
	return ln.Addr().String()
}

// rawClient speaks HTTP/1.1 by hand, so tests control every byte and
// whether the body is sent at all.
type rawClient struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
}

func dial(t testing.TB, addr string) *rawClient {
	t.Helper()
	return dialFrom(t, addr, "")
}

// dialFrom connects from local IP (e.g. 127.0.0.2: Linux routes all of
// 127/8 to lo), or from the default address when local is "".
func dialFrom(t testing.TB, addr, local string) *rawClient {
	t.Helper()
	var d net.Dialer
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil && local != "" && errors.Is(err, syscall.EADDRNOTAVAIL) {
		t.Skipf("cannot connect from %s (Linux has all of 127/8 on lo; other systems may not): %v", local, err)
	}
	if err != nil {
		t.Fatalf("dial %s from %q: %v", addr, local, err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawClient{t: t, c: c, br: newReader(c)}
}

func (rc *rawClient) send(s string) {
	rc.t.Helper()
	rc.c.SetWriteDeadline(time.Now().Add(guard))
	if _, err := io.WriteString(rc.c, s); err != nil {
		rc.t.Fatalf("write: %v", err)
	}
}

// read reads one response and its body.
func (rc *rawClient) read() (*http.Response, string) {
	rc.t.Helper()
	rc.c.SetReadDeadline(time.Now().Add(guard))
	resp, err := http.ReadResponse(rc.br, nil)
	if err != nil {
		rc.t.Fatalf("read response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		rc.t.Fatalf("read response body: %v", err)
	}
	return resp, string(b)
}

func (rc *rawClient) do(req string) (*http.Response, string) {
	rc.t.Helper()
	rc.send(req)
	return rc.read()
}

// expectClosed checks that the server closed the connection.
func (rc *rawClient) expectClosed() {
	rc.t.Helper()
	rc.c.SetReadDeadline(time.Now().Add(guard))
	b, err := rc.br.ReadByte()
	if err == nil {
		rc.t.Fatalf("connection still open: read %q", b)
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
		rc.t.Fatalf("connection not closed by the server: %v", err)
	}
}

// req describes one request; "-" in a header field means "leave it out".
type req struct {
	method, target string
	auth, ct, cl   string // header values; "" means the default
	chunked        bool
	body           string
	sendBody       bool
}

// put is a valid request: PUT /notify with Dovecot's headers and a body.
func put(body string) req {
	return req{method: "PUT", target: "/notify", body: body, sendBody: true}
}

func (q req) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n", q.method, q.target)
	switch q.auth {
	case "":
		b.WriteString("Authorization: " + basic("puser", "ppass") + "\r\n")
	case "-":
	default:
		b.WriteString("Authorization: " + q.auth + "\r\n")
	}
	switch q.ct {
	case "":
		b.WriteString("Content-Type: application/json; charset=utf-8\r\n")
	case "-":
	default:
		b.WriteString("Content-Type: " + q.ct + "\r\n")
	}
	if q.chunked {
		b.WriteString("Transfer-Encoding: chunked\r\n\r\n")
		if q.sendBody {
			// Chunks of at most 4 KiB, as a streaming client would send.
			for s := q.body; s != ""; {
				n := min(len(s), 4096)
				fmt.Fprintf(&b, "%x\r\n%s\r\n", n, s[:n])
				s = s[n:]
			}
			b.WriteString("0\r\n\r\n")
		}
		return b.String()
	}
	switch q.cl {
	case "":
		fmt.Fprintf(&b, "Content-Length: %d\r\n", len(q.body))
	case "-":
	default:
		b.WriteString("Content-Length: " + q.cl + "\r\n")
	}
	b.WriteString("\r\n")
	if q.sendBody {
		b.WriteString(q.body)
	}
	return b.String()
}

func newReader(c net.Conn) *bufio.Reader { return bufio.NewReader(c) }

// recv receives from ch, failing the test if nothing comes within guard.
func recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(guard):
		t.Fatalf("no %s within %v", what, guard)
		panic("unreachable")
	}
}

// connectThenAllow connects from local (as dialFrom), has a request for a
// user without handlers answered 200 (so the server has accepted the
// connection, under cfg without an allow list), and then Updates s to cfg
// with allow as its allow list. The connection's next request is judged by
// that list, as a keep-alive connection's is after a reload: the way to
// reach the 403 of spec §3, since a new connection from outside the list
// is closed at accept.
func connectThenAllow(t *testing.T, s *Server, addr, local string, cfg Config, allow string) *rawClient {
	t.Helper()
	cfg.Allow = nil
	if err := s.Update(cfg); err != nil {
		t.Fatal(err)
	}
	rc := dialFrom(t, addr, local)
	q := put(`{"user":"nobody","event":"messageNew"}`)
	q.auth = "-"
	if cfg.Auth != nil {
		q.auth = basic(cfg.Auth.User, cfg.Auth.Pass)
	}
	if resp, _ := rc.do(q.String()); resp.StatusCode != 200 || resp.Close {
		t.Fatalf("probe: status %d close %v, want 200 kept alive", resp.StatusCode, resp.Close)
	}
	cfg.Allow = []netip.Prefix{netip.MustParsePrefix(allow)}
	if err := s.Update(cfg); err != nil {
		t.Fatal(err)
	}
	return rc
}

// warnLines returns the JSON log lines at level WARN.
func warnLines(lines []string) []string {
	var warn []string
	for _, l := range lines {
		if strings.Contains(l, `"level":"WARN"`) {
			warn = append(warn, l)
		}
	}
	return warn
}

// counts returns the open connections in all and from addr.
func (o *openConns) counts(addr netip.Addr) (all, fromAddr int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if a := o.byAddr[prefix.Peer(addr)]; a != nil {
		fromAddr = a.n
	}
	return o.n, fromAddr
}
