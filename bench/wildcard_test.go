//go:build linux

package bench

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imserious/imserious/bench/load"
	"github.com/imserious/imserious/internal/daemontest"
	"github.com/imserious/imserious/privsep"
)

// The wildcard rows: issue 10's scale targets.
const (
	targetPerUser  = 5 << 10 // bytes of the exec process per user with state
	targetHooksRun = time.Second
	// wildcardConns is how many keep-alive connections the notifications
	// for distinct users come over.
	wildcardConns = 4
	// wildcardPeriod is the handler's limit_period: short, so that every
	// user's state is freed (its bucket full again) soon after its run.
	wildcardPeriod = time.Second
	// hookIdle and hookMaxExec are the [privsep] exec_idle and max_exec of
	// the hooks row.
	hookIdle    = 2 * time.Second
	hookMaxExec = 128
	// quietFor is how long nothing must have run, with no command
	// running, before the wait for every user's run gives up on those
	// still missing: more than wildcardPeriod, after which a recovery run
	// deferred by the rate limit starts.
	quietFor = 3 * wildcardPeriod
	// runsLimit bounds the wait for the rows' runs: a failure deadline,
	// longer than daemontest.WaitLimit for 10,000 runs on a busy machine.
	runsLimit = 2 * time.Minute
)

// wildcardUsers measures one handler for every user (user = "*", run_as
// one account, /bin/true, default limits but limit_period): start-up,
// then one notification for each of s.wildcard distinct users over
// wildcardConns keep-alive connections, the exec process's memory before
// and after their runs, and again once every user's bucket has refilled
// and its state is freed.
func (r *report) wildcardUsers(t *testing.T, s settings, root bool, privsepTOML, account string) {
	t.Helper()
	name := fmt.Sprintf("%s distinct users through one wildcard handler", thousands(s.wildcard))
	if !root {
		r.wild = append(r.wild, name+": skipped, needs root (the handler's exec process runs as a run_as account, privilege-separated)")
		return
	}
	users := make([]string, s.wildcard)
	for i := range users {
		users[i] = fmt.Sprintf("w%05d@example.org", i)
	}
	conf := fmt.Sprintf("listen = \"127.0.0.1:0\"\n%s[[handler]]\nuser = \"*\"\nrun_as = %q\ncommand = \"/bin/true\"\nlimit_period = %q\n",
		privsepTOML, account, wildcardPeriod.String())
	d := startDaemon(t, "wildcard", conf)
	p := d.procs(t)
	if p.exec == 0 {
		t.Fatalf("%s: no exec process for %s", d.name, account)
	}
	before := rss(t, p.exec)
	notTaken := d.log.Count(msgNotTaken)
	t0 := time.Now()
	res := load.Run(load.Options{Target: load.Target{Addr: d.addr, KeepAlive: true}, Conns: wildcardConns,
		Requests: len(users), Body: bodies(users)})
	if res.Failed > 0 {
		t.Fatalf("%s: %d of %d failed: %v", name, res.Failed, len(users), res.Err)
	}
	d.log.Until(t, d.name, fmt.Sprintf("every one of %d users' command run", len(users)), runsLimit,
		func() bool {
			if ran, _, _ := d.log.Users(); ran == len(users) {
				return true
			}
			// Or nothing runs and nothing will: users are missing.
			return d.log.Count(msgStarted) == d.log.Count(msgExited) && d.log.Quiet() > quietFor
		})
	runsDone := time.Since(t0)
	ran, recoveries, busiest := d.log.Users()
	if ran < len(users) {
		runsDone -= d.log.Quiet()
	}
	runs := d.log.Count(msgExited)
	after := memory(t, d)
	peak, _ := daemontest.Status(p.exec, "VmHWM")
	// Every bucket is full again wildcardPeriod after its run, and its
	// state freed then; twice that, for the timers to have fired.
	time.Sleep(2 * wildcardPeriod)
	idle := memory(t, d)
	d.stop(t)

	execAfter, execIdle := after[2].rss, idle[2].rss
	perUser := float64(execAfter-before) / float64(len(users))
	roles := []string{"parent", "net", "exec"}
	var afterAll, idleAll []string
	total := 0
	for i := range after {
		afterAll = append(afterAll, roles[i]+" "+mb(after[i].rss))
		idleAll = append(idleAll, roles[i]+" "+mb(idle[i].rss))
		total += after[i].rss
	}
	r.wild = append(r.wild,
		fmt.Sprintf("%s (user = \"*\", run_as = %q, /bin/true, limit_period = %q, %d keep-alive connections): start-up %s (target < %s: %s); %d notifications answered in %s",
			name, account, wildcardPeriod.String(), wildcardConns, ms(d.startup), ms(targetStartup), verdict(d.startup < targetStartup),
			len(users), ms(res.Elapsed)),
		fmt.Sprintf("  runs for %d of the %d users (target: every one: %s), done %s after the first notification; %d runs in all, %d of them recovery runs; up to %d commands at once",
			ran, len(users), verdict(ran == len(users)), ms(runsDone), runs, recoveries, busiest),
		fmt.Sprintf("  exec RSS %s after start-up, %s once the runs are done (peak %s): %s per user, the runs' own memory included (reported: the target, < %s of pending state per user, is the last row's); RSS then: %s; total %s",
			mb(before), mb(execAfter), mb(peak<<10), bytesSize(perUser), bytesSize(targetPerUser),
			strings.Join(afterAll, ", "), mb(total)),
		fmt.Sprintf("  %v later, every bucket refilled and every user idle: exec RSS %s, %s per user above start-up (target: nothing; reported, Go gives freed memory back to the system only gradually); RSS: %s",
			2*wildcardPeriod, mb(execIdle), bytesSize(float64(execIdle-before)/float64(len(users))), strings.Join(idleAll, ", ")))
	if n := d.log.Count(msgNotTaken) - notTaken; n > 0 {
		r.notes = append(r.notes, fmt.Sprintf("%s: the exec process fell behind %d times (its socket full: events answered 200 and covered by a recovery run)", name, n))
	}
	if ran < len(users) {
		r.notes = append(r.notes, fmt.Sprintf("%s: %d users' events were answered 200 and never ran: lost (nothing ran for %v with no command running)",
			name, len(users)-ran, quietFor))
		if s.smoke {
			// The smoke checks that it works: a lost event is a failure.
			t.Errorf("%s: %d of %d users' commands never ran", name, len(users)-ran, len(users))
		}
	}
	r.wildcardPending(t, name, privsepTOML, account, users)
}

