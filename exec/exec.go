// Package exec is the core of the exec process (one per run_as account):
// it matches the events it is sent against its handlers, schedules runs
// (delay, coalescing, token-bucket limit, periodic, recovery, manual and
// start runs, retries of failed runs with back-off, never two copies of
// one command at once), reports what each handler is doing (Status),
// takes a new handler list on reload, and runs the commands in sessions
// of their own with a fixed environment, logging their output and killing
// what they leave behind.
//
// A wildcard handler (a user glob, config.Handler.Pattern) keeps all of
// that per event user, in a state made on the user's first event and
// freed once it is idle with its token bucket full again; a program
// written "~/rel" is the account's own hook, looked up and checked at
// each launch (lookupHook). Options.OnIdle tells an exec process started
// on demand when it has nothing left to do.
//
// It runs in a process that has already dropped to the account's uid and
// never changes credentials itself.
package exec

import (
	"context"
	"errors"
	"hash/maphash"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/imserious/imserious/clock"
	"github.com/imserious/imserious/config"
	"github.com/imserious/imserious/event"
	"github.com/imserious/imserious/internal/byuser"
	"github.com/imserious/imserious/privsep"
)

// Values of Job.Trigger and IMSE_TRIGGER.
const (
	TriggerEvent    = "event"
	TriggerPeriodic = "periodic"
	// TriggerRecovery is a run that Recover asked for: events may have
	// been lost, so each handler runs once.
	TriggerRecovery = "recovery"
	// TriggerManual is a run that Run asked for (imseriousctl run).
	TriggerManual = "manual"
	// TriggerStart is a run that RunAtStart asked for (run_at_start).
	TriggerStart = "start"
	// TriggerRetry is the retry of a failed run (retries); its Attempt,
	// and IMSE_ATTEMPT, say which.
	TriggerRetry = "retry"
)

// Options configure an Exec.
type Options struct {
	// Handlers are the handlers of this process's account, with Account
	// and Path filled in. Their index in this slice names them in logs
	// (the "handler" field, with "line" when known); after Update, the
	// index in the new list.
	Handlers []config.Handler
	Log      *slog.Logger // nil: slog.Default()
	Clock    clock.Clock  // nil: clock.System
	Runner   Runner       // nil: a CommandRunner logging to Log
	// Subreaper makes the process the reaper of what its commands leave
	// behind (privsep.BecomeSubreaper): the default runner then kills,
	// when a command exits, every child of the process that is not part
	// of a command still running, exited orphans are reaped as they die,
	// and Shutdown kills what is left. It changes the whole process and
	// assumes every child of it is a command started by a CommandRunner:
	// the exec process sets it, tests of other packages leave it false.
	// Where the system has no subreaper (OpenBSD) it logs that and goes
	// on without.
	Subreaper bool
	// OnIdle, when set, is called each time the Exec goes from idle to
	// busy (false) or back (true); an Exec starts idle, and is not called
	// for that. It is idle when no handler has a run pending, a command
	// running (its program in the home being looked up included) or a
	// retry waiting for its back-off: a wildcard handler's user state
	// that only waits for its token bucket to refill does not count (the
	// process may be stopped then, and its users' limits start afresh in
	// the next), nor do armed periodic timers. Calls come from one
	// goroutine of their own, in the order of the transitions, never two
	// at once and never with a lock of the Exec held, so OnIdle may call
	// Idle or Status (but not Shutdown, which waits for it). Transitions
	// that come faster than OnIdle returns are coalesced but never lost:
	// an odd number of them is one call with the current state, an even
	// number (busy and back) two calls, the other state then the current
	// one; so the last call always reports the current state, and a short
	// spell of work is always seen. Exec processes started
	// on demand use it to tell the parent when they may be stopped. None
	// is made after Shutdown has returned.
	OnIdle func(idle bool)
}

// MaxRunning is how many commands one Exec runs at once; a run beyond
// it waits for one to end (shown running, without a pid). A variable for
// tests.
var MaxRunning = 256

