package main

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imserious/imserious/internal/daemontest"
	"github.com/imserious/imserious/privsep"
)

// hookAccounts are the accounts of the wildcard tests: each gets a hook
// in its home unless the test says otherwise.
const hookAccounts = 20

func hookUser(i int) string { return fmt.Sprintf("imse_w%02d", i) }

// writeHook installs a's hook printing its uid, IMSE_USER and trigger,
// owned by owner with mode mode.
func writeHook(t *testing.T, a, owner privsep.Account, mode os.FileMode) string {
	t.Helper()
	return daemontest.WriteHook(t, a, owner, mode, "#!/bin/sh\necho \"hook uid=$(id -u) user=$IMSE_USER trigger=$IMSE_TRIGGER\"\n")
}

// lowAccount is a system account (uid below 1000) with a good hook.
func lowAccount(t *testing.T) privsep.Account {
	t.Helper()
	const name = "imse_wlow"
	if _, err := privsep.LookupAccount(name); err != nil {
		if out, err := exec.Command("useradd", "-r", "-m", "-s", "/bin/sh", name).CombinedOutput(); err != nil {
			t.Fatalf("useradd -r %s: %v\n%s", name, err, out)
		}
	}
	a, err := privsep.LookupAccount(name)
	if err != nil {
		t.Fatal(err)
	}
	if a.UID >= 1000 {
		t.Fatalf("%s has uid %d, want a system uid below 1000", name, a.UID)
	}
	return a
}

func hookRan(user string) func(daemontest.Line) bool {
	return func(l daemontest.Line) bool {
		return l.Str("msg") == "command output" && strings.Contains(l.Str("line"), "user="+user+" ")
	}
}

func execChildren(d *daemontest.Daemon) []string {
	var out []string
	for role := range d.Children() {
		if strings.HasPrefix(role, "exec:") {
			out = append(out, role)
		}
	}
	return out
}

