package exec

import (
	"container/heap"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/imserious/imserious/clock"
	"github.com/imserious/imserious/config"
	"github.com/imserious/imserious/event"
	"github.com/imserious/imserious/logging"
	"github.com/imserious/imserious/privsep"
)

// heapClock is a fake clock like clocktest.New's (Advance runs the due
// callbacks itself, in time order) whose timers are in a heap: 10,000
// users' timers would make clocktest's sorted list quadratic.
type heapClock struct {
	mu     sync.Mutex
	now    time.Time
	seq    int
	timers timerHeap
}

type heapTimer struct {
	c    *heapClock
	when time.Time
	seq  int
	f    func()
	idx  int // in c.timers; -1 once fired or stopped
}

type timerHeap []*heapTimer

func (h timerHeap) Len() int { return len(h) }
func (h timerHeap) Less(i, j int) bool {
	if !h[i].when.Equal(h[j].when) {
		return h[i].when.Before(h[j].when)
	}
	return h[i].seq < h[j].seq
}
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i, j
}
func (h *timerHeap) Push(x any) {
	t := x.(*heapTimer)
	t.idx = len(*h)
	*h = append(*h, t)
}
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	t.idx = -1
	return t
}

func (c *heapClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *heapClock) AfterFunc(d time.Duration, f func()) clock.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	t := &heapTimer{c: c, when: c.now.Add(d), seq: c.seq, f: f}
	heap.Push(&c.timers, t)
	return t
}

func (t *heapTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	if t.idx < 0 {
		return false
	}
	heap.Remove(&t.c.timers, t.idx)
	return true
}

