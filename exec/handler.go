package exec

import (
	"context"
	"errors"
	"log/slog"
	"math"
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
	"github.com/imserious/imserious/logging"
)

// phase is where a pending run (an event, recovery, manual or start run,
// or the retry of a failed run) stands.
type phase uint8

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

// unmatchedEvery is how often a wildcard handler may log that an event
// was for another account's exec process (with the count of those held
// back in between).
const unmatchedEvery = time.Minute

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

// handler is one [[handler]]: its configuration, how logs name it, and
// the scheduling state of its runs. An exact handler has one state
// machine (one); a wildcard handler (cfg.Pattern) one per event user
// (users), made on the first event or request for that user and freed
// once nothing is pending or running and its token bucket is full again,
// so that an idle user costs nothing. mu guards the handler and every one
// of its states.
//
// With 10,000 exact handlers the handlers and their states are most of
// the exec process's heap: what can be had from cfg (the token bucket's
// rate and burst) is not kept again, and cfg is shared by the handlers
// that differ only in their user (see spec), so its User, Number and
// Line are not this handler's: user, number and line are. What Deliver
// reads of a handler comes first, up to stopped.
type handler struct {
	x *Exec
	// spec is the configuration and what is made of it, shared (see
	// Exec.share): never written.
	*spec
	// user is the handler's config.Handler.User: the user of an exact
	// handler, the glob of a wildcard one.
	user string
	one  *sched // an exact handler's state; nil for a wildcard handler
	// unmatched limits the warn line for events a Dynamic handler's
	// run_as gives to another account (nil for other handlers).
	unmatched *logging.Limiter

	mu      sync.Mutex
	stopped bool
	// index is the handler's place in the current list and number its
	// place in the file (config.Handler.Number, the N of handler[N] in
	// configuration errors), which names it in logs; Update may change
	// both.
	index  int
	number int
	line   int
	lg     *slog.Logger // see logger
	// runs counts the runs launched (retries included) and failures the
	// runs that ended and failed, of every state, freed ones included;
	// lastRun is the last run of any state that ended. An exact handler's
	// state has its counts and last run here.
	runs     int
	failures int
	lastRun  *RunInfo
	users    map[string]*sched // a wildcard handler's states, by event user; nil for an exact one
}

// limit is the rate of the token bucket of each state: limit_period.
func (h *handler) limit() rate.Limit {
	if h.cfg.LimitPeriod > 0 {
		return rate.Every(h.cfg.LimitPeriod)
	}
	return rate.Inf
}

// burst is the size of the token bucket of each state: limit_burst.
func (h *handler) burst() int {
	// config guarantees >= 1; a 0 burst would refuse every run
	return max(h.cfg.LimitBurst, 1)
}

// sched is the scheduling state machine of one handler for one user: the
// handler's own user for an exact handler, an event user for a wildcard
// one. Everything is driven by Clock timers and by runs ending: an idle
// state has at most its periodic timer armed (a wildcard handler's, at
// most the timer for its bucket's refill) and no goroutine. Its handler's
// mu guards it.
//
// It holds inline what a state idle or waiting for its delay needs, every
// exact handler's with 10,000 of them: what only a reserved token, a
// running command, a retry or a periodic timer needs is in more, and what
// only a wildcard handler's state needs in u (an exact handler's has it
// in its handler). That keeps it in the 256-byte size class
// (TestSchedSize).
type sched struct {
	// What an event joining the pending run reads and writes comes first,
	// in the first three of the struct's four cache lines.
	h *handler
	// more holds the fields of the phases that need them, made when one
	// does and dropped by settle (trim) once the state is idle and none
	// does; nil meanwhile.
	more *schedMore

	busy    bool // an exact handler's state is counted busy in Exec's idle count
	running bool
	// free is set once a manual or start request is merged into the
	// pending run: it then neither waits for nor spends a token.
	free bool
	// refill is set while wait is the timer of a wildcard handler's idle
	// state, which fires when its token bucket is full again.
	refill bool
	phase  phase
	// The pending run: its trigger (TriggerEvent, TriggerRecovery,
	// TriggerManual or TriggerStart; TriggerRetry in waitRetry), how many
	// events it covers, and the last one.
	trigger string
	count   int
	last    event.Event
	remote  netip.AddrPort

	// lim is the token bucket, made full when the first run needs a
	// token: a state whose runs never came due (a delay not over, or
	// only free runs) has none, as 10,000 handlers waiting for their
	// delay do.
	lim *rate.Limiter
	// u is the rest of a wildcard handler's state, which holds this one;
	// nil for an exact handler's.
	u *userSched
	// due is when the wait timer fires (waitDelay, waitToken, waitRetry,
	// and refill).
	due time.Time

	// Timers carry a generation: Stop cannot recall a callback already on
	// its way, so a callback whose generation is stale does nothing. Both
	// generations stay here, never dropped with more, so that they only
	// grow. The wait timer is an entry of the Exec's waits, at waitIdx-1
	// there (0: none), which waits.mu guards.
	waitGen     uint64
	periodicGen uint64
	waitIdx     int32
}

