package daemontest

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Proc is a process as /proc/PID/status and cmdline describe it.
type Proc struct {
	Pid, PPid int
	Args      []string
	UID, GID  []int // real, effective, saved, filesystem
	Groups    []int // supplementary
}

// ReadProc reads process pid; false when there is no such process. A
// zombie still counts: it exists until its parent reaps it.
func ReadProc(pid int) (Proc, bool) {
	p := Proc{Pid: pid}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return p, false
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, _ := strings.Cut(line, ":")
		switch k {
		case "PPid":
			p.PPid, _ = strconv.Atoi(strings.TrimSpace(v))
		case "Uid":
			p.UID = ints(v)
		case "Gid":
			p.GID = ints(v)
		case "Groups":
			p.Groups = ints(v)
		}
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	p.Args = strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	return p, true
}

func ints(fields string) []int {
	var out []int
	for _, f := range strings.Fields(fields) {
		n, err := strconv.Atoi(f)
		if err != nil {
			n = -1 // never an id: a check against one fails
		}
		out = append(out, n)
	}
	return out
}

// Children returns the children of pid that the daemon started, by their
// role argument: "net" for `imserious -R net`, "exec:NAME" for `imserious
// -R exec:NAME`.
func Children(tb testing.TB, pid int) map[string]Proc {
	tb.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string]Proc{}
	for _, e := range ents {
		cpid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		p, ok := ReadProc(cpid)
		if !ok || p.PPid != pid {
			continue
		}
		if len(p.Args) == 3 && p.Args[1] == "-R" {
			out[p.Args[2]] = p
		}
	}
	return out
}

// Descendants returns the pids of the processes below pid, with their
// start times: what a process a test started has started in turn, to be
// ended by pid should it outlive its parent.
func Descendants(pid int) map[int]string {
	byParent := map[int][]int{}
	start := map[int]string{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ppid, st, ok := procStat(p)
		if !ok {
			continue
		}
		byParent[ppid] = append(byParent[ppid], p)
		start[p] = st
	}
	out := map[int]string{}
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range byParent[p] {
			if _, seen := out[c]; !seen {
				out[c] = start[c]
				queue = append(queue, c)
			}
		}
	}
	return out
}

// procStat reads a process's parent and start time (field 22 of
// /proc/PID/stat, which with the pid names a process uniquely).
func procStat(pid int) (ppid int, start string, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, "", false
	}
	// The command name is in parentheses and may contain anything.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, "", false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, "", false
	}
	ppid, _ = strconv.Atoi(f[1])
	return ppid, f[19], true
}

// DieWithParent makes a process a test starts get SIGTERM should the test
// binary die without running its cleanups (a -timeout panic): nothing a
// test starts must outlive it. Linux sends the signal when the thread that
// started the process exits, which Go threads do not, but for a goroutine
// that ends while locked to its thread (which the tests do not do).
func DieWithParent(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGTERM
}

// StopTree ends a process a test started, by pid: SIGTERM, then SIGKILL
// after grace, which fails the test; afterwards any of its descendants,
// found now or recorded in kids earlier (in case it died and they were
// reparented), that is still the same process (same start time) is
// killed too. exited is closed once cmd.Wait has returned; name names
// the process in the message.
func StopTree(tb testing.TB, name string, cmd *exec.Cmd, exited <-chan struct{}, kids map[int]string, grace time.Duration) {
	tb.Helper()
	all := Descendants(cmd.Process.Pid)
	for pid, start := range kids {
		all[pid] = start
	}
	select {
	case <-exited:
	default:
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(grace):
			tb.Errorf("%s (pid %d) still running %v after SIGTERM: killing it", name, cmd.Process.Pid, grace)
			cmd.Process.Kill()
			<-exited
		}
	}
	for pid, start := range all {
		if _, st, ok := procStat(pid); ok && st == start {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}
