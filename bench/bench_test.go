//go:build linux

package bench

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/imserious/imserious/bench/load"
	"github.com/imserious/imserious/internal/daemontest"
)

// TestMain builds (or locates, $IMSERIOUS_BIN) the daemon only when the
// bench is asked for: otherwise TestBench skips, and the package's other
// tests need no daemon.
func TestMain(m *testing.M) {
	if os.Getenv("IMSERIOUS_BENCH") == "" {
		os.Exit(m.Run())
	}
	os.Exit(daemontest.Main(m))
}

// settings are the knobs of one run of the bench.
type settings struct {
	smoke    bool
	pairs    int             // A B pairs per scenario
	phase    time.Duration   // length of one A or B
	conns    int             // concurrent connections of the throughput runs
	handlers int             // handlers over one account
	samples  int             // requests of the request-to-command measurement
	burst    int             // notifications of the burst
	burstFor int             // users of the burst
	wildcard int             // distinct users through one wildcard handler
	hookAccs int             // accounts with hooks, notified at once
	parts    map[string]bool // of allParts: what to run
}

// allParts are the parts of the bench IMSERIOUS_BENCH_RUN may pick, in
// the order they run.
const allParts = "http,https,command,burst,wildcard,hooks"

func settingsFromEnv(t *testing.T) settings {
	t.Helper()
	var s settings
	switch mode := os.Getenv("IMSERIOUS_BENCH"); mode {
	case "full":
		s = settings{pairs: 3, phase: 3 * time.Second, samples: 1000}
	case "smoke":
		s = settings{smoke: true, pairs: 1, phase: 300 * time.Millisecond, samples: 50}
	case "":
		t.Skip("the bench runs with IMSERIOUS_BENCH=full (make bench) or =smoke (CI: about 10 s, only checks that it works)")
	default:
		t.Fatalf("IMSERIOUS_BENCH=%q: want full or smoke", mode)
	}
	s.conns, s.handlers, s.burst, s.burstFor = 8, 10000, 10000, 100
	s.wildcard, s.hookAccs = 10000, 100
	if s.smoke {
		s.wildcard, s.hookAccs = 1000, 10
	}
	for name, p := range map[string]*int{"IMSERIOUS_BENCH_PAIRS": &s.pairs, "IMSERIOUS_BENCH_CONNS": &s.conns,
		"IMSERIOUS_BENCH_SAMPLES": &s.samples} {
		if v := os.Getenv(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				t.Fatalf("%s=%q: want a positive number", name, v)
			}
			*p = n
		}
	}
	s.parts = map[string]bool{}
	for _, p := range strings.Split(cmpStr(os.Getenv("IMSERIOUS_BENCH_RUN"), allParts), ",") {
		if !slices.Contains(strings.Split(allParts, ","), p) {
			t.Fatalf("IMSERIOUS_BENCH_RUN: %q is none of %s", p, allParts)
		}
		s.parts[p] = true
	}
	if v := os.Getenv("IMSERIOUS_BENCH_TIME"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("IMSERIOUS_BENCH_TIME=%q: want a duration", v)
		}
		s.phase = d
	}
	return s
}

func cmpStr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// Targets, from the issue: on a 2-core machine like CI's.
const (
	targetKeepAlive   = 0.90
	targetNewConn     = 0.95
	targetHTTPS       = 0.90
	targetCommandP99  = 5 * time.Millisecond
	targetAbsorb      = 300 * time.Millisecond
	targetBurstCPU    = 400 * time.Millisecond
	targetMemory      = 40 << 20
	targetStartup     = time.Second
	serverUser        = "imse_alice"
	throughputComment = "delay = \"1h\": no command runs while the throughput is measured, every event goes through the exec process's scheduling"
)

// floorName ends the name of a floor row.
const floorName = ", floor of the shape: bare + hand-over to a second process"

