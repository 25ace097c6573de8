package exec

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imserious/imserious/clock/clocktest"
	"github.com/imserious/imserious/config"
	"github.com/imserious/imserious/event"
	"github.com/imserious/imserious/privsep"
)

// shJob is a job running script with /bin/sh, argv[0] "sh".
func shJob(t *testing.T, script string) Job {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "script.sh")
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return realJob(t, "/bin/sh", "sh", path)
}

func realJob(t *testing.T, path string, argv ...string) Job {
	t.Helper()
	h := &config.Handler{
		User:           "alice",
		Event:          "MessageNew",
		Command:        argv,
		LimitPeriod:    30 * time.Second,
		LimitBurst:     1,
		CommandTimeout: time.Minute,
		Account:        privsep.Account{Name: "alice", Home: t.TempDir(), Shell: "/bin/sh"},
		Path:           path,
	}
	ev := newEvent("alice", "hello")
	return Job{Handler: h, Index: 7, Trigger: TriggerEvent, Count: 1, Env: eventEnv(BaseEnv(h), &ev, 1, peer)}
}

func runLogged(t *testing.T, r *CommandRunner, ctx context.Context, j Job) *logBuf {
	t.Helper()
	logs := &logBuf{}
	r.Log = newLogger(logs)
	r.Run(ctx, j)
	return logs
}

// output returns the logged output lines of one stream.
func outputLines(t *testing.T, logs *logBuf, stream string) []string {
	t.Helper()
	var lines []string
	for _, r := range logs.find(t, "command output") {
		if r["stream"] == stream {
			lines = append(lines, r["line"].(string))
		}
	}
	return lines
}

func one(t *testing.T, logs *logBuf, msg string) map[string]any {
	t.Helper()
	recs := logs.find(t, msg)
	if len(recs) != 1 {
		t.Fatalf("%d %q records, want 1; log:\n%s", len(recs), msg, logs.buf.String())
	}
	return recs[0]
}

func TestRunEnvExactlyJob(t *testing.T) {
	t.Setenv("IMSERIOUS_CANARY", "must-not-leak")
	j := realJob(t, "/usr/bin/env", "env")
	j.Handler.Env = map[string]string{"DISPLAY": ":0"}
	ev := newEvent("alice", "hello")
	j.Env = eventEnv(BaseEnv(j.Handler), &ev, 1, peer)
	logs := runLogged(t, &CommandRunner{}, context.Background(), j)
	got := outputLines(t, logs, "stdout")
	slices.Sort(got)
	if !slices.Equal(got, j.Env) {
		t.Errorf("command saw\n%q\nwant exactly\n%q", got, j.Env)
	}
	for _, kv := range got {
		if strings.Contains(kv, "IMSERIOUS_CANARY") {
			t.Errorf("daemon environment leaked: %s", kv)
		}
	}
	if !slices.Contains(got, "DISPLAY=:0") || !slices.Contains(got, "IMSE_SUBJECT=hello") {
		t.Errorf("handler env or IMSE vars missing: %q", got)
	}
}

func TestRunDir(t *testing.T) {
	j := realJob(t, "/bin/sh", "sh", "-c", "pwd")
	logs := runLogged(t, &CommandRunner{}, context.Background(), j)
	want := j.Handler.Account.Home
	if got := outputLines(t, logs, "stdout"); len(got) != 1 || got[0] != want {
		t.Errorf("output %q, want %q", got, want)
	}

	j.Handler.Account.Home = "/nonexistent/home"
	logs = runLogged(t, &CommandRunner{}, context.Background(), j)
	if got := outputLines(t, logs, "stdout"); len(got) != 1 || got[0] != "/" {
		t.Errorf("missing home: output %q, want \"/\"", got)
	}
}

