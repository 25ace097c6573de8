package exec

import (
	"slices"
	"time"

	"github.com/imserious/imserious/config"
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
//
// A wildcard handler (config.Handler.Pattern) is reported as an entry of
// its own, its summary, followed by one entry per user it keeps state for
// (PerUser), in sorted order of the users. The summary has User and
// Pattern the handler's pattern, State StateIdle, Pending 0, Runs and
// Failures the totals of all its users (freed ones included) and LastRun
// the last run of any user that ended; each per-user entry has User that
// user, Pattern the handler's pattern, and what that user's state is
// doing, with its own counts. All entries of one handler have its Number
// and Line.
type HandlerStatus struct {
	Number, Line int    // config.Handler.Number and Line (as of the last Update)
	User, Event  string // the handler's user (a per-user entry's: that user) and event (canonical)
	// Pattern is the handler's user glob for the entries of a wildcard
	// handler (summary and per-user), "" for an exact handler.
	Pattern string
	// PerUser is set on the entry of one user of a wildcard handler.
	PerUser bool
	RunAs   string // the account the command runs as
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
	// handler was added or changed by Update). A run whose program in the
	// home was missing or refused started nothing and is not counted.
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

// Status reports every handler, in the order of the handler list, a
// wildcard handler followed by its users (see HandlerStatus). It is safe
// to call at any time, concurrently with everything else.
func (x *Exec) Status() []HandlerStatus {
	x.mu.RLock()
	defer x.mu.RUnlock()
	out := make([]HandlerStatus, 0, len(x.handlers))
	for _, h := range x.handlers {
		out = h.status(out)
	}
	return out
}

// status appends the handler's entries to out.
func (h *handler) status(out []HandlerStatus) []HandlerStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	base := HandlerStatus{
		Number: h.number,
		Line:   h.line,
		User:   h.user,
		Event:  h.cfg.Event,
		RunAs:  h.cfg.Account.Name,
		State:  StateIdle,
	}
	if base.RunAs == "" {
		base.RunAs = h.cfg.RunAs
	}
	if h.one != nil {
		return append(out, h.one.status(base))
	}
	base.Pattern = h.user
	sum := base
	sum.Runs, sum.Failures, sum.LastRun = h.runs, h.failures, copyRunInfo(h.lastRun)
	out = append(out, sum)
	users := make([]string, 0, len(h.users))
	for u := range h.users {
		users = append(users, u)
	}
	slices.Sort(users)
	base.PerUser = true
	for _, u := range users {
		st := base
		st.User = u
		out = append(out, h.users[u].status(st))
	}
	return out
}

// status fills in s, with the handler's fields set, from the state: its
// counts and last run are a wildcard handler's state's own, an exact
// handler's those of its handler.
func (st *sched) status(s HandlerStatus) HandlerStatus {
	m := st.more
	if m != nil {
		s.NextPeriodic = m.periodicAt
	}
	lastRun := st.h.lastRun
	s.Runs, s.Failures = st.h.runs, st.h.failures
	if u := st.u; u != nil {
		lastRun = u.lastRun
		s.Runs, s.Failures = u.runs, u.failures
	}
	if st.phase != noPending && st.phase != waitRetry {
		s.Pending = st.count
	}
	switch {
	case st.running:
		// more is made by launch and kept while running.
		s.State, s.PID, s.Since = StateRunning, m.pid, m.since
	case st.phase == waitDelay:
		s.State, s.Due = StateDelayed, st.due
	case st.phase == waitToken:
		s.State, s.Due = StateDeferred, st.due
	case st.phase == waitRetry:
		s.State, s.Due = StateRetrying, st.due
	}
	s.LastRun = copyRunInfo(lastRun)
	return s
}

// copyRunInfo is a deep copy of r, which stays the handler's.
func copyRunInfo(r *RunInfo) *RunInfo {
	if r == nil {
		return nil
	}
	c := *r
	if r.ExitStatus != nil {
		st := *r.ExitStatus
		c.ExitStatus = &st
	}
	return &c
}

// Run starts a manual run (IMSE_TRIGGER=manual) of every handler whose
// user is user (exactly, or by a wildcard handler's glob, and then only
// when, for a Dynamic handler, run_as names this process's account for
// user; its run is that user's, with IMSE_USER user) and, when ev is not
// "", whose event is ev (any case), and returns how many matched. A user
// that is itself a glob (config.IsUserPattern) matches exact handlers
// written for that very string only: it names no user of a wildcard
// handler. Like an event it goes through the handler's
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
	for _, h := range x.exactFor(user) {
		if name != "" && h.cfg.Event != name {
			continue
		}
		n++
		h.request(user, TriggerManual)
	}
	concrete := !config.IsUserPattern(user)
	for _, h := range x.patterns {
		if !concrete || (name != "" && h.cfg.Event != name) || !config.MatchUser(h.user, user) {
			continue
		}
		if _, ok := h.forAccount(user); !ok {
			continue
		}
		n++
		h.request(user, TriggerManual)
	}
	if n == 0 {
		x.log.Info("manual run matches no handler", "user", user, "event", name)
	}
	return n
}

// RunAtStart makes every handler with run_at_start run once
// (IMSE_TRIGGER=start), scheduled like a manual run (see Run), and
// returns how many. The daemon calls it once, when it starts; not on a
// reload, nor when an exec process is restarted (that is Recover). A
// wildcard handler has no user to run for (config refuses run_at_start
// on one) and is left out.
func (x *Exec) RunAtStart() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	n := 0
	for _, h := range x.handlers {
		if h.cfg.RunAtStart && !h.cfg.Pattern {
			n++
			h.request(h.user, TriggerStart)
		}
	}
	return n
}
