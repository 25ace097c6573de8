package main

// End-to-end tests: the real binary, started as it is in production, on a
// free loopback port, spoken to over real HTTP. As root (always in CI) the
// privilege drop is tested for real; otherwise everything runs as the
// invoking user, as the daemon itself does.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var binPath string

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	// Built into a 0755 directory: as root, nothing else needs to reach
	// it (children re-exec /proc/self/exe before dropping), but scripts
	// and outputs beside it do.
	dir, err := os.MkdirTemp("", "imserious-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	binPath = filepath.Join(dir, "imserious")
	// go test puts its own toolchain first in PATH for the test binary.
	goBin, err := exec.LookPath("go")
	if err != nil {
		fmt.Fprintln(os.Stderr, "no go command in PATH:", err)
		return 1
	}
	build := exec.Command(goBin, "build", "-o", binPath, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

const canary = "IMSERIOUS_TEST_CANARY"

// instance is one running imserious parent and the lines it logged.
type instance struct {
	t     *testing.T
	cmd   *exec.Cmd
	addr  string
	mu    sync.Mutex
	lines []map[string]any
	raw   []string
	more  chan struct{} // closed and replaced on every new line
	eof   chan struct{}
	exit  chan error
}

func isRoot() bool { return os.Geteuid() == 0 }

// publicDir is a directory every uid can write: commands run as other
// accounts write their findings here. t.TempDir is 0700 root-owned, which
// the test accounts could not enter.
func publicDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "imserious-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	if err := os.Chmod(d, 0o1777); err != nil {
		t.Fatal(err)
	}
	return d
}

// account returns the account commands run as: a test account as root
// (created when missing), the invoking user otherwise.
func account(t *testing.T, name string) (user string, uid int) {
	t.Helper()
	if !isRoot() {
		u := os.Getenv("USER")
		if u == "" {
			u = "nobody"
		}
		return u, os.Getuid()
	}
	ensureAccount(t, name)
	out, err := exec.Command("id", "-u", name).Output()
	if err != nil {
		t.Fatalf("id -u %s: %v", name, err)
	}
	uid, _ = strconv.Atoi(strings.TrimSpace(string(out)))
	return name, uid
}

func ensureAccount(t *testing.T, name string) {
	t.Helper()
	if exec.Command("id", name).Run() == nil {
		return
	}
	args := []string{"-m", "-s", "/bin/sh", name}
	if name == "_imserious" {
		args = []string{"-r", "-M", "-d", "/var/empty", "-s", "/usr/sbin/nologin", name}
	}
	if out, err := exec.Command("useradd", args...).CombinedOutput(); err != nil {
		t.Fatalf("useradd %s: %v\n%s", name, err, out)
	}
}

// privsepTOML confines the network process to a fresh empty directory
// instead of the system's /var/empty.
func privsepTOML(t *testing.T) string {
	if !isRoot() {
		return ""
	}
	ensureAccount(t, "_imserious")
	d := filepath.Join(t.TempDir(), "empty")
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("[privsep]\nuser = %q\nchroot = %q\n", "_imserious", d)
}

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "imserious.toml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const logTOML = "[log]\nformat = \"json\"\nmax_level = \"debug\"\nlevel = true\ntarget = true\n"

func start(t *testing.T, cfgText string) *instance {
	t.Helper()
	path := writeConfig(t, cfgText)
	d := &instance{t: t, more: make(chan struct{}), eof: make(chan struct{}), exit: make(chan error, 1)}
	d.cmd = exec.Command(binPath, "-c", path)
	// The canary must never reach a command.
	d.cmd.Env = []string{"PATH=/usr/bin:/bin", canary + "=leaked"}
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
		<-d.eof
		d.exit <- d.cmd.Wait()
	}()
	t.Cleanup(func() {
		if d.cmd.ProcessState == nil {
			d.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-d.exit:
			case <-time.After(30 * time.Second):
				d.cmd.Process.Kill()
			}
		}
		if t.Failed() {
			d.mu.Lock()
			t.Logf("daemon output:\n%s", strings.Join(d.raw, "\n"))
			d.mu.Unlock()
		}
	})
	l := d.waitFor(func(m map[string]any) bool { return m["msg"] == "listening" })
	d.addr, _ = l["addr"].(string)
	if d.addr == "" {
		t.Fatalf("no address in %v", l)
	}
	return d
}

