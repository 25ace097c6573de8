package exec

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imserious/imserious/clock/clocktest"
	"github.com/imserious/imserious/config"
)

// leftPids returns the pids a command printed, one a line.
func leftPids(t *testing.T, logs *logBuf) []int {
	t.Helper()
	var pids []int
	for _, line := range outputLines(t, logs, "stdout") {
		pid, err := strconv.Atoi(strings.TrimSpace(line))
		if err != nil || pid <= 1 {
			t.Fatalf("command printed %q, want a pid; log:\n%s", line, logs.String())
		}
		pids = append(pids, pid)
	}
	if len(pids) == 0 {
		t.Fatalf("command printed no pid; log:\n%s", logs.String())
	}
	return pids
}

// TestRunKillsGroupWhenCommandExits: whatever a command leaves in its
// process group is killed when it exits, however it ends. The leftover
// holds the output pipe, and WaitDelay and KillGrace are far longer than
// the test's bound, so Run can only return in time if the group was
// killed as soon as the command exited.
func TestRunKillsGroupWhenCommandExits(t *testing.T) {
	for _, tc := range []struct {
		name, script string
		timeout      time.Duration
	}{
		{"exit 0", "sleep 1000 &\necho $!\n", time.Minute},
		{"exit 3", "sleep 1000 &\necho $!\nexit 3\n", time.Minute},
		// The leftover ignores the SIGTERM of the timeout; the leader
		// dies of it, and the group is killed right then, not after
		// KillGrace.
		{"command_timeout", "(trap '' TERM; exec sleep 1000) &\necho $!\nexec sleep 1000\n", time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j := shJob(t, tc.script)
			j.Handler.CommandTimeout = tc.timeout
			r := &CommandRunner{WaitDelay: outlast, KillGrace: outlast}
			logs := runBounded(t, r, j)
			for _, pid := range leftPids(t, logs) {
				waitGone(t, pid)
			}
		})
	}
}

// TestSecondRunLeavesNothing runs one handler twice through Exec: each
// run's leftover is gone when the run has ended.
func TestSecondRunLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "script.sh")
	if err := os.WriteFile(script, []byte("sleep 1000 &\necho $!\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	hc := testHandler("alice")
	hc.Path, hc.Command = "/bin/sh", []string{"sh", script}
	hc.LimitBurst = 2
	logs := &logBuf{}
	r := &CommandRunner{Log: newLogger(logs), WaitDelay: outlast}
	x := New(Options{Handlers: []config.Handler{hc}, Log: newLogger(logs), Clock: clocktest.New(epoch), Runner: r})
	ended := make(chan int, 2)
	x.ended = func(i int) { ended <- i }
	defer x.Shutdown(0)
	seen := map[int]bool{}
	for run := 1; run <= 2; run++ {
		x.Deliver(newEvent("alice", "x"), peer)
		select {
		case <-ended:
		case <-time.After(safety):
			t.Fatalf("run %d did not end: its leftover kept the output open", run)
		}
		pids := leftPids(t, logs)
		if len(pids) != run {
			t.Fatalf("after run %d: pids %v", run, pids)
		}
		pid := pids[run-1]
		if seen[pid] {
			t.Fatalf("run %d printed pid %d again", run, pid)
		}
		seen[pid] = true
		waitGone(t, pid)
	}
}

// TestRunOwnSession: a command leads a session and a process group of
// its own and has no controlling terminal.
func TestRunOwnSession(t *testing.T) {
	j := shJob(t, "cat /proc/$$/stat\nif ( : </dev/tty ) 2>/dev/null; then echo tty; else echo no-tty; fi\n")
	logs := runLogged(t, &CommandRunner{}, t.Context(), j)
	pid := int(one(t, logs, "command started")["pid"].(float64))
	out := outputLines(t, logs, "stdout")
	if len(out) != 2 {
		t.Fatalf("output %q", out)
	}
	// pid (comm) state ppid pgrp session tty_nr ...
	f := strings.Fields(out[0][strings.LastIndexByte(out[0], ')')+1:])
	pgrp, _ := strconv.Atoi(f[2])
	sid, _ := strconv.Atoi(f[3])
	tty, _ := strconv.Atoi(f[4])
	own, err := unix.Getsid(0)
	if err != nil {
		t.Fatal(err)
	}
	if sid != pid || pgrp != pid || sid == own {
		t.Errorf("command %d: session %d, group %d (ours %d), want its own session and group", pid, sid, pgrp, own)
	}
	if tty != 0 {
		t.Errorf("command %d has controlling terminal %#x", pid, tty)
	}
	if out[1] != "no-tty" {
		t.Errorf("command could open /dev/tty")
	}
}

// subreaperExec is an Exec with Subreaper set, which makes the test
// process a subreaper until the test ends.
func subreaperExec(t *testing.T, o Options, hs ...config.Handler) (*Exec, *logBuf, chan int) {
	t.Helper()
	logs := &logBuf{}
	o.Handlers = hs
	o.Log = newLogger(logs)
	o.Clock = clocktest.New(epoch)
	o.Subreaper = true
	if r, ok := o.Runner.(*CommandRunner); ok {
		r.Log = o.Log
	}
	x := New(o)
	ended := make(chan int, 10)
	x.ended = func(i int) { ended <- i }
	t.Cleanup(func() {
		x.Shutdown(0)
		// Process-wide: other tests expect orphans to go to init.
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0); err != nil {
			t.Errorf("clear subreaper: %v", err)
		}
	})
	if !x.subreaper {
		t.Fatalf("not a subreaper; log:\n%s", logs.String())
	}
	return x, logs, ended
}

