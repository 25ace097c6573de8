//go:build openbsd || freebsd

package privsep

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// On the BSDs credentials belong to the process, so single calls suffice.

func setgroups(groups []int) error { return syscall.Setgroups(groups) }
func setresgid(gid int) error      { return unix.Setresgid(gid, gid, gid) }
func setresuid(uid int) error      { return unix.Setresuid(uid, uid, uid) }
