package exec

import (
	"math"

	"golang.org/x/sys/unix"
)

// closeRangeCloexec is CLOSE_RANGE_CLOEXEC (FreeBSD 13.1), missing from
// x/sys/unix.
const closeRangeCloexec = 1 << 2

// sealFdsOS uses close_range(2); older releases fail with ENOSYS or
// EINVAL and sealFds falls back to a scan.
func sealFdsOS() error {
	_, _, errno := unix.Syscall(unix.SYS_CLOSE_RANGE, 3, math.MaxUint32, closeRangeCloexec)
	if errno != 0 {
		return errno
	}
	return nil
}
