package exec

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imserious/imserious/clock/clocktest"
	"github.com/imserious/imserious/config"
	"github.com/imserious/imserious/event"
	"github.com/imserious/imserious/privsep"
)

// safety bounds a wait for something that must happen; it is never the
// way a test synchronises, only how long a broken test takes to fail.
const safety = 10 * time.Second

// outlast is a WaitDelay or KillGrace longer than safety: a run that
// returns within safety cannot have been ended by it. It is no longer so
// that a test failing on purpose waits for it long.
const outlast = 3 * safety

// fakeRunner records jobs and blocks each run until the test finishes it
// or the Exec's context is cancelled.
type fakeRunner struct {
	started chan *fakeRun
	n       atomic.Int64
}

type fakeRun struct {
	Job
	release chan struct{}
	killed  chan struct{} // closed when the run ended by ctx
	// result is what Run returns; the test sets it before release.
	result Result
}

// Run reports the pid 1000+n for the n-th run it is given, so a test
// can tell runs apart in Status.
func (r *fakeRunner) Run(ctx context.Context, j Job) Result {
	fr := &fakeRun{Job: j, release: make(chan struct{}), killed: make(chan struct{})}
	if j.Started != nil {
		j.Started(1000 + int(r.n.Add(1)))
	}
	r.started <- fr
	select {
	case <-fr.release:
		return fr.result
	case <-ctx.Done():
		close(fr.killed)
		return Result{ExitStatus: -1, Signal: "SIGTERM"}
	}
}

// logBuf collects JSON log records.
type logBuf struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	wake chan struct{} // closed by the next Write; see waitFor
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.wake != nil {
		close(l.wake)
		l.wake = nil
	}
	return l.buf.Write(p)
}

// waitFor returns the records with message msg once there is one, woken
// by each write to the log.
func (l *logBuf) waitFor(t *testing.T, msg string) []map[string]any {
	t.Helper()
	deadline := time.After(safety)
	for {
		l.mu.Lock()
		if l.wake == nil {
			l.wake = make(chan struct{})
		}
		wake := l.wake
		l.mu.Unlock()
		if recs := l.find(t, msg); len(recs) > 0 {
			return recs
		}
		select {
		case <-wake:
		case <-deadline:
			t.Fatalf("no %q record; log:\n%s", msg, l.String())
		}
	}
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuf) records(t *testing.T) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.buf.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// find returns the records with message msg.
func (l *logBuf) find(t *testing.T, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, r := range l.records(t) {
		if r["msg"] == msg {
			out = append(out, r)
		}
	}
	return out
}