// TestBench is the driver of make bench: see the package comment.
func TestBench(t *testing.T) {
	s := settingsFromEnv(t)
	bareBin := buildBare(t)
	root := os.Geteuid() == 0
	account := os.Getenv("USER")
	if root {
		account = daemontest.Account(t, serverUser).Name
	}
	privsep := daemontest.PrivsepTOML(t) // "" unless root
	r := &report{}
	r.header(t, s, root, account)
	users := names("user", s.handlers)

	if s.parts["http"] {
		// 10,000 handlers over one account; memory is sampled under
		// this load.
		imse := startDaemon(t, "http", handlersTOML(privsep, "", users, account, "delay = \"1h\"\n"))
		r.idle = memory(t, imse)
		bare := startBare(t, bareBin, "http", "", "")
		// The floor of the process shape: bare handing every body to a
		// second process in a session of its own, which decodes it.
		floor := startBare(t, bareBin, "http -forward", "", "", "-forward")
		target := func(keepAlive bool, srv *server) load.Target {
			return load.Target{Addr: srv.addr, KeepAlive: keepAlive}
		}
		warm(t, s, target(true, bare), users)
		warm(t, s, target(true, imse), users)
		warm(t, s, target(true, floor), users)
		sampler := sampleRSS(imse.procs(t).all())
		keepAlive := r.pairs(t, s, "HTTP keep-alive", targetKeepAlive, users, target(true, bare), target(true, imse), bare, imse)
		newConn := r.pairs(t, s, "HTTP new connection per request", targetNewConn, users, target(false, bare), target(false, imse), bare, imse)
		sampler.end()
		r.underLoad, r.loadSum = sampler.max, sampler.sum
		floorKeepAlive := r.pairs(t, s, "HTTP keep-alive"+floorName, 0, users, target(true, bare), target(true, floor), bare, floor)
		floorNewConn := r.pairs(t, s, "HTTP new connection per request"+floorName, 0, users, target(false, bare), target(false, floor), bare, floor)
		r.againstFloor("HTTP keep-alive", keepAlive, floorKeepAlive, targetKeepAlive)
		r.againstFloor("HTTP new connection per request", newConn, floorNewConn, targetNewConn)
		r.startups = append(r.startups, imse.startup)
		imse.stop(t)
		bare.stop(t)
		floor.stop(t)
	}

	if s.parts["https"] {
		for _, c := range []struct {
			name   string
			rsa    bool
			target float64
		}{{"ECDSA P-256", false, targetHTTPS}, {"RSA-2048 (reference)", true, 0}} {
			kp := newKeyPair(t, c.name, c.rsa)
			tlsTOML := fmt.Sprintf("[tls]\ncert = %q\nkey = %q\n", kp.certFile, kp.keyFile)
			imse := startDaemon(t, "https "+c.name, handlersTOML(privsep, tlsTOML, users, account, "delay = \"1h\"\n"))
			bare := startBare(t, bareBin, "https "+c.name, kp.certFile, kp.keyFile)
			target := func(keepAlive bool, srv *server) load.Target {
				return load.Target{Addr: srv.addr, KeepAlive: keepAlive, TLS: kp.clientTLS}
			}
			warm(t, s, target(true, bare), users)
			warm(t, s, target(true, imse), users)
			newConn := r.pairs(t, s, "HTTPS "+c.name+" new connection", c.target, users, target(false, bare), target(false, imse), bare, imse)
			keepAlive := r.pairs(t, s, "HTTPS "+c.name+" keep-alive", c.target, users, target(true, bare), target(true, imse), bare, imse)
			r.startups = append(r.startups, imse.startup)
			imse.stop(t)
			if c.target > 0 {
				// The floor over TLS, for the rows with a target.
				floor := startBare(t, bareBin, "https -forward "+c.name, kp.certFile, kp.keyFile, "-forward")
				warm(t, s, target(true, floor), users)
				floorNewConn := r.pairs(t, s, "HTTPS "+c.name+" new connection"+floorName, 0, users, target(false, bare), target(false, floor), bare, floor)
				floorKeepAlive := r.pairs(t, s, "HTTPS "+c.name+" keep-alive"+floorName, 0, users, target(true, bare), target(true, floor), bare, floor)
				r.againstFloor("HTTPS "+c.name+" new connection", newConn, floorNewConn, c.target)
				r.againstFloor("HTTPS "+c.name+" keep-alive", keepAlive, floorKeepAlive, c.target)
				floor.stop(t)
			}
			bare.stop(t)
		}
	}

	if s.parts["command"] {
		// The same 10,000 handlers, each running /bin/true at once.
		// Timestamps: the latency ends at the time the exec process
		// logged the start, not the time its line was read.
		d := startDaemon(t, "commands", handlersTOML(privsep, "[log]\ntimestamp = true\n", users, account, ""))
		r.startups = append(r.startups, d.startup)
		r.commandLatency(t, s, d, users[:min(s.samples, len(users))])
		d.stop(t)
	}

	if s.parts["burst"] {
		// A daemon of its own, so that the CPU time is the burst's.
		burstUsers := names("burst", s.burstFor)
		d := startDaemon(t, "burst", handlersTOML(privsep, "", append(burstUsers, "marker"), account, ""))
		r.burst(t, s, d, burstUsers)
		d.stop(t)
		bare := startBare(t, bareBin, "burst", "", "")
		r.bareBurst(t, s, bare, burstUsers)
		bare.stop(t)
	}

	if s.parts["wildcard"] {
		r.wildcardUsers(t, s, root, privsep, account)
	}
	if s.parts["hooks"] {
		r.hookAccounts(t, s, root, privsep)
	}
	r.print(t, s)
}

