package peercred

import "golang.org/x/sys/unix"

// OpenBSD's SO_PEERCRED fills a struct sockpeercred { uid_t uid; gid_t
// gid; pid_t pid; }, for which x/sys has no getter. The kernel copies at
// most the caller's buffer, so the 8-byte struct linger of GetsockoptLinger
// receives uid and gid, in that order.
func peerUID(fd int) (int, error) {
	l, err := unix.GetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return -1, err
	}
	return int(uint32(l.Onoff)), nil
}
