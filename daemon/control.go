package daemon

// The parent's control socket (spec §7): imseriousctl asks for the status,
// a reload or a manual run. The socket is the parent's alone, mode 0600,
// and every connection's peer uid is checked against the kernel's word
// (started as root: uid 0 only, whatever the file's mode). Nothing of it
// reaches the network process. Each request becomes a ctlOp that Run's
// loop answers, asking the exec processes over their channels when it
// needs their state; the answer waits for them at most ctlWait.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/imserious/imserious/config"
	"github.com/imserious/imserious/control"
	"github.com/imserious/imserious/event"
	"github.com/imserious/imserious/internal/byuser"
	"github.com/imserious/imserious/internal/peercred"
	"github.com/imserious/imserious/logging"
)

const (
	// ctlWait bounds how long a status or run request waits for the exec
	// processes; one that does not answer is reported as unknown.
	ctlWait = 2 * time.Second
	// ctlReplyWait bounds how long a client waits for Run's loop (a
	// reload binds and starts processes).
	ctlReplyWait = 30 * time.Second
	// maxCtlClients is how many clients are served at once; more are
	// closed at once.
	maxCtlClients = 8
)

// ctlOp is one request being answered by Run's loop.
type ctlOp struct {
	id      uint64
	req     control.Request
	reply   chan *control.Response // buffered: the loop never waits for the client
	toLog   bool                   // SIGINFO/SIGUSR1: the answer goes to the log
	waiting map[string]bool        // accounts whose answer is due
	items   map[string]map[int]*wireStatusItem
	// users are the per-user states of wildcard handlers, by handler
	// number, from every account that reported them.
	users map[int][]userItem
	// owner is the account of each handler number, and handlers how many
	// each account has, in the configuration the request was asked of:
	// built once, so that answers cost no scan of the configuration.
	owner    map[int]string
	handlers map[string]int
	dynamic  int // wildcard run_as handlers, which every account may have
	matched  int
	missing  []string // accounts that could not be asked
	timer    *time.Timer
}

type userItem struct {
	account string
	w       *wireStatusItem
}

// controlServer accepts the operator's connections.
type controlServer struct {
	ln      *net.UnixListener
	path    string
	wantUID int // the only uid served: 0 as root, else the daemon's own
	sem     chan struct{}
	submit  func(*ctlOp) bool
	log     *slog.Logger
	refused *logging.Limiter
	wg      sync.WaitGroup
}

// listenControl binds the socket at path, replacing a stale one (a socket
// nobody answers on); any other file there is an error, as is a socket a
// running daemon answers on.
func listenControl(path string) (*net.UnixListener, error) {
	fi, err := os.Lstat(path)
	switch {
	case err == nil && fi.Mode().Type() == fs.ModeSocket:
		c, derr := net.DialTimeout("unix", path, time.Second)
		if derr == nil {
			c.Close()
			return nil, fmt.Errorf("control socket %s: in use: is another imserious running?", path)
		}
		if !errors.Is(derr, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("control socket %s: %w", path, derr)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("control socket %s: removing the stale socket: %w", path, err)
		}
	case err == nil:
		return nil, fmt.Errorf("control socket %s: a file that is not a socket is there (%s): remove it or set [control] socket", path, fi.Mode().Type())
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	// Until this chmod the mode is the umask's; the peer check below
	// holds whatever it is.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	return ln, nil
}

func (c *controlServer) serve() {
	defer c.wg.Done()
	for {
		conn, err := c.ln.AcceptUnix()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				c.log.Error("control socket: accept", "err", err)
			}
			return
		}
		select {
		case c.sem <- struct{}{}:
		default:
			c.refused.Log(context.Background(), c.log, slog.LevelWarn, "busy",
				"control socket: too many clients, connection closed", "max", maxCtlClients)
			conn.Close()
			continue
		}
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			defer func() { <-c.sem }()
			defer conn.Close()
			c.conn(conn)
		}()
	}
}

