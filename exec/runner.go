package exec

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	osexec "os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imserious/imserious/privsep"
)

// Defaults of CommandRunner.
const (
	DefaultMaxLines  = 256
	DefaultMaxBytes  = 64 << 10
	DefaultWaitDelay = 5 * time.Second
	DefaultKillGrace = 5 * time.Second
)

// CommandRunner is the real Runner: it executes the handler's resolved
// program in a session (and so a process group) of its own, with exactly
// the job's environment, stdin on /dev/null, and stdout and stderr logged
// line by line (stdout at info, stderr at warn), capped per run.
type CommandRunner struct {
	Log *slog.Logger // nil: slog.Default()
	// MaxLines and MaxBytes cap the output logged per run, both streams
	// together; the rest is read and discarded so the command never
	// blocks on a full pipe. 0: DefaultMaxLines, DefaultMaxBytes.
	MaxLines int
	MaxBytes int
	// WaitDelay bounds how long a run waits for its output pipes after the
	// command exited, in case a descendant that left the process group
	// still holds them. 0: DefaultWaitDelay.
	WaitDelay time.Duration
	// KillGrace is how long the process group has between the SIGTERM
	// sent at command_timeout (or when ctx is done) and the SIGKILL, so
	// that programs such as mbsync and fdm can remove their lock files.
	// 0: DefaultKillGrace.
	KillGrace time.Duration
	// KillOrphans makes each run, once its command has exited, kill and
	// reap every child of this process that is not part of a command
	// still running: in a subreaper (Options.Subreaper) that is whatever
	// a command left behind in a group or session of its own. Every child
	// of the process must then be started by a CommandRunner.
	KillOrphans bool
}

