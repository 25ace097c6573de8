package daemon

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/imserious/imserious/config"
	"github.com/imserious/imserious/logging"
	"github.com/imserious/imserious/privsep"
)

// execUnderTest runs RunExec in this process (no privilege drop) with its
// control and network channels held by the test, as the parent and the
// network process would hold them.
type execUnderTest struct {
	cfg      *config.Config
	account  string
	ctl, net *privsep.Conn
	lines    logLines
	done     chan error
}

const oneHandler = `
[[handler]]
user = "alice"
command = "/bin/true"
`

func startExec(t *testing.T, conf string) *execUnderTest {
	t.Helper()
	cfg := testConfig(t, conf)
	acct := cfg.Accounts()[0].Name
	ctl, childCtl := pair(t)
	logW, lines := logPipe(t)
	x := &execUnderTest{cfg: cfg, account: acct, ctl: ctl, lines: lines, done: make(chan error, 1)}
	go func() {
		x.done <- RunExec(childCtl, acct, logW)
		logW.Close()
	}()
	t.Cleanup(func() {
		ctl.Close()
		waitDone(t, x.done, "exec process")
	})
	st, err := streamsFor(cfg, false, testLog, nil, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	send(t, ctl, st.exec[acct]...)
	x.net = x.newNet(t)
	send(t, ctl, outMsg{typ: msgStart})
	recvType(t, ctl, msgReady)
	return x
}

// newNet gives the exec process a channel from a (new) network process.
func (x *execUnderTest) newNet(t *testing.T) *privsep.Conn {
	t.Helper()
	a, b, err := privsep.Socketpair()
	if err != nil {
		t.Fatal(err)
	}
	c, err := privsep.NewConn(a)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	send(t, x.ctl, outMsg{typ: msgNetChannel, file: b})
	b.Close()
	return c
}

func (x *execUnderTest) event(t *testing.T, c *privsep.Conn, body string) {
	t.Helper()
	if err := c.Send(msgEvent, encodeEvent(netip.MustParseAddrPort("127.0.0.1:4000"), []byte(body))); err != nil {
		t.Fatal(err)
	}
}

func (x *execUnderTest) shutdown(t *testing.T) {
	t.Helper()
	send(t, x.ctl, mustJSON(t, msgShutdown, wireShutdown{Grace: time.Second}))
	if err := waitDone(t, x.done, "exec process"); err != nil {
		t.Errorf("RunExec: %v", err)
	}
}

const goodBody = `{"user":"alice","event":"messageNew","imap-uid":3}`

func TestExecRunsValidEvent(t *testing.T) {
	x := startExec(t, oneHandler)
	x.event(t, x.net, goodBody)
	x.lines.wait(t, `"command exited"`)
	x.shutdown(t)
}

// The events of a batch, as the network process sends them under load,
// are delivered: the handler runs.
func TestExecRunsBatch(t *testing.T) {
	x := startExec(t, oneHandler)
	remote := netip.MustParseAddrPort("127.0.0.1:4000")
	if err := x.net.Send(msgEvents, batchOf(t, remote, []byte(goodBody), []byte(`{"user":"alice","event":"MessageNew","imap-uid":4}`))); err != nil {
		t.Fatal(err)
	}
	x.lines.wait(t, `"command exited"`)
	x.shutdown(t)
}

// The exec process validates what the less privileged network process
// sends, and on anything it would not have sent ends the channel and
// tells the parent, which replaces the network process.
func TestExecEndsNetChannelOnBadMessage(t *testing.T) {
	remote := netip.MustParseAddrPort("127.0.0.1:4000")
	cases := []struct {
		name    string
		typ     uint32
		payload []byte
		file    bool
	}{
		{"unknown type", 99, encodeEvent(remote, []byte(goodBody)), false},
		{"control type on the event channel", msgShutdown, []byte(`{"grace_ns":0}`), false},
		{"no peer", msgEvent, []byte(goodBody), false},
		{"not JSON", msgEvent, encodeEvent(remote, []byte(`{"user":`)), false},
		{"invalid event", msgEvent, encodeEvent(remote, []byte(`{"user":"alice","event":"Nope"}`)), false},
		{"body over 64 KiB", msgEvent, encodeEvent(remote, []byte(body("alice", `,"snippet":"`+strings.Repeat("x", 70<<10)+`"`))), false},
		{"descriptor attached", msgEvent, encodeEvent(remote, []byte(goodBody)), true},
		{"empty batch", msgEvents, nil, false},
		{"batch entry past its end", msgEvents, batchOf(t, remote, []byte(goodBody))[1:], false},
		{"batch with an invalid event", msgEvents, batchOf(t, remote, []byte(`{"user":"alice","event":"Nope"}`)), false},
		{"batch with trailing bytes", msgEvents, append(batchOf(t, remote, []byte(goodBody)), 0), false},
		{"batch, descriptor attached", msgEvents, batchOf(t, remote, []byte(goodBody)), true},
		{"malformed recovery", msgRecover, []byte("x"), false},
		{"recovery without its users", msgRecover, nil, false},
		{"recovery with a bad user", msgRecover, []byte(`{"users":["a\u001b[2Jb"]}`), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			x := startExec(t, oneHandler)
			var files []*os.File
			if c.file {
				files = append(files, os.Stdin)
			}
			if err := x.net.Send(c.typ, c.payload, files...); err != nil {
				t.Fatal(err)
			}
			m := recvType(t, x.ctl, msgNetFault)
			var f wireFault
			if err := decode(m, &f); err != nil || f.Reason == "" {
				t.Errorf("fault %q: %v", m.Payload, err)
			}
			expectEOF(t, x.net)
			// The process itself goes on: a new channel works.
			x.event(t, x.newNet(t), goodBody)
			x.lines.wait(t, `"command exited"`)
			x.shutdown(t)
		})
	}
}

