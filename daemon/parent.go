// Package daemon wires the processes of spec §5 together: the privileged
// parent (parent.go), the network process (net.go) and the per-account
// exec processes (exec.go), around one protocol (proto.go).
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/imserious/imserious/config"
	"github.com/imserious/imserious/control"
	"github.com/imserious/imserious/internal/sdnotify"
	"github.com/imserious/imserious/logging"
	"github.com/imserious/imserious/privsep"
	"github.com/imserious/imserious/sandbox"
	"github.com/imserious/imserious/tlsreload"

	"golang.org/x/sys/unix"
)

const (
	// ShutdownGrace is how long running commands may go on after SIGTERM
	// before their process groups get SIGTERM, then SIGKILL.
	ShutdownGrace = 10 * time.Second
	// killGrace is what the exec processes give a command between SIGTERM
	// and SIGKILL; the parent waits that much more for them.
	killGrace = 5 * time.Second
	// startTimeout bounds how long a child may take to configure itself
	// and report ready; one that does not is killed.
	startTimeout = 15 * time.Second
	// sendTimeout bounds every send from the parent: a stopped child
	// must never hang the root process.
	sendTimeout = 2 * time.Second
	// More than maxCrashes crashes of the network process within
	// crashWindow stop the daemon: something is wrong that restarting
	// will not fix. (An exec process's account can kill it: its deaths
	// only lengthen its own backoff.)
	maxCrashes  = 5
	crashWindow = time.Minute
	// A crashed child is started again after backoffMin, doubling with
	// each crash of that child within crashWindow, up to backoffMax.
	backoffMin = 50 * time.Millisecond
	backoffMax = 10 * time.Second
)

// Parent is the privileged process: it binds the socket, starts and
// supervises the children, restarts those that die and reloads.
type Parent struct {
	Config *config.Config // loaded and resolved
	Root   bool           // started as root: children drop privileges
	Log    *slog.Logger
	LogOpt logOptions
	Stdout io.Writer // where children log; normally os.Stdout
	// ChildOutput, when set, gives each child started its own stdout and
	// stderr (syslog's line relays, one per stream, which the child's
	// pipe is copied to), and done is called once the child has been
	// waited for and its output copied; nil: Stdout for both.
	ChildOutput func(name string) (stdout, stderr io.Writer, done func())

	// Notify tells the service manager (systemd's $NOTIFY_SOCKET) when
	// the daemon serves, reloads and stops; nil: there is none.
	Notify *sdnotify.Notifier

	// Ready, when set, is called with the bound address once every child
	// reported ready.
	Ready func(addr net.Addr)
	// Load reads the configuration again for a reload; nil: Load and
	// Resolve the file of Config.
	Load func() (*config.Config, error)

	// StatusLog, when set, is where LogStatus writes: a logger of the
	// same output whose level lets every line through.
	StatusLog *slog.Logger

	reloads    atomic.Pointer[chan string]   // set while Run supervises
	statusReqs atomic.Pointer[chan struct{}] // likewise
}

// NewLogOptions converts the resolved log settings for the children.
func NewLogOptions(level slog.Level, l config.Log) logOptions {
	return logOptions{Level: int(level), Format: l.Format, ANSI: l.ANSI,
		Timestamp: l.Timestamp, Target: l.Target, ShowLevel: l.Level,
		Priority: l.Output == "syslog"}
}

// Reload asks the running daemon to read its configuration again, as
// SIGHUP does. It reports false when the daemon is not supervising (yet,
// or any more). Requests made while one is pending are merged.
func (p *Parent) Reload(reason string) bool {
	ch := p.reloads.Load()
	if ch == nil {
		return false
	}
	select {
	case *ch <- reason:
	default:
	}
	return true
}

func (p *Parent) load() (*config.Config, error) {
	if p.Load != nil {
		return p.Load()
	}
	c, err := config.Load(p.Config.File)
	if err == nil {
		err = c.Resolve(p.Root)
	}
	if err == nil {
		c.ForgetSource() // kept until the next reload
	}
	return c, err
}

// proc is one child as the parent sees it. Its fields are the
// supervisor's, but done and err, which the waiter sets.
type proc struct {
	name    string // "net", "exec[alice]"
	account string // "" for the network process
	target  int
	child   *privsep.Child
	pid     int
	started time.Time

	done chan struct{} // closed once Wait returned
	err  error         // Wait's result, valid after done

	// onDemand: started for an account of a wildcard run_as (spec §5);
	// idleSince is when it last said it had nothing to do (zero: busy).
	onDemand  bool
	idleSince time.Time
	// worked: it reported busy once. Its first idle report comes at its
	// start, before the events it was started for reach it: room is made
	// only by stopping one that has done what it was started for.
	worked    bool
	idleTimer *time.Timer            // the check at exec_idle
	stopping  bool                   // asked to stop, or replaced: its exit is no crash
	reported  bool                   // killed on another child's report: restarted, not counted
	ready     bool                   // reported ready once
	gen       uint64                 // last generation it reported in force
	fatal     atomic.Pointer[string] // its last words (msgFatal), set by the reader
	readDone  chan struct{}          // closed when the reader has seen the end
	timer     *time.Timer
}

func (pr *proc) isNet() bool { return pr.account == "" }

