//go:build linux

package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imserious/imserious/bench/load"
	"github.com/imserious/imserious/internal/daemontest"
	"golang.org/x/sys/unix"
)

// The load of issue 12, through the real daemon: 50,000 notifications for
// 500 users over 64 keep-alive connections, to handlers with limit_burst =
// 1 and limit_period = "1s", whose command records each run (see
// testdata/loadcmd). One user in ten has a command that runs longer than
// the period, so that events arrive while it runs and the next run is due
// the moment it ends: the case where two copies could overlap.
const (
	loadUsers    = 500
	loadRequests = 50000
	loadConns    = 64
	loadPeriod   = time.Second
	loadHold     = 1500 * time.Millisecond // the slow users' command
	// loadLimit bounds the whole test, start-up and wind-down included.
	loadLimit = time.Minute
)

// loadFastCommand is the command of the fast handlers, run by /bin/sh
// with the records' directory as $0: it writes the lines testdata/loadcmd
// writes (see there) with builtins only, so that a run costs a fork and
// an exec and no more. Without a lock it cannot see an overlap itself;
// two copies at once would show as their lines interleaved.
const loadFastCommand = `read -r _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ fork _ < /proc/self/stat
f="$0/$IMSE_USER"
echo "S $fork $$ $IMSE_TRIGGER ${IMSE_UID:--}" >> "$f"
echo "E $fork $$ 0" >> "$f"`

// loadRun is one run in a user's record.
type loadRun struct {
	fork    time.Duration // when the exec process forked it: since boot, in whole clock ticks
	pid     int
	trigger string
	uid     int  // IMSE_UID; 0: none (a recovery run)
	ended   bool // its E line came
	overlap bool // it saw another run's lock, or another run's lines came between its own
}

