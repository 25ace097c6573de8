package exec

import (
	"time"

	"github.com/imserious/imserious/event"
)

// Values of HandlerStatus.State.
const (
	StateIdle     = "idle"     // nothing running, nothing pending
	StateDelayed  = "delayed"  // a run waits for the end of the burst's delay
	StateDeferred = "deferred" // a run waits for a token of the rate limit
	StateRunning  = "running"  // the command runs
	StateRetrying = "retrying" // a failed run waits for its back-off to be tried again
)

// HandlerStatus is what one handler is doing, for imseriousctl status.
// Times are on the Exec's clock.
type HandlerStatus struct {
	Number, Line int    // config.Handler.Number and Line (as of the last Update)
	User, Event  string // the handler's user and event (canonical)
	RunAs        string // the account the command runs as
	// State is one of the State constants. When the command runs it is
	// StateRunning whatever is pending behind it: Due is then zero, and
	// Pending still counts the events waiting for the next run.
	State string
	// Due is when the delayed, deferred or retrying run is due; zero in
	// the other states.
	Due time.Time
	// Pending is how many events were accepted and are not yet covered
	// by a run that has started: the events of the pending run. A pending
	// recovery, manual or start run, or a retry, holds no event.
	Pending int
	// PID and Since are the running command's pid and start; zero unless
	// State is StateRunning (PID stays 0 for the moment between the
	// launch and the runner's report of the pid).
	PID   int
	Since time.Time
	// LastRun is how the last run that ended went; nil before the first.
	LastRun *RunInfo
	// NextPeriodic is when the next periodic run is due; zero without
	// periodic, before Start, and while a command runs (the periodic
	// clock restarts when it ends).
	NextPeriodic time.Time
	// Runs counts the runs started, retries included, and Failures the
	// runs that ended and failed, since this Exec was made (or since the
	// handler was added or changed by Update).
	Runs, Failures int
}

// RunInfo is how a run went.
type RunInfo struct {
	Start    time.Time     // when it was launched, on the Exec's clock
	Duration time.Duration // until its end was processed, on the Exec's clock
	// ExitStatus is the exit status of a command that exited (even after
	// its timeout's SIGTERM); nil when it was killed by a signal (Signal
	// says which) or did not start (Signal is then "" too).
	ExitStatus *int
	Signal     string
	Trigger    string // the run's Job.Trigger
}

// Status reports every handler, in the order of the handler list. It is
// safe to call at any time, concurrently with everything else.
func (x *Exec) Status() []HandlerStatus {
	x.mu.RLock()
	defer x.mu.RUnlock()
	out := make([]HandlerStatus, len(x.handlers))
	for i, h := range x.handlers {
		out[i] = h.status()
	}
	return out
}

func (h *handler) status() HandlerStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := HandlerStatus{
		Number:       h.number,
		Line:         h.line,
		User:         h.cfg.User,
		Event:        h.cfg.Event,
		RunAs:        h.cfg.Account.Name,
		NextPeriodic: h.periodicAt,
		Runs:         h.runs,
		Failures:     h.failures,
		State:        StateIdle,
	}
	if s.RunAs == "" {
		s.RunAs = h.cfg.RunAs
	}
	if h.phase != noPending && h.phase != waitRetry {
		s.Pending = h.count
	}
	switch {
	case h.running:
		s.State, s.PID, s.Since = StateRunning, h.pid, h.since
	case h.phase == waitDelay:
		s.State, s.Due = StateDelayed, h.due
	case h.phase == waitToken:
		s.State, s.Due = StateDeferred, h.due
	case h.phase == waitRetry:
		s.State, s.Due = StateRetrying, h.due
	}
	if r := h.lastRun; r != nil {
		c := *r
		if r.ExitStatus != nil {
			st := *r.ExitStatus
			c.ExitStatus = &st
		}
		s.LastRun = &c
	}
	return s
}

// Run starts a manual run (IMSE_TRIGGER=manual) of every handler whose
// user is user and, when ev is not "", whose event is ev (any case), and
// returns how many matched. Like an event it goes through the handler's
// delay; like a periodic run it neither waits for nor spends a token. It
// merges into a run already pending (which then needs no token either)
// and is covered by a command already running, so that two requests in
// quick succession make one run; it replaces a retry waiting for its
// back-off. The environment is a periodic run's: the handler's user and
// event, no event fields.
func (x *Exec) Run(user, ev string) int {
	name := ""
	if ev != "" {
		c, ok := event.Canonical(ev)
		if !ok {
			x.log.Info("manual run for an unknown event matches no handler", "user", user, "event", ev)
			return 0
		}
		name = c
	}
	x.mu.RLock()
	defer x.mu.RUnlock()
	n := 0
	for _, h := range x.byUser[user] {
		if name != "" && h.cfg.Event != name {
			continue
		}
		n++
		h.request(TriggerManual)
	}
	if n == 0 {
		x.log.Info("manual run matches no handler", "user", user, "event", name)
	}
	return n
}

// RunAtStart makes every handler with run_at_start run once
// (IMSE_TRIGGER=start), scheduled like a manual run (see Run), and
// returns how many. The daemon calls it once, when it starts; not on a
// reload, nor when an exec process is restarted (that is Recover).
func (x *Exec) RunAtStart() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	n := 0
	for _, h := range x.handlers {
		if h.cfg.RunAtStart {
			n++
			h.request(TriggerStart)
		}
	}
	return n
}