// Job is one run of a handler's command.
type Job struct {
	// Handler is the handler's configuration, shared by the handlers that
	// differ only in their user (see spec): its User, Number and Line are
	// empty; User, Index and Number below are the run's.
	Handler *config.Handler
	Index   int    // the handler's index in the handler list when the run started
	Number  int    // its number in the file (config.Handler.Number), for logs; 0: none
	Trigger string // TriggerEvent, TriggerPeriodic, TriggerRecovery, TriggerManual, TriggerStart or TriggerRetry
	Count   int    // events coalesced into this run; 0 for runs of no event
	// Attempt is 1 for a first attempt, 2 for the first retry of a failed
	// run, 3 for the next...
	Attempt int
	// User is whose run it is: the event user of a wildcard handler's
	// state (the IMSE_USER of its runs), the handler's user for an exact
	// handler. Logs name it.
	User string
	// Path, when set, is the program to execute instead of Handler.Path:
	// a program in the account's home ("~/rel") as lookupHook found it,
	// absolute and with no symbolic link. It then is argv[0] too, followed
	// by Handler.Command[1:].
	Path string
	Env  []string
	// Started, when set, is called by the runner once the process exists,
	// with its pid, before Run returns; never when it did not start.
	Started func(pid int)
}

// Result is how a run ended.
type Result struct {
	Start    time.Time     // when the runner started the command (its own clock)
	Duration time.Duration // from Start to the end of the run
	// ExitStatus is the command's exit status, or -1 when it was killed by
	// a signal or did not start.
	ExitStatus int
	Signal     string // the signal that killed it ("SIGKILL"), "" otherwise
	TimedOut   bool   // it was terminated at command_timeout (whatever it then exited with)
	Err        error  // why it could not start; nil when it started
}

// Failed reports whether the run failed: it could not start, exited
// non-zero, was killed by a signal, or was terminated at its timeout.
func (r Result) Failed() bool {
	return r.Err != nil || r.ExitStatus != 0 || r.Signal != "" || r.TimedOut
}

// Runner runs a job's command. Run blocks until the command has ended and
// logs everything about it itself; when ctx is done it stops the command.
type Runner interface {
	Run(ctx context.Context, j Job) Result
}

// Exec schedules and runs the handlers of one account.
type Exec struct {
	log    *slog.Logger
	clock  clock.Clock
	runner Runner

	// mu guards the handler list and the lifecycle flags; it is taken
	// before any handler's own lock, never after.
	mu       sync.RWMutex
	handlers []*handler
	exact    byuser.Index[*handler] // the exact handlers, by user, in list order
	patterns []*handler             // the wildcard handlers (cfg.Pattern), in list order
	started  bool
	stopped  bool

	// idleMu guards the idle count, taken after any other lock of the
	// Exec and never before one: busy counts the exact handlers' states
	// with something pending or running and the wildcard handlers'
	// states; flips counts the transitions between idle and busy. When
	// OnIdle is set, idleKick wakes the goroutine that calls it after each
	// transition (idleDone is closed when it has returned); idleClosed is
	// set once Shutdown has closed idleKick.
	idleMu     sync.Mutex
	busy       int
	flips      uint64
	idleKick   chan struct{}
	idleClosed bool
	idleDone   chan struct{}

	// waits holds the states' wait timers.
	waits waits

	// slots holds one token per command running (MaxRunning).
	slots chan struct{}
	// envs are the base environments of the handlers, by content.
	envs map[string][]string
	// specs are the configurations the handlers share (share), by
	// specHash.
	specs     map[uint64][]*spec
	specsSeed maphash.Seed
	// ctx is passed to every run; cancelling it stops the commands still
	// running when the shutdown grace period is over.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // one per running command
	// running counts the commands running, those of handlers that Update
	// removed included.
	running atomic.Int64

	// subreaper is set once the process is a subreaper; reaperDone ends
	// the goroutine reaping orphans on SIGCHLD.
	subreaper  bool
	reaperDone chan struct{}
	reaperWG   sync.WaitGroup

	shutdownOnce sync.Once

	// ended, when set (tests only), is called after a run has ended and
	// the handler's state has been updated.
	ended func(index int)
}

