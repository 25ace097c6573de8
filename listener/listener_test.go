package listener

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/imserious/imserious/clock/clocktest"
	"github.com/imserious/imserious/internal/byuser"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestStatusTable sends one request per row on its own connection and
// checks every row of spec §3, including which check wins when several
// fail (the order of the table).
func TestStatusTable(t *testing.T) {
	big := put(`{"user":"alice","event":"messageNew"}` + strings.Repeat(" ", MaxBody))
	exact := put(`{"user":"alice","event":"messageNew"}`)
	exact.body += strings.Repeat(" ", MaxBody-len(exact.body))
	chunkedBig := big
	chunkedBig.chunked = true
	chunkedOK := put(goodBody)
	chunkedOK.chunked = true

	with := func(q req, f func(*req)) req { f(&q); return q }
	tests := []struct {
		name   string
		allow  string // Allow prefix, set after connecting; "" = everyone
		from   string // client IP; "" = 127.0.0.1
		noAuth bool   // server without [auth]
		q      req
		want   int
	}{
		{name: "valid PUT", q: put(goodBody), want: 200},
		{name: "valid POST", q: with(put(goodBody), func(q *req) { q.method = "POST" }), want: 200},
		{name: "query string ignored", q: with(put(goodBody), func(q *req) { q.target = "/notify?token=abc&x=1" }), want: 200},
		{name: "no auth configured, none sent", noAuth: true, q: with(put(goodBody), func(q *req) { q.auth = "-" }), want: 200},
		{name: "no auth configured, some sent", noAuth: true, q: with(put(goodBody), func(q *req) { q.auth = basic("x", "y") }), want: 200},
		{name: "lower-case scheme", q: with(put(goodBody), func(q *req) { q.auth = strings.Replace(basic("puser", "ppass"), "Basic", "basic", 1) }), want: 200},
		{name: "allowed peer", allow: "127.0.0.2/32", from: "127.0.0.2", q: put(goodBody), want: 200},

		{name: "forbidden peer with good auth", allow: "127.0.0.2/32", q: put(goodBody), want: 403},
		{name: "forbidden peer with bad auth and path", allow: "127.0.0.2/32", q: with(put("x"), func(q *req) { q.auth = "-"; q.target = "/x"; q.method = "GET" }), want: 403},

		{name: "no credentials", q: with(put(goodBody), func(q *req) { q.auth = "-" }), want: 401},
		{name: "wrong password", q: with(put(goodBody), func(q *req) { q.auth = basic("puser", "wrong") }), want: 401},
		{name: "wrong user", q: with(put(goodBody), func(q *req) { q.auth = basic("wrong", "ppass") }), want: 401},
		{name: "password prefix", q: with(put(goodBody), func(q *req) { q.auth = basic("puser", "ppas") }), want: 401},
		{name: "password extended", q: with(put(goodBody), func(q *req) { q.auth = basic("puser", "ppass1") }), want: 401},
		{name: "no colon", q: with(put(goodBody), func(q *req) { q.auth = "Basic " + "cHVzZXJwcGFzcw==" }), want: 401},
		{name: "bad base64", q: with(put(goodBody), func(q *req) { q.auth = "Basic cHVzZXI6cHBhc3M" }), want: 401},
		{name: "bearer scheme", q: with(put(goodBody), func(q *req) { q.auth = "Bearer cHVzZXI6cHBhc3M=" }), want: 401},
		{name: "OPTIONS * without credentials", q: with(put(""), func(q *req) { q.method = "OPTIONS"; q.target = "*"; q.auth = "-"; q.ct = "-"; q.cl = "-" }), want: 401},
		{name: "OPTIONS *", q: with(put(""), func(q *req) { q.method = "OPTIONS"; q.target = "*"; q.ct = "-"; q.cl = "-" }), want: 404},
		{name: "wrong path with wrong auth", q: with(put(goodBody), func(q *req) { q.auth = basic("puser", "x"); q.target = "/nope" }), want: 401},

		{name: "wrong path", q: with(put(goodBody), func(q *req) { q.target = "/nope" }), want: 404},
		{name: "trailing slash", q: with(put(goodBody), func(q *req) { q.target = "/notify/" }), want: 404},
		{name: "path prefix", q: with(put(goodBody), func(q *req) { q.target = "/notif" }), want: 404},
		{name: "wrong path and method", q: with(put(goodBody), func(q *req) { q.target = "/"; q.method = "GET" }), want: 404},

		{name: "GET", q: with(put(""), func(q *req) { q.method = "GET"; q.cl = "-"; q.ct = "-" }), want: 405},
		{name: "DELETE with text/plain", q: with(put(goodBody), func(q *req) { q.method = "DELETE"; q.ct = "text/plain" }), want: 405},

		{name: "text/plain", q: with(put(goodBody), func(q *req) { q.ct = "text/plain" }), want: 415},
		{name: "no content type", q: with(put(goodBody), func(q *req) { q.ct = "-" }), want: 415},
		{name: "text/plain over the size", q: with(big, func(q *req) { q.ct = "text/plain" }), want: 415},
		{name: "application/jsonx", q: with(put(goodBody), func(q *req) { q.ct = "application/jsonx" }), want: 415},
		{name: "bare +json", q: with(put(goodBody), func(q *req) { q.ct = "application/+json" }), want: 415},
		{name: "json without type", q: with(put(goodBody), func(q *req) { q.ct = "json" }), want: 415},
		{name: "plain application/json", q: with(put(goodBody), func(q *req) { q.ct = "application/json" }), want: 200},
		{name: "upper case type", q: with(put(goodBody), func(q *req) { q.ct = "Application/JSON; Charset=UTF-8" }), want: 200},
		{name: "+json suffix", q: with(put(goodBody), func(q *req) { q.ct = "application/merged-patch+json" }), want: 200},
		{name: "+json with parameter", q: with(put(goodBody), func(q *req) { q.ct = "application/vnd.dovecot+json; v=1" }), want: 200},

		{name: "over 64 KiB by Content-Length", q: big, want: 413},
		{name: "over 64 KiB by Content-Length, body not sent", q: with(big, func(q *req) { q.sendBody = false }), want: 413},
		{name: "over 64 KiB chunked", q: chunkedBig, want: 413},
		{name: "exactly 64 KiB", q: exact, want: 200},
		{name: "chunked", q: chunkedOK, want: 200},

		{name: "not JSON", q: put("user=alice"), want: 400},
		{name: "empty body", q: put(""), want: 400},
		{name: "truncated JSON", q: put(goodBody[:20]), want: 400},
		{name: "no user", q: put(`{"event":"messageNew"}`), want: 422},
		{name: "user not a string", q: put(`{"user":1,"event":"messageNew"}`), want: 422},
		{name: "unknown event", q: put(`{"user":"alice","event":"messageGone"}`), want: 422},
		{name: "uid of the wrong type", q: put(`{"user":"alice","event":"messageNew","imap-uid":"7"}`), want: 422},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			if tt.noAuth {
				cfg.Auth = nil
			}
			rec := &recorder{}
			s := New(cfg, rec.deliver, nil)
			addr := start(t, s)
			var rc *rawClient
			if tt.allow != "" {
				rc = connectThenAllow(t, s, addr, tt.from, cfg, tt.allow)
			} else {
				rc = dialFrom(t, addr, tt.from)
			}
			resp, body := rc.do(tt.q.String())
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.want)
			}
			if body != "" {
				t.Errorf("body %q, want none", body)
			}
			if h := resp.Header.Get("Server"); h != "" && h != "imserious" {
				t.Errorf("Server: %q", h)
			}
			switch tt.want {
			case 401:
				if got := resp.Header.Get("WWW-Authenticate"); got != `Basic realm="imserious"` {
					t.Errorf("WWW-Authenticate %q", got)
				}
			case 405:
				if got := resp.Header.Get("Allow"); got != "PUT, POST" {
					t.Errorf("Allow %q", got)
				}
			case 200:
				if resp.ContentLength != 0 {
					t.Errorf("Content-Length %d, want 0", resp.ContentLength)
				}
			}
			calls := rec.get()
			if tt.want == 200 && !tt.noAuth && len(calls) != 1 {
				t.Errorf("%d Deliver calls, want 1", len(calls))
			}
			if tt.want != 200 && len(calls) != 0 {
				t.Errorf("rejected request reached Deliver: %v", calls)
			}
			if tt.want == 200 && len(calls) == 1 && calls[0].body != tt.q.body {
				t.Errorf("Deliver got body %q, want %q", calls[0].body, tt.q.body)
			}
		})
	}
}