func (d *instance) read(r io.Reader) {
	defer close(d.eof)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil {
			m = map[string]any{"raw": line}
		}
		d.mu.Lock()
		d.raw = append(d.raw, line)
		d.lines = append(d.lines, m)
		close(d.more)
		d.more = make(chan struct{})
		d.mu.Unlock()
	}
}

// waitFor returns the first logged line that matches, waiting for new
// lines as they come; it fails the test when the daemon's output ends or
// a generous deadline passes.
func (d *instance) waitFor(match func(map[string]any) bool) map[string]any {
	d.t.Helper()
	deadline := time.After(30 * time.Second)
	seen := 0
	for {
		d.mu.Lock()
		for ; seen < len(d.lines); seen++ {
			if match(d.lines[seen]) {
				m := d.lines[seen]
				d.mu.Unlock()
				return m
			}
		}
		more := d.more
		d.mu.Unlock()
		select {
		case <-more:
		case <-d.eof:
			d.mu.Lock()
			n := len(d.lines)
			d.mu.Unlock()
			if seen == n {
				d.t.Fatalf("daemon output ended before the expected line")
			}
		case <-deadline:
			d.t.Fatalf("expected log line did not come within 30s")
		}
	}
}

func (d *instance) count(match func(map[string]any) bool) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, m := range d.lines {
		if match(m) {
			n++
		}
	}
	return n
}

func (d *instance) url() string { return "http://" + d.addr + "/notify" }

// stop sends SIGTERM and returns the exit status.
func (d *instance) stop() int {
	d.t.Helper()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exit:
	case <-time.After(60 * time.Second):
		d.cmd.Process.Kill()
		d.t.Fatal("daemon did not stop within 60s of SIGTERM")
	}
	return d.cmd.ProcessState.ExitCode()
}

