package exec

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// maxFdScan bounds the descriptor scan where no better interface exists:
// RLIMIT_NOFILE may be "infinity".
const maxFdScan = 1 << 20

// sealFds makes every descriptor above 2 close-on-exec.
//
// Security: os/exec passes a command fds 0-2 and every descriptor that is
// not close-on-exec. Go opens everything close-on-exec, but descriptors
// inherited from whoever started the daemon are not, and reach each child
// down to the user's command; a leaked IPC socket would let that command
// forge events. Setting the flag changes nothing for this process itself.
func sealFds() error {
	if err := sealFdsOS(); err == nil {
		return nil
	}
	return cloexecScan(fdScanLimit())
}

// fdScanLimit is one past the highest descriptor number the process can
// have.
func fdScanLimit() int {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return maxFdScan
	}
	// Cur is int64 on some systems and uint64 on others.
	if cur := uint64(rl.Cur); cur < maxFdScan {
		return int(cur)
	}
	return maxFdScan
}

// cloexecScan sets close-on-exec on every open descriptor from 3 to max-1.
func cloexecScan(max int) error {
	for fd := 3; fd < max; fd++ {
		if err := setCloexec(fd); err != nil {
			return err
		}
	}
	return nil
}

func setCloexec(fd int) error {
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	if errors.Is(err, unix.EBADF) {
		return nil // not open
	}
	if err != nil {
		return fmt.Errorf("fcntl F_GETFD on fd %d: %w", fd, err)
	}
	if flags&unix.FD_CLOEXEC != 0 {
		return nil
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, flags|unix.FD_CLOEXEC); err != nil {
		return fmt.Errorf("fcntl F_SETFD on fd %d: %w", fd, err)
	}
	return nil
}
