//go:build linux

package main

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/imserious/imserious/internal/daemontest"
	"golang.org/x/sys/unix"
)

// waitGone waits until process pid has exited, through a pidfd (readable
// once the process ends) rather than by polling /proc. A zombie that no
// one reaps counts as gone: it runs nothing and holds no resources but its
// slot, and reaping orphans is init's job.
func waitGone(t *testing.T, pid int, within time.Duration) bool {
	t.Helper()
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return err == unix.ESRCH
	}
	defer unix.Close(fd)
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, int(within/time.Millisecond))
		if err == unix.EINTR {
			continue
		}
		return err == nil && n == 1
	}
}

// The children notice the parent's death as EOF on their channel and go.
func TestChildrenExitWithParent(t *testing.T) {
	d, kids := startOneHandler(t)
	d.Kill()
	for role, pi := range kids {
		if !waitGone(t, pi.Pid, 30*time.Second) {
			t.Errorf("child %s (pid %d) still running 30s after the parent was killed", role, pi.Pid)
		}
	}
}

// SIGINT (a terminal's ^C) stops as cleanly as SIGTERM: a command that is
// running is allowed to finish, and a run that will not happen is logged.
func TestSIGINTLetsRunningCommandFinish(t *testing.T) {
	user, _ := account(t, "imse_alice")
	marker := "finished after shutdown began"
	cfg := fmt.Sprintf("listen = \"127.0.0.1:0\"\n%s%s\n[[handler]]\nuser = %q\ncommand = [\"/bin/sh\", \"-c\", \"sleep 1; echo '%s'\"]\n"+
		"[[handler]]\nuser = %q\ncommand = \"/bin/true\"\ndelay = \"1h\"\n",
		daemontest.LogTOML, daemontest.PrivsepTOML(t), user, marker, user)
	d := start(t, cfg)
	if resp := notify(t, notifyURL(d), fmt.Sprintf(body1, user, 1), nil); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	d.WaitFor("command started", func(m daemontest.Line) bool { return m["msg"] == "command started" })
	kids := d.Children()
	if err := d.Cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if code := d.WaitExit("SIGINT"); code != 0 {
		t.Errorf("exit status %d after SIGINT, want 0", code)
	}
	if d.Count(func(m daemontest.Line) bool { return m["msg"] == "command output" && m["line"] == marker }) != 1 {
		t.Errorf("the running command did not finish before the daemon exited")
	}
	if d.Count(func(m daemontest.Line) bool { return m["msg"] == "command exited" && m["status"] == float64(0) }) != 1 {
		t.Errorf("no clean exit of the command logged")
	}
	if d.Count(func(m daemontest.Line) bool {
		return m["msg"] == "pending run dropped at shutdown" && m["handler"] == float64(2) && m["level"] == "WARN"
	}) != 1 {
		t.Errorf("the delayed run that will not happen was not logged")
	}
	for role, pi := range kids {
		if !waitGone(t, pi.Pid, time.Second) {
			t.Errorf("child %s (pid %d) outlived the daemon", role, pi.Pid)
		}
	}
}