// TestBodyNotRead sends only the headers of requests that declare a body:
// a check that does not need the body must answer without waiting for it
// (the server's Timeout is far longer than the client's guard), announcing
// that the connection closes. The body sent late is then drained, not
// taken for a request, and the connection closed.
func TestBodyNotRead(t *testing.T) {
	// The body is a request of its own: were it taken for the next
	// request after the refusal, it would be answered.
	const smuggled = "GET /notify HTTP/1.1\r\nHost: x\r\n\r\n"
	tests := []struct {
		name  string
		allow string
		q     req
		want  int
	}{
		{"forbidden", "127.0.0.2/32", put(smuggled), 403},
		{"no credentials", "", req{method: "PUT", target: "/notify", auth: "-", body: smuggled}, 401},
		{"wrong path", "", req{method: "PUT", target: "/other", body: smuggled}, 404},
		{"wrong method", "", req{method: "DELETE", target: "/notify", body: smuggled}, 405},
		{"text/plain", "", req{method: "PUT", target: "/notify", ct: "text/plain", body: smuggled}, 415},
		{"too large", "", req{method: "PUT", target: "/notify", body: smuggled + strings.Repeat(" ", MaxBody)}, 413},
		{"chunked, wrong path", "", req{method: "PUT", target: "/other", chunked: true, body: smuggled}, 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			rec := &recorder{}
			s := New(cfg, rec.deliver, nil)
			addr := start(t, s)
			headers := tt.q
			headers.sendBody = false
			full := tt.q
			full.sendBody = true
			body := strings.TrimPrefix(full.String(), headers.String())

			var rc *rawClient
			if tt.allow != "" {
				rc = connectThenAllow(t, s, addr, "", cfg, tt.allow)
			} else {
				rc = dial(t, addr)
			}
			resp, _ := rc.do(headers.String())
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.want)
			}
			if !resp.Close {
				t.Errorf("no Connection: close with an unread body")
			}
			rc.send(body)
			rc.expectClosed()
			if calls := rec.get(); len(calls) != 0 {
				t.Errorf("Deliver called: %v", calls)
			}
		})
	}
}

