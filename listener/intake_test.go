package listener

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestRefusedAtAccept: a peer outside the allow list has its connection
// closed before anything is read or sent, and the refusals of one peer
// make one warn line (the next, a minute later, would count the others).
func TestRefusedAtAccept(t *testing.T) {
	cfg := testConfig()
	cfg.Allow = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	var logs logBuffer
	rec := &recorder{}
	addr := start(t, New(cfg, rec.deliver, newLogger(&logs)))
	for range 5 {
		rc := dialFrom(t, addr, "127.0.0.2")
		rc.c.SetWriteDeadline(time.Now().Add(guard))
		rc.c.Write([]byte(put(goodBody).String())) // may fail: the server may have closed already
		rc.expectClosed()
	}
	if resp, _ := dialFrom(t, addr, "127.0.0.1").do(put(goodBody).String()); resp.StatusCode != 200 {
		t.Fatalf("allowed peer: status %d, want 200", resp.StatusCode)
	}
	if calls := rec.get(); len(calls) != 1 {
		t.Errorf("%d Deliver calls, want 1 (the allowed peer's)", len(calls))
	}
	warn := warnLines(logs.lines())
	if len(warn) != 1 || !strings.Contains(warn[0], `"msg":"connection refused"`) ||
		!strings.Contains(warn[0], `"peer":"127.0.0.2:`) || !strings.Contains(warn[0], "allow list") {
		t.Errorf("warn lines %q, want one connection refused line for 127.0.0.2", warn)
	}
}

// TestRefusedBeforeTLS: with TLS, a peer outside the allow list gets no
// handshake and so no certificate; an allowed peer still gets both.
func TestRefusedBeforeTLS(t *testing.T) {
	cert, pool := selfSigned(t)
	cfg := testConfig()
	cfg.Allow = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	handshakes := make(chan struct{}, 10)
	cfg.TLS = &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		handshakes <- struct{}{}
		return &cert, nil
	}}
	addr := start(t, New(cfg, (&recorder{}).deliver, nil))

	dialTLS := func(local string) (*tls.Conn, []byte, error) {
		var got []byte
		d := &tls.Dialer{
			NetDialer: &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: guard},
			Config: &tls.Config{RootCAs: pool, VerifyConnection: func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) > 0 {
					got = cs.PeerCertificates[0].Raw
				}
				return nil
			}},
		}
		c, err := d.Dial("tcp", addr)
		if c != nil {
			t.Cleanup(func() { c.Close() })
			return c.(*tls.Conn), got, err
		}
		return nil, got, err
	}
	_, got, err := dialTLS("127.0.0.2")
	if errors.Is(err, syscall.EADDRNOTAVAIL) {
		t.Skipf("cannot connect from 127.0.0.2: %v", err)
	}
	if err == nil {
		t.Fatal("handshake from 127.0.0.2 succeeded")
	}
	if got != nil {
		t.Fatalf("127.0.0.2 was sent the certificate (handshake then failed with %v)", err)
	}
	if len(handshakes) != 0 {
		t.Fatalf("the server started a handshake with 127.0.0.2")
	}
	c, got, err := dialTLS("127.0.0.1")
	if err != nil || got == nil {
		t.Fatalf("handshake from 127.0.0.1: %v, certificate %v", err, got != nil)
	}
	rc := &rawClient{t: t, c: c, br: newReader(c)}
	if resp, _ := rc.do(put(goodBody).String()); resp.StatusCode != 200 {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
}

// TestPlainHTTPToTLS: a client speaking plain HTTP to the TLS server is
// told so in plain HTTP, as net/http tells it.
func TestPlainHTTPToTLS(t *testing.T) {
	cert, _ := selfSigned(t)
	cfg := testConfig()
	cfg.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	rc := dial(t, start(t, New(cfg, (&recorder{}).deliver, nil)))
	if resp, body := rc.do(put(goodBody).String()); resp.StatusCode != 400 || !strings.Contains(body, "HTTPS") {
		t.Fatalf("status %d body %q, want 400 about HTTPS", resp.StatusCode, body)
	}
}