func waitEnded(t *testing.T, ended chan int, logs *logBuf) {
	t.Helper()
	select {
	case <-ended:
	case <-time.After(safety):
		t.Fatalf("run did not end; log:\n%s", logs.String())
	}
}

func writeScript(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "script.sh")
	if err := os.WriteFile(path, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func mkfifo(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "fifo")
	if err := unix.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestSubreaperKillsDaemons: daemons a command started in sessions of
// their own, one below the other, are found and killed when the command
// exits. They hold the output pipe and WaitDelay is far longer than the
// test's bound: the run ends in time only because they are killed before
// Wait waits for the pipes.
func TestSubreaperKillsDaemons(t *testing.T) {
	fifo := mkfifo(t)
	script := writeScript(t, fmt.Sprintf(`setsid sleep 1000 &
echo $!
setsid sh -c 'setsid sleep 1000 & echo $! > %[1]s; exec sleep 1000' &
read leaf < %[1]s
echo $leaf
echo $!
`, fifo))
	hc := testHandler("alice")
	hc.Path, hc.Command = "/bin/sh", []string{"sh", script}
	x, logs, ended := subreaperExec(t, Options{Runner: &CommandRunner{KillOrphans: true, WaitDelay: outlast}}, hc)
	x.Deliver(newEvent("alice", "x"), peer)
	waitEnded(t, ended, logs)
	pids := leftPids(t, logs)
	if len(pids) != 3 {
		t.Fatalf("pids %v, want 3", pids)
	}
	for _, pid := range pids {
		// Killed and reaped by the sweep, as children of this process.
		if err := unix.Kill(pid, 0); !errors.Is(err, unix.ESRCH) {
			t.Errorf("daemon %d still there after the run: %v", pid, err)
		}
	}
	if rec := one(t, logs, "killed processes left behind by commands"); rec["count"] != 3.0 {
		t.Errorf("sweep record %v, want count 3", rec)
	}
}

// procState is the state letter of pid in /proc ('Z' for a zombie).
func procState(t *testing.T, pid int) byte {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatalf("process %d: %v", pid, err)
	}
	s := string(b)
	return strings.Fields(s[strings.LastIndexByte(s, ')')+1:])[0][0]
}