// wildcardPending measures what the target speaks of: the same
// users, each with a run pending at once (delay = "1h": nothing runs, so
// nothing of the runs' own memory is counted). A notification for
// "marker", whose exact handler runs at once, follows them through the
// same channel: once its command has run, the exec process has taken
// every event before it.
func (r *report) wildcardPending(t *testing.T, name, privsepTOML, account string, users []string) {
	t.Helper()
	conf := fmt.Sprintf("listen = \"127.0.0.1:0\"\n%s[[handler]]\nuser = \"*\"\nrun_as = %q\ncommand = \"/bin/true\"\ndelay = \"1h\"\n"+
		"[[handler]]\nuser = \"marker\"\nrun_as = %q\ncommand = \"/bin/true\"\n", privsepTOML, account, account)
	d := startDaemon(t, "wildcard pending", conf)
	p := d.procs(t)
	before := rss(t, p.exec)
	notTaken := d.log.Count(msgNotTaken)
	res := load.Run(load.Options{Target: load.Target{Addr: d.addr, KeepAlive: true}, Conns: wildcardConns,
		Requests: len(users), Body: bodies(users)})
	if res.Failed > 0 {
		t.Fatalf("%s, pending: %d of %d failed: %v", name, res.Failed, len(users), res.Err)
	}
	c := load.NewClient(load.Target{Addr: d.addr, KeepAlive: true})
	if status, err := c.Do(load.Body(nil, "marker", 1)); err != nil || status != 200 {
		t.Fatalf("%s, pending: marker: status %d, %v", name, status, err)
	}
	c.Close()
	d.log.Until(t, d.name, "the marker's command run", runsLimit, func() bool { return d.log.Ran([]string{"marker"}) == 1 })
	after := rss(t, p.exec)
	runs := d.log.Count(msgExited)
	d.stop(t)
	perUser := float64(after-before) / float64(len(users))
	r.wild = append(r.wild, fmt.Sprintf("  with a run pending for every user at once (delay = \"1h\", nothing runs; start-up %s): exec RSS %s after start-up, %s with %d users pending: %s per user (target < %s: %s)",
		ms(d.startup), mb(before), mb(after), len(users), bytesSize(perUser), bytesSize(targetPerUser), verdict(perUser < targetPerUser)))
	if runs != 1 {
		t.Errorf("%s, pending: %d runs, want the marker's only", name, runs)
	}
	if n := d.log.Count(msgNotTaken) - notTaken; n > 0 {
		r.notes = append(r.notes, fmt.Sprintf("%s, pending: the exec process fell behind %d times (its socket full: events answered 200 and covered by a recovery run, so not every user's event reached it)", name, n))
	}
}