// schedMore is what a state needs in some phases only (sched.more).
type schedMore struct {
	// resv is the token reserved for the pending run, due at resvAt;
	// given back when a manual request makes the run free in waitToken.
	resv   *rate.Reservation
	resvAt time.Time
	// spent, for a program in the home, is the token the running run
	// took, due at spentAt: given back when no hook is found.
	spent   *rate.Reservation
	spentAt time.Time
	// retry is the run waitRetry will start: the failed run's job with
	// its next Attempt and environment.
	retry *Job
	// The running run (sched.running): when it started, on the handler's
	// clock, and its pid once the runner has reported it.
	since time.Time
	pid   int
	// periodic is the periodic timer, which fires at periodicAt; nil and
	// zero when it is not armed.
	periodic   clock.Timer
	periodicAt time.Time
}

// userSched is a wildcard handler's state of one event user: the state
// machine and what an exact handler's state has in its handler.
type userSched struct {
	sched sched
	user  string
	lg    *slog.Logger // the state's logger, made when first needed
	// runs counts the runs launched for this user, retries included, and
	// failures those that ended and failed; lastRun is how the last one
	// that ended went (nil before).
	runs     int
	failures int
	lastRun  *RunInfo
}

// extra returns s.more, making it when s has none. Must be called with
// the handler's mu held.
func (s *sched) extra() *schedMore {
	if s.more == nil {
		s.more = &schedMore{}
	}
	return s.more
}

// trim drops s.more once the state is idle (nothing running, nothing
// pending) and nothing in it is needed: no token reserved or spent, no
// retry and no periodic timer (what else it holds is then zero or
// unread). A pending state keeps it until then: not reading it on every
// event that joins a pending run keeps that path to the state itself.
// Must be called with the handler's mu held.
func (s *sched) trim() {
	if m := s.more; m != nil && !s.running && s.phase == noPending &&
		m.resv == nil && m.spent == nil && m.retry == nil && m.periodic == nil {
		s.more = nil
	}
}

// user is whose runs these are: the event user of a wildcard handler's
// state, the handler's user for an exact handler's.
func (s *sched) user() string {
	if s.u != nil {
		return s.u.user
	}
	return s.h.user
}

// newHandler makes the handler of cfg, at index i of the list; it keeps
// no pointer to cfg.
func newHandler(x *Exec, i int, cfg *config.Handler) *handler {
	h := &handler{
		x:      x,
		spec:   x.share(cfg),
		user:   cfg.User,
		index:  i,
		number: cfg.Number,
		line:   cfg.Line,
	}
	if cfg.Pattern {
		h.users = make(map[string]*sched)
		if cfg.Dynamic {
			h.unmatched = logging.NewLimiter(unmatchedEvery, 1, x.clock)
		}
	} else {
		h.one = &sched{h: h}
	}
	return h
}

