//go:build linux

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imserious/imserious/control"
	"github.com/imserious/imserious/internal/daemontest"
)

var ctlBin struct {
	once sync.Once
	path string
	err  error
}

// imseriousctl returns the imseriousctl binary: IMSERIOUSCTL_BIN, or one
// built once for the tests.
func imseriousctl(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("IMSERIOUSCTL_BIN"); p != "" {
		return p
	}
	ctlBin.once.Do(func() {
		dir, err := os.MkdirTemp("", "imseriousctl-test")
		if err != nil {
			ctlBin.err = err
			return
		}
		os.Chmod(dir, 0o755)
		ctlBin.path = filepath.Join(dir, "imseriousctl")
		cmd := exec.Command("go", "build", "-o", ctlBin.path, "github.com/imserious/imserious/cmd/imseriousctl")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			ctlBin.err = fmt.Errorf("go build imseriousctl: %v\n%s", err, out)
		}
	})
	if ctlBin.err != nil {
		t.Fatal(ctlBin.err)
	}
	return ctlBin.path
}

// ctlDaemon starts the daemon with a control socket in a fresh directory
// and returns it with the socket's path.
func ctlDaemon(t *testing.T, handlers string) (*daemontest.Daemon, string) {
	t.Helper()
	sock := filepath.Join(daemontest.PublicDir(t), "ctl.sock")
	cfg := fmt.Sprintf("listen = \"127.0.0.1:0\"\n%s%s\n[control]\nsocket = %q\n%s",
		daemontest.LogTOML, daemontest.PrivsepTOML(t), sock, handlers)
	return start(t, cfg), sock
}