// hookAccounts measures users' own hooks with an exec process per
// account started on demand: s.hookAccs accounts (imse_b000 ...), each
// with a hook that exits at once, notified at once over a connection
// each; the time until every hook has run, and until every exec process
// has gone after exec_idle.
func (r *report) hookAccounts(t *testing.T, s settings, root bool, privsepTOML string) {
	t.Helper()
	name := fmt.Sprintf("%d accounts with hooks, notified at once, max_exec = %d", s.hookAccs, hookMaxExec)
	if !root {
		r.wild = append(r.wild, name+": skipped, needs root (accounts are created, and each hook runs as its account)")
		return
	}
	users := make([]string, s.hookAccs)
	for i := range users {
		a := daemontest.Account(t, fmt.Sprintf("imse_b%03d", i))
		if a.UID < 1000 {
			t.Fatalf("%s has uid %d, below the handler's min_uid 1000", a.Name, a.UID)
		}
		writeHook(t, a)
		users[i] = a.Name + "@example.org"
	}
	conf := fmt.Sprintf("listen = \"127.0.0.1:0\"\n%s", strings.Replace(privsepTOML, "[privsep]\n",
		fmt.Sprintf("[privsep]\nexec_idle = %q\nmax_exec = %d\n", hookIdle.String(), hookMaxExec), 1))
	if !strings.Contains(conf, "max_exec") {
		t.Fatalf("%s: no [privsep] table to extend:\n%s", name, conf)
	}
	conf += "[[handler]]\nuser = \"*@example.org\"\nrun_as = \"%n\"\ncommand = \"~/.config/imserious/new-mail\"\n"
	d := startDaemon(t, "hooks", conf)
	parent := d.cmd.Process.Pid
	if n := len(execChildren(t, parent)); n != 0 {
		t.Fatalf("%s: %d exec processes before any event", d.name, n)
	}

	// One connection per account, all sent at once.
	var wg sync.WaitGroup
	var failed sync.Map
	begin := make(chan struct{})
	for i, u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := load.NewClient(load.Target{Addr: d.addr})
			defer c.Close()
			<-begin
			if status, err := c.Do(load.Body(nil, u, i+1)); err != nil || status != 200 {
				failed.Store(u, fmt.Sprintf("status %d, %v", status, err))
			}
		}()
	}
	t0 := time.Now()
	close(begin)
	wg.Wait()
	answered := time.Since(t0)
	failed.Range(func(u, why any) bool {
		t.Fatalf("%s: %s: %s", name, u, why)
		return false
	})
	d.log.Until(t, d.name, fmt.Sprintf("every one of %d hooks run", len(users)), runsLimit,
		func() bool { return d.log.Ran(users) == len(users) })
	ran := time.Now()
	allRan := ran.Sub(t0)
	// After the measurement: reading /proc competes for the CPUs.
	kids := execChildren(t, parent)
	kidsRSS := 0
	for _, pid := range kids {
		kb, _ := daemontest.Status(pid, "VmRSS")
		kidsRSS += kb << 10
	}
	deadline := time.Now().Add(hookIdle + daemontest.WaitLimit)
	left := kids
	for len(left) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d exec processes still there %v after the last hook ran (exec_idle %v):\n%s",
				name, len(left), time.Since(ran), hookIdle, d.log.Tail())
		}
		time.Sleep(20 * time.Millisecond)
		left = execChildren(t, parent)
	}
	gone := time.Since(ran)
	runs := d.log.Count(msgExited)
	d.stop(t)

	r.wild = append(r.wild,
		fmt.Sprintf("%s (user = \"*@example.org\", run_as = \"%%n\", command = \"~/.config/imserious/new-mail\", exec_idle = %q): %d answered in %s, %d hooks run in %s (target < %s: %s); %d exec processes then (%s together); all gone %s after the last hook ran (exec_idle %v + %s)",
			name, hookIdle.String(), len(users), ms(answered), runs, ms(allRan), ms(targetHooksRun), verdict(allRan < targetHooksRun),
			len(kids), mb(kidsRSS), ms(gone), hookIdle, ms(gone-hookIdle)))
}

// execChildren returns the pids of parent's exec processes.
func execChildren(t *testing.T, parent int) []int {
	t.Helper()
	var out []int
	for role, c := range daemontest.Children(t, parent) {
		if strings.HasPrefix(role, "exec:") {
			out = append(out, c.Pid)
		}
	}
	return out
}

// hookScript is every bench account's hook: it exits at once.
const hookScript = "#!/bin/sh\nexit 0\n"

// writeHook installs a's hook, which exits at once.
func writeHook(t *testing.T, a privsep.Account) {
	t.Helper()
	daemontest.WriteHook(t, a, a, 0o755, hookScript)
}

// thousands writes n with a comma every three digits: 10,000.
func thousands(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// bytesSize writes a size in B or KB.
func bytesSize(n float64) string {
	if n >= 1<<10 || n <= -(1<<10) {
		return fmt.Sprintf("%.1f KB", n/(1<<10))
	}
	return fmt.Sprintf("%.0f B", n)
}