// New prepares the handlers; nothing is scheduled before Start, Deliver
// or Recover.
func New(o Options) *Exec {
	x := &Exec{log: o.Log, clock: o.Clock, runner: o.Runner, slots: make(chan struct{}, max(MaxRunning, 1)),
		specsSeed: maphash.MakeSeed()}
	if x.log == nil {
		x.log = slog.Default()
	}
	if x.clock == nil {
		x.clock = clock.System
	}
	x.waits.clock = x.clock
	if o.Subreaper {
		x.becomeSubreaper()
	}
	if x.runner == nil {
		x.runner = &CommandRunner{Log: x.log, KillOrphans: x.subreaper}
	}
	x.ctx, x.cancel = context.WithCancel(context.Background())
	if o.OnIdle != nil {
		x.idleKick = make(chan struct{}, 1)
		x.idleDone = make(chan struct{})
		go x.reportIdle(o.OnIdle)
	}
	for i := range o.Handlers {
		x.handlers = append(x.handlers, newHandler(x, i, &o.Handlers[i]))
	}
	x.index()
	return x
}

// index rebuilds exact and patterns from handlers, so that an event
// costs the exact handlers of its user only, not a scan of all of them
// (10,000 handlers made Deliver most of the exec process's time, and the
// process fall behind), and the wildcard handlers, which only a glob can
// match. x.mu must be held for writing, or x not yet shared.
func (x *Exec) index() {
	exact := make([]*handler, 0, len(x.handlers))
	x.patterns = nil
	for _, h := range x.handlers {
		if h.cfg.Pattern {
			x.patterns = append(x.patterns, h)
			continue
		}
		exact = append(exact, h)
	}
	x.exact = byuser.New(exact, func(h *handler) string { return h.user })
}

// exactFor returns the exact handlers of user, in list order; nil when
// it has none. x.mu must be held.
func (x *Exec) exactFor(user string) []*handler { return x.exact.Of(user) }

// setBusy records whether an exact handler's state is busy (*b is its
// last recorded value). Must be called with the handler's mu held.
func (x *Exec) setBusy(b *bool, busy bool) {
	if *b == busy {
		return
	}
	*b = busy
	if busy {
		x.busyAdd(1)
	} else {
		x.busyAdd(-1)
	}
}

// busyAdd changes the count of busy states by d and, on a transition
// between idle and busy, wakes the goroutine calling OnIdle. It never
// blocks: the goroutine reads the state itself (reportIdle).
func (x *Exec) busyAdd(d int) {
	x.idleMu.Lock()
	defer x.idleMu.Unlock()
	was := x.busy == 0
	x.busy += d
	if x.busy < 0 {
		panic("exec: busy count below zero")
	}
	if (x.busy == 0) == was {
		return
	}
	x.flips++
	if x.idleKick != nil && !x.idleClosed {
		select {
		case x.idleKick <- struct{}{}:
		default: // a wake-up is pending already
		}
	}
}

// reportIdle calls onIdle for the transitions, one at a time and with no
// lock held. Transitions it has not seen yet are told in few calls but
// never lost: an odd number of them as one call with the current state;
// an even number (busy and back, which matters to whoever counts the idle
// time from the last activity) as two, the other state then the current
// one.
func (x *Exec) reportIdle(onIdle func(bool)) {
	defer close(x.idleDone)
	var seen uint64
	last := true
	for range x.idleKick {
		x.idleMu.Lock()
		flips, idle := x.flips, x.busy == 0
		x.idleMu.Unlock()
		if flips == seen {
			continue
		}
		if idle == last {
			onIdle(!idle)
		}
		onIdle(idle)
		seen, last = flips, idle
	}
}

// Idle reports whether the Exec is idle, as Options.OnIdle defines it.
func (x *Exec) Idle() bool {
	x.idleMu.Lock()
	defer x.idleMu.Unlock()
	return x.busy == 0
}

