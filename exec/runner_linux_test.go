package exec

import (
	"context"
	"errors"
	"net"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// waitGone waits until process pid has exited, through a pidfd, which
// becomes readable when the process exits.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return // already exited and reaped
	}
	if err != nil {
		t.Fatalf("pidfd_open %d: %v", pid, err)
	}
	defer unix.Close(fd)
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, int(safety/time.Millisecond))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			t.Fatalf("poll pidfd: %v", err)
		}
		if n == 0 {
			t.Fatalf("process %d still alive: the process group was not killed", pid)
		}
		return
	}
}

// TestRunOnlyStdFds checks that only 0, 1 and 2 reach a command although
// the daemon has files and sockets open: os/exec only closes descriptors
// that are close-on-exec, which everything Go opens is.
func TestRunOnlyStdFds(t *testing.T) {
	f, err := os.Open("/etc/passwd")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	// What a daemon inherits from whoever started it is not close-on-exec.
	inherited, err := unix.Open("/etc/passwd", unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(inherited)

	// ls's own descriptor on the directory it lists is the only other
	// one allowed.
	j := realJob(t, "/bin/sh", "sh", "-c", "ls -l /proc/self/fd")
	logs := runLogged(t, &CommandRunner{}, context.Background(), j)
	own := regexp.MustCompile(`^/proc/[0-9]+/fd$`)
	seen := map[string]string{}
	for _, line := range outputLines(t, logs, "stdout") {
		left, target, ok := strings.Cut(line, " -> ")
		if !ok {
			continue // "total 0"
		}
		fields := strings.Fields(left)
		fd := fields[len(fields)-1]
		seen[fd] = target
		switch {
		case fd == "0" && target != "/dev/null":
			t.Errorf("stdin is %s, want /dev/null", target)
		case fd == "1" || fd == "2" || fd == "0":
		case own.MatchString(target):
		default:
			t.Errorf("descriptor %s -> %s leaked into the command", fd, target)
		}
	}
	for _, fd := range []string{"0", "1", "2"} {
		if _, ok := seen[fd]; !ok {
			t.Errorf("fd %s missing; saw %v; log:\n%s", fd, seen, logs.buf.String())
		}
	}
}

// TestRunArgv checks that argv is the handler's command as written, argv[0]
// included, while the resolved Path is what is executed.
func TestRunArgv(t *testing.T) {
	j := realJob(t, "/bin/sh", "my-argv0", "-c", `tr '\0' '|' < /proc/$$/cmdline`, "zero", "arg one")
	logs := runLogged(t, &CommandRunner{}, context.Background(), j)
	want := "my-argv0|-c|tr '\\0' '|' < /proc/$$/cmdline|zero|arg one|"
	if got := outputLines(t, logs, "stdout"); len(got) != 1 || got[0] != want {
		t.Errorf("argv %q, want %q", got, want)
	}
}
