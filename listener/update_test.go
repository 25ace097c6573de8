package listener

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestUpdateRoutesEndpointAuth: after Update, on the same keep-alive
// connection, the new endpoint, credentials and routes are those in force
// and the old ones are gone.
func TestUpdateRoutesEndpointAuth(t *testing.T) {
	rec := &recorder{}
	s := New(testConfig(), rec.deliver, nil)
	rc := dial(t, start(t, s))
	if resp, _ := rc.do(put(goodBody).String()); resp.StatusCode != 200 {
		t.Fatalf("before Update: status %d, want 200", resp.StatusCode)
	}

	cfg := testConfig()
	cfg.Endpoint = "/push"
	cfg.Auth = &Auth{User: "nuser", Pass: "npass"}
	cfg.Routes = []Route{{User: "bob", Event: "messagenew", Target: 7}}
	if err := s.Update(cfg); err != nil {
		t.Fatalf("Update: %v", err)
	}
	bob := `{"user":"bob","event":"MessageNew"}`
	newAuth := basic("nuser", "npass")
	for _, tc := range []struct {
		name string
		q    req
		want int
	}{
		{"new route", req{method: "PUT", target: "/push", auth: newAuth, body: bob, sendBody: true}, 200},
		{"old route", req{method: "PUT", target: "/push", auth: newAuth, body: goodBody, sendBody: true}, 200},
		{"old endpoint", req{method: "GET", target: "/notify", auth: newAuth, ct: "-", cl: "-"}, 404},
		{"old credentials", req{method: "GET", target: "/push", ct: "-", cl: "-"}, 401},
	} {
		if resp, _ := rc.do(tc.q.String()); resp.StatusCode != tc.want || resp.Close {
			t.Fatalf("%s: status %d close %v, want %d on the same connection", tc.name, resp.StatusCode, resp.Close, tc.want)
		}
	}
	calls := rec.get()
	if len(calls) != 2 || calls[0].target != 0 || calls[1].target != 7 || calls[1].body != bob {
		t.Errorf("calls %+v, want alice to 0 before the Update, then only bob to 7", calls)
	}
}

// TestUpdateAllow: a keep-alive connection accepted under the old allow
// list is judged again at its next request: refused with 403 if the new
// list refuses its peer. A new connection is judged at accept: closed
// before a byte is read when the list refuses its peer.
func TestUpdateAllow(t *testing.T) {
	cfg := testConfig()
	cfg.Allow = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	rec := &recorder{}
	s := New(cfg, rec.deliver, nil)
	addr := start(t, s)
	one := dialFrom(t, addr, "127.0.0.1")
	if resp, _ := one.do(put(goodBody).String()); resp.StatusCode != 200 {
		t.Fatalf("127.0.0.1 before Update: status %d, want 200", resp.StatusCode)
	}
	dialFrom(t, addr, "127.0.0.2").expectClosed()

	cfg.Allow = []netip.Prefix{netip.MustParsePrefix("::ffff:127.0.0.2/128")}
	if err := s.Update(cfg); err != nil {
		t.Fatalf("Update: %v", err)
	}
	// Without a body, so the refusal leaves the connection open.
	probe := req{method: "GET", target: "/notify", ct: "-", cl: "-"}.String()
	if resp, _ := one.do(probe); resp.StatusCode != 403 || resp.Close {
		t.Errorf("127.0.0.1 after Update: status %d close %v, want 403 kept alive", resp.StatusCode, resp.Close)
	}
	if resp, _ := dialFrom(t, addr, "127.0.0.2").do(put(goodBody).String()); resp.StatusCode != 200 {
		t.Errorf("127.0.0.2 after Update: status %d, want 200", resp.StatusCode)
	}
	dialFrom(t, addr, "127.0.0.1").expectClosed()
	if calls := rec.get(); len(calls) != 2 {
		t.Errorf("%d Deliver calls, want 2", len(calls))
	}
}

