//go:build !linux

package exec

import "errors"

// waitExit is not available here: x/sys/unix has no waitid for the BSDs,
// and a wait4 with WNOWAIT that reaped after all would take the command
// from os/exec. Run then kills the group after Wait, which WaitDelay
// bounds when a leftover holds the output pipes.
func waitExit(pid int) error {
	return errors.ErrUnsupported
}