type procEvent struct {
	pr           *proc
	msg          privsep.Msg
	err          error // a broken control channel
	exited       bool
	readyTimeout bool
	idleCheck    bool // an on-demand exec process may have been idle for exec_idle
}

type tlsReq struct {
	pair  *tlsreload.Pair
	reply chan error
}

// supervisor is the state of Run. Only Run's goroutine touches it.
type supervisor struct {
	p       *Parent
	log     *slog.Logger
	cfg     *config.Config
	gen     uint64
	streams *streams
	drop    *wireDrop

	addr   net.Addr // where lnFile is bound
	lnFile *os.File
	chroot *os.File // the network process's root, open (as root only)
	certs  *tlsreload.Reloader
	tlsRun func() // stops the certificate watcher

	net          *proc
	execs        map[string]*proc     // by account; nil value: being restarted
	live         map[int]*proc        // every child not yet reaped, by pid
	owed         map[int]bool         // targets owed a recovery run
	crashes      []time.Time          // of children, within crashWindow: the budget
	crashedChild map[time.Time]string // which child went when, for the backoff
	started      bool                 // the first start-up completed
	inForce      uint64               // the last generation every child reported
	stopping     bool

	// The control socket and the requests being answered.
	ctl         *controlServer
	ctlReqs     chan *ctlOp
	ctlTimeouts chan uint64
	ctlOps      map[uint64]*ctlOp
	ctlNext     uint64
	startTime   time.Time
	restarts    map[string]int // by child name, for status
	startRuns   bool           // the exec processes started now do their run_at_start runs

	// Exec processes on demand: the accounts the parent accepted
	// (checked against the handlers' rules), their targets, how many such
	// processes exist (stopping ones too, until they have exited), and
	// the accounts waiting for a free place, in order.
	dynAccts  map[string]privsep.Account
	dynTarget map[string]int
	nextDyn   int
	dynLive   int
	wantQ     []string
	refusals  *logging.Limiter

	events  chan procEvent
	restart chan string
	tlsReqs chan tlsReq
	quit    chan struct{}
	wg      sync.WaitGroup // retiring children
}

// Run starts everything and supervises until ctx ends (clean shutdown,
// nil) or the children crash too often (error).
func (p *Parent) Run(ctx context.Context) error {
	s := &supervisor{p: p, log: p.Log, cfg: p.Config, execs: map[string]*proc{}, live: map[int]*proc{},
		owed: map[int]bool{}, crashedChild: map[time.Time]string{}, events: make(chan procEvent, 256), restart: make(chan string, 16),
		tlsReqs: make(chan tlsReq), quit: make(chan struct{}),
		ctlReqs: make(chan *ctlOp), ctlTimeouts: make(chan uint64, 16), restarts: map[string]int{}, startTime: time.Now(),
		dynAccts: map[string]privsep.Account{}, dynTarget: map[string]int{}, nextDyn: dynTargetBase,
		refusals: logging.NewLimiterTotal(time.Minute, 1, maxRefusalLines, nil)}
	defer s.close()
	if err := s.prepare(); err != nil {
		return err
	}
	if err := s.startAll(); err != nil {
		s.shutdown(2 * time.Second)
		return err
	}
	reloads := make(chan string, 1)
	p.reloads.Store(&reloads)
	defer p.reloads.Store(nil)
	statusReqs := make(chan struct{}, 1)
	p.statusReqs.Store(&statusReqs)
	defer p.statusReqs.Store(nil)
	startup := time.NewTimer(startTimeout)
	defer startup.Stop()
	for {
		select {
		case <-ctx.Done():
			if !s.started {
				s.log.Info("stopping before start-up completed")
			} else {
				s.log.Info("shutting down")
			}
			s.shutdown(ShutdownGrace)
			s.log.Info("stopped")
			return nil
		case <-startup.C:
			if !s.started {
				err := fmt.Errorf("children did not become ready within %s", startTimeout)
				s.shutdown(2 * time.Second)
				return err
			}
		case ev := <-s.events:
			if err := s.handle(ev); err != nil {
				s.log.Error("stopping", "err", err)
				s.shutdown(ShutdownGrace)
				return err
			}
		case name := <-s.restart:
			s.restartChild(name)
		case r := <-s.tlsReqs:
			r.reply <- s.sendTLS(r.pair)
		case reason := <-reloads:
			if s.started {
				s.reload(reason)
			} else {
				s.log.Warn("reload asked for before start-up completed, ignored", "reason", reason)
			}
		case op := <-s.ctlReqs:
			if !s.started {
				op.reply <- &control.Response{Error: "the daemon is still starting"}
				break
			}
			s.control(op)
		case <-statusReqs:
			s.control(&ctlOp{req: control.Request{Verb: control.VerbStatus}, toLog: true,
				reply: make(chan *control.Response, 1)})
		case id := <-s.ctlTimeouts:
			s.ctlTimeout(id)
		}
	}
}

