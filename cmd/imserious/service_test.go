//go:build linux

package main

// The systemd unit's capability bounding set, proven on the real binary:
// with exactly the set of etc/systemd/imserious.service the daemon checks
// its configuration, serves, runs commands as two accounts and stops, and
// with any one capability of the set removed it fails the way that
// capability prevents. So the test fails when the unit's set is too small,
// and when it grants a capability no case shows needed.
//
// The set is applied as systemd applies CapabilityBoundingSet= (and as
// `setpriv --bounding-set -all,+... --inh-caps -all` does): the bounding
// set of the process that execs the daemon is reduced, its inheritable and
// ambient sets are empty, and root's exec leaves the daemon the bounding
// set as its permitted and effective sets. That process is the test's own
// thread, locked for the subtest and never unlocked (Go ends the thread
// with the goroutine), so daemontest starts and watches the daemon as in
// every other test, and the test keeps the effective capabilities to
// clean up what a crippled daemon could not. setpriv turns the unit's
// names into the mask, and each daemon's /proc status is checked against
// it.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imserious/imserious/internal/daemontest"
)

// unitFile is the system unit, from the package directory.
const unitFile = "../../etc/systemd/imserious.service"

// capNeeds says why the daemon needs each capability the unit may grant,
// and how a daemon without it fails: at start, with an error matching
// startErr, or (startErr "") by leaving a stopped child of another uid
// alive when it stops.
var capNeeds = map[string]struct{ why, startErr string }{
	"CAP_SETUID":           {"children change to their accounts (setresuid)", `: setresuid \d+: operation not permitted`},
	"CAP_SETGID":           {"children take their accounts' groups (setgroups, setresgid)", `: setgroups \[[\d ]+\]: operation not permitted`},
	"CAP_SYS_CHROOT":       {"the network process enters its chroot", `: chroot\("\."\): operation not permitted`},
	"CAP_NET_BIND_SERVICE": {"listening on a port below 1024", `^listen 127\.0\.0\.1:\d+: .*bind: permission denied`},
	"CAP_DAC_READ_SEARCH":  {"checking a command in a directory only its account can search", `/private/hook: permission denied`},
	"CAP_KILL":             {"killing a child of another uid that does not stop", ""},
}

func TestServiceCapabilities(t *testing.T) {
	unit := unitCapabilities(t)
	for _, c := range unit {
		if _, ok := capNeeds[c]; !ok {
			t.Errorf("%s grants %s, which no case here shows the daemon needs: remove it, or add the case that needs it", unitFile, c)
		}
	}
	for c, n := range capNeeds {
		if !slices.Contains(unit, c) {
			t.Errorf("%s lacks %s, needed for %s", unitFile, c, n.why)
		}
	}
	if !isRoot() {
		t.Skip("needs root: the daemon starts as root with the unit's capabilities (CI runs this as root)")
	}
	full := boundingMask(t, unit)
	if have := selfCaps(t, "CapBnd"); have&full != full {
		t.Fatalf("this test runs without some of the unit's capabilities (bounding set %#x, unit %#x): run it as a full root", have, full)
	}
	s := newService(t)

	t.Run("unit's set", func(t *testing.T) {
		restrictThread(t, full)
		s.serves(t, full)
	})
	t.Run("unit's set, stopped child", func(t *testing.T) {
		restrictThread(t, full)
		s.stopsStoppedChild(t, true)
	})
	for _, c := range unit {
		need, ok := capNeeds[c]
		if !ok {
			continue
		}
		t.Run("without "+c, func(t *testing.T) {
			if c == "CAP_NET_BIND_SERVICE" && s.port >= s.unprivStart {
				t.Skipf("port %d is unprivileged here (net.ipv4.ip_unprivileged_port_start = %d): nothing needs CAP_NET_BIND_SERVICE", s.port, s.unprivStart)
			}
			restrictThread(t, boundingMask(t, slices.DeleteFunc(slices.Clone(unit), func(x string) bool { return x == c })))
			if need.startErr == "" {
				s.stopsStoppedChild(t, false)
				return
			}
			s.startFails(t, need.startErr)
		})
	}
}

