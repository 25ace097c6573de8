package privsep

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func init() {
	childRoles["tty-parent"] = childTTYParent
	childRoles["tty-child"] = childTTYChild
}

const (
	ttyOutMarker = "tty-child-stdout-marker"
	ttyErrMarker = "tty-child-stderr-marker"
)

type ttyChildReport struct {
	Pid         int
	DevTTY      string // "opened", or why it did not
	DevTTYENXIO bool
}

type ttyParentReport struct {
	Pid       int
	StdoutTTY bool // stdout and stderr are the terminal
	HasCtty   bool // /dev/tty opens: the terminal controls this session
	Child     ttyChildReport
}

// childTTYChild is started by childTTYParent through StartChild: it
// writes to its stdout and stderr, tries the controlling terminal, and
// stays until its parent closes the channel, so the test can look at it
// in /proc.
func childTTYChild() int {
	c, err := ParentConn()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fmt.Fprintln(os.Stdout, ttyOutMarker)
	fmt.Fprintln(os.Stderr, ttyErrMarker)
	rep := ttyChildReport{Pid: os.Getpid(), DevTTY: "opened"}
	if f, err := os.OpenFile("/dev/tty", os.O_RDWR, 0); err == nil {
		f.Close()
	} else {
		rep.DevTTY, rep.DevTTYENXIO = err.Error(), errors.Is(err, syscall.ENXIO)
	}
	b, _ := EncodeJSON(rep)
	if err := c.Send(msgReport, b); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if _, err := c.Recv(); err != io.EOF {
		fmt.Fprintln(os.Stderr, "tty child: want EOF:", err)
		return 3
	}
	return 0
}

// childTTYParent plays the daemon's parent started from an operator's
// terminal: its session is controlled by the test's pty, which is also
// its stdout and stderr, and it starts a child with StartChild the way
// the daemon does. It reports to the test, then waits for EOF.
func childTTYParent() int {
	test, err := ParentConn()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	rep := ttyParentReport{Pid: os.Getpid(), StdoutTTY: isTerminal(os.Stdout) && isTerminal(os.Stderr)}
	if f, err := os.OpenFile("/dev/tty", os.O_RDWR, 0); err == nil {
		rep.HasCtty = true
		f.Close()
	}
	ch, err := StartChild("tty-child", []string{childFlag, "tty-child"}, os.Stdout, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ch.Conn.SetDeadline(time.Now().Add(guard))
	m, err := ch.Conn.Recv()
	if err != nil {
		fmt.Fprintln(os.Stderr, "tty parent: child report:", err)
		return 2
	}
	if err := DecodeJSON(m.Payload, &rep.Child); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	b, _ := EncodeJSON(rep)
	if err := test.Send(msgReport, b); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if _, err := test.Recv(); err != io.EOF {
		fmt.Fprintln(os.Stderr, "tty parent: want EOF:", err)
		return 3
	}
	ch.Conn.Close()
	if err := ch.Cmd.Wait(); err != nil {
		fmt.Fprintln(os.Stderr, "tty parent: child:", err)
		return 4
	}
	return 0
}

// openPTY opens a pseudo-terminal pair without cgo (what posix_openpt,
// unlockpt and ptsname do), neither end becoming this process's
// controlling terminal.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open /dev/ptmx: %v", err)
	}
	t.Cleanup(func() { master.Close() })
	rc, err := master.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n uint32
	var ierr error
	rc.Control(func(fd uintptr) {
		if ierr = unix.IoctlSetPointerInt(int(fd), unix.TIOCSPTLCK, 0); ierr == nil {
			n, ierr = unix.IoctlGetUint32(int(fd), unix.TIOCGPTN)
		}
	})
	if ierr != nil {
		t.Fatalf("unlock pty: %v", ierr)
	}
	slave, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open pty slave: %v", err)
	}
	t.Cleanup(func() { slave.Close() })
	return master, slave
}