func TestLoadWithoutLoss(t *testing.T) {
	began := time.Now()
	bin := buildLoadCommand(t)
	records := daemontest.PublicDir(t)
	alice, _ := account(t, "imse_alice")
	bob, _ := account(t, "imse_bob")
	accounts := []string{alice, bob}
	var cfg strings.Builder
	// info, not debug: one line per event is enough to read.
	fmt.Fprintf(&cfg, "listen = \"127.0.0.1:0\"\nmax_open_per_ip = %d\n[log]\nformat = \"json\"\nlevel = true\ntarget = true\n%s", loadConns+8, daemontest.PrivsepTOML(t))
	users := make([]string, loadUsers)
	for i := range users {
		users[i] = "user" + strconv.Itoa(i)
		command := fmt.Sprintf("[%q, %q, %q, %q]", "/bin/sh", "-c", loadFastCommand, records)
		if i%10 == 0 {
			command = fmt.Sprintf("[%q, %q]\nenv = { HOLD = %q }", bin, records, loadHold.String())
		}
		fmt.Fprintf(&cfg, "[[handler]]\nuser = %q\ncommand = %s\nlimit_burst = 1\nlimit_period = %q\nrun_as = %q\n",
			users[i], command, loadPeriod.String(), accounts[i%2])
	}
	d := startLoadDaemon(t, cfg.String())
	roles := []string{"net", "exec:" + alice}
	if bob != alice {
		roles = append(roles, "exec:"+bob)
	}
	baseline := loadMemory(t, d, roles)

	// Each user's notifications go over one connection, one at a time, so
	// that the last one sent is the last one the daemon accepts; uids
	// count up per user.
	type slot struct {
		user int
		uid  int
	}
	var (
		sent    = make([]int, loadConns)  // per worker, touched by its goroutine only
		current = make([]slot, loadConns) // the request in flight of each worker
		lastUID = make([]int, loadUsers)
		lastAt  = make([]time.Duration, loadUsers) // boot time of the answer
		bad     = make([][]string, loadConns)
	)
	mine := func(w int) []int {
		var us []int
		for u := w; u < loadUsers; u += loadConns {
			us = append(us, u)
		}
		return us
	}
	perWorker := make([][]int, loadConns)
	for w := range perWorker {
		perWorker[w] = mine(w)
	}
	begin := bootTime()
	res := load.Run(load.Options{
		Target:   load.Target{Addr: d.addr, KeepAlive: true},
		Conns:    loadConns,
		Requests: loadRequests,
		Body: func(buf []byte, w, _ int) []byte {
			us := perWorker[w]
			k := sent[w]
			sent[w]++
			current[w] = slot{user: us[k%len(us)], uid: k/len(us) + 1}
			return load.Body(buf, users[current[w].user], current[w].uid)
		},
		Status: func(w, _, code int) {
			c := current[w]
			if code != 200 {
				bad[w] = append(bad[w], fmt.Sprintf("%s uid %d: %d", users[c.user], c.uid, code))
				return
			}
			// The worker's own users only: no other goroutine writes these.
			lastUID[c.user], lastAt[c.user] = c.uid, bootTime()
		},
	})
	for w := range bad {
		for _, b := range bad[w] {
			t.Errorf("request failed: %s", b)
		}
	}
	if res.Failed > 0 || res.Requests != loadRequests {
		t.Fatalf("%d of %d requests answered, %d failed: %v", res.Requests, loadRequests, res.Failed, res.Err)
	}
	t.Logf("%d notifications in %v (%.0f/s), p50 %v p99 %v max %v", res.Requests, res.Elapsed.Round(time.Millisecond),
		res.RPS(), res.Percentile(0.5), res.Percentile(0.99), res.Percentile(1))

	// Wait for a run after every user's last notification: a run that
	// carries its uid (the runs of coalesced events carry the last one's
	// fields), or a recovery run that started after it was answered. The
	// records are read again as each command exits.
	after := d.exitCount()
	pending := map[int]bool{}
	check := func(u int) {
		for _, r := range readRuns(t, filepath.Join(records, users[u])) {
			if r.ended && (r.uid == lastUID[u] || (r.trigger == "recovery" && r.fork > lastAt[u])) {
				delete(pending, u)
				return
			}
		}
	}
	index := map[string]int{}
	for u := range users {
		index[users[u]] = u
		pending[u] = true
		check(u)
	}
	for len(pending) > 0 {
		var exited []string
		exited, after = d.exitsAfter(t, after, "a run after every user's last notification")
		for _, name := range exited {
			if u, ok := index[name]; ok && pending[u] {
				check(u)
			}
		}
	}
	// Any run still going ends now, its record written.
	d.waitIdle(t)

	total := 0
	for u := range users {
		rs := readRuns(t, filepath.Join(records, users[u]))
		total += len(rs)
		for _, p := range checkRuns(users[u], rs, begin) {
			t.Error(p)
		}
	}
	accepted, lost := d.counts()
	t.Logf("%d runs for %d users (%d events accepted); the exec processes fell behind %d times (recovery runs covered it)",
		total, loadUsers, accepted, lost)
	if accepted != loadRequests {
		t.Errorf("%d \"event accepted\" lines for %d notifications", accepted, loadRequests)
	}

	loadMemoryReturns(t, d, roles, baseline)
	if took := time.Since(began); took > loadLimit {
		t.Errorf("the load test took %v, over its bound of %v", took.Round(time.Second), loadLimit)
	}
}

// checkRuns holds one user's runs to the scheduling guarantees: never two
// at once (by the lock, and by the times: each starts after the one
// before ended), and within the token bucket. With a burst of 1 and one
// token a period, the bucket full when the load began (at begin), the
// k-th run (from 0) is decided no earlier than begin + k periods, and
// forked after it was decided. That holds however late the forks come on
// a loaded machine (when a second's tokens fall due for hundreds of
// handlers at once, their forks queue in the exec process, for up to a
// second under the race detector), which a bound on the time between two
// runs would not. A limiter that lets a second run through at once, or
// that refills too fast, breaks it within the first seconds.
func checkRuns(user string, rs []loadRun, begin time.Duration) []string {
	var bad []string
	for i, r := range rs {
		if r.overlap {
			bad = append(bad, fmt.Sprintf("%s: run %d (pid %d) ran while another run of the handler did\n%s", user, i, r.pid, describeRuns(rs)))
		}
		if !r.ended {
			bad = append(bad, fmt.Sprintf("%s: run %d (pid %d) never ended", user, i, r.pid))
		}
		if r.trigger != "event" && r.trigger != "recovery" {
			bad = append(bad, fmt.Sprintf("%s: run %d has IMSE_TRIGGER %q", user, i, r.trigger))
		}
	}
	// Each run's token: the k-th run (from 0) is decided no earlier than
	// begin + k periods, and forked after that. The fork times are
	// whole clock ticks, rounded down.
	byFork := slices.Clone(rs)
	slices.SortFunc(byFork, func(a, b loadRun) int { return int(a.fork - b.fork) })
	for k, r := range byFork {
		if earliest := begin + time.Duration(k)*loadPeriod; r.fork+clockTick < earliest {
			bad = append(bad, fmt.Sprintf("%s: run %d forked %v after the load began: at 1 per %v with a burst of 1, not before %v\n%s",
				user, k, (r.fork-begin).Round(time.Millisecond), loadPeriod, time.Duration(k)*loadPeriod, describeRuns(byFork)))
			break
		}
	}
	return bad
}