// handlerLog names a handler in logs: its number in the file (its index
// in the current list when it has none), the line of its [[handler]]
// header when known, its user (for a wildcard handler, its pattern: the
// user of each line is the event's) and event.
func handlerLog(log *slog.Logger, index, number, line int, user string, cfg *config.Handler) *slog.Logger {
	key := "user"
	if cfg.Pattern {
		key = "pattern"
	}
	if line > 0 {
		return log.With("handler", label(index, number), "line", line, key, user, "event", cfg.Event)
	}
	return log.With("handler", label(index, number), key, user, "event", cfg.Event)
}

// logger is h's logger, made on first use: with 10,000 handlers their
// loggers were a fifth of the exec process's heap, for lines most never
// write. Must be called with mu held.
func (h *handler) logger() *slog.Logger {
	if h.lg == nil {
		h.lg = handlerLog(h.x.log, h.index, h.number, h.line, h.user, &h.cfg)
	}
	return h.lg
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
	h.lg = nil
	for _, s := range h.users {
		s.u.lg = nil
	}
}

// userLog is h's logger for a line about user. Must be called with mu
// held.
func (h *handler) userLog(user string) *slog.Logger {
	if h.cfg.Pattern {
		return h.logger().With("user", user)
	}
	return h.logger()
}

// log is the state's logger: its handler's, with the user for a wildcard
// handler's state (made once, when first needed). Must be called with
// the handler's mu held.
func (s *sched) log() *slog.Logger {
	u := s.u
	if u == nil {
		return s.h.logger()
	}
	if u.lg == nil {
		u.lg = s.h.logger().With("user", u.user)
	}
	return u.lg
}

// debugOn reports whether the handler logs at debug level.
func (s *sched) debugOn() bool {
	return s.h.x.log.Enabled(context.Background(), slog.LevelDebug)
}

// debug logs at debug level, making no per-user logger when that level
// is off.
func (s *sched) debug(msg string, args ...any) {
	if s.debugOn() {
		s.log().Debug(msg, args...)
	}
}

// matches reports whether ev is for this handler: its user (exactly, or
// by the handler's glob, config.MatchUser), its event and, when the
// handler has an ip list, the peer. The peer is compared by
// internal/prefix, as the network process compares it: IPv4-mapped peers
// as IPv4, and a link-local peer with a zone by its address.
func (h *handler) matches(ev *event.Event, remote netip.AddrPort) bool {
	if ev.Event != h.cfg.Event {
		return false
	}
	if h.cfg.Pattern {
		if !config.MatchUser(h.user, ev.User) {
			return false
		}
	} else if ev.User != h.user {
		return false
	}
	if len(h.ip) == 0 {
		return true
	}
	return prefix.Contains(h.ip, remote.Addr())
}

// forAccount reports whether a run for user, which the handler's user
// matches, belongs in this process: always, unless the handler is
// Dynamic, whose run_as must then name this process's account for user
// (config.ExpandRunAs). It returns the account run_as names.
func (h *handler) forAccount(user string) (string, bool) {
	if !h.cfg.Dynamic {
		return h.cfg.Account.Name, true
	}
	name, err := config.ExpandRunAs(h.cfg.RunAs, user)
	return name, err == nil && name == h.cfg.Account.Name
}

// state returns the state of user's runs for new work, making it for a
// wildcard handler when user has none, and stopping the refill timer of
// an idle one. Must be called with mu held and the handler not stopped.
func (h *handler) state(user string) *sched {
	if h.one != nil {
		return h.one
	}
	s := h.users[user]
	if s == nil {
		// A copy: a user cut from a larger string must not keep it
		// alive.
		u := &userSched{user: strings.Clone(user)}
		u.sched = sched{h: h, u: u}
		s = &u.sched
		h.users[u.user] = s
		h.x.setBusy(&s.busy, true)
		return s
	}
	if s.refill {
		s.stopWait()
	}
	return s
}

