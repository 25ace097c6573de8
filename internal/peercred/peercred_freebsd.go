package peercred

import "golang.org/x/sys/unix"

// getpeereid(3) is LOCAL_PEERCRED underneath.
func peerUID(fd int) (int, error) {
	cred, err := unix.GetsockoptXucred(fd, unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
	if err != nil {
		return -1, err
	}
	return int(cred.Uid), nil
}