// names returns prefix0, prefix1, ... prefix(n-1).
func names(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = prefix + strconv.Itoa(i)
	}
	return out
}

// handlersTOML is a configuration listening on a free loopback port with
// one handler of /bin/true per user, all run as account (as root), each
// with extra in its table; tables ([tls], [log]) come before the handlers.
func handlersTOML(privsep, tables string, users []string, account, extra string) string {
	var b strings.Builder
	b.WriteString("listen = \"127.0.0.1:0\"\n")
	b.WriteString(privsep)
	b.WriteString(tables)
	runAs := ""
	if os.Geteuid() == 0 {
		runAs = fmt.Sprintf("run_as = %q\n", account)
	}
	for _, u := range users {
		fmt.Fprintf(&b, "[[handler]]\nuser = %q\ncommand = \"/bin/true\"\n%s%s", u, runAs, extra)
	}
	return b.String()
}

// warm sends one notification for each user, which arms every handler's
// delay, and gets both ends past their first connections.
func warm(t *testing.T, s settings, tg load.Target, users []string) {
	t.Helper()
	res := load.Run(load.Options{Target: tg, Conns: s.conns, Requests: len(users), Body: bodies(users)})
	if res.Failed > 0 {
		t.Fatalf("warm-up of %s: %d failed: %v", tg.Addr, res.Failed, res.Err)
	}
}

// bodies gives request n the user n modulo len(users), and uid n+1.
func bodies(users []string) func([]byte, int, int) []byte {
	return func(buf []byte, _, n int) []byte { return load.Body(buf, users[n%len(users)], n+1) }
}

// report collects the figures and prints them.
type report struct {
	head       []string
	rows       [][]string // of the throughput table
	lines      []string   // the other figures, one a line
	wild       []string   // the wildcard rows' lines, printed last
	notes      []string
	startups   []time.Duration
	idle       []mem // of parent, net, exec after start-up
	underLoad  []mem // the largest of each under the HTTP load
	loadSum    mem   // the largest total under the HTTP load
	loadBefore string
}

// loadAverage is the first three fields of /proc/loadavg.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func (r *report) header(t *testing.T, s settings, root bool, account string) {
	mode := "privilege-separated as root: net as _imserious in a chroot, exec as " + account
	if !root {
		mode = "NOT root: no privilege separation, every process runs as " + account
	}
	cpu := "?"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	autogroup, _ := os.ReadFile("/proc/sys/kernel/sched_autogroup_enabled")
	r.loadBefore = loadAverage()
	r.head = []string{
		fmt.Sprintf("imserious bench (%s): %d CPUs (%s), Linux %s, %s, sched_autogroup_enabled=%s",
			map[bool]string{true: "smoke: checks that it works, figures not meaningful", false: "full"}[s.smoke],
			runtime.NumCPU(), cpu, strings.TrimSpace(string(kernel)), runtime.Version(), strings.TrimSpace(string(autogroup))),
		"daemon " + mode + "; binary " + daemontest.Binary(t),
		"load average before the run: " + r.loadBefore + " (anything above 0 is another program sharing the CPUs with the measurement)",
		fmt.Sprintf("throughput: %d connections, %d pairs of %v, bare (A) then imserious (B); %d handlers over one account, every request for a user with one, %s",
			s.conns, s.pairs, s.phase, s.handlers, throughputComment),
	}
	if s.parts["http"] || s.parts["https"] {
		r.head = append(r.head, "CPU/req: CPU time per request of the server (every process of imserious; bare with its -forward process) + of the client, the bench's own process, which also reads the servers' log lines; on a machine whose CPUs are all busy the ratio follows the sums")
	}
	if s.parts["http"] || s.parts["https"] {
		r.head = append(r.head, "the floor rows' B is bare handing each body to a second process, in a session of its own, that decodes it again (imserious-bare -forward), in batches sent after the answers as imserious sends its events: what the hand-over costs by itself, without any of imserious's own work; read imserious's ratio against the floor's")
	}
}

