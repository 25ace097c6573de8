package privsep

import (
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// isTerminal reports whether f is a terminal. It asks through
// SyscallConn rather than File.Fd, which would switch f to blocking mode.
func isTerminal(f *os.File) bool {
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	tty := false
	rc.Control(func(fd uintptr) {
		_, err := unix.IoctlGetTermios(int(fd), ioctlGetTermios)
		tty = err == nil
	})
	return tty
}

// ttyRelay hides a terminal behind a plain io.Writer. Given a writer that
// is not an *os.File, os/exec makes a pipe for the child and copies from
// it, so the child writes to the pipe and never holds the terminal.
//
// Security: a process holding a terminal descriptor can push input into
// the operator's shell with TIOCSTI (and read what is typed, change its
// modes); children run with less privilege and must not get one. A value
// type with one comparable field, so relays of the same file compare
// equal and os/exec gives stdout and stderr one pipe, as it would the
// file.
type ttyRelay struct{ f *os.File }

func (r ttyRelay) Write(p []byte) (int, error) { return r.f.Write(p) }

// noTerminal returns w, or a relay for it when w is a terminal.
func noTerminal(w io.Writer) io.Writer {
	if f, ok := w.(*os.File); ok && f != nil && isTerminal(f) {
		return ttyRelay{f}
	}
	return w
}

func isRelay(w io.Writer) bool {
	_, ok := w.(ttyRelay)
	return ok
}