func TestRunOutputLogged(t *testing.T) {
	j := shJob(t, "echo out one\necho err one >&2\nprintf 'out two\\r\\n'\nprintf 'bad \\377 byte\\n'\nprintf 'no newline' >&2\n")
	logs := runLogged(t, &CommandRunner{}, context.Background(), j)

	start := one(t, logs, "command started")
	pid := start["pid"].(float64)
	if pid <= 1 || start["count"] != 1.0 || start["trigger"] != "event" || start["handler"] != 7.0 || start["user"] != "alice" {
		t.Errorf("start record %v", start)
	}
	if got, want := outputLines(t, logs, "stdout"), []string{"out one", "out two", "bad \uFFFD byte"}; !slices.Equal(got, want) {
		t.Errorf("stdout %q, want %q", got, want)
	}
	if got, want := outputLines(t, logs, "stderr"), []string{"err one", "no newline"}; !slices.Equal(got, want) {
		t.Errorf("stderr %q, want %q", got, want)
	}
	for _, r := range logs.find(t, "command output") {
		level := map[string]string{"stdout": "INFO", "stderr": "WARN"}[r["stream"].(string)]
		if r["level"] != level || r["pid"] != pid || r["handler"] != 7.0 || r["user"] != "alice" {
			t.Errorf("output record %v: want level %s, pid %v, handler 7, user alice", r, level, pid)
		}
	}
	end := one(t, logs, "command exited")
	if end["status"] != 0.0 || end["pid"] != pid || end["level"] != "INFO" || end["duration"] == nil {
		t.Errorf("end record %v", end)
	}
}

func TestRunOutputCap(t *testing.T) {
	t.Run("lines", func(t *testing.T) {
		// Far more than a pipe buffer on both streams: if the rest were not
		// drained the command would block until its timeout.
		j := shJob(t, "seq 1 200000\nseq 1 200000 >&2\necho done\n")
		logs := runLogged(t, &CommandRunner{MaxLines: 10}, context.Background(), j)
		if n := len(logs.find(t, "command output")); n != 10 {
			t.Errorf("%d output records, want 10", n)
		}
		tr := one(t, logs, "command output truncated")
		if tr["level"] != "WARN" || tr["max_lines"] != 10.0 {
			t.Errorf("truncation record %v", tr)
		}
		if end := one(t, logs, "command exited"); end["status"] != 0.0 {
			t.Errorf("end record %v, want status 0", end)
		}
	})
	t.Run("bytes", func(t *testing.T) {
		j := shJob(t, "for i in 1 2 3 4 5; do echo 0123456789012345678901234567890123456789; done\n")
		logs := runLogged(t, &CommandRunner{MaxBytes: 100}, context.Background(), j)
		if n := len(outputLines(t, logs, "stdout")); n != 2 {
			t.Errorf("%d lines of 40 bytes under a 100-byte cap, want 2", n)
		}
		one(t, logs, "command output truncated")
	})
	t.Run("long line", func(t *testing.T) {
		j := shJob(t, "head -c 10000 /dev/zero | tr '\\0' x\n")
		logs := runLogged(t, &CommandRunner{}, context.Background(), j)
		var lens []int
		for _, l := range outputLines(t, logs, "stdout") {
			lens = append(lens, len(l))
		}
		if want := []int{maxLine, maxLine, 10000 - 2*maxLine}; !slices.Equal(lens, want) {
			t.Errorf("line lengths %v, want %v", lens, want)
		}
	})
}

func TestRunExitStatusAndSignal(t *testing.T) {
	logs := runLogged(t, &CommandRunner{}, context.Background(), shJob(t, "exit 3\n"))
	if end := one(t, logs, "command exited"); end["status"] != 3.0 || end["level"] != "WARN" {
		t.Errorf("end record %v, want status 3 at WARN", end)
	}
	logs = runLogged(t, &CommandRunner{}, context.Background(), shJob(t, "kill -TERM $$\n"))
	if end := one(t, logs, "command killed by signal"); end["signal"] != "SIGTERM" || end["level"] != "WARN" {
		t.Errorf("end record %v, want SIGTERM at WARN", end)
	}
}

func TestRunStartFailures(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "not-executable")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{filepath.Join(dir, "missing"), notExec} {
		j := realJob(t, path, "prog")
		logs := runLogged(t, &CommandRunner{}, context.Background(), j) // returns: survived
		rec := one(t, logs, "command failed to start")
		if rec["level"] != "ERROR" || rec["path"] != path || rec["err"] == "" {
			t.Errorf("record %v", rec)
		}
		if n := len(logs.find(t, "command started")); n != 0 {
			t.Errorf("%d start records for %s", n, path)
		}
	}
}

