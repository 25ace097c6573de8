package privsep

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// maxReapRounds bounds KillOrphans. Each round kills and reaps every
// child it finds, and the children of the processes it reaped are this
// process's children by the next round (it is their subreaper): a round
// goes one level deeper into what a command left behind. A tree deeper
// than this, or one that forks faster than it dies, is reported.
const maxReapRounds = 64

// KillOrphans sends SIGKILL to every child of this process for which keep
// returns false (a nil keep keeps nothing), together with the child's
// process group and the group of its session leader, reaps each of them,
// and goes on with the children that appear as they die, until a round
// finds none. It returns how many processes it reaped.
//
// It is meant for a subreaper (BecomeSubreaper): a daemon a command left
// behind, in a group or session of its own, ends up as a child of this
// process once its parents are gone, and this is how it is found.
//
// Security: keep must return true for every child that something else
// waits for (os/exec's commands): KillOrphans reaps only the pids it
// killed, each by its own pid, never with wait4(-1), which would steal
// os/exec's children, but it cannot know which are whose. It never
// signals pid 1 or below, kill(-1), this process, or its own process group
// or session. The caller must keep new children from being started while
// it runs (exec holds the lock it starts commands under), so that a child
// started meanwhile cannot be taken for an orphan. A group is signalled by
// the id read just before: a group that emptied in between could in
// theory be a new one with a reused id, which needs a pid to be recycled
// within microseconds.
func KillOrphans(keep func(pid int) bool) (killed int, err error) {
	self := os.Getpid()
	ownGroup := unix.Getpgrp()
	ownSession, err := unix.Getsid(0)
	if err != nil {
		return 0, fmt.Errorf("privsep: kill orphans: getsid: %w", err)
	}
	for range maxReapRounds {
		pids, err := Children()
		if err != nil {
			return killed, fmt.Errorf("privsep: kill orphans: %w", err)
		}
		n := 0
		for _, pid := range pids {
			if pid <= 1 || pid == self || (keep != nil && keep(pid)) {
				continue
			}
			killTree(pid, ownGroup, ownSession)
			if reap(pid, 0) {
				n++
			}
		}
		killed += n
		if n == 0 {
			return killed, nil
		}
	}
	return killed, fmt.Errorf("privsep: kill orphans: children still appearing after %d rounds", maxReapRounds)
}

// ReapOrphans reaps, without waiting, every child for which keep returns
// false that has already exited, and returns how many it reaped. Orphans
// that die on their own would otherwise stay zombies, which count against
// the account's process limit, until the next KillOrphans.
//
// Security: as for KillOrphans, keep must return true for every child
// something else waits for; each child is reaped by its own pid.
func ReapOrphans(keep func(pid int) bool) int {
	pids, err := Children()
	if err != nil {
		return 0
	}
	n := 0
	for _, pid := range pids {
		if pid <= 1 || (keep != nil && keep(pid)) {
			continue
		}
		if reap(pid, unix.WNOHANG) {
			n++
		}
	}
	return n
}

// killTree sends SIGKILL to pid, its process group and its session
// leader's group, leaving out our own group and session. Errors are
// ignored: the process may be gone already, and what matters is that it
// is reaped afterwards.
func killTree(pid, ownGroup, ownSession int) {
	pgid, perr := unix.Getpgid(pid)
	sid, serr := unix.Getsid(pid)
	_ = unix.Kill(pid, unix.SIGKILL)
	if perr == nil && pgid > 1 && pgid != ownGroup && pgid != ownSession {
		_ = unix.Kill(-pgid, unix.SIGKILL)
	}
	// The other groups of that session are reached as their parents die
	// and they become our children.
	if serr == nil && sid > 1 && sid != ownSession && sid != ownGroup && sid != pgid {
		_ = unix.Kill(-sid, unix.SIGKILL)
	}
}

// reap waits for the child pid (with options, e.g. WNOHANG) and reports
// whether it was reaped.
func reap(pid, options int) bool {
	for {
		var ws unix.WaitStatus
		wpid, err := unix.Wait4(pid, &ws, options, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return err == nil && wpid == pid
	}
}
