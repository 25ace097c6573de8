// Package clocktest is a clock.Clock for tests: it moves only when Advance
// is called, so tests of delays, debounces and periodic runs do not sleep.
package clocktest

import (
	"sort"
	"sync"
	"time"

	"github.com/imserious/imserious/clock"
)

// Clock is a fake clock.Clock. How Advance runs the due callbacks is chosen
// when it is made: New runs them itself, NewAsync starts them the way
// time.AfterFunc does.
type Clock struct {
	async bool
	armed chan struct{}

	mu     sync.Mutex
	cond   *sync.Cond // broadcast whenever a timer is armed
	now    time.Time
	seq    int // order of arming, which breaks ties between equal times
	timers []*timer
}

type timer struct {
	c    *Clock
	when time.Time
	seq  int
	f    func()
}

// New returns a clock at start whose Advance fires due timers in time
// order, synchronously, so that when it returns every callback due by then
// has run: tests can check the outcome right after Advance without waiting.
func New(start time.Time) *Clock {
	return newClock(start, false)
}

// NewAsync returns a clock at start whose Advance, like time.AfterFunc,
// starts each due callback on its own goroutine and does not wait for it:
// for code whose callbacks hand over to another goroutine and would block
// a synchronous Advance.
func NewAsync(start time.Time) *Clock {
	return newClock(start, true)
}

func newClock(start time.Time, async bool) *Clock {
	c := &Clock{async: async, now: start, armed: make(chan struct{}, 1)}
	c.cond = sync.NewCond(&c.mu)
	return c
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc arms a timer that calls f once Advance has moved the clock d
// past now.
func (c *Clock) AfterFunc(d time.Duration, f func()) clock.Timer {
	c.mu.Lock()
	c.seq++
	t := &timer{c: c, when: c.now.Add(d), seq: c.seq, f: f}
	c.timers = append(c.timers, t)
	c.cond.Broadcast()
	c.mu.Unlock()
	select {
	case c.armed <- struct{}{}:
	default:
	}
	return t
}

// Stop disarms the timer and reports whether it was still armed.
func (t *timer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	for i, u := range t.c.timers {
		if u == t {
			t.c.timers = append(t.c.timers[:i], t.c.timers[i+1:]...)
			return true
		}
	}
	return false
}

// Advance moves the clock by d, firing every timer due on the way in time
// order (ties in the order they were armed).
//
// A clock from New moves to each timer's own time before calling it, so
// the callback sees that time in Now, and fires timers the callbacks arm
// if they are due by the end too; Advance returns when all have run.
//
// A clock from NewAsync moves to the end first, then starts each timer due
// by then on its own goroutine and returns without waiting: callbacks see
// the end time, and timers they arm wait for the next Advance.
func (c *Clock) Advance(d time.Duration) {
	if c.async {
		c.advanceAsync(d)
		return
	}
	c.mu.Lock()
	end := c.now.Add(d)
	for {
		c.sortTimers()
		if len(c.timers) == 0 || c.timers[0].when.After(end) {
			break
		}
		t := c.timers[0]
		c.timers = c.timers[1:]
		if t.when.After(c.now) {
			c.now = t.when
		}
		// Unlocked: the callback may use the clock.
		c.mu.Unlock()
		t.f()
		c.mu.Lock()
	}
	c.now = end
	c.mu.Unlock()
}

func (c *Clock) advanceAsync(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.sortTimers()
	var due []*timer
	for len(c.timers) > 0 && !c.timers[0].when.After(c.now) {
		due = append(due, c.timers[0])
		c.timers = c.timers[1:]
	}
	c.mu.Unlock()
	for _, t := range due {
		go t.f()
	}
}

// sortTimers puts the next timer to fire first. c.mu must be held.
func (c *Clock) sortTimers() {
	sort.SliceStable(c.timers, func(i, j int) bool {
		if !c.timers[i].when.Equal(c.timers[j].when) {
			return c.timers[i].when.Before(c.timers[j].when)
		}
		return c.timers[i].seq < c.timers[j].seq
	})
}

// Pending is the number of armed timers.
func (c *Clock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// WaitTimers blocks until at least n timers are armed: the way to know
// another goroutine has reached its AfterFunc call.
func (c *Clock) WaitTimers(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.timers) < n {
		c.cond.Wait()
	}
}

// Armed gets a token whenever a timer is armed (one is kept while nobody
// receives), so a test can wait for the code under test to arm a timer
// instead of guessing when the events that lead to it arrived.
func (c *Clock) Armed() <-chan struct{} {
	return c.armed
}
