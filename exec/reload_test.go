package exec

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/imserious/imserious/config"
)

func TestRecoveryRun(t *testing.T) {
	hc := testHandler("alice")
	hc.Delay = 5 * time.Second // burst 1, one token per 30s
	h := newHarness(t, hc)
	h.x.Recover()
	h.clock.Advance(5*time.Second - time.Nanosecond)
	h.wantRuns(0, 0)
	h.clock.Advance(time.Nanosecond)
	h.wantRuns(0, 1)
	r := h.next()
	if r.Trigger != TriggerRecovery || r.Count != 0 {
		t.Fatalf("trigger %q count %d, want recovery 0", r.Trigger, r.Count)
	}
	wantEnv(t, r.Job, map[string]string{
		"IMSE_TRIGGER": "recovery", "IMSE_USER": "alice", "IMSE_EVENT": "MessageNew",
		"IMSE_COUNT": "<absent>", "IMSE_REMOTE_IP": "<absent>", "IMSE_SUBJECT": "<absent>", "IMSE_FOLDER": "<absent>",
		"HOME": "/home/alice",
	})
	// A second recovery while it runs waits for it, then for a token:
	// recovery runs spend tokens like event runs.
	h.x.Recover()
	h.wantRuns(0, 1)
	h.finish(r)
	h.wantRuns(0, 1)
	h.clock.Advance(30*time.Second - time.Nanosecond) // token due 30s after the first run
	h.wantRuns(0, 1)
	h.clock.Advance(time.Nanosecond)
	h.wantRuns(0, 2)
	if r := h.next(); r.Trigger != TriggerRecovery {
		t.Fatalf("trigger %q, want recovery", r.Trigger)
	} else {
		h.finish(r)
	}
	if recs := h.logs.find(t, "run deferred by rate limit"); len(recs) != 1 || recs[0]["trigger"] != "recovery" {
		t.Errorf("rate-limit records %v, want one for the recovery run", recs)
	}
	h.clock.Advance(time.Hour)
	h.wantRuns(0, 2)
}

func TestRecoveryCoveredByPendingEvent(t *testing.T) {
	hc := testHandler("alice")
	hc.Delay = 5 * time.Second
	h := newHarness(t, hc)
	h.x.Deliver(newEvent("alice", "mail"), peer)
	h.clock.Advance(time.Second)
	h.x.Recover()
	h.clock.Advance(4 * time.Second)
	h.wantRuns(0, 1)
	r := h.next()
	if r.Trigger != TriggerEvent || r.Count != 1 {
		t.Fatalf("trigger %q count %d, want the pending event run (event, 1)", r.Trigger, r.Count)
	}
	wantEnv(t, r.Job, map[string]string{"IMSE_TRIGGER": "event", "IMSE_COUNT": "1", "IMSE_SUBJECT": "mail"})
	h.finish(r)
	h.clock.Advance(time.Hour)
	h.wantRuns(0, 1)
	if n := len(h.logs.find(t, "recovery coalesced into pending run")); n != 1 {
		t.Errorf("%d coalesced-recovery records, want 1", n)
	}
}

func TestEventTurnsRecoveryIntoEventRun(t *testing.T) {
	hc := testHandler("alice")
	hc.Delay = 5 * time.Second
	h := newHarness(t, hc)
	h.x.Recover()
	h.clock.Advance(2 * time.Second)
	h.x.Deliver(newEvent("alice", "first"), peer)
	h.x.Deliver(newEvent("alice", "late"), peer)
	h.clock.Advance(3*time.Second - time.Nanosecond)
	h.wantRuns(0, 0)
	h.clock.Advance(time.Nanosecond) // the recovery's delay, not extended
	h.wantRuns(0, 1)
	r := h.next()
	if r.Trigger != TriggerEvent || r.Count != 2 {
		t.Fatalf("trigger %q count %d, want event 2", r.Trigger, r.Count)
	}
	wantEnv(t, r.Job, map[string]string{"IMSE_TRIGGER": "event", "IMSE_COUNT": "2", "IMSE_SUBJECT": "late", "IMSE_REMOTE_IP": "127.0.0.1"})
	h.finish(r)
	h.clock.Advance(time.Hour)
	h.wantRuns(0, 1)
}