// TestUpdateRefused: what a running server cannot change makes Update fail
// with ErrRestartNeeded and change nothing, not even the parts it could.
func TestUpdateRefused(t *testing.T) {
	cert, _ := selfSigned(t)
	withTLS := &tls.Config{Certificates: []tls.Certificate{cert}}
	for _, tc := range []struct {
		name   string
		tls    bool // the server has TLS
		change func(*Config)
		msg    string // "": accepted
	}{
		{"timeout", false, func(c *Config) { c.Timeout = time.Second }, "timeout from 1m0s to 1s"},
		{"max_connections", false, func(c *Config) { c.MaxConnections = 9 }, "max_connections from 8 to 9"},
		{"tls on", false, func(c *Config) { c.TLS = withTLS }, "tls from off to on"},
		{"tls off", true, func(c *Config) { c.TLS = nil }, "tls from on to off"},
		{"max_connections default", false, func(c *Config) { c.MaxConnections = 0 }, ""}, // the 8 it has
		{"another certificate", true, func(c *Config) { c.TLS = &tls.Config{} }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			if tc.tls {
				cfg.TLS = withTLS
			}
			rec := &recorder{}
			s := New(cfg, rec.deliver, nil)
			before := s.policy.Load()
			next := cfg
			next.Endpoint = "/push"
			next.Routes = []Route{{User: "alice", Event: "MessageNew", Target: 5}}
			tc.change(&next)
			err := s.Update(next)
			if tc.msg == "" {
				if err != nil || s.policy.Load().endpoint != "/push" {
					t.Fatalf("Update = %v, endpoint %q; want it done", err, s.policy.Load().endpoint)
				}
				return
			}
			if !errors.Is(err, ErrRestartNeeded) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Update = %v, want ErrRestartNeeded saying %q", err, tc.msg)
			}
			if s.policy.Load() != before {
				t.Fatalf("a refused Update changed the policy")
			}
			if tc.tls {
				return
			}
			rc := dial(t, start(t, s))
			if resp, _ := rc.do(put(goodBody).String()); resp.StatusCode != 200 {
				t.Fatalf("old endpoint after a refused Update: status %d, want 200", resp.StatusCode)
			}
			if calls := rec.get(); len(calls) != 1 || calls[0].target != 0 {
				t.Errorf("calls %+v, want the old route's target 0", calls)
			}
		})
	}
}

// TestUpdateConcurrent runs requests on several connections during 1,000
// Updates that swap between two policies differing in endpoint,
// credentials, allow list and routes. Each request must be answered as one
// whole policy answers it, and delivered only where that policy routes it:
// a mix (A's credentials with B's endpoint, say) would give a 404 or a
// delivery to the wrong target.
func TestUpdateConcurrent(t *testing.T) {
	policy := func(name string, allow string, target int) Config {
		cfg := testConfig()
		cfg.Endpoint = "/" + name
		cfg.Auth = &Auth{User: "u" + name, Pass: "p" + name}
		cfg.Allow = []netip.Prefix{netip.MustParsePrefix(allow)}
		cfg.Routes = []Route{{User: "alice", Event: "MessageNew", Target: target}}
		return cfg
	}
	a, b := policy("a", "127.0.0.0/8", 0), policy("b", "127.0.0.1/32", 1)
	request := func(name string) string {
		return req{method: "PUT", target: "/" + name, auth: basic("u"+name, "p"+name),
			body: fmt.Sprintf(`{"user":"alice","event":"messageNew","folder":%q}`, name), sendBody: true}.String()
	}
	qa, qb := request("a"), request("b")

	var delivered [2]atomic.Int64
	deliver := func(target int, _ netip.AddrPort, body []byte) error {
		if bytes.Contains(body, []byte(`"folder":"a"`)) != (target == 0) {
			t.Errorf("body %s delivered to target %d", body, target)
		}
		delivered[target].Add(1)
		return nil
	}
	s := New(a, deliver, nil)
	addr := start(t, s)

	done := make(chan struct{})
	var wg sync.WaitGroup
	var answered [2]atomic.Int64 // 200s for qa, for qb
	for range 4 {
		wg.Go(func() {
			var c client
			defer c.close()
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				q := []string{qa, qb}[i%2]
				status, err := c.do(addr, q)
				switch {
				case err != nil:
					t.Errorf("request: %v", err)
					return
				case status == 200:
					answered[i%2].Add(1)
				case status != 401:
					t.Errorf("status %d: neither policy answers that", status)
					return
				}
			}
		})
	}
	// The policy in force is known exactly right after each Update, as
	// only this goroutine updates.
	var probe client
	defer probe.close()
	for i := range 1000 {
		cfg, want := a, [2]int{200, 401}
		if i%2 == 0 {
			cfg, want = b, [2]int{401, 200}
		}
		if err := s.Update(cfg); err != nil {
			t.Fatalf("Update %d: %v", i, err)
		}
		for j, q := range []string{qa, qb} {
			if status, err := probe.do(addr, q); err != nil || status != want[j] {
				t.Fatalf("after Update %d: status %d (%v), want %d", i, status, err, want[j])
			}
		}
	}
	close(done)
	wg.Wait()
	t.Logf("concurrent 200s: %d for a, %d for b; deliveries %d to a, %d to b",
		answered[0].Load(), answered[1].Load(), delivered[0].Load(), delivered[1].Load())
}

// client is a keep-alive HTTP/1.1 client for goroutines other than the
// test's (rawClient fails the test from its methods, which only the test
// goroutine may do). It dials again when the server closes.
type client struct {
	c  net.Conn
	br *bufio.Reader
}

func (c *client) do(addr, q string) (int, error) {
	if c.c == nil {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			return 0, err
		}
		c.c, c.br = conn, bufio.NewReader(conn)
	}
	c.c.SetDeadline(time.Now().Add(guard))
	if _, err := io.WriteString(c.c, q); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.Close {
		c.close()
	}
	return resp.StatusCode, nil
}

func (c *client) close() {
	if c.c != nil {
		c.c.Close()
		c.c = nil
	}
}
