package exec

import (
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/imserious/imserious/clock"
	"github.com/imserious/imserious/config"
	"github.com/imserious/imserious/event"
	"github.com/imserious/imserious/internal/prefix"
)

// phase is where a handler's pending run (an event or recovery run)
// stands.
type phase int

const (
	noPending    phase = iota // no run pending
	waitDelay                 // the burst's delay timer is armed
	waitToken                 // a token is reserved; the timer fires when it is due
	waitRun                   // blocked by the running command; needs a token after it
	waitRunToken              // blocked by the running command; its token is already due
)

// handler is the scheduling state machine of one [[handler]]. Everything
// is driven by Clock timers and by runs ending: an idle handler has at most
// its periodic timer armed and no goroutine.
type handler struct {
	x    *Exec
	cfg  *config.Handler
	ip   []netip.Prefix // cfg.IP as prefix.Contains wants them
	base []string       // BaseEnv(cfg), computed once
	lim  *rate.Limiter

	mu sync.Mutex
	// index is the handler's place in the current list and number its
	// place in the file (config.Handler.Number, the N of handler[N] in
	// configuration errors), which names it in logs; Update may change
	// both.
	index   int
	number  int
	log     *slog.Logger
	stopped bool
	running bool
	runs    int // runs launched so far, for logs and tests
	phase   phase
	// The pending run: TriggerEvent or TriggerRecovery, how many events
	// it covers, and the last one.
	trigger string
	count   int
	last    event.Event
	remote  netip.AddrPort

	// Timers carry a generation: Stop cannot recall a callback already on
	// its way, so a callback whose generation is stale does nothing.
	wait        clock.Timer
	waitGen     uint64
	periodic    clock.Timer
	periodicGen uint64
}

func newHandler(x *Exec, i int, cfg *config.Handler) *handler {
	burst := cfg.LimitBurst
	if burst < 1 {
		burst = 1 // config guarantees >= 1; a 0 burst would refuse every run
	}
	limit := rate.Inf
	if cfg.LimitPeriod > 0 {
		limit = rate.Every(cfg.LimitPeriod)
	}
	return &handler{
		x:      x,
		cfg:    cfg,
		ip:     prefix.Normalize(cfg.IP),
		index:  i,
		number: cfg.Number,
		log:    handlerLog(x.log, i, cfg.Number, cfg.Line, cfg),
		base:   BaseEnv(cfg),
		lim:    rate.NewLimiter(limit, burst),
	}
}

// handlerLog names a handler in logs: its number in the file (its index
// in the current list when it has none), the line of its [[handler]]
// header when known, its user and event.
func handlerLog(log *slog.Logger, index, number, line int, cfg *config.Handler) *slog.Logger {
	if line > 0 {
		return log.With("handler", label(index, number), "line", line, "user", cfg.User, "event", cfg.Event)
	}
	return log.With("handler", label(index, number), "user", cfg.User, "event", cfg.Event)
}

// label is what the "handler" field of a log line says: the handler's
// number in the file, as in configuration errors (handler[N]), or its
// index in the list for handlers built without one (tests, embedding).
func label(index, number int) int {
	if number > 0 {
		return number
	}
	return index
}

// relabel gives a handler kept across Update its new index, number and
// line.
func (h *handler) relabel(index, number, line int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.index, h.number = index, number
	h.log = handlerLog(h.x.log, index, number, line, h.cfg)
}

// matches reports whether ev is for this handler. The peer is compared by
// internal/prefix, as the network process compares it: IPv4-mapped peers
// as IPv4, and a link-local peer with a zone by its address.
func (h *handler) matches(ev *event.Event, remote netip.AddrPort) bool {
	if ev.User != h.cfg.User || ev.Event != h.cfg.Event {
		return false
	}
	if len(h.ip) == 0 {
		return true
	}
	return prefix.Contains(h.ip, remote.Addr())
}

func (h *handler) start() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.stopped && !h.running && h.periodic == nil {
		h.armPeriodic()
	}
}

func (h *handler) deliver(ev event.Event, remote netip.AddrPort) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped {
		h.log.Warn("event after shutdown dropped", "remote", remote.String())
		return
	}
	if h.phase == noPending {
		h.count = 0
	}
	recovery := h.phase != noPending && h.trigger == TriggerRecovery
	// An event turns a pending recovery run into an event run: it runs
	// as scheduled, with the event's fields.
	h.trigger = TriggerEvent
	h.count++
	h.last = ev
	h.remote = remote
	switch {
	case recovery:
		h.log.Debug("event turns the pending recovery run into an event run")
	case h.phase != noPending:
		h.log.Debug("event coalesced into pending run", "count", h.count)
	default:
		h.schedule("event")
	}
}

// schedule starts the way of a new pending run (what, its trigger, is
// logged):
// after the running command, after the delay, or through the limiter.
// Must be called with mu held and no run pending.
func (h *handler) schedule(what string) {
	switch {
	case h.running:
		// Not idle: no new delay, the run after this one goes through
		// the limiter when the command ends.
		h.phase = waitRun
		h.log.Debug("run pending until the running command ends", "trigger", what)
	case h.cfg.Delay > 0:
		// A burst starts; later events do not extend the delay.
		h.phase = waitDelay
		h.armWait(h.cfg.Delay, h.delayDone)
		h.log.Debug("burst started, run delayed", "trigger", what, "delay", h.cfg.Delay.String())
	default:
		h.acquire()
	}
}