// unitCapabilities returns the capabilities the unit's
// CapabilityBoundingSet= lines grant, merged as systemd merges them (an
// empty assignment resets the list).
func unitCapabilities(t *testing.T) []string {
	t.Helper()
	f, err := os.Open(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var caps []string
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
			continue
		case line[0] == '[':
			section = line
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || section != "[Service]" || strings.TrimSpace(k) != "CapabilityBoundingSet" {
			continue
		}
		v = strings.TrimSpace(v)
		switch {
		case v == "":
			caps = nil
		case strings.HasPrefix(v, "~") || strings.HasSuffix(v, `\`):
			t.Fatalf("%s:%d: CapabilityBoundingSet=%s: this test reads a plain list of capabilities on one line", unitFile, n, v)
		}
		for _, c := range strings.Fields(v) {
			if c = strings.ToUpper(c); !slices.Contains(caps, c) {
				caps = append(caps, c)
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(caps) == 0 {
		t.Fatalf("%s: no CapabilityBoundingSet= in [Service]", unitFile)
	}
	slices.Sort(caps)
	return caps
}

// boundingMask returns the bounding set, as a mask, that
// `setpriv --bounding-set -all,+... --inh-caps -all` gives a program it
// starts for these capabilities; and checks that root's exec there yields
// the same permitted set, as the daemon will get.
func boundingMask(t *testing.T, caps []string) uint64 {
	t.Helper()
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatalf("setpriv (util-linux) is needed to read the unit's capabilities: %v", err)
	}
	spec := "-all"
	for _, c := range caps {
		spec += ",+" + strings.ToLower(strings.TrimPrefix(c, "CAP_"))
	}
	out, err := exec.Command(setpriv, "--bounding-set", spec, "--inh-caps", "-all", "--", "/bin/cat", "/proc/self/status").CombinedOutput()
	if err != nil {
		t.Fatalf("setpriv --bounding-set %s: %v\n%s", spec, err, out)
	}
	st := capFields(t, string(out))
	if st["CapPrm"] != st["CapBnd"] || st["CapInh"] != 0 {
		t.Fatalf("setpriv --bounding-set %s: root's exec got %v, want the bounding set as permitted and nothing inheritable", spec, st)
	}
	return st["CapBnd"]
}

// capFields reads the Cap* lines of a /proc status text.
func capFields(t *testing.T, status string) map[string]uint64 {
	t.Helper()
	m := map[string]uint64{}
	for line := range strings.Lines(status) {
		k, v, _ := strings.Cut(line, ":")
		if !strings.HasPrefix(k, "Cap") {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		if err != nil {
			t.Fatalf("status line %q: %v", line, err)
		}
		m[k] = n
	}
	if len(m) != 5 {
		t.Fatalf("no CapInh, CapPrm, CapEff, CapBnd and CapAmb in:\n%s", status)
	}
	return m
}

// procCaps returns the Cap* lines of process pid ("self", "thread-self").
func procCaps(t *testing.T, pid string) map[string]uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		t.Fatal(err)
	}
	return capFields(t, string(b))
}

func selfCaps(t *testing.T, k string) uint64 { return procCaps(t, "thread-self")[k] }

// restrictThread locks the calling goroutine, the subtest's, to its
// thread for good and reduces that thread's bounding set to mask, with
// nothing inheritable or ambient: what the thread starts gets what a
// service with CapabilityBoundingSet= gets. Its own effective set stays
// whole, and other threads are untouched (Go starts its new threads from
// a clean template thread once one is locked).
func restrictThread(t *testing.T, mask uint64) {
	t.Helper()
	runtime.LockOSThread() // never unlocked: the thread ends with the subtest
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		t.Fatal(err)
	}
	last, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	for c := 0; c <= last; c++ {
		if mask&(1<<c) != 0 {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
			t.Fatalf("prctl PR_CAPBSET_DROP %d: %v", c, err)
		}
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		t.Fatal(err)
	}
	data[0].Inheritable, data[1].Inheritable = 0, 0
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		t.Fatal(err)
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	if got := procCaps(t, "thread-self"); got["CapBnd"] != mask || got["CapInh"] != 0 || got["CapAmb"] != 0 {
		t.Fatalf("thread's capabilities %v after restricting to %#x", got, mask)
	}
}

// service is the configuration every case starts: privilege separation
// with two accounts, a port below 1024, and bob's command in a directory
// only bob can search.
type service struct {
	conf        string
	port        int
	unprivStart int // net.ipv4.ip_unprivileged_port_start
	alice, bob  string
	aliceUID    int
	bobUID      int
	hook        string // bob's command
}

func newService(t *testing.T) *service {
	t.Helper()
	a, b := daemontest.Account(t, "imse_alice"), daemontest.Account(t, "imse_bob")
	s := &service{alice: a.Name, aliceUID: a.UID, bob: b.Name, bobUID: b.UID}
	if v, err := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start"); err == nil {
		s.unprivStart, _ = strconv.Atoi(strings.TrimSpace(string(v)))
	} else {
		s.unprivStart = 1024
	}
	for p := 1023; p >= 600 && s.port == 0; p-- {
		if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p)); err == nil {
			l.Close()
			s.port = p
		}
	}
	if s.port == 0 {
		t.Fatal("no free port between 600 and 1023 on 127.0.0.1")
	}
	s.hook = privateHook(t, b.UID, b.GID)
	// No control socket: the default one is shared by every daemon
	// started as root.
	s.conf = fmt.Sprintf("listen = \"127.0.0.1:%d\"\ntimeout = \"1s\"\n%s%s[control]\nsocket = \"\"\n"+
		"[[handler]]\nuser = %q\ncommand = [\"/bin/sh\", \"-c\", \"echo \\\"alice uid=$(id -u)\\\"\"]\n"+
		"[[handler]]\nuser = %q\ncommand = %q\n",
		s.port, daemontest.LogTOML, daemontest.PrivsepTOML(t), s.alice, s.bob, s.hook)
	return s
}

// privateHook writes a command owned by uid in a directory of its own,
// mode 0700, below a root-only one (as the daemon's ownership rule for
// commands wants), and returns its path. Root can stat it only with
// CAP_DAC_READ_SEARCH (or CAP_DAC_OVERRIDE), as in a 0700 home.
func privateHook(t *testing.T, uid, gid int) string {
	t.Helper()
	var base string
	for _, parent := range []string{"/run", "/var/lib"} {
		if d, err := os.MkdirTemp(parent, "imserious-test-"); err == nil {
			base = d
			break
		}
	}
	if base == "" {
		t.Fatal("no root-only place for the command in a private directory")
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	dir := filepath.Join(base, "private")
	hook := filepath.Join(dir, "hook")
	for _, err := range []error{
		os.Chmod(base, 0o755),
		os.Mkdir(dir, 0o700),
		os.WriteFile(hook, []byte("#!/bin/sh\necho \"hook uid=$(id -u)\"\n"), 0o755),
		os.Chmod(hook, 0o755),
		os.Chown(hook, uid, gid),
		os.Chmod(dir, 0o700),
		os.Chown(dir, uid, gid),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	return hook
}

// serves runs what ExecStartPre= and ExecStart= run, with the unit's set:
// -n passes, the daemon has exactly that set and its children none, the
// children's command lines differ from the parent's (rc.subr's pkill -xf
// reaches the parent alone), both accounts' commands run as them, and
// SIGTERM stops everything with status 0.
func (s *service) serves(t *testing.T, mask uint64) {
	var out bytes.Buffer
	check := daemontest.Command(t, "-n", "-c", daemontest.WriteConfig(t, s.conf))
	check.Stdout, check.Stderr = &out, &out
	if err := check.Run(); err != nil || !strings.Contains(out.String(), "configuration OK") {
		t.Fatalf("imserious -n with the unit's capabilities: %v\n%s", err, out.String())
	}

	d := daemontest.Start(t, s.conf, daemontest.Options{Name: "with the unit's capabilities"})
	if got := procCaps(t, strconv.Itoa(d.Pid())); got["CapBnd"] != mask || got["CapPrm"] != mask || got["CapEff"] != mask || got["CapInh"] != 0 || got["CapAmb"] != 0 {
		t.Errorf("parent's capabilities %v, want bounding, permitted and effective %#x and nothing else", got, mask)
	}
	kids := d.Children()
	roles := []string{"net", "exec:" + s.alice, "exec:" + s.bob}
	parent, _ := daemontest.ReadProc(d.Pid())
	pexp := strings.Join(parent.Args, " ")
	for _, role := range roles {
		k, ok := kids[role]
		if !ok {
			t.Fatalf("no %s child among %v", role, kids)
		}
		if got := procCaps(t, strconv.Itoa(k.Pid)); got["CapPrm"] != 0 || got["CapEff"] != 0 {
			t.Errorf("%s kept capabilities after changing uid: %v", role, got)
		}
		if line := strings.Join(k.Args, " "); line == pexp {
			t.Errorf("%s's command line %q is the parent's: pkill -xf would signal it too", role, line)
		}
	}
	// What OpenBSD's rc.subr does with pexp="${daemon} ${daemon_flags}"
	// (the same regular expression, unquoted), here with procps' pgrep.
	pg, err := exec.Command("pgrep", "-x", "-f", pexp).Output()
	if err != nil {
		t.Errorf("pgrep -xf %q: %v (procps installed?)", pexp, err)
	} else if got := strings.Fields(string(pg)); !slices.Equal(got, []string{strconv.Itoa(d.Pid())}) {
		t.Errorf("pgrep -xf %q found %v, want the parent %d alone", pexp, got, d.Pid())
	}

	url := fmt.Sprintf("http://127.0.0.1:%d/notify", s.port)
	for _, u := range []string{s.alice, s.bob} {
		put(t, url, fmt.Sprintf(`{"user":%q,"event":"MessageNew","folder":"INBOX"}`, u))
	}
	for user, want := range map[string]string{s.alice: fmt.Sprintf("alice uid=%d", s.aliceUID), s.bob: fmt.Sprintf("hook uid=%d", s.bobUID)} {
		d.WaitFor(fmt.Sprintf("%s's command printing %q", user, want), func(l daemontest.Line) bool {
			return l.Str("msg") == "command output" && l.Str("user") == user && l.Str("line") == want
		})
	}
	if code := d.Stop(); code != 0 {
		t.Errorf("exit status %d after SIGTERM, want 0", code)
	}
	for role, k := range kids {
		if !waitGone(t, k.Pid, 5*time.Second) {
			t.Errorf("%s (pid %d) still running after the daemon exited", role, k.Pid)
		}
	}
}

// stopsStoppedChild stops the daemon while its network process, of
// another uid, is stopped (SIGSTOP): the parent gives up waiting and
// kills it, which takes CAP_KILL. killed says whether it should manage.
func (s *service) stopsStoppedChild(t *testing.T, killed bool) {
	d := daemontest.Start(t, s.conf, daemontest.Options{Name: "with a stopped network process"})
	netp, ok := d.Children()["net"]
	if !ok {
		t.Fatalf("no network process among %v", d.Children())
	}
	if err := syscall.Kill(netp.Pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitStopped(t, netp.Pid)
	from := d.Mark()
	d.Cmd.Process.Signal(syscall.SIGTERM)
	d.WaitFrom(t, from, "the parent giving up on the stopped network process", func(l daemontest.Line) bool {
		return l.Str("msg") == "child did not stop in time, killing it" && l.Str("child") == "net"
	})
	gone := waitGone(t, netp.Pid, 3*time.Second)
	switch {
	case killed && !gone:
		t.Errorf("the stopped network process (pid %d) still runs 3s after the parent killed it", netp.Pid)
	case !killed && gone:
		t.Errorf("without CAP_KILL the parent still killed the network process of another uid: the unit grants CAP_KILL for nothing")
	}
	if !gone {
		// What the daemon could not do, the test still can; until then
		// the parent waits for it (and it holds the log open).
		syscall.Kill(netp.Pid, syscall.SIGKILL)
	}
	if code := d.WaitExit("SIGTERM"); code != 0 {
		t.Errorf("exit status %d after SIGTERM, want 0", code)
	}
}

// waitStopped waits until every thread of process pid is stopped: kill
// returns before a SIGSTOP has reached them all, and a thread still
// running would answer the parent's stop.
func waitStopped(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(daemontest.WaitLimit)
	for {
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil {
			t.Fatal(err)
		}
		stopped := len(tasks) > 0
		for _, task := range tasks {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
			st, ok := daemontest.ParseStat(string(b))
			if err == nil && (!ok || st.State != "T") {
				stopped = false
			}
		}
		if stopped {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d not stopped %v after SIGSTOP", pid, daemontest.WaitLimit)
		}
		time.Sleep(time.Millisecond)
	}
}

// startFails starts the daemon and wants it to exit with status 1, before
// it serves, with a message matching the expression want: the value of a
// key of one of its JSON lines, or a line of another form.
//
// Up to three starts: a child that dies at start-up with messages from the
// parent still unread makes the parent's next read fail with ECONNRESET,
// and the child's last words, queued behind it, can then go unlogged (the
// line says only "exit status 1"). Every start must fail; one must say why.
func (s *service) startFails(t *testing.T, want string) {
	re := regexp.MustCompile(want)
	path := daemontest.WriteConfig(t, s.conf)
	var outs []string
	for range 3 {
		code, out := runToFailure(t, path)
		if code != 1 {
			t.Fatalf("exit status %d, want 1:\n%s", code, out)
		}
		for line := range strings.Lines(out) {
			var l daemontest.Line
			if json.Unmarshal([]byte(line), &l) != nil {
				// Errors in the configuration come before the JSON logger.
				l = daemontest.Line{"raw": line}
			}
			for _, v := range l {
				if s, ok := v.(string); ok && re.MatchString(s) {
					return
				}
			}
		}
		outs = append(outs, out)
	}
	t.Errorf("no message matching %q in 3 starts that failed:\n%s", want, strings.Join(outs, "\n"))
}

// runToFailure runs the daemon on the configuration file until it exits
// on its own, and returns its exit status and output.
func runToFailure(t *testing.T, path string) (int, string) {
	t.Helper()
	cmd := daemontest.Command(t, "-c", path)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(daemontest.WaitLimit):
		daemontest.StopTree(t, "imserious", cmd, done, nil, time.Second)
		t.Fatalf("still running after %v, want it to fail at start:\n%s", daemontest.WaitLimit, out.String())
	}
	return cmd.ProcessState.ExitCode(), out.String()
}

// put sends one notification and wants 200.
func put(t *testing.T, url, body string) {
	t.Helper()
	req, err := http.NewRequest("PUT", url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("PUT %s: %s, want 200", url, resp.Status)
	}
}
