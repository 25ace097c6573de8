//go:build linux

package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imserious/imserious/internal/daemontest"
)

// A fake service manager: the daemon, started with $NOTIFY_SOCKET as
// systemd starts a Type=notify service, says READY=1 once its socket is
// bound, RELOADING=1 then READY=1 around a reload (a failed one too), and
// STOPPING=1 on SIGTERM.
func TestServiceManagerNotification(t *testing.T) {
	user, _ := account(t, "imse_alice")
	sock := filepath.Join(t.TempDir(), "notify")
	mgr, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer mgr.Close()
	read := func(what string) string {
		t.Helper()
		mgr.SetReadDeadline(time.Now().Add(30 * time.Second))
		buf := make([]byte, 4096)
		n, err := mgr.Read(buf)
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		return string(buf[:n])
	}
	text := fmt.Sprintf("listen = \"127.0.0.1:0\"\n%s%s\n[[handler]]\nuser = %q\ncommand = \"/bin/true\"\n",
		daemontest.LogTOML, daemontest.PrivsepTOML(t), user)
	d := daemontest.Start(t, text, daemontest.Options{Env: []string{"NOTIFY_SOCKET=" + sock}})

	msg := read("READY=1")
	if !strings.HasPrefix(msg, "READY=1\n") || !strings.Contains(msg, "STATUS=listening on "+d.Addr) {
		t.Fatalf("first notification %q, want READY=1 with the address", msg)
	}
	// Ready means bound: a client connects at once.
	c, err := net.Dial("tcp", d.Addr)
	if err != nil {
		t.Fatalf("READY=1 sent but %s refuses connections: %v", d.Addr, err)
	}
	c.Close()
	// Nothing below the parent may speak for the daemon.
	for role, pi := range d.Children() {
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pi.Pid))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(env), "NOTIFY_SOCKET") {
			t.Errorf("child %s inherited NOTIFY_SOCKET", role)
		}
	}

	d.Cmd.Process.Signal(syscall.SIGHUP)
	if msg := read("RELOADING=1"); !strings.HasPrefix(msg, "RELOADING=1\nMONOTONIC_USEC=") {
		t.Errorf("on SIGHUP: %q, want RELOADING=1", msg)
	}
	if msg := read("READY=1 after the reload"); !strings.HasPrefix(msg, "READY=1\n") || !strings.Contains(msg, "generation") {
		t.Errorf("after the reload: %q, want READY=1", msg)
	}

	// A broken file: the old configuration stays, and the manager hears
	// that the daemon is ready again (with it).
	cfgPath := d.Cmd.Args[len(d.Cmd.Args)-1]
	if err := os.WriteFile(cfgPath, []byte("listen = 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d.Cmd.Process.Signal(syscall.SIGHUP)
	if msg := read("RELOADING=1"); !strings.HasPrefix(msg, "RELOADING=1\n") {
		t.Errorf("on SIGHUP: %q, want RELOADING=1", msg)
	}
	if msg := read("READY=1 after the failed reload"); !strings.HasPrefix(msg, "READY=1\n") || !strings.Contains(msg, "reload failed") {
		t.Errorf("after a failed reload: %q, want READY=1 saying it failed", msg)
	}

	d.Cmd.Process.Signal(syscall.SIGTERM)
	if msg := read("STOPPING=1"); !strings.HasPrefix(msg, "STOPPING=1") {
		t.Errorf("on SIGTERM: %q, want STOPPING=1", msg)
	}
	if code := d.WaitExit("SIGTERM"); code != 0 {
		t.Errorf("exit status %d after SIGTERM", code)
	}
}
