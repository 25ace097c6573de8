package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	"github.com/imserious/imserious/config"
	"github.com/imserious/imserious/event"
	"github.com/imserious/imserious/exec"
	"github.com/imserious/imserious/logging"
	"github.com/imserious/imserious/privsep"
)

// execProc is the exec process of one account.
type execProc struct {
	name string
	ctl  *privsep.Conn
	log  *slog.Logger
	x    *exec.Exec
	// unmatched limits the warn lines about events no handler takes: a
	// compromised network process could send any number of them.
	unmatched *logging.Limiter
	// netOpen counts the channels from network processes being read;
	// settle is kicked when one ends or the process goes idle, for a
	// drain to check whether it is done.
	netOpen atomic.Int32
	settle  chan struct{}
	// onDemand: started for an account of a wildcard run_as, it reports
	// to the parent when it is idle.
	onDemand bool
}

func (e *execProc) kick() {
	select {
	case e.settle <- struct{}{}:
	default:
	}
}

// RunExec is the exec process of one account: it drops to the account,
// then schedules and runs the handlers' commands for the events the
// network process sends. It returns nil after a shutdown the parent asked
// for.
func RunExec(ctl *privsep.Conn, name string, stdout io.Writer) error {
	proc := "exec[" + name + "]"
	out := logging.NewQueued(stdout) // a run's lines wait for no write
	defer out.Flush()
	e := &execProc{name: name, ctl: ctl, log: slog.New(slog.DiscardHandler),
		unmatched: logging.NewLimiter(time.Minute, 1, nil), settle: make(chan struct{}, 1)}
	var (
		st       stream
		pending  *execConfig
		global   *wireExecGlobal // of the configuration in force
		first    []config.Handler
		early    []*privsep.Conn // net channels received before msgStart
		draining bool
	)
	defer func() {
		for _, c := range early {
			c.Close()
		}
	}()
	stop := func(grace time.Duration) {
		if e.x != nil {
			e.x.Shutdown(grace)
		}
	}
	recv, recvErr := receive(ctl)
	for {
		var m privsep.Msg
		select {
		case err := <-recvErr:
			// The parent is gone: what runs must not outlive the daemon.
			stop(time.Second)
			return fmt.Errorf("%s: control channel: %w", proc, err)
		case <-e.settle:
			// A drain ends once no network process can send more and
			// everything it sent has run.
			if draining && e.netOpen.Load() == 0 && e.x.Idle() {
				stop(0)
				e.log.Debug("drained, stopped")
				return nil
			}
			continue
		case m = <-recv:
		}
		var err error
		if err := checkMsg(parentToExec, m); err != nil {
			stop(time.Second)
			return fmt.Errorf("%s: %w", proc, err)
		}
		switch m.Type {
		case msgCfgBegin:
			if err = st.begin(m); err == nil {
				pending = &execConfig{}
			}
		case msgExecGlobal, msgExecHandler:
			if err = st.item(m); err == nil {
				err = pending.add(m)
			}
		case msgCfgEnd:
			if err = st.end(m); err != nil {
				break
			}
			var hs []config.Handler
			if hs, err = pending.build(name); err != nil {
				break
			}
			if global == nil {
				global, first = pending.global, hs
				e.log = newLogger(out, global.Log, proc)
			} else {
				// Security: the account and the drop are fixed for the
				// life of the process; the parent starts another for a
				// changed account.
				if !sameAccount(global, pending.global) {
					err = fmt.Errorf("a reload cannot change the account: %w", errProtocol)
					break
				}
				if e.x == nil {
					first = hs
				} else {
					e.x.Update(hs) // logs what it changed
				}
			}
			pending = nil
			if e.x != nil {
				releaseMemory(len(hs))
				err = sendReady(ctl, st.last)
			}
		case msgNetChannel:
			var c *privsep.Conn
			if err = noPayload(m); err != nil {
				closeFiles(m)
				break
			}
			if c, err = privsep.NewConn(m.Files[0]); err != nil {
				break
			}
			if e.x == nil {
				early = append(early, c)
			} else {
				e.serveNet(c)
			}
		case msgStart:
			if e.x != nil || global == nil {
				err = fmt.Errorf("unexpected %s: %w", msgName(m.Type), errProtocol)
				break
			}
			if err = e.start(global, first); err != nil {
				break
			}
			for _, c := range early {
				e.serveNet(c)
			}
			early = nil
			// The exec package keeps copies: the decoded list would
			// otherwise stay alive with this loop (7.5 MB of 10,000
			// handlers).
			n := len(first)
			first = nil
			releaseMemory(n)
			err = sendReady(ctl, st.last)
		case msgStatusReq:
			var r wireCtlID
			if err = decode(m, &r); err == nil {
				err = e.sendStatus(r.ID)
			}
		case msgRunReq:
			var r wireRunReq
			if err = decode(m, &r); err == nil {
				err = r.validate()
			}
			if err != nil {
				break
			}
			n := 0
			if e.x != nil {
				n = e.x.Run(r.User, r.Event)
			}
			err = e.sendDone(wireCtlDone{ID: r.ID, Matched: n})
		case msgStartRuns:
			if err = noPayload(m); err != nil {
				break
			}
			if e.x == nil {
				err = fmt.Errorf("unexpected %s before %s: %w", msgName(m.Type), msgName(msgStart), errProtocol)
				break
			}
			if n := e.x.RunAtStart(); n > 0 {
				e.log.Info("runs at start", "handlers", n)
			}
		case msgDrain:
			if err = noPayload(m); err == nil && (e.x == nil || !global.OnDemand) {
				err = fmt.Errorf("unexpected %s: %w", msgName(m.Type), errProtocol)
			}
			if err == nil {
				draining = true
				e.log.Debug("draining: idle for exec_idle")
				e.kick()
			}
		case msgShutdown:
			var s wireShutdown
			if err = decode(m, &s); err != nil {
				break
			}
			stop(max(s.Grace, 0))
			e.log.Debug("stopped")
			return nil
		default:
			err = fmt.Errorf("unexpected %s: %w", msgName(m.Type), errProtocol)
		}
		if err != nil {
			stop(time.Second)
			return fmt.Errorf("%s: %w", proc, err)
		}
	}
}

