package exec

import (
	"sort"
	"sync"
	"testing"
	"time"
)

// fakeClock is a Clock that only moves when Advance is called. Advance
// fires due timers in time order, synchronously, so that when it returns
// every callback due by then has run.
type fakeClock struct {
	mu     sync.Mutex
	cond   *sync.Cond
	now    time.Time
	seq    int
	timers []*fakeTimer
}

type fakeTimer struct {
	c       *fakeClock
	when    time.Time
	seq     int
	f       func()
	stopped bool
}

func newFakeClock() *fakeClock {
	c := &fakeClock{now: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}
	c.cond = sync.NewCond(&c.mu)
	return c
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	t := &fakeTimer{c: c, when: c.now.Add(d), seq: c.seq, f: f}
	c.timers = append(c.timers, t)
	c.cond.Broadcast()
	return t
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	for i, u := range t.c.timers {
		if u == t {
			t.c.timers = append(t.c.timers[:i], t.c.timers[i+1:]...)
			t.stopped = true
			return true
		}
	}
	return false
}

// Advance moves the clock by d, firing every timer due on the way at its
// own time.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	end := c.now.Add(d)
	for {
		sort.SliceStable(c.timers, func(i, j int) bool {
			if !c.timers[i].when.Equal(c.timers[j].when) {
				return c.timers[i].when.Before(c.timers[j].when)
			}
			return c.timers[i].seq < c.timers[j].seq
		})
		if len(c.timers) == 0 || c.timers[0].when.After(end) {
			break
		}
		t := c.timers[0]
		c.timers = c.timers[1:]
		if t.when.After(c.now) {
			c.now = t.when
		}
		c.mu.Unlock()
		t.f()
		c.mu.Lock()
	}
	c.now = end
	c.mu.Unlock()
}

// pending is the number of armed timers.
func (c *fakeClock) pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// waitTimers blocks until at least n timers are armed: the way to know
// another goroutine has reached its AfterFunc call.
func (c *fakeClock) waitTimers(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.timers) < n {
		c.cond.Wait()
	}
}

func TestFakeClock(t *testing.T) {
	c := newFakeClock()
	var got []string
	c.AfterFunc(2*time.Second, func() { got = append(got, "b") })
	c.AfterFunc(time.Second, func() {
		got = append(got, "a")
		c.AfterFunc(500*time.Millisecond, func() { got = append(got, "a2") })
	})
	stopped := c.AfterFunc(time.Second, func() { got = append(got, "x") })
	c.AfterFunc(2*time.Second, func() { got = append(got, "c") })
	if !stopped.Stop() {
		t.Fatal("Stop of an armed timer returned false")
	}
	start := c.Now()
	c.Advance(999 * time.Millisecond)
	if len(got) != 0 {
		t.Fatalf("fired early: %v", got)
	}
	c.Advance(time.Second)
	if want := "a a2"; join(got) != want {
		t.Fatalf("fired %q, want %q", join(got), want)
	}
	c.Advance(time.Millisecond)
	if want := "a a2 b c"; join(got) != want {
		t.Fatalf("fired %q, want %q", join(got), want)
	}
	if d := c.Now().Sub(start); d != 2*time.Second {
		t.Fatalf("clock at +%v, want +2s", d)
	}
}

func join(s []string) string {
	out := ""
	for i, x := range s {
		if i > 0 {
			out += " "
		}
		out += x
	}
	return out
}