func newLogger(l *logBuf) *slog.Logger {
	return slog.New(slog.NewJSONHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// harness runs an Exec on a synchronous fake clock (clocktest.New): every
// run due by the end of an Advance has launched when it returns.
type harness struct {
	t      *testing.T
	clock  *clocktest.Clock
	runner *fakeRunner
	x      *Exec
	ended  chan int
	logs   *logBuf
}

func newHarness(t *testing.T, hs ...config.Handler) *harness {
	t.Helper()
	return newHarnessWith(t, Options{}, hs...)
}

// newHarnessWith is newHarness with more options: o's Handlers, Log,
// Clock and Runner are the harness's.
func newHarnessWith(t *testing.T, o Options, hs ...config.Handler) *harness {
	t.Helper()
	h := &harness{
		t:      t,
		clock:  clocktest.New(epoch),
		runner: &fakeRunner{started: make(chan *fakeRun, 100)},
		ended:  make(chan int, 100),
		logs:   &logBuf{},
	}
	o.Handlers, o.Log, o.Clock, o.Runner = hs, newLogger(h.logs), h.clock, h.runner
	h.x = New(o)
	h.x.ended = func(i int) { h.ended <- i }
	t.Cleanup(func() { h.x.Shutdown(0) })
	return h
}

// handler returns a handler config with the defaults config applies.
func testHandler(user string) config.Handler {
	return config.Handler{
		User:           user,
		Event:          "MessageNew",
		Command:        []string{"true"},
		LimitPeriod:    30 * time.Second,
		LimitBurst:     1,
		CommandTimeout: 10 * time.Minute,
		Account:        privsep.Account{Name: user, Home: "/home/" + user, Shell: "/bin/sh"},
		Path:           "/bin/true",
	}
}

func newEvent(user, subject string) event.Event {
	folder := "INBOX"
	return event.Event{User: user, Event: "MessageNew", Folder: &folder, Subject: &subject}
}

var peer = netip.MustParseAddrPort("127.0.0.1:40000")

// runs is how many runs handler i has launched. Launching is synchronous
// with Deliver, Advance and the end of a run, so this is exact.
func (h *harness) runs(i int) int {
	hd := h.x.handlers[i]
	hd.mu.Lock()
	defer hd.mu.Unlock()
	return hd.runs
}

func (h *harness) wantRuns(i, n int) {
	h.t.Helper()
	if got := h.runs(i); got != n {
		h.t.Fatalf("handler %d at +%v: %d runs, want %d", i, h.elapsed(), got, n)
	}
}

// epoch is where the fake clocks start.
var epoch = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func (h *harness) elapsed() time.Duration { return h.clock.Now().Sub(epoch) }

// next returns the job of the run just launched.
func (h *harness) next() *fakeRun {
	h.t.Helper()
	select {
	case r := <-h.runner.started:
		return r
	case <-time.After(safety):
		h.t.Fatal("no run reached the runner")
		return nil
	}
}

// finish ends run r, a success, and waits until the handler has
// processed its end.
func (h *harness) finish(r *fakeRun) {
	h.t.Helper()
	h.finishWith(r, Result{})
}

// finishWith ends run r with res and waits until the handler has
// processed its end.
func (h *harness) finishWith(r *fakeRun, res Result) {
	h.t.Helper()
	r.result = res
	close(r.release)
	select {
	case <-h.ended:
	case <-time.After(safety):
		h.t.Fatal("run end not processed")
	}
}

func envOf(j Job) map[string]string {
	m := map[string]string{}
	for _, kv := range j.Env {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

func wantEnv(t *testing.T, j Job, want map[string]string) {
	t.Helper()
	env := envOf(j)
	for k, v := range want {
		got, ok := env[k]
		switch {
		case v == "<absent>" && ok:
			t.Errorf("%s=%q, want it absent", k, got)
		case v != "<absent>" && (!ok || got != v):
			t.Errorf("%s=%q (set %v), want %q", k, got, ok, v)
		}
	}
}

func TestDelayNotExtendedAndCoalesced(t *testing.T) {
	hc := testHandler("alice")
	hc.Delay = 10 * time.Second
	h := newHarness(t, hc)

	if n := h.x.Deliver(newEvent("alice", "first"), peer); n != 1 {
		t.Fatalf("Deliver matched %d handlers, want 1", n)
	}
	h.wantRuns(0, 0)
	h.clock.Advance(6 * time.Second)
	last := netip.MustParseAddrPort("[2001:db8::1]:1234")
	h.x.Deliver(newEvent("alice", "second"), peer)
	h.x.Deliver(newEvent("alice", "third"), last)
	h.clock.Advance(4*time.Second - time.Nanosecond)
	h.wantRuns(0, 0)
	h.clock.Advance(time.Nanosecond) // exactly delay after the first event
	h.wantRuns(0, 1)
	r := h.next()
	if r.Trigger != TriggerEvent || r.Count != 3 || r.Index != 0 {
		t.Fatalf("job trigger %q count %d index %d, want event 3 0", r.Trigger, r.Count, r.Index)
	}
	wantEnv(t, r.Job, map[string]string{
		"IMSE_COUNT": "3", "IMSE_SUBJECT": "third", "IMSE_TRIGGER": "event",
		"IMSE_REMOTE_IP": "2001:db8::1", "IMSE_REMOTE_PORT": "1234",
		"IMSE_USER": "alice", "IMSE_EVENT": "MessageNew", "IMSE_FOLDER": "INBOX",
		"HOME": "/home/alice", "USER": "alice",
	})
	h.finish(r)
	h.clock.Advance(time.Hour)
	h.wantRuns(0, 1)
}

func TestEventsDuringRunMakeOneFollowUp(t *testing.T) {
	hc := testHandler("alice")
	hc.Delay = 5 * time.Second // must not apply to the follow-up
	hc.LimitBurst = 5
	h := newHarness(t, hc)

	h.x.Deliver(newEvent("alice", "1"), peer)
	h.clock.Advance(5 * time.Second)
	r1 := h.next()
	for _, s := range []string{"2", "3", "4"} {
		h.x.Deliver(newEvent("alice", s), peer)
	}
	h.clock.Advance(time.Hour)
	h.wantRuns(0, 1) // never two copies at once
	h.finish(r1)
	h.wantRuns(0, 2) // tokens left and not idle: no delay, right away
	r2 := h.next()
	if r2.Count != 3 {
		t.Fatalf("follow-up count %d, want 3", r2.Count)
	}
	wantEnv(t, r2.Job, map[string]string{"IMSE_COUNT": "3", "IMSE_SUBJECT": "4"})
	h.finish(r2)
	h.clock.Advance(time.Hour)
	h.wantRuns(0, 2)
}

func TestFollowUpWaitsForToken(t *testing.T) {
	h := newHarness(t, testHandler("alice")) // burst 1, one per 30s
	h.x.Deliver(newEvent("alice", "1"), peer)
	r1 := h.next()
	h.clock.Advance(10 * time.Second)
	h.x.Deliver(newEvent("alice", "2"), peer)
	h.finish(r1)
	h.wantRuns(0, 1)
	h.clock.Advance(20*time.Second - time.Nanosecond)
	h.wantRuns(0, 1)
	h.x.Deliver(newEvent("alice", "3"), peer) // coalesces into the deferred run
	h.clock.Advance(time.Nanosecond)
	h.wantRuns(0, 2)
	r2 := h.next()
	wantEnv(t, r2.Job, map[string]string{"IMSE_COUNT": "2", "IMSE_SUBJECT": "3"})
	h.finish(r2)
}

func TestBurstThenDeferred(t *testing.T) {
	hc := testHandler("alice")
	hc.LimitBurst = 3
	hc.LimitPeriod = 10 * time.Second
	h := newHarness(t, hc)

	for i := 1; i <= 3; i++ {
		h.x.Deliver(newEvent("alice", "burst"), peer)
		h.wantRuns(0, i) // back to back, no clock movement
		h.finish(h.next())
	}
	h.x.Deliver(newEvent("alice", "4"), peer)
	h.wantRuns(0, 3)
	h.clock.Advance(10*time.Second - time.Nanosecond)
	h.wantRuns(0, 3)
	h.clock.Advance(time.Nanosecond)
	h.wantRuns(0, 4)
	if r := h.next(); r.Count != 1 {
		t.Fatalf("deferred run count %d, want 1", r.Count)
	} else {
		h.finish(r)
	}
	// The bucket is empty: the next token comes at +20s.
	h.x.Deliver(newEvent("alice", "5"), peer)
	h.x.Deliver(newEvent("alice", "6"), peer)
	h.clock.Advance(10*time.Second - time.Nanosecond)
	h.wantRuns(0, 4)
	h.clock.Advance(time.Nanosecond)
	h.wantRuns(0, 5)
	r := h.next()
	wantEnv(t, r.Job, map[string]string{"IMSE_COUNT": "2", "IMSE_SUBJECT": "6"})
	h.finish(r)
	if recs := h.logs.find(t, "run deferred by rate limit"); len(recs) != 2 {
		t.Errorf("%d rate-limit records, want 2", len(recs))
	}
}

func TestPeriodic(t *testing.T) {
	hc := testHandler("alice")
	hc.Periodic = time.Hour
	h := newHarness(t, hc)

	h.clock.Advance(2 * time.Hour)
	h.wantRuns(0, 0) // nothing before Start
	h.x.Start()
	h.clock.Advance(time.Hour - time.Nanosecond)
	h.wantRuns(0, 0)
	h.clock.Advance(time.Nanosecond)
	h.wantRuns(0, 1)
	r := h.next()
	if r.Trigger != TriggerPeriodic || r.Count != 0 {
		t.Fatalf("job trigger %q count %d, want periodic 0", r.Trigger, r.Count)
	}
	wantEnv(t, r.Job, map[string]string{
		"IMSE_TRIGGER": "periodic", "IMSE_USER": "alice", "IMSE_EVENT": "MessageNew",
		"IMSE_COUNT": "<absent>", "IMSE_REMOTE_IP": "<absent>", "PATH": config.CommandPath,
	})
	h.clock.Advance(3 * time.Hour) // a long run: nothing stacks
	h.wantRuns(0, 1)
	h.finish(r)
	// The periodic clock restarts at the end of the run.
	h.clock.Advance(time.Hour - time.Nanosecond)
	h.wantRuns(0, 1)
	h.clock.Advance(time.Nanosecond)
	h.wantRuns(0, 2)
	h.finish(h.next())

	// An event run restarts it too.
	h.clock.Advance(30 * time.Minute)
	h.x.Deliver(newEvent("alice", "x"), peer)
	h.wantRuns(0, 3)
	r = h.next()
	h.clock.Advance(10 * time.Minute)
	h.finish(r)
	h.clock.Advance(time.Hour - time.Nanosecond)
	h.wantRuns(0, 3)
	h.clock.Advance(time.Nanosecond)
	h.wantRuns(0, 4)
	if r := h.next(); r.Trigger != TriggerPeriodic {
		t.Fatalf("trigger %q, want periodic", r.Trigger)
	} else {
		h.finish(r)
	}
}

func TestPeriodicSpendsNoTokens(t *testing.T) {
	hc := testHandler("alice")
	hc.Periodic = 10 * time.Second
	hc.LimitBurst = 2
	hc.LimitPeriod = time.Hour
	h := newHarness(t, hc)
	h.x.Start()

	h.x.Deliver(newEvent("alice", "1"), peer) // one token left
	h.finish(h.next())
	for i := 2; i <= 4; i++ { // periodic runs ignore the empty-ish bucket
		h.clock.Advance(10 * time.Second)
		h.wantRuns(0, i)
		r := h.next()
		if r.Trigger != TriggerPeriodic {
			t.Fatalf("run %d trigger %q, want periodic", i, r.Trigger)
		}
		h.finish(r)
	}
	h.x.Deliver(newEvent("alice", "2"), peer) // the token periodic runs did not take
	h.wantRuns(0, 5)
	if r := h.next(); r.Trigger != TriggerEvent {
		t.Fatalf("trigger %q, want event", r.Trigger)
	} else {
		h.finish(r)
	}
	h.x.Deliver(newEvent("alice", "3"), peer) // now the bucket is empty
	h.wantRuns(0, 5)
}

func TestPendingEventAndPeriodicNeverOverlap(t *testing.T) {
	t.Run("delay ends during periodic run", func(t *testing.T) {
		hc := testHandler("alice")
		hc.Periodic = 5 * time.Second
		hc.Delay = 10 * time.Second
		h := newHarness(t, hc)
		h.x.Start()
		h.x.Deliver(newEvent("alice", "1"), peer)
		h.clock.Advance(5 * time.Second) // a pending delay does not block periodic
		h.wantRuns(0, 1)
		p := h.next()
		if p.Trigger != TriggerPeriodic {
			t.Fatalf("trigger %q, want periodic", p.Trigger)
		}
		h.clock.Advance(time.Minute) // delay over while periodic runs
		h.wantRuns(0, 1)
		h.finish(p)
		h.wantRuns(0, 2)
		r := h.next()
		if r.Trigger != TriggerEvent || r.Count != 1 {
			t.Fatalf("trigger %q count %d, want event 1", r.Trigger, r.Count)
		}
		h.finish(r)
	})
	t.Run("token due during periodic run", func(t *testing.T) {
		hc := testHandler("alice") // burst 1, one per 30s
		hc.Periodic = 20 * time.Second
		h := newHarness(t, hc)
		h.x.Start()
		h.x.Deliver(newEvent("alice", "1"), peer)
		h.finish(h.next())
		h.x.Deliver(newEvent("alice", "2"), peer) // token due at +30s
		h.clock.Advance(20 * time.Second)
		h.wantRuns(0, 2)
		p := h.next()
		if p.Trigger != TriggerPeriodic {
			t.Fatalf("trigger %q, want periodic", p.Trigger)
		}
		h.clock.Advance(20 * time.Second)
		h.wantRuns(0, 2)
		h.finish(p)
		h.wantRuns(0, 3)
		r := h.next()
		wantEnv(t, r.Job, map[string]string{"IMSE_TRIGGER": "event", "IMSE_SUBJECT": "2"})
		h.finish(r)
	})
	t.Run("event during periodic run gets no delay", func(t *testing.T) {
		hc := testHandler("alice")
		hc.Periodic = 5 * time.Second
		hc.Delay = time.Hour
		h := newHarness(t, hc)
		h.x.Start()
		h.clock.Advance(5 * time.Second)
		p := h.next()
		h.x.Deliver(newEvent("alice", "1"), peer)
		h.wantRuns(0, 1)
		h.finish(p)
		h.wantRuns(0, 2)
		h.finish(h.next())
	})
}

func TestShutdownDropsPendingRuns(t *testing.T) {
	a := testHandler("alice")
	a.Delay = 10 * time.Second
	a.Periodic = time.Minute
	b := testHandler("bob")
	h := newHarness(t, a, b)
	h.x.Start()
	h.x.Deliver(newEvent("alice", "1"), peer)
	h.x.Deliver(newEvent("alice", "2"), peer)
	h.x.Deliver(newEvent("bob", "1"), peer)
	h.finish(h.next())
	h.x.Deliver(newEvent("bob", "2"), peer) // waits for a token

	h.x.Shutdown(time.Second) // nothing running: returns at once
	if n := h.clock.Pending(); n != 0 {
		t.Errorf("%d timers armed after Shutdown, want 0", n)
	}
	h.clock.Advance(24 * time.Hour)
	h.wantRuns(0, 0)
	h.wantRuns(1, 1)
	if n := h.x.Deliver(newEvent("alice", "3"), peer); n != 1 {
		t.Errorf("Deliver after Shutdown matched %d, want 1", n)
	}
	h.clock.Advance(24 * time.Hour)
	h.wantRuns(0, 0)

	recs := h.logs.find(t, "pending run dropped at shutdown")
	got := map[string]float64{}
	for _, r := range recs {
		if r["level"] != "WARN" {
			t.Errorf("level %v, want WARN", r["level"])
		}
		got[r["user"].(string)] = r["count"].(float64)
	}
	if len(recs) != 2 || got["alice"] != 2 || got["bob"] != 1 {
		t.Errorf("dropped-run records %v, want alice 2 and bob 1", recs)
	}
	if len(h.logs.find(t, "event after shutdown dropped")) != 1 {
		t.Error("event after Shutdown not logged")
	}
}

func TestShutdownWaitsThenKills(t *testing.T) {
	h := newHarness(t, testHandler("alice"))
	h.x.Deliver(newEvent("alice", "1"), peer)
	r := h.next()
	h.x.Deliver(newEvent("alice", "2"), peer) // pending behind the run

	done := make(chan struct{})
	go func() {
		h.x.Shutdown(time.Minute)
		close(done)
	}()
	h.clock.WaitTimers(1) // the grace timer: no other is armed
	h.clock.Advance(time.Minute - time.Nanosecond)
	select {
	case <-r.killed:
		t.Fatal("run killed before the grace period was over")
	case <-done:
		t.Fatal("Shutdown returned while a command was running")
	default:
	}
	h.clock.Advance(time.Nanosecond)
	select {
	case <-done:
	case <-time.After(safety):
		t.Fatal("Shutdown did not return after the grace period")
	}
	select {
	case <-r.killed:
	default:
		t.Fatal("run not cancelled at the end of the grace period")
	}
	h.wantRuns(0, 1) // the pending run did not start
	if len(h.logs.find(t, "pending run dropped at shutdown")) != 1 {
		t.Error("pending run not logged")
	}
}

func TestShutdownLetsRunFinish(t *testing.T) {
	hc := testHandler("alice")
	hc.Periodic = time.Hour
	hc.LimitBurst = 5
	h := newHarness(t, hc)
	h.x.Deliver(newEvent("alice", "1"), peer)
	r := h.next()
	h.x.Deliver(newEvent("alice", "2"), peer) // would run right after r
	done := make(chan struct{})
	go func() {
		h.x.Shutdown(time.Minute)
		close(done)
	}()
	h.clock.WaitTimers(1)
	close(r.release)
	select {
	case <-done:
	case <-time.After(safety):
		t.Fatal("Shutdown did not return after the run ended")
	}
	select {
	case <-r.killed:
		t.Fatal("run cancelled although it ended within the grace period")
	default:
	}
	// The end of the run after Shutdown neither starts the pending run
	// nor re-arms the periodic timer.
	h.wantRuns(0, 1)
	if n := h.clock.Pending(); n != 0 {
		t.Errorf("%d timers armed after Shutdown returned, want 0", n)
	}
}

func TestDeliverFilters(t *testing.T) {
	base := testHandler("alice")
	base.Delay = time.Hour // keep events pending: counts show who got what
	read := base
	read.Event = "MessageRead"
	upper := base
	upper.User = "Alice"
	ip := base
	ip.IP = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::/32")}
	h := newHarness(t, base, read, upper, ip)

	cases := []struct {
		ev     event.Event
		remote string
		want   []int // pending count per handler after this delivery
	}{
		{newEvent("alice", ""), "127.0.0.1:1", []int{1, 0, 0, 0}},
		{newEvent("alice", ""), "192.0.2.7:1", []int{2, 0, 0, 1}},
		{newEvent("alice", ""), "[::ffff:192.0.2.8]:1", []int{3, 0, 0, 2}},
		{newEvent("alice", ""), "[2001:db8::5]:1", []int{4, 0, 0, 3}},
		{newEvent("alice", ""), "198.51.100.1:1", []int{5, 0, 0, 3}},
		{newEvent("ALICE", ""), "192.0.2.7:1", []int{5, 0, 0, 3}},
		{newEvent("Alice", ""), "192.0.2.7:1", []int{5, 0, 1, 3}},
		{newEvent("alice ", ""), "192.0.2.7:1", []int{5, 0, 1, 3}},
		{event.Event{User: "alice", Event: "MessageRead"}, "192.0.2.7:1", []int{5, 1, 1, 3}},
		{event.Event{User: "alice", Event: "messageRead"}, "192.0.2.7:1", []int{5, 1, 1, 3}},
	}
	prev := []int{0, 0, 0, 0}
	for i, c := range cases {
		matched := 0
		for j := range c.want {
			matched += c.want[j] - prev[j]
		}
		if n := h.x.Deliver(c.ev, netip.MustParseAddrPort(c.remote)); n != matched {
			t.Errorf("case %d: Deliver returned %d, want %d", i, n, matched)
		}
		for j, w := range c.want {
			hd := h.x.handlers[j]
			hd.mu.Lock()
			got := hd.one.count
			hd.mu.Unlock()
			if got != w {
				t.Errorf("case %d: handler %d has %d pending events, want %d", i, j, got, w)
			}
		}
		prev = c.want
	}
	// Several handlers may match one event; each is scheduled.
	h.clock.Advance(time.Hour)
	for j, w := range []int{1, 1, 1, 1} {
		h.wantRuns(j, w)
	}
}

func TestIdleHandlerHasNoTimer(t *testing.T) {
	hc := testHandler("alice")
	hc.Delay = time.Second
	h := newHarness(t, hc)
	h.x.Start()
	if n := h.clock.Pending(); n != 0 {
		t.Fatalf("%d timers armed on an idle handler without periodic", n)
	}
	h.x.Deliver(newEvent("alice", "1"), peer)
	h.clock.Advance(time.Second)
	h.finish(h.next())
	if n := h.clock.Pending(); n != 0 {
		t.Fatalf("%d timers armed after the handler went idle", n)
	}
}

// TestExactIndex checks exactFor, the exact handlers of a user as
// Deliver and Run find them: a user's handlers interleaved with others'
// and with a wildcard handler come in list order, after New and after an
// Update that reorders them, and an append to one user's must not reach
// the next user's.
func TestExactIndex(t *testing.T) {
	list := func(users ...string) []config.Handler {
		var hs []config.Handler
		for i, u := range users {
			hc := testHandler(u)
			if u == "*" {
				hc = patternHandler(u)
			}
			hc.Number = i + 1
			hs = append(hs, hc)
		}
		return hs
	}
	numbers := func(x *Exec, user string) []int {
		x.mu.RLock()
		defer x.mu.RUnlock()
		var out []int
		for _, h := range x.exactFor(user) {
			h.mu.Lock()
			out = append(out, h.number) // cfg's is the first list's for a kept handler
			h.mu.Unlock()
		}
		return out
	}
	h := newHarness(t, list("bob", "alice", "*", "carol", "alice", "bob", "alice")...)
	want := map[string][]int{"alice": {2, 5, 7}, "bob": {1, 6}, "carol": {4}, "dave": nil, "*": nil}
	for u, w := range want {
		if got := numbers(h.x, u); !slices.Equal(got, w) {
			t.Errorf("after New, %s: handlers %v, want %v", u, got, w)
		}
	}
	h.x.mu.RLock()
	alice := h.x.exactFor("alice")
	_ = append(alice, nil)
	h.x.mu.RUnlock()
	if got := numbers(h.x, "bob"); !slices.Equal(got, want["bob"]) {
		t.Errorf("after an append to alice's: bob's handlers %v", got)
	}
	if n := h.x.Deliver(newEvent("alice", "1"), peer); n != 4 {
		t.Errorf("an event for alice matched %d handlers, want her 3 and the wildcard", n)
	}

	h.x.Update(list("alice", "carol", "bob", "alice", "erin"))
	want = map[string][]int{"alice": {1, 4}, "bob": {3}, "carol": {2}, "erin": {5}, "dave": nil}
	for u, w := range want {
		if got := numbers(h.x, u); !slices.Equal(got, w) {
			t.Errorf("after Update, %s: handlers %v, want %v", u, got, w)
		}
	}
}