// baseEnv is BaseEnv(cfg), shared by the handlers whose account and env
// are the same: the slices are only read (jobEnv copies), and 10,000
// handlers of one account need one, not 10,000. x.mu must be held for
// writing, or x not yet shared.
func (x *Exec) baseEnv(cfg *config.Handler) []string {
	env := BaseEnv(cfg)
	key := strings.Join(env, "\x00")
	if e, ok := x.envs[key]; ok {
		return e
	}
	if x.envs == nil {
		x.envs = map[string][]string{}
	}
	x.envs[key] = env
	return env
}

// becomeSubreaper makes the process a subreaper and starts reaping the
// orphans that exit on their own.
//
// SIGCHLD rather than waiting for the next run to end: an orphan that
// dies while a long command runs would stay a zombie until then, and
// zombies count against the account's process limit. signal.Notify does
// not disturb os/exec, which waits for each of its children by pid;
// ignoring SIGCHLD would. Reaping is by pid too (privsep.ReapOrphans),
// and keeps to children that are no command's leader.
func (x *Exec) becomeSubreaper() {
	if err := privsep.BecomeSubreaper(); err != nil {
		if errors.Is(err, errors.ErrUnsupported) {
			x.log.Info("no subreaper on this system: only what stays in a command's process group is killed with it", "err", err)
		} else {
			x.log.Error("cannot become a subreaper: what commands leave outside their process group is not killed", "err", err)
		}
		return
	}
	x.subreaper = true
	x.reaperDone = make(chan struct{})
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGCHLD)
	x.reaperWG.Add(1)
	go func() {
		defer x.reaperWG.Done()
		defer signal.Stop(sigs)
		for {
			select {
			case <-sigs:
				reapOrphans(x.log)
			case <-x.reaperDone:
				return
			}
		}
	}()
}

// Start arms the periodic timers; the first periodic run of a handler
// comes `periodic` after Start. Calls after the first do nothing.
func (x *Exec) Start() {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.started || x.stopped {
		return
	}
	x.started = true
	for _, h := range x.handlers {
		h.start()
	}
}

// Deliver hands an event to every handler that matches it (the user
// exactly, or by a wildcard handler's glob; the event name; and the
// remote address against the handler's ip list when it has one) and
// returns how many matched. A wildcard handler whose run_as has
// %-variables (config.Handler.Dynamic) matches only when run_as names
// this process's account for the event's user: otherwise the event is
// another process's, and a warn line says so (at most one a minute per
// handler, with the count of those held back). It never blocks on a
// command.
func (x *Exec) Deliver(ev event.Event, remote netip.AddrPort) int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	n := 0
	for _, h := range x.exactFor(ev.User) {
		if !h.matches(&ev, remote) {
			continue
		}
		n++
		h.deliver(ev, remote)
	}
	for _, h := range x.patterns {
		if !h.matches(&ev, remote) {
			continue
		}
		if name, ok := h.forAccount(ev.User); !ok {
			h.mu.Lock()
			lg := h.logger()
			h.mu.Unlock()
			h.unmatched.Log(context.Background(), lg, slog.LevelWarn, "",
				"event for another account not run: run_as names another account for its user",
				"user", ev.User, "run_as", name, "account", h.cfg.Account.Name)
			continue
		}
		n++
		h.deliver(ev, remote)
	}
	if n == 0 {
		x.log.Debug("no handler matches event", "user", ev.User, "event", ev.Event, "remote", remote.String())
	}
	return n
}

// Recover makes each handler run once (IMSE_TRIGGER=recovery) through its
// normal scheduling: the daemon calls it when this process was restarted
// or events for it may have been lost. An exact handler runs once; a
// wildcard handler once for each user it keeps state for and once for
// each of users that it matches (and whose run_as names this process's
// account, for a Dynamic handler), with IMSE_USER that user. A state with
// a run pending (an event, manual or start run, or a retry waiting for
// its back-off) already has the run the recovery asks for; otherwise the
// recovery run waits for the delay, a token and the running command like
// an event run, and events that arrive meanwhile turn it into an event
// run.
func (x *Exec) Recover(users ...string) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	for _, h := range x.handlers {
		h.recover(users)
	}
}