// Run executes j and returns when the command has ended, saying how. When
// the command exits, whatever is left in its process group is killed. At
// the handler's command_timeout, or when ctx is done, the group gets
// SIGTERM, then SIGKILL after KillGrace. j.Started, when set, gets the
// pid once the command is running. A command that fails is logged and
// reported in the Result; retrying it is the scheduler's business.
func (r *CommandRunner) Run(ctx context.Context, j Job) Result {
	h := j.Handler
	log := r.Log
	if log == nil {
		log = slog.Default()
	}
	user := j.User
	if user == "" {
		user = h.User
	}
	log = log.With("handler", label(j.Index, j.Number), "user", user, "trigger", j.Trigger)
	if j.Attempt > 1 {
		log = log.With("attempt", j.Attempt)
	}
	res := Result{ExitStatus: -1}
	grace := r.KillGrace
	if grace <= 0 {
		grace = DefaultKillGrace
	}

	// The program: the handler's, resolved by config, or one in the
	// account's home as the scheduler found it (Job.Path).
	path := h.Path
	// argv[0] as the operator wrote it; path is what gets executed.
	args := append([]string(nil), h.Command...)
	if j.Path != "" {
		// A user's hook: argv[0] is the file found, then the
		// handler's arguments.
		path = j.Path
		args = append([]string{path}, args[min(1, len(args)):]...)
	}
	if len(args) == 0 {
		args = []string{path}
	}

	// Security: a program that is not an absolute path (a "~/" one not
	// looked up, which os/exec would take relative to the home without
	// any of lookupHook's checks) is never started.
	if !filepath.IsAbs(path) {
		log.Error("command not started: its program is not an absolute path", "path", path)
		res.Start, res.Err = time.Now(), fmt.Errorf("program %q is not an absolute path", path)
		return res
	}

	// Security: execve fails with E2BIG on an environment over the
	// kernel's limits; that is checked here with a clear message rather
	// than left to a failed start.
	if err := envFits(j.Env); err != nil {
		log.Error("command not started: its environment cannot be passed to execve", "path", path, "err", err)
		res.Start, res.Err = time.Now(), fmt.Errorf("environment cannot be passed to execve: %w", err)
		return res
	}

	// No context: the run's own watch signals the whole group, where
	// os/exec's Cancel would signal the leader only.
	cmd := osexec.Command(path)
	cmd.Args = args
	// Security: a nil Env would hand the daemon's environment to the
	// command; an empty, non-nil one passes nothing.
	cmd.Env = append(make([]string, 0, len(j.Env)), j.Env...)
	cmd.Dir = workDir(h.Account.Home)
	cmd.Stdin = nil // os/exec opens /dev/null
	// Security: its own session, so no controlling terminal (it cannot
	// open /dev/tty, push keystrokes into the operator's terminal with
	// TIOCSTI, or get the terminal's signals), and its own process group
	// (a session leader leads its group, pgid == pid), which is what
	// gets killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.WaitDelay = r.WaitDelay
	if cmd.WaitDelay <= 0 {
		cmd.WaitDelay = DefaultWaitDelay
	}

	out := newOutput(log, r.MaxLines, r.MaxBytes)
	cmd.Stdout = out.stream("stdout", slog.LevelInfo)
	cmd.Stderr = out.stream("stderr", slog.LevelWarn)

	// Security: os/exec hands a command every descriptor that is not
	// close-on-exec; one inherited from whoever started the daemon would
	// reach the user's command. Refuse rather than leak it.
	if err := privsep.CloseOnExecFrom(3); err != nil {
		out.started(0)
		log.Error("command not started: cannot make descriptors close-on-exec", "path", path, "err", err)
		res.Start, res.Err = time.Now(), fmt.Errorf("cannot make descriptors close-on-exec: %w", err)
		return res
	}
	begin := time.Now()
	res.Start = begin
	l, err := startCommand(cmd)
	if err != nil {
		out.started(0)
		log.Error("command failed to start", "path", path, "err", err)
		res.Err, res.Duration = err, time.Since(begin)
		return res
	}
	pid := cmd.Process.Pid
	out.started(pid)
	log.Info("command started", "pid", pid, "path", path, "count", j.Count)
	if j.Started != nil {
		j.Started(pid)
	}

	// Security: everything below kills the group pid; assert that the
	// command is the leader of its own session and group, as Setsid
	// makes it (neither can change: a session leader can neither
	// setpgid nor setsid), before relying on it.
	if sid, err := unix.Getsid(pid); err != nil || sid != pid {
		log.Error("command not in a session of its own, killing it", "pid", pid, "sid", sid, "err", err)
		_ = cmd.Process.Kill()
	}
	g := &group{pgid: pid}
	exited := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		g.watch(ctx, log, h.CommandTimeout, grace, exited)
	}()

	if werr := waitExit(pid); werr == nil {
		// Exited and not reaped yet: the group id cannot have been
		// reused, and killing the group now, before Wait waits for the
		// output pipes, means no leftover can hold them open.
		close(exited)
		<-watched
		if err := g.signal(unix.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
			log.Error("cannot kill command's process group", "pid", pid, "err", err)
		}
		l.exited()
		if r.KillOrphans {
			sweepOrphans(log, "command exited")
		}
		g.reap()
		err = cmd.Wait()
		l.forget()
	} else {
		if !errors.Is(werr, errors.ErrUnsupported) {
			log.Error("cannot wait for the command without reaping it", "pid", pid, "err", werr)
		}
		err = cmd.Wait()
		l.exited()
		g.reap()
		close(exited)
		<-watched
		// Reaped already, so this is the group by its number. A group
		// id stays reserved while the group has a member, so this can
		// only reach a new group in the moment between Wait and here
		// if the group was empty and the pid was reused at once.
		if err := signalGroup(pid, unix.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
			log.Error("cannot kill command's process group", "pid", pid, "err", err)
		}
		l.forget()
		if r.KillOrphans {
			sweepOrphans(log, "command exited")
		}
	}
	out.flush()
	res.Duration = time.Since(begin)
	res.TimedOut = g.timedOut // written by watch before it closed watched
	if ps := cmd.ProcessState; ps != nil {
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			res.Signal = signalName(ws.Signal())
		} else {
			res.ExitStatus = ps.ExitCode()
		}
	} else {
		res.Err = err // not reaped: cannot happen once Start succeeded
	}
	dur := res.Duration.Round(time.Millisecond).String()
	log = log.With("pid", pid, "duration", dur)

	var ee *osexec.ExitError
	switch {
	case err == nil:
		log.Info("command exited", "status", 0)
	case errors.As(err, &ee):
		ws, ok := ee.Sys().(syscall.WaitStatus)
		switch {
		case ok && ws.Signaled():
			log.Warn("command killed by signal", "signal", signalName(ws.Signal()))
		default:
			log.Warn("command exited", "status", ee.ExitCode())
		}
	case errors.Is(err, osexec.ErrWaitDelay):
		log.Warn("command exited but a descendant kept its output open", "status", 0, "wait_delay", cmd.WaitDelay.String())
	default:
		log.Warn("command ended", "err", err)
	}
	return res
}