// recover schedules a recovery run unless a run is pending already, which
// covers it: the pending run starts after the recovery was asked for.
func (h *handler) recover() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped {
		h.log.Warn("recovery after shutdown dropped")
		return
	}
	if h.phase != noPending {
		h.log.Debug("recovery coalesced into pending run", "trigger", h.trigger, "count", h.count)
		return
	}
	h.trigger = TriggerRecovery
	h.count = 0
	h.last = event.Event{}
	h.remote = netip.AddrPort{}
	h.schedule("recovery")
}

// acquire takes a token for the pending run and starts it, or arms
// a timer for when the token is due. Over the limit a run is deferred,
// never dropped. Must be called with mu held and no command running.
func (h *handler) acquire() {
	now := h.x.clock.Now()
	r := h.lim.ReserveN(now, 1)
	if !r.OK() {
		// Cannot happen with burst >= 1; running is better than losing
		// the event.
		h.log.Error("rate limiter refused a reservation, running anyway")
		h.startEvent()
		return
	}
	d := r.DelayFrom(now)
	if d <= 0 {
		h.startEvent()
		return
	}
	h.phase = waitToken
	h.armWait(d, h.tokenDue)
	h.log.Info("run deferred by rate limit", "wait", d.String(), "trigger", h.trigger, "count", h.count)
}

func (h *handler) delayDone(gen uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped || gen != h.waitGen || h.phase != waitDelay {
		return
	}
	h.wait = nil
	if h.running { // a periodic run started during the delay
		h.phase = waitRun
		return
	}
	h.acquire()
}

func (h *handler) tokenDue(gen uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped || gen != h.waitGen || h.phase != waitToken {
		return
	}
	h.wait = nil
	if h.running { // a periodic run started while waiting for the token
		h.phase = waitRunToken
		return
	}
	h.startEvent()
}

func (h *handler) periodicDue(gen uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped || gen != h.periodicGen {
		return
	}
	h.periodic = nil
	if h.running {
		// Not stacked: the periodic clock restarts when the run ends.
		return
	}
	// Periodic runs neither wait for nor spend tokens, and leave a
	// pending event run where it is.
	h.launch(Job{
		Handler: h.cfg,
		Index:   h.index,
		Number:  h.number,
		Trigger: TriggerPeriodic,
		Env:     periodicEnv(h.base, h.cfg),
	})
}

// startEvent starts the pending run, an event or a recovery run. Must be
// called with mu held.
func (h *handler) startEvent() {
	j := Job{
		Handler: h.cfg,
		Index:   h.index,
		Number:  h.number,
		Trigger: TriggerEvent,
		Count:   h.count,
	}
	if h.trigger == TriggerRecovery {
		j.Trigger, j.Count = TriggerRecovery, 0
		j.Env = recoveryEnv(h.base, h.cfg)
	} else {
		j.Env = eventEnv(h.base, &h.last, h.count, h.remote)
	}
	h.phase = noPending
	h.trigger = ""
	h.count = 0
	h.last = event.Event{}
	h.remote = netip.AddrPort{}
	h.launch(j)
}

// launch runs j in its own goroutine. Must be called with mu held.
func (h *handler) launch(j Job) {
	if h.running || h.stopped {
		// The state machine never gets here; asserting it keeps a bug
		// from running two copies of a command.
		panic("exec: launch while running or stopped")
	}
	h.running = true
	h.runs++
	// The periodic clock counts from the end of the last run.
	h.stopPeriodic()
	h.x.wg.Add(1)
	h.x.running.Add(1)
	go func() {
		defer h.x.wg.Done()
		h.x.runner.Run(h.x.ctx, j)
		h.x.running.Add(-1)
		h.runEnded()
		if h.x.ended != nil {
			h.x.ended(j.Index)
		}
	}()
}

// runEnded moves on after a run: the periodic clock restarts, and a
// pending event run goes through the limiter (or starts, its token due).
func (h *handler) runEnded() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.running = false
	if h.stopped {
		return
	}
	h.armPeriodic()
	switch h.phase {
	case waitRun:
		h.acquire()
	case waitRunToken:
		h.startEvent()
	}
}

// stop ends all scheduling, logs a pending run that will not happen
// (why: "shutdown" or "reload") and reports whether a command is still
// running; it is left to finish.
func (h *handler) stop(why string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stopped = true
	h.stopWait()
	h.stopPeriodic()
	if h.phase != noPending {
		h.log.Warn("pending run dropped at "+why, "trigger", h.trigger, "count", h.count, "remote", h.remote.String())
		h.phase = noPending
		h.count = 0
		h.trigger = ""
	}
	return h.running
}

func (h *handler) armWait(d time.Duration, f func(uint64)) {
	h.stopWait()
	gen := h.waitGen
	h.wait = h.x.clock.AfterFunc(d, func() { f(gen) })
}

func (h *handler) stopWait() {
	h.waitGen++
	if h.wait != nil {
		h.wait.Stop()
		h.wait = nil
	}
}

func (h *handler) armPeriodic() {
	h.stopPeriodic()
	if h.cfg.Periodic <= 0 {
		return
	}
	gen := h.periodicGen
	h.periodic = h.x.clock.AfterFunc(h.cfg.Periodic, func() { h.periodicDue(gen) })
}

func (h *handler) stopPeriodic() {
	h.periodicGen++
	if h.periodic != nil {
		h.periodic.Stop()
		h.periodic = nil
	}
}