// ptyOutput collects what arrives on the master, waking wait on each read.
type ptyOutput struct {
	buf   syncBuffer
	wake  chan struct{}
	ended chan struct{}
}

func readPTY(t *testing.T, master *os.File) *ptyOutput {
	t.Helper()
	// The master must be in the poller for Close to end the reader.
	if err := master.SetReadDeadline(time.Time{}); err != nil {
		t.Fatalf("pty master not pollable: %v", err)
	}
	o := &ptyOutput{wake: make(chan struct{}, 1), ended: make(chan struct{})}
	go func() {
		defer close(o.ended)
		b := make([]byte, 4096)
		for {
			n, err := master.Read(b)
			o.buf.Write(b[:n])
			select {
			case o.wake <- struct{}{}:
			default:
			}
			if err != nil {
				return // EIO once no slave is open, or closed
			}
		}
	}()
	t.Cleanup(func() { master.Close(); <-o.ended })
	return o
}

// waitFor returns once every string is in the output.
func (o *ptyOutput) waitFor(t *testing.T, want ...string) {
	t.Helper()
	timeout := time.After(guard)
	for {
		have := o.buf.String()
		missing := ""
		for _, w := range want {
			if !strings.Contains(have, w) {
				missing = w
			}
		}
		if missing == "" {
			return
		}
		select {
		case <-o.wake:
		case <-o.ended:
			t.Fatalf("terminal closed without %q; it showed:\n%s", missing, o.buf.String())
		case <-timeout:
			t.Fatalf("%q never reached the terminal; it showed:\n%s", missing, o.buf.String())
		}
	}
}

// sessionOf returns the process group, session and tty_nr (the device of
// the controlling terminal, 0 for none) from /proc/<pid>/stat.
func sessionOf(t *testing.T, pid int) (pgrp, session int, ttyNr uint64) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The command name in parentheses may hold spaces; fields follow
	// the last ')': state ppid pgrp session tty_nr.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 5 {
		t.Fatalf("/proc/%d/stat: %q", pid, b)
	}
	pgrp, err1 := strconv.Atoi(f[2])
	session, err2 := strconv.Atoi(f[3])
	ttyNr, err3 := strconv.ParseUint(f[4], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		t.Fatalf("/proc/%d/stat: %v", pid, err)
	}
	return pgrp, session, ttyNr
}

