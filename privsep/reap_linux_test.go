package privsep

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func init() {
	childRoles["reaper"] = childReaper
}

// TestReaper runs the subreaper checks in a child of the test binary:
// being a subreaper, and killing every child not kept, are process-wide,
// and other tests here start children of their own.
func TestReaper(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	out, err := exec.CommandContext(ctx, os.Args[0], childFlag, "reaper").CombinedOutput()
	if err != nil {
		t.Fatalf("reaper child: %v; output:\n%s", err, out)
	}
	if !strings.Contains(string(out), "reaper ok") {
		t.Fatalf("reaper child did not finish; output:\n%s", out)
	}
}

// childReaper is the body of TestReaper. A failure is a line on stdout
// and exit status 1.
func childReaper() int {
	var failed bool
	fail := func(format string, a ...any) {
		fmt.Printf("FAIL: "+format+"\n", a...)
		failed = true
	}
	// Whatever happens, leave nothing behind.
	defer KillOrphans(nil)

	if err := BecomeSubreaper(); err != nil {
		fail("BecomeSubreaper: %v", err)
		return 1
	}
	// Kept: os/exec waits for these. One in a session of its own, one in
	// our group, which KillOrphans must never signal as a group.
	keptSession := exec.Command("/bin/sleep", "1000")
	keptSession.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	keptGroup := exec.Command("/bin/sleep", "1000")
	for _, c := range []*exec.Cmd{keptSession, keptGroup} {
		if err := c.Start(); err != nil {
			fail("start: %v", err)
			return 1
		}
	}
	kept := func(pid int) bool {
		return pid == keptSession.Process.Pid || pid == keptGroup.Process.Pid
	}

	// What a command leaves behind: a job in its group (here ours, as
	// the shell is not setsid'd), a daemon in a session of its own, and a
	// daemon with a daemon of its own below it, which becomes our child
	// only once its parent is reaped.
	script := `sleep 1000 </dev/null >/dev/null 2>&1 & echo group $!
setsid sleep 1000 </dev/null >/dev/null 2>&1 & echo session $!
setsid sh -c 'setsid sleep 1000 </dev/null >/dev/null 2>&1 3>&- & echo leaf $! >&3; exec 3>&-; wait' 3>&1 </dev/null >/dev/null 2>&1 &
echo parent $!
`
	out, err := exec.Command("/bin/sh", "-c", script).Output()
	if err != nil {
		fail("script: %v", err)
		return 1
	}
	left := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		name, n, _ := strings.Cut(line, " ")
		pid, err := strconv.Atoi(n)
		if err != nil {
			fail("script output %q", out)
			return 1
		}
		left[name] = pid
	}
	if len(left) != 4 {
		fail("script output %q", out)
		return 1
	}

	children, err := Children()
	if err != nil {
		fail("Children: %v", err)
		return 1
	}
	for _, name := range []string{"group", "session", "parent"} {
		if !slices.Contains(children, left[name]) {
			fail("orphan %s %d not among the children %v", name, left[name], children)
		}
	}
	for _, c := range []*exec.Cmd{keptSession, keptGroup} {
		if !slices.Contains(children, c.Process.Pid) {
			fail("child %d not among the children %v", c.Process.Pid, children)
		}
	}
	if slices.Contains(children, left["leaf"]) {
		fail("grandchild %d listed as a child", left["leaf"])
	}

	killed, err := KillOrphans(kept)
	if err != nil {
		fail("KillOrphans: %v", err)
	}
	if killed != 4 {
		fail("KillOrphans killed %d, want 4 (group, session, parent, then leaf)", killed)
	}
	// Reaped by KillOrphans itself: no such process any more.
	for name, pid := range left {
		if err := unix.Kill(pid, 0); !errors.Is(err, unix.ESRCH) {
			fail("orphan %s %d still exists after KillOrphans: %v", name, pid, err)
		}
	}
	// Kept children are alive and still os/exec's to wait for.
	for _, c := range []*exec.Cmd{keptSession, keptGroup} {
		if err := c.Process.Signal(syscall.Signal(0)); err != nil {
			fail("kept child %d: %v", c.Process.Pid, err)
		}
		c.Process.Kill()
		var ee *exec.ExitError
		if err := c.Wait(); !errors.As(err, &ee) {
			fail("Wait of kept child %d: %v, want killed", c.Process.Pid, err)
		}
	}

	// ReapOrphans: an orphan that exits on its own is reaped; a kept
	// child that exited is left to os/exec.
	r, w, err := os.Pipe()
	if err != nil {
		fail("pipe: %v", err)
		return 1
	}
	sh := exec.Command("/bin/sh", "-c", "cat <&3 >/dev/null 2>&1 3<&- & echo $!")
	sh.ExtraFiles = []*os.File{r}
	out, err = sh.Output()
	r.Close()
	if err != nil {
		fail("script: %v", err)
		return 1
	}
	cat, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		fail("script output %q", out)
		return 1
	}
	done := exec.Command("/bin/true")
	if err := done.Start(); err != nil {
		fail("start: %v", err)
		return 1
	}
	w.Close() // cat sees EOF and exits
	for _, pid := range []int{cat, done.Process.Pid} {
		if err := waitExited(pid); err != nil {
			fail("%v", err)
			return 1
		}
	}
	if n := ReapOrphans(func(pid int) bool { return pid == done.Process.Pid }); n != 1 {
		fail("ReapOrphans reaped %d, want 1", n)
	}
	if err := unix.Kill(cat, 0); !errors.Is(err, unix.ESRCH) {
		fail("exited orphan %d not reaped: %v", cat, err)
	}
	if err := done.Wait(); err != nil {
		fail("Wait of kept child after ReapOrphans: %v (stolen?)", err)
	}

	if failed {
		return 1
	}
	fmt.Println("reaper ok")
	return 0
}

// waitExited waits, through a pidfd, until child pid has exited, without
// reaping it.
func waitExited(pid int) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	defer unix.Close(fd)
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, int(guard.Milliseconds()))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("poll pidfd %d: %w", pid, err)
		}
		if n == 0 {
			return fmt.Errorf("process %d did not exit", pid)
		}
		return nil
	}
}

func TestStatChildren(t *testing.T) {
	c := exec.Command("/bin/sleep", "1000")
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer c.Wait()
	defer c.Process.Kill()
	pids, err := statChildren("/proc", os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(pids, c.Process.Pid) {
		t.Errorf("statChildren = %v, missing %d", pids, c.Process.Pid)
	}
	if pids, err := taskChildren(); err == nil && !slices.Contains(pids, c.Process.Pid) {
		t.Errorf("taskChildren = %v, missing %d", pids, c.Process.Pid)
	} else if err != nil {
		t.Logf("taskChildren: %v (kernel without CONFIG_PROC_CHILDREN; Children falls back)", err)
	}
}

func TestParseStat(t *testing.T) {
	st, err := parseStat("42 (a) b) (c) S 1 42 42 34816 42 4194560 0")
	if err != nil {
		t.Fatal(err)
	}
	if want := (procStat{state: 'S', ppid: 1, pgrp: 42, sid: 42, ttyNr: 34816}); st != want {
		t.Errorf("parseStat = %+v, want %+v", st, want)
	}
	for _, bad := range []string{"", "42 no parens S 1 2 3 4", "42 (x) S 1 2", "42 (x) S one 2 3 4"} {
		if _, err := parseStat(bad); err == nil {
			t.Errorf("parseStat(%q) succeeded", bad)
		}
	}
}
