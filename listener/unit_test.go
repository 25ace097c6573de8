package listener

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestIsJSON(t *testing.T) {
	for ct, want := range map[string]bool{
		"application/json":                        true,
		"application/json; charset=utf-8":         true,
		"application/json;charset=UTF-8":          true,
		"APPLICATION/JSON":                        true,
		"application/json; charset":               true, // malformed parameter: ignored
		"application/merged-patch+json":           true,
		"application/vnd.api+json; ext=bulk":      true,
		"text/x.custom+JSON":                      true,
		"":                                        false,
		"text/plain":                              false,
		"application/jsonp":                       false,
		"application/json-seq":                    false,
		"application/+json":                       false,
		"application/x-www-form-urlencoded":       false,
		"json":                                    false,
		"application/json/x":                      false,
		"application/xml; note=+json":             false,
		"application/json x":                      false,
		"multipart/form-data; boundary=+json":     false,
		"application/merged-patch+json; charset=": true,
	} {
		if got := isJSON(ct); got != want {
			t.Errorf("isJSON(%q) = %v, want %v", ct, got, want)
		}
	}
}

// basicAuthOracle is net/http's own parsing of the header, which
// parseBasic must agree with.
func basicAuthOracle(header string) (user, pass string, ok bool) {
	r := &http.Request{Header: http.Header{"Authorization": {header}}}
	return r.BasicAuth()
}

func TestParseBasic(t *testing.T) {
	long := strings.Repeat("p", 4*maxDecodedCredentials)
	for _, h := range []string{
		basic("puser", "ppass"),
		basic("us@er", "p:ss w"),
		basic("", ""),
		basic("u", long),
		"basic " + basic("a", "b")[6:],
		"BASIC " + basic("a", "b")[6:],
		"Basic",
		"Basic ",
		"Basic cHVzZXI6cHBhc3M",
		"Basic cHVzZXI6cHBhc3M=x",
		"Basic cHVzZXJwcGFzcw==",
		"Bearer cHVzZXI6cHBhc3M=",
		"Basic  cHVzZXI6cHBhc3M=",
		"Basic " + strings.Repeat("QUFB", maxEncodedCredentials/4),
		"Basic " + strings.Repeat("QUFB", maxEncodedCredentials/4+1),
	} {
		var buf [maxDecodedCredentials]byte
		user, pass, ok := parseBasic(h, &buf)
		wu, wp, wok := basicAuthOracle(h)
		if ok != wok || ok && (string(user) != wu || string(pass) != wp) {
			t.Errorf("parseBasic(%.40q) = %q, %q, %v; net/http says %q, %q, %v", h, user, pass, ok, wu, wp, wok)
		}
	}
}

func FuzzParseBasic(f *testing.F) {
	f.Add(basic("puser", "ppass"))
	f.Add("basic Og==")
	f.Add("Basic " + strings.Repeat("QUFB", 70))
	f.Fuzz(func(t *testing.T, h string) {
		var buf [maxDecodedCredentials]byte
		user, pass, ok := parseBasic(h, &buf)
		wu, wp, wok := basicAuthOracle(h)
		if ok != wok || ok && (string(user) != wu || string(pass) != wp) {
			t.Fatalf("parseBasic(%q) = %q, %q, %v; net/http says %q, %q, %v", h, user, pass, ok, wu, wp, wok)
		}
	})
}

func TestCredentials(t *testing.T) {
	long := strings.Repeat("x", 3*maxDecodedCredentials)
	for _, tc := range []struct {
		user, pass string
	}{{"puser", "ppass"}, {"us@er", "p:ss w"}, {"", ""}, {"u", long}} {
		auth := New(Config{Auth: &Auth{User: tc.user, Pass: tc.pass}}, nil, nil).policy.Load().auth
		if !auth.check(basic(tc.user, tc.pass)) {
			t.Errorf("%q:%.10q refused", tc.user, tc.pass)
		}
		for _, wrong := range []string{"", basic(tc.user, tc.pass+"x"), basic(tc.user+"x", tc.pass), basic(tc.pass, tc.user), basic(tc.user, "")} {
			if wrong != basic(tc.user, tc.pass) && auth.check(wrong) {
				t.Errorf("%q:%.10q: accepted %.40q", tc.user, tc.pass, wrong)
			}
		}
	}
}

