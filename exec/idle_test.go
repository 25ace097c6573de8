package exec

import (
	"testing"
	"time"
)

// TestOnIdle: OnIdle reports each change between idle and busy, in
// order, with no lock of the Exec held (it calls Status and Idle): a
// pending or running run of an exact handler is busy, a periodic timer
// is not, and a wildcard handler is busy while it keeps any user's
// state, until that user's bucket is full again.
func TestOnIdle(t *testing.T) {
	calls := make(chan bool, 100)
	var x *Exec
	ready := make(chan struct{})
	onIdle := func(idle bool) {
		<-ready
		x.Status() // would deadlock if a lock were held
		if x.Idle() != idle {
			t.Errorf("OnIdle(%v) while Idle() says otherwise", idle)
		}
		calls <- idle
	}
	exact := testHandler("alice")
	exact.Delay = time.Minute
	exact.Periodic = time.Hour
	h := newHarnessWith(t, Options{OnIdle: onIdle}, exact, patternHandler("u*"))
	x = h.x
	close(ready)
	want := func(idle bool) {
		t.Helper()
		select {
		case got := <-calls:
			if got != idle {
				t.Fatalf("at +%v: OnIdle(%v), want OnIdle(%v)", h.elapsed(), got, idle)
			}
		case <-time.After(safety):
			t.Fatalf("at +%v: no OnIdle(%v); Idle %v busy %d status %+v", h.elapsed(), idle, x.Idle(), x.busy, x.Status())
		}
		if x.Idle() != idle {
			t.Fatalf("at +%v: Idle() = %v after OnIdle(%v)", h.elapsed(), !idle, idle)
		}
	}

	h.x.Start()
	if !h.x.Idle() {
		t.Fatal("an Exec with its periodic timer armed is not idle")
	}
	h.x.Deliver(newEvent("alice", "s"), peer) // delayed
	want(false)
	h.clock.Advance(time.Minute)
	h.finish(h.next())
	want(true)

	h.clock.Advance(time.Hour) // the periodic run
	r := h.next()
	want(false)
	h.finish(r)
	want(true)

	// A user state kept only for its bucket's refill is no work: the
	// process is idle once the run has ended (so it may be stopped), and
	// the state stays until the refill.
	h.x.Deliver(newEvent("u1", "s"), peer)
	want(false)
	h.finish(h.next())
	want(true)
	h.clock.Advance(29 * time.Second) // u1's bucket refills at +30s
	if !h.x.Idle() {
		t.Fatal("busy while u1's bucket only refills")
	}
	h.clock.Advance(time.Second)

	// Both kinds at once make one transition each way.
	h.x.Deliver(newEvent("u2", "s"), peer)
	want(false)
	h.x.Deliver(newEvent("alice", "s"), peer)
	h.finish(h.next())
	h.clock.Advance(time.Minute)
	h.finish(h.next())
	want(true)

	// A manual run is busy too.
	h.x.Run("alice", "")
	want(false)
	h.clock.Advance(time.Minute)
	h.finish(h.next())
	want(true)

	h.x.Shutdown(0)
	if len(calls) != 0 {
		t.Errorf("%d more calls", len(calls))
	}
}

func TestOnIdleRetry(t *testing.T) {
	calls := make(chan bool, 100)
	hc := testHandler("alice")
	hc.Retries = 1
	h := newHarnessWith(t, Options{OnIdle: func(idle bool) { calls <- idle }}, hc)
	h.x.Deliver(newEvent("alice", "s"), peer)
	h.finishWith(h.next(), failed)
	if h.x.Idle() {
		t.Fatal("idle with a retry waiting")
	}
	h.clock.Advance(10 * time.Second)
	h.finish(h.next())
	if !h.x.Idle() {
		t.Fatal("not idle after the retry")
	}
	h.x.Shutdown(0) // waits for the calls
	var got []bool
	for len(calls) > 0 {
		got = append(got, <-calls)
	}
	if len(got) != 2 || got[0] || !got[1] {
		t.Errorf("calls %v, want [false true]", got)
	}
}

// TestOnIdleCoalesced: transitions made while OnIdle is busy are told in
// at most two calls, and a spell of work between two idle states is
// never lost.
func TestOnIdleCoalesced(t *testing.T) {
	calls := make(chan bool, 100)
	hold, entered := make(chan struct{}), make(chan struct{})
	first := true
	onIdle := func(idle bool) {
		if first {
			first = false
			close(entered)
			<-hold // the transitions below happen meanwhile
		}
		calls <- idle
	}
	h := newHarnessWith(t, Options{OnIdle: onIdle}, testHandler("alice"))
	next := func() bool {
		t.Helper()
		select {
		case idle := <-calls:
			return idle
		case <-time.After(safety):
			t.Fatal("no call")
			return false
		}
	}
	h.x.Deliver(newEvent("alice", "s"), peer) // 1: busy, the first call, held
	select {
	case <-entered:
	case <-time.After(safety):
		t.Fatal("no first call")
	}
	h.finish(h.next())                        // 2: idle
	h.x.Deliver(newEvent("alice", "s"), peer) // 3: busy, deferred by the limit
	h.clock.Advance(30 * time.Second)
	h.finish(h.next())                        // 4: idle
	h.x.Deliver(newEvent("alice", "s"), peer) // 5: busy, deferred
	close(hold)
	// Four transitions behind the first call: busy and back is told.
	if got := []bool{next(), next(), next()}; got[0] || !got[1] || got[2] {
		t.Fatalf("calls %v, want [false true false]", got)
	}
	h.clock.Advance(30 * time.Second)
	h.finish(h.next()) // 6: idle
	if !next() {
		t.Fatal("no idle call at the end")
	}
	h.x.Shutdown(0)
	if len(calls) != 0 {
		t.Errorf("%d more calls", len(calls))
	}
}
