package exec

import (
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/imserious/imserious/clock"
	"github.com/imserious/imserious/config"
	"github.com/imserious/imserious/event"
	"github.com/imserious/imserious/internal/prefix"
)

// phase is where a handler's pending run (an event, recovery, manual or
// start run, or the retry of a failed run) stands.
type phase int

const (
	noPending    phase = iota // no run pending
	waitDelay                 // the burst's delay timer is armed
	waitToken                 // a token is reserved; the timer fires when it is due
	waitRun                   // blocked by the running command; needs a token after it (unless free)
	waitRunToken              // blocked by the running command; its token is already due
	waitRetry                 // a failed run's retry; the timer fires at its back-off; nothing runs
)

// MaxRetryBackoff is where the doubling of retry_backoff stops: the
// fourth retry of a handler with the default 10s waits 80s, the seventh
// and later ten minutes. A retry_backoff above it is used as it is, for
// every retry.
const MaxRetryBackoff = 10 * time.Minute

// triggerRank orders the triggers a pending run may cover: a run keeps
// the strongest of those merged into it as its IMSE_TRIGGER. An event
// carries the event's fields; a manual run is the operator's; the others
// only ask for a run.
func triggerRank(t string) int {
	switch t {
	case TriggerEvent:
		return 3
	case TriggerManual:
		return 2
	case TriggerStart:
		return 1
	}
	return 0 // TriggerRecovery
}

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
	index    int
	number   int
	line     int
	log      *slog.Logger
	stopped  bool
	running  bool
	runs     int // runs launched so far, retries included
	failures int // runs that ended and failed
	phase    phase
	// The pending run: its trigger (TriggerEvent, TriggerRecovery,
	// TriggerManual or TriggerStart; TriggerRetry in waitRetry), how many
	// events it covers, and the last one.
	trigger string
	count   int
	last    event.Event
	remote  netip.AddrPort
	// free is set once a manual or start request is merged into the
	// pending run: it then neither waits for nor spends a token.
	free bool
	// resv is the token reserved for the pending run in waitToken, given
	// back when a manual request makes the run free.
	resv *rate.Reservation
	// retry is the run waitRetry will start: the failed run's job with
	// its next Attempt and environment.
	retry Job
	// due is when the wait timer fires (waitDelay, waitToken, waitRetry).
	due time.Time

	// The running run (running): when it started, on the handler's
	// clock, and its pid once the runner has reported it.
	since time.Time
	pid   int
	// lastRun is how the last run that ended went; nil before.
	lastRun *RunInfo

	// Timers carry a generation: Stop cannot recall a callback already on
	// its way, so a callback whose generation is stale does nothing.
	wait        clock.Timer
	waitGen     uint64
	periodic    clock.Timer
	periodicGen uint64
	periodicAt  time.Time // when periodic fires; zero when it is not armed
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
		line:   cfg.Line,
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
	h.index, h.number, h.line = index, number, line
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
	if h.phase == waitRetry {
		// A new event starts a normal run, which covers the retry.
		h.dropRetry(TriggerEvent)
	}
	if h.phase == noPending {
		h.count = 0
	}
	prev := h.trigger
	// An event turns a pending recovery, manual or start run into an
	// event run: it runs as scheduled, with the event's fields.
	h.trigger = TriggerEvent
	h.count++
	h.last = ev
	h.remote = remote
	switch {
	case h.phase != noPending && prev != TriggerEvent:
		h.log.Debug("event turns the pending " + prev + " run into an event run")
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
// covers it: the pending run, a retry waiting for its back-off included,
// starts after the recovery was asked for.
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
	h.free = false
	h.schedule("recovery")
}

// request asks for a manual or start run (trigger): through the delay
// like an event, but needing and spending no token. It merges into a
// pending run, which then needs no token either (one waiting for its
// token starts at once, and gives the token back); a running command
// covers it, as the operator asked for a run and one is running; a retry
// waiting for its back-off is dropped for it, as for an event.
func (h *handler) request(trigger string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped {
		h.log.Warn(trigger+" run after shutdown dropped", "trigger", trigger)
		return
	}
	h.log.Info("run requested", "trigger", trigger)
	if h.phase == waitRetry {
		h.dropRetry(trigger)
	}
	switch {
	case h.phase != noPending:
		h.free = true
		if triggerRank(trigger) > triggerRank(h.trigger) {
			h.trigger = trigger
		}
		h.log.Debug(trigger+" run merged into pending run", "pending", h.trigger, "count", h.count)
		if h.phase == waitToken {
			h.stopWait()
			h.resv.CancelAt(h.x.clock.Now())
			h.resv = nil
			if h.running { // a periodic run started while waiting for the token
				h.phase = waitRun
				return
			}
			h.startPending()
		}
	case h.running:
		h.log.Debug(trigger + " run covered by the running command")
	default:
		h.trigger = trigger
		h.count = 0
		h.last = event.Event{}
		h.remote = netip.AddrPort{}
		h.free = true
		h.schedule(trigger)
	}
}