// TestWildcardHooks is issue 10's end to end case: one handler for every
// user of a domain runs each user's own hook as that user, exec processes
// come on demand within max_exec and go after exec_idle, and the rules of
// the account and of the hook hold.
func TestWildcardHooks(t *testing.T) {
	if !isRoot() {
		t.Skip("needs root: hooks run as real accounts (CI runs this as root)")
	}
	var accts []privsep.Account
	for i := range hookAccounts {
		accts = append(accts, daemontest.Account(t, hookUser(i)))
	}
	for _, a := range accts {
		if a.UID < 1000 {
			t.Fatalf("%s has uid %d: useradd gave a system uid", a.Name, a.UID)
		}
	}
	low := lowAccount(t)
	// accts[0..14]: good hooks; 15: none; 16: writable by others; 17:
	// owned by another account; 18: a good hook in a group-writable
	// directory; 19: good.
	hooks := map[string]bool{}
	for i, a := range accts {
		os.RemoveAll(filepath.Join(a.Home, ".config"))
		switch i {
		case 15:
		case 16:
			writeHook(t, a, a, 0o757)
		case 17:
			writeHook(t, a, accts[0], 0o755)
		case 18:
			p := writeHook(t, a, a, 0o755)
			if err := os.Chmod(filepath.Dir(p), 0o775); err != nil {
				t.Fatal(err)
			}
		default:
			writeHook(t, a, a, 0o755)
			hooks[a.Name] = true
		}
	}
	os.RemoveAll(filepath.Join(low.Home, ".config"))
	writeHook(t, low, low, 0o755)

	conf := fmt.Sprintf("listen = \"127.0.0.1:0\"\n%s%s", daemontest.LogTOML,
		strings.Replace(daemontest.PrivsepTOML(t), "[privsep]\n", "[privsep]\nexec_idle = \"2s\"\nmax_exec = 4\n", 1))
	conf += `
[[handler]]
user = "*@example.org"
run_as = "%n"
command = "~/.config/imserious/new-mail"
`
	if !strings.Contains(conf, "max_exec = 4") {
		t.Fatalf("no [privsep] table to extend:\n%s", conf)
	}
	d := start(t, conf)
	if kids := execChildren(d); len(kids) != 0 {
		t.Fatalf("exec processes before any event: %v", kids)
	}

	// Every account notified at once, plus root and the low account.
	var most int
	var sampling sync.WaitGroup
	stop := make(chan struct{})
	sampling.Add(1)
	go func() {
		defer sampling.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			most = max(most, len(execChildren(d)))
		}
	}()
	users := []string{"root@example.org", low.Name + "@example.org", "nosuchaccount@example.org"}
	for _, a := range accts {
		users = append(users, a.Name+"@example.org")
	}
	var wg sync.WaitGroup
	for i, u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if resp := notify(t, notifyURL(d), fmt.Sprintf(body1, u, i+1), nil); resp.StatusCode != http.StatusOK {
				t.Errorf("%s: status %d", u, resp.StatusCode)
			}
		}()
	}
	wg.Wait()
	for _, a := range accts {
		if !hooks[a.Name] {
			continue
		}
		l := d.WaitFor(a.Name+"'s hook", hookRan(a.Name+"@example.org"))
		if want := fmt.Sprintf("hook uid=%d user=%s@example.org trigger=event", a.UID, a.Name); l.Str("line") != want {
			t.Errorf("%s's hook printed %q, want %q", a.Name, l.Str("line"), want)
		}
	}
	for _, why := range []struct{ user, reason string }{
		{"root", "uid 0"},
		{low.Name, "min_uid"},
		{accts[16].Name, "writable"},
		{accts[17].Name, "owned"},
		{accts[18].Name, "writable"},
	} {
		d.WaitFor(why.user+" refused", func(l daemontest.Line) bool {
			return strings.Contains(fmt.Sprint(l), why.user) && strings.Contains(strings.ToLower(fmt.Sprint(l)), why.reason) &&
				(l.Str("level") == "WARN" || l.Str("level") == "INFO")
		})
	}
	close(stop)
	sampling.Wait()
	if most > 4 {
		t.Errorf("%d exec processes at once, max_exec = 4", most)
	}
	for _, u := range []string{"root@example.org", low.Name + "@example.org", accts[15].Name + "@example.org",
		accts[16].Name + "@example.org", accts[17].Name + "@example.org", accts[18].Name + "@example.org"} {
		if n := d.Count(hookRan(u)); n != 0 {
			t.Errorf("%s: a hook ran %d times", u, n)
		}
	}

	// After exec_idle, no exec process is left (none can start: no
	// event comes).
	for role, p := range d.Children() {
		if strings.HasPrefix(role, "exec:") && !waitGone(t, p.Pid, daemontest.WaitLimit) {
			t.Fatalf("%s still there after exec_idle", role)
		}
	}

	// A further event brings one back, and its hook runs.
	m := d.Mark()
	if resp := notify(t, notifyURL(d), fmt.Sprintf(body1, accts[0].Name+"@example.org", 99), nil); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	d.WaitFrom(t, m, "the hook again", hookRan(accts[0].Name+"@example.org"))
}

// TestVirtualUsersOneAccount: a wildcard handler with a literal run_as
// runs every user's events in one exec process, with per-user state and
// IMSE_USER saying whose mail it is.
func TestVirtualUsersOneAccount(t *testing.T) {
	if !isRoot() {
		t.Skip("needs root: the handler runs as a real account (CI runs this as root)")
	}
	vmail, uid := account(t, "imse_vmail")
	conf := fmt.Sprintf("listen = \"127.0.0.1:0\"\n%s%s", daemontest.LogTOML, daemontest.PrivsepTOML(t))
	conf += fmt.Sprintf(`
[[handler]]
user = "*"
run_as = %q
command = ["/bin/sh", "-c", "echo \"hook uid=$(id -u) user=$IMSE_USER \""]
`, vmail)
	d := start(t, conf)
	for i, u := range []string{"ann@example.org", "ben@example.net", "cy"} {
		if resp := notify(t, notifyURL(d), fmt.Sprintf(body1, u, i+1), nil); resp.StatusCode != 200 {
			t.Fatalf("%s: status %d", u, resp.StatusCode)
		}
		l := d.WaitFor(u+"'s run", hookRan(u))
		if want := fmt.Sprintf("hook uid=%d user=%s ", uid, u); l.Str("line") != want {
			t.Errorf("printed %q, want %q", l.Str("line"), want)
		}
	}
	if kids := execChildren(d); len(kids) != 1 || kids[0] != "exec:"+vmail {
		t.Errorf("exec processes %v, want only exec:%s", kids, vmail)
	}
}