// clockTick is the unit of /proc/PID/stat's times: USER_HZ, 100 on Linux.
const clockTick = 10 * time.Millisecond

// bootTime returns CLOCK_BOOTTIME, the clock of a process's start time
// in /proc/PID/stat.
func bootTime() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		panic(err) // Linux has had it since 2.6.39
	}
	return time.Duration(ts.Nano())
}

func describeRuns(rs []loadRun) string {
	var b strings.Builder
	for i, r := range rs {
		fmt.Fprintf(&b, "\trun %d: pid %d forked at %v since boot, %s uid %d, ended %v\n", i, r.pid, r.fork, r.trigger, r.uid, r.ended)
	}
	return b.String()
}

// readRuns reads a user's record; none yet is no runs. A run whose E
// line does not follow its S line at once overlapped another.
func readRuns(t *testing.T, path string) []loadRun {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	// A line being written as the record is read is not whole yet.
	text := string(b[:bytes.LastIndexByte(b, '\n')+1])
	var out []loadRun
	open := -1 // the run whose S line came last without its E line
	for _, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		if line == "" {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 4 {
			t.Fatalf("%s: bad line %q", path, line)
		}
		ticks, err1 := strconv.ParseInt(f[1], 10, 64)
		pid, err2 := strconv.Atoi(f[2])
		if err1 != nil || err2 != nil {
			t.Fatalf("%s: bad line %q", path, line)
		}
		fork := time.Duration(ticks) * clockTick
		switch {
		case f[0] == "S" && len(f) == 5:
			if open >= 0 {
				out[open].overlap = true
			}
			uid, _ := strconv.Atoi(f[4]) // "-": 0
			out = append(out, loadRun{fork: fork, pid: pid, trigger: f[3], uid: uid})
			open = len(out) - 1
		case f[0] == "E" && len(f) == 4:
			i := slices.IndexFunc(out, func(r loadRun) bool { return r.pid == pid && r.fork == fork })
			if i < 0 || out[i].ended {
				t.Fatalf("%s: %q ends no run", path, line)
			}
			out[i].ended = true
			if i != open || f[3] != "0" {
				out[i].overlap = true
			}
			open = -1
		default:
			t.Fatalf("%s: bad line %q", path, line)
		}
	}
	return out
}

// buildLoadCommand builds testdata/loadcmd where every account can run
// it.
func buildLoadCommand(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("no go command to build the test's command: %v", err)
	}
	bin := filepath.Join(commandDir(t), "loadcmd")
	cmd := exec.Command(goBin, "build", "-o", bin, "./testdata/loadcmd")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building testdata/loadcmd: %v\n%s", err, out)
	}
	return bin
}