// settle is called after every change to s, with mu held: it keeps
// Exec's idle count, and frees a wildcard handler's state once nothing is
// pending or running and its token bucket is full again, arming a timer
// for the refill when it is not yet (a stopped handler's state is freed
// at once).
func (h *handler) settle(s *sched) {
	s.trim()
	if h.one == s {
		h.x.setBusy(&s.busy, s.running || s.phase != noPending)
		return
	}
	if s.running || s.phase != noPending {
		h.x.setBusy(&s.busy, true)
		return
	}
	if s.refill {
		// Kept for its rate limit only: nothing to do, not busy.
		h.x.setBusy(&s.busy, false)
		return
	}
	if !h.stopped {
		if d := s.refillIn(h.x.clock.Now()); d > 0 {
			s.armWait(d, (*sched).refilled)
			s.refill = true
			h.x.setBusy(&s.busy, false)
			return
		}
	}
	s.stopWait()
	if h.users[s.u.user] == s {
		delete(h.users, s.u.user)
	}
	h.x.setBusy(&s.busy, false)
}

// refillIn is how long s's token bucket takes to be full again.
func (s *sched) refillIn(now time.Time) time.Duration {
	h := s.h
	if h.limit() == rate.Inf {
		return 0
	}
	if s.lim == nil {
		return 0 // full: no token taken yet
	}
	missing := float64(h.burst()) - s.lim.TokensAt(now)
	// A millionth of a token is rounding, not a token spent.
	if missing <= 1e-6 {
		return 0
	}
	return time.Duration(math.Ceil(missing * float64(h.cfg.LimitPeriod)))
}

// refilled is the refill timer's callback: settle, which follows every
// callback, frees the state.
func (s *sched) refilled() {}

func (h *handler) start() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s := h.one; s != nil && !h.stopped && !s.running && (s.more == nil || s.more.periodic == nil) {
		s.armPeriodic()
	}
}

// deliver hands ev, which matches, to the state of its user.
func (h *handler) deliver(ev event.Event, remote netip.AddrPort) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped {
		h.userLog(ev.User).Warn("event after shutdown dropped", "remote", remote.String())
		return
	}
	s := h.state(ev.User)
	s.deliver(ev, remote)
	h.settle(s)
}

func (s *sched) deliver(ev event.Event, remote netip.AddrPort) {
	if s.phase == waitRetry {
		// A new event starts a normal run, which covers the retry.
		s.dropRetry(TriggerEvent)
	}
	if s.phase == noPending {
		s.count = 0
	}
	prev := s.trigger
	// An event turns a pending recovery, manual or start run into an
	// event run: it runs as scheduled, with the event's fields.
	s.trigger = TriggerEvent
	s.count++
	s.last = ev
	s.remote = remote
	switch {
	case s.phase == noPending:
		s.schedule("event")
	case !s.debugOn():
		// The hot path under load: nothing logged, nothing boxed.
	case prev != TriggerEvent:
		s.log().Debug("event turns the pending " + prev + " run into an event run")
	default:
		s.log().Debug("event coalesced into pending run", "count", s.count)
	}
}

// schedule starts the way of a new pending run (what, its trigger, is
// logged):
// after the running command, after the delay, or through the limiter.
// Must be called with mu held and no run pending.
func (s *sched) schedule(what string) {
	switch {
	case s.running:
		// Not idle: no new delay, the run after this one goes through
		// the limiter when the command ends.
		s.phase = waitRun
		s.debug("run pending until the running command ends", "trigger", what)
	case s.h.cfg.Delay > 0:
		// A burst starts; later events do not extend the delay.
		s.phase = waitDelay
		s.armWait(s.h.cfg.Delay, (*sched).delayDone)
		s.debug("burst started, run delayed", "trigger", what, "delay", s.h.cfg.Delay.String())
	default:
		s.acquire()
	}
}

// recover schedules a recovery run of the handler: of its one state, or
// of every state of a wildcard handler and of each of users that it
// matches and that belongs in this process (forAccount).
func (h *handler) recover(users []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped {
		h.logger().Warn("recovery after shutdown dropped")
		return
	}
	if h.one != nil {
		h.one.recover()
		h.settle(h.one)
		return
	}
	for _, s := range h.users {
		if s.refill {
			s.stopWait()
		}
		s.recover()
		h.settle(s)
	}
	for _, u := range users {
		if !config.MatchUser(h.user, u) {
			continue
		}
		if _, ok := h.forAccount(u); !ok {
			continue
		}
		s := h.state(u)
		s.recover()
		h.settle(s)
	}
}

