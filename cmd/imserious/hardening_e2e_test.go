//go:build linux

package main

// Hardening, end to end, on the real binary: no terminal reaches a child
// or a command, nothing a command starts outlives its run, the daemon
// starts with ten thousand handlers, and a thousand reloads leak nothing.
// As root (always in CI) the processes run privilege-separated, commands
// as imse_alice and the network process as _imserious.

import (
	"fmt"
	"os"
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imserious/imserious/internal/daemontest"
	"golang.org/x/sys/unix"
)

// hdHead is the top of every configuration here: a free loopback port,
// the JSON log the harness reads, and as root the privsep user.
func hdHead(t *testing.T) string {
	t.Helper()
	return fmt.Sprintf("listen = \"127.0.0.1:0\"\n%s%s", daemontest.LogTOML, daemontest.PrivsepTOML(t))
}

// hdHandler is one [[handler]] for user running argv, with extra lines
// (keys of the handler) after it. Arguments are written as TOML basic
// strings, which %q spells right for printable ASCII.
func hdHandler(user, extra string, argv ...string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = fmt.Sprintf("%q", a)
	}
	return fmt.Sprintf("\n[[handler]]\nuser = %q\ncommand = [%s]\n%s", user, strings.Join(q, ", "), extra)
}

// hdRunEnded matches the line a run of handler h ends with, however it
// ends. As in output, h counts from 0 in file order; logs say h+1.
func hdRunEnded(h int) func(daemontest.Line) bool {
	return func(m daemontest.Line) bool {
		if m["handler"] != float64(h+1) {
			return false
		}
		switch m.Str("msg") {
		case "command exited", "command killed by signal", "command ended",
			"command exited but a descendant kept its output open":
			return true
		}
		return false
	}
}

// hdStdout matches a line handler h's command wrote to stdout; with
// prefix, only one that starts so.
func hdStdout(h int, prefix string) func(daemontest.Line) bool {
	return func(m daemontest.Line) bool {
		return m.Str("msg") == "command output" && m["handler"] == float64(h+1) && m.Str("stream") == "stdout" &&
			strings.HasPrefix(m.Str("line"), prefix)
	}
}

func hdStarted(h int) func(daemontest.Line) bool {
	return func(m daemontest.Line) bool { return m.Str("msg") == "command started" && m["handler"] == float64(h+1) }
}

// hdWatched is a process held by a pidfd: it cannot be confused with a
// later process of the same pid, and cleanup kills it should the daemon
// have left it running.
type hdWatched struct {
	pid, fd int
}

func hdWatch(t *testing.T, pid int) *hdWatched {
	t.Helper()
	fd, err := unix.PidfdOpen(pid, 0)
	if err == unix.ESRCH {
		return &hdWatched{pid: pid, fd: -1}
	}
	if err != nil {
		t.Fatalf("pidfd_open(%d): %v", pid, err)
	}
	t.Cleanup(func() {
		unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
		unix.Close(fd)
	})
	return &hdWatched{pid: pid, fd: fd}
}

// gone says whether the process has exited, waiting up to within. A zombie
// counts as gone (see waitGone).
func (w *hdWatched) gone(within time.Duration) bool {
	if w.fd < 0 {
		return true
	}
	fds := []unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}}
	deadline := time.Now().Add(within)
	for {
		n, err := unix.Poll(fds, int(max(time.Until(deadline), 0)/time.Millisecond))
		if err == unix.EINTR {
			continue
		}
		return err == nil && n == 1
	}
}

func hdPidIn(t *testing.T, l daemontest.Line) int {
	t.Helper()
	pid, err := strconv.Atoi(strings.TrimSpace(l.Str("line")))
	if err != nil || pid <= 1 {
		t.Fatalf("no pid in %v", l)
	}
	return pid
}

func hdStartedPid(t *testing.T, l daemontest.Line) int {
	t.Helper()
	pid, ok := l.Num("pid")
	if !ok || pid <= 1 {
		t.Fatalf("no pid in %v", l)
	}
	return pid
}