// dropRetry ends the back-off of a failed run: a new run (by, its
// trigger) covers the retry, and counts as a first attempt. Must be
// called with mu held in waitRetry.
func (h *handler) dropRetry(by string) {
	h.log.Debug("pending retry dropped: a new run covers it", "by", by, "attempt", h.retry.Attempt)
	h.stopWait()
	h.phase = noPending
	h.trigger = ""
	h.retry = Job{}
}

// acquire takes a token for the pending run and starts it, or arms
// a timer for when the token is due. Over the limit a run is deferred,
// never dropped. Must be called with mu held and no command running.
func (h *handler) acquire() {
	if h.free {
		h.startPending()
		return
	}
	now := h.x.clock.Now()
	r := h.lim.ReserveN(now, 1)
	if !r.OK() {
		// Cannot happen with burst >= 1; running is better than losing
		// the event.
		h.log.Error("rate limiter refused a reservation, running anyway")
		h.startPending()
		return
	}
	d := r.DelayFrom(now)
	if d <= 0 {
		h.startPending()
		return
	}
	h.phase = waitToken
	h.resv = r
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
	h.due = time.Time{}
	if h.running { // a periodic run started during the delay
		h.phase = waitRun
		return
	}
	h.acquire()
}

// retryDue starts the retry of a failed run. Nothing runs in waitRetry:
// every launch ends it.
func (h *handler) retryDue(gen uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped || gen != h.waitGen || h.phase != waitRetry {
		return
	}
	h.wait = nil
	h.due = time.Time{}
	j := h.retry
	h.retry = Job{}
	h.phase = noPending
	h.trigger = ""
	j.Index, j.Number = h.index, h.number
	h.launch(j)
}

func (h *handler) tokenDue(gen uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped || gen != h.waitGen || h.phase != waitToken {
		return
	}
	h.wait = nil
	h.due = time.Time{}
	h.resv = nil
	if h.running { // a periodic run started while waiting for the token
		h.phase = waitRunToken
		return
	}
	h.startPending()
}

func (h *handler) periodicDue(gen uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped || gen != h.periodicGen {
		return
	}
	h.periodic = nil
	h.periodicAt = time.Time{}
	if h.running {
		// Not stacked: the periodic clock restarts when the run ends.
		return
	}
	// Periodic runs neither wait for nor spend tokens, and leave a
	// pending event run where it is; a retry waiting for its back-off
	// is covered by them (launch drops it).
	h.launch(Job{
		Handler: h.cfg,
		Index:   h.index,
		Number:  h.number,
		Trigger: TriggerPeriodic,
		Attempt: 1,
		Env:     periodicEnv(h.base, h.cfg),
	})
}

// startPending starts the pending run: an event, recovery, manual or
// start run. Must be called with mu held.
func (h *handler) startPending() {
	j := Job{
		Handler: h.cfg,
		Index:   h.index,
		Number:  h.number,
		Trigger: h.trigger,
		Attempt: 1,
	}
	switch h.trigger {
	case TriggerEvent:
		j.Count = h.count
		j.Env = eventEnv(h.base, &h.last, h.count, h.remote)
	case TriggerManual, TriggerStart:
		j.Env = requestEnv(h.base, h.cfg, h.trigger)
	default:
		j.Trigger = TriggerRecovery
		j.Env = recoveryEnv(h.base, h.cfg)
	}
	h.phase = noPending
	h.trigger = ""
	h.count = 0
	h.last = event.Event{}
	h.remote = netip.AddrPort{}
	h.free = false
	h.resv = nil
	h.launch(j)
}

// launch runs j in its own goroutine. Must be called with mu held.
func (h *handler) launch(j Job) {
	if h.running || h.stopped {
		// The state machine never gets here; asserting it keeps a bug
		// from running two copies of a command.
		panic("exec: launch while running or stopped")
	}
	if h.phase == waitRetry {
		h.dropRetry(j.Trigger) // a periodic run covers the retry
	}
	h.running = true
	h.runs++
	h.since = h.x.clock.Now()
	h.pid = 0
	// The periodic clock counts from the end of the last run.
	h.stopPeriodic()
	j.Started = h.started
	h.x.wg.Add(1)
	h.x.running.Add(1)
	go func() {
		defer h.x.wg.Done()
		res := h.x.runner.Run(h.x.ctx, j)
		h.x.running.Add(-1)
		h.runEnded(&j, res)
		if h.x.ended != nil {
			h.x.ended(j.Index)
		}
	}()
}