func TestRecoveryDuringRunAndAfterShutdown(t *testing.T) {
	hc := testHandler("alice")
	hc.LimitBurst = 2
	h := newHarness(t, hc)
	h.x.Deliver(newEvent("alice", "1"), peer)
	r := h.next()
	h.x.Recover()
	h.x.Recover() // one pending recovery covers both
	h.wantRuns(0, 1)
	h.finish(r)
	h.wantRuns(0, 2)
	r = h.next()
	if r.Trigger != TriggerRecovery {
		t.Fatalf("trigger %q, want recovery", r.Trigger)
	}
	h.finish(r)
	h.clock.Advance(time.Hour)
	h.wantRuns(0, 2)

	h.x.Shutdown(0)
	h.x.Recover()
	h.clock.Advance(time.Hour)
	h.wantRuns(0, 2)
	if n := len(h.logs.find(t, "recovery after shutdown dropped")); n != 1 {
		t.Errorf("%d dropped-recovery records, want 1", n)
	}
}

// TestUpdateKeepsPendingEvent: an event inside a 5 s delay survives a
// reload that keeps its handler (moved in the file and in the list) and
// runs exactly once, at the original time.
func TestUpdateKeepsPendingEvent(t *testing.T) {
	a := testHandler("alice")
	a.Delay = 5 * time.Second
	a.Line = 3
	h := newHarness(t, a)
	h.x.Start()
	h.x.Deliver(newEvent("alice", "kept"), peer)
	h.clock.Advance(2 * time.Second)

	b := testHandler("bob")
	b.Periodic = time.Hour
	moved := a
	moved.Line = 12
	if added, removed, kept := h.x.Update([]config.Handler{b, moved}); added != 1 || removed != 0 || kept != 1 {
		t.Fatalf("Update = %d added, %d removed, %d kept; want 1, 0, 1", added, removed, kept)
	}
	h.clock.Advance(3*time.Second - time.Nanosecond)
	h.wantRuns(1, 0)
	h.clock.Advance(time.Nanosecond)
	h.wantRuns(1, 1)
	r := h.next()
	if r.Index != 1 || r.Trigger != TriggerEvent || r.Count != 1 {
		t.Fatalf("job index %d trigger %q count %d, want 1 event 1", r.Index, r.Trigger, r.Count)
	}
	wantEnv(t, r.Job, map[string]string{"IMSE_SUBJECT": "kept"})
	h.finish(r)
	h.clock.Advance(10 * time.Minute)
	h.wantRuns(1, 1)
	// The new handler was started: its periodic timer runs from Update
	// (at +2s).
	h.clock.Advance(time.Hour - 10*time.Minute - 3*time.Second - time.Nanosecond)
	h.wantRuns(0, 0)
	h.clock.Advance(time.Nanosecond)
	h.wantRuns(0, 1)
	h.finish(h.next())

	// Logs name a kept handler by its new index and line.
	start := h.logs.find(t, "burst started, run delayed")
	if len(start) != 1 || start[0]["handler"] != 0.0 || start[0]["line"] != 3.0 {
		t.Errorf("before Update: %v, want handler 0 line 3", start)
	}
	h.x.Deliver(newEvent("alice", "again"), peer)
	recs := h.logs.find(t, "burst started, run delayed")
	if len(recs) != 2 || recs[1]["handler"] != 1.0 || recs[1]["line"] != 12.0 {
		t.Errorf("after Update: %v, want handler 1 line 12", recs)
	}
}