// TestRejectedWithoutBodyKeepsAlive: a refusal of a request without a body
// leaves the connection usable, as Dovecot reuses it.
func TestRejectedWithoutBodyKeepsAlive(t *testing.T) {
	rec := &recorder{}
	addr := start(t, New(testConfig(), rec.deliver, nil))
	rc := dial(t, addr)
	if resp, _ := rc.do("GET /notify HTTP/1.1\r\nHost: x\r\n\r\n"); resp.StatusCode != 401 || resp.Close {
		t.Fatalf("status %d close %v, want 401 and keep-alive", resp.StatusCode, resp.Close)
	}
	if resp, _ := rc.do(put(`{"user":"alice"}`).String()); resp.StatusCode != 422 || resp.Close {
		t.Fatalf("status %d close %v, want 422 and keep-alive", resp.StatusCode, resp.Close)
	}
	if resp, _ := rc.do(put(goodBody).String()); resp.StatusCode != 200 {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
}

// TestStalledBody: a client that stops in the middle of its body gets 408
// once Timeout has passed since its request started, and is disconnected.
func TestStalledBody(t *testing.T) {
	const timeout = time.Second
	cfg := testConfig()
	cfg.Timeout = timeout
	rec := &recorder{}
	addr := start(t, New(cfg, rec.deliver, nil))
	// The first request of a connection may start when it is accepted.
	began := time.Now()
	rc := dial(t, addr)
	q := put(goodBody)
	q.sendBody = false
	rc.send(q.String() + goodBody[:10])
	resp, _ := rc.read()
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("status %d, want 408", resp.StatusCode)
	}
	if d := time.Since(began); d < timeout {
		t.Errorf("408 after %v, before the %v timeout", d, timeout)
	}
	rc.expectClosed()
	if calls := rec.get(); len(calls) != 0 {
		t.Errorf("Deliver called: %v", calls)
	}
}

