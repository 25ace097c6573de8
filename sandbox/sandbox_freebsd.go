package sandbox

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// netOS confines the network process to Capsicum's capability mode: no
// filesystem namespace, no binding or connecting by address, only the
// descriptors it holds and receives. Call it once serving needs nothing
// more from the system: after the chroot and the drop, after the listener
// and exec channels are open, before serving.
func netOS(r *Report) error {
	// x/sys/unix has no cap_enter wrapper; the system call numbers are
	// there, and raw calls are fine on FreeBSD.
	_, _, errno := unix.Syscall(unix.SYS_CAP_ENTER, 0, 0, 0)
	switch {
	case errno == unix.ENOSYS:
		// A kernel built without options CAPABILITY_MODE.
		r.missing("capsicum: not in this kernel")
		notDumpable(r)
		return nil
	case errno != 0:
		return fmt.Errorf("sandbox: net: cap_enter: %w", errno)
	}
	// Security: assert rather than trust.
	var mode uint32
	if _, _, errno := unix.Syscall(unix.SYS_CAP_GETMODE, uintptr(unsafe.Pointer(&mode)), 0, 0); errno != 0 {
		return fmt.Errorf("sandbox: net: cap_getmode: %w", errno)
	}
	if mode != 1 {
		return errors.New("sandbox: net: not in capability mode after cap_enter")
	}
	r.applied("capsicum: capability mode (no filesystem, no new bindings or connections)")
	notDumpable(r)
	return nil
}

// execOS confines an exec process after its drop. commands are the absolute
// program paths it may run, home the account's home (the working directory
// of commands). Capability mode would forbid both, and is inherited by
// the commands: nothing beyond the kernel's own rule for a process that
// changed its credentials.
func execOS(r *Report, commands []string, home string) error {
	notDumpable(r)
	r.missing("capsicum: not applied, commands are started by path and use the account's files")
	return nil
}

// parentOS confines the parent as far as reload allows: not at all, since a
// reload opens files by name, binds sockets and starts children.
func parentOS(r *Report) error {
	r.missing("capsicum: not applied, reload opens files by name, binds sockets and starts children")
	return nil
}