// TestSmuggling: a request with both Content-Length and Transfer-Encoding
// is answered 400 with Connection: close, and nothing after it on the
// connection is taken for a request: the smuggled request never reaches
// Deliver. Also when it follows a valid request in the same write.
func TestSmuggling(t *testing.T) {
	smuggled := put(`{"user":"alice","event":"messageNew","folder":"smuggled"}`).String()
	head := "PUT /notify HTTP/1.1\r\nHost: x\r\nAuthorization: " + basic("puser", "ppass") +
		"\r\nContent-Type: application/json\r\n"
	for _, tc := range []struct {
		name, prefix, headers, body string
		status                      int // of the first request; 0: only the CL+TE one
	}{
		{"CL then TE", "", "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n", 0},
		{"TE then CL", "", "transfer-encoding: chunked\r\ncontent-length: 200\r\n", "0\r\n\r\n", 0},
		{"CL hiding the rest", "", "Content-Length: 0\r\nTransfer-Encoding: chunked\r\n", "", 0},
		{"after a valid request", put(goodBody).String(), "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n", 200},
		{"after a chunked request", head + "Transfer-Encoding: chunked\r\n\r\n" + fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(goodBody), goodBody),
			"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n", 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			var logs logBuffer
			addr := start(t, New(testConfig(), rec.deliver, newLogger(&logs)))
			rc := dial(t, addr)
			rc.send(tc.prefix + head + tc.headers + "\r\n" + tc.body + smuggled)
			if tc.status != 0 {
				if resp, _ := rc.read(); resp.StatusCode != tc.status {
					t.Fatalf("first request: status %d, want %d", resp.StatusCode, tc.status)
				}
			}
			resp, _ := rc.read()
			if resp.StatusCode != http.StatusBadRequest || !resp.Close {
				t.Fatalf("status %d close %v, want 400 and Connection: close", resp.StatusCode, resp.Close)
			}
			rc.expectClosed()
			for _, c := range rec.get() {
				if strings.Contains(c.body, "smuggled") {
					t.Fatalf("the smuggled request was delivered: %+v", c)
				}
			}
			if tc.status == 200 && len(rec.get()) != 1 {
				t.Errorf("%d Deliver calls, want the first request's", len(rec.get()))
			}
			if w := warnLines(logs.lines()); len(w) != 1 || !strings.Contains(w[0], "Transfer-Encoding") {
				t.Errorf("warn lines %q", w)
			}
		})
	}
}

// TestChunkedKeepAlive: framing follows chunked bodies, so chunked requests
// one after another on a keep-alive connection, pipelined or not, are all
// served.
func TestChunkedKeepAlive(t *testing.T) {
	rec := &recorder{}
	addr := start(t, New(testConfig(), rec.deliver, nil))
	rc := dial(t, addr)
	q := put(goodBody)
	q.chunked = true
	for range 3 {
		if resp, _ := rc.do(q.String()); resp.StatusCode != 200 || resp.Close {
			t.Fatalf("status %d close %v, want 200 kept alive", resp.StatusCode, resp.Close)
		}
	}
	rc.send(q.String() + put(goodBody).String() + q.String())
	for i := range 3 {
		if resp, _ := rc.read(); resp.StatusCode != 200 {
			t.Fatalf("pipelined request %d: status %d, want 200", i, resp.StatusCode)
		}
	}
	if n := len(rec.get()); n != 6 {
		t.Errorf("%d Deliver calls, want 6", n)
	}
}

// trickle sends s one byte every gap until it is all sent, the connection
// fails or stop is closed.
func trickle(c net.Conn, s string, gap time.Duration, stop <-chan struct{}) {
	for i := range len(s) {
		select {
		case <-stop:
			return
		case <-time.After(gap):
		}
		c.SetWriteDeadline(time.Now().Add(guard))
		if _, err := c.Write([]byte{s[i]}); err != nil {
			return
		}
	}
}

