package daemontest

import (
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Terminal is a pseudo-terminal the test made: the master side stays with
// the test, the slave side becomes a daemon's controlling terminal.
type Terminal struct {
	Master *os.File
	Slave  *os.File // nil once the daemon has been started on it
	Name   string   // the slave's path, /dev/pts/N
	Rdev   uint64   // the slave's device number
}

// OpenTerminal opens a new pseudo-terminal through /dev/ptmx, as
// posix_openpt, unlockpt and ptsname do, without cgo. Neither side becomes
// the test's controlling terminal (O_NOCTTY). The slave's output
// processing is turned off, so that lines arrive on the master as they
// were written (no \n to \r\n). t.Cleanup closes both sides.
func OpenTerminal(tb testing.TB) *Terminal {
	tb.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		tb.Fatalf("opening /dev/ptmx: %v", err)
	}
	tb.Cleanup(func() { m.Close() })
	var n uint32
	var ioctlErr error
	rc, err := m.SyscallConn()
	if err != nil {
		tb.Fatal(err)
	}
	err = rc.Control(func(fd uintptr) {
		if ioctlErr = unix.IoctlSetPointerInt(int(fd), unix.TIOCSPTLCK, 0); ioctlErr != nil {
			ioctlErr = fmt.Errorf("unlockpt (TIOCSPTLCK): %w", ioctlErr)
			return
		}
		if n, ioctlErr = unix.IoctlGetUint32(int(fd), unix.TIOCGPTN); ioctlErr != nil {
			ioctlErr = fmt.Errorf("ptsname (TIOCGPTN): %w", ioctlErr)
		}
	})
	if err == nil {
		err = ioctlErr
	}
	if err != nil {
		tb.Fatal(err)
	}
	name := fmt.Sprintf("/dev/pts/%d", n)
	s, err := os.OpenFile(name, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		tb.Fatalf("opening %s: %v", name, err)
	}
	tb.Cleanup(func() { s.Close() })
	var st unix.Stat_t
	if err := unix.Fstat(int(s.Fd()), &st); err != nil {
		tb.Fatal(err)
	}
	tio, err := unix.IoctlGetTermios(int(s.Fd()), unix.TCGETS)
	if err != nil {
		tb.Fatalf("%s: TCGETS: %v", name, err)
	}
	tio.Oflag &^= unix.OPOST
	tio.Lflag &^= unix.ECHO
	if err := unix.IoctlSetTermios(int(s.Fd()), unix.TCSETS, tio); err != nil {
		tb.Fatalf("%s: TCSETS: %v", name, err)
	}
	return &Terminal{Master: m, Slave: s, Name: name, Rdev: st.Rdev}
}

// TTYNr is the terminal's number as field 7 (tty_nr) of /proc/PID/stat
// shows it for a process whose controlling terminal it is.
func (term *Terminal) TTYNr() int {
	major, minor := unix.Major(term.Rdev), unix.Minor(term.Rdev)
	return int(minor&0xff | major<<8 | (minor&^0xff)<<12)
}

// StartTerminal is Start with the daemon's stdin, stdout and stderr on the
// slave side of a new pseudo-terminal that is also its controlling
// terminal (a session of its own, as a login shell's job would be), as when
// an operator runs it in the foreground. The log is read from the master
// side. The test's own descriptor of the slave is closed once the daemon
// has it, so that only the daemon and what it hands the terminal to hold
// it.
//
// Unlike Start, the daemon counts as exited once the parent has been
// waited for, whatever still holds the terminal; cleanup closes the master
// after stopping the process tree, which ends the reading.
func StartTerminal(t testing.TB, conf string, o Options) (*Daemon, *Terminal) {
	t.Helper()
	term := OpenTerminal(t)
	d := &Daemon{Name: "imserious", t: t, more: make(chan struct{}), eof: make(chan struct{}), exited: make(chan struct{})}
	if o.Name != "" {
		d.Name += " " + o.Name
	}
	d.Cmd = Command(t, "-c", WriteConfig(t, conf))
	d.Cmd.Env = append(d.Cmd.Env, o.Env...)
	d.Cmd.Stdin, d.Cmd.Stdout, d.Cmd.Stderr = term.Slave, term.Slave, term.Slave
	d.Cmd.SysProcAttr.Setsid = true
	d.Cmd.SysProcAttr.Setctty = true
	d.Cmd.SysProcAttr.Ctty = 0 // the child's stdin
	if err := d.Cmd.Start(); err != nil {
		t.Fatalf("starting %s on %s: %v", d.Cmd.Path, term.Name, err)
	}
	term.Slave.Close()
	term.Slave = nil
	go d.read(term.Master)
	go func() {
		d.Cmd.Wait()
		close(d.exited)
	}()
	var kids map[int]string
	t.Cleanup(func() {
		StopTree(t, d.Name, d.Cmd, d.exited, kids, WaitLimit)
		// Reading ends with EIO once nothing holds the slave, or now.
		term.Master.Close()
		select {
		case <-d.eof:
		case <-time.After(WaitLimit):
			t.Errorf("%s: reading %s did not end after closing it", d.Name, term.Name)
		}
		if t.Failed() {
			t.Logf("%s log (from %s):\n%s", d.Name, term.Name, d.All())
		}
	})
	l := d.WaitFor("listening", func(l Line) bool { return l.Str("msg") == "listening" })
	d.Addr = l.Str("addr")
	if d.Addr == "" {
		t.Fatalf("%s: no address in %v", d.Name, l)
	}
	kids = Descendants(d.Cmd.Process.Pid)
	return d, term
}