func TestUpdateRemovesHandler(t *testing.T) {
	a := testHandler("alice")
	a.Delay = 5 * time.Second
	a.Periodic = time.Minute
	h := newHarness(t, a)
	h.x.Start()
	h.x.Deliver(newEvent("alice", "gone"), peer)
	h.clock.Advance(time.Second)
	changed := a
	changed.Delay = 6 * time.Second // a change: not the same handler
	if added, removed, kept := h.x.Update([]config.Handler{changed}); added != 1 || removed != 1 || kept != 0 {
		t.Fatalf("Update = %d added, %d removed, %d kept; want 1, 1, 0", added, removed, kept)
	}
	old := h.runner
	h.clock.Advance(5 * time.Second)
	select {
	case r := <-old.started:
		t.Fatalf("removed handler ran %q", r.Trigger)
	default:
	}
	recs := h.logs.find(t, "pending run dropped at reload")
	if len(recs) != 1 || recs[0]["count"] != 1.0 || recs[0]["level"] != "WARN" {
		t.Errorf("dropped-run records %v, want one with count 1", recs)
	}
	// The new handler has no pending event and only its own periodic
	// timer: one periodic run a minute after Update, none of the old.
	h.clock.Advance(time.Minute - 5*time.Second - time.Nanosecond)
	h.wantRuns(0, 0)
	h.clock.Advance(time.Nanosecond)
	h.wantRuns(0, 1)
	if r := h.next(); r.Trigger != TriggerPeriodic {
		t.Fatalf("trigger %q, want periodic", r.Trigger)
	} else {
		h.finish(r)
	}
}

func TestUpdateDuringRunningCommand(t *testing.T) {
	a := testHandler("alice")
	a.LimitBurst = 5
	b := testHandler("bob")
	h := newHarness(t, a, b)
	h.x.Deliver(newEvent("alice", "1"), peer)
	ra := h.next()
	h.x.Deliver(newEvent("bob", "1"), peer)
	rb := h.next()

	// alice kept while running: no second copy, one follow-up.
	h.x.Update([]config.Handler{a, b})
	h.x.Deliver(newEvent("alice", "2"), peer)
	h.x.Update([]config.Handler{a, b})
	h.x.Deliver(newEvent("alice", "3"), peer)
	h.wantRuns(0, 1)
	// bob removed while running: his command is left to finish.
	if _, removed, _ := h.x.Update([]config.Handler{a}); removed != 1 {
		t.Fatalf("removed %d, want 1", removed)
	}
	h.wantRuns(0, 1)
	h.finish(ra)
	h.wantRuns(0, 2)
	r := h.next()
	if r.Count != 2 {
		t.Fatalf("follow-up count %d, want 2", r.Count)
	}
	h.finish(r)
	select {
	case <-rb.killed:
		t.Fatal("removed handler's running command was killed")
	default:
	}
	h.finish(rb)
	h.clock.Advance(time.Hour)
	h.wantRuns(0, 2)
	if n := len(h.runner.started); n != 0 {
		t.Errorf("%d unexpected runs", n)
	}
}

// TestUpdateDuplicatesPairInOrder: identical handlers keep their states
// one to one; a third identical one is new.
func TestUpdateDuplicatesPairInOrder(t *testing.T) {
	a := testHandler("alice")
	a.Delay = 5 * time.Second
	h := newHarness(t, a, a)
	old := slices.Clone(h.x.handlers)
	h.x.Deliver(newEvent("alice", "x"), peer)
	if added, removed, kept := h.x.Update([]config.Handler{a, a, a}); added != 1 || removed != 0 || kept != 2 {
		t.Fatalf("Update = %d added, %d removed, %d kept; want 1, 0, 2", added, removed, kept)
	}
	if h.x.handlers[0] != old[0] || h.x.handlers[1] != old[1] {
		t.Fatal("identical handlers not kept in order")
	}
	h.clock.Advance(5 * time.Second)
	h.wantRuns(0, 1)
	h.wantRuns(1, 1)
	h.wantRuns(2, 0)
	h.finish(h.next())
	h.finish(h.next())
}