// TestSlowBodyHoldsNoSlot: with one request slot, two clients trickling
// their bodies (a byte every 200 ms, under the per-read limit, so they are
// not cut off) do not keep a third client from being answered at once:
// the slot is taken only once a body is in.
func TestSlowBodyHoldsNoSlot(t *testing.T) {
	cfg := testConfig()
	cfg.MaxConnections = 1
	rec := &recorder{}
	srv := New(cfg, rec.deliver, nil)
	addr := start(t, srv)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() { close(stop); wg.Wait() })
	headers := put(goodBody)
	headers.sendBody = false
	for range 2 {
		rc := dial(t, addr)
		rc.send(headers.String() + goodBody[:1])
		wg.Go(func() { trickle(rc.c, goodBody[1:], 200*time.Millisecond, stop) })
	}
	// Both slow requests have their headers read (they are no longer
	// idle) and are in their bodies: without the fix, one would now hold
	// the slot (the failure shows as the request below waiting for it
	// until guard).
	waitActive(t, srv, 2)
	if resp, _ := dial(t, addr).do(put(goodBody).String()); resp.StatusCode != 200 {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
	if n := len(rec.get()); n != 1 {
		t.Errorf("%d Deliver calls, want 1", n)
	}
}

// TestStalledBodyCutOff: a body that stops arriving is answered 408 after
// about a second of silence, however long Timeout is, and the connection
// closed.
func TestStalledBodyCutOff(t *testing.T) {
	var logs logBuffer
	s := New(testConfig(), (&recorder{}).deliver, newLogger(&logs)) // Timeout: longTimeout
	addr := start(t, s)
	rc := dial(t, addr)
	q := put(goodBody)
	q.sendBody = false
	rc.send(q.String() + goodBody[:10])
	resp, _ := rc.read() // guard is far below longTimeout
	if resp.StatusCode != http.StatusRequestTimeout || !resp.Close {
		t.Fatalf("status %d close %v, want 408 and close", resp.StatusCode, resp.Close)
	}
	rc.expectClosed()
	if w := warnLines(logs.lines()); len(w) != 1 || !strings.Contains(w[0], "body stalled for 1s") {
		t.Errorf("warn lines %q", w)
	}
}

