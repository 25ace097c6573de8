package privsep

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func init() {
	childRoles["probe"] = childProbe
	childRoles["drop"] = childDrop
}

const (
	msgReport = 1
	msgEcho   = 2
)

// syncBuffer collects a child's output for failure messages; os/exec
// writes to it from its own goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startTestChild starts this test binary in role and makes sure it is
// gone at the end of the test.
func startTestChild(t *testing.T, role string) (*Child, *syncBuffer) {
	t.Helper()
	out := &syncBuffer{}
	ch, err := StartChild("test-"+role, []string{childFlag, role}, out, out)
	if err != nil {
		t.Fatalf("StartChild: %v", err)
	}
	ch.Conn.SetDeadline(time.Now().Add(guard))
	t.Cleanup(func() {
		ch.Conn.Close()
		if ch.Cmd.ProcessState == nil {
			ch.Cmd.Process.Kill()
			ch.Cmd.Wait()
		}
	})
	return ch, out
}

// waitExit waits for the child, failing the test if it does not exit on
// its own; the timer only bounds a hung test.
func waitExit(t *testing.T, ch *Child, out *syncBuffer) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- ch.Cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("wait for child: %v", err)
		}
		return ch.Cmd.ProcessState.ExitCode()
	case <-time.After(guard):
		t.Fatalf("child %s did not exit; output:\n%s", ch.Name, out)
		return -1
	}
}

func recvReport(t *testing.T, ch *Child, out *syncBuffer, v any) {
	t.Helper()
	m, err := ch.Conn.Recv()
	if err != nil {
		t.Fatalf("Recv report: %v; child output:\n%s", err, out)
	}
	if m.Type != msgReport {
		t.Fatalf("got message type %d, want report", m.Type)
	}
	if err := DecodeJSON(m.Payload, v); err != nil {
		t.Fatalf("decode report: %v", err)
	}
}

// inheritedFDs lists the open descriptors below max that lack
// close-on-exec, asking fcntl about each, which opens nothing itself
// (unlike reading /proc/self/fd). At the start of a process these are
// exactly the inherited ones: exec closed those with the flag, and the
// runtime sets it on everything it opens (Go keeps cgroup files open).
func inheritedFDs(max int) []int {
	var open []int
	for fd := range max {
		if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil && flags&unix.FD_CLOEXEC == 0 {
			open = append(open, fd)
		}
	}
	return open
}

type probeReport struct {
	Args        []string
	Env         []string
	Inherited   []int
	FD3Open     bool
	FD3Cloexec  bool
	Pgid, Pid   int
	StdinDevNul bool
	Ls          string
	LsErr       string
}

func childProbe() int {
	// First, before anything in this process opens a descriptor.
	open := inheritedFDs(1024)
	rep := probeReport{Args: os.Args, Env: os.Environ(), Inherited: open, Pid: os.Getpid(), Pgid: syscall.Getpgrp()}
	c, err := ParentConn()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if flags, err := unix.FcntlInt(3, unix.F_GETFD, 0); err == nil {
		rep.FD3Open, rep.FD3Cloexec = true, flags&unix.FD_CLOEXEC != 0
	}
	var in, null unix.Stat_t
	if unix.Fstat(0, &in) == nil && unix.Stat("/dev/null", &null) == nil {
		rep.StdinDevNul = in.Rdev == null.Rdev && in.Mode&unix.S_IFMT == unix.S_IFCHR
	}
	// What a command started from here inherits: the shell and ls see
	// every descriptor not marked close-on-exec.
	ls, err := exec.Command("/bin/sh", "-c", "/bin/ls -l /proc/self/fd").Output()
	rep.Ls = string(ls)
	if err != nil {
		rep.LsErr = err.Error()
	}
	b, _ := EncodeJSON(rep)
	if err := c.Send(msgReport, b); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	for {
		m, err := c.Recv()
		if err == io.EOF {
			return 0
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 3
		}
		err = c.Send(msgEcho, m.Payload, m.Files...)
		for _, f := range m.Files {
			f.Close()
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 3
		}
	}
}

