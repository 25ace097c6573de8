package clocktest

import (
	"strings"
	"sync"
	"testing"
	"time"
)

var start = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// safety bounds waits for goroutines, so a broken clock fails instead of
// hanging.
const safety = 10 * time.Second

func TestSync(t *testing.T) {
	c := New(start)
	var got []string
	var at []time.Duration
	record := func(s string) {
		got = append(got, s)
		at = append(at, c.Now().Sub(start))
	}
	c.AfterFunc(2*time.Second, func() { record("b") })
	c.AfterFunc(time.Second, func() {
		record("a")
		c.AfterFunc(500*time.Millisecond, func() { record("a2") })
	})
	stopped := c.AfterFunc(time.Second, func() { record("x") })
	c.AfterFunc(2*time.Second, func() { record("c") })
	if !stopped.Stop() {
		t.Fatal("Stop of an armed timer returned false")
	}
	if n := c.Pending(); n != 3 {
		t.Fatalf("Pending() = %d, want 3", n)
	}
	c.Advance(999 * time.Millisecond)
	if len(got) != 0 {
		t.Fatalf("fired early: %v", got)
	}
	c.Advance(time.Second)
	if want := "a a2"; strings.Join(got, " ") != want {
		t.Fatalf("fired %q, want %q", strings.Join(got, " "), want)
	}
	c.Advance(time.Millisecond)
	if want := "a a2 b c"; strings.Join(got, " ") != want {
		t.Fatalf("fired %q, want %q", strings.Join(got, " "), want)
	}
	// Each callback saw its own due time.
	want := []time.Duration{time.Second, 1500 * time.Millisecond, 2 * time.Second, 2 * time.Second}
	for i := range want {
		if at[i] != want[i] {
			t.Errorf("%s ran at +%v, want +%v", got[i], at[i], want[i])
		}
	}
	if d := c.Now().Sub(start); d != 2*time.Second {
		t.Fatalf("clock at +%v, want +2s", d)
	}
	if stopped.Stop() {
		t.Error("second Stop returned true")
	}
	if n := c.Pending(); n != 0 {
		t.Errorf("Pending() = %d after all fired, want 0", n)
	}
}

func TestAsync(t *testing.T) {
	c := NewAsync(start)
	release := make(chan struct{})
	ran := make(chan string, 10)
	var mu sync.Mutex
	seen := map[string]time.Duration{}
	note := func(s string) {
		mu.Lock()
		seen[s] = c.Now().Sub(start)
		mu.Unlock()
		ran <- s
	}
	c.AfterFunc(time.Second, func() {
		note("a")
		<-release
		c.AfterFunc(0, func() { note("a2") })
	})
	c.AfterFunc(2*time.Second, func() { note("b") })
	c.AfterFunc(3*time.Second, func() { note("c") })

	// Advance returns although a's callback is blocked: it runs on its
	// own goroutine.
	advanced := make(chan struct{})
	go func() {
		c.Advance(2 * time.Second)
		close(advanced)
	}()
	select {
	case <-advanced:
	case <-time.After(safety):
		t.Fatal("Advance waited for a blocked callback")
	}
	got := map[string]bool{}
	for range 2 {
		select {
		case s := <-ran:
			got[s] = true
		case <-time.After(safety):
			t.Fatalf("only %v ran", got)
		}
	}
	if !got["a"] || !got["b"] {
		t.Fatalf("ran %v, want a and b", got)
	}
	mu.Lock()
	for s, d := range seen {
		if d != 2*time.Second {
			t.Errorf("%s saw +%v, want the end of Advance, +2s", s, d)
		}
	}
	mu.Unlock()

	// A timer armed by a callback is not fired by the Advance that
	// started it, even when already due.
	close(release)
	c.WaitTimers(2) // c and a2
	select {
	case s := <-ran:
		t.Fatalf("%s ran without Advance", s)
	default:
	}
	c.Advance(0)
	select {
	case s := <-ran:
		if s != "a2" {
			t.Fatalf("ran %s, want a2", s)
		}
	case <-time.After(safety):
		t.Fatal("a2 did not run")
	}
	if n := c.Pending(); n != 1 {
		t.Fatalf("Pending() = %d, want 1 (c)", n)
	}
}

func TestArmed(t *testing.T) {
	c := New(start)
	select {
	case <-c.Armed():
		t.Fatal("token before any timer was armed")
	default:
	}
	c.AfterFunc(time.Second, func() {})
	c.AfterFunc(time.Second, func() {})
	select {
	case <-c.Armed():
	default:
		t.Fatal("no token after AfterFunc")
	}
	select {
	case <-c.Armed():
		t.Fatal("second token: only one is kept")
	default:
	}
}

func TestWaitTimers(t *testing.T) {
	c := New(start)
	go c.AfterFunc(time.Second, func() {})
	done := make(chan struct{})
	go func() {
		c.WaitTimers(1)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(safety):
		t.Fatal("WaitTimers(1) did not return after a timer was armed")
	}
	if n := c.Pending(); n != 1 {
		t.Fatalf("Pending() = %d, want 1", n)
	}
}