// conn serves one client: requests one after another, each answered. A
// malformed frame, or a peer that is not allowed, closes this connection
// only.
func (c *controlServer) conn(conn *net.UnixConn) {
	uid, err := peercred.UID(conn)
	if err != nil || uid != c.wantUID {
		c.refused.Log(context.Background(), c.log, slog.LevelWarn, fmt.Sprint("uid", uid),
			"control socket: client refused", "uid", uid, "allowed_uid", c.wantUID, "err", err)
		return
	}
	for {
		conn.SetReadDeadline(time.Now().Add(control.ReadTimeout))
		var req control.Request
		if err := control.ReadFrame(conn, &req, control.MaxRequest); err != nil {
			if !errors.Is(err, io.EOF) {
				c.refused.Log(context.Background(), c.log, slog.LevelWarn, "malformed",
					"control socket: malformed request, connection closed", "err", err)
			}
			return
		}
		resp := c.answer(req)
		conn.SetWriteDeadline(time.Now().Add(control.ReadTimeout))
		if err := control.WriteFrame(conn, resp, control.MaxResponse); err != nil {
			c.log.Warn("control socket: cannot answer", "err", err)
			return
		}
	}
}

func (c *controlServer) answer(req control.Request) *control.Response {
	if err := req.Validate(); err != nil {
		return &control.Response{Error: err.Error()}
	}
	if req.Verb == control.VerbRun {
		if !event.ValidUser(req.User) {
			return &control.Response{Error: fmt.Sprintf("%q is not a user name Dovecot sends", req.User)}
		}
		if req.Event != "" {
			ev, ok := event.Canonical(req.Event)
			if !ok {
				return &control.Response{Error: fmt.Sprintf("unknown event %q (one of %s)", req.Event, strings.Join(event.Names[:], ", "))}
			}
			req.Event = ev
		}
	}
	op := &ctlOp{req: req, reply: make(chan *control.Response, 1)}
	if !c.submit(op) {
		return &control.Response{Error: "the daemon is shutting down"}
	}
	t := time.NewTimer(ctlReplyWait)
	defer t.Stop()
	select {
	case r := <-op.reply:
		return r
	case <-t.C:
		return &control.Response{Error: "the daemon did not answer in time"}
	}
}

func (c *controlServer) close() {
	c.ln.Close() // removes the socket file
	c.wg.Wait()
}

// startControl binds the control socket of cfg, if any. A failure on the
// path written in the file is fatal; on the default path it is an error
// line and the daemon goes on without (a read-only /var/run, say, under a
// service manager's sandbox): the socket serves the operator, not Dovecot.
func (s *supervisor) startControl(cfg *config.Config) error {
	path := cfg.Control.Socket
	if path == "" {
		return nil
	}
	ln, err := listenControl(path)
	if err != nil {
		if cfg.Control.Explicit {
			return err
		}
		s.log.Error("no control socket: imseriousctl status, reload and run will not work; set [control] socket", "err", err)
		return nil
	}
	want := os.Geteuid()
	if s.p.Root {
		want = 0
	}
	s.ctl = &controlServer{ln: ln, path: path, wantUID: want, sem: make(chan struct{}, maxCtlClients),
		log: s.log.With(logging.ComponentKey, "control"), refused: logging.NewLimiter(time.Minute, 1, nil),
		submit: func(op *ctlOp) bool {
			select {
			case s.ctlReqs <- op:
				return true
			case <-s.quit:
				return false
			}
		}}
	s.ctl.wg.Add(1)
	go s.ctl.serve()
	s.log.Info("control socket", "path", path)
	return nil
}

// LogStatus writes the status into the log, whatever the log level says
// (SIGINFO on the BSDs, SIGUSR1 on Linux). It reports false when the
// daemon is not supervising.
func (p *Parent) LogStatus() bool {
	ch := p.statusReqs.Load()
	if ch == nil {
		return false
	}
	select {
	case *ch <- struct{}{}:
	default:
	}
	return true
}

