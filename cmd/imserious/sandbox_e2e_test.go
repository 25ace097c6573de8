//go:build linux

package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/imserious/imserious/internal/daemontest"
)

// procStatus returns field k of /proc/pid/status.
func procStatus(t *testing.T, pid int, k string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if name, v, ok := strings.Cut(line, ":"); ok && name == k {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no %s in /proc/%d/status", k, pid)
	return ""
}

// The network process runs with no_new_privs (it can never gain
// privileges through exec, which it cannot do anyway); exec processes do
// not, so that setuid helpers such as sendmail keep working.
func TestSandboxedProcesses(t *testing.T) {
	d, kids := startOneHandler(t)
	if got := procStatus(t, kids["net"].Pid, "NoNewPrivs"); got != "1" {
		t.Errorf("network process NoNewPrivs %s, want 1", got)
	}
	// The system-call filter is built for amd64 (mode 2: filtered).
	if runtime.GOARCH == "amd64" {
		if got := procStatus(t, kids["net"].Pid, "Seccomp"); got != "2" {
			t.Errorf("network process Seccomp %s, want 2", got)
		}
	}
	for role, p := range kids {
		if strings.HasPrefix(role, "exec:") {
			if got := procStatus(t, p.Pid, "NoNewPrivs"); got != "0" {
				t.Errorf("%s NoNewPrivs %s, want 0", role, got)
			}
		}
	}
	d.WaitFor("the sandbox line", func(l daemontest.Line) bool {
		return l.Str("msg") == "sandboxed" && l.Str("proc") == "net" && strings.Contains(l.Str("applied"), "no_new_privs")
	})
	if code := d.Stop(); code != 0 {
		t.Errorf("exit status %d", code)
	}
}

// A chroot below a directory an ordinary user can write could be swapped
// under the daemon's feet: -n refuses it, and so does start-up.
func TestChrootUnderUserWritableDirectoryRefused(t *testing.T) {
	if !isRoot() {
		t.Skip("needs root: the chroot is used only when started as root (CI runs this as root)")
	}
	user, _ := account(t, "imse_alice")
	daemontest.Account(t, "_imserious")
	base := daemontest.PublicDir(t) // mode 1777, like /tmp
	conf := fmt.Sprintf("listen = \"127.0.0.1:0\"\n%s[privsep]\nuser = \"_imserious\"\nchroot = %q\n[[handler]]\nuser = %q\ncommand = \"/bin/true\"\n",
		daemontest.LogTOML, filepath.Join(base, "empty"), user)
	path := daemontest.WriteConfig(t, conf)
	for _, args := range [][]string{{"-n", "-c", path}, {"-c", path}} {
		var out bytes.Buffer
		cmd := daemontest.Command(t, args...)
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 1 {
			t.Errorf("imserious %v: %v, want exit status 1\n%s", args, err, out.String())
		}
		if !strings.Contains(out.String(), "privsep.chroot") || !strings.Contains(out.String(), "writable by group or others") {
			t.Errorf("imserious %v does not say why:\n%s", args, out.String())
		}
	}
}