// prepare binds the socket and loads what the children need.
func (s *supervisor) prepare() error {
	cfg := s.cfg
	if s.p.Root {
		// Checked and opened here; the network process enters the
		// descriptor, so nothing done to the name later can move it.
		dir, err := privsep.PrepareChroot(cfg.Privsep.Chroot)
		if err != nil {
			return err
		}
		s.chroot = dir
		d, err := dropFor(cfg)
		if err != nil {
			return err
		}
		s.drop = d
	}
	rep, err := sandbox.Parent()
	if err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	logSandbox(s.log, rep)
	// Orphans of a dead exec process come to the parent, which kills them.
	if err := privsep.BecomeSubreaper(); err != nil {
		s.log.Debug("not a subreaper: what a crashed exec process leaves behind is not collected", "err", err)
	}
	st, err := streamsFor(cfg, s.p.Root, s.p.LogOpt, s.drop, 1, nil)
	if err != nil {
		return err
	}
	s.gen, s.streams = 1, st
	// The pair is read before anything starts: a certificate that does
	// not load at start-up is fatal.
	if cfg.TLS != nil {
		if err := s.startTLS(cfg); err != nil {
			return err
		}
	} else if cfg.Auth != nil && !isLoopback(cfg.Listen) {
		s.log.Warn("[auth] without [tls] on a non-loopback address: the password crosses the network in clear; add [tls]", "listen", cfg.Listen)
	}
	addr, f, err := bind(cfg.Listen)
	if err != nil {
		return err
	}
	s.addr, s.lnFile = addr, f
	return s.startControl(cfg)
}