// control starts answering op.
func (s *supervisor) control(op *ctlOp) {
	s.ctlNext++
	op.id = s.ctlNext
	switch op.req.Verb {
	case control.VerbReload:
		res, err := s.reload("imseriousctl reload")
		if err != nil {
			op.reply <- &control.Response{Error: "reload failed, the running configuration stays in force",
				Errors: strings.Split(err.Error(), "\n")}
			return
		}
		op.reply <- &control.Response{OK: true, Reload: &res}
		return
	case control.VerbStatus:
		var accts []string
		for _, a := range s.cfg.Accounts() {
			accts = append(accts, a.Name)
		}
		accts = append(accts, s.onDemandAccounts()...)
		s.askAll(op, accts, msgStatusReq, wireCtlID{ID: op.id})
	case control.VerbRun:
		var accts []string
		for i := range s.cfg.Handlers {
			h := &s.cfg.Handlers[i]
			if !config.MatchUser(h.User, op.req.User) || (op.req.Event != "" && h.Event != op.req.Event) {
				continue
			}
			name := h.Account.Name
			if h.Dynamic {
				// The account's exec process may not exist yet: asked
				// for like the network process asks, under the same
				// rules, it starts now (unless max_exec are busy).
				a, err := s.cfg.DynamicAccount(h, op.req.User)
				if err != nil {
					s.log.Info("manual run: no account for a wildcard handler", "handler", h.Number, "user", op.req.User, "reason", err.Error())
					continue
				}
				name = a.Name
				if _, ok := s.execs[name]; !ok {
					s.want(wireExecWant{Account: name, Handler: h.Number, User: op.req.User})
				}
			}
			if !slices.Contains(accts, name) {
				accts = append(accts, name)
			}
		}
		if len(accts) == 0 {
			what := fmt.Sprintf("no handler for user %q", op.req.User)
			if op.req.Event != "" {
				what += " and event " + op.req.Event
			}
			op.reply <- &control.Response{Error: what}
			return
		}
		s.askAll(op, accts, msgRunReq, wireRunReq{ID: op.id, User: op.req.User, Event: op.req.Event})
	}
}

// askAll sends the request to the exec process of each account, and
// answers at once when there is none to wait for.
func (s *supervisor) askAll(op *ctlOp, accts []string, typ uint32, payload any) {
	op.waiting = map[string]bool{}
	op.items = map[string]map[int]*wireStatusItem{}
	op.owner = make(map[int]string, len(s.cfg.Handlers))
	op.handlers = map[string]int{}
	for i := range s.cfg.Handlers {
		h := &s.cfg.Handlers[i]
		op.owner[h.Number] = h.Account.Name
		op.handlers[h.Account.Name]++
		if h.Dynamic {
			op.dynamic++
		}
	}
	m, err := jsonMsg(typ, payload)
	if err != nil {
		op.reply <- &control.Response{Error: err.Error()}
		return
	}
	for _, a := range accts {
		x := s.execs[a]
		// One started on demand just now has its configuration and
		// start queued before this request: it answers once started.
		if x == nil || x.stopping || !x.ready && !x.onDemand {
			op.missing = append(op.missing, a)
			continue
		}
		if err := s.send(x, m); err != nil {
			s.kill(x, err.Error())
			op.missing = append(op.missing, a)
			continue
		}
		op.waiting[a] = true
	}
	if len(op.waiting) == 0 {
		s.finish(op)
		return
	}
	if s.ctlOps == nil {
		s.ctlOps = map[uint64]*ctlOp{}
	}
	s.ctlOps[op.id] = op
	id := op.id
	op.timer = time.AfterFunc(ctlWait, func() {
		select {
		case s.ctlTimeouts <- id:
		case <-s.quit:
		}
	})
}