// recover schedules a recovery run unless a run is pending already, which
// covers it: the pending run, a retry waiting for its back-off included,
// starts after the recovery was asked for.
func (s *sched) recover() {
	if s.phase != noPending {
		s.debug("recovery coalesced into pending run", "trigger", s.trigger, "count", s.count)
		return
	}
	s.trigger = TriggerRecovery
	s.count = 0
	s.last = event.Event{}
	s.remote = netip.AddrPort{}
	s.free = false
	s.schedule("recovery")
}

// request asks for a manual or start run (trigger) of user's state.
func (h *handler) request(user, trigger string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped {
		h.userLog(user).Warn(trigger+" run after shutdown dropped", "trigger", trigger)
		return
	}
	s := h.state(user)
	s.request(trigger)
	h.settle(s)
}

// request asks for a manual or start run (trigger): through the delay
// like an event, but needing and spending no token. It merges into a
// pending run, which then needs no token either (one waiting for its
// token starts at once, and gives the token back); a running command
// covers it, as the operator asked for a run and one is running; a retry
// waiting for its back-off is dropped for it, as for an event.
func (s *sched) request(trigger string) {
	s.log().Info("run requested", "trigger", trigger)
	if s.phase == waitRetry {
		s.dropRetry(trigger)
	}
	switch {
	case s.phase != noPending:
		s.free = true
		if triggerRank(trigger) > triggerRank(s.trigger) {
			s.trigger = trigger
		}
		s.debug(trigger+" run merged into pending run", "pending", s.trigger, "count", s.count)
		if s.phase == waitToken {
			s.stopWait()
			s.more.resv.CancelAt(s.h.x.clock.Now())
			s.more.resv = nil
			if s.running { // a periodic run started while waiting for the token
				s.phase = waitRun
				return
			}
			s.startPending()
		}
	case s.running:
		s.debug(trigger + " run covered by the running command")
	default:
		s.trigger = trigger
		s.count = 0
		s.last = event.Event{}
		s.remote = netip.AddrPort{}
		s.free = true
		s.schedule(trigger)
	}
}

// dropRetry ends the back-off of a failed run: a new run (by, its
// trigger) covers the retry, and counts as a first attempt. Must be
// called with mu held in waitRetry.
func (s *sched) dropRetry(by string) {
	s.debug("pending retry dropped: a new run covers it", "by", by, "attempt", s.more.retry.Attempt)
	s.stopWait()
	s.phase = noPending
	s.trigger = ""
	s.more.retry = nil
}

// acquire takes a token for the pending run and starts it, or arms
// a timer for when the token is due. Over the limit a run is deferred,
// never dropped. Must be called with mu held and no command running.
func (s *sched) acquire() {
	if s.free {
		s.startPending()
		return
	}
	now := s.h.x.clock.Now()
	if s.lim == nil {
		s.lim = rate.NewLimiter(s.h.limit(), s.h.burst())
	}
	r := s.lim.ReserveN(now, 1)
	if !r.OK() {
		// Cannot happen with burst >= 1; running is better than losing
		// the event.
		s.log().Error("rate limiter refused a reservation, running anyway")
		s.startPending()
		return
	}
	d := r.DelayFrom(now)
	m := s.extra()
	m.resv, m.resvAt = r, now.Add(d)
	if d <= 0 {
		s.startPending()
		return
	}
	s.phase = waitToken
	s.armWait(d, (*sched).tokenDue)
	s.log().Info("run deferred by rate limit", "wait", d.String(), "trigger", s.trigger, "count", s.count)
}

func (s *sched) delayDone() {
	if s.phase != waitDelay {
		return
	}
	if s.running { // a periodic run started during the delay
		s.phase = waitRun
		return
	}
	s.acquire()
}

// retryDue starts the retry of a failed run. Nothing runs in waitRetry:
// every launch ends it.
func (s *sched) retryDue() {
	if s.phase != waitRetry {
		return
	}
	j := *s.more.retry
	s.more.retry = nil
	s.phase = noPending
	s.trigger = ""
	j.Index, j.Number = s.h.index, s.h.number
	s.launch(j)
}