// ctlRun runs imseriousctl with args and returns its exit status and
// output.
func ctlRun(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(imseriousctl(t), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, stdout.String(), stderr.String()
}

func ctlStatus(t *testing.T, sock string) *control.Status {
	t.Helper()
	resp, err := control.Do(sock, control.Request{Verb: control.VerbStatus}, 10*time.Second)
	if err != nil || resp.Status == nil {
		t.Fatalf("status: %v, %+v", err, resp)
	}
	return resp.Status
}

// waitLastRun asks for the status until handler n's last run is in it:
// a run's end is recorded just after its last log line.
func waitLastRun(t *testing.T, sock string, n int) *control.Status {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		st := ctlStatus(t, sock)
		if h := handlerNo(t, st, n); h.LastRun != nil && h.State == "idle" || time.Now().After(deadline) {
			return st
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func handlerNo(t *testing.T, st *control.Status, n int) control.HandlerStatus {
	t.Helper()
	for _, h := range st.Handlers {
		if h.Handler == n {
			return h
		}
	}
	t.Fatalf("no handler %d in %+v", n, st.Handlers)
	return control.HandlerStatus{}
}

// status shows each state with its time: a delayed run with its due
// time, a deferred run with its token's time, a running command with its
// pid, and the last exit status of a failing command.
func TestControlStatusStates(t *testing.T) {
	user, _ := account(t, "imse_alice")
	marker := filepath.Join(daemontest.PublicDir(t), "release")
	handlers := fmt.Sprintf(`
[[handler]]
user = %[1]q
command = "/bin/true"
delay = "1h"

[[handler]]
user = %[1]q
command = ["/bin/sh", "-c", "exit 3"]
limit_burst = 1
limit_period = "1h"

[[handler]]
user = %[1]q
command = ["/bin/sh", "-c", "while [ ! -e %[2]s ]; do sleep 0.05; done"]
`, user, marker)
	d, sock := ctlDaemon(t, handlers)
	before := time.Now()
	for i := 1; i <= 2; i++ {
		if resp := notify(t, notifyURL(d), fmt.Sprintf(body1, user, i), nil); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		if i == 1 {
			// The second event must find handler 2's token spent.
			d.WaitFor("handler 2's first run", func(m daemontest.Line) bool {
				return m.Str("msg") == "command exited" && m["handler"] == float64(2)
			})
		}
	}
	d.WaitFor("the deferral", func(m daemontest.Line) bool {
		return m.Str("msg") == "run deferred by rate limit" && m["handler"] == float64(2)
	})
	started := d.WaitFor("handler 3's command", func(m daemontest.Line) bool {
		return m.Str("msg") == "command started" && m["handler"] == float64(3)
	})
	st := ctlStatus(t, sock)

	h1 := handlerNo(t, st, 1)
	if h1.State != "delayed" || h1.Due == nil || h1.Due.Sub(before) < 59*time.Minute || h1.Due.Sub(before) > 61*time.Minute || h1.Pending != 2 {
		t.Errorf("handler 1 (delay 1h): %+v, want delayed about an hour from now with 2 pending", h1)
	}
	h2 := handlerNo(t, st, 2)
	if h2.State != "deferred" || h2.Due == nil || h2.Due.Sub(before) < 59*time.Minute || h2.Pending != 1 {
		t.Errorf("handler 2 (limit 1/h): %+v, want deferred about an hour from now with 1 pending", h2)
	}
	if h2.LastRun == nil || h2.LastRun.ExitStatus == nil || *h2.LastRun.ExitStatus != 3 || h2.LastRun.Trigger != "event" ||
		h2.Runs != 1 || h2.Failures != 1 {
		t.Errorf("handler 2's last run: %+v (%+v), want exit 3, 1 run, 1 failure", h2.LastRun, h2)
	}
	h3 := handlerNo(t, st, 3)
	pid, _ := started.Num("pid")
	if h3.State != "running" || h3.PID != pid || h3.PID == 0 || h3.Since == nil {
		t.Errorf("handler 3: %+v, want running with pid %d", h3, pid)
	}
	if h1.User != user || h1.Event != "MessageNew" || h1.RunAs != user {
		t.Errorf("handler 1 names %q %q %q", h1.User, h1.Event, h1.RunAs)
	}
	roles := map[string]int{}
	for _, p := range st.Processes {
		roles[p.Role]++
		if p.PID <= 0 {
			t.Errorf("process %+v without a pid", p)
		}
	}
	if roles["parent"] != 1 || roles["net"] != 1 || roles["exec"] != 1 {
		t.Errorf("processes %+v, want parent, net and one exec", st.Processes)
	}

	// The text form says the same.
	code, out, errOut := ctlRun(t, "-s", sock, "status")
	for _, want := range []string{"handler[1] user " + user, "delayed until ", "deferred by the limit until ",
		fmt.Sprintf("running since %s pid %d", h3.Since.Local().Format(time.RFC3339), pid), "exit 3 (event)", "process net: pid "} {
		if !strings.Contains(out, want) {
			t.Errorf("imseriousctl status lacks %q (exit %d, stderr %q):\n%s", want, code, errOut, out)
		}
	}
	os.WriteFile(marker, nil, 0o644)
}

// imseriousctl status -j prints the documented schema, field by field.
func TestControlStatusJSON(t *testing.T) {
	user, _ := account(t, "imse_alice")
	d, sock := ctlDaemon(t, fmt.Sprintf("[[handler]]\nuser = %q\ncommand = \"/bin/true\"\nperiodic = \"1h\"\n", user))
	if resp := notify(t, notifyURL(d), fmt.Sprintf(body1, user, 1), nil); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	d.WaitFor("the run", func(m daemontest.Line) bool { return m.Str("msg") == "command exited" })
	waitLastRun(t, sock, 1)
	code, out, errOut := ctlRun(t, "-j", "-s", sock, "status")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var doc map[string][]map[string]any
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if len(doc) != 2 || len(doc["handlers"]) != 1 || len(doc["processes"]) != 3 {
		t.Fatalf("want handlers[1] and processes[3], got:\n%s", out)
	}
	h := doc["handlers"][0]
	isNum := func(v any) bool { _, ok := v.(float64); return ok }
	isTime := func(v any) bool {
		s, ok := v.(string)
		_, err := time.Parse(time.RFC3339, s)
		return ok && err == nil
	}
	for key, ok := range map[string]bool{
		"user": h["user"] == user, "event": h["event"] == "MessageNew", "run_as": h["run_as"] == user,
		"state": h["state"] == "idle", "pending": h["pending"] == float64(0), "runs": h["runs"] == float64(1),
		"failures": h["failures"] == float64(0), "next_periodic": isTime(h["next_periodic"]),
		"handler": h["handler"] == float64(1), "line": isNum(h["line"]),
	} {
		if !ok {
			t.Errorf("handlers[0].%s = %#v", key, h[key])
		}
	}
	for _, key := range []string{"due", "pid", "since"} {
		if _, ok := h[key]; ok {
			t.Errorf("handlers[0].%s present for an idle handler", key)
		}
	}
	lr, _ := h["last_run"].(map[string]any)
	if !isTime(lr["start"]) || !isNum(lr["duration_ms"]) || lr["exit_status"] != float64(0) || lr["trigger"] != "event" {
		t.Errorf("handlers[0].last_run = %#v", lr)
	}
	if _, ok := lr["signal"]; ok {
		t.Errorf("last_run.signal present for a clean exit")
	}
	for _, p := range doc["processes"] {
		if !isNum(p["pid"]) || !isNum(p["uptime_s"]) || !isNum(p["restarts"]) || p["role"] == nil {
			t.Errorf("process %#v", p)
		}
		if p["role"] == "exec" && p["account"] != user {
			t.Errorf("exec process of account %#v", p["account"])
		}
	}
}

// imseriousctl reload of a broken file prints every error with file,
// line and key, exits 1, and the daemon keeps serving the old handlers;
// a good file prints what changed.
func TestControlReload(t *testing.T) {
	user, _ := account(t, "imse_alice")
	d, sock := ctlDaemon(t, fmt.Sprintf("[[handler]]\nuser = %q\ncommand = \"/bin/true\"\n", user))
	path := d.Cmd.Args[len(d.Cmd.Args)-1]
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	broken := string(good) + "\n[[handler]]\nuser = \"x\"\ncommand = \"/bin/true\"\nlimit_perod = \"1s\"\n"
	if err := os.WriteFile(path, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := ctlRun(t, "-s", sock, "reload")
	line := strings.Count(string(good), "\n") + 5
	if code != 1 || !strings.Contains(errOut, fmt.Sprintf("%s:%d: handler[2].limit_perod", path, line)) ||
		!strings.Contains(errOut, "the running configuration stays in force") {
		t.Errorf("reload of a broken file: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	m := d.Mark()
	if resp := notify(t, notifyURL(d), fmt.Sprintf(body1, user, 1), nil); resp.StatusCode != 200 {
		t.Fatalf("status %d after a failed reload", resp.StatusCode)
	}
	d.WaitFrom(t, m, "the old handler's run", func(l daemontest.Line) bool { return l.Str("msg") == "command exited" })

	next := string(good) + fmt.Sprintf("\n[[handler]]\nuser = %q\ncommand = \"/bin/true\"\nevent = \"FlagsSet\"\n", user)
	if err := os.WriteFile(path, []byte(next), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = ctlRun(t, "-s", sock, "reload")
	if code != 0 || out != "reloaded: 1 added, 0 changed, 0 removed, 1 unchanged\n" {
		t.Errorf("reload: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// imseriousctl run starts the matching handlers with IMSE_TRIGGER=manual,
// through the delay, and two quick calls make one run.
func TestControlRunMergesAndRunAtStart(t *testing.T) {
	user, _ := account(t, "imse_alice")
	d, sock := ctlDaemon(t, fmt.Sprintf(`
[[handler]]
user = %[1]q
command = ["/bin/sh", "-c", "echo trigger=$IMSE_TRIGGER"]
delay = "1s"

[[handler]]
user = %[1]q
command = ["/bin/sh", "-c", "echo start=$IMSE_TRIGGER"]
run_at_start = true
`, user))
	d.WaitFor("the run at start", func(m daemontest.Line) bool {
		return m.Str("msg") == "command output" && m.Str("line") == "start=start"
	})
	for range 2 {
		code, out, errOut := ctlRun(t, "-s", sock, "run", user, "messagenew")
		if code != 0 || !strings.Contains(out, "started 2 handlers") {
			t.Fatalf("run: exit %d, stdout %q, stderr %q", code, out, errOut)
		}
	}
	d.WaitFor("the manual run's end", func(m daemontest.Line) bool {
		return m.Str("msg") == "command exited" && m["handler"] == float64(1) && m.Str("trigger") == "manual"
	})
	// The second handler's two manual runs: at most two (the second may
	// merge into the first or follow it), and handler 1's exactly one,
	// which the status shows once handler 2 is idle again.
	st := waitLastRun(t, sock, 1)
	if h := handlerNo(t, st, 1); h.Runs != 1 || h.LastRun == nil || h.LastRun.Trigger != "manual" {
		t.Errorf("handler 1 after two quick runs: %+v, want one manual run", h)
	}
	if n := d.Count(func(m daemontest.Line) bool { return m.Str("line") == "start=start" }); n != 1 {
		t.Errorf("run_at_start ran %d times, want 1", n)
	}
	if code, _, errOut := ctlRun(t, "-s", sock, "run", "nobody-here"); code != 1 || !strings.Contains(errOut, `no handler for user "nobody-here"`) {
		t.Errorf("run for a user without a handler: exit %d, %q", code, errOut)
	}
}

// Started as root, the control socket answers uid 0 only, whatever the
// file's mode; garbage on it closes that connection only.
func TestControlSocketPeers(t *testing.T) {
	if !isRoot() {
		t.Skip("the uid check is against root")
	}
	user, _ := account(t, "imse_alice")
	_, bobUID := account(t, "imse_bob")
	d, sock := ctlDaemon(t, fmt.Sprintf("[[handler]]\nuser = %q\ncommand = \"/bin/true\"\n", user))
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("control socket %v, %v: want a socket of mode 0600", fi, err)
	}
	// Even with the mode opened up, another uid is refused.
	os.Chmod(sock, 0o666)
	cmd := exec.Command(imseriousctl(t), "-s", sock, "status")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(bobUID), Gid: uint32(bobUID)}}
	out, err := cmd.CombinedOutput()
	if err == nil || strings.Contains(string(out), "handler[1]") {
		t.Errorf("imseriousctl as uid %d: %v\n%s", bobUID, err, out)
	}
	d.WaitFor("the refusal", func(m daemontest.Line) bool {
		return m.Str("msg") == "control socket: client refused" && m["uid"] == float64(bobUID)
	})

	for _, garbage := range []string{"GET / HTTP/1.1\r\n\r\n", "\x00\x00\x00\x05{\"x\":", "\xff\xff\xff\xff"} {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte(garbage))
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := c.Read(make([]byte, 1))
		if n != 0 || err == nil {
			t.Errorf("after %q the connection is still open (%d, %v)", garbage, n, err)
		}
		c.Close()
	}
	// The daemon and the socket are fine.
	if st := ctlStatus(t, sock); len(st.Handlers) != 1 {
		t.Errorf("status after garbage: %+v", st)
	}
}

// SIGUSR1 (SIGINFO on the BSDs) writes the status into the log, as
// lines an operator can read in the log alone.
func TestStatusSignal(t *testing.T) {
	user, _ := account(t, "imse_alice")
	d, _ := ctlDaemon(t, fmt.Sprintf("[[handler]]\nuser = %q\ncommand = \"/bin/true\"\ndelay = \"1h\"\n", user))
	if resp := notify(t, notifyURL(d), fmt.Sprintf(body1, user, 1), nil); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	d.WaitFor("the delay", func(m daemontest.Line) bool { return m.Str("msg") == "burst started, run delayed" })
	d.Cmd.Process.Signal(statusSignal)
	d.WaitFor("the status in the log", func(m daemontest.Line) bool {
		return strings.HasPrefix(m.Str("msg"), "status: handler[1] user "+user+" event MessageNew run_as "+user+": delayed until ") &&
			m.Str("proc") == "parent"
	})
	d.WaitFor("the processes in the log", func(m daemontest.Line) bool {
		return strings.HasPrefix(m.Str("msg"), "status: process exec["+user+"]: pid ")
	})
}

// retries: a command failing twice then succeeding runs three times, the
// retries with IMSE_TRIGGER=retry and IMSE_ATTEMPT=2, 3 (the back-off's
// intervals are measured on an injected clock in exec's unit tests).
func TestRetriesRealCommand(t *testing.T) {
	user, _ := account(t, "imse_alice")
	dir := daemontest.PublicDir(t)
	script := `n=$(cat ` + dir + `/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > ` + dir + `/n; ` +
		`echo "attempt=${IMSE_ATTEMPT-none} trigger=$IMSE_TRIGGER"; [ $n -ge 3 ]`
	d := start(t, fmt.Sprintf("listen = \"127.0.0.1:0\"\n%s%s\n[[handler]]\nuser = %q\ncommand = [\"/bin/sh\", \"-c\", %q]\nretries = 3\nretry_backoff = \"50ms\"\n",
		daemontest.LogTOML, daemontest.PrivsepTOML(t), user, script))
	if resp := notify(t, notifyURL(d), fmt.Sprintf(body1, user, 1), nil); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	d.WaitFor("the successful third run", func(m daemontest.Line) bool {
		return m.Str("msg") == "command exited" && m["status"] == float64(0)
	})
	want := []string{"attempt=none trigger=event", "attempt=2 trigger=retry", "attempt=3 trigger=retry"}
	if got := output(d, 0); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("runs printed %q, want %q", got, want)
	}
	if n := d.Count(func(m daemontest.Line) bool { return m.Str("msg") == "run failed, retrying" }); n != 2 {
		t.Errorf("%d retries logged, want 2", n)
	}
}
