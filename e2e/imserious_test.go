//go:build e2e && linux

package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The Basic credentials Dovecot sends: the password has the characters
// that must be percent-encoded in the URL's userinfo.
const (
	authUser = "dove"
	authPass = "p@ss:w0rd"
	// authURLInfo is user:pass as it goes into the URL.
	authURLInfo = "dove:p%40ss%3Aw0rd"
)

// waitLimit bounds every wait for a log line; it is a failure deadline,
// not a synchronisation: the lines come long before it.
const waitLimit = 30 * time.Second

// logLine is one line of imserious's JSON log.
type logLine map[string]any

func (l logLine) str(k string) string {
	s, _ := l[k].(string)
	return s
}

func (l logLine) num(k string) (int, bool) {
	f, ok := l[k].(float64)
	return int(f), ok
}

// daemon is a running imserious and what it logged.
type daemon struct {
	name   string
	cmd    *exec.Cmd
	addr   string
	mu     sync.Mutex
	lines  []logLine
	raw    []string
	more   chan struct{} // closed and replaced on every new line
	eof    chan struct{} // closed when the output ends
	exited chan struct{} // closed once Wait returned
}

// handlerConf is one [[handler]] of the configuration under test.
type handlerConf struct {
	user, runAs string
}

// recordCommand is the command every handler runs: it prints its uid,
// its arguments and its environment, one per line, to stdout, which the
// exec process logs line by line as "command output". The arguments test
// the shell-like splitting of the command line (quotes, a space, an
// apostrophe); values cannot contain newlines, since the daemon turns
// control characters into spaces.
const recordCommand = `/bin/sh -c 'echo "uid=$(id -u)"; for a; do echo "arg=$a"; done; env | sed "s/^/env=/"' imse-e2e "two words" "it's"`

// recordArgs is what recordCommand prints as its arguments.
var recordArgs = []string{"two words", "it's"}

// daemonConf is the configuration of an imserious under test: loopback,
// a port of its choosing, Basic auth, JSON log at debug level, the
// network process confined to a fresh empty directory. extra is more
// TOML after listen (allow, then tables such as [tls]).
func daemonConf(t *testing.T, extra string, handlers ...handlerConf) string {
	t.Helper()
	account(t, "_imserious")
	chroot := filepath.Join(t.TempDir(), "empty")
	if err := os.Mkdir(chroot, 0o755); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString("listen = \"127.0.0.1:0\"\n")
	b.WriteString(extra)
	fmt.Fprintf(&b, "\n[auth]\nuser = %q\npass = %q\n", authUser, authPass)
	b.WriteString("\n[log]\nformat = \"json\"\nmax_level = \"debug\"\nlevel = true\ntarget = true\n")
	fmt.Fprintf(&b, "\n[privsep]\nuser = \"_imserious\"\nchroot = %q\n", chroot)
	for _, h := range handlers {
		// A burst allowance larger than the suite's deliveries: every
		// delivery the suite waits for gets its own run.
		fmt.Fprintf(&b, "\n[[handler]]\nuser = %q\nrun_as = %q\nevent = \"MessageNew\"\ncommand = %q\nlimit_burst = 1000\nlimit_period = \"1s\"\ncommand_timeout = \"30s\"\n",
			h.user, h.runAs, recordCommand)
	}
	return b.String()
}

// startDaemon starts the imserious binary as root on the configuration
// and waits for it to listen. t.Cleanup stops it by pid.
func startDaemon(t *testing.T, name, conf string) *daemon {
	t.Helper()
	path := filepath.Join(t.TempDir(), name+".toml")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	d := &daemon{name: name, more: make(chan struct{}), eof: make(chan struct{}), exited: make(chan struct{})}
	d.cmd = exec.Command(binPath, "-c", path)
	d.cmd.Env = []string{"PATH=/usr/bin:/bin:/usr/sbin:/sbin"}
	out, err := d.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	d.cmd.Stderr = d.cmd.Stdout
	dieWithUs(d.cmd)
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", binPath, err)
	}
	go d.read(out)
	go func() {
		<-d.eof
		d.cmd.Wait()
		close(d.exited)
	}()
	var kids map[int]string
	t.Cleanup(func() {
		stopProcess(t, "imserious "+name, d.cmd, d.exited, kids, 30*time.Second)
		if t.Failed() {
			d.mu.Lock()
			t.Logf("imserious %s log:\n%s", name, strings.Join(d.raw, "\n"))
			d.mu.Unlock()
		}
	})
	l := d.waitFor(t, 0, "listening", func(l logLine) bool { return l.str("msg") == "listening" })
	d.addr = l.str("addr")
	if d.addr == "" {
		t.Fatalf("imserious %s: no address in %v", name, l)
	}
	// Its children exist now: remember them so that none can outlive
	// the test, whatever happens to the parent.
	kids = descendants(d.cmd.Process.Pid)
	return d
}