// bind binds and listens on addr and returns the socket as a file, which
// only the network process accepts on. The parent keeps it open, so that
// the socket stays bound while the network process restarts, but not in
// its own poller: there every connection would wake it (10 µs of the
// parent's time each, measured), for nothing. TCPListener.File would not
// do: its file is non-blocking and in the poller. So the duplicate is
// made by hand and set to blocking mode before os.NewFile sees it, which
// then leaves it out of the poller; the network process's
// net.FileListener sets non-blocking mode again on its own duplicate.
func bind(addr string) (net.Addr, *os.File, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	defer ln.Close() // the duplicate below keeps the socket
	rc, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		return nil, nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	dup := -1
	var derr error
	if err := rc.Control(func(fd uintptr) {
		dup, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	if derr != nil {
		return nil, nil, fmt.Errorf("listen %s: dup: %w", addr, derr)
	}
	// O_NONBLOCK belongs to the socket, shared with ln, which is closed
	// once this returns.
	if err := unix.SetNonblock(dup, false); err != nil {
		unix.Close(dup)
		return nil, nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	return ln.Addr(), os.NewFile(uintptr(dup), "listener "+ln.Addr().String()), nil
}

// startTLS loads the pair of cfg and watches its files; each new pair
// goes to the network process through Run's loop.
func (s *supervisor) startTLS(cfg *config.Config) error {
	certs, err := tlsreload.New(tlsreload.Options{Cert: cfg.TLS.Cert, Key: cfg.TLS.Key,
		Periodic: cfg.TLS.PeriodicReload, Log: s.log.With(logging.ComponentKey, "tls")})
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		certs.Run(ctx, func(pr *tlsreload.Pair) error {
			r := tlsReq{pair: pr, reply: make(chan error, 1)}
			select {
			case s.tlsReqs <- r:
			case <-ctx.Done():
				return ctx.Err()
			}
			select {
			case err := <-r.reply:
				return err
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	s.certs = certs
	s.tlsRun = sync.OnceFunc(func() {
		cancel()
		<-done
		certs.Close()
	})
	return nil
}

func (s *supervisor) stopTLS() {
	if s.tlsRun != nil {
		s.tlsRun()
		s.tlsRun, s.certs = nil, nil
	}
}

// sendTLS hands a new pair to the network process. With none running,
// the pair still becomes current: the next one gets it at start.
func (s *supervisor) sendTLS(pr *tlsreload.Pair) error {
	if s.net == nil || s.stopping {
		return nil
	}
	b, err := pr.Encode()
	if err != nil {
		return err
	}
	if err := s.net.child.Conn.SendTimeout(sendTimeout, msgTLSPair, b); err != nil {
		s.kill(s.net, fmt.Sprintf("cannot send it the TLS pair: %v", err))
		return err
	}
	return nil
}

func (s *supervisor) close() {
	s.stopTLS()
	if s.ctl != nil {
		s.ctl.ln.Close()
	}
	for _, op := range s.ctlOps {
		op.reply <- &control.Response{Error: "the daemon is shutting down"}
	}
	close(s.quit)
	if s.ctl != nil {
		s.ctl.close()
	}
	s.wg.Wait()
	if s.lnFile != nil {
		s.lnFile.Close()
	}
	if s.chroot != nil {
		s.chroot.Close()
	}
}

// execStream is the configuration stream of the exec process of an
// account of the configuration in force; ok is false for an account it
// has none for. The streams built to put a configuration in force are
// kept only until it is (forgetStreams); after that each start builds
// its own, the same: with 10,000 handlers they held 5.5 MB of the
// parent's memory for the rare restart.
func (s *supervisor) execStream(account string) (stream []outMsg, ok bool, err error) {
	if stream, ok := s.streams.exec[account]; ok {
		return stream, true, nil
	}
	for _, a := range s.cfg.Accounts() {
		if a.Name != account {
			continue
		}
		stream, err := execStreamFor(s.cfg, s.p.LogOpt, a, s.p.Root, s.gen)
		return stream, true, err
	}
	return nil, false, nil
}

// netStream is the network process's stream of the configuration in
// force (see execStream), as a new slice the caller may append to.
func (s *supervisor) netStream() ([]outMsg, error) {
	if s.streams.net != nil {
		return append([]outMsg(nil), s.streams.net...), nil
	}
	return netStreamFor(s.cfg, s.p.LogOpt, s.drop, s.streams.targets, s.gen)
}

// forgetStreams drops the streams of the configuration in force once
// every child has been sent its own; only the targets stay.
func (s *supervisor) forgetStreams() {
	s.streams.net, s.streams.exec = nil, nil
}

func (s *supervisor) startAll() error {
	// Only the exec processes started with the daemon do the
	// run_at_start runs: not those a reload adds, nor restarts.
	s.startRuns = true
	defer func() { s.startRuns = false }()
	for _, a := range s.cfg.Accounts() {
		if err := s.startExec(a.Name); err != nil {
			return err
		}
	}
	defer s.forgetStreams()
	return s.startNet()
}

// post hands an event to Run's loop unless the supervisor is gone.
func (s *supervisor) post(ev procEvent) {
	select {
	case s.events <- ev:
	case <-s.quit:
		closeFiles(ev.msg)
	}
}

// spawn starts a child and the goroutines that watch it.
func (s *supervisor) spawn(name string, args []string) (*proc, error) {
	stdout, stderr, outDone := s.p.Stdout, s.p.Stdout, func() {}
	if s.p.ChildOutput != nil {
		stdout, stderr, outDone = s.p.ChildOutput(name)
	}
	c, err := privsep.StartChild(name, args, stdout, stderr)
	if err != nil {
		outDone()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	pr := &proc{name: name, child: c, pid: c.Cmd.Process.Pid, started: time.Now(),
		done: make(chan struct{}), readDone: make(chan struct{})}
	s.live[pr.pid] = pr
	go func() {
		pr.err = c.Cmd.Wait()
		outDone() // after Wait, which waits for the copy of its output
		close(pr.done)
		s.post(procEvent{pr: pr, exited: true})
	}()
	go func() {
		defer close(pr.readDone)
		resets := 0
		for {
			m, err := c.Conn.Recv()
			if errors.Is(err, syscall.ECONNRESET) && resets == 0 {
				// A child that exits with messages of ours unread
				// resets the channel, once; what it sent before, its
				// last words above all, is still queued behind the
				// error.
				resets++
				continue
			}
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !errors.Is(err, syscall.ECONNRESET) {
					s.post(procEvent{pr: pr, err: err})
				}
				return
			}
			if m.Type == msgFatal && len(m.Files) == 0 {
				// Kept here, not posted, so that the line about the
				// child's death can say why.
				var f wireFault
				if decode(m, &f) == nil && f.validate() == nil {
					pr.fatal.Store(&f.Reason)
				}
				continue
			}
			s.post(procEvent{pr: pr, msg: m})
		}
	}()
	pr.timer = time.AfterFunc(startTimeout, func() { s.post(procEvent{pr: pr, readyTimeout: true}) })
	s.log.Debug("started child", "child", name, "pid", pr.pid)
	return pr, nil
}

// send sends msgs to pr, each within sendTimeout.
func (s *supervisor) send(pr *proc, msgs ...outMsg) error {
	for _, m := range msgs {
		var files []*os.File
		if m.file != nil {
			files = []*os.File{m.file}
		}
		if err := pr.child.Conn.SendTimeout(sendTimeout, m.typ, m.payload, files...); err != nil {
			return fmt.Errorf("%s: %w", pr.name, err)
		}
	}
	return nil
}

// startExec starts the exec process of an account of the configuration
// in force, or of one accepted for a wildcard run_as, and connects it to
// the network process.
func (s *supervisor) startExec(account string) error {
	stream, ok, err := s.execStream(account)
	if err != nil {
		return err
	}
	onDemand, target := false, s.streams.targets[account]
	if !ok {
		a, ok := s.dynAccts[account]
		if !ok {
			return fmt.Errorf("exec[%s]: no such account in the configuration", account)
		}
		var err error
		if stream, err = s.onDemandStream(a); err != nil {
			return err
		}
		onDemand, target = true, s.dynTarget[account]
	}
	name := "exec[" + account + "]"
	pr, err := s.spawn(name, []string{"-R", "exec:" + account})
	if err != nil {
		return err
	}
	pr.account, pr.target, pr.onDemand = account, target, onDemand
	if onDemand {
		s.dynLive++
	}
	s.execs[account] = pr
	if err := s.send(pr, stream...); err != nil {
		s.kill(pr, err.Error())
		return err
	}
	if s.net != nil {
		// A restarted one is owed a recovery (exited set it).
		s.connect(s.net, pr, s.owed[pr.target])
	}
	if err := s.send(pr, outMsg{typ: msgStart}); err != nil {
		s.kill(pr, err.Error())
		return err
	}
	if s.startRuns && !onDemand {
		if err := s.send(pr, outMsg{typ: msgStartRuns}); err != nil {
			s.kill(pr, err.Error())
			return err
		}
	}
	return nil
}

// startNet starts a network process with the configuration in force and
// a channel to every exec process.
func (s *supervisor) startNet() error {
	pr, err := s.spawn("net", []string{"-R", "net"})
	if err != nil {
		return err
	}
	s.net = pr
	msgs, err := s.netStream()
	if err != nil {
		s.kill(pr, err.Error())
		return err
	}
	msgs = append(msgs, outMsg{typ: msgListener, file: s.lnFile})
	if s.chroot != nil {
		msgs = append(msgs, outMsg{typ: msgChroot, file: s.chroot})
	}
	if s.certs != nil {
		b, err := s.certs.Current().Encode()
		if err != nil {
			s.kill(pr, err.Error())
			return err
		}
		msgs = append(msgs, outMsg{typ: msgTLSPair, payload: b})
	}
	if err := s.send(pr, msgs...); err != nil {
		s.kill(pr, err.Error())
		return err
	}
	for _, x := range s.execs {
		if x != nil && !x.stopping {
			s.connect(pr, x, s.owed[x.target])
		}
	}
	if err := s.send(pr, outMsg{typ: msgStart}); err != nil {
		s.kill(pr, err.Error())
		return err
	}
	return nil
}

// connect gives a network process and an exec process a socketpair.
// recover asks the network process to send a recovery first. A child
// that cannot be sent its end is killed, and restarted.
func (s *supervisor) connect(n, x *proc, recover bool) {
	toNet, toExec, err := privsep.Socketpair()
	if err != nil {
		s.log.Error("cannot connect the network process to an exec process", "child", x.name, "err", err)
		s.kill(x, err.Error())
		return
	}
	defer toNet.Close()
	defer toExec.Close()
	if err := s.send(x, outMsg{typ: msgNetChannel, file: toExec}); err != nil {
		s.kill(x, err.Error())
		return
	}
	w := wireExecChannel{Target: x.target, Recover: recover}
	if x.onDemand {
		w.Account = x.account
	}
	m, err := jsonMsg(msgExecChannel, w)
	if err == nil {
		m.file = toNet
		err = s.send(n, m)
	}
	if err != nil {
		s.kill(n, err.Error())
	}
}

// kill ends a child that misbehaves; its death is then handled as a
// crash, and it is started again.
func (s *supervisor) kill(pr *proc, why string) {
	select {
	case <-pr.done:
		return
	default:
	}
	s.log.Error("killing child", "child", pr.name, "pid", pr.pid, "reason", why)
	if err := pr.child.Cmd.Process.Kill(); err != nil {
		s.log.Error("cannot kill child", "child", pr.name, "pid", pr.pid, "err", err)
	}
}

func (s *supervisor) current(pr *proc) bool {
	if pr.isNet() {
		return s.net == pr
	}
	return s.execs[pr.account] == pr
}

// handle acts on one event of a child. An error stops the daemon.
func (s *supervisor) handle(ev procEvent) error {
	pr := ev.pr
	switch {
	case ev.exited:
		return s.exited(pr)
	case ev.readyTimeout:
		if !pr.ready && s.current(pr) {
			if !s.started {
				return fmt.Errorf("%s did not become ready within %s", pr.name, startTimeout)
			}
			s.kill(pr, fmt.Sprintf("not ready within %s", startTimeout))
		}
		return nil
	case ev.idleCheck:
		s.idleCheck(pr)
		return nil
	case ev.err != nil:
		s.kill(pr, ev.err.Error())
		return nil
	}
	ch := execToParent
	if pr.isNet() {
		ch = netToParent
	}
	m := ev.msg
	if err := checkMsg(ch, m); err != nil {
		s.kill(pr, err.Error())
		return nil
	}
	var err error
	switch m.Type {
	case msgReady:
		var r wireReady
		if err = decode(m, &r); err != nil {
			break
		}
		pr.ready, pr.gen = true, r.Gen
		if pr.timer != nil {
			pr.timer.Stop()
		}
		s.readied()
	case msgStatusItem:
		var w wireStatusItem
		if err = decode(m, &w); err == nil {
			err = w.validate()
		}
		if err == nil {
			s.statusItem(pr, &w)
		}
	case msgCtlDone:
		var d wireCtlDone
		if err = decode(m, &d); err == nil {
			s.ctlDone(pr, d)
		}
	case msgExecWant:
		var w wireExecWant
		if err = decode(m, &w); err == nil {
			err = w.validate()
		}
		if err == nil && s.current(pr) {
			s.want(w)
		}
	case msgExecIdle:
		var w wireExecIdle
		if err = decode(m, &w); err == nil {
			s.idleReport(pr, w.Idle)
		}
	case msgOwed:
		var o wireOwed
		if err = decode(m, &o); err != nil {
			break
		}
		s.owedReport(pr, o)
	case msgNetFault:
		var f wireFault
		if err = decode(m, &f); err == nil {
			err = f.validate()
		}
		if err == nil && s.net != nil {
			s.net.reported = true
			s.kill(s.net, fmt.Sprintf("%s reports a protocol violation: %s", pr.name, f.Reason))
		}
	}
	if err != nil {
		s.kill(pr, err.Error())
	}
	return nil
}

// readied notes children reporting the generation in force: the end of
// start-up, or of a reload.
func (s *supervisor) readied() {
	all := s.net != nil && s.net.ready && s.net.gen == s.gen
	for _, x := range s.execs {
		all = all && x != nil && (x.stopping || x.ready && x.gen == s.gen)
	}
	if !all {
		return
	}
	if !s.started {
		s.started, s.inForce = true, s.gen
		s.log.Info("listening", "addr", s.addr.String(), "handlers", len(s.cfg.Handlers),
			"accounts", len(s.execs), "privsep", s.p.Root, "tls", s.certs != nil)
		s.notify(s.p.Notify.Ready(fmt.Sprintf("listening on %s, %d handlers", s.addr, len(s.cfg.Handlers))))
		if s.p.Ready != nil {
			s.p.Ready(s.addr)
		}
		releaseMemory(len(s.cfg.Handlers))
		return
	}
	if s.gen > s.inForce {
		s.inForce = s.gen
		releaseMemory(len(s.cfg.Handlers))
		s.log.Info("configuration in force", "generation", s.gen)
		s.notify(s.p.Notify.Ready(fmt.Sprintf("listening on %s, %d handlers, configuration generation %d", s.addr, len(s.cfg.Handlers), s.gen)))
	}
}

func (s *supervisor) owedReport(pr *proc, o wireOwed) {
	// Security: the report comes from the least trusted process; only a
	// target of the configuration in force may enter the parent's books,
	// so a compromised one cannot make them grow.
	if !slices.Contains(slices.Collect(maps.Values(s.streams.targets)), o.Target) && !slices.Contains(slices.Collect(maps.Values(s.dynTarget)), o.Target) {
		s.log.Warn("the network process reports an unknown exec process", "child", pr.name, "target", o.Target)
		return
	}
	if s.current(pr) {
		s.owed[o.Target] = o.Owed
		return
	}
	// A retiring network process could not hand events over: the one in
	// force sends the recovery, on a fresh channel.
	if x := s.execByTarget(o.Target); o.Owed && x != nil && s.net != nil {
		s.connect(s.net, x, true)
	}
}

// netLost handles a network process that ended without finishing: it
// answers an event once it is queued for its exec process, before it is
// sent, so any of them may have lost events it had accepted. Each is owed
// a recovery, sent by the network process in force on a fresh channel,
// or by the next one.
func (s *supervisor) netLost(pr *proc) {
	n := 0
	for _, x := range s.execs {
		if x == nil || x.stopping {
			continue // a lost exec process is owed one already
		}
		if s.net != nil && s.net != pr {
			s.connect(s.net, x, true)
		} else {
			s.owed[x.target] = true
		}
		n++
	}
	if n > 0 {
		s.log.Warn("events the lost network process accepted may not have reached the exec processes; each of their handlers will run once as recovery", "child", pr.name, "processes", n)
	}
}

func (s *supervisor) execByTarget(t int) *proc {
	for _, x := range s.execs {
		if x != nil && x.target == t && !x.stopping {
			return x
		}
	}
	return nil
}

// exited handles the death of a child: expected, or a crash to recover
// from.
func (s *supervisor) exited(pr *proc) error {
	if pr.timer != nil {
		pr.timer.Stop()
	}
	if pr.idleTimer != nil {
		pr.idleTimer.Stop()
	}
	delete(s.live, pr.pid)
	defer pr.child.Conn.Close()
	if pr.onDemand {
		s.dynLive--
		if pr.stopping && s.current(pr) {
			// Drained (or retired by a reload): the account may get
			// another when an event asks for it.
			delete(s.execs, pr.account)
			delete(s.owed, pr.target)
			delete(s.dynTarget, pr.account)
			delete(s.dynAccts, pr.account)
		}
		defer s.serveWants()
	}
	if pr.stopping || !s.current(pr) || s.stopping {
		if pr.err != nil {
			s.log.Warn("child exited uncleanly", "child", pr.name, "status", exitReason(pr.err))
			if pr.isNet() && !s.stopping {
				// A retiring network process that did not finish may
				// have left events unsent.
				s.netLost(pr)
			}
		}
		return nil
	}
	// Its last words are read by the time its channel ends, which is
	// at its exit; a descendant holding the socket must not stall us.
	select {
	case <-pr.readDone:
	case <-time.After(time.Second):
	}
	reason := exitReason(pr.err)
	if f := pr.fatal.Load(); f != nil {
		reason += ": " + *f
	}
	s.log.Error(fmt.Sprintf("lost child %s (pid %d): %s", pr.name, pr.pid, reason),
		"child", pr.name, "pid", pr.pid, "status", reason)
	if !pr.isNet() {
		s.execs[pr.account] = nil
		// Its commands and its pending runs are lost: the new one runs
		// every handler once, and what the dead one left running goes.
		s.owed[pr.target] = true
		s.log.Warn("the pending runs and unread events of the lost exec process are gone; each of its handlers will run once as recovery", "child", pr.name)
		s.killOrphans()
	} else {
		s.net = nil
		s.netLost(pr)
	}
	if !s.started {
		return fmt.Errorf("child %s died during start-up (%s)", pr.name, reason)
	}
	now := time.Now()
	switch {
	case !pr.isNet():
		// Security: an exec process runs as its account, which can kill
		// it at will: counted, six kills in a minute would stop the
		// daemon for every account. It restarts with its own backoff;
		// only the network process's crashes are the daemon's budget.
	case pr.reported:
		// Killed because an exec process reported it: backoff, but no
		// crash of the budget, or one account's process could stop the
		// daemon for everyone by reporting six times.
		s.log.Info("the network process was replaced on an exec process's report; not counted as a crash", "child", pr.name)
	default:
		recent := s.crashes[:0]
		for _, t := range s.crashes {
			if now.Sub(t) < crashWindow {
				recent = append(recent, t)
			}
		}
		s.crashes = append(recent, now)
		if len(s.crashes) > maxCrashes {
			return fmt.Errorf("more than %d crashes of children within %s, the last %s (%s)", maxCrashes, crashWindow, pr.name, reason)
		}
	}
	// The more this child went lately, the longer it waits.
	delay := backoffMin
	for t, name := range s.crashedChild {
		if now.Sub(t) >= crashWindow {
			delete(s.crashedChild, t)
		} else if name == pr.name && delay < backoffMax {
			delay *= 2
		}
	}
	delay = min(delay, backoffMax)
	s.crashedChild[now] = pr.name
	s.log.Info("restarting child", "child", pr.name, "in", delay.String())
	name := pr.name
	time.AfterFunc(delay, func() {
		select {
		case s.restart <- name:
		case <-s.quit:
		}
	})
	return nil
}

// restartChild starts a crashed child again, if it is still wanted.
func (s *supervisor) restartChild(name string) {
	if s.stopping {
		return
	}
	var err error
	if name == "net" {
		if s.net != nil {
			return
		}
		err = s.startNet()
	} else {
		account := strings.TrimSuffix(strings.TrimPrefix(name, "exec["), "]")
		if pr, ok := s.execs[account]; !ok || pr != nil {
			return // removed by a reload, or already replaced
		}
		err = s.startExec(account)
	}
	if err == nil {
		s.restarts[name]++
	}
	if err != nil {
		s.log.Error("cannot restart child", "child", name, "err", err)
		if name != "net" || s.net == nil {
			// Not started at all (no process to die): try again later.
			time.AfterFunc(backoffMax, func() {
				select {
				case s.restart <- name:
				case <-s.quit:
				}
			})
		}
	}
}

// killOrphans kills what exited exec processes left behind, which the
// kernel gave to the parent (a subreaper).
func (s *supervisor) killOrphans() {
	n, err := privsep.KillOrphans(func(pid int) bool { return s.live[pid] != nil })
	if err != nil && !errors.Is(err, errors.ErrUnsupported) {
		s.log.Warn("cannot collect orphaned processes", "err", err)
	}
	if n > 0 {
		s.log.Warn("killed processes a lost exec process left behind", "count", n)
	}
}

// retire stops a child that is no longer wanted without waiting for it:
// its exit comes back through the loop, as an expected one.
func (s *supervisor) retire(pr *proc, grace, wait time.Duration) {
	pr.stopping = true
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.stopProc(pr, grace, wait)
	}()
}

// stopProc asks pr to stop and kills it if it has not within wait.
func (s *supervisor) stopProc(pr *proc, grace, wait time.Duration) {
	select {
	case <-pr.done:
		return
	default:
	}
	b, _ := privsep.EncodeJSON(wireShutdown{Grace: grace})
	if err := pr.child.Conn.SendTimeout(sendTimeout, msgShutdown, b); err != nil {
		pr.child.Cmd.Process.Signal(syscall.SIGTERM)
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-pr.done:
	case <-t.C:
		s.log.Error("child did not stop in time, killing it", "child", pr.name, "pid", pr.pid)
		if err := pr.child.Cmd.Process.Kill(); err != nil {
			// Without CAP_KILL, say, the wait below would be silent.
			s.log.Error("cannot kill child", "child", pr.name, "pid", pr.pid, "err", err)
		}
		<-pr.done
	}
}

// shutdown stops the network process first, so nothing new is accepted,
// then lets the exec processes finish what they run. Every wait is
// bounded: SIGTERM ends the daemon within timeout and grace even with a
// stopped child.
func (s *supervisor) shutdown(grace time.Duration) {
	s.stopping = true
	s.notify(s.p.Notify.Stopping())
	s.stopTLS()
	var nets, execs []*proc
	for _, pr := range s.live {
		if pr.isNet() {
			nets = append(nets, pr)
		} else {
			execs = append(execs, pr)
		}
	}
	stopAll := func(ps []*proc, grace, wait time.Duration) {
		var wg sync.WaitGroup
		for _, pr := range ps {
			pr.stopping = true
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.stopProc(pr, grace, wait)
			}()
		}
		wg.Wait()
	}
	stopAll(nets, 0, s.cfg.Timeout+time.Second)
	stopAll(execs, grace, grace+killGrace+2*time.Second)
	s.killOrphans()
}

// reload reads the configuration again and applies what changed: an
// invalid one is logged with every error and the old one kept.
func (s *supervisor) reload(reason string) (res control.ReloadResult, err error) {
	s.log.Info("reloading the configuration", "reason", reason, "file", s.cfg.File)
	s.notify(s.p.Notify.Reloading())
	if s.certs != nil {
		s.certs.Reload(reason)
	}
	fail := func(err error) (control.ReloadResult, error) {
		for _, line := range strings.Split(err.Error(), "\n") {
			s.log.Error(line)
		}
		s.log.Error("reload failed, the running configuration stays in force")
		s.notify(s.p.Notify.Ready("reload failed, the running configuration stays in force"))
		return control.ReloadResult{}, err
	}
	nc, err := s.p.load()
	if err != nil {
		return fail(err)
	}
	for _, w := range nc.Warnings() {
		s.log.Warn(w)
	}
	var drop *wireDrop
	if s.p.Root {
		if drop, err = dropFor(nc); err != nil {
			return fail(err)
		}
	}
	st, err := streamsFor(nc, s.p.Root, s.p.LogOpt, drop, s.gen+1, s.streams.targets)
	if err != nil {
		return fail(err)
	}
	old := s.cfg
	if !reflect.DeepEqual(old.Log, nc.Log) {
		s.log.Warn("[log] changes take effect when the daemon is restarted")
	}
	restartNet := old.Listen != nc.Listen || !reflect.DeepEqual(old.Privsep, nc.Privsep) ||
		old.Timeout != nc.Timeout || old.MaxConnections != nc.MaxConnections || !sameTLS(old.TLS, nc.TLS)
	var addr net.Addr
	var lnFile *os.File
	if old.Listen != nc.Listen {
		// A failed bind keeps the old socket and everything else.
		if addr, lnFile, err = bind(nc.Listen); err != nil {
			return fail(err)
		}
	}
	var chroot *os.File
	if s.p.Root && !reflect.DeepEqual(old.Privsep, nc.Privsep) {
		if chroot, err = privsep.PrepareChroot(nc.Privsep.Chroot); err != nil {
			if lnFile != nil {
				lnFile.Close()
			}
			return fail(err)
		}
	}
	if !sameTLS(old.TLS, nc.TLS) {
		s.stopTLS()
		if nc.TLS != nil {
			if err := s.startTLS(nc); err != nil {
				// The old pair is gone from the watcher, but the running
				// network process keeps serving it.
				if old.TLS != nil {
					s.startTLS(old)
				}
				if lnFile != nil {
					lnFile.Close()
				}
				if chroot != nil {
					chroot.Close()
				}
				return fail(err)
			}
		}
	}
	if chroot != nil {
		// The retiring network process is inside the old one already.
		s.chroot.Close()
		s.chroot = chroot
	}
	if lnFile != nil {
		s.lnFile.Close()
		s.addr, s.lnFile = addr, lnFile
		s.log.Info("listening", "addr", addr.String(), "previous", old.Listen)
	}

	// In force from here.
	oldTargets := s.streams.targets
	s.cfg, s.streams, s.drop = nc, st, drop
	s.gen++
	added, removed, changed, kept := 0, 0, 0, 0
	wanted := map[string]privsep.Account{}
	for _, a := range nc.Accounts() {
		wanted[a.Name] = a
	}
	oldAccts := map[string]privsep.Account{}
	for _, a := range old.Accounts() {
		oldAccts[a.Name] = a
	}
	for name, x := range s.execs {
		if _, dyn := s.dynAccts[name]; dyn {
			continue // reloadOnDemand decides
		}
		a, ok := wanted[name]
		switch {
		case !ok:
			removed++
		case !reflect.DeepEqual(a, oldAccts[name]):
			changed++
		default:
			continue
		}
		delete(s.execs, name)
		if !ok {
			delete(s.owed, oldTargets[name])
		}
		if x != nil {
			s.retire(x, ShutdownGrace, ShutdownGrace+killGrace+2*time.Second)
		}
	}
	s.reloadOnDemand(wanted)
	for _, a := range nc.Accounts() {
		x, ok := s.execs[a.Name]
		switch {
		case !ok:
			if _, was := oldAccts[a.Name]; !was {
				added++
			}
			if err := s.startExec(a.Name); err != nil {
				s.log.Error("cannot start exec process", "account", a.Name, "err", err)
			}
		case x != nil:
			kept++
			if err := s.send(x, st.exec[a.Name]...); err != nil {
				s.kill(x, err.Error())
			}
		}
	}
	if restartNet {
		if s.net != nil {
			s.retire(s.net, 0, old.Timeout+time.Second)
			s.net = nil
		}
		if err := s.startNet(); err != nil {
			s.log.Error("cannot start the network process", "err", err)
		}
	} else if s.net != nil {
		if err := s.send(s.net, st.net...); err != nil {
			s.kill(s.net, err.Error())
		}
	}
	s.forgetStreams()
	res = diffHandlers(old.Handlers, nc.Handlers)
	s.log.Info("configuration reloaded", "generation", s.gen, "handlers", len(nc.Handlers),
		"handlers_added", res.Added, "handlers_changed", res.Changed, "handlers_removed", res.Removed, "handlers_unchanged", res.Unchanged,
		"accounts_added", added, "accounts_removed", removed, "accounts_changed", changed, "accounts_kept", kept,
		"net_restarted", restartNet)
	return res, nil
}

// notify logs a failure to tell the service manager; the daemon goes on.
func (s *supervisor) notify(err error) {
	if err != nil {
		s.log.Warn("cannot notify the service manager", "err", err)
	}
}

func sameTLS(a, b *config.TLS) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Cert == b.Cert && a.Key == b.Key && a.PeriodicReload == b.PeriodicReload
}

// isLoopback says whether a validated listen address is a loopback one.
func isLoopback(listen string) bool {
	ap, err := netip.ParseAddrPort(listen)
	return err == nil && ap.Addr().Unmap().IsLoopback()
}

func exitReason(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}
