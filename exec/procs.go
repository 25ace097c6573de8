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
	// leaders holds the pid of every command started and not yet
	// forgotten after os/exec reaped it.
	leaders map[int]*leader
}{leaders: map[int]*leader{}}

// leader is one command in procs. An exited leader is a zombie waiting
// for Wait: kept from reaping, but its group and session are no longer
// protected. Runs change their own entry through this pointer, never by
// pid: once Wait has reaped a leader its pid may belong to the next
// command.
type leader struct {
	pid     int
	running bool
}

// startCommand starts cmd and registers it as a running leader.
func startCommand(cmd *osexec.Cmd) (*leader, error) {
	procs.mu.Lock()
	defer procs.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	l := &leader{pid: cmd.Process.Pid, running: true}
	procs.leaders[l.pid] = l
	return l, nil
}

// exited records that the leader exited; it may or may not be reaped yet.
func (l *leader) exited() {
	procs.mu.Lock()
	defer procs.mu.Unlock()
	l.running = false
}

// forget drops the leader once os/exec has reaped it, unless its pid has
// been registered again by a new command.
func (l *leader) forget() {
	procs.mu.Lock()
	defer procs.mu.Unlock()
	if procs.leaders[l.pid] == l {
		delete(procs.leaders, l.pid)
	}
}

// runningLeader reports whether pid is a command still running. Must be
// called with procs.mu held.
func runningLeader(pid int) bool {
	l := procs.leaders[pid]
	return l != nil && l.running
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
	if pgid, err := unix.Getpgid(pid); err == nil && runningLeader(pgid) {
		return true
	}
	if sid, err := unix.Getsid(pid); err == nil && runningLeader(sid) {
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