func notify(t *testing.T, url, body string, mod func(*http.Request)) *http.Response {
	t.Helper()
	req, err := http.NewRequest("PUT", url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	if mod != nil {
		mod(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// children lists the processes whose parent is pid, by role argument.
func children(t *testing.T, pid int) map[string]procInfo {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]procInfo{}
	for _, e := range ents {
		cpid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		pi, ok := readProc(cpid)
		if !ok || pi.ppid != pid {
			continue
		}
		if len(pi.args) == 3 && pi.args[1] == "-R" {
			out[pi.args[2]] = pi
		}
	}
	return out
}

type procInfo struct {
	pid, ppid int
	args      []string
	uid, gid  []string // real, effective, saved, fs
	groups    []string
}

func readProc(pid int) (procInfo, bool) {
	pi := procInfo{pid: pid}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return pi, false
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, _ := strings.Cut(line, ":")
		switch k {
		case "PPid":
			pi.ppid, _ = strconv.Atoi(strings.TrimSpace(v))
		case "Uid":
			pi.uid = strings.Fields(v)
		case "Gid":
			pi.gid = strings.Fields(v)
		case "Groups":
			pi.groups = strings.Fields(v)
		}
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	pi.args = strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	return pi, true
}

const body1 = `{"user":"%s","event":"messageNew","folder":"INBOX","imap-uidvalidity":1795613200,"imap-uid":%d,"from":"=?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?= <juergen@example.org>","subject":"=?UTF-8?B?R3LDvMOfZSBhdXMgTcO8bmNoZW4g4pyT?=","snippet":"hi","unseen":3}`

// output returns the lines handler h's commands wrote to stdout, as the
// exec process logged them.
func (d *instance) output(h int) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for _, m := range d.lines {
		if m["msg"] == "command output" && m["handler"] == float64(h) && m["stream"] == "stdout" {
			out = append(out, m["line"].(string))
		}
	}
	return out
}

func TestCommandEnvironmentAndPrivileges(t *testing.T) {
	user, uid := account(t, "imse_alice")
	// Three handlers for one event, each a plain program (no shell, which
	// opens descriptors of its own): what they print reaches the log.
	cfg := fmt.Sprintf("listen = \"127.0.0.1:0\"\n%s%s", logTOML, privsepTOML(t))
	for _, cmd := range []string{`["/usr/bin/env"]`, `["/bin/ls", "-l", "/proc/self/fd"]`, `"id"`} {
		cfg += fmt.Sprintf("[[handler]]\nuser = %q\ncommand = %s\nenv = { DISPLAY = \":0\" }\n", user, cmd)
	}
	d := start(t, cfg)

	// The processes and their ids, while the daemon runs.
	kids := children(t, d.cmd.Process.Pid)
	netp, ok := kids["net"]
	if !ok {
		t.Fatalf("no net child among %v", kids)
	}
	execp, ok := kids["exec:"+user]
	if !ok {
		t.Fatalf("no exec:%s child among %v", user, kids)
	}
	if isRoot() {
		_, netUID := account(t, "_imserious")
		for _, id := range netp.uid {
			if id != strconv.Itoa(netUID) {
				t.Errorf("net uids %v, want all %d", netp.uid, netUID)
			}
		}
		if len(netp.groups) > 1 {
			t.Errorf("net has supplementary groups %v", netp.groups)
		}
		root, err := os.Readlink(fmt.Sprintf("/proc/%d/root", netp.pid))
		if err != nil || root == "/" {
			t.Errorf("net process root is %q (%v), want its chroot", root, err)
		}
		for _, id := range execp.uid {
			if id != strconv.Itoa(uid) {
				t.Errorf("exec uids %v, want all %d", execp.uid, uid)
			}
		}
	}

	resp := notify(t, d.url(), fmt.Sprintf(body1, user, 7), nil)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	for h := 0; h < 3; h++ {
		d.waitFor(func(m map[string]any) bool { return m["msg"] == "command exited" && m["handler"] == float64(h) })
	}

	// Descriptors: 0-2, and the one ls opened to read the directory.
	var fds []string
	for _, line := range d.output(1) {
		f := strings.Fields(line)
		if len(f) < 9 || f[len(f)-2] != "->" {
			continue
		}
		if fd := f[len(f)-3]; !strings.HasPrefix(f[len(f)-1], "/proc/") {
			fds = append(fds, fd)
		}
	}
	if !slices.Equal(fds, []string{"0", "1", "2"}) {
		t.Errorf("command has fds %v, want exactly 0 1 2:\n%s", fds, strings.Join(d.output(1), "\n"))
	}
	if id := strings.Join(d.output(2), ""); !strings.HasPrefix(id, fmt.Sprintf("uid=%d(", uid)) {
		t.Errorf("command runs as %q, want uid %d", id, uid)
	}

	env := map[string]string{}
	for _, line := range d.output(0) {
		k, v, _ := strings.Cut(line, "=")
		env[k] = v
	}
	if _, leaked := env[canary]; leaked {
		t.Errorf("daemon environment leaked into the command: %s", canary)
	}
	want := []string{"DISPLAY", "HOME", "IMSE_COUNT", "IMSE_EVENT", "IMSE_FOLDER", "IMSE_FROM", "IMSE_FROM_RAW",
		"IMSE_REMOTE_IP", "IMSE_REMOTE_PORT", "IMSE_SNIPPET", "IMSE_SUBJECT", "IMSE_SUBJECT_RAW", "IMSE_TRIGGER",
		"IMSE_UID", "IMSE_UIDVALIDITY", "IMSE_UNSEEN", "IMSE_USER", "LOGNAME", "PATH", "SHELL", "USER"}
	got := slices.Sorted(maps.Keys(env))
	if !slices.Equal(got, want) {
		t.Errorf("command environment names\n got %v\nwant %v", got, want)
	}
	for k, v := range map[string]string{
		"IMSE_USER": user, "IMSE_EVENT": "MessageNew", "IMSE_TRIGGER": "event", "IMSE_COUNT": "1",
		"IMSE_UID": "7", "IMSE_UIDVALIDITY": "1795613200", "IMSE_UNSEEN": "3", "IMSE_FOLDER": "INBOX",
		"IMSE_FROM": "Jürgen Müller <juergen@example.org>", "IMSE_SUBJECT": "Grüße aus München ✓",
		"IMSE_REMOTE_IP": "127.0.0.1", "DISPLAY": ":0", "USER": user, "LOGNAME": user,
		"PATH": "/usr/bin:/bin:/usr/sbin:/sbin:/usr/local/bin:/usr/local/sbin",
	} {
		if env[k] != v {
			t.Errorf("%s=%q, want %q", k, env[k], v)
		}
	}

	if code := d.stop(); code != 0 {
		t.Errorf("exit status %d after SIGTERM, want 0", code)
	}
	for role, pi := range kids {
		if _, alive := readProc(pi.pid); alive {
			t.Errorf("child %s (pid %d) still exists after the daemon exited", role, pi.pid)
		}
	}
}

func TestHTTPAnswers(t *testing.T) {
	user, _ := account(t, "imse_alice")
	cfg := fmt.Sprintf("listen = \"127.0.0.1:0\"\nallow = [\"127.0.0.1\"]\n%s%s\n[auth]\nuser = \"dove\"\npass = \"s3cr:et\"\n[[handler]]\nuser = %q\ncommand = \"/bin/true\"\n",
		logTOML, privsepTOML(t), user)
	d := start(t, cfg)
	good := fmt.Sprintf(body1, user, 1)
	auth := func(r *http.Request) { r.SetBasicAuth("dove", "s3cr:et") }
	cases := []struct {
		name   string
		url    string
		body   string
		mod    func(*http.Request)
		status int
	}{
		{"valid", d.url(), good, auth, 200},
		{"valid with query", d.url() + "?x=1", good, auth, 200},
		{"no credentials", d.url(), good, nil, 401},
		{"wrong password", d.url(), good, func(r *http.Request) { r.SetBasicAuth("dove", "nope") }, 401},
		{"wrong path, no credentials", "http://" + d.addr + "/other", good, nil, 401},
		{"wrong path", "http://" + d.addr + "/other", good, auth, 404},
		{"GET", d.url(), good, func(r *http.Request) { auth(r); r.Method = "GET" }, 405},
		{"POST", d.url(), good, func(r *http.Request) { auth(r); r.Method = "POST" }, 200},
		{"text/plain", d.url(), good, func(r *http.Request) { auth(r); r.Header.Set("Content-Type", "text/plain") }, 415},
		{"+json", d.url(), good, func(r *http.Request) { auth(r); r.Header.Set("Content-Type", "application/vnd.x+json") }, 200},
		{"too big", d.url(), `{"user":"` + strings.Repeat("a", 70<<10) + `"}`, auth, 413},
		{"not JSON", d.url(), `{"user":`, auth, 400},
		{"no user", d.url(), `{"event":"MessageNew"}`, auth, 422},
		{"unknown event", d.url(), `{"user":"x","event":"MessageNope"}`, auth, 422},
		{"uid wrong type", d.url(), `{"user":"x","event":"MessageNew","imap-uid":"7"}`, auth, 422},
		{"no handler", d.url(), `{"user":"nobody-here","event":"MessageNew"}`, auth, 200},
	}
	for _, c := range cases {
		resp := notify(t, c.url, c.body, c.mod)
		if resp.StatusCode != c.status {
			t.Errorf("%s: status %d, want %d", c.name, resp.StatusCode, c.status)
		}
		if c.status == 401 && resp.Header.Get("WWW-Authenticate") != `Basic realm="imserious"` {
			t.Errorf("%s: WWW-Authenticate %q", c.name, resp.Header.Get("WWW-Authenticate"))
		}
		if c.status == 405 && resp.Header.Get("Allow") != "PUT, POST" {
			t.Errorf("%s: Allow %q", c.name, resp.Header.Get("Allow"))
		}
	}

	// A peer outside allow: connect from 127.0.0.2 (all of 127/8 is lo).
	client := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{
		LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}).DialContext}}
	req, _ := http.NewRequest("PUT", d.url(), strings.NewReader(good))
	req.Header.Set("Content-Type", "application/json")
	auth(req)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Errorf("peer outside allow: status %d, want 403", resp.StatusCode)
	}

	// Rejections are logged at warn with the peer, never with the password.
	d.waitFor(func(m map[string]any) bool {
		s := fmt.Sprint(m)
		return m["level"] == "WARN" && strings.Contains(s, "127.0.0.2") && strings.Contains(s, "403")
	})
	d.mu.Lock()
	all := strings.Join(d.raw, "\n")
	d.mu.Unlock()
	if strings.Contains(all, "s3cr:et") || strings.Contains(all, "bm9wZQ") {
		t.Errorf("a password reached the log")
	}
	if code := d.stop(); code != 0 {
		t.Errorf("exit status %d, want 0", code)
	}
}