// sendStatus answers a status request: one item per handler, then the
// end, which counts them. Before the start there is nothing to report.
func (e *execProc) sendStatus(id uint64) error {
	var list []exec.HandlerStatus
	if e.x != nil {
		list = e.x.Status()
	}
	for i := range list {
		h := &list[i]
		w := wireStatusItem{ID: id, Number: h.Number, State: h.State, Due: h.Due, Pending: h.Pending,
			PID: h.PID, Since: h.Since, NextPeriodic: h.NextPeriodic, Runs: h.Runs, Failures: h.Failures}
		if h.PerUser {
			w.User = h.User
		}
		if r := h.LastRun; r != nil {
			w.LastRun = &wireLastRun{Start: r.Start, Duration: r.Duration, ExitStatus: r.ExitStatus,
				Signal: r.Signal, Trigger: r.Trigger}
		}
		b, err := privsep.EncodeJSON(w)
		if err != nil {
			return err
		}
		if err := e.ctl.SendTimeout(ctlTimeout, msgStatusItem, b); err != nil {
			return err
		}
	}
	return e.sendDone(wireCtlDone{ID: id, Items: len(list)})
}

func (e *execProc) sendDone(d wireCtlDone) error {
	b, err := privsep.EncodeJSON(d)
	if err != nil {
		return err
	}
	return e.ctl.SendTimeout(ctlTimeout, msgCtlDone, b)
}

func sameAccount(a, b *wireExecGlobal) bool {
	x, y := a.Account, b.Account
	if a.Drop != b.Drop || x.Name != y.Name || x.UID != y.UID || x.GID != y.GID || len(x.Groups) != len(y.Groups) {
		return false
	}
	for i := range x.Groups {
		if x.Groups[i] != y.Groups[i] {
			return false
		}
	}
	return true
}

func sendReady(ctl *privsep.Conn, gen uint64) error {
	b, err := privsep.EncodeJSON(wireReady{Gen: gen})
	if err != nil {
		return err
	}
	return ctl.SendTimeout(ctlTimeout, msgReady, b)
}

