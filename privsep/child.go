package privsep

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// parentFD is where a child finds its channel to the parent: the first of
// exec.Cmd.ExtraFiles, as OpenBSD's daemons put it.
const parentFD = 3

// relayWaitDelay bounds how long Cmd.Wait waits for a relay pipe to close
// after the child has exited.
const relayWaitDelay = 5 * time.Second

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
// environment, and its own session, so a ^C on the terminal reaches only
// the parent, which stops the children in order.
//
// Security: no child holds or can open the operator's terminal. Its own
// session has no controlling terminal, so opening /dev/tty fails (ENXIO),
// and a stdout or stderr that is a terminal is relayed: the child writes
// to a pipe and the parent copies to the terminal (Cmd.Wait then also
// waits for the copy, at most relayWaitDelay after the child exits).
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
		Env:    []string{},
		Stdin:  nil, // /dev/null
		Stdout: noTerminal(stdout),
		Stderr: noTerminal(stderr),
		// Only the socketpair end: anything else here, a terminal above
		// all, would reach the child whatever CloseOnExecFrom did.
		ExtraFiles: []*os.File{theirs},
		// A session leader is its own process group, and its new session
		// has no controlling terminal, so /dev/tty does not open in it.
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	if isRelay(cmd.Stdout) || isRelay(cmd.Stderr) {
		// A descendant that inherited the relay pipe must not hold Wait
		// up after the child has gone.
		cmd.WaitDelay = relayWaitDelay
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
