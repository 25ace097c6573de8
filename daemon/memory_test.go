package daemon

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

func TestGCPercent(t *testing.T) {
	for _, c := range []struct {
		live uint64
		want int
	}{
		{0, 100},                  // the runtime said nothing
		{1 << 20, 100},            // a small configuration: Go's default
		{gcHeadroom, 100},         // up to the headroom
		{8 << 20, 50},             // twice the headroom: grow by half
		{12 << 20, 33},            // an exec process with 10,000 handlers
		{16 << 20, minGCPercent},  // four times
		{100 << 20, minGCPercent}, // never below the floor
	} {
		if got := gcPercent(c.live); got != c.want {
			t.Errorf("gcPercent(%d MB) = %d, want %d", c.live>>20, got, c.want)
		}
	}
}

// TestReleaseMemoryKeepsGOGC: an operator's GOGC is theirs, and the
// percent is set from the heap otherwise.
func TestReleaseMemoryKeepsGOGC(t *testing.T) {
	old := debug.SetGCPercent(77)
	defer debug.SetGCPercent(old)
	t.Setenv("GOGC", "77")
	releaseMemory(0)
	if p := debug.SetGCPercent(77); p != 77 {
		t.Errorf("with GOGC=77 set, releaseMemory made the percent %d", p)
	}
	t.Setenv("GOGC", "")
	releaseMemory(0)
	if p, want := debug.SetGCPercent(77), gcPercent(liveHeap()); p != want {
		t.Errorf("without GOGC, the percent is %d, want %d", p, want)
	}
}

// TestGCFollowsLiveHeap: after releaseMemory the percent follows what is
// live at each collection, down when the heap grows after the
// configuration (runs pending) and up again when it shrinks.
func TestGCFollowsLiveHeap(t *testing.T) {
	t.Setenv("GOGC", "")
	old := debug.SetGCPercent(100)
	defer debug.SetGCPercent(old)
	releaseMemory(0)
	held := make([]byte, 64<<20) // live: gcPercent is minGCPercent
	waitGCPercent(t, "the floor with 64 MB live", func(p int) bool { return p == minGCPercent })
	runtime.KeepAlive(held)
	held = nil
	waitGCPercent(t, "above the floor once they are gone", func(p int) bool { return p > minGCPercent })
}

// waitGCPercent collects until the percent is what ok wants, which the
// cleanup of followGC sets after a collection, on the runtime's cleanup
// goroutine.
func waitGCPercent(t *testing.T, want string, ok func(int) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok(gcPercentNow()) {
		if time.Now().After(deadline) {
			t.Fatalf("the GC percent is %d after 10 s of collections, want %s", gcPercentNow(), want)
		}
		runtime.GC()
		runtime.Gosched()
	}
}

func gcPercentNow() int {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return int(s[0].Value.Uint64())
}