func TestCheckDoesNotAllocate(t *testing.T) {
	auth := New(Config{Auth: &Auth{User: "a-longer-user-name", Pass: "and a password of some length"}}, nil, nil).policy.Load().auth
	h := basic("a-longer-user-name", "and a password of some length")
	if n := testing.AllocsPerRun(100, func() { auth.check(h) }); n != 0 {
		t.Errorf("check allocates %v times", n)
	}
}

// TestPolicyPrefixes: the allow list and the routes' ip lists are kept as
// prefix.Normalize returns them, and the allow list is matched with
// prefix.Contains (zones ignored).
func TestPolicyPrefixes(t *testing.T) {
	in := []netip.Prefix{
		netip.MustParsePrefix("::ffff:10.1.2.3/104"),
		netip.MustParsePrefix("10.1.2.3/8"),
		netip.MustParsePrefix("::ffff:0:0/64"), // wider than the mapped range: stays IPv6
		netip.MustParsePrefix("2001:db8::1/32"),
		netip.MustParsePrefix("fe80::/10"),
	}
	p := New(Config{Allow: in, Routes: []Route{{User: "u", Event: "MessageNew", IP: in}}}, nil, nil).policy.Load()
	want := []string{"10.0.0.0/8", "10.0.0.0/8", "::/64", "2001:db8::/32", "fe80::/10"}
	for _, got := range [][]netip.Prefix{p.allow, p.routesFor("u")[0].ip} {
		if len(got) != len(want) {
			t.Fatalf("prefixes %v, want %v", got, want)
		}
		for i := range want {
			if got[i].String() != want[i] {
				t.Errorf("prefix %d: %v, want %v", i, got[i], want[i])
			}
		}
	}
	for addr, ok := range map[string]bool{"fe80::1%eth0": true, "::ffff:10.9.9.9": true, "192.0.2.1": false} {
		if p.allows(netip.MustParseAddr(addr)) != ok {
			t.Errorf("allows(%s) = %v, want %v", addr, !ok, ok)
		}
	}
	if in[0].String() != "::ffff:10.1.2.3/104" {
		t.Errorf("New modified the caller's prefixes: %v", in)
	}
}

// TestRequestStart: the request's start is when its first bytes were read,
// kept through later reads, and re-armed by requestDone.
func TestRequestStart(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	c := &conn{Conn: server}
	go client.Write([]byte("abcdef"))
	buf := make([]byte, 3)

	t0 := time.Now()
	if got := c.requestStart(); got.Before(t0) {
		t.Errorf("before any read: %v, want now", got)
	}
	if _, err := c.Read(buf); err != nil {
		t.Fatal(err)
	}
	t1 := time.Now()
	first := c.requestStart()
	if first.Before(t0) || first.After(t1) {
		t.Fatalf("start %v not within the read [%v, %v]", first, t0, t1)
	}
	if _, err := c.Read(buf); err != nil {
		t.Fatal(err)
	}
	if got := c.requestStart(); !got.Equal(first) {
		t.Errorf("start moved by a later read: %v, want %v", got, first)
	}
	c.requestDone()
	go client.Write([]byte("x"))
	t2 := time.Now()
	if _, err := c.Read(buf); err != nil {
		t.Fatal(err)
	}
	if got := c.requestStart(); got.Before(t2) {
		t.Errorf("next request's start %v, want after %v", got, t2)
	}
}