func (r *report) add(cells ...string) { r.rows = append(r.rows, cells) }

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/1e6) }
func mb(n int) string           { return fmt.Sprintf("%.1f MB", float64(n)/(1<<20)) }

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

// pairs measures one scenario in s.pairs pairs: bare (a), then b,
// imserious or the floor row's bare -forward; imse is b's server, whose
// log counts the exec process falling behind (never, for bare). target
// 0 is a reference row. It returns the median ratio.
func (r *report) pairs(t *testing.T, s settings, name string, target float64, users []string, a, b load.Target, aSrv, imse *server) float64 {
	t.Helper()
	run := func(tg load.Target, srv *server, who string) (load.Result, string) {
		pids := srv.pids()
		before, self := cpuTimes(t, pids), selfCPU(t)
		res := load.Run(load.Options{Target: tg, Conns: s.conns, Duration: s.phase, Body: bodies(users)})
		if res.Failed > 0 || res.Requests == 0 {
			t.Fatalf("%s, %s: %d of %d failed: %v", name, who, res.Failed, res.Requests+res.Failed, res.Err)
		}
		self = selfCPU(t) - self
		var server time.Duration
		for i, d := range cpuTimes(t, pids) {
			server += d - before[i]
		}
		return res, perRequest(server, self, res.Requests)
	}
	notTaken := imse.log.Count(msgNotTaken)
	var ratios []float64
	for i := range s.pairs {
		ra, ca := run(a, aSrv, "bare")
		rb, cb := run(b, imse, imse.name)
		ratio := rb.RPS() / ra.RPS()
		ratios = append(ratios, ratio)
		label := ""
		if i == 0 {
			label = name
		}
		r.add(label, strconv.Itoa(i+1),
			fmt.Sprintf("%.0f", ra.RPS()), ms(ra.Percentile(0.5)), ms(ra.Percentile(0.99)), ms(ra.Percentile(1)), ca,
			fmt.Sprintf("%.0f", rb.RPS()), ms(rb.Percentile(0.5)), ms(rb.Percentile(0.99)), ms(rb.Percentile(1)), cb,
			fmt.Sprintf("%.2f", ratio), "")
	}
	slices.Sort(ratios)
	med := ratios[len(ratios)/2]
	tgt := "reference"
	if target > 0 {
		tgt = fmt.Sprintf(">= %.2f: %s", target, verdict(med >= target))
	}
	r.add("", "median", "", "", "", "", "", "", "", "", "", "", fmt.Sprintf("%.2f", med), tgt)
	if n := imse.log.Count(msgNotTaken) - notTaken; n > 0 {
		r.notes = append(r.notes, fmt.Sprintf("%s: the exec process fell behind %d times (its socket full: events answered 200 and covered by a recovery run, so fewer went through the exec process than were answered)", name, n))
	}
	return med
}

// againstFloor reads imserious's median ratio in a row against the floor
// row's and says whether the floor itself reaches the row's target.
func (r *report) againstFloor(name string, imse, floor, target float64) {
	reach := "the floor reaches the target on this machine"
	if floor < target {
		reach = "the floor itself is below the target on this machine: bare with nothing but the hand-over misses it"
	}
	r.lines = append(r.lines, fmt.Sprintf("%s: imserious %.2f of bare, the floor of the shape %.2f: imserious at %.2f of its floor; target %.2f: %s",
		name, imse, floor, imse/floor, target, reach))
}

