//go:build linux

package main

// Restart, isolation and reload, tried on the real binary as an operator
// and a hostile account would: kill -9 and SIGSTOP of children, crash
// loops, SIGHUP with good and bad files.

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imserious/imserious/internal/daemontest"
)

// twoAccounts returns the configuration head and the two accounts that
// handlers run as; privilege separation needs root to give them two uids.
func twoAccounts(t *testing.T) (head, alice, bob string) {
	t.Helper()
	if !isRoot() {
		t.Skip("needs root: two exec processes need two accounts (CI runs this as root)")
	}
	alice, _ = account(t, "imse_alice")
	bob, _ = account(t, "imse_bob")
	return fmt.Sprintf("listen = \"127.0.0.1:0\"\n%s%s", daemontest.LogTOML, daemontest.PrivsepTOML(t)), alice, bob
}

// echoCmd is a command that logs its trigger and IMSE_UID.
const echoCmd = `["/bin/sh", "-c", "echo \"trigger=$IMSE_TRIGGER uid=$IMSE_UID\""]`

func handlerTOML(user, command, extra string) string {
	return fmt.Sprintf("[[handler]]\nuser = %q\ncommand = %s\nlimit_burst = 1000\nlimit_period = \"1ms\"\n%s\n", user, command, extra)
}

// waitChild waits until the daemon has a child in role other than old
// (pid 0: any) and returns it.
func waitChild(t *testing.T, d *daemontest.Daemon, role string, old int) daemontest.Proc {
	t.Helper()
	deadline := time.Now().Add(daemontest.WaitLimit)
	for time.Now().Before(deadline) {
		if p, ok := d.Children()[role]; ok && p.Pid != old {
			return p
		}
		// The restart is logged; wait for the next line rather than spin.
		m := d.Mark()
		d.WaitFrom(t, m, "a log line", func(daemontest.Line) bool { return true })
	}
	t.Fatalf("no new %s child within %v", role, daemontest.WaitLimit)
	return daemontest.Proc{}
}

func isLost(role string) func(daemontest.Line) bool {
	return func(l daemontest.Line) bool {
		return strings.HasPrefix(l.Str("msg"), "lost child "+role+" ")
	}
}

func runOf(user, trigger string) func(daemontest.Line) bool {
	return func(l daemontest.Line) bool {
		return l.Str("msg") == "command output" && l.Str("user") == user &&
			strings.HasPrefix(l.Str("line"), "trigger="+trigger)
	}
}

