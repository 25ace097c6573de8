package daemon

import (
	"crypto/tls"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/imserious/imserious/privsep"
	"github.com/imserious/imserious/tlsreload"
	"github.com/imserious/imserious/tlsreload/tlstest"
)

// netUnderTest runs RunNet in this process (no privilege drop) with its
// control channel held by the test, serving on a loopback socket.
type netUnderTest struct {
	ctl   *privsep.Conn
	addr  string
	lines logLines
	done  chan error
}

// startNet configures a network process as the parent does and sends it
// the given pairs before msgStart. It does not wait for it to be ready.
func startNet(t *testing.T, withTLS bool, pairs ...[]byte) *netUnderTest {
	t.Helper()
	nc := netConfig{Log: logOptions{Level: -4, Format: "json"}, Endpoint: "/notify", MaxConnections: 2, Timeout: time.Minute, TLS: withTLS}
	return startNetWith(t, nc, nil, pairs...)
}

// startNetWith is startNet with the configuration and the exec channels
// (one descriptor per target, in order) chosen by the test.
func startNetWith(t *testing.T, nc netConfig, execs []*os.File, pairs ...[]byte) *netUnderTest {
	t.Helper()
	ctl, childCtl := pair(t)
	logW, lines := logPipe(t)
	n := &netUnderTest{ctl: ctl, lines: lines, done: make(chan error, 1)}
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

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close() // the network process has its own descriptor
	n.addr = ln.Addr().String()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i, f := range execs {
		b, err := privsep.EncodeJSON(execChannel{Target: i})
		if err != nil {
			t.Fatal(err)
		}
		if err := ctl.Send(msgExecChannel, b, f); err != nil {
			t.Fatal(err)
		}
	}
	if err := sendJSON(ctl, msgNetConfig, nc); err != nil {
		t.Fatal(err)
	}
	if err := ctl.Send(msgListener, nil, f); err != nil {
		t.Fatal(err)
	}
	for _, p := range pairs {
		if err := ctl.Send(msgTLSPair, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := ctl.Send(msgStart, nil); err != nil {
		t.Fatal(err)
	}
	return n
}

// ready waits for msgReady; an error means the process ended instead.
func (n *netUnderTest) ready(t *testing.T) {
	t.Helper()
	m, err := n.ctl.Recv()
	if err != nil || m.Type != msgReady {
		t.Fatalf("network process not ready: type %d, %v (exit: %v)", m.Type, err, n.exit(t))
	}
}

func (n *netUnderTest) exit(t *testing.T) error {
	t.Helper()
	select {
	case err := <-n.done:
		n.done <- err // for Cleanup
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("network process still running")
		return nil
	}
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
	if err := n.exit(t); err == nil || !strings.Contains(err.Error(), "unexpected message type 10") {
		t.Errorf("pair to a plain HTTP network process: exit %v", err)
	}
}
