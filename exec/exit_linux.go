package exec

import (
	"errors"

	"golang.org/x/sys/unix"
)

// waitExit blocks until the child pid has exited, without reaping it
// (waitid WNOWAIT): its pid, and with it the id of its process group,
// stay reserved until os/exec's Wait reaps it, so the group can be killed
// before Wait waits for the output pipes a leftover might hold.
func waitExit(pid int) error {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}