func (s *sched) tokenDue() {
	if s.phase != waitToken {
		return
	}
	if s.running { // a periodic run started while waiting for the token
		s.phase = waitRunToken
		return
	}
	s.startPending()
}

func (s *sched) periodicDue(gen uint64) {
	h := s.h
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped || gen != s.periodicGen {
		return
	}
	s.more.periodic = nil
	s.more.periodicAt = time.Time{}
	if s.running {
		// Not stacked: the periodic clock restarts when the run ends.
		return
	}
	// Periodic runs neither wait for nor spend tokens, and leave a
	// pending event run where it is; a retry waiting for its back-off
	// is covered by them (launch drops it).
	s.launch(Job{
		Handler: &h.cfg,
		Index:   h.index,
		Number:  h.number,
		Trigger: TriggerPeriodic,
		Attempt: 1,
		Env:     periodicEnv(h.base, s.user(), h.cfg.Event),
	})
	h.settle(s)
}

// startPending starts the pending run: an event, recovery, manual or
// start run. Must be called with mu held.
func (s *sched) startPending() {
	h := s.h
	j := Job{
		Handler: &h.cfg,
		Index:   h.index,
		Number:  h.number,
		Trigger: s.trigger,
		Attempt: 1,
	}
	switch s.trigger {
	case TriggerEvent:
		j.Count = s.count
		j.Env = eventEnv(h.base, &s.last, s.count, s.remote)
	case TriggerManual, TriggerStart:
		j.Env = requestEnv(h.base, s.user(), h.cfg.Event, s.trigger)
	default:
		j.Trigger = TriggerRecovery
		j.Env = recoveryEnv(h.base, s.user(), h.cfg.Event)
	}
	if m := s.more; m != nil {
		if h.hook && !s.free && m.resv != nil {
			m.spent, m.spentAt = m.resv, m.resvAt
		}
		m.resv = nil
		m.resvAt = time.Time{}
	}
	s.phase = noPending
	s.trigger = ""
	s.count = 0
	s.last = event.Event{}
	s.remote = netip.AddrPort{}
	s.free = false
	s.launch(j)
}

// launch runs j in its own goroutine. Must be called with mu held.
func (s *sched) launch(j Job) {
	h := s.h
	if s.running || h.stopped {
		// The state machine never gets here; asserting it keeps a bug
		// from running two copies of a command.
		panic("exec: launch while running or stopped")
	}
	if s.phase == waitRetry {
		s.dropRetry(j.Trigger) // a periodic run covers the retry
	}
	s.running = true
	hook := h.hook
	if !hook {
		// A program in the home counts once it is found (found).
		s.counted()
	}
	m := s.extra()
	m.since = h.x.clock.Now()
	m.pid = 0
	// The periodic clock counts from the end of the last run.
	s.stopPeriodic()
	j.User = s.user()
	j.Started = s.started
	h.x.wg.Add(1)
	h.x.running.Add(1)
	go s.run(j, hook)
}

// run is the goroutine of one launched run: it finds the program first
// when it is in the account's home, runs it, and moves the state on.
func (s *sched) run(j Job, hook bool) {
	x := s.h.x
	defer x.wg.Done()
	if hook {
		// cfg.Path is "~/rel" (handler.hook): rel is looked up.
		cfg := &s.h.cfg
		rel, _ := config.HomeRelative(cfg.Path)
		path, err := lookupHook(cfg.Account.Home, cfg.Account.UID, rel)
		if err != nil {
			x.running.Add(-1)
			s.skipped(&j, err)
			if x.ended != nil {
				x.ended(j.Index)
			}
			return
		}
		j.Path = path
		s.found()
	}
	// At most MaxRunning commands of this process at once: a wildcard
	// handler has one run at a time per user, but a mail to ten thousand
	// users must not make ten thousand processes at once. A run waits for
	// a slot here, with no lock held, and counts as running meanwhile.
	var res Result
	select {
	case x.slots <- struct{}{}:
		res = x.runner.Run(x.ctx, j)
		<-x.slots
	case <-x.ctx.Done():
		res = Result{Start: x.clock.Now(), ExitStatus: -1, Err: errors.New("not started: shutting down")}
	}
	x.running.Add(-1)
	s.runEnded(&j, res)
	if x.ended != nil {
		x.ended(j.Index)
	}
}

