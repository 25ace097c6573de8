package logging

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imserious/imserious/clock/clocktest"
)

type allowed struct {
	ok         bool
	suppressed int
}

func expect(t *testing.T, l *Limiter, key string, want allowed) {
	t.Helper()
	ok, n := l.Allow(key)
	if got := (allowed{ok, n}); got != want {
		t.Fatalf("Allow(%q) = %v, %d; want %v, %d", key, ok, n, want.ok, want.suppressed)
	}
}

// TestLimiterPerKey: burst lines per window for each key, then nothing
// until the window ends, when the next line carries the count of those
// held back.
func TestLimiterPerKey(t *testing.T) {
	clk := clocktest.New(testTime)
	l := NewLimiter(time.Minute, 3, clk)
	for range 3 {
		expect(t, l, "a", allowed{true, 0})
	}
	for range 5 {
		expect(t, l, "a", allowed{false, 0})
	}
	expect(t, l, "b", allowed{true, 0}) // keys are independent
	clk.Advance(59 * time.Second)
	expect(t, l, "a", allowed{false, 0})
	clk.Advance(time.Second) // the window that began with a's first line ends
	expect(t, l, "a", allowed{true, 6})
	expect(t, l, "a", allowed{true, 0})
	expect(t, l, "a", allowed{true, 0})
	expect(t, l, "a", allowed{false, 0})
	// b's window began a minute ago as well: b logs again, nothing held.
	expect(t, l, "b", allowed{true, 0})
}

// TestLimiterTotal: distinct keys together log at most LimitTotal×burst
// lines per window, and a key refused by the total keeps its own room.
func TestLimiterTotal(t *testing.T) {
	clk := clocktest.New(testTime)
	l := NewLimiter(time.Minute, 2, clk)
	for i := range LimitTotal * 2 {
		expect(t, l, fmt.Sprint("k", i), allowed{true, 0})
	}
	expect(t, l, "fresh", allowed{false, 0})
	expect(t, l, "fresh", allowed{false, 0})
	clk.Advance(time.Minute)
	expect(t, l, "fresh", allowed{true, 2})
	expect(t, l, "fresh", allowed{true, 0})
}

// TestLimiterForgetsLeastRecent: beyond its key limit the Limiter forgets
// the key seen longest ago (not the one made first), and what that key had
// held back is reported with the next allowed line rather than lost.
func TestLimiterForgetsLeastRecent(t *testing.T) {
	clk := clocktest.New(testTime)
	l := newLimiter(time.Minute, 1, 100, 3, clk)
	expect(t, l, "a", allowed{true, 0})
	expect(t, l, "b", allowed{true, 0})
	expect(t, l, "c", allowed{true, 0})
	expect(t, l, "a", allowed{false, 0}) // a is now the most recent
	expect(t, l, "a", allowed{false, 0})
	expect(t, l, "d", allowed{true, 0}) // forgets b
	if _, ok := l.keys["b"]; ok || len(l.keys) != 3 || l.lru.Len() != 3 {
		t.Fatalf("tracked %v, want a, c, d", keysOf(l))
	}
	expect(t, l, "b", allowed{true, 0}) // b starts afresh; forgets c
	// Forgetting a, e reports the 2 a held back, which no later line of
	// a could.
	expect(t, l, "e", allowed{true, 2})
	expect(t, l, "b", allowed{false, 0}) // b's own window
	clk.Advance(time.Minute)
	expect(t, l, "d", allowed{true, 0})
	expect(t, l, "b", allowed{true, 1})
}

func keysOf(l *Limiter) []string {
	var out []string
	for e := l.lru.Front(); e != nil; e = e.Next() {
		out = append(out, e.Value.(*limitKey).key)
	}
	return out
}