// commandDir returns a fresh directory for a command the daemon will
// run: the daemon runs only programs whose every directory from / down
// nobody but root (or the account) can write, so not /tmp. As root it is
// made in /run or /var/lib, as daemontest.PrivsepTOML makes the chroot;
// otherwise in the invoking user's home. Every account may enter it.
func commandDir(t *testing.T) string {
	t.Helper()
	parents := []string{"/run", "/var/lib"}
	if !isRoot() {
		home, err := os.UserHomeDir()
		if err != nil {
			t.Skipf("not root and no home directory for the test's command: %v", err)
		}
		parents = []string{home}
	}
	var tried []string
	for _, parent := range parents {
		d, err := os.MkdirTemp(parent, "imserious-test-cmd-")
		if err != nil {
			tried = append(tried, err.Error())
			continue
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	t.Fatalf("no place for the test's command: %s", strings.Join(tried, "; "))
	return ""
}

// loadMemory returns the resident size of the parent and of each child
// named in roles, in KiB.
func loadMemory(t *testing.T, d *loadDaemon, roles []string) map[string]int {
	t.Helper()
	kids := daemontest.Children(t, d.cmd.Process.Pid)
	out := map[string]int{}
	pids := map[string]int{"parent": d.cmd.Process.Pid}
	for _, r := range roles {
		p, ok := kids[r]
		if !ok {
			t.Fatalf("no %s process among %v", r, kids)
		}
		pids[r] = p.Pid
	}
	for r, pid := range pids {
		kb, ok := daemontest.Status(pid, "VmRSS")
		if !ok {
			t.Fatalf("no VmRSS for %s (pid %d)", r, pid)
		}
		out[r] = kb
	}
	return out
}

// loadMemorySlack is how much more than before the load a process may
// hold after it. A Go process keeps the heap the load grew it to until
// its next collection, which an idle process does not start: measured
// here, 6-9 MiB more for the network process, 8-14 MiB for an exec
// process, whose peak is hundreds of commands forked within a few
// milliseconds when a second's tokens fall due. Anything kept per event
// (25,000 events an exec process, of 300 bytes and more each before the
// collector's headroom) goes past it.
const loadMemorySlack = 24 << 20

// loadMemoryReturns checks that every process's resident memory is back
// near what it was before the load.
func loadMemoryReturns(t *testing.T, d *loadDaemon, roles []string, baseline map[string]int) {
	t.Helper()
	now := loadMemory(t, d, roles)
	for r, before := range baseline {
		t.Logf("%s: %d KiB before the load, %d KiB after", r, before, now[r])
		if now[r] > before+loadMemorySlack>>10 {
			t.Errorf("%s holds %d KiB after the load, %d KiB before: more than %d MiB kept", r, now[r], before, loadMemorySlack>>20)
		}
	}
}

// loadDaemon is the daemon under load. It is started like daemontest.Start
// starts it, but its log is read without decoding each line: under the
// race detector, decoding 50,000 lines of JSON is slower than the daemon
// writes them, and the full pipe would hold the daemon back. Only the
// lines the test waits for are decoded.
type loadDaemon struct {
	cmd    *exec.Cmd
	addr   string
	ready  chan string
	eof    chan struct{}
	exited chan struct{}

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced on every line counted
	exits    []string      // the user of every "command exited", in order
	started  int
	accepted int
	notTaken int
	tail     []string
}

func startLoadDaemon(t *testing.T, conf string) *loadDaemon {
	t.Helper()
	d := &loadDaemon{cmd: daemontest.Command(t, "-c", daemontest.WriteConfig(t, conf)), ready: make(chan string, 1),
		eof: make(chan struct{}), exited: make(chan struct{}), changed: make(chan struct{})}
	out, err := d.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	d.cmd.Stderr = d.cmd.Stdout
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go d.read(out)
	go func() {
		<-d.eof // Wait closes the pipe: only once all of it was read
		d.cmd.Wait()
		close(d.exited)
	}()
	var kids map[int]string
	t.Cleanup(func() {
		daemontest.StopTree(t, "imserious", d.cmd, d.exited, kids, daemontest.StopLimit)
		if t.Failed() {
			d.mu.Lock()
			t.Logf("the daemon's last lines:\n%s", strings.Join(d.tail, "\n"))
			d.mu.Unlock()
		}
	})
	select {
	case d.addr = <-d.ready:
	case <-d.eof:
		t.Fatal("the daemon exited before listening")
	case <-time.After(daemontest.WaitLimit):
		t.Fatalf("the daemon not listening within %v", daemontest.WaitLimit)
	}
	kids = daemontest.Descendants(d.cmd.Process.Pid)
	return d
}

func (d *loadDaemon) read(r io.Reader) {
	defer close(d.eof)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var l struct {
			Msg  string `json:"msg"`
			User string `json:"user"`
			Addr string `json:"addr"`
		}
		d.mu.Lock()
		if len(d.tail) == 100 {
			d.tail = d.tail[1:]
		}
		d.tail = append(d.tail, string(line))
		counted := true
		switch {
		case bytes.Contains(line, []byte(`"msg":"event accepted"`)):
			d.accepted++
		case bytes.Contains(line, []byte(`"msg":"command started"`)):
			d.started++
		case bytes.Contains(line, []byte(`"msg":"command exited"`)):
			json.Unmarshal(line, &l)
			d.exits = append(d.exits, l.User)
		case bytes.Contains(line, []byte(`"msg":"exec process not taking events`)):
			d.notTaken++
		case bytes.Contains(line, []byte(`"msg":"listening"`)):
			if json.Unmarshal(line, &l) == nil && l.Addr != "" {
				select {
				case d.ready <- l.Addr:
				default:
				}
			}
			counted = false
		default:
			counted = false
		}
		if counted {
			close(d.changed)
			d.changed = make(chan struct{})
		}
		d.mu.Unlock()
	}
}

// wait waits until cond, called with d.mu held, is true.
func (d *loadDaemon) wait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(daemontest.WaitLimit)
	defer deadline.Stop()
	for {
		d.mu.Lock()
		ok, changed := cond(), d.changed
		d.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-changed:
		case <-d.eof:
			t.Fatalf("the daemon's output ended while waiting for %s", what)
		case <-deadline.C:
			t.Fatalf("no %s within %v", what, daemontest.WaitLimit)
		}
	}
}