// wildcardDaemon starts the daemon with one wildcard %n handler running
// each user's hook, and a control socket; it returns the accounts, which
// all have a good hook.
func wildcardDaemon(t *testing.T, n int, extra string) (*daemontest.Daemon, string, []privsep.Account) {
	t.Helper()
	if !isRoot() {
		t.Skip("needs root: hooks run as real accounts (CI runs this as root)")
	}
	var accts []privsep.Account
	for i := range n {
		a := daemontest.Account(t, hookUser(i))
		os.RemoveAll(filepath.Join(a.Home, ".config"))
		writeHook(t, a, a, 0o755)
		accts = append(accts, a)
	}
	sock := filepath.Join(daemontest.PublicDir(t), "ctl.sock")
	conf := fmt.Sprintf("listen = \"127.0.0.1:0\"\n%s%s\n[control]\nsocket = %q\n", daemontest.LogTOML,
		strings.Replace(daemontest.PrivsepTOML(t), "[privsep]\n", "[privsep]\nexec_idle = \"1h\"\n", 1), sock)
	conf += `
[[handler]]
user = "*@example.org"
run_as = "%n"
command = "~/.config/imserious/new-mail"
` + extra
	return start(t, conf), sock, accts
}

// The operator sees each active user of a wildcard handler, and the
// account's on-demand process; imseriousctl run starts one that does not
// exist yet; a killed one comes back and runs its users' hooks once as
// recovery.
func TestWildcardStatusRunRecovery(t *testing.T) {
	d, sock, accts := wildcardDaemon(t, 2, `delay = "1h"`)
	a, b := accts[0], accts[1]
	// a's event waits for its delay: a user state with one event pending.
	if resp := notify(t, notifyURL(d), fmt.Sprintf(body1, a.Name+"@example.org", 1), nil); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	d.WaitFor("a's burst", func(l daemontest.Line) bool {
		return l.Str("msg") == "burst started, run delayed" && l.Str("user") == a.Name+"@example.org"
	})
	st := ctlStatus(t, sock)
	var lines []string
	for _, h := range st.Handlers {
		lines = append(lines, fmt.Sprintf("%d %s %s %s %s %d", h.Handler, h.User, h.Pattern, h.RunAs, h.State, h.Pending))
	}
	want := []string{"1 *@example.org  %n idle 0", fmt.Sprintf("1 %s@example.org *@example.org %s delayed 1", a.Name, a.Name)}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("status handlers:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	found := false
	for _, p := range st.Processes {
		found = found || p.Role == "exec" && p.Account == a.Name && p.PID > 0
	}
	if !found {
		t.Errorf("no exec process of %s in %+v", a.Name, st.Processes)
	}

	// imseriousctl run for b, who has no exec process: one is started,
	// and the manual run waits for the delay like an event's.
	if code, out, errOut := ctlRun(t, "-s", sock, "run", b.Name+"@example.org"); code != 0 {
		t.Fatalf("imseriousctl run: %d %s %s", code, out, errOut)
	}
	d.WaitFor("b's exec process", func(l daemontest.Line) bool {
		return l.Str("msg") == "burst started, run delayed" && l.Str("user") == b.Name+"@example.org"
	})

	// Killing a's process loses its pending run: the new one runs a's
	// hook once as recovery (the delay still applies, so a run is
	// pending again, for a).
	old := d.Children()["exec:"+a.Name]
	if old.Pid == 0 {
		t.Fatalf("no exec:%s child", a.Name)
	}
	m := d.Mark()
	if err := syscall.Kill(old.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	d.WaitFrom(t, m, "a's recovery", func(l daemontest.Line) bool {
		return l.Str("user") == a.Name+"@example.org" && l.Str("msg") == "burst started, run delayed" && l.Str("trigger") == "recovery"
	})
}

// A reload keeps an on-demand exec process whose account the new
// configuration still allows, with the new handlers; one whose handler
// is gone is stopped.
func TestWildcardReload(t *testing.T) {
	d, _, accts := wildcardDaemon(t, 1, "")
	a := accts[0]
	account(t, "imse_vmail")
	if resp := notify(t, notifyURL(d), fmt.Sprintf(body1, a.Name+"@example.org", 1), nil); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	d.WaitFor("the hook", hookRan(a.Name+"@example.org"))
	pid := d.Children()["exec:"+a.Name].Pid
	if pid == 0 {
		t.Fatal("no exec process")
	}
	// The same handler, another argument: the process is kept.
	raw, err := os.ReadFile(d.Cmd.Args[len(d.Cmd.Args)-1])
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(raw), `command = "~/.config/imserious/new-mail"`, `command = "~/.config/imserious/new-mail again"`, 1)
	if l := reloaded(t, d, rewrite(t, d, text)); l.Str("msg") != "configuration in force" {
		t.Fatalf("reload: %v", l)
	}
	if p := d.Children()["exec:"+a.Name].Pid; p != pid {
		t.Errorf("exec process %d replaced by %d on a reload that keeps its account", pid, p)
	}
	m := d.Mark()
	if resp := notify(t, notifyURL(d), fmt.Sprintf(body1, a.Name+"@example.org", 2), nil); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	d.WaitFrom(t, m, "the hook after the reload", hookRan(a.Name+"@example.org"))
	// Without the wildcard handler the account has no place: stopped.
	i := strings.Index(text, "[[handler]]")
	rewrite(t, d, text[:i]+"[[handler]]\nuser = \"nobody-here\"\nrun_as = \"imse_vmail\"\ncommand = \"/bin/true\"\n")
	if !waitGone(t, pid, daemontest.WaitLimit) {
		t.Errorf("exec:%s still there after its handler was removed", a.Name)
	}
}

// A lost exec process of a wildcard handler with a literal run_as is
// owed a recovery for each user whose events it had: the network process
// follows them.
func TestVirtualUsersRecovery(t *testing.T) {
	if !isRoot() {
		t.Skip("needs root: the handler runs as a real account (CI runs this as root)")
	}
	vmail, _ := account(t, "imse_vmail")
	conf := fmt.Sprintf("listen = \"127.0.0.1:0\"\n%s%s", daemontest.LogTOML, daemontest.PrivsepTOML(t))
	conf += fmt.Sprintf("\n[[handler]]\nuser = \"*\"\nrun_as = %q\ndelay = \"1h\"\ncommand = \"/bin/true\"\n", vmail)
	d := start(t, conf)
	users := []string{"ann@example.org", "ben@example.net"}
	for i, u := range users {
		if resp := notify(t, notifyURL(d), fmt.Sprintf(body1, u, i+1), nil); resp.StatusCode != 200 {
			t.Fatalf("%s: status %d", u, resp.StatusCode)
		}
		d.WaitFor(u+"'s burst", func(l daemontest.Line) bool {
			return l.Str("msg") == "burst started, run delayed" && l.Str("user") == u
		})
	}
	old := d.Children()["exec:"+vmail]
	m := d.Mark()
	if err := syscall.Kill(old.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for _, u := range users {
		d.WaitFrom(t, m, u+"'s recovery", func(l daemontest.Line) bool {
			return l.Str("msg") == "burst started, run delayed" && l.Str("user") == u && l.Str("trigger") == "recovery"
		})
	}
}