// TestLimiterFlood: 100,000 forged events with distinct keys, as a
// compromised network process could send, give LimitTotal×burst lines per
// window and LimitKeys tracked keys at most, and every line held back is
// still counted in a later line or in a remembered key.
func TestLimiterFlood(t *testing.T) {
	const flood, burst = 100_000, 2
	clk := clocktest.New(testTime)
	l := NewLimiter(time.Minute, burst, clk)
	lines := 0
	for i := range flood {
		if ok, n := l.Allow(fmt.Sprintf("user%06d@example.org", i)); ok {
			lines++
			if n != 0 {
				t.Fatalf("line %d reports %d suppressed within the first window", i, n)
			}
		}
		if n := l.lru.Len(); n > LimitKeys || len(l.keys) != n {
			t.Fatalf("after %d keys: %d tracked, map %d, want at most %d", i+1, n, len(l.keys), LimitKeys)
		}
	}
	if lines != LimitTotal*burst {
		t.Errorf("%d lines allowed in one window, want %d", lines, LimitTotal*burst)
	}
	// Nothing vanishes: what the forgotten keys held back waits for the
	// next allowed line, what the remembered ones did for their own.
	if held := l.lost + remembered(l); held != flood-lines {
		t.Errorf("%d lines counted as held back, want %d", held, flood-lines)
	}
	clk.Advance(time.Minute)
	ok, n := l.Allow("after the flood")
	if want := flood - lines - remembered(l); !ok || n != want || n == 0 {
		t.Errorf("first line after the flood: %v, %d suppressed; want true, %d (> 0)", ok, n, want)
	}

	// A flood spread over windows gets LimitTotal×burst lines per window.
	lines = 0
	for i := range flood {
		clk.Advance(time.Second) // 100,000 s: 1,667 windows
		if ok, _ := l.Allow(fmt.Sprint("spread", i)); ok {
			lines++
		}
	}
	windows := int(flood*time.Second/time.Minute) + 1
	if lines > windows*LimitTotal*burst {
		t.Errorf("%d lines over %d windows, want at most %d", lines, windows, windows*LimitTotal*burst)
	}
	if l.lru.Len() != LimitKeys {
		t.Errorf("%d keys tracked, want %d", l.lru.Len(), LimitKeys)
	}
}

// remembered is what the tracked keys held back, still to be reported by
// their own next line.
func remembered(l *Limiter) int {
	n := 0
	for e := l.lru.Front(); e != nil; e = e.Next() {
		n += e.Value.(*limitKey).suppressed
	}
	return n
}

// TestLimiterLongKeys: keys are cut, and copied, so a huge key costs no
// more than a short one, and keys differing only past the cut share a
// limit.
func TestLimiterLongKeys(t *testing.T) {
	l := NewLimiter(time.Minute, 1, clocktest.New(testTime))
	long := strings.Repeat("x", 1<<20)
	expect(t, l, long+"a", allowed{true, 0})
	expect(t, l, long+"b", allowed{false, 0})
	for k := range l.keys {
		if len(k) != maxKeyLen {
			t.Errorf("tracked a key of %d bytes, want %d", len(k), maxKeyLen)
		}
	}
}

// TestLimiterConcurrent: under concurrent callers (run with -race) a key
// gets exactly burst lines per window.
func TestLimiterConcurrent(t *testing.T) {
	l := NewLimiter(time.Minute, 5, clocktest.New(testTime))
	var wg sync.WaitGroup
	var mu sync.Mutex
	lines := 0
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				if ok, _ := l.Allow("k"); ok {
					mu.Lock()
					lines++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if lines != 5 {
		t.Errorf("%d lines allowed, want 5", lines)
	}
}

// TestLimiterLog: Log writes only what Allow lets through, with the
// count held back before it, and spends nothing on disabled levels.
func TestLimiterLog(t *testing.T) {
	clk := clocktest.New(testTime)
	l := NewLimiter(time.Minute, 1, clk)
	log, buf := logTo(Options{Format: "json", Level: slog.LevelInfo}, "exec[alice]")
	ctx := context.Background()
	if l.Log(ctx, log, slog.LevelDebug, "u", "hidden") {
		t.Error("Log wrote a disabled level")
	}
	for range 4 {
		l.Log(ctx, log, slog.LevelWarn, "u", "event matches no handler", "user", "u")
	}
	clk.Advance(time.Minute)
	if !l.Log(ctx, log, slog.LevelWarn, "u", "event matches no handler", "user", "u") {
		t.Error("Log refused the first line of a new window")
	}
	got := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(got) != 2 || strings.Contains(got[0], SuppressedKey) || !strings.Contains(got[1], `"suppressed":3`) {
		t.Errorf("log:\n%s\nwant two lines, the second with suppressed 3", buf)
	}
}
