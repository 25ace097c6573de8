package daemontest

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
	"syscall"
	"testing"
	"time"
)

// WaitLimit bounds every wait for a log line, and the stop of what a test
// leaves running. It is a failure deadline, not a synchronisation: the
// lines come long before it.
const WaitLimit = 30 * time.Second

// StopLimit bounds the wait for the daemon to exit once a test has told it
// to (SIGTERM, SIGKILL): it lets running commands finish first.
const StopLimit = 60 * time.Second

// mainPkg is what Main builds when IMSERIOUS_BIN is not set. An import
// path, so that it builds from any package of the module (go test runs in
// the package's directory).
const mainPkg = "github.com/imserious/imserious/cmd/imserious"

// binPath is the binary under test, set by Main.
var binPath string

// Main is TestMain for a package that runs the binary: the binary under
// test is $IMSERIOUS_BIN when set (a relative path is taken from the
// package's directory, where go test runs), otherwise one built from
// cmd/imserious for the test run and removed after it. It returns the exit
// status for os.Exit.
func Main(m *testing.M) int {
	if p := os.Getenv("IMSERIOUS_BIN"); p != "" {
		abs, err := filepath.Abs(p)
		if err == nil {
			_, err = os.Stat(abs)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "daemontest: IMSERIOUS_BIN %q: %v\n", p, err)
			return 1
		}
		binPath = abs
		return m.Run()
	}
	dir, err := build()
	if err != nil {
		fmt.Fprintln(os.Stderr, "daemontest:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	return m.Run()
}

// build builds the daemon as `make build` does (no cgo) into a fresh
// directory and returns the directory. MkdirTemp makes it 0700; it is
// opened to 0755 so that any uid could run the binary, though the daemon
// does not need that: its children re-exec /proc/self/exe before they drop
// privileges.
func build() (string, error) {
	dir, err := os.MkdirTemp("", "imserious-test-bin-")
	if err != nil {
		return "", fmt.Errorf("building imserious: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("building imserious: %w", err)
	}
	// go test puts its own toolchain first in PATH for the test binary.
	goBin, err := exec.LookPath("go")
	if err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("building imserious: no go command in PATH: %w", err)
	}
	bin := filepath.Join(dir, "imserious")
	cmd := exec.Command(goBin, "build", "-o", bin, mainPkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("go build %s: %w\n%s", mainPkg, err, out)
	}
	binPath = bin
	return dir, nil
}

// Binary returns the path of the binary under test.
func Binary(tb testing.TB) string {
	tb.Helper()
	if binPath == "" {
		tb.Fatal("daemontest: no binary under test: the package's TestMain must call daemontest.Main")
	}
	return binPath
}

// Command returns the binary under test with args, ready to run: with the
// base environment only (PATH=/usr/bin:/bin:/usr/sbin:/sbin), so that
// nothing of the test's own environment reaches it, and tied to the test
// binary (see DieWithParent).
func Command(tb testing.TB, args ...string) *exec.Cmd {
	tb.Helper()
	cmd := exec.Command(Binary(tb), args...)
	cmd.Env = []string{"PATH=/usr/bin:/bin:/usr/sbin:/sbin"}
	DieWithParent(cmd)
	return cmd
}

// Options are how Start starts the daemon.
type Options struct {
	// Name tells the daemons of one test apart in messages: "imserious
	// NAME".
	Name string
	// Env is added to the base environment of Command; an entry wins over
	// an earlier one of the same name. A canary variable here lets a test
	// check that the daemon's environment never reaches a command.
	Env []string
}

// Line is one line of the daemon's JSON log. Output that is not JSON (a
// panic, say) is kept as {"raw": line}.
type Line map[string]any

// Str returns the string at key k, "" when there is none.
func (l Line) Str(k string) string {
	s, _ := l[k].(string)
	return s
}

// Num returns the number at key k and whether there is one.
func (l Line) Num(k string) (int, bool) {
	f, ok := l[k].(float64)
	return int(f), ok
}

// Daemon is a running imserious parent and what it logged so far.
type Daemon struct {
	Name string    // "imserious", or "imserious NAME" (Options.Name)
	Cmd  *exec.Cmd // the parent
	Addr string    // host:port, from its "listening" line

	t      testing.TB
	mu     sync.Mutex
	lines  []Line
	raw    []string
	more   chan struct{} // closed and replaced on every new line
	eof    chan struct{} // closed when the output ends
	exited chan struct{} // closed once Wait has returned
}

// Start starts the binary on the configuration text (which must log JSON:
// see LogTOML), with stdout and stderr read as its log, and waits for it
// to listen. t.Cleanup stops it and every process below it, and logs what
// it logged if the test failed.
func Start(t testing.TB, conf string, o Options) *Daemon {
	t.Helper()
	d := &Daemon{Name: "imserious", t: t, more: make(chan struct{}), eof: make(chan struct{}), exited: make(chan struct{})}
	if o.Name != "" {
		d.Name += " " + o.Name
	}
	d.Cmd = Command(t, "-c", WriteConfig(t, conf))
	d.Cmd.Env = append(d.Cmd.Env, o.Env...)
	out, err := d.Cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	d.Cmd.Stderr = d.Cmd.Stdout
	if err := d.Cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", d.Cmd.Path, err)
	}
	go d.read(out)
	go func() {
		// Wait closes the pipe: only once everything has been read.
		<-d.eof
		d.Cmd.Wait()
		close(d.exited)
	}()
	var kids map[int]string
	t.Cleanup(func() {
		StopTree(t, d.Name, d.Cmd, d.exited, kids, WaitLimit)
		if t.Failed() {
			t.Logf("%s log:\n%s", d.Name, d.All())
		}
	})
	l := d.WaitFor("listening", func(l Line) bool { return l.Str("msg") == "listening" })
	d.Addr = l.Str("addr")
	if d.Addr == "" {
		t.Fatalf("%s: no address in %v", d.Name, l)
	}
	// Its children exist now: remember them so that none can outlive the
	// test, whatever happens to the parent.
	kids = Descendants(d.Cmd.Process.Pid)
	return d
}