func (d *loadDaemon) exitCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.exits)
}

// exitsAfter waits for "command exited" lines after the first n and
// returns their users, and how many there are now.
func (d *loadDaemon) exitsAfter(t *testing.T, n int, what string) ([]string, int) {
	t.Helper()
	var users []string
	d.wait(t, what, func() bool {
		users = append([]string(nil), d.exits[n:]...)
		return len(users) > 0
	})
	return users, n + len(users)
}

// waitIdle waits until every command started has exited.
func (d *loadDaemon) waitIdle(t *testing.T) {
	t.Helper()
	d.wait(t, "every command to end", func() bool { return d.started == len(d.exits) })
}

// counts returns the "event accepted" lines, and how often an exec
// process fell behind.
func (d *loadDaemon) counts() (accepted, notTaken int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.accepted, d.notTaken
}

// The checks of the records fail where they must: two runs whose lines
// interleave, a run that saw the lock held, one that never ended, and
// runs closer than the token bucket allows.
func TestLoadRecordChecks(t *testing.T) {
	dir := t.TempDir()
	records := func(lines ...string) []loadRun {
		t.Helper()
		p := filepath.Join(dir, "u")
		if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return readRuns(t, p)
	}
	begin := 1000 * time.Second // 100000 ticks
	for _, tc := range []struct {
		name  string
		lines []string
		want  string // in the first problem; "" for none
	}{
		{"good", []string{"S 100001 7 event 1", "E 100001 7 0", "S 100100 8 event 9", "E 100100 8 0", "S 100205 9 recovery -", "E 100205 9 0"}, ""},
		{"interleaved", []string{"S 100001 7 event 1", "S 100100 8 event 9", "E 100001 7 0", "E 100100 8 0"}, "ran while another run"},
		{"lock held", []string{"S 100001 7 event 1", "E 100001 7 0", "S 100100 8 event 9", "E 100100 8 1"}, "ran while another run"},
		{"never ended", []string{"S 100001 7 event 1"}, "never ended"},
		{"second token too soon", []string{"S 100001 7 event 1", "E 100001 7 0", "S 100050 8 event 9", "E 100050 8 0"}, "not before 1s"},
		{"refill too fast", []string{"S 100001 7 event 1", "E 100001 7 0", "S 100100 8 event 9", "E 100100 8 0", "S 100150 9 event 12", "E 100150 9 0"}, "not before 2s"},
		{"periodic", []string{"S 100001 7 periodic -", "E 100001 7 0"}, "IMSE_TRIGGER"},
	} {
		bad := checkRuns("u", records(tc.lines...), begin)
		switch {
		case tc.want == "" && len(bad) > 0:
			t.Errorf("%s: %v", tc.name, bad)
		case tc.want != "" && (len(bad) == 0 || !strings.Contains(bad[0], tc.want)):
			t.Errorf("%s: %q, want %q", tc.name, bad, tc.want)
		}
	}
}