// found counts a run whose program in the home was found: it is
// launched.
func (s *sched) found() {
	h := s.h
	h.mu.Lock()
	defer h.mu.Unlock()
	s.counted()
	s.more.spent = nil
}

// counted counts a launched run, in the handler and, for a wildcard
// handler's state, in the state. Must be called with mu held.
func (s *sched) counted() {
	s.h.runs++
	if s.u != nil {
		s.u.runs++
	}
}

// skipped moves on after a run whose program in the home is missing or
// refused (err, from lookupHook): nothing ran, so nothing is counted,
// recorded or retried, and the events the run covered are done. A
// missing hook is no mistake (users opt in by creating it): a debug line,
// and the token the run took is given back, so that a user without a hook
// is not held to the rate limit and its state is freed at once. A refused
// one is logged at warn and keeps its token, which bounds those lines by
// the handler's limit.
func (s *sched) skipped(j *Job, err error) {
	h := s.h
	h.mu.Lock()
	defer h.mu.Unlock()
	m := s.more // made by launch, kept while running
	var refused *hookRefused
	if errors.As(err, &refused) {
		s.log().Warn("hook refused, nothing runs", "path", refused.Path, "reason", refused.Reason,
			"program", h.cfg.Path, "trigger", j.Trigger)
	} else {
		s.debug("no hook, nothing runs", "program", h.cfg.Path, "err", err.Error(), "trigger", j.Trigger)
		if m.spent != nil {
			// At its own due time, when nothing else has reserved since:
			// the bucket is as if the token had never been taken.
			m.spent.CancelAt(m.spentAt)
		}
	}
	m.spent = nil
	s.running = false
	m.since = time.Time{}
	m.pid = 0
	if !h.stopped {
		s.armPeriodic()
		switch s.phase {
		case waitRun:
			s.acquire()
		case waitRunToken:
			s.startPending()
		}
	}
	h.settle(s)
}

// started records the pid of the running command, as the runner reports
// it. Runs of a state never overlap, so it is the running one's.
func (s *sched) started(pid int) {
	h := s.h
	h.mu.Lock()
	defer h.mu.Unlock()
	if s.running {
		s.more.pid = pid
	}
}

// runEnded moves on after a run: its outcome is recorded, the periodic
// clock restarts, and a pending run goes through the limiter (or starts,
// its token due or not needed). A failed run with no run pending to cover
// it is retried when the handler has retries left.
func (s *sched) runEnded(j *Job, res Result) {
	h := s.h
	h.mu.Lock()
	defer h.mu.Unlock()
	defer h.settle(s)
	end := h.x.clock.Now()
	failed := res.Failed()
	m := s.more // made by launch, kept while running
	info := &RunInfo{Start: m.since, Duration: end.Sub(m.since), Signal: res.Signal, Trigger: j.Trigger}
	if res.Err == nil && res.Signal == "" {
		st := res.ExitStatus
		info.ExitStatus = &st
	}
	h.lastRun = info
	if failed {
		h.failures++
	}
	if u := s.u; u != nil {
		u.lastRun = info
		if failed {
			u.failures++
		}
	}
	s.running = false
	m.since = time.Time{}
	m.pid = 0
	if h.stopped {
		return
	}
	s.armPeriodic()
	switch s.phase {
	case waitRun:
		s.acquire()
	case waitRunToken:
		s.startPending()
	case noPending:
		if failed {
			s.retryFailed(j)
		}
		return
	}
	if failed && h.cfg.Retries > 0 {
		s.debug("run failed; the pending run covers its retry", "attempt", j.Attempt)
	}
}

