package daemon

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imserious/imserious/config"
	"github.com/imserious/imserious/privsep"
	"github.com/imserious/imserious/sandbox"
)

// TestMain keeps the roles run in this process from confining the test
// binary itself.
func TestMain(m *testing.M) {
	inProcess := func() (sandbox.Report, error) {
		return sandbox.Report{Missing: []string{"role run inside a test binary"}}, nil
	}
	confine.net = inProcess
	confine.exec = func([]string, string) (sandbox.Report, error) { return inProcess() }
	os.Exit(m.Run())
}

// testLog is what the roles under test log: JSON at debug level.
var testLog = logOptions{Level: -4, Format: "json"}

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

// testConfig parses and resolves a configuration for the invoking user
// (no privilege separation), then gives each handler the account named
// by accounts[handler user] when there is one: the roles run in this
// process, but their routing sees distinct accounts.
func testConfig(t testing.TB, text string, accounts ...string) *config.Config {
	t.Helper()
	path := filepath.Join(t.TempDir(), "imserious.toml")
	cfg, err := config.Parse(path, []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Resolve(false); err != nil {
		t.Fatal(err)
	}
	for i := range cfg.Handlers {
		for _, a := range accounts {
			if u, name, ok := strings.Cut(a, "="); ok && u == cfg.Handlers[i].User {
				cfg.Handlers[i].Account.Name = name
			}
		}
	}
	return cfg
}

func send(t testing.TB, c *privsep.Conn, msgs ...outMsg) {
	t.Helper()
	for _, m := range msgs {
		var files []*os.File
		if m.file != nil {
			files = append(files, m.file)
		}
		if err := c.SendTimeout(10*time.Second, m.typ, m.payload, files...); err != nil {
			t.Fatalf("send %s: %v", msgName(m.typ), err)
		}
	}
}

func mustJSON(t testing.TB, typ uint32, v any) outMsg {
	t.Helper()
	m, err := jsonMsg(typ, v)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// recvType waits for the next message on c and checks its type.
func recvType(t testing.TB, c *privsep.Conn, typ uint32) privsep.Msg {
	t.Helper()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	defer c.SetDeadline(time.Time{})
	m, err := c.Recv()
	if err != nil {
		t.Fatalf("waiting for %s: %v", msgName(typ), err)
	}
	if m.Type != typ {
		t.Fatalf("got %s (%q), want %s", msgName(m.Type), m.Payload, msgName(typ))
	}
	return m
}

// expectOwed reads the next message from the parent's end c, within,
// and fails the test unless it is a msgOwed report of owed for target.
func expectOwed(t testing.TB, c *privsep.Conn, within time.Duration, target int, owed bool) {
	t.Helper()
	c.SetDeadline(time.Now().Add(within))
	defer c.SetDeadline(time.Time{})
	m, err := c.Recv()
	if err != nil {
		t.Fatalf("waiting for %s within %v: %v", msgName(msgOwed), within, err)
	}
	if m.Type != msgOwed {
		t.Fatalf("got %s (%q), want %s", msgName(m.Type), m.Payload, msgName(msgOwed))
	}
	var o wireOwed
	if err := decode(m, &o); err != nil || o != (wireOwed{Target: target, Owed: owed}) {
		t.Fatalf("owed report %q (%v), want target %d owed %v", m.Payload, err, target, owed)
	}
}

// eventBodies returns the bodies of the events of a msgEvent or msgEvents
// message, in order; another message fails the test.
func eventBodies(t testing.TB, m privsep.Msg) [][]byte {
	t.Helper()
	var out [][]byte
	var err error
	switch m.Type {
	case msgEvent:
		var b []byte
		_, b, err = decodeEvent(m.Payload)
		out = append(out, b)
	case msgEvents:
		err = decodeEvents(m.Payload, func(_ netip.AddrPort, b []byte) error {
			out = append(out, b)
			return nil
		})
	default:
		t.Fatalf("got %s (%q), want events", msgName(m.Type), m.Payload)
	}
	if err != nil {
		t.Fatalf("%s: %v", msgName(m.Type), err)
	}
	return out
}

// recvEvents receives one message of events on c and returns their
// bodies.
func recvEvents(t testing.TB, c *privsep.Conn) [][]byte {
	t.Helper()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	defer c.SetDeadline(time.Time{})
	m, err := c.Recv()
	if err != nil {
		t.Fatalf("waiting for events: %v", err)
	}
	return eventBodies(t, m)
}

// expectEOF waits for c's peer to close.
func expectEOF(t testing.TB, c *privsep.Conn) {
	t.Helper()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	for {
		m, err := c.Recv()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatalf("waiting for the end of the channel: %v", err)
		}
		closeFiles(m)
	}
}

func waitDone(t testing.TB, done chan error, what string) error {
	t.Helper()
	select {
	case err := <-done:
		done <- err // for Cleanup and later calls
		return err
	case <-time.After(30 * time.Second):
		t.Fatalf("%s still running", what)
		return nil
	}
}

// put sends one notification and returns the status.
func put(t testing.TB, addr, body string) int {
	t.Helper()
	req, err := http.NewRequest("PUT", "http://"+addr+"/notify", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("PUT: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func freeListener(t testing.TB) (string, *os.File) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close() // the network process gets its own descriptor
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return ln.Addr().String(), f
}

func body(user string, extra string) string {
	return fmt.Sprintf(`{"user":%q,"event":"MessageNew"%s}`, user, extra)
}