func TestChildDeathStopsDaemon(t *testing.T) {
	user, _ := account(t, "imse_alice")
	cfg := fmt.Sprintf("listen = \"127.0.0.1:0\"\n%s%s\n[[handler]]\nuser = %q\ncommand = \"/bin/true\"\n", logTOML, privsepTOML(t), user)
	d := start(t, cfg)
	kids := children(t, d.cmd.Process.Pid)
	if len(kids) != 2 {
		t.Fatalf("children %v, want net and one exec", kids)
	}
	if err := syscall.Kill(kids["net"].pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.exit:
	case <-time.After(60 * time.Second):
		t.Fatal("daemon still running 60s after its network process died")
	}
	if code := d.cmd.ProcessState.ExitCode(); code != 1 {
		t.Errorf("exit status %d, want 1", code)
	}
	for role, pi := range kids {
		if _, alive := readProc(pi.pid); alive {
			t.Errorf("child %s (pid %d) outlived the daemon", role, pi.pid)
		}
	}
}

func TestCheckFlag(t *testing.T) {
	user, _ := account(t, "imse_alice")
	good := writeConfig(t, fmt.Sprintf("%s[[handler]]\nuser = %q\ncommand = \"/bin/true\"\n", privsepTOML(t), user))
	var stderr bytes.Buffer
	cmd := exec.Command(binPath, "-n", good)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil || !strings.Contains(stderr.String(), "configuration OK") {
		t.Errorf("-n on a good file: %v, %q", err, stderr.String())
	}
	bad := writeConfig(t, "listen = \"127.0.0.1:1\"\nlimitperod = 3\n[[handler]]\nuser = \"x\"\ncommand = \"'unbalanced\"\n")
	stderr.Reset()
	cmd = exec.Command(binPath, "-n", bad)
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Errorf("-n on a bad file: %v, want exit status 1", err)
	}
	msg := stderr.String()
	for _, want := range []string{bad + ":2", "limitperod", bad + ":5"} {
		if !strings.Contains(msg, want) {
			t.Errorf("-n output lacks %q:\n%s", want, msg)
		}
	}
}

func TestVersion(t *testing.T) {
	out, err := exec.Command(binPath, "-V").Output()
	if err != nil || !strings.HasPrefix(string(out), "imserious ") {
		t.Errorf("-V: %q, %v", out, err)
	}
}
