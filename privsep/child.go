package privsep

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"
)

// parentFD is where a child finds its channel to the parent: the first of
// exec.Cmd.ExtraFiles, as OpenBSD's daemons put it.
const parentFD = 3

// Child is a started child process and the parent's end of its channel.
// The caller supervises it: Cmd.Wait must be called for every child (no
// other reaper may run next to os/exec).
type Child struct {
	Name string
	Cmd  *exec.Cmd
	Conn *Conn
}

// StartChild starts the running binary again with args after argv[0]
// (keeping argv[0], so ps shows e.g. "imserious -R net" and test binaries
// can dispatch on their flags). The child gets stdin /dev/null, the given
// stdout and stderr (nil: /dev/null), its end of a fresh socketpair as
// fd 3 and no other descriptor (see CloseOnExecFrom), an empty
// environment, and its own process group, so a ^C on the terminal reaches
// only the parent, which stops the children in order.
func StartChild(name string, args []string, stdout, stderr io.Writer) (*Child, error) {
	path, err := selfExe()
	if err != nil {
		return nil, fmt.Errorf("privsep: start %s: %w", name, err)
	}
	// Only the descriptors named here may reach the child.
	if err := CloseOnExecFrom(3); err != nil {
		return nil, fmt.Errorf("privsep: start %s: %w", name, err)
	}
	ours, theirs, err := Socketpair()
	if err != nil {
		return nil, fmt.Errorf("privsep: start %s: %w", name, err)
	}
	cmd := &exec.Cmd{
		Path: path,
		Args: append([]string{os.Args[0]}, args...),
		// Not nil, which would inherit the parent's environment: children
		// get nothing implicit from whoever started the daemon.
		Env:         []string{},
		Stdin:       nil, // /dev/null
		Stdout:      stdout,
		Stderr:      stderr,
		ExtraFiles:  []*os.File{theirs},
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
	}
	conn, err := NewConn(ours)
	if err != nil {
		theirs.Close()
		return nil, fmt.Errorf("privsep: start %s: %w", name, err)
	}
	err = cmd.Start()
	// The child has its copy now. Keeping the parent's copy of the child
	// end open would stop Conn.Recv from seeing EOF when the child dies.
	theirs.Close()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("privsep: start %s: %s: %w", name, path, err)
	}
	return &Child{Name: name, Cmd: cmd, Conn: conn}, nil
}

// ParentConn returns the channel to the parent in a process started by
// StartChild. fd 3 arrives without close-on-exec; ParentConn replaces it
// by a close-on-exec duplicate and closes it, so a command the child
// starts cannot inherit the channel and forge messages on it.
func ParentConn() (*Conn, error) {
	return parentConn(parentFD)
}

func parentConn(fd int) (*Conn, error) {
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
		return nil, fmt.Errorf("privsep: channel to parent on fd %d: %w (not started by the parent?)", fd, err)
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return nil, fmt.Errorf("privsep: channel to parent on fd %d: not a socket: %w", fd, err)
	}
	if typ != unix.SOCK_SEQPACKET {
		return nil, fmt.Errorf("privsep: channel to parent on fd %d: socket type %d, want a unix seqpacket socket", fd, typ)
	}
	c, err := NewConn(os.NewFile(uintptr(fd), fmt.Sprintf("fd %d", fd)))
	if err != nil {
		return nil, fmt.Errorf("privsep: channel to parent: %w", err)
	}
	return c, nil
}