// TestSubreaperSparesRunningCommands: the sweep at the end of one run
// leaves alone a command still running and an orphan in its group (the
// orphan is part of that run); that orphan goes when its command does.
func TestSubreaperSparesRunningCommands(t *testing.T) {
	fifo := mkfifo(t)
	pidfile := filepath.Join(t.TempDir(), "pid")
	long := testHandler("alice")
	long.Path, long.Command = "/bin/sh", []string{"sh", writeScript(t, fmt.Sprintf(
		"(sleep 1000 </dev/null >/dev/null 2>&1 & echo $! > %s)\necho ready > %s\nexec sleep 1000\n", pidfile, fifo))}
	short := testHandler("bob")
	short.Path, short.Command = "/bin/sh", []string{"sh", writeScript(t, "setsid sleep 1000 </dev/null >/dev/null 2>&1 &\necho $!\n")}
	x, logs, ended := subreaperExec(t, Options{}, long, short)

	x.Deliver(newEvent("alice", "x"), peer)
	if b, err := os.ReadFile(fifo); err != nil || string(b) != "ready\n" {
		t.Fatalf("fifo: %q, %v", b, err)
	}
	b, err := os.ReadFile(pidfile)
	if err != nil {
		t.Fatal(err)
	}
	orphan, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("pid file %q", b)
	}
	leader := int(logs.waitFor(t, "command started")[0]["pid"].(float64))

	x.Deliver(newEvent("bob", "x"), peer)
	waitEnded(t, ended, logs)
	daemon := leftPids(t, logs)[0]
	if err := unix.Kill(daemon, 0); !errors.Is(err, unix.ESRCH) {
		t.Errorf("bob's daemon %d still there: %v", daemon, err)
	}
	for _, pid := range []int{leader, orphan} {
		if st := procState(t, pid); st == 'Z' {
			t.Errorf("process %d of the running command was killed by the sweep", pid)
		}
	}

	x.Shutdown(0) // SIGTERM to alice's group, then the final sweep
	if err := unix.Kill(orphan, 0); !errors.Is(err, unix.ESRCH) {
		t.Errorf("orphan %d of the ended command still there after Shutdown: %v", orphan, err)
	}
}

// TestSubreaperReapsOnSIGCHLD: an orphan that exits on its own while a
// command runs is reaped then, not left a zombie until a run ends.
func TestSubreaperReapsOnSIGCHLD(t *testing.T) {
	ready, gate := mkfifo(t), mkfifo(t)
	pidfile := filepath.Join(t.TempDir(), "pid")
	hc := testHandler("alice")
	hc.Path, hc.Command = "/bin/sh", []string{"sh", writeScript(t, fmt.Sprintf(
		"(cat %s >/dev/null 2>&1 </dev/null & echo $! > %s)\necho ready > %s\nexec sleep 1000\n", gate, pidfile, ready))}
	x, logs, _ := subreaperExec(t, Options{}, hc)
	x.Deliver(newEvent("alice", "x"), peer)
	if b, err := os.ReadFile(ready); err != nil || string(b) != "ready\n" {
		t.Fatalf("fifo: %q, %v", b, err)
	}
	b, err := os.ReadFile(pidfile)
	if err != nil {
		t.Fatal(err)
	}
	orphan, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("pid file %q", b)
	}
	// Opening the gate for writing and closing it ends the orphan's cat.
	if err := os.WriteFile(gate, nil, 0); err != nil {
		t.Fatal(err)
	}
	logs.waitFor(t, "reaped exited orphans")
	if err := unix.Kill(orphan, 0); !errors.Is(err, unix.ESRCH) {
		t.Errorf("orphan %d not reaped: %v", orphan, err)
	}
	if n := len(logs.find(t, "command exited")) + len(logs.find(t, "command killed by signal")); n != 0 {
		t.Errorf("the command ended (%d records); the reap must not wait for that", n)
	}
}
