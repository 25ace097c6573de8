package exec

import (
	"sync"
	"time"

	"github.com/imserious/imserious/clock"
)

// waits holds the wait timers of an Exec's states (sched.armWait: a
// delay, a token, a retry's back-off, a refill) on one timer of the
// clock, armed for the earliest.
//
// A timer of the runtime and its callback are about 160 bytes: with
// 10,000 handlers each waiting for its delay they were a tenth of the
// exec process's heap. An entry here is 56 bytes, and the clock's timer
// is re-armed only when an entry comes before the one it is armed for:
// a delay, the same for every event, comes after the others.
type waits struct {
	clock clock.Clock

	mu  sync.Mutex
	q   []waitEntry // a min-heap by when, then seq; each state's waitIdx is its place + 1
	seq uint64
	// timer is the clock's, armed to fire at at, no later than q[0]; nil
	// when q is empty. gen is its generation: the callback of one
	// stopped or replaced does nothing.
	timer clock.Timer
	at    time.Time
	gen   uint64
}

// waitEntry is one armed wait timer: f runs for s at when, unless s's
// waitGen is no longer gen.
type waitEntry struct {
	when time.Time
	seq  uint64 // entries due at once fire in the order they were armed
	s    *sched
	gen  uint64
	f    func(*sched)
}

// add arms s's wait timer: f(s) at when, through sched.waitDue with gen.
// s must have none armed (stopWait).
func (w *waits) add(s *sched, gen uint64, when time.Time, f func(*sched)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seq++
	w.q = append(w.q, waitEntry{when: when, seq: w.seq, s: s, gen: gen, f: f})
	i := len(w.q) - 1
	s.waitIdx = int32(i + 1)
	w.up(i)
	w.arm()
}

// remove disarms s's wait timer, if armed.
func (w *waits) remove(s *sched) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if s.waitIdx == 0 {
		return
	}
	w.removeAt(int(s.waitIdx) - 1)
	// A clock timer armed for a removed entry is left to fire early and
	// re-arm for the next, unless nothing is left.
	if len(w.q) == 0 {
		w.arm()
	}
}

// arm makes the clock's timer fire no later than the earliest entry, and
// stops it when there is none. w.mu must be held.
func (w *waits) arm() {
	if len(w.q) == 0 {
		if w.timer != nil {
			w.timer.Stop()
			w.timer = nil
		}
		return
	}
	first := w.q[0].when
	if w.timer != nil && !w.at.After(first) {
		return
	}
	if w.timer != nil {
		w.timer.Stop()
	}
	w.gen++
	gen := w.gen
	w.at = first
	w.timer = w.clock.AfterFunc(first.Sub(w.clock.Now()), func() { w.fire(gen) })
}

// fire is the clock timer's callback: it runs every entry due, earliest
// first, each without w.mu (waitDue takes the handler's lock, which is
// taken before w.mu, never after), then re-arms for the next.
func (w *waits) fire(gen uint64) {
	for {
		w.mu.Lock()
		if gen != w.gen {
			w.mu.Unlock()
			return // stopped or replaced: its successor runs the entries
		}
		if len(w.q) == 0 || w.q[0].when.After(w.clock.Now()) {
			w.timer = nil
			w.arm()
			w.mu.Unlock()
			return
		}
		e := w.q[0]
		w.removeAt(0)
		w.mu.Unlock()
		e.s.waitDue(e.gen, e.f)
	}
}

func (w *waits) less(i, j int) bool {
	a, b := &w.q[i], &w.q[j]
	if !a.when.Equal(b.when) {
		return a.when.Before(b.when)
	}
	return a.seq < b.seq
}

func (w *waits) swap(i, j int) {
	w.q[i], w.q[j] = w.q[j], w.q[i]
	w.q[i].s.waitIdx = int32(i + 1)
	w.q[j].s.waitIdx = int32(j + 1)
}

func (w *waits) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !w.less(i, p) {
			return
		}
		w.swap(i, p)
		i = p
	}
}

func (w *waits) down(i int) {
	n := len(w.q)
	for {
		c := 2*i + 1
		if c >= n {
			return
		}
		if c+1 < n && w.less(c+1, c) {
			c++
		}
		if !w.less(c, i) {
			return
		}
		w.swap(i, c)
		i = c
	}
}

// removeAt takes entry i out of the heap.
func (w *waits) removeAt(i int) {
	last := len(w.q) - 1
	w.q[i].s.waitIdx = 0
	if i != last {
		w.q[i] = w.q[last]
		w.q[i].s.waitIdx = int32(i + 1)
	}
	w.q[last] = waitEntry{}
	w.q = w.q[:last]
	if i != last {
		w.down(i)
		w.up(i)
	}
	if cap(w.q) > 64 && len(w.q) < cap(w.q)/4 {
		// Given back after a burst: 10,000 delays are 0.5 MB.
		w.q = append([]waitEntry(nil), w.q...)
	}
}
