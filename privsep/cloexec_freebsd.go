package privsep

import "golang.org/x/sys/unix"

// closeRangeCloexec is FreeBSD's CLOSE_RANGE_CLOEXEC (sys/unistd.h,
// FreeBSD 13.1 and later), which x/sys/unix does not define.
const closeRangeCloexec = 1 << 2

// closeOnExecRange uses close_range(2) with CLOSE_RANGE_CLOEXEC where the
// kernel has it, and the portable loop otherwise.
func closeOnExecRange(first int) error {
	_, _, errno := unix.Syscall(unix.SYS_CLOSE_RANGE, uintptr(first), uintptr(^uint32(0)), closeRangeCloexec)
	if errno == 0 {
		return nil
	}
	return closeOnExecLoop(first)
}
