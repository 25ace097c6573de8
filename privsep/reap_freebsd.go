//go:build freebsd && (amd64 || arm64 || riscv64)

package privsep

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// From FreeBSD's sys/procctl.h and sys/wait.h; x/sys/unix has the system
// call number but no procctl wrapper.
const (
	pPID               = 0 // idtype_t P_PID
	procReapAcquire    = 2
	procReapStatus     = 4
	procReapGetpids    = 5
	reaperStatusOwned  = 0x1
	reaperPidinfoValid = 0x1
	reaperPidinfoChild = 0x2
)

type reaperStatus struct {
	flags       uint32
	children    uint32
	descendants uint32
	reaper      int32
	pid         int32
	_           [15]uint32
}

type reaperPidinfo struct {
	pid     int32
	subtree int32
	flags   uint32
	_       [15]uint32
}

type reaperPids struct {
	count uint32
	_     [15]uint32
	pids  *reaperPidinfo
}

// procctl calls procctl(P_PID, getpid(), com, data). The file is limited
// to 64-bit systems, where the 64-bit id_t is one register; 32-bit ones
// would need it split, per architecture, and get reap_other.go.
func procctl(com int, data unsafe.Pointer) error {
	_, _, errno := unix.Syscall6(unix.SYS_PROCCTL, pPID, uintptr(unix.Getpid()), uintptr(com), uintptr(data), 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

func reapStatus() (reaperStatus, error) {
	var st reaperStatus
	err := procctl(procReapStatus, unsafe.Pointer(&st))
	runtime.KeepAlive(&st)
	return st, err
}

// BecomeSubreaper makes this process the reaper of its descendants
// (procctl PROC_REAP_ACQUIRE): a process that a command left behind is
// re-parented to it, not to init, when its parents die, so Children finds
// it.
//
// Security: it reads the status back and fails unless it took effect.
func BecomeSubreaper() error {
	// EBUSY: already a reaper, which is what was asked.
	if err := procctl(procReapAcquire, nil); err != nil && !errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("privsep: procctl PROC_REAP_ACQUIRE: %w", err)
	}
	st, err := reapStatus()
	if err != nil {
		return fmt.Errorf("privsep: procctl PROC_REAP_STATUS: %w", err)
	}
	if st.flags&reaperStatusOwned == 0 {
		return errors.New("privsep: reaper setting did not take effect")
	}
	return nil
}

// Children returns the pids of this process's children, zombies included,
// from PROC_REAP_GETPIDS. That lists the descendants of a reaper, so it
// works only once BecomeSubreaper has succeeded (otherwise it would list
// init's): a best effort documented as such, and an error before.
func Children() ([]int, error) {
	st, err := reapStatus()
	if err != nil {
		return nil, fmt.Errorf("privsep: children: procctl PROC_REAP_STATUS: %w", err)
	}
	if st.flags&reaperStatusOwned == 0 {
		return nil, errors.New("privsep: children: not a reaper (BecomeSubreaper first)")
	}
	n := int(st.descendants) + 16
	for range 8 {
		infos := make([]reaperPidinfo, n)
		rp := reaperPids{count: uint32(n), pids: &infos[0]}
		err := procctl(procReapGetpids, unsafe.Pointer(&rp))
		runtime.KeepAlive(&rp)
		runtime.KeepAlive(infos)
		if err != nil {
			return nil, fmt.Errorf("privsep: children: procctl PROC_REAP_GETPIDS: %w", err)
		}
		if infos[n-1].flags&reaperPidinfoValid != 0 {
			n *= 2 // full: there may be more than fit
			continue
		}
		var pids []int
		for _, pi := range infos {
			if pi.flags&reaperPidinfoValid == 0 {
				break
			}
			if pi.flags&reaperPidinfoChild != 0 {
				pids = append(pids, int(pi.pid))
			}
		}
		return pids, nil
	}
	return nil, errors.New("privsep: children: descendants kept multiplying")
}
