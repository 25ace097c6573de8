package listener

import (
	"context"
	"encoding/json"
	"net/netip"
	"testing"
	"time"
)

// fakeClock is a clock the test moves by hand.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newTestRateLog(t *testing.T) (*rateLog, *fakeClock, *logBuffer) {
	t.Helper()
	clock := &fakeClock{t: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)}
	var logs logBuffer
	return newRateLog(newLogger(&logs), clock.now), clock, &logs
}

func peerKey(i int) logKey {
	return logKey{msg: "request rejected", reason: "Unauthorized", addr: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})}
}

// parsed returns the log lines as maps.
func parsed(t *testing.T, logs *logBuffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range logs.lines() {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// TestRateLogPerKey: one line per key per minute; the next one after it
// carries the count of those suppressed; other keys are not held back.
func TestRateLogPerKey(t *testing.T) {
	l, clock, logs := newTestRateLog(t)
	ctx := context.Background()
	for range 5 {
		l.warn(ctx, peerKey(1))
		clock.advance(10 * time.Second)
	}
	l.warn(ctx, peerKey(2))
	l.warn(ctx, logKey{msg: "request rejected", reason: "Not Found", addr: peerKey(1).addr})
	clock.advance(20 * time.Second) // 70 s after the first line
	l.warn(ctx, peerKey(1))
	lines := parsed(t, logs)
	if len(lines) != 4 {
		t.Fatalf("%d lines, want 4: %v", len(lines), lines)
	}
	if _, ok := lines[0]["suppressed"]; ok {
		t.Errorf("first line says suppressed: %v", lines[0])
	}
	if got := lines[3]["suppressed"]; got != float64(4) {
		t.Errorf("line after the minute: suppressed %v, want 4: %v", got, lines[3])
	}
	if lines[3]["level"] != "WARN" || lines[3]["msg"] != "request rejected" {
		t.Errorf("line %v", lines[3])
	}
}

// TestRateLogGlobal: however many peers, at most logPerSecond lines a
// second; the first line let through afterwards counts the others dropped.
func TestRateLogGlobal(t *testing.T) {
	l, clock, logs := newTestRateLog(t)
	ctx := context.Background()
	for i := range 1000 {
		l.warn(ctx, peerKey(i))
	}
	if n := len(logs.lines()); n != logPerSecond {
		t.Fatalf("%d lines in one second, want %d", n, logPerSecond)
	}
	clock.advance(time.Second)
	l.warn(ctx, peerKey(5000))
	lines := parsed(t, logs)
	last := lines[len(lines)-1]
	if last["suppressed_other"] != float64(1000-logPerSecond) {
		t.Errorf("suppressed_other %v, want %d: %v", last["suppressed_other"], 1000-logPerSecond, last)
	}
	// A key held back only by the global cap is let through once the
	// second is over, not a minute later.
	l.warn(ctx, peerKey(999))
	if n := len(logs.lines()); n != logPerSecond+2 {
		t.Errorf("%d lines, want %d", n, logPerSecond+2)
	}
}

// TestRateLogBounded: an endless stream of new peers keeps the limiter's
// memory bounded, and no suppressed line goes uncounted.
func TestRateLogBounded(t *testing.T) {
	l, clock, logs := newTestRateLog(t)
	ctx := context.Background()
	sent := 0
	for s := range 600 { // ten minutes, 100 new peers a second
		for i := range 100 {
			l.warn(ctx, peerKey(s*100+i))
			sent++
		}
		clock.advance(time.Second)
		if len(l.keys) > logKeys {
			t.Fatalf("%d keys, over %d", len(l.keys), logKeys)
		}
	}
	clock.advance(time.Minute)
	l.warn(ctx, peerKey(1<<20))
	sent++
	total := 0
	for _, m := range parsed(t, logs) {
		total++
		for _, k := range []string{"suppressed", "suppressed_other"} {
			if n, ok := m[k].(float64); ok {
				total += int(n)
			}
		}
	}
	if total != sent {
		t.Errorf("lines plus suppressed counts = %d, want the %d sent", total, sent)
	}
}
