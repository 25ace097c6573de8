package daemon

// Exec processes on demand (spec §5): the accounts of wildcard handlers
// whose run_as has %-variables are not known before their users' mail
// arrives. The network process asks for the exec process of such an
// account (msgExecWant) and queues the events meanwhile; the parent
// checks the account against the handler's rules itself, starts the
// process within [privsep] max_exec, and stops it after exec_idle with
// nothing to do: it tells the network process to send nothing more
// (msgExecRetire), then the process to finish what it has and exit once
// its channel has ended (msgDrain). One being stopped counts until it
// has exited, and the next one for its account starts only then, so two
// never run the same account's handlers at once.

import (
	"fmt"
	"time"

	"github.com/imserious/imserious/config"
	"github.com/imserious/imserious/privsep"
)

const (
	// dynTargetBase numbers the exec processes started on demand, above
	// every target of a configuration's accounts.
	dynTargetBase = 1 << 24
	// maxRefusalLines bounds the warn lines about refused accounts per
	// minute, all accounts together (the names come from mail senders).
	maxRefusalLines = 100
)

// want handles the network process's request for the exec process of an
// account.
//
// Security: the request comes from the least trusted process. Whatever it
// says, an exec process is started only for an account that a wildcard
// handler of the configuration in force gives for the user named, that
// exists and passes that handler's rules (config.DynamicAccount): a
// compromised network process can at most start exec processes the
// configuration already allows.
func (s *supervisor) want(w wireExecWant) {
	if _, ok := s.execs[w.Account]; ok {
		if x := s.execs[w.Account]; x != nil && x.stopping {
			s.queueWant(w.Account) // started again once it has exited
		}
		// Otherwise it exists or is being restarted: the network process
		// gets or has its channel.
		return
	}
	acct, err := s.allowed(w)
	if err != nil {
		s.refuse(w, err)
		return
	}
	s.dynAccts[w.Account] = acct
	if _, ok := s.dynTarget[w.Account]; !ok {
		s.dynTarget[w.Account] = s.nextDyn
		s.nextDyn++
	}
	s.queueWant(w.Account)
	s.serveWants()
}

// allowed checks a want against the configuration in force: the handler
// it names, or any other wildcard handler that gives the same account for
// the user.
func (s *supervisor) allowed(w wireExecWant) (privsep.Account, error) {
	var first error
	try := func(h *config.Handler) (privsep.Account, bool) {
		a, err := s.cfg.DynamicAccount(h, w.User)
		if err == nil && a.Name != w.Account {
			err = fmt.Errorf("handler[%d] gives account %q for user %q, not %q", h.Number, a.Name, w.User, w.Account)
		}
		if err != nil {
			if first == nil {
				first = err
			}
			return a, false
		}
		return a, true
	}
	if n := w.Handler; n >= 1 && n <= len(s.cfg.Handlers) && s.cfg.Handlers[n-1].Number == n && s.cfg.Handlers[n-1].Dynamic {
		if a, ok := try(&s.cfg.Handlers[n-1]); ok {
			return a, nil
		}
	}
	for i := range s.cfg.Handlers {
		h := &s.cfg.Handlers[i]
		if h.Dynamic && h.Number != w.Handler && config.MatchUser(h.User, w.User) {
			if a, ok := try(h); ok {
				return a, nil
			}
		}
	}
	if first == nil {
		first = fmt.Errorf("no wildcard run_as handler is written for user %q", w.User)
	}
	return privsep.Account{}, first
}

// refuse tells the network process to drop what waits for the account,
// and says why in a warn line, at most one per account per minute.
func (s *supervisor) refuse(w wireExecWant, why error) {
	if ok, suppressed := s.refusals.Allow(w.Account); ok {
		attrs := []any{"account", w.Account, "user", w.User, "handler", w.Handler, "reason", why.Error()}
		// The network process drops the account's events for a minute
		// without asking again, and says how many with the next ask.
		if n := suppressed + min(w.Dropped, 1<<30); n > 0 {
			attrs = append(attrs, "suppressed", n)
		}
		s.log.Warn("event runs nothing: its account may not have an exec process", attrs...)
	}
	if s.net == nil {
		return
	}
	m, err := jsonMsg(msgExecRefused, wireExecAccount{Account: w.Account})
	if err == nil {
		err = s.send(s.net, m)
	}
	if err != nil {
		s.kill(s.net, err.Error())
	}
}

func (s *supervisor) queueWant(account string) {
	for _, a := range s.wantQ {
		if a == account {
			return
		}
	}
	s.wantQ = append(s.wantQ, account)
}

// serveWants starts the exec processes waited for while there is room;
// at the cap it stops the longest-idle one to make room for the first.
func (s *supervisor) serveWants() {
	if s.stopping {
		return
	}
	for len(s.wantQ) > 0 {
		account := s.wantQ[0]
		if x, ok := s.execs[account]; ok {
			if x != nil && !x.stopping {
				s.wantQ = s.wantQ[1:] // started meanwhile
				continue
			}
			if x != nil {
				// Its predecessor is still finishing: wait for its exit,
				// but let the others through.
				if !s.serveOthers() {
					return
				}
				continue
			}
		}
		if s.dynLive >= s.cfg.Privsep.MaxExec {
			s.makeRoom()
			return
		}
		s.wantQ = s.wantQ[1:]
		if _, ok := s.dynAccts[account]; !ok {
			continue // refused or removed by a reload meanwhile
		}
		if err := s.startExec(account); err != nil {
			s.log.Error("cannot start exec process", "account", account, "err", err)
			delete(s.execs, account)
			delete(s.dynAccts, account)
		}
	}
}

