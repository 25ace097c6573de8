// Package exec is the core of the exec process (one per run_as account):
// it matches the events it is sent against its handlers, schedules runs
// (delay, coalescing, token-bucket limit, periodic runs, never two copies
// of one command at once) and runs the commands in their own process
// groups with a fixed environment, logging their output.
//
// It runs in a process that has already dropped to the account's uid and
// never changes credentials itself.
package exec

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/imserious/imserious/clock"
	"github.com/imserious/imserious/config"
	"github.com/imserious/imserious/event"
)

// Values of Job.Trigger and IMSE_TRIGGER.
const (
	TriggerEvent    = "event"
	TriggerPeriodic = "periodic"
)

// Options configure an Exec.
type Options struct {
	// Handlers are the handlers of this process's account, with Account
	// and Path filled in. Their index in this slice names them in logs.
	Handlers []config.Handler
	Log      *slog.Logger // nil: slog.Default()
	Clock    clock.Clock  // nil: clock.System
	Runner   Runner       // nil: a CommandRunner logging to Log
}

// Job is one run of a handler's command.
type Job struct {
	Handler *config.Handler
	Index   int    // the handler's index in Options.Handlers
	Trigger string // TriggerEvent or TriggerPeriodic
	Count   int    // events coalesced into this run; 0 for periodic runs
	Env     []string
}

// Runner runs a job's command. Run blocks until the command has ended and
// logs everything about it itself; when ctx is done it kills the command.
type Runner interface {
	Run(ctx context.Context, j Job)
}

// Exec schedules and runs the handlers of one account.
type Exec struct {
	log      *slog.Logger
	clock    clock.Clock
	runner   Runner
	handlers []*handler

	// ctx is passed to every run; cancelling it kills the commands still
	// running when the shutdown grace period is over.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // one per running command

	startOnce    sync.Once
	shutdownOnce sync.Once

	// ended, when set (tests only), is called after a run has ended and
	// the handler's state has been updated.
	ended func(index int)
}

// New prepares the handlers; nothing is scheduled before Start or Deliver.
func New(o Options) *Exec {
	x := &Exec{log: o.Log, clock: o.Clock, runner: o.Runner}
	if x.log == nil {
		x.log = slog.Default()
	}
	if x.clock == nil {
		x.clock = clock.System
	}
	if x.runner == nil {
		x.runner = &CommandRunner{Log: x.log}
	}
	x.ctx, x.cancel = context.WithCancel(context.Background())
	// Copy the handlers so that the pointers in jobs stay valid and
	// nobody else can change them under a running schedule.
	cfgs := make([]config.Handler, len(o.Handlers))
	copy(cfgs, o.Handlers)
	for i := range cfgs {
		x.handlers = append(x.handlers, newHandler(x, i, &cfgs[i]))
	}
	return x
}

// Start arms the periodic timers; the first periodic run of a handler
// comes `periodic` after Start. Calls after the first do nothing.
func (x *Exec) Start() {
	x.startOnce.Do(func() {
		for _, h := range x.handlers {
			h.start()
		}
	})
}

// Deliver hands an event to every handler that matches it (user exactly,
// event name, and the remote address against the handler's ip list when
// it has one) and returns how many matched. It never blocks on a command.
func (x *Exec) Deliver(ev event.Event, remote netip.AddrPort) int {
	n := 0
	for _, h := range x.handlers {
		if !h.matches(&ev, remote) {
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

// Shutdown stops every timer, logs each pending run that will not happen,
// waits for running commands to end, kills the process groups of those
// still running after grace, and returns once all of them are gone.
// Events delivered afterwards are logged and dropped.
func (x *Exec) Shutdown(grace time.Duration) {
	x.shutdownOnce.Do(func() {
		running := 0
		for _, h := range x.handlers {
			if h.stop() {
				running++
			}
		}
		done := make(chan struct{})
		go func() {
			x.wg.Wait()
			close(done)
		}()
		if running > 0 {
			x.log.Info("waiting for running commands", "running", running, "grace", grace.String())
		}
		kill := func() {
			x.log.Warn("shutdown grace period over, killing running commands", "grace", grace.String())
			x.cancel()
		}
		var t clock.Timer
		if grace > 0 {
			t = x.clock.AfterFunc(grace, kill)
		} else if running > 0 {
			kill()
		}
		<-done
		if t != nil {
			t.Stop()
		}
		x.cancel()
	})
}
