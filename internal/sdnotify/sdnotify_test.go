package sdnotify

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// listen binds a manager's socket and returns a function reading one
// datagram from it.
func listen(t *testing.T, name string) func() string {
	t.Helper()
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return func() string {
		t.Helper()
		buf := make([]byte, 4096)
		n, err := ln.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		return string(buf[:n])
	}
}

func TestStates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	read := listen(t, path)
	t.Setenv(EnvVar, path)
	n, err := Open()
	if err != nil || n == nil {
		t.Fatalf("Open: %v, %v", n, err)
	}
	defer n.Close()
	if v, ok := os.LookupEnv(EnvVar); ok {
		t.Errorf("%s still set (%q): commands could pretend to be the daemon", EnvVar, v)
	}
	if err := n.Ready("listening on 127.0.0.1:1\nREADY=0"); err != nil {
		t.Fatal(err)
	}
	if got, want := read(), "READY=1\nSTATUS=listening on 127.0.0.1:1 READY=0"; got != want {
		t.Errorf("ready: got %q, want %q", got, want)
	}
	if err := n.Reloading(); err != nil {
		t.Fatal(err)
	}
	got := read()
	var usec int64
	if _, err := fmt.Sscanf(got, "RELOADING=1\nMONOTONIC_USEC=%d\nSTATUS=reloading", &usec); err != nil || usec <= 0 {
		t.Errorf("reloading: got %q (%v)", got, err)
	}
	if err := n.Stopping(); err != nil {
		t.Fatal(err)
	}
	if got, want := read(), "STOPPING=1\nSTATUS=stopping"; got != want {
		t.Errorf("stopping: got %q, want %q", got, want)
	}
	if err := n.Status("3 handlers"); err != nil {
		t.Fatal(err)
	}
	if got, want := read(), "STATUS=3 handlers"; got != want {
		t.Errorf("status: got %q, want %q", got, want)
	}
}

func TestAbstract(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("abstract sockets are Linux's")
	}
	name := fmt.Sprintf("@imserious-sdnotify-test-%d", os.Getpid())
	read := listen(t, name)
	n, err := Dial(name)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	n.Ready("")
	if got := read(); got != "READY=1" {
		t.Errorf("got %q", got)
	}
}

func TestNone(t *testing.T) {
	t.Setenv(EnvVar, "")
	n, err := Open()
	if n != nil || err != nil {
		t.Fatalf("Open without %s: %v, %v", EnvVar, n, err)
	}
	// Every call on the nil Notifier is a no-op.
	if n.Ready("x") != nil || n.Reloading() != nil || n.Stopping() != nil || n.Status("x") != nil || n.Close() != nil {
		t.Error("a nil Notifier returned an error")
	}
}

func TestBadNames(t *testing.T) {
	for _, name := range []string{"relative/sock", "sock"} {
		if _, err := Dial(name); err == nil || !strings.Contains(err.Error(), "absolute") {
			t.Errorf("Dial(%q): %v", name, err)
		}
	}
	if _, err := Dial(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("Dial of a missing socket succeeded")
	}
}
