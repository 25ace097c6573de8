//go:build openbsd || freebsd

package privsep

import "golang.org/x/sys/unix"

// ioctlGetTermios reads a terminal's modes; it fails on anything else.
const ioctlGetTermios = unix.TIOCGETA
