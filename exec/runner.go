package exec

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	osexec "os/exec"
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
)

// CommandRunner is the real Runner: it executes the handler's resolved
// program in a process group of its own, with exactly the job's
// environment, stdin on /dev/null, and stdout and stderr logged line by
// line (stdout at info, stderr at warn), capped per run.
type CommandRunner struct {
	Log *slog.Logger // nil: slog.Default()
	// MaxLines and MaxBytes cap the output logged per run, both streams
	// together; the rest is read and discarded so the command never
	// blocks on a full pipe. 0: DefaultMaxLines, DefaultMaxBytes.
	MaxLines int
	MaxBytes int
	// WaitDelay bounds how long a run waits for its output pipes after the
	// command exited or was killed, in case a descendant that left the
	// process group, or outlived the command, still holds them.
	// 0: DefaultWaitDelay.
	WaitDelay time.Duration
}

// Run executes j and returns when the command has ended. It is killed,
// with its whole process group, at the handler's command_timeout or when
// ctx is done. A command that fails is logged, never retried.
func (r *CommandRunner) Run(ctx context.Context, j Job) {
	h := j.Handler
	log := r.Log
	if log == nil {
		log = slog.Default()
	}
	log = log.With("handler", j.Index, "user", h.User, "trigger", j.Trigger)

	runCtx := ctx
	if h.CommandTimeout > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, h.CommandTimeout)
		defer cancel()
	}

	cmd := osexec.CommandContext(runCtx, h.Path)
	// argv[0] as the operator wrote it; Path is what gets executed.
	cmd.Args = append([]string(nil), h.Command...)
	if len(cmd.Args) == 0 {
		cmd.Args = []string{h.Path}
	}
	// Security: a nil Env would hand the daemon's environment to the
	// command; an empty, non-nil one passes nothing.
	cmd.Env = append(make([]string, 0, len(j.Env)), j.Env...)
	cmd.Dir = workDir(h.Account.Home)
	cmd.Stdin = nil // os/exec opens /dev/null
	// Its own process group, so that a timeout kills everything it started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = r.WaitDelay
	if cmd.WaitDelay <= 0 {
		cmd.WaitDelay = DefaultWaitDelay
	}
	cmd.Cancel = func() error {
		reason := "command_timeout"
		if ctx.Err() != nil {
			reason = "shutdown"
		}
		pid := cmd.Process.Pid
		log.Warn("killing command's process group", "pid", pid, "reason", reason, "timeout", h.CommandTimeout.String())
		return killGroup(pid)
	}

	out := newOutput(log, r.MaxLines, r.MaxBytes)
	cmd.Stdout = out.stream("stdout", slog.LevelInfo)
	cmd.Stderr = out.stream("stderr", slog.LevelWarn)

	// Security: os/exec hands a command every descriptor that is not
	// close-on-exec; one inherited from whoever started the daemon would
	// reach the user's command. Refuse rather than leak it.
	if err := privsep.CloseOnExecFrom(3); err != nil {
		out.started(0)
		log.Error("command not started: cannot make descriptors close-on-exec", "path", h.Path, "err", err)
		return
	}
	begin := time.Now()
	if err := cmd.Start(); err != nil {
		out.started(0)
		log.Error("command failed to start", "path", h.Path, "err", err)
		return
	}
	pid := cmd.Process.Pid
	out.started(pid)
	log.Info("command started", "pid", pid, "path", h.Path, "count", j.Count)

	err := cmd.Wait()
	out.flush()
	dur := time.Since(begin).Round(time.Millisecond).String()
	log = log.With("pid", pid, "duration", dur)

	var ee *osexec.ExitError
	switch {
	case err == nil:
		log.Info("command exited", "status", 0)
	case errors.As(err, &ee):
		ws, ok := ee.Sys().(syscall.WaitStatus)
		switch {
		case ok && ws.Signaled():
			log.Warn("command killed by signal", "signal", unix.SignalName(ws.Signal()))
		default:
			log.Warn("command exited", "status", ee.ExitCode())
		}
	case errors.Is(err, osexec.ErrWaitDelay):
		log.Warn("command exited but a descendant kept its output open", "status", 0, "wait_delay", cmd.WaitDelay.String())
	default:
		// Killed by Cancel after a successful exit, or a wait failure.
		log.Warn("command ended", "err", err)
	}
}

// killGroup sends SIGKILL to the process group pgid.
//
// Security: kill(-1) would signal every process this uid can reach, and
// kill(0) our own group, so anything but a real child's pgid is refused.
// The leader is not reaped before os/exec has called Cancel, so its pid,
// and with it the group id, cannot have been reused.
func killGroup(pgid int) error {
	if pgid <= 1 {
		return fmt.Errorf("kill process group %d: refusing invalid group", pgid)
	}
	if err := unix.Kill(-pgid, unix.SIGKILL); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return os.ErrProcessDone
		}
		return fmt.Errorf("kill process group %d: %w", pgid, err)
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