// Update replaces the handler list, as a reload does. A handler whose
// configuration is the same as one in the old list (config.Handler.Same:
// everything but Line and Number) keeps its state: pending events, timers,
// token bucket, running command, a retry waiting for its back-off, and
// the counts and last run that Status reports; a wildcard handler keeps
// every user's state. Identical handlers pair up one to one, in
// order. Old handlers left without a pair stop scheduling: a pending run
// is logged as dropped, and a running command finishes normally (Shutdown
// still waits for it). New handlers start like those given to New, with
// their periodic timers armed if Start was called. After Update a handler
// is named in logs by its index in handlers.
func (x *Exec) Update(handlers []config.Handler) (added, removed, kept int) {
	x.mu.Lock()
	defer x.mu.Unlock()
	old := x.handlers
	paired := make([]bool, len(old))
	next := make([]*handler, len(handlers))
	// Only a handler of the same user can be the same: comparing each new
	// handler with every old one took half a second with 10,000 changed
	// handlers, Deliver waiting on x.mu all along.
	oldOf := byuser.Positions(len(old), func(j int) string { return old[j].user })
	for i := range handlers {
		for _, j := range oldOf.Of(handlers[i].User) {
			if h := old[j]; !paired[j] && h.same(&handlers[i]) {
				paired[j] = true
				next[i] = h
				h.relabel(i, handlers[i].Number, handlers[i].Line)
				kept++
				break
			}
		}
	}
	for j, h := range old {
		if !paired[j] {
			h.stop("reload")
			removed++
		}
	}
	// The shared configurations are those of the handlers kept, then of
	// the new ones: none of a removed handler stays.
	x.specs = nil
	for _, h := range next {
		if h != nil {
			x.keepSpec(h.spec)
		}
	}
	for i := range handlers {
		if next[i] != nil {
			continue
		}
		h := newHandler(x, i, &handlers[i])
		next[i] = h
		added++
		switch {
		case x.stopped:
			h.stop("shutdown")
		case x.started:
			h.start()
		}
	}
	x.handlers = next
	x.index()
	x.log.Info("handlers updated", "added", added, "removed", removed, "kept", kept)
	return added, removed, kept
}

// Shutdown stops every timer, logs each pending run that will not happen,
// waits for running commands to end and, once grace is over, sends the
// process groups of those still running SIGTERM, then SIGKILL (the
// runner's KillGrace later). It returns once all of them are gone, after
// killing what they left behind when the process is a subreaper. Events
// delivered afterwards are logged and dropped.
func (x *Exec) Shutdown(grace time.Duration) {
	x.shutdownOnce.Do(func() {
		x.mu.Lock()
		x.stopped = true
		handlers := x.handlers
		x.mu.Unlock()
		for _, h := range handlers {
			h.stop("shutdown")
		}
		running := x.running.Load()
		done := make(chan struct{})
		go func() {
			x.wg.Wait()
			close(done)
		}()
		if running > 0 {
			x.log.Info("waiting for running commands", "running", running, "grace", grace.String())
		}
		stop := func() {
			x.log.Warn("shutdown grace period over, terminating running commands", "grace", grace.String())
			x.cancel()
		}
		var t clock.Timer
		if grace > 0 {
			t = x.clock.AfterFunc(grace, stop)
		} else if running > 0 {
			stop()
		}
		<-done
		if t != nil {
			t.Stop()
		}
		x.cancel()
		if x.idleKick != nil {
			x.idleMu.Lock()
			x.idleClosed = true
			close(x.idleKick)
			x.idleMu.Unlock()
			<-x.idleDone
		}
		if x.subreaper {
			close(x.reaperDone)
			x.reaperWG.Wait()
			sweepOrphans(x.log, "shutdown")
		}
	})
}