func TestRunTimeoutKillsGroup(t *testing.T) {
	pidfile := filepath.Join(t.TempDir(), "pid")
	j := shJob(t, fmt.Sprintf("sleep 100 &\necho $! > %s\nsleep 100\n", pidfile))
	j.Handler.CommandTimeout = time.Second
	// A WaitDelay far longer than the test's bound: Run can only return
	// quickly if the grandchild holding the pipes was killed with the group.
	r := &CommandRunner{WaitDelay: 10 * time.Minute}
	begin := time.Now()
	logs := runLogged(t, r, context.Background(), j)
	if d := time.Since(begin); d > time.Minute {
		t.Errorf("Run took %v: the grandchild kept the output open", d)
	}
	term := one(t, logs, "terminating command's process group")
	if term["level"] != "WARN" || term["reason"] != "command_timeout" || term["signal"] != "SIGTERM" {
		t.Errorf("terminate record %v", term)
	}
	if end := one(t, logs, "command killed by signal"); end["signal"] != "SIGTERM" {
		t.Errorf("end record %v, want SIGTERM", end)
	}
	b, err := os.ReadFile(pidfile)
	if err != nil {
		t.Fatalf("grandchild pid: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("grandchild pid %q: %v", b, err)
	}
	waitGone(t, pid)
}

func TestRunCancelledByContext(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	j := shJob(t, fmt.Sprintf("echo started > %s\nexec sleep 100\n", fifo))
	ctx, cancel := context.WithCancel(context.Background())
	logs := &logBuf{}
	done := make(chan struct{})
	go func() {
		(&CommandRunner{Log: newLogger(logs)}).Run(ctx, j)
		close(done)
	}()
	// Opening the fifo blocks until the command opens it: it is running.
	b, err := os.ReadFile(fifo)
	if err != nil || string(b) != "started\n" {
		t.Fatalf("fifo: %q, %v", b, err)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(safety):
		t.Fatal("Run did not return after its context was cancelled")
	}
	if term := one(t, logs, "terminating command's process group"); term["reason"] != "shutdown" {
		t.Errorf("terminate record %v, want reason shutdown", term)
	}
	one(t, logs, "command killed by signal")
}

// TestExecRealRunner drives real commands through Exec: the event reaches
// the command's environment, and Shutdown kills what outlives the grace.
func TestExecRealRunner(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(dir, "script.sh")
	body := fmt.Sprintf("echo \"$IMSE_TRIGGER $IMSE_COUNT $IMSE_SUBJECT $MARK\" > %s\nexec sleep 100\n", fifo)
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	hc := testHandler("alice")
	hc.Path = "/bin/sh"
	hc.Command = []string{"sh", script}
	hc.Env = map[string]string{"MARK": "marked"}
	logs := &logBuf{}
	x := New(Options{Handlers: []config.Handler{hc}, Log: newLogger(logs), Clock: clocktest.New(epoch)})
	x.Start()
	if n := x.Deliver(newEvent("alice", "hi"), peer); n != 1 {
		t.Fatalf("Deliver matched %d", n)
	}
	b, err := os.ReadFile(fifo) // returns once the command wrote it
	if err != nil || string(b) != "event 1 hi marked\n" {
		t.Fatalf("command wrote %q, %v", b, err)
	}
	x.Deliver(newEvent("alice", "again"), peer) // pending behind the run
	x.Shutdown(0)
	if term := one(t, logs, "terminating command's process group"); term["reason"] != "shutdown" {
		t.Errorf("terminate record %v", term)
	}
	one(t, logs, "command killed by signal")
	one(t, logs, "pending run dropped at shutdown")
	if n := len(logs.find(t, "command started")); n != 1 {
		t.Errorf("%d commands started, want 1", n)
	}
}

// runBounded runs j and fails the test if Run does not return within
// safety.
func runBounded(t *testing.T, r *CommandRunner, j Job) *logBuf {
	t.Helper()
	logs := &logBuf{}
	r.Log = newLogger(logs)
	done := make(chan struct{})
	go func() {
		r.Run(context.Background(), j)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(safety):
		t.Fatalf("Run did not return; log:\n%s", logs.String())
	}
	return logs
}

// TestRunTermFirst: at command_timeout the group gets SIGTERM, so a
// command can remove its lock file, and SIGKILL only after KillGrace.
func TestRunTermFirst(t *testing.T) {
	t.Run("lock removed", func(t *testing.T) {
		lock := filepath.Join(t.TempDir(), "lock")
		j := shJob(t, fmt.Sprintf("trap 'rm -f %[1]s; exit 7' TERM\ntouch %[1]s\necho locked\nsleep 1000 &\nwait\n", lock))
		j.Handler.CommandTimeout = time.Second
		logs := runBounded(t, &CommandRunner{KillGrace: outlast}, j)
		if got := outputLines(t, logs, "stdout"); len(got) != 1 || got[0] != "locked" {
			t.Fatalf("output %q: the command did not get as far as its lock", got)
		}
		if term := one(t, logs, "terminating command's process group"); term["reason"] != "command_timeout" || term["signal"] != "SIGTERM" {
			t.Errorf("terminate record %v", term)
		}
		if end := one(t, logs, "command exited"); end["status"] != 7.0 {
			t.Errorf("end record %v, want status 7 from the TERM trap", end)
		}
		if n := len(logs.find(t, "killing command's process group")); n != 0 {
			t.Errorf("%d SIGKILL records for a command that exited on SIGTERM", n)
		}
		if _, err := os.Stat(lock); !os.IsNotExist(err) {
			t.Errorf("lock file left: %v", err)
		}
	})
	t.Run("TERM ignored", func(t *testing.T) {
		j := shJob(t, "trap '' TERM\nsleep 1000\n")
		j.Handler.CommandTimeout = 500 * time.Millisecond
		grace := 500 * time.Millisecond
		begin := time.Now()
		logs := runBounded(t, &CommandRunner{KillGrace: grace}, j)
		if d := time.Since(begin); d < j.Handler.CommandTimeout+grace {
			t.Errorf("Run took %v, less than timeout and grace", d)
		}
		one(t, logs, "terminating command's process group")
		if kill := one(t, logs, "killing command's process group"); kill["signal"] != "SIGKILL" || kill["reason"] != "command_timeout" {
			t.Errorf("kill record %v", kill)
		}
		if end := one(t, logs, "command killed by signal"); end["signal"] != "SIGKILL" {
			t.Errorf("end record %v, want SIGKILL", end)
		}
	})
}

// TestShutdownTermThenKill: at the end of the shutdown grace a command
// that ignores SIGTERM is killed KillGrace later.
func TestShutdownTermThenKill(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(dir, "script.sh")
	if err := os.WriteFile(script, []byte(fmt.Sprintf("trap '' TERM\necho ready > %s\nsleep 1000\n", fifo)), 0o755); err != nil {
		t.Fatal(err)
	}
	hc := testHandler("alice")
	hc.Path, hc.Command = "/bin/sh", []string{"sh", script}
	logs := &logBuf{}
	r := &CommandRunner{Log: newLogger(logs), KillGrace: 200 * time.Millisecond}
	x := New(Options{Handlers: []config.Handler{hc}, Log: newLogger(logs), Clock: clocktest.New(epoch), Runner: r})
	x.Deliver(newEvent("alice", "x"), peer)
	if b, err := os.ReadFile(fifo); err != nil || string(b) != "ready\n" {
		t.Fatalf("fifo: %q, %v", b, err)
	}
	x.Shutdown(0)
	if term := one(t, logs, "terminating command's process group"); term["reason"] != "shutdown" {
		t.Errorf("terminate record %v", term)
	}
	if kill := one(t, logs, "killing command's process group"); kill["reason"] != "shutdown" {
		t.Errorf("kill record %v", kill)
	}
	if end := one(t, logs, "command killed by signal"); end["signal"] != "SIGKILL" {
		t.Errorf("end record %v, want SIGKILL", end)
	}
}

// TestRunHugeEventStarts runs a real command with a 60 KiB RFC 2047
// subject and a 60 KiB raw one: the values are capped and it starts.
func TestRunHugeEventStarts(t *testing.T) {
	word := "=?UTF-8?B?" + base64.StdEncoding.EncodeToString([]byte("Grüße aus München ✓ 日本語")) + "?="
	encoded := strings.TrimSpace(strings.Repeat(word+" ", 60<<10/(len(word)+1)+1))
	raw := strings.Repeat("€", 60<<10/3)
	j := realJob(t, "/bin/sh", "sh", "-c", `printf '%s %s %s\n' ${#IMSE_SUBJECT} ${#IMSE_SUBJECT_RAW} ${#IMSE_FROM}`)
	ev := newEvent("alice", encoded)
	ev.From = &raw
	j.Env = eventEnv(BaseEnv(j.Handler), &ev, 1, peer)
	logs := runLogged(t, &CommandRunner{}, context.Background(), j)
	if n := len(logs.find(t, "command failed to start")); n != 0 {
		t.Fatalf("command failed to start; log:\n%s", logs.String())
	}
	got := outputLines(t, logs, "stdout")
	if len(got) != 1 {
		t.Fatalf("output %q; log:\n%s", got, logs.String())
	}
	// ${#} counts characters in a UTF-8 locale and bytes in C; either
	// way at most the byte cap.
	for _, f := range strings.Fields(got[0]) {
		if n, err := strconv.Atoi(f); err != nil || n == 0 || n > event.MaxValue {
			t.Errorf("value length %q, want 1..%d", f, event.MaxValue)
		}
	}
}

// TestRunEnvTooLarge: an environment execve would refuse is refused
// with a reason, and nothing starts.
func TestRunEnvTooLarge(t *testing.T) {
	for name, env := range map[string]map[string]string{
		"one value over 128 KiB": {"BIG": strings.Repeat("x", 128<<10)},
		"over 1 MiB in all":      {"A": strings.Repeat("x", 100<<10), "B": strings.Repeat("x", 100<<10), "C": strings.Repeat("x", 100<<10), "D": strings.Repeat("x", 100<<10), "E": strings.Repeat("x", 100<<10), "F": strings.Repeat("x", 100<<10), "G": strings.Repeat("x", 100<<10), "H": strings.Repeat("x", 100<<10), "I": strings.Repeat("x", 100<<10), "J": strings.Repeat("x", 100<<10), "K": strings.Repeat("x", 100<<10)},
	} {
		t.Run(name, func(t *testing.T) {
			j := realJob(t, "/bin/true", "true")
			j.Handler.Env = env
			ev := newEvent("alice", "x")
			j.Env = eventEnv(BaseEnv(j.Handler), &ev, 1, peer)
			logs := runLogged(t, &CommandRunner{}, context.Background(), j)
			rec := one(t, logs, "command not started: its environment cannot be passed to execve")
			if rec["level"] != "ERROR" || rec["err"] == "" {
				t.Errorf("record %v", rec)
			}
			if n := len(logs.find(t, "command started")); n != 0 {
				t.Errorf("%d commands started", n)
			}
		})
	}
	// Just under both bounds still runs.
	j := realJob(t, "/bin/true", "true")
	j.Handler.Env = map[string]string{"BIG": strings.Repeat("x", 128<<10-len("BIG=")-1)}
	ev := newEvent("alice", "x")
	j.Env = eventEnv(BaseEnv(j.Handler), &ev, 1, peer)
	logs := runLogged(t, &CommandRunner{}, context.Background(), j)
	if end := one(t, logs, "command exited"); end["status"] != 0.0 {
		t.Errorf("end record %v", end)
	}
}

// resultOf runs j with a CommandRunner and returns its Result and the
// pids Started was called with.
func resultOf(t *testing.T, r *CommandRunner, j Job) (Result, []int, *logBuf) {
	t.Helper()
	var pids []int
	j.Started = func(pid int) { pids = append(pids, pid) }
	logs := &logBuf{}
	r.Log = newLogger(logs)
	done := make(chan Result, 1)
	go func() { done <- r.Run(context.Background(), j) }()
	select {
	case res := <-done:
		return res, pids, logs
	case <-time.After(safety):
		t.Fatalf("Run did not return; log:\n%s", logs.String())
		return Result{}, nil, nil
	}
}

// TestRunResult: what Run reports of each way a command can end, and the
// pid it hands Started.
func TestRunResult(t *testing.T) {
	t.Run("exit 0", func(t *testing.T) {
		before := time.Now()
		res, pids, logs := resultOf(t, &CommandRunner{}, shJob(t, "echo $$\n"))
		if res.Failed() || res.ExitStatus != 0 || res.Signal != "" || res.TimedOut || res.Err != nil {
			t.Errorf("result %+v, want a success", res)
		}
		if res.Start.Before(before) || res.Start.After(time.Now()) || res.Duration <= 0 {
			t.Errorf("start %v, duration %v", res.Start, res.Duration)
		}
		out := outputLines(t, logs, "stdout")
		if len(pids) != 1 || len(out) != 1 || strconv.Itoa(pids[0]) != out[0] {
			t.Errorf("Started got %v, the command says its pid is %q", pids, out)
		}
		if start := one(t, logs, "command started"); start["pid"] != float64(pids[0]) {
			t.Errorf("start record %v, Started got %v", start, pids)
		}
	})
	t.Run("exit 3", func(t *testing.T) {
		res, pids, _ := resultOf(t, &CommandRunner{}, shJob(t, "exit 3\n"))
		if !res.Failed() || res.ExitStatus != 3 || res.Signal != "" || res.TimedOut || res.Err != nil || len(pids) != 1 {
			t.Errorf("result %+v, pids %v; want exit status 3", res, pids)
		}
	})
	t.Run("signal", func(t *testing.T) {
		res, _, _ := resultOf(t, &CommandRunner{}, shJob(t, "kill -KILL $$\n"))
		if !res.Failed() || res.ExitStatus != -1 || res.Signal != "SIGKILL" || res.TimedOut || res.Err != nil {
			t.Errorf("result %+v, want killed by SIGKILL", res)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		j := shJob(t, "exec sleep 100\n")
		j.Handler.CommandTimeout = 200 * time.Millisecond
		res, _, _ := resultOf(t, &CommandRunner{KillGrace: outlast}, j)
		if !res.Failed() || res.ExitStatus != -1 || res.Signal != "SIGTERM" || !res.TimedOut || res.Err != nil {
			t.Errorf("result %+v, want timed out, SIGTERM", res)
		}
	})
	t.Run("timeout, exits on TERM", func(t *testing.T) {
		// As in TestRunTermFirst: the trap is the script's first line,
		// long before the timeout.
		j := shJob(t, "trap 'exit 0' TERM\nsleep 1000 &\nwait\n")
		j.Handler.CommandTimeout = time.Second
		res, _, _ := resultOf(t, &CommandRunner{KillGrace: outlast}, j)
		// Exit status 0, but terminated at its timeout: a failure.
		if !res.Failed() || res.ExitStatus != 0 || res.Signal != "" || !res.TimedOut || res.Err != nil {
			t.Errorf("result %+v, want timed out with exit status 0", res)
		}
	})
	t.Run("cancelled is not a timeout", func(t *testing.T) {
		fifo := filepath.Join(t.TempDir(), "fifo")
		if err := unix.Mkfifo(fifo, 0o600); err != nil {
			t.Fatal(err)
		}
		j := shJob(t, fmt.Sprintf("echo started > %s\nexec sleep 100\n", fifo))
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan Result, 1)
		go func() { done <- (&CommandRunner{Log: newLogger(&logBuf{})}).Run(ctx, j) }()
		if b, err := os.ReadFile(fifo); err != nil || string(b) != "started\n" {
			t.Fatalf("fifo: %q, %v", b, err)
		}
		cancel()
		select {
		case res := <-done:
			if res.Signal != "SIGTERM" || res.TimedOut {
				t.Errorf("result %+v, want SIGTERM, not timed out", res)
			}
		case <-time.After(safety):
			t.Fatal("Run did not return")
		}
	})
	t.Run("cannot start", func(t *testing.T) {
		res, pids, _ := resultOf(t, &CommandRunner{}, realJob(t, filepath.Join(t.TempDir(), "missing"), "prog"))
		if !res.Failed() || res.Err == nil || res.ExitStatus != -1 || res.Signal != "" || len(pids) != 0 {
			t.Errorf("result %+v, pids %v; want a start failure without Started", res, pids)
		}
	})
	t.Run("environment too large", func(t *testing.T) {
		j := realJob(t, "/bin/true", "true")
		j.Env = append(j.Env, "BIG="+strings.Repeat("x", 128<<10))
		res, pids, _ := resultOf(t, &CommandRunner{}, j)
		if !res.Failed() || res.Err == nil || !strings.Contains(res.Err.Error(), "BIG") || len(pids) != 0 {
			t.Errorf("result %+v, pids %v; want a start failure naming BIG", res, pids)
		}
	})
}