func TestUpdateBeforeStartArmsNothing(t *testing.T) {
	a := testHandler("alice")
	a.Periodic = time.Minute
	h := newHarness(t)
	h.x.Update([]config.Handler{a})
	h.clock.Advance(time.Hour)
	h.wantRuns(0, 0)
	h.x.Start()
	h.clock.Advance(time.Minute)
	h.wantRuns(0, 1)
	h.finish(h.next())
}

// TestDeliverPeersAsNetworkProcess: a handler's ip list is matched by
// internal/prefix, as the network process matches: a link-local peer
// with a zone is in fe80::/10, and an IPv4-mapped prefix holds IPv4
// peers.
func TestDeliverPeersAsNetworkProcess(t *testing.T) {
	ll := testHandler("alice")
	ll.IP = []netip.Prefix{netip.MustParsePrefix("fe80::/10")}
	ll.LimitBurst = 100
	mapped := testHandler("bob")
	mapped.IP = []netip.Prefix{netip.MustParsePrefix("::ffff:192.0.2.0/120")}
	mapped.LimitBurst = 100
	h := newHarness(t, ll, mapped)
	for _, c := range []struct {
		user, remote string
		want         int
	}{
		{"alice", "[fe80::1%eth0]:40000", 1},
		{"alice", "[fe80::1]:40000", 1},
		{"alice", "[2001:db8::1%eth0]:40000", 0},
		{"bob", "192.0.2.7:1", 1},
		{"bob", "[::ffff:192.0.2.8]:1", 1},
		{"bob", "198.51.100.1:1", 0},
	} {
		n := h.x.Deliver(newEvent(c.user, ""), netip.MustParseAddrPort(c.remote))
		if n != c.want {
			t.Errorf("%s from %s: matched %d, want %d", c.user, c.remote, n, c.want)
		}
		for range n {
			h.finish(h.next())
		}
	}
}

func TestFitIMSE(t *testing.T) {
	vars := map[string]string{"PATH": strings.Repeat("p", 100<<10), "IMSE_TRIGGER": "event"}
	for _, k := range []string{"A", "B", "C", "D", "E", "F", "G", "H", "I", "J", "K", "L", "M", "N", "O", "P", "Q", "R", "S", "T"} {
		vars["IMSE_"+k] = strings.Repeat("€", 4096/3) // 4095 bytes each
	}
	fitIMSE(vars)
	total := 0
	for k, v := range vars {
		if !strings.HasPrefix(k, "IMSE_") {
			continue
		}
		total += len(k) + len(v) + 2
		if !utf8.ValidString(v) {
			t.Errorf("%s cut inside a character", k)
		}
	}
	if total > MaxIMSEEnv || total < MaxIMSEEnv-utf8.UTFMax {
		t.Errorf("IMSE_* part is %d bytes, want just under %d", total, MaxIMSEEnv)
	}
	if vars["IMSE_TRIGGER"] != "event" || len(vars["PATH"]) != 100<<10 {
		t.Error("fitIMSE touched IMSE_TRIGGER or a variable outside IMSE_*")
	}
}

// TestShutdownStopsRemovedHandlersRun: a command of a handler that Update
// removed still counts as running for Shutdown, which stops it.
func TestShutdownStopsRemovedHandlersRun(t *testing.T) {
	h := newHarness(t, testHandler("alice"))
	h.x.Deliver(newEvent("alice", "1"), peer)
	r := h.next()
	h.x.Update(nil)
	done := make(chan struct{})
	go func() {
		h.x.Shutdown(0)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(safety):
		close(r.release) // let the cleanup's Shutdown return
		t.Fatal("Shutdown(0) did not stop the removed handler's command")
	}
	select {
	case <-r.killed:
	default:
		t.Fatal("run not cancelled")
	}
}