// TestStartChildFromTerminal starts a parent whose session the pty
// controls and whose stdout and stderr are the pty, as when an operator
// runs the daemon in the foreground, and checks that the child it starts
// has no way to the terminal: no descriptor, no controlling terminal, and
// yet its output shows on the terminal.
func TestStartChildFromTerminal(t *testing.T) {
	master, slave := openPTY(t)
	var slaveStat unix.Stat_t
	if err := unix.Fstat(int(slave.Fd()), &slaveStat); err != nil {
		t.Fatal(err)
	}
	out := readPTY(t, master)

	ours, theirs, err := Socketpair()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := NewConn(ours)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(guard))
	self, _ := selfExe()
	parent := &exec.Cmd{
		Path:       self,
		Args:       []string{os.Args[0], childFlag, "tty-parent"},
		Env:        []string{},
		Stdin:      slave,
		Stdout:     slave,
		Stderr:     slave,
		ExtraFiles: []*os.File{theirs},
		// A session of its own with the pty (its stdin, fd 0) as the
		// controlling terminal: the test's own session may have none.
		SysProcAttr: &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0},
	}
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	theirs.Close()
	// From here on only the processes under test hold the slave.
	slave.Close()
	exited := make(chan error, 1)
	go func() { exited <- parent.Wait() }()
	defer func() {
		if parent.ProcessState == nil {
			parent.Process.Kill()
			<-exited
		}
	}()

	m, err := conn.Recv()
	if err != nil {
		t.Fatalf("report from the tty parent: %v; the terminal showed:\n%s", err, out.buf.String())
	}
	var rep ttyParentReport
	if err := DecodeJSON(m.Payload, &rep); err != nil {
		t.Fatal(err)
	}

	// Otherwise the test proves nothing: the parent must be what an
	// operator's shell starts.
	_, parentSession, parentTTY := sessionOf(t, rep.Pid)
	if !rep.StdoutTTY || !rep.HasCtty || parentTTY != slaveStat.Rdev {
		t.Fatalf("tty parent: stdout and stderr a terminal %v, /dev/tty opens %v, tty_nr %#x (pty %#x): the setup is wrong", rep.StdoutTTY, rep.HasCtty, parentTTY, slaveStat.Rdev)
	}

	pid := rep.Child.Pid
	pgrp, session, ttyNr := sessionOf(t, pid)
	if session != pid || pgrp != pid || session == parentSession {
		t.Errorf("child %d: process group %d, session %d (parent's %d), want a session of its own", pid, pgrp, session, parentSession)
	}
	if ttyNr != 0 {
		t.Errorf("child %d: controlling terminal %#x (tty_nr), want none", pid, ttyNr)
	}
	if !rep.Child.DevTTYENXIO {
		t.Errorf("child %d: open /dev/tty: %s, want ENXIO", pid, rep.Child.DevTTY)
	}

	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		link, err := os.Readlink(dir + "/" + e.Name())
		if err != nil {
			continue // closed meanwhile
		}
		var st unix.Stat_t
		onPTY := unix.Stat(dir+"/"+e.Name(), &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == slaveStat.Rdev
		if onPTY || strings.HasPrefix(link, "/dev/pts/") || link == "/dev/ptmx" || link == "/dev/tty" {
			t.Errorf("child %d: fd %s is %s, a terminal", pid, e.Name(), link)
		}
		if (e.Name() == "1" || e.Name() == "2") && !strings.HasPrefix(link, "pipe:") {
			t.Errorf("child %d: fd %s is %s, want the relay pipe", pid, e.Name(), link)
		}
	}

	// The relay: what the child wrote reaches the terminal.
	out.waitFor(t, ttyOutMarker, ttyErrMarker)

	conn.Close()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("tty parent: %v; the terminal showed:\n%s", err, out.buf.String())
		}
	case <-time.After(guard):
		t.Fatalf("tty parent did not exit; the terminal showed:\n%s", out.buf.String())
	}
}

// A stdout that is a file but not a terminal (a pipe to a log collector,
// say) still reaches the child as it is, with no relay in between.
func TestStartChildFileNotRelayed(t *testing.T) {
	r, w := pipe(t)
	ch, err := StartChild("test-probe", []string{childFlag, "probe"}, w, w)
	if err != nil {
		t.Fatal(err)
	}
	ch.Conn.SetDeadline(time.Now().Add(guard))
	defer func() {
		ch.Conn.Close()
		ch.Cmd.Wait()
	}()
	out := &syncBuffer{}
	go io.Copy(out, r)
	var rep probeReport
	recvReport(t, ch, out, &rep)
	want, err := w.Stat()
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range []int{1, 2} {
		got, err := os.Stat(fmt.Sprintf("/proc/%d/fd/%d", rep.Pid, fd))
		if err != nil {
			t.Fatal(err)
		}
		if !os.SameFile(got, want) {
			t.Errorf("child fd %d is not the pipe passed as stdout and stderr", fd)
		}
	}
	if ch.Cmd.WaitDelay != 0 {
		t.Errorf("WaitDelay %v without a relay", ch.Cmd.WaitDelay)
	}
}

func TestIsTerminal(t *testing.T) {
	_, slave := openPTY(t)
	_, w := pipe(t)
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	for _, tc := range []struct {
		f    *os.File
		want bool
	}{{slave, true}, {w, false}, {null, false}} {
		if got := isTerminal(tc.f); got != tc.want {
			t.Errorf("isTerminal(%s) = %v, want %v", tc.f.Name(), got, tc.want)
		}
	}
}