// signalName names a signal as kill -l does, with its SIG prefix.
func signalName(s syscall.Signal) string {
	if n := unix.SignalName(s); n != "" {
		return n
	}
	return fmt.Sprintf("signal %d", int(s))
}

// group is a running command's process group, which the run's watch and
// the run itself signal until the leader is reaped.
type group struct {
	pgid int
	// timedOut is set by watch when it terminated the group at
	// command_timeout, before watch returns.
	timedOut bool

	mu     sync.Mutex
	reaped bool
}

// signal sends sig to the group unless its leader has been reaped.
func (g *group) signal(sig unix.Signal) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.reaped {
		return os.ErrProcessDone
	}
	return signalGroup(g.pgid, sig)
}

// reap records that the leader is about to be, or has been, reaped: its
// pid, and so the group id, may be reused from then on.
func (g *group) reap() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.reaped = true
}

// watch waits for the command to exit, for its timeout or for ctx. On
// either of the last two it sends the group SIGTERM (and SIGCONT, so that
// a stopped process can act on it), then SIGKILL if the command has not
// exited after grace.
func (g *group) watch(ctx context.Context, log *slog.Logger, timeout, grace time.Duration, exited <-chan struct{}) {
	var expired <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	var reason string
	select {
	case <-exited:
		return
	case <-ctx.Done():
		reason = "shutdown"
	case <-expired:
		reason = "command_timeout"
		g.timedOut = true
	}
	log.Warn("terminating command's process group", "pid", g.pgid, "reason", reason, "signal", "SIGTERM",
		"timeout", timeout.String(), "grace", grace.String())
	if err := g.signal(unix.SIGTERM); err == nil {
		_ = g.signal(unix.SIGCONT)
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-exited:
		return
	case <-t.C:
	}
	log.Warn("killing command's process group", "pid", g.pgid, "reason", reason, "signal", "SIGKILL", "grace", grace.String())
	if err := g.signal(unix.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		log.Error("cannot kill command's process group", "pid", g.pgid, "err", err)
	}
}

// signalGroup sends sig to the process group pgid.
//
// Security: kill(-1) would signal every process this uid can reach, and
// kill(0) our own group, so anything but a real child's pgid is refused.
func signalGroup(pgid int, sig unix.Signal) error {
	if pgid <= 1 {
		return fmt.Errorf("signal process group %d: refusing invalid group", pgid)
	}
	if err := unix.Kill(-pgid, sig); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return os.ErrProcessDone
		}
		return fmt.Errorf("signal process group %d: %w", pgid, err)
	}
	return nil
}

// workDir is where a command starts: the account's home like cron does,
// or "/" when the home is not a directory (a missing home must not stop
// the command from running).
func workDir(home string) string {
	if home != "" {
		if fi, err := os.Stat(home); err == nil && fi.IsDir() {
			return home
		}
	}
	return "/"
}
