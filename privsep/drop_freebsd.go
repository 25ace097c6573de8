package privsep

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// x/sys/unix has no Getresuid for FreeBSD; the system calls exist (360,
// 361) and raw calls are allowed there. On failure the ids read back as
// -1, which never matches and so fails the verification.

func getresuid() (r, e, s int) { return getres(unix.SYS_GETRESUID) }
func getresgid() (r, e, s int) { return getres(unix.SYS_GETRESGID) }

func getres(trap uintptr) (r, e, s int) {
	var ri, ei, si uint32
	_, _, errno := unix.Syscall(trap, uintptr(unsafe.Pointer(&ri)), uintptr(unsafe.Pointer(&ei)), uintptr(unsafe.Pointer(&si)))
	if errno != 0 {
		return -1, -1, -1
	}
	return int(ri), int(ei), int(si)
}
