package privsep

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// SetNotDumpable stops core dumps and ptrace attaches by the same uid, so
// another process of a run_as user cannot read the exec process's memory.
// The flag belongs to the process (its mm), so one call covers all
// threads; a later credential change resets it, so call it after Drop.
func SetNotDumpable() error {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("privsep: prctl PR_SET_DUMPABLE 0: %w", err)
	}
	// Security-sensitive: assert rather than trust.
	v, err := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0)
	if err != nil {
		return fmt.Errorf("privsep: prctl PR_GET_DUMPABLE: %w", err)
	}
	if v != 0 {
		return fmt.Errorf("privsep: still dumpable (%d) after PR_SET_DUMPABLE 0", v)
	}
	return nil
}
