//go:build e2e && linux

package e2e

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imserious/imserious/privsep"
)

// binPath is the imserious binary under test.
var binPath string

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	if p := os.Getenv("IMSERIOUS_BIN"); p != "" {
		abs, err := filepath.Abs(p)
		if err != nil {
			fmt.Fprintf(os.Stderr, "e2e: IMSERIOUS_BIN %q: %v\n", p, err)
			return 1
		}
		binPath = abs
		return m.Run()
	}
	// No binary given: build one, as `make build` would, into a 0755
	// directory (children re-exec /proc/self/exe as root before dropping,
	// so nothing else needs to reach it).
	dir, err := os.MkdirTemp("", "imserious-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	binPath = filepath.Join(dir, "imserious")
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	build := exec.Command(goBin, "build", "-o", binPath, "../cmd/imserious")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: building imserious: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// requireRoot skips when not root: the suite starts Dovecot, creates
// accounts and tests the privilege drop, all of which need root. CI runs
// it as root, so there it always runs.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the Dovecot end-to-end suite needs root (it starts Dovecot, creates accounts, drops privileges): run `make e2e` as root")
	}
}

// Where Debian's packages put Dovecot.
const (
	dovecotBin = "/usr/sbin/dovecot"
	doveadmBin = "/usr/bin/doveadm"
	ldaBin     = "/usr/lib/dovecot/dovecot-lda"
)

// requireDovecot fails, rather than skips, when Dovecot is missing: `make
// e2e` installs it, and a suite that silently tests nothing would hide a
// broken install step.
func requireDovecot(t *testing.T) {
	t.Helper()
	for _, p := range []string{dovecotBin, doveadmBin, ldaBin} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("dovecot is not installed (%v): run `make e2e`, which installs dovecot-core, dovecot-imapd and dovecot-lmtpd", err)
		}
	}
}

// account returns a system account, creating it when missing (the suite
// leaves the accounts in place, as `make test-accounts` does; they are
// locked and own nothing outside the test's directories).
func account(t *testing.T, name string) privsep.Account {
	t.Helper()
	a, err := privsep.LookupAccount(name)
	if err == nil {
		return a
	}
	if !errors.Is(err, privsep.ErrNoAccount) {
		t.Fatalf("looking up account %s: %v", name, err)
	}
	args := []string{"-m", "-s", "/bin/sh", name}
	if name == "_imserious" {
		args = []string{"-r", "-M", "-d", "/var/empty", "-s", "/usr/sbin/nologin", name}
	}
	if out, err := exec.Command("useradd", args...).CombinedOutput(); err != nil {
		t.Fatalf("useradd %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	a, err = privsep.LookupAccount(name)
	if err != nil {
		t.Fatalf("looking up account %s after useradd: %v", name, err)
	}
	return a
}

// openDir is a fresh directory every account can traverse: mail homes,
// the CA file Dovecot reads as the mail user and Dovecot's base_dir live
// under it. t.TempDir is 0700, which the mail users could not enter.
func openDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "imserious-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

// freePort returns a loopback TCP port that was free a moment ago, for
// Dovecot's LMTP listener (Dovecot cannot be asked to pick one and say).
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// dieWithUs makes a process the suite starts get SIGTERM should the test
// binary die without running its cleanups (a -timeout panic): neither
// Dovecot nor imserious must outlive the suite.
func dieWithUs(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}

// descendants returns the pids of the processes below pid, with their
// start times, read from /proc: what a process we started has started in
// turn, to be ended by pid should it outlive its parent.
func descendants(pid int) map[int]string {
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

// stopProcess ends a process this suite started, by pid: SIGTERM, then
// SIGKILL after grace; afterwards, any of its descendants, found now or
// recorded in kids earlier (in case it died and they were reparented),
// that is still the same process (same start time) is killed too.
// exited is closed once cmd.Wait has returned.
func stopProcess(t *testing.T, name string, cmd *exec.Cmd, exited <-chan struct{}, kids map[int]string, grace time.Duration) {
	t.Helper()
	all := descendants(cmd.Process.Pid)
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
			t.Errorf("%s (pid %d) still running %v after SIGTERM: killing it", name, cmd.Process.Pid, grace)
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
