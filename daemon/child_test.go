package daemon

import (
	"errors"
	"io"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/imserious/imserious/config"
	"github.com/imserious/imserious/privsep"
)

// execUnderTest runs RunExec in this process (no privilege drop) with its
// control and network channels held by the test, and its log readable
// line by line.
type execUnderTest struct {
	ctl, net *privsep.Conn
	lines    logLines
	done     chan error
}

func pair(t *testing.T) (*privsep.Conn, *privsep.Conn) {
	t.Helper()
	a, b, err := privsep.Socketpair()
	if err != nil {
		t.Fatal(err)
	}
	ca, err := privsep.NewConn(a)
	if err != nil {
		t.Fatal(err)
	}
	cb, err := privsep.NewConn(b)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ca.Close(); cb.Close() })
	return ca, cb
}

func startExec(t *testing.T) *execUnderTest {
	t.Helper()
	acct, err := privsep.Current()
	if err != nil {
		t.Fatal(err)
	}
	ctl, childCtl := pair(t)
	logW, lines := logPipe(t)
	x := &execUnderTest{ctl: ctl, lines: lines, done: make(chan error, 1)}
	go func() {
		x.done <- RunExec(childCtl, acct.Name, logW)
		logW.Close()
	}()

	h := config.Handler{User: "alice", Event: "MessageNew", Command: []string{"true"}, Path: "/bin/true",
		LimitPeriod: time.Second, LimitBurst: 1, CommandTimeout: time.Minute, Account: acct}
	if err := sendJSON(ctl, msgExecConfig, execConfig{Log: logOptions{Level: -4, Format: "json"}, Account: acct, Handlers: []config.Handler{h}}); err != nil {
		t.Fatal(err)
	}
	// The exec process's end of the network channel travels as a
	// descriptor, as it does from the parent.
	a, b, err := privsep.Socketpair()
	if err != nil {
		t.Fatal(err)
	}
	netConn, err := privsep.NewConn(a)
	if err != nil {
		t.Fatal(err)
	}
	x.net = netConn
	t.Cleanup(func() { netConn.Close() })
	if err := ctl.Send(msgNetChannel, nil, b); err != nil {
		t.Fatal(err)
	}
	b.Close()
	if err := ctl.Send(msgStart, nil); err != nil {
		t.Fatal(err)
	}
	if m, err := ctl.Recv(); err != nil || m.Type != msgReady {
		t.Fatalf("no ready message: %v %v", m.Type, err)
	}
	return x
}

func (x *execUnderTest) shutdown(t *testing.T) {
	t.Helper()
	if err := sendJSON(x.ctl, msgShutdown, shutdownMsg{Grace: time.Second}); err != nil {
		t.Fatal(err)
	}
	if err := <-x.done; err != nil {
		t.Errorf("RunExec: %v", err)
	}
}

const goodBody = `{"user":"alice","event":"messageNew","imap-uid":3}`

func TestExecRunsValidEvent(t *testing.T) {
	x := startExec(t)
	remote := netip.MustParseAddrPort("127.0.0.1:4000")
	if err := x.net.Send(msgEvent, encodeEvent(remote, []byte(goodBody))); err != nil {
		t.Fatal(err)
	}
	x.lines.wait(t, `"command exited"`)
	x.shutdown(t)
}

// The exec process validates what the less privileged network process
// sends, and ends the channel on anything it would not have sent.
func TestExecEndsNetChannelOnBadMessage(t *testing.T) {
	remote := netip.MustParseAddrPort("127.0.0.1:4000")
	cases := []struct {
		name    string
		typ     uint32
		payload []byte
		file    bool
	}{
		{"unknown type", 99, encodeEvent(remote, []byte(goodBody)), false},
		{"control type on the event channel", msgShutdown, []byte(`{"grace":0}`), false},
		{"no peer", msgEvent, []byte(goodBody), false},
		{"not JSON", msgEvent, encodeEvent(remote, []byte(`{"user":`)), false},
		{"invalid event", msgEvent, encodeEvent(remote, []byte(`{"user":"alice","event":"Nope"}`)), false},
		{"descriptor attached", msgEvent, encodeEvent(remote, []byte(goodBody)), true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			x := startExec(t)
			var files []*os.File
			if c.file {
				files = append(files, os.Stdin)
			}
			if err := x.net.Send(c.typ, c.payload, files...); err != nil {
				t.Fatal(err)
			}
			x.lines.wait(t, `"network channel ended"`)
			// The channel is closed: the sender sees EOF.
			if _, err := x.net.Recv(); !errors.Is(err, io.EOF) {
				t.Errorf("network end: %v, want EOF", err)
			}
			x.shutdown(t)
		})
	}
}

func TestExecRefusesUnknownControlMessage(t *testing.T) {
	ctl, childCtl := pair(t)
	done := make(chan error, 1)
	go func() { done <- RunExec(childCtl, "nobody", io.Discard) }()
	if err := ctl.Send(42, nil); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err == nil || !strings.Contains(err.Error(), "unexpected message type 42") {
		t.Errorf("RunExec: %v", err)
	}
}