// kill -9 of the network process during a stream of requests: no client
// is refused (the socket stays bound in the parent), the process comes
// back, and every event answered 200 is followed by a run.
func TestNetKilledLosesNothing(t *testing.T) {
	user, _ := account(t, "imse_alice")
	cfg := fmt.Sprintf("listen = \"127.0.0.1:0\"\n%s%s%s", daemontest.LogTOML, daemontest.PrivsepTOML(t), handlerTOML(user, echoCmd, ""))
	d := start(t, cfg)
	netp := d.Children()["net"]
	client := &http.Client{Timeout: 10 * time.Second}
	last, killed, resets := 0, false, 0
	for i := 1; i <= 400; i++ {
		if i == 100 {
			if err := syscall.Kill(netp.Pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
		req, _ := http.NewRequest("PUT", notifyURL(d), strings.NewReader(fmt.Sprintf(body1, user, i)))
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("request %d refused while the network process restarted", i)
		}
		if err != nil {
			resets++ // in flight when the process died: Dovecot retries
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: status %d", i, resp.StatusCode)
		}
		last = i
	}
	if !killed || last != 400 {
		t.Fatalf("last accepted %d", last)
	}
	d.WaitFor("the lost network process", isLost("net"))
	if n := waitChild(t, d, "net", netp.Pid); n.Pid == netp.Pid {
		t.Fatal("no new network process")
	}
	// The last accepted event runs: its uid, or a recovery after it.
	d.WaitFor("the run of the last event", func(l daemontest.Line) bool {
		return l.Str("msg") == "command output" && (l.Str("line") == "trigger=event uid=400" || strings.HasPrefix(l.Str("line"), "trigger=recovery"))
	})
	t.Logf("%d requests failed in flight at the kill", resets)
	if code := d.Stop(); code != 0 {
		t.Errorf("exit status %d", code)
	}
}

// kill -9 of the network process while nothing is in flight: it answers
// an event once it is queued, before it is sent, so an event accepted
// just before the kill may not have reached its exec process. Every exec
// process is then owed a recovery: each handler of each account runs
// once, and no exec process was restarted for it.
func TestNetKilledRecoversEveryExec(t *testing.T) {
	head, alice, bob := twoAccounts(t)
	d := start(t, head+handlerTOML(alice, echoCmd, "")+handlerTOML(bob, echoCmd, ""))
	kids := d.Children()
	if err := syscall.Kill(kids["net"].Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	d.WaitFor("the lost network process", isLost("net"))
	d.WaitFor("alice's recovery run", runOf(alice, "recovery"))
	d.WaitFor("bob's recovery run", runOf(bob, "recovery"))
	for _, acct := range []string{alice, bob} {
		if p := d.Children()["exec:"+acct]; p.Pid != kids["exec:"+acct].Pid {
			t.Errorf("%s's exec process changed: %d -> %d", acct, kids["exec:"+acct].Pid, p.Pid)
		}
	}
	if code := d.Stop(); code != 0 {
		t.Errorf("exit status %d", code)
	}
}

// The account alice can kill -9 her own exec process: the daemon logs it,
// starts it again, runs her handlers once as recovery, and bob's running
// command and requests are untouched.
func TestExecKilledIsRestartedAlone(t *testing.T) {
	head, alice, bob := twoAccounts(t)
	dir := daemontest.PublicDir(t)
	gate := dir + "/gate"
	bobCmd := fmt.Sprintf(`["/bin/sh", "-c", "while [ ! -e %s ]; do sleep 0.05; done; echo bob-finished"]`, gate)
	d := start(t, head+handlerTOML(alice, echoCmd, "")+handlerTOML(bob, bobCmd, ""))
	kids := d.Children()
	oldAlice := kids["exec:"+alice]

	if resp := notify(t, notifyURL(d), fmt.Sprintf(body1, bob, 1), nil); resp.StatusCode != 200 {
		t.Fatalf("bob: %d", resp.StatusCode)
	}
	d.WaitFor("bob's command", func(l daemontest.Line) bool { return l.Str("msg") == "command started" && l.Str("user") == bob })
	if err := syscall.Kill(oldAlice.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	lost := d.WaitFor("alice's lost exec process", isLost("exec["+alice+"]"))
	if !strings.Contains(lost.Str("msg"), fmt.Sprintf("(pid %d): signal: killed", oldAlice.Pid)) {
		t.Errorf("lost line %q", lost.Str("msg"))
	}
	// While hers is down or coming back, her events are accepted.
	if resp := notify(t, notifyURL(d), fmt.Sprintf(body1, alice, 2), nil); resp.StatusCode != 200 {
		t.Fatalf("alice while restarting: %d", resp.StatusCode)
	}
	waitChild(t, d, "exec:"+alice, oldAlice.Pid)
	d.WaitFor("alice's recovery run", runOf(alice, "recovery"))
	// Bob's exec process and command were never touched.
	if p := d.Children()["exec:"+bob]; p.Pid != kids["exec:"+bob].Pid {
		t.Errorf("bob's exec process changed: %d -> %d", kids["exec:"+bob].Pid, p.Pid)
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	d.WaitFor("bob's command finishing", func(l daemontest.Line) bool {
		return l.Str("msg") == "command output" && l.Str("line") == "bob-finished"
	})
	if code := d.Stop(); code != 0 {
		t.Errorf("exit status %d", code)
	}
}

// alice SIGSTOPs her exec process: bob's notifications are answered as
// before, hers are still accepted, and once it runs again a recovery run
// covers what it could not take.
func TestExecStoppedDelaysNobody(t *testing.T) {
	head, alice, bob := twoAccounts(t)
	d := start(t, head+handlerTOML(alice, echoCmd, "")+handlerTOML(bob, echoCmd, ""))
	alicep := d.Children()["exec:"+alice]
	if err := syscall.Kill(alicep.Pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	cont := func() { syscall.Kill(alicep.Pid, syscall.SIGCONT) }
	defer cont()
	big := fmt.Sprintf(`{"user":%q,"event":"MessageNew","snippet":%q}`, alice, strings.Repeat("x", 60<<10))
	var slowest time.Duration
	for i := range 60 {
		b := fmt.Sprintf(body1, bob, i)
		u := bob
		if i%2 == 0 {
			b, u = big, alice // more than her socket holds
		}
		t0 := time.Now()
		resp := notify(t, notifyURL(d), b, nil)
		took := time.Since(t0)
		if resp.StatusCode != 200 {
			t.Fatalf("%s's request %d: %d", u, i, resp.StatusCode)
		}
		if u == bob {
			slowest = max(slowest, took)
		}
	}
	t.Logf("slowest of bob's requests with alice's exec process stopped: %v", slowest)
	// A failure bound, not a measurement: before isolation, bob's
	// requests waited for the request timeout (5s) behind alice's.
	if slowest > time.Second {
		t.Errorf("bob's slowest request took %v", slowest)
	}
	d.WaitFor("bob's run", runOf(bob, "event"))
	d.WaitFor("the network process noticing", func(l daemontest.Line) bool {
		return strings.HasPrefix(l.Str("msg"), "exec process not taking events")
	})
	cont()
	d.WaitFor("alice's run after her recovery", runAfterRecovery(alice))
	if code := d.Stop(); code != 0 {
		t.Errorf("exit status %d", code)
	}
}

// runAfterRecovery matches the first start of a command of user's exec
// process after that process was asked for a recovery. The run may be
// an event's: a recovery that finds a run pending coalesces into it
// (spec: events during a delay or a running command make one run), and
// that run starts after it all the same.
func runAfterRecovery(user string) func(daemontest.Line) bool {
	asked := false
	return func(l daemontest.Line) bool {
		switch {
		case l.Str("proc") == "exec["+user+"]" && strings.HasPrefix(l.Str("msg"), "recovery requested"):
			asked = true
		case asked && l.Str("msg") == "command started" && l.Str("user") == user:
			return true
		}
		return false
	}
}

// More than 5 crashes within a minute stop the daemon with status 1.
func TestCrashLoopStopsDaemon(t *testing.T) {
	d, kids := startOneHandler(t)
	pid := kids["net"].Pid
	for i := 1; i <= 6; i++ {
		m := d.Mark()
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if i == 6 {
			break
		}
		d.WaitFrom(t, m, fmt.Sprintf("crash %d", i), isLost("net"))
		pid = waitChild(t, d, "net", pid).Pid
		// Serving again (a request waits in the socket's queue until the
		// new process accepts it) before the next kill.
		if resp := notify(t, notifyURL(d), fmt.Sprintf(body1, "nobody-here", i), nil); resp.StatusCode != 200 {
			t.Fatalf("after restart %d: %d", i, resp.StatusCode)
		}
	}
	if code := d.WaitExit("the sixth crash"); code != 1 {
		t.Errorf("exit status %d, want 1", code)
	}
	d.WaitFor("the reason", func(l daemontest.Line) bool {
		return strings.Contains(l.Str("err"), "more than 5 crashes of children within 1m0s")
	})
	for role, pi := range kids {
		if _, alive := daemontest.ReadProc(pi.Pid); alive {
			t.Errorf("child %s (pid %d) outlived the daemon", role, pi.Pid)
		}
	}
}

// An account can kill its own exec process at will: however often it
// does, the daemon goes on for everyone (only the network process's
// crashes are the daemon's budget), and the process comes back.
func TestExecKillsDoNotStopDaemon(t *testing.T) {
	d, kids := startOneHandler(t)
	var role string
	for r := range kids {
		if strings.HasPrefix(r, "exec:") {
			role = r
		}
	}
	name := "exec[" + strings.TrimPrefix(role, "exec:") + "]"
	pid := kids[role].Pid
	for i := 1; i <= 8; i++ {
		m := d.Mark()
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		d.WaitFrom(t, m, fmt.Sprintf("loss %d", i), isLost(name))
		started := d.WaitFrom(t, m, fmt.Sprintf("restart %d", i), func(l daemontest.Line) bool {
			return l.Str("msg") == "started child" && l.Str("child") == name
		})
		p, ok := started.Num("pid")
		if !ok {
			t.Fatalf("no pid in %v", started)
		}
		pid = p
	}
	if resp := notify(t, notifyURL(d), fmt.Sprintf(body1, "nobody-here", 1), nil); resp.StatusCode != 200 {
		t.Fatalf("after 8 kills: %d", resp.StatusCode)
	}
	if code := d.Stop(); code != 0 {
		t.Errorf("exit status %d", code)
	}
}

// rewrite replaces the daemon's configuration file and sends SIGHUP; it
// returns the log mark from before the signal.
func rewrite(t *testing.T, d *daemontest.Daemon, text string) int {
	t.Helper()
	path := d.Cmd.Args[len(d.Cmd.Args)-1]
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	m := d.Mark()
	if err := d.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	return m
}

func reloaded(t *testing.T, d *daemontest.Daemon, from int) daemontest.Line {
	t.Helper()
	return d.WaitFrom(t, from, "the reload", func(l daemontest.Line) bool {
		return l.Str("msg") == "configuration in force" || l.Str("msg") == "reload failed, the running configuration stays in force"
	})
}

// SIGHUP reloads the whole configuration: a delayed event survives and
// runs once at its time, handlers and accounts come and go, a broken file
// changes nothing, a new listen address is bound.
func TestSIGHUPReload(t *testing.T) {
	head, alice, bob := twoAccounts(t)
	delayed := handlerTOML(alice, echoCmd, `delay = "2s"`)
	d := start(t, head+delayed)
	kids := d.Children()
	t0 := time.Now()
	if resp := notify(t, notifyURL(d), fmt.Sprintf(body1, alice, 7), nil); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	d.WaitFor("the delay", func(l daemontest.Line) bool { return l.Str("msg") == "burst started, run delayed" })

	// Bob appears: his exec process starts; alice's handler is unchanged
	// (it moved down the file) and keeps its pending event.
	m := rewrite(t, d, head+handlerTOML(bob, echoCmd, "")+delayed)
	if l := reloaded(t, d, m); l.Str("msg") != "configuration in force" {
		t.Fatalf("reload: %v", l)
	}
	bobp := waitChild(t, d, "exec:"+bob, 0)
	if p := d.Children()["exec:"+alice]; p.Pid != kids["exec:"+alice].Pid {
		t.Errorf("alice's exec process was replaced by a reload that kept her account")
	}
	if p := d.Children()["net"]; p.Pid != kids["net"].Pid {
		t.Errorf("the network process was replaced by a reload that changed only handlers")
	}
	if resp := notify(t, notifyURL(d), fmt.Sprintf(body1, bob, 1), nil); resp.StatusCode != 200 {
		t.Fatalf("bob: %d", resp.StatusCode)
	}
	d.WaitFor("bob's run", runOf(bob, "event"))
	run := d.WaitFor("alice's delayed run", runOf(alice, "event"))
	if took := time.Since(t0); took < 2*time.Second {
		t.Errorf("the delayed run came after %v, before its delay", took)
	}
	if l := run.Str("line"); l != "trigger=event uid=7" {
		t.Errorf("delayed run %q", l)
	}

	// A new chroot for the network process: a new one is started, and the
	// exec processes stay.
	head = fmt.Sprintf("listen = \"127.0.0.1:0\"\n%s%s", daemontest.LogTOML, daemontest.PrivsepTOML(t))
	m = rewrite(t, d, head+handlerTOML(bob, echoCmd, "")+delayed)
	if l := reloaded(t, d, m); l.Str("msg") != "configuration in force" {
		t.Fatalf("reload: %v", l)
	}
	newNet := waitChild(t, d, "net", kids["net"].Pid)
	if p := d.Children()["exec:"+bob]; p.Pid != bobp.Pid {
		t.Errorf("bob's exec process was replaced by a change of [privsep]")
	}
	kids["net"] = newNet
	if resp := notify(t, notifyURL(d), fmt.Sprintf(body1, bob, 3), nil); resp.StatusCode != 200 {
		t.Fatalf("bob after the network process changed: %d", resp.StatusCode)
	}

	// A broken file: every error is logged with its line, nothing changes.
	m = rewrite(t, d, head+handlerTOML(bob, echoCmd, "delai = \"1s\""))
	if l := reloaded(t, d, m); l.Str("msg") != "reload failed, the running configuration stays in force" {
		t.Fatalf("broken file: %v", l)
	}
	if len(d.Since(m, func(l daemontest.Line) bool { return strings.Contains(l.Str("msg"), "delai") })) == 0 {
		t.Errorf("the error was not logged")
	}
	if resp := notify(t, notifyURL(d), fmt.Sprintf(body1, alice, 8), nil); resp.StatusCode != 200 {
		t.Fatalf("alice after a failed reload: %d", resp.StatusCode)
	}

	// Alice disappears with her account; a new address is bound.
	oldURL := notifyURL(d)
	m = rewrite(t, d, strings.Replace(head, "127.0.0.1:0", "127.0.0.2:0", 1)+handlerTOML(bob, echoCmd, ""))
	if l := reloaded(t, d, m); l.Str("msg") != "configuration in force" {
		t.Fatalf("reload: %v", l)
	}
	if !waitGone(t, kids["exec:"+alice].Pid, daemontest.WaitLimit) {
		t.Errorf("alice's exec process outlived her account")
	}
	l := d.WaitFrom(t, m, "the new address", func(l daemontest.Line) bool { return l.Str("msg") == "listening" })
	if !strings.HasPrefix(l.Str("addr"), "127.0.0.2:") {
		t.Fatalf("listening on %q", l.Str("addr"))
	}
	// The old network process finishes its requests and goes; with it
	// the last descriptor of the old socket.
	if !waitGone(t, kids["net"].Pid, daemontest.WaitLimit) {
		t.Fatalf("the old network process outlived the old address")
	}
	if _, err := http.Post(oldURL, "application/json", strings.NewReader("{}")); err == nil {
		t.Errorf("the old address still answers")
	}
	d.Addr = l.Str("addr")
	if resp := notify(t, notifyURL(d), fmt.Sprintf(body1, bob, 2), nil); resp.StatusCode != 200 {
		t.Fatalf("bob on the new address: %d", resp.StatusCode)
	}
	if p := d.Children()["exec:"+bob]; p.Pid != bobp.Pid {
		t.Errorf("bob's exec process was replaced")
	}
	if code := d.Stop(); code != 0 {
		t.Errorf("exit status %d", code)
	}
}

// SIGTERM ends the daemon within timeout and grace even with a stopped
// network process.
func TestSIGTERMWithStoppedNet(t *testing.T) {
	d, kids := startOneHandler(t)
	if err := syscall.Kill(kids["net"].Pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	d.Cmd.Process.Signal(syscall.SIGTERM)
	if code := d.WaitExit("SIGTERM"); code != 0 {
		t.Errorf("exit status %d", code)
	}
	if took := time.Since(t0); took > 20*time.Second {
		t.Errorf("took %v to stop", took)
	}
}