// started records the pid of the running command, as the runner reports
// it. Runs of a handler never overlap, so it is the running one's.
func (h *handler) started(pid int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.running {
		h.pid = pid
	}
}

// runEnded moves on after a run: its outcome is recorded, the periodic
// clock restarts, and a pending run goes through the limiter (or starts,
// its token due or not needed). A failed run with no run pending to cover
// it is retried when the handler has retries left.
func (h *handler) runEnded(j *Job, res Result) {
	h.mu.Lock()
	defer h.mu.Unlock()
	end := h.x.clock.Now()
	failed := res.Failed()
	info := &RunInfo{Start: h.since, Duration: end.Sub(h.since), Signal: res.Signal, Trigger: j.Trigger}
	if res.Err == nil && res.Signal == "" {
		st := res.ExitStatus
		info.ExitStatus = &st
	}
	h.lastRun = info
	if failed {
		h.failures++
	}
	h.running = false
	h.since = time.Time{}
	h.pid = 0
	if h.stopped {
		return
	}
	h.armPeriodic()
	switch h.phase {
	case waitRun:
		h.acquire()
	case waitRunToken:
		h.startPending()
	case noPending:
		if failed {
			h.retryFailed(j)
		}
		return
	}
	if failed && h.cfg.Retries > 0 {
		h.log.Debug("run failed; the pending run covers its retry", "attempt", j.Attempt)
	}
}

// retryFailed schedules the retry of the failed run j, or says that
// there is none left. Must be called with mu held and nothing pending or
// running.
func (h *handler) retryFailed(j *Job) {
	if h.cfg.Retries <= 0 {
		return
	}
	attempt := max(j.Attempt, 1)
	if attempt > h.cfg.Retries {
		h.log.Warn("run failed, retries exhausted", "attempts", attempt, "retries", h.cfg.Retries, "trigger", j.Trigger)
		return
	}
	d := retryBackoff(h.cfg.RetryBackoff, attempt)
	next := attempt + 1
	h.retry = Job{Handler: h.cfg, Trigger: TriggerRetry, Count: j.Count, Attempt: next, Env: retryEnv(j.Env, next)}
	h.phase = waitRetry
	h.trigger = TriggerRetry
	h.armWait(d, h.retryDue)
	h.log.Info("run failed, retrying", "attempt", next, "retries", h.cfg.Retries, "after", d.String(),
		"due", h.due.Format(time.RFC3339), "trigger", j.Trigger)
}

// retryBackoff is how long the retry after the failed attempt waits:
// base, doubled for each attempt after the first, up to MaxRetryBackoff
// (or base when it is above that).
func retryBackoff(base time.Duration, attempt int) time.Duration {
	if base <= 0 {
		base = config.DefaultRetryBackoff
	}
	limit := max(MaxRetryBackoff, base)
	d := base
	for i := 1; i < attempt && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

// retryEnv is the environment of a retry: the failed run's, with
// IMSE_TRIGGER=retry and IMSE_ATTEMPT.
func retryEnv(env []string, attempt int) []string {
	var base, imse []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case !strings.HasPrefix(k, imsePrefix):
			base = append(base, kv)
		case k != imsePrefix+"TRIGGER" && k != imsePrefix+"ATTEMPT":
			imse = append(imse, kv)
		}
	}
	imse = append(imse, imsePrefix+"ATTEMPT="+strconv.Itoa(attempt))
	return jobEnv(base, imse, TriggerRetry)
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
		if h.phase == waitRetry {
			h.log.Warn("pending run dropped at "+why, "trigger", h.trigger, "attempt", h.retry.Attempt)
		} else {
			h.log.Warn("pending run dropped at "+why, "trigger", h.trigger, "count", h.count, "remote", h.remote.String())
		}
		h.phase = noPending
		h.count = 0
		h.trigger = ""
		h.free = false
		h.resv = nil
		h.retry = Job{}
	}
	return h.running
}

func (h *handler) armWait(d time.Duration, f func(uint64)) {
	h.stopWait()
	gen := h.waitGen
	h.due = h.x.clock.Now().Add(d)
	h.wait = h.x.clock.AfterFunc(d, func() { f(gen) })
}

func (h *handler) stopWait() {
	h.waitGen++
	h.due = time.Time{}
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
	h.periodicAt = h.x.clock.Now().Add(h.cfg.Periodic)
	h.periodic = h.x.clock.AfterFunc(h.cfg.Periodic, func() { h.periodicDue(gen) })
}

func (h *handler) stopPeriodic() {
	h.periodicGen++
	h.periodicAt = time.Time{}
	if h.periodic != nil {
		h.periodic.Stop()
		h.periodic = nil
	}
}
