package exec

import (
	"testing"
	"time"

	"github.com/imserious/imserious/config"
)

// TestWaitsOneTimer: the states' wait timers are one timer of the clock,
// armed for the earliest; they fire in the order they are due, ties in
// the order they were armed; the clock's timer is re-armed only for an
// earlier one and stopped once none is left.
func TestWaitsOneTimer(t *testing.T) {
	var hs []*handlerSpec
	for _, c := range []struct {
		user  string
		delay time.Duration
	}{{"a", 3 * time.Second}, {"b", time.Second}, {"c", 2 * time.Second}, {"d", time.Second}, {"e", 4 * time.Second}} {
		hs = append(hs, &handlerSpec{c.user, c.delay})
	}
	h := newHarness(t, specHandlers(hs)...)
	h.x.Start()
	w := &h.x.waits
	deliver := func(user string) {
		t.Helper()
		if n := h.x.Deliver(newEvent(user, "s"), peer); n != 1 {
			t.Fatalf("%s: matched %d", user, n)
		}
	}
	deliver("a")
	gen := w.gen
	deliver("e") // later than a: the clock's timer stays
	if w.gen != gen {
		t.Error("the clock's timer was re-armed for a later entry")
	}
	deliver("b") // earlier: re-armed
	if w.gen == gen {
		t.Error("the clock's timer was not re-armed for an earlier entry")
	}
	deliver("d") // due with b, armed after it
	deliver("c")
	if n, p := w.len(), h.clock.Pending(); n != 5 || p != 1 {
		t.Fatalf("%d waits on %d clock timers, want 5 on 1", n, p)
	}
	// e's handler is removed: its entry goes, the others stay.
	keep := []*handlerSpec{hs[0], hs[1], hs[2], hs[3]}
	if _, removed, _ := h.x.Update(specHandlers(keep)); removed != 1 {
		t.Fatalf("removed %d", removed)
	}
	if n := w.len(); n != 4 {
		t.Fatalf("%d waits after removing a pending handler, want 4", n)
	}
	// b and d are due at once: b, armed first, is first.
	if w.q[0].s != h.x.handlers[1].one {
		t.Errorf("the first entry is %q's, want b's", w.q[0].s.user())
	}
	// Launches are counted as they happen, so runs(i) is exact after each
	// Advance: b and d at +1s, c at +2s, a at +3s.
	for step, want := range [][4]int{{0, 1, 0, 1}, {0, 1, 1, 1}, {1, 1, 1, 1}} {
		h.clock.Advance(time.Second)
		for i, n := range want {
			if got := h.runs(i); got != n {
				t.Errorf("at +%ds handler %d has %d runs, want %d", step+1, i, got, n)
			}
		}
	}
	for range 4 {
		h.finish(h.next())
	}
	// The runs' token buckets refill over 30 s; nothing else waits.
	if n, p := w.len(), h.clock.Pending(); n != 0 || p != 0 {
		t.Errorf("%d waits on %d clock timers once all ran, want none", n, p)
	}
}

// TestWaitsStaleFire: a callback of a clock timer that was replaced
// does nothing, and an entry removed while the clock's timer is armed
// for it leaves the timer to fire early and re-arm for the next.
func TestWaitsStaleFire(t *testing.T) {
	h := newHarness(t, specHandlers([]*handlerSpec{{"a", 2 * time.Second}, {"b", 5 * time.Second}})...)
	w := &h.x.waits
	h.x.Deliver(newEvent("a", "s"), peer)
	h.x.Deliver(newEvent("b", "s"), peer)
	stale := w.gen - 1
	w.fire(stale) // an old callback: nothing due runs, nothing changes
	if n := w.len(); n != 2 {
		t.Fatalf("a stale callback took %d entries", 2-n)
	}
	// a's handler goes: the clock's timer, armed for +2s, fires early
	// and re-arms for b at +5s.
	if _, removed, _ := h.x.Update(specHandlers([]*handlerSpec{{"b", 5 * time.Second}})); removed != 1 {
		t.Fatalf("removed %d", removed)
	}
	h.clock.Advance(2 * time.Second)
	if w.len() != 1 || h.clock.Pending() != 1 || !w.at.Equal(epoch.Add(5*time.Second)) {
		t.Fatalf("after the early fire: %d waits, %d clock timers, armed for %v", w.len(), h.clock.Pending(), w.at.Sub(epoch))
	}
	h.clock.Advance(3*time.Second - time.Nanosecond)
	h.wantRuns(0, 0)
	h.clock.Advance(time.Nanosecond)
	h.finish(h.next())
}

type handlerSpec struct {
	user  string
	delay time.Duration
}

// specHandlers returns one handler for each spec, of one account.
func specHandlers(specs []*handlerSpec) []config.Handler {
	var out []config.Handler
	for _, s := range specs {
		c := sameAccountHandler(s.user)
		c.Delay = s.delay
		out = append(out, c)
	}
	return out
}

// len is how many wait timers are armed.
func (w *waits) len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.q)
}