// TestStalledHeaders: a client that never finishes its headers is dropped.
func TestStalledHeaders(t *testing.T) {
	cfg := testConfig()
	cfg.Timeout = 200 * time.Millisecond
	addr := start(t, New(cfg, (&recorder{}).deliver, nil))
	rc := dial(t, addr)
	rc.send("PUT /notify HTTP/1.1\r\nHost: x\r\n")
	rc.expectClosed()
}

// holdSlots takes every request slot of s, as requests reading their
// bodies would, until the returned function (also run at cleanup) gives
// them back.
func holdSlots(t *testing.T, s *Server) (release func()) {
	for range cap(s.sem) {
		s.sem <- struct{}{}
	}
	release = sync.OnceFunc(func() {
		for range cap(s.sem) {
			<-s.sem
		}
	})
	t.Cleanup(release) // before the Shutdown of start's cleanup, which runs later
	return release
}

// TestSlotTimeout: with every slot held, a request that gets none within
// Timeout is answered 408 (which Dovecot retries) and not delivered; once
// the slot is free, the next request succeeds.
func TestSlotTimeout(t *testing.T) {
	const timeout = time.Second
	cfg := testConfig()
	cfg.MaxConnections = 1
	cfg.Timeout = timeout
	rec := &recorder{}
	var logs logBuffer
	defer func() {
		if t.Failed() {
			t.Log(logs.lines())
		}
	}()
	s := New(cfg, rec.deliver, newLogger(&logs))
	addr := start(t, s)
	release := holdSlots(t, s)

	began := time.Now()
	rc := dial(t, addr)
	resp, _ := rc.do(put(goodBody).String())
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("status %d, want 408", resp.StatusCode)
	}
	if d := time.Since(began); d < timeout {
		t.Errorf("408 after %v, before the %v timeout", d, timeout)
	}
	release()
	if resp, _ := dial(t, addr).do(put(goodBody).String()); resp.StatusCode != 200 {
		t.Fatalf("with the slot free: status %d, want 200", resp.StatusCode)
	}
	if calls := rec.get(); len(calls) != 1 {
		t.Errorf("%d Deliver calls, want 1", len(calls))
	}
}

// TestSlotWait: with MaxConnections 1 and the slot taken, requests wait for
// it instead of failing, and are handled as soon as it is free.
func TestSlotWait(t *testing.T) {
	cfg := testConfig()
	cfg.MaxConnections = 1
	rec := &recorder{}
	s := New(cfg, rec.deliver, nil)
	waiting := make(chan struct{}, 2)
	s.onWait = func() { waiting <- struct{}{} }
	addr := start(t, s)
	release := holdSlots(t, s)

	first, second := dial(t, addr), dial(t, addr)
	first.send(put(`{"user":"alice","event":"messageNew","imap-uid":1}`).String())
	recv(t, waiting, "wait for a slot")
	second.send(put(`{"user":"alice","event":"messageNew","imap-uid":2}`).String())
	recv(t, waiting, "wait for a slot")
	if calls := rec.get(); len(calls) != 0 {
		t.Fatalf("delivered without a slot: %v", calls)
	}
	release()
	for i, rc := range []*rawClient{first, second} {
		if resp, _ := rc.read(); resp.StatusCode != 200 {
			t.Fatalf("request %d: status %d, want 200", i+1, resp.StatusCode)
		}
	}
	if calls := rec.get(); len(calls) != 2 {
		t.Errorf("calls %v, want 2", calls)
	}
}