// statusItem takes one handler's state from an exec process. Security:
// the exec process runs as its account, which may be hostile: it can
// report only on handlers the parent's own configuration gives it, once
// each, and only while asked.
func (s *supervisor) statusItem(pr *proc, w *wireStatusItem) {
	op := s.ctlOps[w.ID]
	if op == nil || !op.waiting[pr.account] || !s.current(pr) {
		return // late, or not asked
	}
	acct, ok := op.owner[w.Number]
	var h *config.Handler
	if ok && w.Number <= len(s.cfg.Handlers) {
		h = &s.cfg.Handlers[w.Number-1]
	}
	// A wildcard run_as handler is every allowed account's.
	mine := ok && (acct == pr.account || h != nil && h.Dynamic)
	if mine && w.User != "" {
		// Its users: those the handler matches, and for a wildcard
		// run_as those whose account this is.
		mine = h != nil && h.Pattern && config.MatchUser(h.User, w.User)
		if mine && h.Dynamic {
			a, err := config.ExpandRunAs(h.RunAs, w.User)
			mine = err == nil && a == pr.account
		}
	}
	if !mine {
		s.log.Warn("an exec process reports a handler that is not its own", "child", pr.name, "handler", w.Number)
		return
	}
	if w.User != "" {
		if op.users == nil {
			op.users = map[int][]userItem{}
		}
		if len(op.users[w.Number]) < maxStatusUsers {
			op.users[w.Number] = append(op.users[w.Number], userItem{pr.account, w})
		}
		return
	}
	if op.items[pr.account] == nil {
		op.items[pr.account] = map[int]*wireStatusItem{}
	}
	op.items[pr.account][w.Number] = w
}

func (s *supervisor) ctlDone(pr *proc, d wireCtlDone) {
	op := s.ctlOps[d.ID]
	if op == nil || !op.waiting[pr.account] || !s.current(pr) {
		return
	}
	delete(op.waiting, pr.account)
	op.matched += min(max(d.Matched, 0), op.handlers[pr.account]+op.dynamic)
	if len(op.waiting) == 0 {
		s.finish(op)
	}
}

func (s *supervisor) ctlTimeout(id uint64) {
	if op := s.ctlOps[id]; op != nil {
		for a := range op.waiting {
			op.missing = append(op.missing, a)
		}
		s.finish(op)
	}
}

// finish composes the answer of op and sends it.
func (s *supervisor) finish(op *ctlOp) {
	delete(s.ctlOps, op.id)
	if op.timer != nil {
		op.timer.Stop()
	}
	var resp *control.Response
	switch op.req.Verb {
	case control.VerbStatus:
		st := s.status(op)
		if op.toLog {
			s.logStatus(st)
			return
		}
		resp = &control.Response{OK: true, Status: st}
	case control.VerbRun:
		resp = &control.Response{OK: op.matched > 0, Run: &control.RunResult{Handlers: op.matched}}
		if len(op.missing) > 0 {
			resp.Error = "no answer from " + strings.Join(execNames(op.missing), ", ") + ": its handlers did not start"
		} else if op.matched == 0 {
			resp.Error = "no handler started"
		}
	}
	op.reply <- resp
}

func execNames(accts []string) []string {
	out := make([]string, len(accts))
	for i, a := range accts {
		out[i] = "exec[" + a + "]"
	}
	return out
}

// status is the answer to a status request: every handler of the
// configuration in force, in file order, with what its exec process said.
func (s *supervisor) status(op *ctlOp) *control.Status {
	st := &control.Status{Handlers: []control.HandlerStatus{}, Processes: []control.Process{}}
	for i := range s.cfg.Handlers {
		h := &s.cfg.Handlers[i]
		hs := control.HandlerStatus{Handler: h.Number, Line: h.Line, User: h.User, Event: h.Event, RunAs: h.Account.Name}
		if h.Dynamic {
			// Reported by every account's process that has it: the
			// line sums them.
			hs.RunAs, hs.State = h.RunAs, "idle"
			for _, items := range op.items {
				if w := items[h.Number]; w != nil {
					hs.Runs += w.Runs
					hs.Failures += w.Failures
					if r := w.LastRun; r != nil && (hs.LastRun == nil || r.Start.After(hs.LastRun.Start)) {
						hs.LastRun = lastRun(r)
					}
				}
			}
		} else if w := op.items[h.Account.Name][h.Number]; w == nil {
			hs.State, hs.Unknown = "unknown", true
		} else {
			fillStatus(&hs, w)
		}
		st.Handlers = append(st.Handlers, hs)
		users := op.users[h.Number]
		slices.SortFunc(users, func(a, b userItem) int { return strings.Compare(a.w.User, b.w.User) })
		for _, u := range users {
			us := control.HandlerStatus{Handler: h.Number, Line: h.Line, User: u.w.User, Event: h.Event, RunAs: u.account, Pattern: h.User}
			fillStatus(&us, u.w)
			st.Handlers = append(st.Handlers, us)
		}
	}
	now := time.Now()
	st.Processes = append(st.Processes, control.Process{Role: "parent", PID: os.Getpid(),
		UptimeS: int64(now.Sub(s.startTime) / time.Second)})
	add := func(pr *proc, role, account string) {
		p := control.Process{Role: role, Account: account, Restarts: s.restarts[roleName(role, account)]}
		if pr != nil {
			p.PID, p.UptimeS = pr.pid, int64(now.Sub(pr.started)/time.Second)
		}
		st.Processes = append(st.Processes, p)
	}
	add(s.net, "net", "")
	for _, a := range s.cfg.Accounts() {
		add(s.execs[a.Name], "exec", a.Name)
	}
	for _, a := range s.onDemandAccounts() {
		add(s.execs[a], "exec", a)
	}
	return st
}

