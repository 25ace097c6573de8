package daemon

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/imserious/imserious/config"
	"github.com/imserious/imserious/event"
	"github.com/imserious/imserious/privsep"
	"github.com/imserious/imserious/tlsreload"
	"github.com/imserious/imserious/tlsreload/tlstest"
)

// netUnderTest runs RunNet in this process (no privilege drop) with its
// control channel held by the test, serving on a loopback socket, and
// the exec processes' ends of its channels held by the test.
type netUnderTest struct {
	ctl   *privsep.Conn
	addr  string
	lines logLines
	done  chan error
	st    *streams
	execs map[string]*privsep.Conn // by account
}

// startNet configures a network process for a configuration with one
// handler, as the parent does, and sends it the given pairs before
// msgStart. It does not wait for it to be ready.
func startNet(t *testing.T, withTLS bool, pairs ...[]byte) *netUnderTest {
	t.Helper()
	cfg := testConfig(t, `
[[handler]]
user = "alice"
command = "/bin/true"
`)
	if withTLS {
		cfg.TLS = &config.TLS{}
	}
	return startNetWith(t, cfg, pairs...)
}

// startNetWith is startNet for a configuration chosen by the test.
func startNetWith(t *testing.T, cfg *config.Config, pairs ...[]byte) *netUnderTest {
	t.Helper()
	ctl, childCtl := pair(t)
	logW, lines := logPipe(t)
	n := &netUnderTest{ctl: ctl, lines: lines, done: make(chan error, 1), execs: map[string]*privsep.Conn{}}
	go func() {
		n.done <- RunNet(childCtl, logW)
		logW.Close()
	}()
	t.Cleanup(func() {
		ctl.Close() // the network process stops when its parent is gone
		select {
		case <-n.done:
		case <-time.After(10 * time.Second):
			t.Error("network process still running 10s after its control channel closed")
		}
	})
	st, err := streamsFor(cfg, false, testLog, nil, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	n.st = st
	addr, f := freeListener(t)
	n.addr = addr
	send(t, ctl, st.net...)
	send(t, ctl, outMsg{typ: msgListener, file: f})
	for acct := range st.exec {
		n.execs[acct] = n.channel(t, acct, false)
	}
	for _, p := range pairs {
		send(t, ctl, outMsg{typ: msgTLSPair, payload: p})
	}
	send(t, ctl, outMsg{typ: msgStart})
	return n
}

// channel sends the network process a (new) channel to the exec process
// of acct and returns the exec process's end.
func (n *netUnderTest) channel(t *testing.T, acct string, recover bool) *privsep.Conn {
	t.Helper()
	a, b, err := privsep.Socketpair()
	if err != nil {
		t.Fatal(err)
	}
	c, err := privsep.NewConn(b)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	m := mustJSON(t, msgExecChannel, wireExecChannel{Target: n.st.targets[acct], Recover: recover})
	m.file = a
	send(t, n.ctl, m)
	a.Close()
	return c
}

// ready waits for msgReady; an error means the process ended instead.
func (n *netUnderTest) ready(t *testing.T) {
	t.Helper()
	n.ctl.SetDeadline(time.Now().Add(30 * time.Second))
	defer n.ctl.SetDeadline(time.Time{})
	m, err := n.ctl.Recv()
	if err != nil || m.Type != msgReady {
		t.Fatalf("network process not ready: %s, %v (exit: %v)", msgName(m.Type), err, n.exit(t))
	}
}

func (n *netUnderTest) exit(t *testing.T) error {
	t.Helper()
	return waitDone(t, n.done, "network process")
}

func encodeLeaf(t *testing.T, l *tlstest.Leaf) []byte {
	t.Helper()
	b, err := tlsreload.EncodePair(l.CertPEM, l.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func servedSerial(t *testing.T, addr string, ca *tlstest.CA) string {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.Pool()})
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	defer c.Close()
	return tlsreload.SerialHex(c.ConnectionState().PeerCertificates[0])
}

// TestNetTLSPairs: the network process serves the pair it was given,
// swaps in the next one, and ends on one that does not parse rather than
// trust it.
func TestNetTLSPairs(t *testing.T) {
	ca := tlstest.NewCA(t)
	a, b := ca.Issue(t, tlstest.Options{}), ca.Issue(t, tlstest.Options{})
	n := startNet(t, true, encodeLeaf(t, a))
	n.ready(t)
	if got := servedSerial(t, n.addr, ca); got != tlsreload.SerialHex(a.Cert) {
		t.Fatalf("served %s, want A", got)
	}
	if err := n.ctl.Send(msgTLSPair, encodeLeaf(t, b)); err != nil {
		t.Fatal(err)
	}
	n.lines.wait(t, `"serial":"`+tlsreload.SerialHex(b.Cert)+`"`)
	if got := servedSerial(t, n.addr, ca); got != tlsreload.SerialHex(b.Cert) {
		t.Fatalf("served %s after the new pair, want B", got)
	}
	mismatched, err := tlsreload.EncodePair(a.CertPEM, b.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.ctl.Send(msgTLSPair, mismatched); err != nil {
		t.Fatal(err)
	}
	if err := n.exit(t); err == nil || !strings.Contains(err.Error(), "tls pair") {
		t.Errorf("a mismatched pair: exit %v, want a tls pair error", err)
	}
}

func TestNetTLSStartChecks(t *testing.T) {
	ca := tlstest.NewCA(t)
	a := ca.Issue(t, tlstest.Options{})
	for _, c := range []struct {
		name    string
		withTLS bool
		pairs   [][]byte
		msg     string
	}{
		{"tls without a pair", true, nil, "no certificate received"},
		{"a pair without tls", false, [][]byte{encodeLeaf(t, a)}, "without tls configured"},
		{"a garbage pair", true, [][]byte{[]byte("garbage")}, "tls pair"},
	} {
		t.Run(c.name, func(t *testing.T) {
			n := startNet(t, c.withTLS, c.pairs...)
			if err := n.exit(t); err == nil || !strings.Contains(err.Error(), c.msg) {
				t.Errorf("exit %v, want %q", err, c.msg)
			}
		})
	}
	// Started in clear, a pair later is a message it must not get.
	n := startNet(t, false)
	n.ready(t)
	if err := n.ctl.Send(msgTLSPair, encodeLeaf(t, a)); err != nil {
		t.Fatal(err)
	}
	if err := n.exit(t); err == nil || !strings.Contains(err.Error(), "tls pair") {
		t.Errorf("pair to a plain HTTP network process: exit %v", err)
	}
}

const twoAccounts = `
[[handler]]
user = "alice"
command = "/bin/true"

[[handler]]
user = "bob"
command = "/bin/true"
`

// owed waits for the parent's report about target.
func (n *netUnderTest) owed(t *testing.T, acct string, want bool) {
	t.Helper()
	expectOwed(t, n.ctl, 30*time.Second, n.st.targets[acct], want)
}

// drain reads events from an exec process's end until a recovery
// message, and returns how many events came before it.
func drain(t *testing.T, c *privsep.Conn) int {
	t.Helper()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	defer c.SetDeadline(time.Time{})
	n := 0
	for {
		m, err := c.Recv()
		if err != nil {
			t.Fatalf("after %d events: %v", n, err)
		}
		switch m.Type {
		case msgEvent, msgEvents:
			n += len(eventBodies(t, m))
		case msgRecover:
			return n
		default:
			t.Fatalf("unexpected %s", msgName(m.Type))
		}
	}
}

// An exec process that does not read (SIGSTOPped by its own account)
// delays nobody: its events are accepted and owed a recovery, which is
// sent once it reads again; another account's events flow meanwhile.
func TestNetStoppedExecDelaysNobody(t *testing.T) {
	n := startNetWith(t, testConfig(t, twoAccounts, "alice=acct_a", "bob=acct_b"))
	n.ready(t)
	big := body("alice", `,"snippet":"`+strings.Repeat("x", 60<<10)+`"`)
	// Far more than the socket buffer holds: every one is answered 200.
	for i := range 40 {
		if got := put(t, n.addr, big); got != 200 {
			t.Fatalf("alice's request %d: %d", i, got)
		}
	}
	n.owed(t, "acct_a", true)
	for i := range 20 {
		if got := put(t, n.addr, body("bob", "")); got != 200 {
			t.Fatalf("bob's request %d: %d", i, got)
		}
		recvEvents(t, n.execs["acct_b"])
	}
	// alice's exec process reads again: what fitted, then the recovery.
	if got := drain(t, n.execs["acct_a"]); got == 0 || got >= 40 {
		t.Errorf("%d events before the recovery, want some but not all 40", got)
	}
	n.owed(t, "acct_a", false)
	// And events flow again.
	if got := put(t, n.addr, body("alice", "")); got != 200 {
		t.Fatalf("alice after recovery: %d", got)
	}
	recvEvents(t, n.execs["acct_a"])
}

// While an exec process is dead its events are still accepted; the
// channel to its successor starts with a recovery.
func TestNetDeadExecStillAccepted(t *testing.T) {
	n := startNetWith(t, testConfig(t, twoAccounts, "alice=acct_a", "bob=acct_b"))
	n.ready(t)
	n.execs["acct_a"].Close()
	if got := put(t, n.addr, body("alice", "")); got != 200 {
		t.Fatalf("alice with her exec process dead: %d", got)
	}
	n.owed(t, "acct_a", true)
	c := n.channel(t, "acct_a", true)
	if got := drain(t, c); got != 0 {
		t.Errorf("%d events before the recovery on a new channel", got)
	}
	n.owed(t, "acct_a", false)
	if got := put(t, n.addr, body("alice", "")); got != 200 {
		t.Fatalf("alice after the restart: %d", got)
	}
	recvEvents(t, c)
}

// A reload streams a new configuration into the running process: a new
// route works, a removed one is gone, and the new generation is reported.
func TestNetReload(t *testing.T) {
	cfg := testConfig(t, twoAccounts, "alice=acct_a", "bob=acct_b")
	n := startNetWith(t, cfg)
	n.ready(t)
	next := testConfig(t, `
[[handler]]
user = "carol"
command = "/bin/true"
`, "carol=acct_b")
	st, err := streamsFor(next, false, testLog, nil, 2, n.st.targets)
	if err != nil {
		t.Fatal(err)
	}
	send(t, n.ctl, st.net...)
	m := recvType(t, n.ctl, msgReady)
	var r wireReady
	if err := decode(m, &r); err != nil || r.Gen != 2 {
		t.Fatalf("ready %q: %v", m.Payload, err)
	}
	if got := put(t, n.addr, body("carol", "")); got != 200 {
		t.Fatalf("carol: %d", got)
	}
	recvEvents(t, n.execs["acct_b"])
	// alice's account is gone with its channel.
	expectEOF(t, n.execs["acct_a"])
	// A stale generation ends the process.
	old, err := streamsFor(next, false, testLog, nil, 2, n.st.targets)
	if err != nil {
		t.Fatal(err)
	}
	send(t, n.ctl, old.net...)
	if err := n.exit(t); err == nil || !strings.Contains(err.Error(), "generation 2 after 2") {
		t.Errorf("exit %v", err)
	}
}

// An exec process of a wildcard handler that does not read: every user
// whose event could not be handed over is named by the recovery, in
// messages of at most maxRecoverUsers, so that each gets a run; none is
// left to the handler's state alone (it never saw them).
func TestNetRecoveryNamesEveryUser(t *testing.T) {
	n := startNetWith(t, testConfig(t, "[[handler]]\nuser = \"*\"\ncommand = \"/bin/true\"\n", "*=acct_v"))
	n.ready(t)
	const users = 600
	big := `,"snippet":"` + strings.Repeat("x", 8<<10) + `"`
	for i := range users {
		if got := put(t, n.addr, body(fmt.Sprintf("u%03d@example.org", i), big)); got != 200 {
			t.Fatalf("request %d: %d", i, got)
		}
	}
	n.owed(t, "acct_v", true)
	c := n.execs["acct_v"]
	c.SetDeadline(time.Now().Add(30 * time.Second))
	got := map[string]bool{}
	recovered := map[string]bool{}
	// Until every user is accounted for: the recovery also names the
	// users seen last, and the frames the flusher held waiting for room
	// may follow it.
	accounted := func() int {
		k := len(got)
		for u := range recovered {
			if !got[u] {
				k++
			}
		}
		return k
	}
	for accounted() < users || len(recovered) == 0 {
		m, err := c.Recv()
		if err != nil {
			for {
				select {
				case l := <-n.lines:
					if !strings.Contains(l, "event accepted") {
						t.Log(l)
					}
					continue
				case <-time.After(time.Second):
				}
				break
			}
			t.Fatal(err)
		}
		switch m.Type {
		case msgEvent, msgEvents:
			for _, b := range eventBodies(t, m) {
				ev, err := event.Decode(b)
				if err != nil {
					t.Fatal(err)
				}
				got[ev.User] = true
			}
		case msgRecover:
			var w wireRecover
			if err := decode(m, &w); err != nil || w.validate() != nil {
				t.Fatalf("recover %q: %v", m.Payload, err)
			}
			for _, u := range w.Users {
				recovered[u] = true
			}
		}
	}
	for i := range users {
		if u := fmt.Sprintf("u%03d@example.org", i); !got[u] && !recovered[u] {
			t.Errorf("%s: neither handed over nor named by the recovery", u)
		}
	}
	if len(recovered) <= maxRecoverUsers {
		t.Errorf("%d users recovered: the test did not fill more than one message", len(recovered))
	}
	n.owed(t, "acct_v", false)
}

// The parent's copy of the listening socket is left out of its poller,
// where every connection would wake it for nothing, and the network
// process still accepts on it.
func TestBindOutsideThePoller(t *testing.T) {
	addr, f, err := bind("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.SetReadDeadline(time.Now()); !errors.Is(err, os.ErrNoDeadline) {
		t.Fatalf("SetReadDeadline on the parent's socket: %v, want os.ErrNoDeadline (a file outside the poller)", err)
	}
	// What the network process does with its copy.
	ln, err := net.FileListener(f)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := net.Dial("tcp", addr.String()); err == nil {
			c.Close()
		}
	}()
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
	c, err := ln.Accept()
	if err != nil {
		t.Fatalf("accept on the network process's copy: %v", err)
	}
	c.Close()
	if err := f.SetReadDeadline(time.Now()); !errors.Is(err, os.ErrNoDeadline) {
		t.Fatalf("after the network process's copy went non-blocking: %v, want os.ErrNoDeadline", err)
	}
}
