// Package clock is the source of time for scheduling: delays, debounces,
// rate limits and periodic runs are all driven by its timers, so tests can
// replace it with a clock they advance by hand (package clocktest) instead
// of sleeping.
package clock

import "time"

// Clock is the source of time for scheduling.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine once d has passed.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending AfterFunc call.
type Timer interface {
	// Stop prevents the call if it has not started yet and reports whether
	// it did. A false result does not mean the call is over: callers must
	// tolerate a callback that was already on its way.
	Stop() bool
}

// System is the real time of the process.
var System Clock = system{}

type system struct{}

func (system) Now() time.Time { return time.Now() }

func (system) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }
