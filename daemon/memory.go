package daemon

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
)

// releaseMemory runs in each process once a configuration is in force.
//
// After a large configuration (at least bigConfig items) it gives the
// system back what decoding the stream left behind: with 10,000 handlers
// that is megabytes in each process, which Go would return only
// gradually (the heap is garbage, not in use; RSS is what an operator
// sees). Only then: a forced collection costs milliseconds, and a burst
// of reloads of a small file must not queue up behind it.
//
// Then it sets how far the heap may grow between collections
// (gcPercent), from what is live now, and again after every collection
// (followGC), unless the operator chose GOGC.
func releaseMemory(items int) {
	if items >= bigConfig {
		debug.FreeOSMemory()
	}
	tuneGC()
	if following.CompareAndSwap(false, true) {
		followGC()
	}
}

// tuneGC sets the GC percent from the live heap, unless the operator set
// GOGC.
func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent(liveHeap()))
	}
}

// following is set once followGC runs.
var following atomic.Bool

// followGC calls tuneGC after each collection, for as long as the
// process lives: what is live grows after the configuration, with the
// runs pending (an exec process with 10,000 handlers goes from 5 to 8 MB
// live under load), and a percent set for the smaller heap would let
// the larger one grow by more than gcHeadroom. A cleanup of an object
// nothing holds runs once a collection has found it unreachable; it
// then arms the next. The object is 32 bytes: the runtime may batch
// smaller pointer-free ones with others, whose cleanups then need not
// run.
func followGC() {
	runtime.AddCleanup(new([32]byte), func(struct{}) {
		tuneGC()
		followGC()
	}, struct{}{})
}

const bigConfig = 1000

// Go lets the heap grow by GOGC percent of what is live (100 by default)
// before it collects, and does not collect a heap below 4 MB (scaled by
// GOGC too). What is live in a process with a large configuration is
// mostly that configuration: it stays, and what a request allocates is
// garbage at once. Doubling the heap for it doubles the memory of an exec
// process with 10,000 handlers (12 MB live idle, 17 MB with a run pending
// for each; 34 MB resident under load) for no gain: the garbage of a
// request does not grow with the configuration. So the growth allowed is
// about gcHeadroom, what Go allows a small heap, whatever the
// configuration's size, and never less than minGCPercent of the live
// heap, which bounds the cost of the collections (each marks the whole
// live heap).
const (
	gcHeadroom   = 4 << 20
	minGCPercent = 25
)

// gcPercent is the GOGC value for a live heap of live bytes: 100 up to
// gcHeadroom, then less, to minGCPercent.
func gcPercent(live uint64) int {
	if live <= gcHeadroom {
		return 100
	}
	return max(minGCPercent, int(100*gcHeadroom/live))
}

// liveHeap is the heap the last collection found live, in bytes; 0 when
// the runtime does not say.
func liveHeap() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}