// lsFDs parses `ls -l /proc/self/fd`, leaving out the descriptor ls
// itself holds on that directory.
func lsFDs(t *testing.T, out string) []int {
	t.Helper()
	var fds []int
	for line := range strings.Lines(out) {
		fields := strings.Fields(line)
		i := slices.Index(fields, "->")
		if i < 1 || i+1 >= len(fields) {
			continue
		}
		target := fields[i+1]
		if strings.HasPrefix(target, "/proc/") && strings.HasSuffix(target, "/fd") {
			continue
		}
		fd, err := strconv.Atoi(fields[i-1])
		if err != nil {
			t.Fatalf("unparsable ls line %q", line)
		}
		fds = append(fds, fd)
	}
	return fds
}

func TestStartChild(t *testing.T) {
	// A descriptor without close-on-exec, as a daemon may inherit from
	// whatever started it: the child must not get it.
	leak, err := unix.Dup(2)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(leak)
	ch, out := startTestChild(t, "probe")
	var rep probeReport
	recvReport(t, ch, out, &rep)

	if want := []string{os.Args[0], childFlag, "probe"}; !slices.Equal(rep.Args, want) {
		t.Errorf("child argv %q, want %q", rep.Args, want)
	}
	if len(rep.Env) != 0 {
		t.Errorf("child environment %q, want empty", rep.Env)
	}
	if want := []int{0, 1, 2, 3}; !slices.Equal(rep.Inherited, want) {
		t.Errorf("child inherited descriptors %v, want %v", rep.Inherited, want)
	}
	if rep.FD3Open && !rep.FD3Cloexec {
		t.Error("after ParentConn, fd 3 is open without close-on-exec")
	}
	if rep.Pgid != rep.Pid || rep.Pid != ch.Cmd.Process.Pid {
		t.Errorf("child pid %d in process group %d, want its own group (started pid %d)", rep.Pid, rep.Pgid, ch.Cmd.Process.Pid)
	}
	if !rep.StdinDevNul {
		t.Error("child stdin is not /dev/null")
	}
	if rep.LsErr != "" {
		t.Fatalf("ls in child: %s", rep.LsErr)
	}
	if got := lsFDs(t, rep.Ls); !slices.Equal(got, []int{0, 1, 2}) {
		t.Errorf("a command started by the child inherits descriptors %v, want [0 1 2]; ls said:\n%s", got, rep.Ls)
	}

	// The channel works both ways, descriptors included.
	r, w := pipe(t)
	if err := ch.Conn.Send(msgEcho, []byte("ping"), w); err != nil {
		t.Fatalf("Send to child: %v", err)
	}
	w.Close()
	m, err := ch.Conn.Recv()
	if err != nil {
		t.Fatalf("Recv echo: %v; child output:\n%s", err, out)
	}
	if m.Type != msgEcho || string(m.Payload) != "ping" || len(m.Files) != 1 {
		t.Fatalf("echo: type %d payload %q %d files", m.Type, m.Payload, len(m.Files))
	}
	if _, err := m.Files[0].Write([]byte("pong")); err != nil {
		t.Fatalf("write through the descriptor the child sent back: %v", err)
	}
	m.Files[0].Close()

	// Closing our end is the child's signal to exit.
	ch.Conn.Close()
	if code := waitExit(t, ch, out); code != 0 {
		t.Fatalf("child exited %d after EOF, want 0; output:\n%s", code, out)
	}
	// The child closed its copy of the pipe too, or this never ends.
	r.SetReadDeadline(time.Now().Add(guard))
	if b, err := io.ReadAll(r); err != nil || string(b) != "pong" {
		t.Fatalf("pipe read %q, %v", b, err)
	}
}

func TestStartChildParentSeesEOF(t *testing.T) {
	ch, out := startTestChild(t, "probe")
	var rep probeReport
	recvReport(t, ch, out, &rep)
	// The parent learns of a child's death by EOF, which needs the parent
	// to have closed its copy of the child's end after starting it.
	if err := ch.Cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.Conn.Recv(); err != io.EOF {
		t.Fatalf("Recv after the child died = %v, want io.EOF", err)
	}
	waitExit(t, ch, out)
}
