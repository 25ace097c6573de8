// Package peercred tells who is at the other end of a Unix socket: the
// kernel's word (SO_PEERCRED, getpeereid), never the peer's.
package peercred

import (
	"fmt"
	"net"
)

// UID returns the effective uid of the process that connected c (at the
// time it connected).
func UID(c *net.UnixConn) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	uid, gerr := -1, error(nil)
	if err := raw.Control(func(fd uintptr) { uid, gerr = peerUID(int(fd)) }); err != nil {
		return -1, err
	}
	if gerr != nil {
		return -1, fmt.Errorf("peer credentials: %w", gerr)
	}
	return uid, nil
}