// commandLatency sends one notification at a time, each for a user whose
// handler is idle, and measures until the exec process logs that the
// command started.
func (r *report) commandLatency(t *testing.T, s settings, d *server, users []string) {
	t.Helper()
	c := load.NewClient(load.Target{Addr: d.addr, KeepAlive: true})
	defer c.Close()
	var lat, answer []time.Duration
	var buf []byte
	for i, u := range users {
		buf = load.Body(buf, u, i+1)
		t0 := time.Now()
		status, err := c.Do(buf)
		if err != nil || status != 200 {
			t.Fatalf("request to command: %s: status %d, %v", u, status, err)
		}
		answer = append(answer, time.Since(t0))
		at := d.log.WaitStarted(t, d.name, u)
		if at.IsZero() {
			t.Fatalf("request to command: %s's \"command started\" line shows no time (the daemon must log with timestamp = true):\n%s", u, d.log.Tail())
		}
		lat = append(lat, at.Sub(t0))
	}
	d.log.WaitCount(t, d.name, msgExited, len(users))
	slices.Sort(lat)
	slices.Sort(answer)
	p99 := load.Percentile(lat, 0.99)
	r.lines = append(r.lines, fmt.Sprintf("request sent to command started (%d requests one at a time, %d handlers, delay unset, /bin/true): p50 %s p99 %s max %s; target p99 < %s: %s",
		len(users), s.handlers, ms(load.Percentile(lat, 0.5)), ms(p99), ms(load.Percentile(lat, 1)), ms(targetCommandP99), verdict(p99 < targetCommandP99)))
	r.notes = append(r.notes, fmt.Sprintf("request to command: until the time the exec process's \"command started\" line shows (it logs it once fork and exec succeeded); the 200 came after p50 %s, p99 %s",
		ms(load.Percentile(answer, 0.5)), ms(load.Percentile(answer, 0.99))))
}

// bareBurst sends the bare server the same burst, for reference: the
// time and CPU a single process needs only to answer it.
func (r *report) bareBurst(t *testing.T, s settings, bare *server, users []string) {
	t.Helper()
	pid := bare.cmd.Process.Pid
	before := cpuTime(t, pid)
	res := load.Run(load.Options{Target: load.Target{Addr: bare.addr, KeepAlive: true}, Conns: burstConns,
		Requests: s.burst, Body: bodies(users)})
	if res.Failed > 0 {
		t.Fatalf("burst, bare: %d of %d failed: %v", res.Failed, s.burst, res.Err)
	}
	r.lines = append(r.lines, fmt.Sprintf("the same burst to the bare server, for reference: answered in %s, %.2f CPU-s (whole 10 ms ticks): the floor of both burst targets on this machine",
		ms(res.Elapsed), (cpuTime(t, pid)-before).Seconds()))
}

// burstConns is how many connections the burst comes over.
const burstConns = 16

// burst sends s.burst notifications for the users over burstConns
// keep-alive connections, to handlers with limit_burst = 1 (and the
// default limit_period, 30s): each user's first event runs its command at
// once, the rest wait for a token. It measures the time until every one
// is answered, and the CPU time of the daemon's processes and their
// commands until every event has been through the exec process (a last
// notification, for the handler of "marker", starts its command after
// all of them) and every run has ended.
func (r *report) burst(t *testing.T, s settings, d *server, users []string) {
	t.Helper()
	pids := d.procs(t).all()
	before := cpuTimes(t, pids)
	startedBefore, exitedBefore, notTaken := d.log.Count(msgStarted), d.log.Count(msgExited), d.log.Count(msgNotTaken)
	res := load.Run(load.Options{Target: load.Target{Addr: d.addr, KeepAlive: true}, Conns: burstConns,
		Requests: s.burst, Body: bodies(users)})
	if res.Failed > 0 {
		t.Fatalf("burst: %d of %d failed: %v", res.Failed, s.burst, res.Err)
	}
	c := load.NewClient(load.Target{Addr: d.addr, KeepAlive: true})
	if status, err := c.Do(load.Body(nil, "marker", 1)); err != nil || status != 200 {
		t.Fatalf("burst: marker: status %d, %v", status, err)
	}
	c.Close()
	d.log.WaitStarted(t, d.name, "marker")
	d.log.WaitCount(t, d.name, msgExited, exitedBefore+len(users)+1)
	after := cpuTimes(t, pids)
	runs := d.log.Count(msgStarted) - startedBefore - 1
	var cpu time.Duration
	var parts []string
	for i, role := range []string{"parent", "net", "exec with its commands"} {
		if i < len(pids) {
			cpu += after[i] - before[i]
			parts = append(parts, fmt.Sprintf("%s %.2fs", role, (after[i]-before[i]).Seconds()))
		}
	}
	r.lines = append(r.lines,
		fmt.Sprintf("burst of %d notifications for %d users over %d connections, limit_burst = 1: absorbed in %s (target < %s: %s), %d runs (target %d: %s), %.2f CPU-s (target < %.1f: %s)",
			s.burst, len(users), burstConns, ms(res.Elapsed), ms(targetAbsorb), verdict(res.Elapsed < targetAbsorb),
			runs, len(users), verdict(runs == len(users)), cpu.Seconds(), targetBurstCPU.Seconds(), verdict(cpu < targetBurstCPU)))
	r.notes = append(r.notes, fmt.Sprintf("burst: %.0f req/s, latency p50 %s p99 %s max %s; CPU %s (whole 10 ms ticks)",
		res.RPS(), ms(res.Percentile(0.5)), ms(res.Percentile(0.99)), ms(res.Percentile(1)), strings.Join(parts, ", ")))
	if n := d.log.Count(msgNotTaken) - notTaken; n > 0 {
		r.notes = append(r.notes, fmt.Sprintf("burst: the exec process fell behind %d times (its socket full: events answered 200 and covered by a recovery run)", n))
	}
}