// retryFailed schedules the retry of the failed run j, or says that
// there is none left. Must be called with mu held and nothing pending or
// running.
func (s *sched) retryFailed(j *Job) {
	cfg := &s.h.cfg
	if cfg.Retries <= 0 {
		return
	}
	attempt := max(j.Attempt, 1)
	if attempt > cfg.Retries {
		s.log().Warn("run failed, retries exhausted", "attempts", attempt, "retries", cfg.Retries, "trigger", j.Trigger)
		return
	}
	d := retryBackoff(cfg.RetryBackoff, attempt)
	next := attempt + 1
	s.extra().retry = &Job{Handler: cfg, Trigger: TriggerRetry, Count: j.Count, Attempt: next, Env: retryEnv(j.Env, next)}
	s.phase = waitRetry
	s.trigger = TriggerRetry
	s.armWait(d, (*sched).retryDue)
	s.log().Info("run failed, retrying", "attempt", next, "retries", cfg.Retries, "after", d.String(),
		"due", s.due.Format(time.RFC3339), "trigger", j.Trigger)
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

// maxDroppedLines is how many users' dropped runs a wildcard handler
// logs one by one when it stops; the rest are counted in one line.
const maxDroppedLines = 10

// stop ends all scheduling, logs each pending run that will not happen
// (why: "shutdown" or "reload"), and frees the states of a wildcard
// handler that run nothing. Running commands are left to finish.
func (h *handler) stop(why string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stopped = true
	if h.one != nil {
		h.one.stop(why, true)
		h.settle(h.one)
		return
	}
	dropped := 0
	for _, s := range h.users {
		if s.stop(why, dropped < maxDroppedLines) {
			dropped++
		}
		h.settle(s)
	}
	if dropped > maxDroppedLines {
		h.logger().Warn("pending runs dropped at "+why, "users", dropped-maxDroppedLines, "more", true)
	}
}

// stop ends the state's scheduling and reports whether a run was
// pending, which it logs when logIt is set.
func (s *sched) stop(why string, logIt bool) bool {
	s.stopWait()
	s.stopPeriodic()
	if s.phase == noPending {
		return false
	}
	if logIt {
		if s.phase == waitRetry {
			s.log().Warn("pending run dropped at "+why, "trigger", s.trigger, "attempt", s.more.retry.Attempt)
		} else {
			s.log().Warn("pending run dropped at "+why, "trigger", s.trigger, "count", s.count, "remote", s.remote.String())
		}
	}
	s.phase = noPending
	s.count = 0
	s.trigger = ""
	s.free = false
	if m := s.more; m != nil {
		m.resv = nil
		m.retry = nil
	}
	s.last = event.Event{}
	return true
}

// armWait arms the wait timer: f runs after d, with mu held, unless the
// timer was stopped or rearmed since, or the handler stopped; settle
// follows it.
func (s *sched) armWait(d time.Duration, f func(*sched)) {
	s.stopWait()
	s.due = s.h.x.clock.Now().Add(d)
	s.h.x.waits.add(s, s.waitGen, s.due, f)
}

func (s *sched) waitDue(gen uint64, f func(*sched)) {
	h := s.h
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped || gen != s.waitGen {
		return
	}
	s.due = time.Time{}
	s.refill = false
	f(s)
	h.settle(s)
}

func (s *sched) stopWait() {
	s.waitGen++
	s.due = time.Time{}
	s.refill = false
	s.h.x.waits.remove(s)
}

func (s *sched) armPeriodic() {
	s.stopPeriodic()
	if s.h.cfg.Periodic <= 0 || s.h.one != s {
		return // config refuses periodic on a wildcard handler
	}
	gen := s.periodicGen
	m := s.extra()
	m.periodicAt = s.h.x.clock.Now().Add(s.h.cfg.Periodic)
	m.periodic = s.h.x.clock.AfterFunc(s.h.cfg.Periodic, func() { s.periodicDue(gen) })
}

func (s *sched) stopPeriodic() {
	s.periodicGen++
	m := s.more
	if m == nil {
		return
	}
	m.periodicAt = time.Time{}
	if m.periodic != nil {
		m.periodic.Stop()
		m.periodic = nil
	}
}