func (d *Daemon) read(r io.Reader) {
	defer close(d.eof)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		var l Line
		if json.Unmarshal([]byte(line), &l) != nil {
			l = Line{"raw": line}
		}
		d.mu.Lock()
		d.raw = append(d.raw, line)
		d.lines = append(d.lines, l)
		close(d.more)
		d.more = make(chan struct{})
		d.mu.Unlock()
	}
}

// Pid is the parent's process id.
func (d *Daemon) Pid() int { return d.Cmd.Process.Pid }

// Mark returns the index of the next line to be logged, for WaitFrom and
// Since: what follows an action of the test.
func (d *Daemon) Mark() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.lines)
}

// WaitFrom returns the first line at index from or later that matches,
// waiting for lines as they come; match sees each line once, in order, so
// it may count. It fails t (which may be a subtest's) when the output ends
// or WaitLimit passes first; what names the line in that message.
func (d *Daemon) WaitFrom(t testing.TB, from int, what string, match func(Line) bool) Line {
	t.Helper()
	deadline := time.NewTimer(WaitLimit)
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
			if d.Mark() == i {
				t.Fatalf("%s: output ended while waiting for %s", d.Name, what)
			}
		case <-deadline.C:
			t.Fatalf("%s: no %s within %v", d.Name, what, WaitLimit)
		}
	}
}

// WaitFor is WaitFrom from the first line, failing the test that started
// the daemon.
func (d *Daemon) WaitFor(what string, match func(Line) bool) Line {
	d.t.Helper()
	return d.WaitFrom(d.t, 0, what, match)
}

// Since returns the lines from index from on that match.
func (d *Daemon) Since(from int, match func(Line) bool) []Line {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []Line
	for _, l := range d.lines[min(from, len(d.lines)):] {
		if match(l) {
			out = append(out, l)
		}
	}
	return out
}

// Count returns how many lines logged so far match.
func (d *Daemon) Count(match func(Line) bool) int { return len(d.Since(0, match)) }

// All returns the whole log so far as text.
func (d *Daemon) All() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return strings.Join(d.raw, "\n")
}

// Stop sends SIGTERM and returns the exit status (see WaitExit).
func (d *Daemon) Stop() int {
	d.t.Helper()
	d.Cmd.Process.Signal(syscall.SIGTERM)
	return d.WaitExit("SIGTERM")
}

// Kill sends SIGKILL to the parent alone and waits for it to be gone.
func (d *Daemon) Kill() {
	d.t.Helper()
	d.Cmd.Process.Kill()
	d.WaitExit("SIGKILL")
}

// WaitExit waits for the parent to exit after what the test did (after
// names it in the message) and returns the exit status, -1 when a signal
// ended it; the test fails, and the parent is killed, when it is still
// running StopLimit later. It also waits for the end of the output, which
// the children share: a child that outlives the parent holds it open.
func (d *Daemon) WaitExit(after string) int {
	d.t.Helper()
	select {
	case <-d.exited:
	case <-time.After(StopLimit):
		d.Cmd.Process.Kill()
		d.t.Fatalf("%s still running %v after %s", d.Name, StopLimit, after)
	}
	return d.Cmd.ProcessState.ExitCode()
}

// Children returns the parent's children by role (see Children).
func (d *Daemon) Children() map[string]Proc {
	d.t.Helper()
	return Children(d.t, d.Pid())
}