// maxStatusUsers bounds the per-user lines of one wildcard handler in a
// status: a server's worth, not whatever a hostile process reports.
const maxStatusUsers = 100000

// onDemandAccounts are the accounts with an on-demand exec process, in
// order.
func (s *supervisor) onDemandAccounts() []string {
	var out []string
	for a, x := range s.execs {
		if _, ok := s.dynAccts[a]; ok && x != nil {
			out = append(out, a)
		}
	}
	slices.Sort(out)
	return out
}

func fillStatus(hs *control.HandlerStatus, w *wireStatusItem) {
	hs.State, hs.Pending, hs.Runs, hs.Failures = w.State, w.Pending, w.Runs, w.Failures
	hs.Due, hs.NextPeriodic = timePtr(w.Due), timePtr(w.NextPeriodic)
	if w.State == "running" {
		hs.PID, hs.Since = w.PID, timePtr(w.Since)
	}
	if r := w.LastRun; r != nil {
		hs.LastRun = lastRun(r)
	}
}

func lastRun(r *wireLastRun) *control.LastRun {
	return &control.LastRun{Start: r.Start, DurationMS: r.Duration.Milliseconds(),
		ExitStatus: r.ExitStatus, Signal: r.Signal, Trigger: r.Trigger}
}

func roleName(role, account string) string {
	if role == "net" {
		return "net"
	}
	return "exec[" + account + "]"
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// logStatus writes a status into the log, one line per handler and
// process, at info through a logger that ignores max_level.
func (s *supervisor) logStatus(st *control.Status) {
	log := s.p.StatusLog
	if log == nil {
		log = s.log
	}
	for _, line := range st.Lines(time.Now()) {
		log.Info("status: " + line)
	}
}

// diffHandlers counts what a reload changed, in handlers: unchanged are
// those the new file has the Same of; of the others, one for the same
// user and event is changed; the rest are added or removed. Both are of
// one user, so each new handler is compared with the old ones of its
// user only: with every old one, 10,000 changed handlers took the
// parent 0.8 s (BenchmarkDiffHandlers).
func diffHandlers(old, nu []config.Handler) control.ReloadResult {
	var r control.ReloadResult
	usedOld := make([]bool, len(old))
	usedNew := make([]bool, len(nu))
	oldOf := byuser.Positions(len(old), func(j int) string { return old[j].User })
	for i := range nu {
		for _, j := range oldOf.Of(nu[i].User) {
			if !usedOld[j] && old[j].Same(&nu[i]) {
				usedOld[j], usedNew[i] = true, true
				r.Unchanged++
				break
			}
		}
	}
	for i := range nu {
		if usedNew[i] {
			continue
		}
		for _, j := range oldOf.Of(nu[i].User) {
			if !usedOld[j] && old[j].Event == nu[i].Event {
				usedOld[j], usedNew[i] = true, true
				r.Changed++
				break
			}
		}
	}
	for i := range nu {
		if !usedNew[i] {
			r.Added++
		}
	}
	for j := range old {
		if !usedOld[j] {
			r.Removed++
		}
	}
	return r
}
