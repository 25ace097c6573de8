package exec

import (
	"errors"
	"log/slog"
	osexec "os/exec"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/imserious/imserious/privsep"
)

// procs is the registry of the commands this process runs, shared by
// every CommandRunner and Exec in it: being a subreaper, and which
// children are orphans, are properties of the process, not of one Exec.
//
// Security: mu is held across cmd.Start and the registration of the new
// pid, and by every orphan sweep, so a sweep never sees a child that is
// not registered yet and takes it for an orphan.
var procs = struct {
	mu sync.Mutex
	// leaders maps the pid of every command started and not yet reaped
	// by os/exec to whether it is still running. An exited leader is a
	// zombie waiting for Wait: kept from reaping, but its group and
	// session are no longer protected.
	leaders map[int]bool
}{leaders: map[int]bool{}}

// startCommand starts cmd and registers its pid as a running leader.
func startCommand(cmd *osexec.Cmd) error {
	procs.mu.Lock()
	defer procs.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return err
	}
	procs.leaders[cmd.Process.Pid] = true
	return nil
}

// leaderExited records that the leader pid exited but is not reaped yet.
func leaderExited(pid int) {
	procs.mu.Lock()
	defer procs.mu.Unlock()
	if _, ok := procs.leaders[pid]; ok {
		procs.leaders[pid] = false
	}
}

// forgetLeader drops pid once os/exec has reaped it.
func forgetLeader(pid int) {
	procs.mu.Lock()
	defer procs.mu.Unlock()
	delete(procs.leaders, pid)
}

// keepFromKill is the keep function of the orphan sweep: a leader not
// yet reaped (os/exec waits for it), and any child in the process group
// or session of a command still running (it is part of that command's
// run, and killing its group would kill the command). Everything else is
// what a finished command left behind. Must be called with procs.mu held.
func keepFromKill(pid int) bool {
	if _, ok := procs.leaders[pid]; ok {
		return true
	}
	if pgid, err := unix.Getpgid(pid); err == nil && procs.leaders[pgid] {
		return true
	}
	if sid, err := unix.Getsid(pid); err == nil && procs.leaders[sid] {
		return true
	}
	return false
}

// keepFromReap keeps the leaders from ReapOrphans: they are os/exec's to
// reap. Must be called with procs.mu held.
func keepFromReap(pid int) bool {
	_, ok := procs.leaders[pid]
	return ok
}

// sweepOrphans kills and reaps every child of this process that
// keepFromKill does not keep. It only makes sense in a subreaper, where
// what commands leave behind ends up as our children.
func sweepOrphans(log *slog.Logger, when string) {
	procs.mu.Lock()
	n, err := privsep.KillOrphans(keepFromKill)
	procs.mu.Unlock()
	if n > 0 {
		log.Warn("killed processes left behind by commands", "count", n, "when", when)
	}
	if err != nil && !errors.Is(err, errors.ErrUnsupported) {
		log.Error("cannot kill processes left behind by commands", "when", when, "err", err)
	}
}

// reapOrphans reaps the orphans that have exited on their own.
func reapOrphans(log *slog.Logger) {
	procs.mu.Lock()
	n := privsep.ReapOrphans(keepFromReap)
	procs.mu.Unlock()
	if n > 0 {
		log.Debug("reaped exited orphans", "count", n)
	}
}