// TestTerminalNeverReachesChildren: the daemon runs on a terminal that is
// its controlling terminal, as in an operator's shell. Its log still
// arrives (the children's lines through the parent's relay), and neither
// child nor command holds a terminal descriptor, shares the daemon's
// session, has a controlling terminal, or can open /dev/tty.
func TestTerminalNeverReachesChildren(t *testing.T) {
	user, _ := account(t, "imse_alice")
	// The command holds still, reading a FIFO, while the test looks at it
	// from outside. The test holds the FIFO open for writing (O_RDWR does
	// not block), so the command's open returns at once and its read waits
	// for the test's line. command_timeout ends it should the test not get
	// that far.
	fifo := daemontest.PublicDir(t) + "/release"
	if err := unix.Mkfifo(fifo, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(fifo, 0o666); err != nil {
		t.Fatal(err)
	}
	release, err := os.OpenFile(fifo, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer release.Close()
	script := "ls -l /proc/$$/fd; cat /proc/$$/stat; " +
		"(exec 3</dev/tty) && echo TTY-OPENED || echo NO-TTY; echo READY; read x < " + fifo
	cfg := hdHead(t) + hdHandler(user, "command_timeout = \"15s\"\n", "/bin/sh", "-c", script)
	d, term := daemontest.StartTerminal(t, cfg, daemontest.Options{Env: []string{canary + "=leaked"}})

	// The set-up works: the parent leads its session and the terminal is
	// its controlling terminal; without that the rest proves nothing.
	parent, ok := daemontest.ReadStat(d.Pid())
	if !ok {
		t.Fatal("no parent process")
	}
	if parent.Session != d.Pid() || parent.TTYNr != term.TTYNr() {
		t.Fatalf("parent: session %d, tty_nr %d; want session %d and the controlling terminal %s (tty_nr %d)",
			parent.Session, parent.TTYNr, d.Pid(), term.Name, term.TTYNr())
	}

	mark := d.Mark()
	if resp := notify(t, notifyURL(d), fmt.Sprintf(body1, user, 1), nil); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	cmdPid := hdStartedPid(t, d.WaitFrom(t, mark, "the command's start", hdStarted(0)))
	d.WaitFrom(t, mark, "READY from the command", hdStdout(0, "READY"))

	kids := d.Children()
	execp, ok := kids["exec:"+user]
	if _, okNet := kids["net"]; !ok || !okNet {
		t.Fatalf("children %v, want net and exec:%s", kids, user)
	}
	execStat, _ := daemontest.ReadStat(execp.Pid)
	// Everything below the parent: the children, the command, and whatever
	// else runs now.
	below := daemontest.Descendants(d.Pid())
	if _, ok := below[cmdPid]; !ok {
		t.Fatalf("command pid %d is not below the parent (%v)", cmdPid, below)
	}
	for pid := range below {
		st, ok := daemontest.ReadStat(pid)
		if !ok {
			continue
		}
		what := fmt.Sprintf("%s (pid %d, %v)", st.Comm, pid, hdRole(kids, pid, cmdPid))
		if st.Session == parent.Session {
			t.Errorf("%s shares the parent's session %d", what, parent.Session)
		}
		if st.TTYNr != 0 {
			t.Errorf("%s has a controlling terminal (tty_nr %d)", what, st.TTYNr)
		}
		if pid == cmdPid && st.Session == execStat.Session {
			t.Errorf("%s shares its exec process's session %d", what, st.Session)
		}
		fds, err := daemontest.FDs(pid)
		if err != nil {
			if !isRoot() && os.IsPermission(err) {
				t.Logf("cannot read the descriptors of %s as a non-root user (not dumpable): %v", what, err)
				continue
			}
			t.Errorf("descriptors of %s: %v", what, err)
			continue
		}
		for _, fd := range fds {
			if fd.Rdev == term.Rdev || fd.Target == term.Name || fd.IsTerminal() {
				t.Errorf("%s holds fd %d on the terminal %s", what, fd.Num, fd.Target)
			}
		}
	}
	if _, err := release.WriteString("go\n"); err != nil {
		t.Fatal(err)
	}
	d.WaitFrom(t, mark, "the end of the run", hdRunEnded(0))

	// What the command saw of itself.
	out := output(d, 0)
	for _, line := range out {
		if _, target, ok := strings.Cut(line, " -> "); ok {
			if fd := (daemontest.FD{Target: target}); target == term.Name || fd.IsTerminal() || strings.HasPrefix(target, "/dev/console") {
				t.Errorf("the command lists a terminal descriptor: %s", line)
			}
		}
		if strings.HasPrefix(line, strconv.Itoa(cmdPid)+" (") {
			st, ok := daemontest.ParseStat(line)
			if !ok || st.Session == parent.Session || st.TTYNr != 0 {
				t.Errorf("the command's own stat: session %d, tty_nr %d (parent's session %d): %s",
					st.Session, st.TTYNr, parent.Session, line)
			}
		}
	}
	if !strings.Contains(strings.Join(out, "\n"), "NO-TTY") || strings.Contains(strings.Join(out, "\n"), "TTY-OPENED") {
		t.Errorf("the command could open /dev/tty, or did not say:\n%s", strings.Join(out, "\n"))
	}
	if d.Count(func(m daemontest.Line) bool { return strings.HasPrefix(m.Str("proc"), "exec") }) == 0 {
		t.Errorf("no line of the exec process arrived on the terminal")
	}
}

func hdRole(kids map[string]daemontest.Proc, pid, cmdPid int) string {
	for role, p := range kids {
		if p.Pid == pid {
			return role
		}
	}
	if pid == cmdPid {
		return "the command"
	}
	return "below a child"
}

// TestCommandLeftoversKilled: whatever a command starts is gone when its
// run ends: left in its process group after it exits, at its timeout, or
// escaped into a session of its own (which only the exec process's
// subreaper sweep finds).
func TestCommandLeftoversKilled(t *testing.T) {
	user, _ := account(t, "imse_alice")
	cases := []struct {
		name, extra, script string
		escaped             bool // the script reports ESCAPED once the sleep leads a session of its own
	}{
		{"background", "", "sleep 1000 & echo $!", false},
		{"timeout", "command_timeout = \"1s\"\n", "sleep 1000 & echo $!; sleep 1000", false},
		{"setsid", "command_timeout = \"15s\"\n",
			"setsid sleep 1000 & p=$!; echo $p; i=0; " +
				"while [ \"$(cut -d' ' -f6 /proc/$p/stat 2>/dev/null)\" != \"$p\" ] && [ $i -lt 2000 ]; do i=$((i+1)); done; " +
				"[ \"$(cut -d' ' -f6 /proc/$p/stat)\" = \"$p\" ] && echo ESCAPED", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := start(t, hdHead(t)+hdHandler(user, c.extra, "/bin/sh", "-c", c.script))
			mark := d.Mark()
			if resp := notify(t, notifyURL(d), fmt.Sprintf(body1, user, 1), nil); resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			begin := time.Now()
			pid := hdPidIn(t, d.WaitFrom(t, mark, "the background sleep's pid", hdStdout(0, "")))
			w := hdWatch(t, pid)
			if c.name == "timeout" && w.gone(0) {
				t.Fatalf("the background sleep %d is gone while its command still runs: the test proves nothing", pid)
			}
			end := d.WaitFrom(t, mark, "the end of the run", hdRunEnded(0))
			t.Logf("run ended %v after the event: %v", time.Since(begin).Round(time.Millisecond), end)
			if c.escaped {
				if len(d.Since(mark, hdStdout(0, "ESCAPED"))) == 0 {
					t.Fatalf("the sleep %d never led a session of its own: the test proves nothing", pid)
				}
			}
			if !w.gone(5 * time.Second) {
				st, _ := daemontest.ReadStat(pid)
				t.Errorf("the background sleep %d still runs 5s after its run ended (%+v)", pid, st)
			}
		})
	}
}

// TestExecDeathKillsLeftovers: when the exec process dies with SIGKILL
// while a command runs, the parent kills what it left behind (the command
// and its background child), restarts it, and the account's handlers run
// again.
func TestExecDeathKillsLeftovers(t *testing.T) {
	user, _ := account(t, "imse_alice")
	// A recovery run (after the exec process is back) must not start
	// another sleep: this test does not look at it.
	script := "test \"$IMSE_TRIGGER\" = recovery && exit 0; sleep 1000 & echo $!; exec sleep 1000"
	cfg := hdHead(t) + hdHandler(user, "", "/bin/sh", "-c", script) +
		hdHandler(user, "event = \"MessageRead\"\nlimit_burst = 100\n", "/bin/echo", "alive")
	d := start(t, cfg)
	mark := d.Mark()
	if resp := notify(t, notifyURL(d), fmt.Sprintf(body1, user, 1), nil); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	fg := hdWatch(t, hdStartedPid(t, d.WaitFrom(t, mark, "the command's start", hdStarted(0))))
	bg := hdWatch(t, hdPidIn(t, d.WaitFrom(t, mark, "the background sleep's pid", hdStdout(0, ""))))
	if fg.gone(0) || bg.gone(0) {
		t.Fatalf("a sleep is gone before the exec process was killed: the test proves nothing")
	}
	old, ok := d.Children()["exec:"+user]
	if !ok {
		t.Fatalf("no exec:%s child", user)
	}
	mark = d.Mark()
	if err := syscall.Kill(old.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, w := range []struct {
		name string
		w    *hdWatched
	}{{"the command (foreground sleep)", fg}, {"its background sleep", bg}} {
		if !w.w.gone(time.Until(deadline)) {
			t.Errorf("%s, pid %d, still runs 10s after its exec process %d was killed", w.name, w.w.pid, old.Pid)
		}
	}
	name := "exec[" + user + "]"
	d.WaitFrom(t, mark, "restarting child "+name, func(m daemontest.Line) bool {
		return m.Str("proc") == "parent" && m.Str("msg") == "restarting child" && m.Str("child") == name
	})
	started := d.WaitFrom(t, mark, "a new "+name, func(m daemontest.Line) bool {
		pid, _ := m.Num("pid")
		return m.Str("proc") == "parent" && m.Str("msg") == "started child" && m.Str("child") == name && pid != old.Pid
	})
	newPid, _ := started.Num("pid")
	if now, ok := d.Children()["exec:"+user]; !ok || now.Pid != newPid {
		t.Errorf("exec:%s is %+v, want the new pid %d", user, now, newPid)
	}
	mark = d.Mark()
	if resp := notify(t, notifyURL(d), fmt.Sprintf(`{"user":%q,"event":"MessageRead"}`, user), nil); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	d.WaitFrom(t, mark, "a run of handler 1 by the new exec process", hdStdout(1, "alive"))
}

// hdCleanExit matches a clean exit of a run for Dovecot user u.
func hdCleanExit(u string) func(daemontest.Line) bool {
	return func(m daemontest.Line) bool {
		return m.Str("msg") == "command exited" && m.Str("user") == u && m["status"] == float64(0)
	}
}

// TestScaleHandlers: ten thousand handlers start and the last user's
// event runs; a thousand handlers over a hundred accounts get a hundred
// exec processes, each of which runs its users' events.
func TestScaleHandlers(t *testing.T) {
	t.Run("10000 handlers", func(t *testing.T) {
		runAs := ""
		if isRoot() {
			runAs = fmt.Sprintf("run_as = %q\n", daemontest.Account(t, "imse_alice").Name)
		}
		var b strings.Builder
		b.WriteString(hdHead(t))
		for i := range 10000 {
			fmt.Fprintf(&b, "\n[[handler]]\nuser = \"u%05d\"\ncommand = \"/bin/true\"\n%s", i, runAs)
		}
		begin := time.Now()
		d := start(t, b.String())
		t.Logf("listening %v after start", time.Since(begin).Round(time.Millisecond))
		mark := d.Mark()
		if resp := notify(t, notifyURL(d), `{"user":"u09999","event":"MessageNew"}`, nil); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		d.WaitFrom(t, mark, "u09999's run", hdCleanExit("u09999"))
	})

	t.Run("1000 handlers over 100 accounts", func(t *testing.T) {
		if !isRoot() {
			t.Skip("needs root: run_as naming other accounts is an error for a non-root daemon")
		}
		accts := make([]string, 100)
		var missing []string
		for i := range accts {
			accts[i] = fmt.Sprintf("imse_scale%02d", i)
			if _, err := user.Lookup(accts[i]); err != nil {
				missing = append(missing, accts[i])
			}
		}
		if len(missing) > 0 && os.Getenv("CI") != "true" {
			t.Skipf("%d of the accounts imse_scale00..imse_scale99 are missing; they are made only in CI (CI=true) as root", len(missing))
		}
		for _, a := range missing {
			daemontest.Account(t, a)
		}
		var b strings.Builder
		b.WriteString(hdHead(t))
		for i := range 1000 {
			fmt.Fprintf(&b, "\n[[handler]]\nuser = \"v%04d\"\ncommand = \"/bin/true\"\nrun_as = %q\n", i, accts[i%100])
		}
		begin := time.Now()
		d := start(t, b.String())
		t.Logf("listening %v after start", time.Since(begin).Round(time.Millisecond))
		kids := d.Children()
		for _, a := range accts {
			if _, ok := kids["exec:"+a]; !ok {
				t.Errorf("no exec process for %s", a)
			}
		}
		if len(kids) != 101 {
			t.Errorf("%d children, want net and 100 exec processes", len(kids))
		}
		// One user of each account: v0900..v0999.
		pending := map[string]bool{}
		mark := d.Mark()
		for i := 900; i < 1000; i++ {
			u := fmt.Sprintf("v%04d", i)
			pending[u] = true
			if resp := notify(t, notifyURL(d), fmt.Sprintf(`{"user":%q,"event":"MessageNew"}`, u), nil); resp.StatusCode != 200 {
				t.Fatalf("%s: status %d", u, resp.StatusCode)
			}
		}
		d.WaitFrom(t, mark, "a run for each of v0900..v0999", func(m daemontest.Line) bool {
			if m.Str("msg") == "command exited" && m["status"] == float64(0) {
				delete(pending, m.Str("user"))
			}
			return len(pending) == 0
		})
	})
}

// hdReloadDone matches the parent's line that ends a reload, good or bad.
func hdReloadDone(m daemontest.Line) bool {
	return m.Str("proc") == "parent" &&
		(m.Str("msg") == "configuration reloaded" || m.Str("msg") == "reload failed, the running configuration stays in force")
}

// hdHUP sends SIGHUP and waits for the reload to end, returning the line.
func hdHUP(t *testing.T, d *daemontest.Daemon) daemontest.Line {
	t.Helper()
	mark := d.Mark()
	if err := d.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	return d.WaitFrom(t, mark, "end of the reload", hdReloadDone)
}

type hdUsage struct{ fds, rssKiB int }

// hdUsageOf returns the descriptors and resident memory of the parent and
// each child, by role.
func hdUsageOf(t *testing.T, d *daemontest.Daemon) (map[string]int, map[string]hdUsage) {
	t.Helper()
	pids := map[string]int{"parent": d.Pid()}
	for role, p := range d.Children() {
		pids[role] = p.Pid
	}
	use := map[string]hdUsage{}
	for role, pid := range pids {
		n, err := daemontest.FDCount(pid)
		if err != nil {
			t.Fatalf("%s (pid %d): %v", role, pid, err)
		}
		rss, ok := daemontest.Status(pid, "VmRSS")
		if !ok {
			t.Fatalf("%s (pid %d): no VmRSS", role, pid)
		}
		use[role] = hdUsage{n, rss}
	}
	return pids, use
}

// TestReloadNoLeaks: over 1,000 SIGHUPs, half of them changing a handler,
// no process gains a descriptor or more than 8 MiB of resident memory,
// none is restarted, and the last configuration is the one that runs.
func TestReloadNoLeaks(t *testing.T) {
	const reloads, warmUp = 1000, 200
	const maxGrowthKiB = 8 << 10
	user, _ := account(t, "imse_alice")
	// One head for every version of the file: a changed [privsep] table
	// (PrivsepTOML makes a new directory each call) restarts the network
	// process, rightly.
	head := hdHead(t)
	conf := func(gen int) string {
		return head + hdHandler(user, "limit_burst = 100\n", "/bin/echo", fmt.Sprintf("gen-%d", gen%2)) +
			hdHandler(user, "event = \"MessageRead\"\n", "/bin/true")
	}
	d := start(t, conf(0))
	path := d.Cmd.Args[len(d.Cmd.Args)-1]
	reload := func(gen int) {
		t.Helper()
		if err := os.WriteFile(path, []byte(conf(gen)), 0o600); err != nil {
			t.Fatal(err)
		}
		if l := hdHUP(t, d); l.Str("msg") != "configuration reloaded" {
			t.Fatalf("reload %d failed: %s", gen, d.Since(0, func(m daemontest.Line) bool { return m.Str("level") == "ERROR" }))
		}
	}
	// The first reloads grow the heaps to their steady size (about 5 MiB
	// over the first few hundred, then flat, measured over 4,000): the
	// baseline is taken after them, so that growth from there is a leak.
	for gen := 1; gen <= warmUp; gen++ {
		reload(gen)
	}
	pids0, use0 := hdUsageOf(t, d)
	begin := time.Now()
	for gen := warmUp + 1; gen <= warmUp+reloads; gen++ {
		reload(gen)
	}
	t.Logf("%d reloads in %v", reloads, time.Since(begin).Round(time.Millisecond))
	pids1, use1 := hdUsageOf(t, d)
	for role, pid := range pids0 {
		if pids1[role] != pid {
			t.Errorf("%s was pid %d, now %d: restarted by a reload", role, pid, pids1[role])
			continue
		}
		a, b := use0[role], use1[role]
		t.Logf("%s: fds %d -> %d, VmRSS %d -> %d KiB", role, a.fds, b.fds, a.rssKiB, b.rssKiB)
		if b.fds != a.fds {
			t.Errorf("%s: %d descriptors before %d reloads, %d after", role, a.fds, reloads, b.fds)
		}
		if b.rssKiB-a.rssKiB > maxGrowthKiB {
			t.Errorf("%s: VmRSS grew from %d to %d KiB over %d reloads", role, a.rssKiB, b.rssKiB, reloads)
		}
	}
	if len(pids1) != len(pids0) {
		t.Errorf("processes %v before, %v after", pids0, pids1)
	}
	// "configuration reloaded" is the parent's: the children take the
	// new stream a moment later, and report it in force.
	last := 1 + warmUp + reloads
	d.WaitFor("the last configuration in force", func(l daemontest.Line) bool {
		g, ok := l.Num("generation")
		return l.Str("msg") == "configuration in force" && ok && g >= last
	})
	mark := d.Mark()
	if resp := notify(t, notifyURL(d), fmt.Sprintf(body1, user, 1), nil); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	want := fmt.Sprintf("gen-%d", (warmUp+reloads)%2)
	if l := d.WaitFrom(t, mark, "the run after the reloads", hdStdout(0, "gen-")); l.Str("line") != want {
		t.Errorf("the command printed %q, want %q of the last configuration", l.Str("line"), want)
	}
}

// TestReloadBrokenFileKeepsRunningConfig: a file that fails to load is
// reported and changes nothing: the old handler keeps running, the
// processes stay, and a good file after it is loaded.
func TestReloadBrokenFileKeepsRunningConfig(t *testing.T) {
	user, _ := account(t, "imse_alice")
	head := hdHead(t) // one [privsep] table for every version (see TestReloadNoLeaks)
	good := func(word string) string {
		return head + hdHandler(user, "limit_burst = 100\n", "/bin/echo", word)
	}
	d := start(t, good("old-handler"))
	path := d.Cmd.Args[len(d.Cmd.Args)-1]
	pids := map[string]int{}
	for role, p := range d.Children() {
		pids[role] = p.Pid
	}
	runs := func(t *testing.T, want string) {
		t.Helper()
		mark := d.Mark()
		if resp := notify(t, notifyURL(d), fmt.Sprintf(body1, user, 1), nil); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		if l := d.WaitFrom(t, mark, "the handler's output", hdStdout(0, "")); l.Str("line") != want {
			t.Errorf("the command printed %q, want %q", l.Str("line"), want)
		}
	}
	runs(t, "old-handler")
	cases := []struct{ name, text string }{
		{"TOML syntax", good("new-handler") + "[[handler]\nuser = \n"},
		{"unknown key", good("new-handler") + "limitperod = \"3s\"\n"},
		{"command not found", head + hdHandler(user, "", "/nonexistent/imserious-test/prog")},
		{"file missing", ""},
	}
	for _, c := range cases {
		ok := t.Run(c.name, func(t *testing.T) {
			if c.text == "" {
				if err := os.Rename(path, path+".away"); err != nil {
					t.Fatal(err)
				}
				defer os.Rename(path+".away", path)
			} else if err := os.WriteFile(path, []byte(c.text), 0o600); err != nil {
				t.Fatal(err)
			}
			if l := hdHUP(t, d); l.Str("msg") != "reload failed, the running configuration stays in force" {
				t.Fatalf("the broken file was loaded: %v", l)
			}
			runs(t, "old-handler")
		})
		if !ok {
			return // the daemon is in no state to tell the next case
		}
	}
	t.Run("good file after", func(t *testing.T) {
		if err := os.WriteFile(path, []byte(good("new-handler")), 0o600); err != nil {
			t.Fatal(err)
		}
		if l := hdHUP(t, d); l.Str("msg") != "configuration reloaded" {
			t.Fatalf("the good file was not loaded: %v", l)
		}
		runs(t, "new-handler")
	})
	for role, p := range d.Children() {
		if pids[role] != p.Pid {
			t.Errorf("%s was pid %d, now %d", role, pids[role], p.Pid)
		}
	}
	if len(d.Children()) != len(pids) {
		t.Errorf("children changed: %v, then %v", pids, d.Children())
	}
}