// TestDeadlineFromRequestStart: the wait for a slot ends at the request's
// start plus Timeout, not at the handler's start plus Timeout: a request
// whose headers began longer than Timeout ago gets no wait at all.
func TestDeadlineFromRequestStart(t *testing.T) {
	cfg := testConfig()
	cfg.MaxConnections = 1
	s := New(cfg, (&recorder{}).deliver, nil)
	s.sem <- struct{}{} // every slot busy
	server, client := net.Pipe()
	defer client.Close()
	c := &conn{Conn: server, peer: netip.MustParseAddrPort("127.0.0.1:1"), allowed: true}
	c.start.Store(int64(time.Since(epoch) - 2*longTimeout))

	r := httptest.NewRequest("PUT", "/notify", strings.NewReader(goodBody))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Authorization", basic("puser", "ppass"))
	r = r.WithContext(context.WithValue(r.Context(), connKey{}, c))
	w := httptest.NewRecorder()
	done := make(chan struct{})
	go func() { s.Handler().ServeHTTP(w, r); close(done) }()
	select {
	case <-done:
	case <-time.After(guard):
		t.Fatal("handler waited for a slot past the request's deadline")
	}
	if w.Code != http.StatusRequestTimeout {
		t.Errorf("status %d, want 408", w.Code)
	}
}

// selfSigned returns a certificate for 127.0.0.1 and a pool trusting it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// TestTLS: with a TLS config (certificate from GetCertificate, as the
// reloading store provides it) requests are served over TLS 1.2+, HTTP/1.1
// only, and the peer is still known.
func TestTLS(t *testing.T) {
	cert, pool := selfSigned(t)
	cfg := testConfig()
	cfg.TLS = &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &cert, nil }}
	rec := &recorder{}
	addr := start(t, New(cfg, rec.deliver, nil))

	if c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS11}); err == nil {
		c.Close()
		t.Errorf("TLS 1.1 handshake succeeded")
	}
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if p := c.ConnectionState().NegotiatedProtocol; p != "http/1.1" {
		t.Errorf("negotiated %q, want http/1.1", p)
	}
	rc := &rawClient{t: t, c: c, br: newReader(c)}
	for range 2 {
		if resp, _ := rc.do(put(goodBody).String()); resp.StatusCode != 200 {
			t.Fatalf("status %d, want 200", resp.StatusCode)
		}
	}
	calls := rec.get()
	if len(calls) != 2 || calls[0].remote.String() != c.LocalAddr().String() {
		t.Errorf("calls %+v, want 2 from %v", calls, c.LocalAddr())
	}
}

// TestPolicyRoutesByUser: each exact user gets its routes, all of them
// and in the order written, however the users' handlers are interleaved;
// patterns stay apart, and a user without a handler has none.
func TestPolicyRoutesByUser(t *testing.T) {
	routes := []Route{
		{User: "bob", Event: "MessageNew", Handler: 1},
		{User: "alice", Event: "MessageNew", Handler: 2},
		{User: "*@example.org", Event: "MessageNew", Handler: 3},
		{User: "bob", Event: "FlagsSet", Handler: 4},
		{User: "carol", Event: "MessageNew", Handler: 5},
		{User: "bob", Event: "MessageNew", Handler: 6},
		{User: "alice", Event: "MessageRead", Handler: 7},
	}
	p := New(Config{Routes: routes}, nil, nil).policy.Load()
	for user, want := range map[string][]int{"alice": {2, 7}, "bob": {1, 4, 6}, "carol": {5}, "dave": nil, "*@example.org": nil} {
		var got []int
		for _, rt := range p.routesFor(user) {
			if rt.user != user {
				t.Errorf("route of handler %d for %q names user %q", rt.handler, user, rt.user)
			}
			got = append(got, rt.handler)
		}
		if !slices.Equal(got, want) {
			t.Errorf("routes of %q: handlers %v, want %v", user, got, want)
		}
	}
	if len(p.patterns) != 1 || p.patterns[0].handler != 3 {
		t.Errorf("patterns %+v, want handler 3's", p.patterns)
	}
	// A caller appending to what it got must not reach the next user's.
	r := p.routesFor("alice")
	_ = append(r, route{handler: 99})
	if got := p.routesFor("bob")[0].handler; got == 99 {
		t.Error("appending to alice's routes overwrote bob's")
	}
}