// TestDeliverOutsideSlot: delivery happens after the request's slot is
// released, so with MaxConnections 1 a Deliver stuck on one target (one
// account's exec channel) does not keep a request for another target from
// being answered 200 meanwhile.
func TestDeliverOutsideSlot(t *testing.T) {
	cfg := testConfig()
	cfg.MaxConnections = 1
	cfg.Routes = []Route{
		{User: "alice", Event: "MessageNew", Target: 0},
		{User: "bob", Event: "MessageNew", Target: 1},
	}
	stuck := make(chan struct{})
	entered := make(chan int, 2)
	deliver := func(target int, _ netip.AddrPort, _ []byte) error {
		entered <- target
		if target == 0 {
			<-stuck
		}
		return nil
	}
	s := New(cfg, deliver, nil)
	waited := make(chan struct{}, 1)
	s.onWait = func() { waited <- struct{}{} }
	addr := start(t, s)
	unstick := sync.OnceFunc(func() { close(stuck) })
	t.Cleanup(unstick) // before the Shutdown of start's cleanup

	alice := dial(t, addr)
	alice.send(put(`{"user":"alice","event":"messageNew"}`).String())
	if got := recv(t, entered, "Deliver call for alice"); got != 0 {
		t.Fatalf("Deliver called for target %d, want 0", got)
	}
	bob := dial(t, addr)
	answered := make(chan int, 1)
	go func() {
		bob.c.SetReadDeadline(time.Now().Add(guard))
		resp, err := http.ReadResponse(bob.br, nil)
		if err != nil {
			answered <- 0
			return
		}
		resp.Body.Close()
		answered <- resp.StatusCode
	}()
	bob.send(put(`{"user":"bob","event":"messageNew"}`).String())
	select {
	case <-waited:
		t.Fatal("bob's request waits for the slot while alice's Deliver is stuck")
	case status := <-answered:
		if status != 200 {
			t.Fatalf("bob: status %d, want 200", status)
		}
	case <-time.After(guard):
		t.Fatal("bob's request not answered")
	}
	if got := recv(t, entered, "Deliver call for bob"); got != 1 {
		t.Errorf("Deliver called for target %d, want 1", got)
	}
	unstick()
	if resp, _ := alice.read(); resp.StatusCode != 200 {
		t.Fatalf("alice: status %d, want 200", resp.StatusCode)
	}
}

// TestIdleConnectionsDoNotBlock: the limit is on requests, not
// connections: silent new connections and idle keep-alive ones do not
// keep a new client out, even with MaxConnections 1.
func TestIdleConnectionsDoNotBlock(t *testing.T) {
	cfg := testConfig()
	cfg.MaxConnections = 1
	rec := &recorder{}
	addr := start(t, New(cfg, rec.deliver, nil))
	for range 4 {
		dial(t, addr) // connects, sends nothing
	}
	var kept []*rawClient
	for range 3 {
		rc := dial(t, addr)
		if resp, _ := rc.do(put(goodBody).String()); resp.StatusCode != 200 || resp.Close {
			t.Fatalf("status %d close %v", resp.StatusCode, resp.Close)
		}
		kept = append(kept, rc) // now idle, kept alive
	}
	if resp, _ := dial(t, addr).do(put(goodBody).String()); resp.StatusCode != 200 {
		t.Fatalf("new client: status %d, want 200", resp.StatusCode)
	}
	for _, rc := range kept {
		if resp, _ := rc.do(put(goodBody).String()); resp.StatusCode != 200 {
			t.Fatalf("kept-alive client: status %d, want 200", resp.StatusCode)
		}
	}
}

