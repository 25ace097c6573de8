package exec

import (
	"errors"
	"math"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// closeRangeCloexec is CLOSE_RANGE_CLOEXEC (Linux 5.11), missing from
// x/sys/unix.
const closeRangeCloexec = 1 << 2

// sealFdsOS uses close_range(2), or lists /proc/self/fd on older kernels.
func sealFdsOS() error {
	if err := unix.CloseRange(3, math.MaxUint32, closeRangeCloexec); err == nil {
		return nil
	}
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return err
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return err
	}
	var errs []error
	for _, name := range names {
		fd, err := strconv.Atoi(name)
		if err != nil || fd < 3 {
			continue
		}
		// The directory's own descriptor is closed by now: EBADF is skipped.
		errs = append(errs, setCloexec(fd))
	}
	return errors.Join(errs...)
}