func TestExecRefusesUnknownControlMessage(t *testing.T) {
	ctl, childCtl := pair(t)
	done := make(chan error, 1)
	go func() { done <- RunExec(childCtl, "nobody", discard{}) }()
	if err := ctl.Send(42, nil); err != nil {
		t.Fatal(err)
	}
	if err := waitDone(t, done, "exec process"); err == nil || !strings.Contains(err.Error(), "unknown message type 42") {
		t.Errorf("RunExec: %v", err)
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// A recovery message runs every handler once, as recovery.
func TestExecRecover(t *testing.T) {
	x := startExec(t, oneHandler+`
[[handler]]
user = "bob"
command = "/bin/true"
`)
	if err := x.net.Send(msgRecover, []byte(`{"users":[]}`)); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		x.lines.wait(t, `"trigger":"recovery"`)
	}
	x.shutdown(t)
}

// An event inside a delay survives a reload that keeps its handler, and
// runs once; a handler added by the reload works at once.
func TestExecReloadKeepsPendingDelay(t *testing.T) {
	conf := `
[[handler]]
user = "alice"
command = "/bin/true"
delay = "1500ms"
`
	x := startExec(t, conf)
	x.event(t, x.net, goodBody)
	x.lines.wait(t, `"burst started, run delayed"`)

	cfg := testConfig(t, "# moved by a line\n"+conf+`
[[handler]]
user = "bob"
command = "/bin/true"
`)
	st, err := streamsFor(cfg, false, testLog, nil, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	send(t, x.ctl, st.exec[x.account]...)
	m := recvType(t, x.ctl, msgReady)
	var r wireReady
	if err := decode(m, &r); err != nil || r.Gen != 2 {
		t.Fatalf("ready %q: %v", m.Payload, err)
	}
	x.event(t, x.net, body("bob", ""))
	x.lines.wait(t, `"command started"`, `"user":"bob"`)
	x.lines.wait(t, `"command started"`, `"user":"alice"`)
	x.shutdown(t)
	for line := range x.lines {
		if strings.Contains(line, `"command started"`) && strings.Contains(line, `"user":"alice"`) {
			t.Errorf("a second run of the delayed event: %s", line)
		}
	}
}

// A reload can never change the account a process runs as.
func TestExecReloadRefusesAnotherAccount(t *testing.T) {
	x := startExec(t, oneHandler)
	cfg := testConfig(t, oneHandler)
	a := cfg.Accounts()[0]
	a.UID++
	items, err := execItems(cfg, testLog, a, false)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := bracket(2, items)
	if err != nil {
		t.Fatal(err)
	}
	send(t, x.ctl, msgs...)
	if err := waitDone(t, x.done, "exec process"); err == nil || !strings.Contains(err.Error(), "cannot change the account") {
		t.Errorf("RunExec: %v", err)
	}
}

// A child's last words reach the parent, which logs them in the daemon's
// format instead of the child writing a plain line into a JSON log.
func TestReportFatal(t *testing.T) {
	ctl, childCtl := pair(t)
	done := make(chan error, 1)
	go func() { done <- RunNet(childCtl, discard{}) }()
	send(t, ctl, outMsg{typ: msgStart}) // no configuration, no socket
	err := waitDone(t, done, "network process")
	if err == nil {
		t.Fatal("started without a configuration")
	}
	if !ReportFatal(childCtl, err) {
		t.Fatal("the parent was not told")
	}
	m := recvType(t, ctl, msgFatal)
	var f wireFault
	if err := decode(m, &f); err != nil || !strings.Contains(f.Reason, "without configuration") {
		t.Errorf("fatal %q: %v", m.Payload, err)
	}
}

// What a compromised network process can send: 100,000 forged events for
// users no handler has leave a bounded log, run nothing, and the channel
// goes on; a forged event for a configured user runs only its command.
func TestExecForgedFrames(t *testing.T) {
	x := startExec(t, oneHandler)
	const forged = 100000
	sent := make(chan error, 1)
	go func() {
		for i := range forged {
			b := encodeEvent(netip.MustParseAddrPort("127.0.0.1:4000"), []byte(body(fmt.Sprintf("u%06d", i), "")))
			if err := x.net.Send(msgEvent, b); err != nil {
				sent <- err
				return
			}
		}
		sent <- x.net.Send(msgEvent, encodeEvent(netip.MustParseAddrPort("127.0.0.1:4000"), []byte(goodBody)))
	}()
	warns, started := 0, 0
	for line := range x.lines {
		switch {
		case strings.Contains(line, "matches no handler"):
			warns++
		case strings.Contains(line, `"command started"`):
			started++
			if !strings.Contains(line, `"path":"/bin/true"`) || !strings.Contains(line, `"user":"alice"`) {
				t.Errorf("a command that is not configured: %s", line)
			}
		}
		if strings.Contains(line, `"command exited"`) {
			break
		}
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	t.Logf("%d forged events gave %d warn lines", forged, warns)
	if warns == 0 || warns > 2*logging.LimitTotal {
		t.Errorf("%d warn lines for %d forged events", warns, forged)
	}
	if started != 1 {
		t.Errorf("%d commands started, want 1", started)
	}
	x.shutdown(t)
}