// serveOthers moves the head of wantQ, which waits for an exit, to the
// back, and reports whether another account may be served meanwhile.
func (s *supervisor) serveOthers() bool {
	for i, a := range s.wantQ {
		if x, ok := s.execs[a]; !ok || x == nil || !x.stopping {
			s.wantQ[0], s.wantQ[i] = s.wantQ[i], s.wantQ[0]
			return true
		}
	}
	return false
}

// makeRoom stops the on-demand exec process idle the longest, if any:
// its exit serves the next account waiting.
func (s *supervisor) makeRoom() {
	var oldest *proc
	for _, x := range s.execs {
		if x == nil || !x.onDemand || x.stopping || x.idleSince.IsZero() || !x.worked {
			continue
		}
		if oldest == nil || x.idleSince.Before(oldest.idleSince) {
			oldest = x
		}
	}
	if oldest == nil {
		// Every place is busy: the events wait in the network process,
		// merged per user, until one is idle.
		s.log.Debug("max_exec exec processes are busy; accounts wait", "max_exec", s.cfg.Privsep.MaxExec, "waiting", len(s.wantQ))
		return
	}
	s.log.Info("stopping the longest-idle exec process to make room", "child", oldest.name, "max_exec", s.cfg.Privsep.MaxExec)
	s.drain(oldest)
}

// onDemandStream is the configuration stream of an on-demand exec
// process of the generation in force.
func (s *supervisor) onDemandStream(a privsep.Account) ([]outMsg, error) {
	items, err := execItems(s.cfg, s.p.LogOpt, a, s.p.Root)
	if err != nil {
		return nil, fmt.Errorf("exec[%s]: %w", a.Name, err)
	}
	g, err := jsonMsg(msgExecGlobal, wireExecGlobal{Log: s.p.LogOpt, Account: toWireAccount(a), Drop: s.p.Root, OnDemand: true})
	if err != nil {
		return nil, err
	}
	items[0] = g
	return bracket(s.gen, items)
}

// idleReport notes what an on-demand exec process says of itself, and
// arms the check at exec_idle.
func (s *supervisor) idleReport(pr *proc, idle bool) {
	if !pr.onDemand || !s.current(pr) {
		return
	}
	if !idle {
		pr.idleSince, pr.worked = time.Time{}, true
		return
	}
	pr.idleSince = time.Now()
	if len(s.wantQ) > 0 && s.dynLive >= s.cfg.Privsep.MaxExec {
		// Accounts wait for a place: this one is the first idle.
		s.serveWants()
		return
	}
	// One timer per process, moved on by each idle report: a busy one
	// reports at every run.
	if pr.idleTimer == nil {
		pr.idleTimer = time.AfterFunc(s.cfg.Privsep.ExecIdle, func() { s.post(procEvent{pr: pr, idleCheck: true}) })
	} else {
		pr.idleTimer.Reset(s.cfg.Privsep.ExecIdle)
	}
}

// idleCheck stops an on-demand exec process idle for exec_idle.
func (s *supervisor) idleCheck(pr *proc) {
	if !s.current(pr) || pr.stopping || pr.idleSince.IsZero() {
		return
	}
	if time.Since(pr.idleSince) < s.cfg.Privsep.ExecIdle {
		return // busy since, and idle again: a later check comes
	}
	s.log.Debug("stopping an idle exec process", "child", pr.name, "exec_idle", s.cfg.Privsep.ExecIdle.String())
	s.drain(pr)
}

// drain stops an on-demand exec process without losing an event: the
// network process sends it nothing more from the retire on (what comes
// for the account waits for the next one), and it exits once it has read
// everything and run what that asked for.
func (s *supervisor) drain(pr *proc) {
	pr.stopping = true
	if s.net != nil {
		m, err := jsonMsg(msgExecRetire, wireExecRetire{Target: pr.target})
		if err == nil {
			err = s.send(s.net, m)
		}
		if err != nil {
			s.kill(s.net, err.Error())
		}
	}
	if err := s.send(pr, outMsg{typ: msgDrain}); err != nil {
		s.kill(pr, err.Error())
	}
}

// reloadOnDemand applies a new configuration to the on-demand exec
// processes: one whose account a wildcard handler still allows gets the
// new stream; the others (and one whose account is now the configuration's
// own) are drained.
func (s *supervisor) reloadOnDemand(static map[string]privsep.Account) {
	for name, x := range s.execs {
		a, dyn := s.dynAccts[name]
		if !dyn || x == nil || x.stopping {
			continue
		}
		keep := false
		if _, ok := static[name]; !ok {
			for i := range s.cfg.Handlers {
				if h := &s.cfg.Handlers[i]; h.Dynamic && dynamicAllows(s.cfg, h, a) {
					keep = true
					break
				}
			}
		}
		if !keep {
			s.drain(x)
			// A static account's own process starts now; its events
			// are routed to that one from the reload on.
			delete(s.execs, name)
			delete(s.dynAccts, name)
			continue
		}
		st, err := s.onDemandStream(a)
		if err == nil {
			err = s.send(x, st...)
		}
		if err != nil {
			s.kill(x, err.Error())
		}
	}
}