// TestRouting: each matching route's target gets the body once, whatever
// the number of routes naming it; routes of other users, other events or
// other networks get nothing; no match is still 200.
func TestRouting(t *testing.T) {
	cfg := testConfig()
	cfg.Routes = []Route{
		{User: "alice", Event: "MessageNew", Target: 1},
		{User: "alice", Event: "MessageNew", Target: 0},
		{User: "alice", Event: "MessageNew", Target: 1}, // second handler, same account
		{User: "alice", Event: "MessageNew", IP: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, Target: 2},
		{User: "alice", Event: "MessageNew", IP: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("127.0.0.0/8")}, Target: 3},
		{User: "alice", Event: "messageread", Target: 4}, // canonicalised by New
		{User: "Alice", Event: "MessageNew", Target: 5},
		{User: "bob", Event: "MessageNew", Target: 6},
	}
	rec := &recorder{}
	addr := start(t, New(cfg, rec.deliver, nil))
	rc := dial(t, addr)
	remote := netip.MustParseAddrPort(rc.c.LocalAddr().String())

	deliveredTo := func(body string) []int {
		t.Helper()
		rec.mu.Lock()
		rec.calls = nil
		rec.mu.Unlock()
		if resp, _ := rc.do(put(body).String()); resp.StatusCode != 200 {
			t.Fatalf("status %d, want 200", resp.StatusCode)
		}
		var targets []int
		for _, c := range rec.get() {
			if c.body != body || c.remote != remote {
				t.Errorf("call %+v, want body %q from %v", c, body, remote)
			}
			targets = append(targets, c.target)
		}
		slices.Sort(targets)
		return targets
	}
	for _, tt := range []struct {
		body string
		want []int
	}{
		{`{"user":"alice","event":"messageNew"}`, []int{0, 1, 3}},
		{`{"user":"alice","event":"MESSAGEREAD"}`, []int{4}},
		{`{"user":"bob","event":"MessageNew"}`, []int{6}},
		{`{"user":"bob","event":"FlagsSet"}`, nil},
		{`{"user":"carol","event":"MessageNew"}`, nil},
	} {
		if got := deliveredTo(tt.body); !slices.Equal(got, tt.want) {
			t.Errorf("%s: delivered to %v, want %v", tt.body, got, tt.want)
		}
	}
}

// TestDeliverFailure: an exec channel that is gone gives 503 and an error
// line; the other targets still get the event.
func TestDeliverFailure(t *testing.T) {
	cfg := testConfig()
	cfg.Routes = []Route{
		{User: "alice", Event: "MessageNew", Target: 0},
		{User: "alice", Event: "MessageNew", Target: 1},
	}
	rec := &recorder{fail: map[int]error{0: errors.New("broken pipe")}}
	var logs logBuffer
	addr := start(t, New(cfg, rec.deliver, newLogger(&logs)))
	resp, _ := dial(t, addr).do(put(goodBody).String())
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503", resp.StatusCode)
	}
	if calls := rec.get(); len(calls) != 2 {
		t.Errorf("%d Deliver calls, want 2", len(calls))
	}
	lines := logs.lines()
	if len(lines) != 1 {
		t.Fatalf("log lines %q, want one error line", lines)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatal(err)
	}
	if m["level"] != "ERROR" || fmt.Sprint(m["targets"]) != "[0]" || m["status"] != float64(503) ||
		m["peer"] == nil || !strings.Contains(fmt.Sprint(m["error"]), "broken pipe") {
		t.Errorf("log line %s", lines[0])
	}
}

