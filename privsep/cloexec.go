package privsep

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// CloseOnExecFrom marks every descriptor from first upwards close-on-exec,
// so that no process started afterwards inherits one by accident.
// os/exec passes on every descriptor that lacks the flag, and a daemon can
// inherit such descriptors from whatever started it (a shell, an rc
// script, a supervisor). StartChild calls it with 3 before each start, and
// the exec process before each command; Go's own descriptors already have
// the flag, so nothing else changes.
func CloseOnExecFrom(first int) error {
	if first < 0 {
		return fmt.Errorf("privsep: close-on-exec from %d: negative descriptor", first)
	}
	if err := closeOnExecRange(first); err != nil {
		return fmt.Errorf("privsep: close-on-exec from %d: %w", first, err)
	}
	return nil
}

// closeOnExecLoop sets the flag on each descriptor below the open-files
// limit: the portable way, for systems without close_range's CLOEXEC flag.
func closeOnExecLoop(first int) error {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return fmt.Errorf("getrlimit RLIMIT_NOFILE: %w", err)
	}
	// Descriptors at or above the soft limit cannot exist unless it was
	// lowered after they were opened; the cap bounds the loop if the
	// limit is "infinity".
	limit := uint64(rl.Cur)
	if limit > 1<<20 {
		limit = 1 << 20
	}
	for fd := uint64(first); fd < limit; fd++ {
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err != nil {
			continue // not open
		}
		if flags&unix.FD_CLOEXEC == 0 {
			if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, flags|unix.FD_CLOEXEC); err != nil {
				return fmt.Errorf("fcntl %d F_SETFD: %w", fd, err)
			}
		}
	}
	return nil
}
