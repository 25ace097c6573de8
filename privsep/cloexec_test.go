package privsep

import (
	"testing"

	"golang.org/x/sys/unix"
)

// leakyFD returns a descriptor without close-on-exec (dup(2) does not
// set it), closed at the end of the test.
func leakyFD(t *testing.T) int {
	t.Helper()
	fd, err := unix.Dup(2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if cloexec(t, fd) {
		t.Fatal("dup set close-on-exec; the test cannot tell anything")
	}
	return fd
}

func cloexec(t *testing.T, fd int) bool {
	t.Helper()
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	if err != nil {
		t.Fatalf("F_GETFD %d: %v", fd, err)
	}
	return flags&unix.FD_CLOEXEC != 0
}

func TestCloseOnExecFrom(t *testing.T) {
	for _, tc := range []struct {
		name string
		fn   func(int) error
	}{
		{"CloseOnExecFrom", CloseOnExecFrom},
		{"portable loop", closeOnExecLoop},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fd := leakyFD(t)
			if err := tc.fn(3); err != nil {
				t.Fatal(err)
			}
			if !cloexec(t, fd) {
				t.Errorf("fd %d still lacks close-on-exec", fd)
			}
			// Below first is left alone.
			fd = leakyFD(t)
			if err := tc.fn(fd + 1); err != nil {
				t.Fatal(err)
			}
			if cloexec(t, fd) {
				t.Errorf("fd %d below the range got close-on-exec", fd)
			}
		})
	}
	if err := CloseOnExecFrom(-1); err == nil {
		t.Error("CloseOnExecFrom(-1) succeeded")
	}
}