// TestOpenPerIP: over max_open_per_ip, a new connection closes the
// longest-idle connection of its address (not another address's); when
// none of that address is idle, the new one is closed. Update changes the
// cap in place.
func TestOpenPerIP(t *testing.T) {
	cfg := testConfig()
	cfg.MaxOpenPerIP = 2
	rec := &recorder{hold: make(chan struct{}), entered: make(chan call, 10)}
	var logs logBuffer
	s := New(cfg, rec.deliver, newLogger(&logs))
	addr := start(t, s)
	t.Cleanup(func() { close(rec.hold) }) // before start's Shutdown

	other := dialFrom(t, addr, "127.0.0.3")
	oldest := dialFrom(t, addr, "127.0.0.2")
	waitOpen(t, s, "127.0.0.2", 1)
	newer := dialFrom(t, addr, "127.0.0.2")
	waitOpen(t, s, "127.0.0.2", 2)
	third := dialFrom(t, addr, "127.0.0.2") // over the cap: oldest goes
	oldest.expectClosed()
	waitOpen(t, s, "127.0.0.2", 2)
	for _, rc := range []*rawClient{newer, third, other} {
		rc.send(put(goodBody).String())
		recv(t, rec.entered, "Deliver call")
	}
	// Both of 127.0.0.2's connections are now busy: a new one is refused.
	dialFrom(t, addr, "127.0.0.2").expectClosed()
	for range 3 {
		rec.hold <- struct{}{}
	}
	for _, rc := range []*rawClient{newer, third, other} {
		if resp, _ := rc.read(); resp.StatusCode != 200 {
			t.Fatalf("status %d, want 200", resp.StatusCode)
		}
	}

	cfg.MaxOpenPerIP = 1
	if err := s.Update(cfg); err != nil {
		t.Fatalf("Update: %v", err)
	}
	// The answers are out before net/http marks the connections idle
	// again: wait for its books, or the new one finds none to close.
	waitIdle(t, s, 3)
	last := dialFrom(t, addr, "127.0.0.2") // closes both idle ones
	newer.expectClosed()
	third.expectClosed()
	last.send(put(goodBody).String())
	recv(t, rec.entered, "Deliver call")
	rec.hold <- struct{}{}
	if resp, _ := last.read(); resp.StatusCode != 200 {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
	if all, _ := s.open.counts(netip.Addr{}); all != 2 {
		t.Errorf("%d connections open, want 2", all)
	}
	if w := warnLines(logs.lines()); len(w) < 2 {
		t.Errorf("warn lines %q, want the closed and the refused connection", w)
	}
}

// TestOpenGlobal: over max_open_connections a new connection closes the
// longest-idle connection of any address; when none is idle, the new one
// is closed.
func TestOpenGlobal(t *testing.T) {
	cfg := testConfig()
	cfg.MaxOpen = 2
	rec := &recorder{hold: make(chan struct{}), entered: make(chan call, 10)}
	s := New(cfg, rec.deliver, nil)
	addr := start(t, s)
	t.Cleanup(func() { close(rec.hold) })

	a := dialFrom(t, addr, "127.0.0.2")
	waitOpen(t, s, "127.0.0.2", 1)
	b := dialFrom(t, addr, "127.0.0.3")
	waitOpen(t, s, "127.0.0.3", 1)
	// a turns from idle to busy and back, which makes it the newer idle
	// one: b is then the longest idle.
	a.send(put(goodBody).String())
	recv(t, rec.entered, "Deliver call")
	rec.hold <- struct{}{}
	if resp, _ := a.read(); resp.StatusCode != 200 {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
	c := dialFrom(t, addr, "127.0.0.4")
	b.expectClosed()
	for _, rc := range []*rawClient{a, c} {
		rc.send(put(goodBody).String())
		recv(t, rec.entered, "Deliver call")
	}
	dialFrom(t, addr, "127.0.0.5").expectClosed()
	for range 2 {
		rec.hold <- struct{}{}
	}
	for _, rc := range []*rawClient{a, c} {
		if resp, _ := rc.read(); resp.StatusCode != 200 {
			t.Fatalf("status %d, want 200", resp.StatusCode)
		}
	}
}

// waitOpen waits until the server counts n connections from local: dial
// returns when the kernel has the connection, before Accept has seen it.
func waitOpen(t *testing.T, s *Server, local string, n int) {
	t.Helper()
	addr := netip.MustParseAddr(local)
	for deadline := time.Now().Add(guard); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if _, got := s.open.counts(addr); got == n {
			return
		}
	}
	t.Fatalf("%s never had %d open connections", local, n)
}

// waitActive waits until n connections of s have a request past its
// headers, checking the server's own books.
func waitActive(t *testing.T, s *Server, n int) {
	t.Helper()
	waitBooks(t, s, func(open, idle int) bool { return open-idle >= n }, fmt.Sprintf("%d requests past their headers", n))
}

// waitIdle waits until at least n connections of s are idle on its books.
func waitIdle(t *testing.T, s *Server, n int) {
	t.Helper()
	waitBooks(t, s, func(_, idle int) bool { return idle >= n }, fmt.Sprintf("%d idle connections", n))
}

// waitBooks waits until ok holds for the open and idle connections the
// server counts.
func waitBooks(t *testing.T, s *Server, ok func(open, idle int) bool, what string) {
	t.Helper()
	deadline := time.Now().Add(guard)
	for time.Now().Before(deadline) {
		s.open.mu.Lock()
		open, idle := 0, 0
		for _, a := range s.open.byAddr {
			open += a.n
		}
		for c := s.open.idle.head; c != nil; c = c.all.next {
			idle++
		}
		s.open.mu.Unlock()
		if ok(open, idle) {
			return
		}
		runtime.Gosched()
	}
	t.Fatalf("no %s within %v", what, guard)
}
