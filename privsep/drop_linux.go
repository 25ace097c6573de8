package privsep

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// On Linux credentials are per thread in the kernel. The syscall package
// applies these to every thread of the process (since Go 1.16); the
// x/sys/unix variants are raw single-thread calls and would leave the
// other threads as root.

func setgroups(groups []int) error { return syscall.Setgroups(groups) }
func setresgid(gid int) error      { return syscall.Setresgid(gid, gid, gid) }
func setresuid(uid int) error      { return syscall.Setresuid(uid, uid, uid) }

func getresuid() (r, e, s int) { return unix.Getresuid() }
func getresgid() (r, e, s int) { return unix.Getresgid() }