func (c *heapClock) Advance(d time.Duration) {
	c.mu.Lock()
	end := c.now.Add(d)
	for len(c.timers) > 0 && !c.timers[0].when.After(end) {
		t := heap.Pop(&c.timers).(*heapTimer)
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

func (c *heapClock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// heapInUse is the heap's live bytes, once a collection has freed the
// garbage.
func heapInUse() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// deliverEach delivers every event, each of which must match one handler.
func deliverEach(t *testing.T, x *Exec, evs []event.Event) {
	t.Helper()
	for i := range evs {
		if n := x.Deliver(evs[i], peer); n != 1 {
			t.Fatalf("event %d matched %d", i, n)
		}
	}
}

// maxBytesPerUser is the budget of the issue: 10,000 users of one
// wildcard handler with pending state cost under 5 KB each.
const maxBytesPerUser = 5000

// TestPatternMemory measures what a user with a pending run costs (its
// state, token bucket, timer, map entry, logger when one is made, the
// event it holds) with 10,000 users over one wildcard handler, and checks
// that once everything has run and every bucket is full again, nothing
// is left. Memory is measured, not time, so the bound is asserted.
func TestPatternMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 users")
	}
	for _, level := range []slog.Level{slog.LevelInfo, slog.LevelDebug} {
		t.Run(level.String(), func(t *testing.T) { patternMemory(t, level) })
	}
}

func patternMemory(t *testing.T, level slog.Level) {
	const users = 10000
	clk := &heapClock{now: epoch}
	hc := patternHandler("*@example.org")
	hc.Delay = time.Minute
	log := logging.New(io.Discard, logging.Options{Level: level}, "exec[vmail]")
	x := New(Options{Handlers: []config.Handler{hc}, Log: log, Clock: clk, Runner: quickRunner{}})
	defer x.Shutdown(0)
	var ended atomic.Int64
	done := make(chan struct{})
	x.ended = func(int) {
		if ended.Add(1) == users {
			close(done)
		}
	}
	// The events as the exec process gets them: each decoded on its own.
	evs := make([]event.Event, users)
	for i := range evs {
		evs[i] = newEvent(fmt.Sprintf("user%05d@example.org", i), fmt.Sprintf("subject %d", i))
	}
	hd := x.handlers[0]

	before := heapInUse()
	deliverEach(t, x, evs)
	per := (heapInUse() - before) / users
	t.Logf("%d users pending, log level %v: %d bytes per user", users, level, per)
	if per >= maxBytesPerUser {
		t.Errorf("%d bytes per user with pending state, want under %d", per, maxBytesPerUser)
	}
	hd.mu.Lock()
	n := len(hd.users)
	hd.mu.Unlock()
	if n != users || x.Idle() {
		t.Fatalf("%d users with state, idle %v", n, x.Idle())
	}
	evs = nil

	clk.Advance(time.Minute) // every delay is over: every user runs
	select {
	case <-done:
	case <-time.After(safety):
		t.Fatalf("%d of %d runs ended", ended.Load(), users)
	}
	if !x.Idle() {
		t.Fatal("busy while the buckets only refill")
	}
	clk.Advance(hc.LimitPeriod) // every bucket is full again
	hd.mu.Lock()
	n = len(hd.users)
	hd.mu.Unlock()
	if n != 0 || !x.Idle() || clk.Pending() != 0 {
		t.Fatalf("after the refill: %d users with state, idle %v, %d timers", n, x.Idle(), clk.Pending())
	}
	if st := x.Status(); len(st) != 1 || st[0].Runs != users {
		t.Errorf("status %+v", st)
	}
}

// Bounds of TestExactMemory, a little above what it measures on amd64:
// bytes per exact handler once made (445; 521 when each state had its
// token bucket from the start, 877 when each handler had its own
// configuration, 1,167 when every state had all its fields inline), and
// what one pending event adds to each (66, the wait timer's entry most
// of it; 162 with a timer of the runtime each). The handlers differ only
// in their user, so they share one configuration (spec); no run has come
// due, so no state has a token bucket yet.
const (
	maxBytesPerExact   = 480
	maxBytesPerPending = 90
)

// TestSchedSize keeps a state and a handler in the size classes they were
// brought down to (on 64-bit systems; they are smaller on 32-bit ones):
// a field added to sched inline, rather than in more or userSched, takes
// every exact handler's state from 256 bytes to 288.
func TestSchedSize(t *testing.T) {
	if n := unsafe.Sizeof(sched{}); n > 256 {
		t.Errorf("sched is %d bytes, want at most 256 (its size class)", n)
	}
	if n := unsafe.Sizeof(handler{}); n > 128 {
		t.Errorf("handler is %d bytes, want at most 128 (its size class)", n)
	}
	t.Logf("sched %d bytes, schedMore %d, userSched %d, handler %d",
		unsafe.Sizeof(sched{}), unsafe.Sizeof(schedMore{}), unsafe.Sizeof(userSched{}), unsafe.Sizeof(handler{}))
}

// TestExactMemory measures what an exact handler costs in the exec
// process with 10,000 of them over one account, as the exec process has
// them: idle after New (its copy of the configuration, its handler, its
// state and token bucket, its place in the index), and then with one
// event pending each behind its delay (its timer, on the system clock as
// in the daemon; the event it holds, but not the event's own strings,
// which are the event package's). Memory is measured, not time, so the
// bounds are asserted.
func TestExactMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 handlers")
	}
	const n = 10000
	account := privsep.Account{Name: "vmail", UID: hookUID, GID: hookUID, Home: "/home/vmail", Shell: "/bin/sh"}
	hs := make([]config.Handler, n)
	evs := make([]event.Event, n)
	for i := range hs {
		user := fmt.Sprintf("user%05d", i)
		hs[i] = testHandler(user)
		hs[i].Account = account
		hs[i].Delay = time.Hour
		evs[i] = newEvent(user, fmt.Sprintf("subject %d", i))
	}
	log := logging.New(io.Discard, logging.Options{Level: slog.LevelInfo}, "exec[vmail]")

	before := heapInUse()
	x := New(Options{Handlers: hs, Log: log, Runner: quickRunner{}})
	defer x.Shutdown(0)
	made := heapInUse()
	deliverEach(t, x, evs)
	pending := heapInUse()
	// The configurations and events are the caller's, live throughout.
	runtime.KeepAlive(hs)
	runtime.KeepAlive(evs)
	idle := (made - before) / n
	more := (pending - made) / n
	t.Logf("%d exact handlers: %d bytes per handler idle, %d more with an event pending (%d in all)", n, idle, more, idle+more)
	if idle >= maxBytesPerExact {
		t.Errorf("%d bytes per idle exact handler, want under %d", idle, maxBytesPerExact)
	}
	if more >= maxBytesPerPending {
		t.Errorf("%d bytes more per exact handler with an event pending, want under %d", more, maxBytesPerPending)
	}
	if x.Idle() {
		t.Fatal("idle with every handler's run pending")
	}
	for i, st := range x.Status() {
		if st.State != StateDelayed || st.Pending != 1 {
			t.Fatalf("handler %d: %+v", i, st)
		}
	}
}

// TestTokenBucketOnFirstRun: a state gets its token bucket when its first
// run needs a token, full, so that the limit is the same as with one made
// at the start: the first run at once, the next after limit_period.
func TestTokenBucketOnFirstRun(t *testing.T) {
	a := testHandler("alice")
	a.Delay = time.Second
	h := newHarness(t, a)
	s := h.x.handlers[0].one
	h.x.Deliver(newEvent("alice", "first"), peer)
	if s.lim != nil {
		t.Fatal("a token bucket before any run came due")
	}
	h.clock.Advance(time.Second)
	h.finish(h.next())
	if s.lim == nil {
		t.Fatal("no token bucket after a run took a token")
	}
	h.x.Deliver(newEvent("alice", "second"), peer)
	h.clock.Advance(time.Second) // the delay; the token is due at +31s
	h.wantRuns(0, 1)
	h.clock.Advance(29*time.Second - time.Nanosecond)
	h.wantRuns(0, 1)
	h.clock.Advance(time.Nanosecond)
	h.wantRuns(0, 2)
	h.finish(h.next())
}