func (d *daemon) read(r io.Reader) {
	defer close(d.eof)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		var l logLine
		if json.Unmarshal([]byte(line), &l) != nil {
			l = logLine{"raw": line}
		}
		d.mu.Lock()
		d.raw = append(d.raw, line)
		d.lines = append(d.lines, l)
		close(d.more)
		d.more = make(chan struct{})
		d.mu.Unlock()
	}
}

// mark is the index of the next line to be logged.
func (d *daemon) mark() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.lines)
}

// waitFor returns the first line at index from or later that matches,
// waiting for lines as they come. match sees each line once, in order.
func (d *daemon) waitFor(t *testing.T, from int, what string, match func(logLine) bool) logLine {
	t.Helper()
	deadline := time.NewTimer(waitLimit)
	defer deadline.Stop()
	i := from
	for {
		d.mu.Lock()
		for ; i < len(d.lines); i++ {
			if match(d.lines[i]) {
				l := d.lines[i]
				d.mu.Unlock()
				return l
			}
		}
		more := d.more
		d.mu.Unlock()
		select {
		case <-more:
		case <-d.eof:
			if d.mark() == i {
				t.Fatalf("imserious %s: output ended while waiting for %s", d.name, what)
			}
		case <-deadline.C:
			t.Fatalf("imserious %s: no %s within %v", d.name, what, waitLimit)
		}
	}
}

// since returns the lines from index from on that match.
func (d *daemon) since(from int, match func(logLine) bool) []logLine {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []logLine
	for _, l := range d.lines[min(from, len(d.lines)):] {
		if match(l) {
			out = append(out, l)
		}
	}
	return out
}

// all returns the whole log as text.
func (d *daemon) all() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return strings.Join(d.raw, "\n")
}

// accepted matches the network process's line for a valid notification
// that reached a handler of user.
func accepted(user string) func(logLine) bool {
	return func(l logLine) bool { return l.str("msg") == "event accepted" && l.str("user") == user }
}

// rejected matches the warn line of a rejected request.
func rejected(l logLine) bool { return l.str("msg") == "request rejected" }

// run is one command run as the exec process logged it.
type run struct {
	proc    string // the exec process that logged it, exec[ACCOUNT]
	handler int
	pid     int
	trigger string
	count   int
	uid     string
	args    []string
	env     map[string]string
	status  string // the exit line: "command exited" with status 0, or what else
}

// nextRun waits for the next command of user's handler started at index
// from or later, then for its end, and returns what it reported.
func (d *daemon) nextRun(t *testing.T, from int, user string) run {
	t.Helper()
	st := d.waitFor(t, from, "command started for "+user, func(l logLine) bool {
		return l.str("msg") == "command started" && l.str("user") == user
	})
	pid, _ := st.num("pid")
	r := run{proc: st.str("proc"), pid: pid, trigger: st.str("trigger"), env: map[string]string{}}
	r.handler, _ = st.num("handler")
	r.count, _ = st.num("count")
	end := d.waitFor(t, from, fmt.Sprintf("end of command pid %d", pid), func(l logLine) bool {
		p, _ := l.num("pid")
		m := l.str("msg")
		return p == pid && l.str("proc") == r.proc && strings.HasPrefix(m, "command ") &&
			m != "command started" && m != "command output"
	})
	if s, ok := end.num("status"); end.str("msg") == "command exited" && ok && s == 0 {
		r.status = "ok"
	} else {
		r.status = fmt.Sprint(end)
	}
	// The exec process logs a run's output before its end.
	for _, l := range d.since(from, func(l logLine) bool {
		p, _ := l.num("pid")
		return l.str("msg") == "command output" && p == pid && l.str("proc") == r.proc
	}) {
		k, v, _ := strings.Cut(l.str("line"), "=")
		switch k {
		case "uid":
			r.uid = v
		case "arg":
			r.args = append(r.args, v)
		case "env":
			name, val, _ := strings.Cut(v, "=")
			r.env[name] = val
		}
	}
	return r
}