// TestIPv4Mapped: on a dual-stack socket an IPv4 client appears as
// ::ffff:a.b.c.d; the allow list, route filters and the remote handed to
// Deliver all see it as IPv4.
func TestIPv4Mapped(t *testing.T) {
	cfg := testConfig()
	cfg.Allow = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	cfg.Routes = []Route{
		{User: "alice", Event: "MessageNew", IP: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, Target: 0},
		{User: "alice", Event: "MessageNew", IP: []netip.Prefix{netip.MustParsePrefix("::ffff:127.0.0.0/104")}, Target: 1},
	}
	rec := &recorder{}
	s := New(cfg, rec.deliver, nil)
	ln, err := listenDualStack()
	if err != nil {
		t.Skipf("no dual-stack IPv6 socket on this host: %v", err)
	}
	_, port, _ := strings.Cut(serveOn(t, s, ln), "]:")
	rc := dial(t, "127.0.0.1:"+port)
	if resp, _ := rc.do(put(goodBody).String()); resp.StatusCode != 200 {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
	calls := rec.get()
	if len(calls) != 2 {
		t.Fatalf("%d calls, want 2: %v", len(calls), calls)
	}
	for _, c := range calls {
		if !c.remote.Addr().Is4() || c.remote.String() != rc.c.LocalAddr().String() {
			t.Errorf("remote %v, want the IPv4 %v", c.remote, rc.c.LocalAddr())
		}
	}
}

// TestRejectLog: each refusal is one warn line with the peer, method, path
// (no query), status and reason, and nothing of the credentials.
func TestRejectLog(t *testing.T) {
	tests := []struct {
		name   string
		allow  string
		q      req
		status int
		reason string
	}{
		{"401 wrong", "", req{method: "PUT", target: "/notify?token=qtoken", auth: basic("puser", "hunter2"), body: goodBody, sendBody: true}, 401, "wrong credentials"},
		{"401 missing", "", req{method: "PUT", target: "/notify", auth: "-", body: goodBody, sendBody: true}, 401, "no credentials"},
		{"403", "127.0.0.2/32", req{method: "PUT", target: "/notify?token=qtoken", auth: basic("puser", "hunter2"), body: goodBody, sendBody: true}, 403, "allow"},
		{"404", "", req{method: "POST", target: "/nope?token=qtoken", body: goodBody, sendBody: true}, 404, "endpoint"},
		{"422", "", put(`{"user":"alice","event":"nope"}`), 422, "event"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.Auth = &Auth{User: "puser", Pass: "s3cr3t-pass"}
			if tt.q.auth == "" {
				tt.q.auth = basic("puser", "s3cr3t-pass")
			}
			var logs logBuffer
			s := New(cfg, (&recorder{}).deliver, newLogger(&logs))
			addr := start(t, s)
			var rc *rawClient
			if tt.allow != "" {
				rc = connectThenAllow(t, s, addr, "", cfg, tt.allow)
			} else {
				rc = dial(t, addr)
			}
			if resp, _ := rc.do(tt.q.String()); resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			lines := warnLines(logs.lines())
			if len(lines) != 1 {
				t.Fatalf("%d log lines, want 1: %q", len(lines), lines)
			}
			var m map[string]any
			if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
				t.Fatal(err)
			}
			path, _, _ := strings.Cut(tt.q.target, "?")
			if m["level"] != "WARN" || m["peer"] != rc.c.LocalAddr().String() || m["method"] != tt.q.method ||
				m["path"] != path || m["status"] != float64(tt.status) || !strings.Contains(fmt.Sprint(m["reason"]), tt.reason) {
				t.Errorf("log line %s", lines[0])
			}
			for _, secret := range []string{"hunter2", "s3cr3t-pass", "qtoken", "Authorization", "Basic ", basic("puser", "hunter2")[6:], basic("puser", "s3cr3t-pass")[6:]} {
				if strings.Contains(lines[0], secret) {
					t.Errorf("log line contains %q: %s", secret, lines[0])
				}
			}
		})
	}
}