// start drops privileges and starts scheduling.
func (e *execProc) start(g *wireExecGlobal, hs []config.Handler) error {
	if g.Drop {
		a := g.Account.account()
		if err := privsep.Drop(a, ""); err != nil {
			return fmt.Errorf("drop privileges: %w", err)
		}
		if err := privsep.SetNotDumpable(); err != nil {
			return err
		}
		e.log.Debug("dropped privileges", "uid", a.UID, "gid", a.GID, "groups", a.Groups)
	}
	var paths []string
	for _, h := range hs {
		p := h.Path
		if rel, ok := config.HomeRelative(p); ok {
			// What unveil may let run: the hook where it is now.
			if g.Account.Home == "" || !filepath.IsAbs(g.Account.Home) {
				continue
			}
			p = filepath.Join(g.Account.Home, rel)
		}
		if !slices.Contains(paths, p) {
			paths = append(paths, p)
		}
	}
	rep, err := confine.exec(paths, g.Account.Home)
	if err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	logSandbox(e.log, rep)
	// The exec package starts each command in the account's home; the
	// process itself holds no directory open.
	if err := os.Chdir("/"); err != nil {
		return fmt.Errorf("chdir /: %w", err)
	}
	o := exec.Options{Handlers: hs, Log: e.log, Subreaper: true}
	if g.OnDemand {
		e.onDemand = true
		o.OnIdle = e.idle
	}
	e.x = exec.New(o)
	e.x.Start()
	if g.OnDemand {
		e.idle(e.x.Idle())
	}
	return nil
}

// idle tells the parent, which stops an on-demand exec process after
// exec_idle of it, and wakes a drain.
func (e *execProc) idle(idle bool) {
	b, _ := privsep.EncodeJSON(wireExecIdle{Idle: idle})
	if err := e.ctl.SendTimeout(ctlTimeout, msgExecIdle, b); err != nil {
		e.log.Warn("cannot tell the parent", "err", err)
	}
	if idle {
		e.kick()
	}
}

// serveNet reads events from one network process until it closes the
// channel. Events are validated again here: this process never trusts
// the less privileged one. A malformed message ends the channel and tells
// the parent, which replaces the network process.
func (e *execProc) serveNet(c *privsep.Conn) {
	e.netOpen.Add(1)
	go func() {
		defer e.kick()
		defer e.netOpen.Add(-1)
		defer c.Close()
		for {
			m, err := c.Recv()
			if errors.Is(err, io.EOF) {
				e.log.Debug("network process closed its channel")
				return
			}
			if err == nil {
				err = e.netMsg(m)
			}
			if err != nil {
				e.log.Error("network process broke the protocol, ending its channel", "err", err)
				b, _ := privsep.EncodeJSON(wireFault{Reason: truncate(err.Error(), maxReason)})
				if err := e.ctl.SendTimeout(ctlTimeout, msgNetFault, b); err != nil {
					e.log.Error("cannot tell the parent", "err", err)
				}
				return
			}
		}
	}()
}

func (e *execProc) netMsg(m privsep.Msg) error {
	if err := checkMsg(netToExec, m); err != nil {
		return err
	}
	switch m.Type {
	case msgRecover:
		var w wireRecover
		if err := decode(m, &w); err != nil {
			return err
		}
		if err := w.validate(); err != nil {
			return err
		}
		e.log.Info("recovery requested: events may have been lost, every handler runs once", "users", len(w.Users))
		e.x.Recover(w.Users...)
	case msgEvent:
		remote, body, err := decodeEvent(m.Payload)
		if err != nil {
			return err
		}
		return e.event(remote, body)
	case msgEvents:
		return decodeEvents(m.Payload, e.event)
	}
	return nil
}

// event validates and delivers one event from the network process.
func (e *execProc) event(remote netip.AddrPort, body []byte) error {
	ev, err := event.Decode(body)
	if err != nil {
		return fmt.Errorf("invalid event: %w: %w", errProtocol, err)
	}
	if n := e.x.Deliver(ev, remote); n == 0 {
		e.unmatched.Log(context.Background(), e.log, slog.LevelWarn, ev.User+"\x00"+ev.Event,
			"event from the network process matches no handler", "user", ev.User, "event", ev.Event, "peer", remote.String())
	}
	return nil
}

// truncate cuts s to at most n bytes on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xc0 == 0x80 {
		n--
	}
	return s[:n]
}

// ReportFatal sends a child's last words to the parent, which logs them
// in the daemon's format (a JSON log stays JSON). It reports whether the
// parent got them.
func ReportFatal(ctl *privsep.Conn, err error) bool {
	b, e := privsep.EncodeJSON(wireFault{Reason: truncate(err.Error(), maxReason)})
	return e == nil && ctl.SendTimeout(ctlTimeout, msgFatal, b) == nil
}
