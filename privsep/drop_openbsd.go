package privsep

import "golang.org/x/sys/unix"

func getresuid() (r, e, s int) { return unix.Getresuid() }
func getresgid() (r, e, s int) { return unix.Getresgid() }