// TestAcceptedLog: an accepted event is one info line naming user, event,
// peer and the number of handlers it starts (handlers, not exec
// processes); one for a user without any handler is an info line too,
// once per user per hour; one for a user whose handlers want another
// event is only debug.
func TestAcceptedLog(t *testing.T) {
	var logs logBuffer
	clk := clocktest.New(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	cfg := testConfig()
	cfg.Clock = clk
	// Two handlers of alice on one exec process, one on another.
	cfg.Routes = []Route{{User: "alice", Event: "MessageNew", Target: 0}, {User: "alice", Event: "MessageNew", Target: 0},
		{User: "alice", Event: "MessageNew", Target: 1}, {User: "alice", Event: "FlagsSet", Target: 1}}
	addr := start(t, New(cfg, (&recorder{}).deliver, newLogger(&logs)))
	rc := dial(t, addr)
	rc.do(put(goodBody).String())
	rc.do(put(`{"user":"alice","event":"MessageRead"}`).String())
	for range 3 {
		rc.do(put(`{"user":"nobody","event":"MessageNew"}`).String())
	}
	clk.Advance(time.Hour)
	rc.do(put(`{"user":"nobody","event":"MessageNew"}`).String())
	lines := logs.lines()
	want := []struct {
		level, msg, user string
		handlers         int
		suppressed       any
	}{
		{"INFO", "event accepted", "alice", 3, nil},
		{"DEBUG", "event matches no handler", "alice", 0, nil},
		{"INFO", "event for a user without a handler, accepted and ignored", "nobody", 0, nil},
		{"INFO", "event for a user without a handler, accepted and ignored", "nobody", 0, float64(2)},
	}
	if len(lines) != len(want) {
		t.Fatalf("log lines %q, want %d", lines, len(want))
	}
	for i, want := range want {
		var m map[string]any
		if err := json.Unmarshal([]byte(lines[i]), &m); err != nil {
			t.Fatal(err)
		}
		if m["level"] != want.level || m["msg"] != want.msg || m["user"] != want.user || m["handlers"] != float64(want.handlers) ||
			m["event"] == nil || m["peer"] != rc.c.LocalAddr().String() || m["suppressed"] != want.suppressed {
			t.Errorf("line %d: %s", i, lines[i])
		}
	}
}

// TestUnmatchedUserHint: the line about a user without a handler names
// the handler most likely meant, the classic virtual-user trap first.
func TestUnmatchedUserHint(t *testing.T) {
	var rs []route
	for _, u := range []string{"alice", "bob@example.org", "bob@example.net", "Carol", "dave@x"} {
		rs = append(rs, route{user: u})
	}
	routes := byuser.New(rs, func(r route) string { return r.user })
	for _, c := range []struct{ user, hint string }{
		{"alice@example.org", `a handler is written for user "alice", but Dovecot names this user "alice@example.org": write user = "alice@example.org"`},
		{"bob", `a handler is written for user "bob@example.net", but Dovecot names this user "bob": write user = "bob"`},
		{"carol", `a handler is written for user "Carol"; user names are matched exactly, case included`},
		{"dave@y", ""},
		{"eve", ""},
		{"eve@", ""},
	} {
		if got := userHint(routes, c.user); got != c.hint {
			t.Errorf("userHint(%q) = %q, want %q", c.user, got, c.hint)
		}
	}
}

// TestShutdown: Shutdown lets a request in flight finish with 200, and
// Serve then returns nil.
func TestShutdown(t *testing.T) {
	rec := &recorder{hold: make(chan struct{}), entered: make(chan call, 1)}
	s := New(testConfig(), rec.deliver, nil)
	ln, err := listen()
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	rc := dial(t, ln.Addr().String())
	rc.send(put(goodBody).String())
	recv(t, rec.entered, "Deliver call")
	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	close(rec.hold)
	if resp, _ := rc.read(); resp.StatusCode != 200 {
		t.Fatalf("in-flight request: status %d, want 200", resp.StatusCode)
	}
	if err := recv(t, shut, "end of Shutdown"); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if err := recv(t, served, "return from Serve"); err != nil {
		t.Fatalf("serve: %v, want nil", err)
	}
}

func TestDefaults(t *testing.T) {
	s := New(Config{}, nil, nil)
	p := s.policy.Load()
	if p.endpoint != DefaultEndpoint || s.timeout != DefaultTimeout || cap(s.sem) != DefaultMaxConnections || p.auth != nil {
		t.Errorf("defaults: endpoint %q timeout %v slots %d auth %v", p.endpoint, s.timeout, cap(s.sem), p.auth)
	}
	if s.srv.ReadHeaderTimeout != DefaultTimeout || s.srv.IdleTimeout != DefaultTimeout || s.srv.MaxHeaderBytes != maxHeaderBytes {
		t.Errorf("http.Server limits: %+v", s.srv)
	}
	if s.open.maxOpen != DefaultMaxOpen || s.open.maxPerIP != DefaultMaxOpenPerIP || s.bodyIdle != time.Second {
		t.Errorf("open caps %d, %d; body idle %v", s.open.maxOpen, s.open.maxPerIP, s.bodyIdle)
	}
}
