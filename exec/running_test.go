package exec

import (
	"fmt"
	"testing"
	"time"
)

// A mail to many users of a wildcard handler runs at most MaxRunning
// commands at once: the others wait for a slot, and every one runs.
func TestMaxRunning(t *testing.T) {
	old := MaxRunning
	MaxRunning = 2
	t.Cleanup(func() { MaxRunning = old })
	h := newHarness(t, patternHandler("*"))
	const users = 5
	for i := range users {
		h.x.Deliver(newEvent(fmt.Sprintf("u%d@example.org", i), "s"), peer)
	}
	a, b := h.next(), h.next()
	select {
	case r := <-h.runner.started:
		t.Fatalf("a third command (%s) runs beside two, MaxRunning = 2", r.Job.User)
	case <-time.After(50 * time.Millisecond):
		// Not synchronisation: a window in which a wrong third run would
		// show; the waits below are on the runs themselves.
	}
	seen := map[string]bool{a.Job.User: true, b.Job.User: true}
	h.finish(a)
	for range users - 2 {
		r := h.next()
		seen[r.Job.User] = true
		h.finish(r)
	}
	h.finish(b)
	if len(seen) != users {
		t.Errorf("ran for %d users, want %d: %v", len(seen), users, seen)
	}
}