// memory returns the memory of the parent, network and exec processes.
func memory(t *testing.T, d *server) []mem {
	t.Helper()
	var out []mem
	for _, pid := range d.procs(t).all() {
		m := memOf(pid)
		if m.rss == 0 || m.pss == 0 {
			t.Fatalf("no VmRSS or PSS for process %d", pid)
		}
		out = append(out, m)
	}
	return out
}

func (r *report) print(t *testing.T, s settings) {
	var b strings.Builder
	for _, h := range r.head {
		b.WriteString(h + "\n")
	}
	if len(r.rows) > 0 {
		b.WriteString("\n")
		w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintln(w, "throughput\tpair\tbare (A) req/s\tp50\tp99\tmax\tCPU/req\tB req/s\tp50\tp99\tmax\tCPU/req\tratio\ttarget\t")
		for _, row := range r.rows {
			fmt.Fprintln(w, strings.Join(row, "\t")+"\t")
		}
		w.Flush()
	}
	b.WriteString("\n")
	for _, l := range r.lines {
		b.WriteString(l + "\n")
	}
	if len(r.startups) > 0 {
		sorted := slices.Sorted(slices.Values(r.startups))
		startup := sorted[len(sorted)/2]
		fmt.Fprintf(&b, "start-up with %d handlers (exec to \"listening\"; median of %d daemons: %s): %s; target < %s: %s\n",
			s.handlers, len(r.startups), durations(r.startups), ms(startup), ms(targetStartup), verdict(startup < targetStartup))
	}
	if r.idle != nil {
		roles := []string{"parent", "net", "exec"}
		var idle, under []string
		var idleSum mem
		for i := range r.idle {
			idle = append(idle, fmt.Sprintf("%s %s (RSS %s)", roles[i], mb(r.idle[i].pss), mb(r.idle[i].rss)))
			under = append(under, fmt.Sprintf("%s %s (RSS %s)", roles[i], mb(r.underLoad[i].pss), mb(r.underLoad[i].rss)))
			idleSum = idleSum.plus(r.idle[i])
		}
		fmt.Fprintf(&b, "memory with %d handlers, PSS (RSS), idle after start-up: %s; total %s (RSS %s)\n",
			s.handlers, strings.Join(idle, ", "), mb(idleSum.pss), mb(idleSum.rss))
		fmt.Fprintf(&b, "memory under the HTTP load (largest of each): %s; largest total %s (RSS %s); target < %s: %s\n",
			strings.Join(under, ", "), mb(r.loadSum.pss), mb(r.loadSum.rss), mb(targetMemory), verdict(r.loadSum.pss < targetMemory))
		b.WriteString("  (PSS counts each page shared between the processes for its share: the binary's pages, resident once, are in every VmRSS; PSS's total is what the three take together)\n")
	}
	for _, l := range r.wild {
		b.WriteString(l + "\n")
	}
	for _, n := range r.notes {
		b.WriteString("note: " + n + "\n")
	}
	b.WriteString("load average after the run: " + loadAverage() + "\n")
	// Straight to stdout: go test -v streams it; it is what make bench
	// prints.
	fmt.Print("\n" + b.String())
}

func durations(ds []time.Duration) string {
	var out []string
	for _, d := range ds {
		out = append(out, ms(d))
	}
	return strings.Join(out, " ")
}
