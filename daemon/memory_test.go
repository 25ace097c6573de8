package daemon

import (
	"runtime/debug"
	"testing"
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
