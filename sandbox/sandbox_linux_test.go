package sandbox

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imserious/imserious/privsep"
	"golang.org/x/sys/unix"
)

// guard bounds a hung child or connection; nothing waits for it to pass.
const guard = 30 * time.Second

// nobody is the account a child running as root drops to before it is
// confined, as the daemon's children do: restrictions that root could
// escape with CAP_SYS_ADMIN (seccomp without no_new_privs, say) must
// hold for an unprivileged process.
var nobody = privsep.Account{Name: "nobody", UID: 65534, GID: 65534}

func init() {
	childRoles["net"] = func(a []string) int { return netChild(a, Net) }
	childRoles["landlock"] = func(a []string) int {
		return netChild(a, func() (Report, error) {
			var r Report
			if err := noNewPrivs(); err != nil {
				return r, err
			}
			err := landlockNet(&r, false)
			return r, err
		})
	}
	childRoles["seccomp"] = func(a []string) int {
		return netChild(a, func() (Report, error) {
			var r Report
			if err := noNewPrivs(); err != nil {
				return r, err
			}
			err := seccompNet(&r)
			return r, err
		})
	}
	childRoles["nnp"] = func(a []string) int {
		return netChild(a, func() (Report, error) { return Report{}, noNewPrivs() })
	}
	childRoles["exec"] = execChild
	childRoles["parent"] = parentChild
	childRoles["euid"] = func([]string) int {
		fmt.Println(os.Geteuid())
		return 0
	}
}

// netProbe is what a confined network child reports: an errno name (or
// "ok") for each thing it tried.
type netProbe struct {
	Report       Report
	Err          string
	Open         string // open /etc/passwd
	ConnectNew   string // a new TCP socket to a loopback listener
	ConnectOld   string // the same with a socket made before confinement
	ConnectMPTCP string // the same with a new multipath TCP socket
	Exec         string // fork and execve /bin/true
	SetDumpable  string // prctl PR_SET_DUMPABLE 1
	MapExec      string // mmap anonymous memory PROT_EXEC
	CloneFork    string // clone without CLONE_THREAD
	CloneNS      string // clone of a thread into a new user namespace
	Clone3       string // clone3, whose flags a filter cannot see
	NewThreads   int    // distinct threads of goroutines locked afterwards
	Affinity     string // sched_getaffinity, as sysmon calls it every second
	Pread        string // pread on a file opened before, as sysmon reads cpu.max
	Cert         []byte // the DER certificate it serves TLS with
}

func errName(err error) string {
	if err == nil {
		return "ok"
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return unix.ErrnoName(e)
	}
	return err.Error()
}

// dropForTest drops to nobody when root, then makes the process dumpable
// again: the kernel clears the flag when credentials change (to
// fs.suid_dumpable, 0 by default), and the tests must see what the
// sandbox sets, not what the drop left.
func dropForTest() error {
	if os.Geteuid() == 0 {
		if err := privsep.Drop(nobody, ""); err != nil {
			return err
		}
	}
	return unix.Prctl(unix.PR_SET_DUMPABLE, 1, 0, 0, 0)
}

// netChild is a network process in miniature: fd 3 is a listener, fd 4 a
// SOCK_SEQPACKET channel to the test, args[0] the port of a loopback
// listener it must not reach. It opens what the daemon opens before
// confining itself, confines itself with confine, tries what must fail,
// reports, then shows that what must work works: it serves one TLS
// connection, takes a descriptor from the channel and writes on it, and
// exits when the test says bye.
func netChild(args []string, confine func() (Report, error)) int {
	fail := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "net child: "+format+"\n", a...)
		return 3
	}
	port, err := strconv.Atoi(args[0])
	if err != nil {
		return fail("port: %v", err)
	}
	if err := dropForTest(); err != nil {
		return fail("%v", err)
	}
	ln, err := net.FileListener(os.NewFile(3, "listener"))
	if err != nil {
		return fail("listener: %v", err)
	}
	c, err := net.FileConn(os.NewFile(4, "channel"))
	if err != nil {
		return fail("channel: %v", err)
	}
	ctl := c.(*net.UnixConn)
	ctl.SetDeadline(time.Now().Add(guard))
	cert, der, err := selfSigned()
	if err != nil {
		return fail("certificate: %v", err)
	}
	old, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fail("socket: %v", err)
	}
	self, err := os.Open("/proc/self/stat")
	if err != nil {
		return fail("%v", err)
	}
	// Threads that exist before: confinement must reach them too.
	stop := make(chan struct{})
	defer close(stop)
	lockThreads(4, stop)

	rep, err := confine()
	p := netProbe{Report: rep, Cert: der}
	if err != nil {
		p.Err = err.Error()
	} else {
		target := &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}
		_, err = os.Open("/etc/passwd")
		p.Open = errName(err)
		p.ConnectNew = errName(connect(unix.IPPROTO_TCP, target))
		p.ConnectMPTCP = errName(connect(unix.IPPROTO_MPTCP, target))
		p.ConnectOld = errName(unix.Connect(old, target))
		p.Exec = errName(forkExecTrue())
		p.SetDumpable = errName(unix.Prctl(unix.PR_SET_DUMPABLE, 1, 0, 0, 0))
		p.MapExec = errName(mapExec())
		// Flags the kernel itself refuses with EINVAL, so that nothing is
		// started when the filter lets the call through.
		p.CloneFork = errName(rawClone(unix.CLONE_SIGHAND))
		p.CloneNS = errName(rawClone(unix.CLONE_THREAD | unix.CLONE_SIGHAND | unix.CLONE_VM | unix.CLONE_NEWUSER))
		_, _, errno := unix.RawSyscall(unix.SYS_CLONE3, 0, 0, 0)
		p.Clone3 = errName(errno)
		var cpus unix.CPUSet
		p.Affinity = errName(unix.SchedGetaffinity(0, &cpus))
		_, err = self.ReadAt(make([]byte, 16), 0)
		p.Pread = errName(err)
		// More locked goroutines than the runtime has idle threads: the
		// runtime must be able to start threads once confined.
		p.NewThreads = len(lockThreads(16, stop))
	}
	b, err := json.Marshal(p)
	if err != nil {
		return fail("%v", err)
	}
	if _, err := ctl.Write(b); err != nil {
		return fail("report: %v", err)
	}
	if p.Err != "" {
		return 1
	}

	conn, err := ln.Accept()
	if err != nil {
		return fail("accept: %v", err)
	}
	conn.SetDeadline(time.Now().Add(guard))
	tc := tls.Server(conn, &tls.Config{Certificates: []tls.Certificate{cert}})
	if _, err := io.WriteString(tc, "hello\n"); err != nil {
		return fail("tls: %v", err)
	}
	tc.Close()

	buf, oob := make([]byte, 64), make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := ctl.ReadMsgUnix(buf, oob)
	if err != nil || string(buf[:n]) != "fd" {
		return fail("receive a descriptor: %q, %v", buf[:n], err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return fail("control message: %v", err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return fail("rights: %v %v", fds, err)
	}
	f := os.NewFile(uintptr(fds[0]), "passed")
	pc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return fail("passed descriptor: %v", err)
	}
	if _, err := io.WriteString(pc, "through the passed descriptor"); err != nil {
		return fail("write on the passed descriptor: %v", err)
	}
	pc.Close()

	n, err = ctl.Read(buf)
	if err != nil || string(buf[:n]) != "bye" {
		return fail("bye: %q, %v", buf[:n], err)
	}
	return 0
}

// lockThreads starts n goroutines, each locked to its own thread until
// stop is closed, and returns their thread ids once all run.
func lockThreads(n int, stop <-chan struct{}) map[int]bool {
	tids := make(chan int)
	for range n {
		go func() {
			runtime.LockOSThread()
			tids <- unix.Gettid()
			<-stop
		}()
	}
	seen := map[int]bool{}
	for range n {
		seen[<-tids] = true
	}
	return seen
}

func mapExec() error {
	b, err := unix.Mmap(-1, 0, os.Getpagesize(), unix.PROT_READ|unix.PROT_EXEC, unix.MAP_PRIVATE|unix.MAP_ANON)
	if err != nil {
		return err
	}
	return unix.Munmap(b)
}

func rawClone(flags uintptr) error {
	_, _, errno := unix.RawSyscall6(unix.SYS_CLONE, flags, 0, 0, 0, 0, 0)
	return errno
}

func connect(proto int, to unix.Sockaddr) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Connect(fd, to)
}

// forkExecTrue runs /bin/true with no descriptors at all: os/exec would
// first open /dev/null, and the probe is about execve.
func forkExecTrue() error {
	pid, err := syscall.ForkExec("/bin/true", []string{"true"}, &syscall.ProcAttr{})
	if err != nil {
		return err
	}
	var ws syscall.WaitStatus
	if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil {
		return err
	}
	if ws.ExitStatus() != 0 {
		return fmt.Errorf("/bin/true: %v", ws)
	}
	return nil
}

func selfSigned() (tls.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		DNSNames:     []string{"sandbox.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, der, nil
}

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

// startChild starts this test binary in role, killed at the end of the
// test if it is still there.
func startChild(t *testing.T, role string, args []string, files ...*os.File) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	out := &syncBuffer{}
	cmd := exec.Command(os.Args[0], append([]string{childFlag, role}, args...)...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.ExtraFiles = files
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return cmd, out
}

// waitExit waits for the child to exit on its own; the timer only bounds
// a hung test.
func waitExit(t *testing.T, cmd *exec.Cmd, out *syncBuffer) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("wait for child: %v", err)
		}
		return cmd.ProcessState.ExitCode()
	case <-time.After(guard):
		t.Fatalf("child did not exit; output:\n%s", out)
		return -1
	}
}

// threadStatus reads a field of /proc/PID/task/*/status for every thread.
func threadStatus(t *testing.T, pid int, field string) map[string]string {
	t.Helper()
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	vals := map[string]string{}
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, task.Name()))
		if err != nil {
			t.Fatal(err)
		}
		vals[task.Name()] = ""
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && k == field {
				vals[task.Name()] = strings.TrimSpace(v)
			}
		}
	}
	return vals
}

func checkEveryThread(t *testing.T, pid int, field, want string) {
	t.Helper()
	vals := threadStatus(t, pid, field)
	for task, v := range vals {
		if v != want {
			t.Errorf("thread %s: %s %q, want %q", task, field, v, want)
		}
	}
	t.Logf("%s %s on all %d threads", field, want, len(vals))
}

// netRun is one network child's run, checked up to the point where the
// child waits for bye.
type netRun struct {
	probe netProbe
	pid   int
}

// runNet starts a network child in role and checks everything it must
// still be able to do; the caller checks the probe, then calls finish.
func runNet(t *testing.T, role string) (netRun, func()) {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	lnFile, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer lnFile.Close()
	// The address the child must not reach: listening, so that only
	// the sandbox can make a connection fail.
	forbidden, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { forbidden.Close() })
	port := strconv.Itoa(forbidden.Addr().(*net.TCPAddr).Port)
	ctl, theirs := seqpacketPair(t)
	cmd, out := startChild(t, role, []string{port}, lnFile, theirs)
	theirs.Close()
	ctl.SetDeadline(time.Now().Add(guard))

	buf := make([]byte, 64<<10)
	n, err := ctl.Read(buf)
	if err != nil {
		t.Fatalf("read report: %v; child output:\n%s", err, out)
	}
	var p netProbe
	if err := json.Unmarshal(buf[:n], &p); err != nil {
		t.Fatalf("report %q: %v", buf[:n], err)
	}
	t.Logf("%s: applied %q; missing %q", role, p.Report.Applied, p.Report.Missing)
	if p.Err != "" {
		t.Fatalf("%s: %s; child output:\n%s", role, p.Err, out)
	}
	if p.NewThreads != 16 {
		t.Errorf("%d new threads ran, want 16", p.NewThreads)
	}
	want(t, "sched_getaffinity", p.Affinity, "ok")
	want(t, "pread on an open file", p.Pread, "ok")

	// Accept on the inherited listener, and TLS.
	cert, err := x509.ParseCertificate(p.Cert)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	tc, err := tls.DialWithDialer(&net.Dialer{Timeout: guard}, "tcp", ln.Addr().String(),
		&tls.Config{RootCAs: pool, ServerName: "sandbox.test"})
	if err != nil {
		t.Fatalf("TLS to the confined child: %v; child output:\n%s", err, out)
	}
	tc.SetDeadline(time.Now().Add(guard))
	line, err := bufio.NewReader(tc).ReadString('\n')
	tc.Close()
	if err != nil || line != "hello\n" {
		t.Fatalf("TLS read %q, %v; child output:\n%s", line, err, out)
	}

	// A descriptor received after confinement, as the network process
	// receives exec channels and listeners.
	mine, passed := seqpacketPair(t)
	mine.SetDeadline(time.Now().Add(guard))
	if _, _, err := ctl.WriteMsgUnix([]byte("fd"), unix.UnixRights(int(passed.Fd())), nil); err != nil {
		t.Fatal(err)
	}
	passed.Close()
	n, err = mine.Read(buf)
	if err != nil || string(buf[:n]) != "through the passed descriptor" {
		t.Fatalf("read on the passed descriptor %q, %v; child output:\n%s", buf[:n], err, out)
	}
	mine.Close()

	finish := func() {
		t.Helper()
		if _, err := ctl.Write([]byte("bye")); err != nil {
			t.Fatal(err)
		}
		if code := waitExit(t, cmd, out); code != 0 {
			t.Fatalf("child exited %d; output:\n%s", code, out)
		}
		ctl.Close()
	}
	return netRun{probe: p, pid: cmd.Process.Pid}, finish
}

// seqpacketPair returns the test's end as a connection and the child's as
// a file, as privsep makes channels.
func seqpacketPair(t *testing.T) (*net.UnixConn, *os.File) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	mine := os.NewFile(uintptr(fds[0]), "mine")
	defer mine.Close()
	c, err := net.FileConn(mine)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.UnixConn), os.NewFile(uintptr(fds[1]), "theirs")
}

// procNotDumpable reports whether the kernel treats pid as not dumpable: it
// then gives the process's /proc files to root. The children are never
// root (dropForTest), so root's ownership tells.
func procNotDumpable(t *testing.T, pid int) bool {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/status", pid), &st); err != nil {
		t.Fatal(err)
	}
	return st.Uid == 0
}

func want(t *testing.T, what, got string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if got == w {
			return
		}
	}
	t.Errorf("%s: %s, want %s", what, got, strings.Join(wants, " or "))
}

func hasPrefix(list []string, prefix string) bool {
	for _, s := range list {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
}

func TestLandlockAvailable(t *testing.T) {
	abi, why := landlockABI()
	if abi == 0 {
		t.Logf("this kernel has no Landlock: %s", why)
		return
	}
	t.Logf("Landlock ABI v%d on this kernel (go-landlock applies v%d)", mustKernelABI(t), abi)
}

func mustKernelABI(t *testing.T) int {
	v, err := unixLandlockVersion()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// unixLandlockVersion asks the kernel directly, not through go-landlock:
// landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION).
func unixLandlockVersion() (int, error) {
	const createRulesetVersion = 1
	v, _, errno := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, 0, 0, createRulesetVersion)
	if errno != 0 {
		return 0, errno
	}
	return int(v), nil
}

// TestNoNewPrivs checks that no_new_privs reaches every thread, those
// that existed before as well as those started after.
func TestNoNewPrivs(t *testing.T) {
	run, finish := runNet(t, "nnp")
	want(t, "clone a process (no filter)", run.probe.CloneFork, "EINVAL")
	checkEveryThread(t, run.pid, "NoNewPrivs", "1")
	finish()
}

// TestNetLandlock checks the Landlock layer alone (with no_new_privs,
// which it needs), since the seccomp filter would answer first.
func TestNetLandlock(t *testing.T) {
	run, finish := runNet(t, "landlock")
	p := run.probe
	abi, why := landlockABI()
	checkEveryThread(t, run.pid, "NoNewPrivs", "1")
	if abi == 0 {
		t.Logf("this kernel has no Landlock (%s): only no_new_privs is checked", why)
		if !hasPrefix(p.Report.Missing, "landlock: ") {
			t.Errorf("Missing %q does not say Landlock is missing", p.Report.Missing)
		}
		finish()
		return
	}
	if !hasPrefix(p.Report.Applied, fmt.Sprintf("landlock v%d: no filesystem", abi)) {
		t.Errorf("Applied %q, want landlock v%d", p.Report.Applied, abi)
	}
	want(t, "open /etc/passwd", p.Open, "EACCES")
	want(t, "execve /bin/true", p.Exec, "EACCES")
	if abi >= 4 {
		want(t, "connect with a new socket", p.ConnectNew, "EACCES")
		want(t, "connect with an old socket", p.ConnectOld, "EACCES")
	} else {
		t.Logf("Landlock v%d has no network rules: connect not checked", abi)
	}
	// Not Landlock's: the kernel leaves multipath TCP out of its rules,
	// nor executable memory; the seccomp filter covers both.
	t.Logf("under Landlock alone: multipath tcp connect %s, mmap PROT_EXEC %s", p.ConnectMPTCP, p.MapExec)
	if abi >= 4 && p.ConnectMPTCP == "ok" && !hasPrefix(p.Report.Missing, fmt.Sprintf("landlock v%d: multipath tcp", abi)) {
		t.Errorf("multipath tcp gets through, and Missing %q does not say so", p.Report.Missing)
	}
	checkEveryThread(t, run.pid, "Seccomp", "0")
	finish()
}

// TestNetSeccomp checks the seccomp filter alone.
func TestNetSeccomp(t *testing.T) {
	if !hasFilter(t) {
		t.Skipf("no seccomp allow-list for linux/%s", runtime.GOARCH)
	}
	run, finish := runNet(t, "seccomp")
	p := run.probe
	if !hasPrefix(p.Report.Applied, "seccomp: allow-list") {
		t.Errorf("Applied %q, want the seccomp allow-list", p.Report.Applied)
	}
	want(t, "open /etc/passwd", p.Open, "EPERM")
	want(t, "connect with a new socket", p.ConnectNew, "EPERM")
	want(t, "connect with a new multipath socket", p.ConnectMPTCP, "EPERM")
	want(t, "connect with an old socket", p.ConnectOld, "EPERM")
	want(t, "fork and execve /bin/true", p.Exec, "EPERM")
	want(t, "prctl PR_SET_DUMPABLE 1", p.SetDumpable, "EPERM")
	want(t, "mmap PROT_EXEC", p.MapExec, "EPERM")
	want(t, "clone a process", p.CloneFork, "EPERM")
	want(t, "clone a thread into a namespace", p.CloneNS, "EPERM")
	want(t, "clone3", p.Clone3, "ENOSYS")
	checkEveryThread(t, run.pid, "NoNewPrivs", "1")
	checkEveryThread(t, run.pid, "Seccomp", "2")
	finish()
}

// TestNet checks Net as the daemon calls it: every layer, and everything
// the network process still needs.
func TestNet(t *testing.T) {
	run, finish := runNet(t, "net")
	p := run.probe
	abi, why := landlockABI()
	for _, w := range []string{"no_new_privs", "not dumpable"} {
		if !hasPrefix(p.Report.Applied, w) {
			t.Errorf("Applied %q lacks %q", p.Report.Applied, w)
		}
	}
	if abi > 0 && !hasPrefix(p.Report.Applied, fmt.Sprintf("landlock v%d: ", abi)) {
		t.Errorf("Applied %q, want landlock v%d", p.Report.Applied, abi)
	}
	if abi == 0 {
		t.Logf("this kernel has no Landlock: %s", why)
	}
	seccomp := hasFilter(t)
	if seccomp != hasPrefix(p.Report.Applied, "seccomp: ") || seccomp == hasPrefix(p.Report.Missing, "seccomp: ") {
		t.Errorf("report %+v does not match whether there is an allow-list (%v)", p.Report, seccomp)
	}
	// Whichever layer answers first, it must refuse.
	denied := []string{"EACCES", "EPERM"}
	if abi > 0 || seccomp {
		want(t, "open /etc/passwd", p.Open, denied...)
		want(t, "execve /bin/true", p.Exec, denied...)
	}
	if abi >= 4 || seccomp {
		want(t, "connect with a new socket", p.ConnectNew, denied...)
		want(t, "connect with an old socket", p.ConnectOld, denied...)
	}
	if seccomp {
		want(t, "connect with a new multipath socket", p.ConnectMPTCP, denied...)
		want(t, "prctl PR_SET_DUMPABLE 1", p.SetDumpable, "EPERM")
		want(t, "mmap PROT_EXEC", p.MapExec, "EPERM")
		checkEveryThread(t, run.pid, "Seccomp", "2")
	}
	checkEveryThread(t, run.pid, "NoNewPrivs", "1")
	if !procNotDumpable(t, run.pid) {
		t.Error("the network child is dumpable")
	}
	finish()
}

func TestNetTwice(t *testing.T) {
	cmd, out := startChild(t, "net-twice", nil)
	if code := waitExit(t, cmd, out); code != 0 {
		t.Fatalf("child exited %d; output:\n%s", code, out)
	}
}

func init() {
	childRoles["net-twice"] = func([]string) int {
		if _, err := Parent(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 3
		}
		if _, err := Net(); err == nil || !strings.Contains(err.Error(), "already confined") {
			fmt.Fprintf(os.Stderr, "Net after Parent: %v, want a refusal\n", err)
			return 1
		}
		return 0
	}
}

// execProbe is what an exec child reports.
type execProbe struct {
	Report     Report
	Err        string
	True       string // run /bin/true
	SetuidEUID string // what a setuid-root program sees as its euid
	NoNewPrivs string // from /proc/self/status
	Dumpable   int
}

// execChild drops like an exec process, calls Exec, then runs /bin/true
// and args[0] if given, a setuid-root copy of this binary that prints its
// effective uid.
func execChild(args []string) int {
	return confinedChild(args, func() (Report, error) {
		cmds := append([]string{"/bin/true"}, args...)
		return Exec(cmds, "/")
	})
}

func parentChild(args []string) int {
	return confinedChild(args, Parent)
}

func confinedChild(args []string, confine func() (Report, error)) int {
	if err := dropForTest(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	var p execProbe
	rep, err := confine()
	p.Report = rep
	if err != nil {
		p.Err = err.Error()
	} else {
		p.True = errName(exec.Command("/bin/true").Run())
		if len(args) > 0 {
			b, err := exec.Command(args[0], childFlag, "euid").Output()
			p.SetuidEUID = strings.TrimSpace(string(b))
			if err != nil {
				p.SetuidEUID = err.Error()
			}
		}
		b, err := os.ReadFile("/proc/self/status")
		if err != nil {
			p.NoNewPrivs = err.Error()
		}
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && k == "NoNewPrivs" {
				p.NoNewPrivs = strings.TrimSpace(v)
			}
		}
		p.Dumpable, err = unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0)
		if err != nil {
			p.Dumpable = -1
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(p); err != nil {
		return 3
	}
	return 0
}

func runConfined(t *testing.T, role string, args ...string) execProbe {
	t.Helper()
	cmd, out := startChild(t, role, args)
	if code := waitExit(t, cmd, out); code != 0 {
		t.Fatalf("child exited %d; output:\n%s", code, out)
	}
	var p execProbe
	if err := json.Unmarshal([]byte(out.String()), &p); err != nil {
		t.Fatalf("report: %v; output:\n%s", err, out)
	}
	t.Logf("%s: applied %q; missing %q", role, p.Report.Applied, p.Report.Missing)
	if p.Err != "" {
		t.Fatalf("%s: %s", role, p.Err)
	}
	return p
}

// setuidCopy makes a setuid-root copy of this test binary, or returns ""
// when that cannot work here (not root, a nosuid filesystem).
func setuidCopy(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Log("not root: no setuid-root program to check that setuid still works")
		return ""
	}
	// Not t.TempDir: that is 0700, and the child runs as nobody.
	dir, err := os.MkdirTemp("", "imse-sandbox-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(dir, &sfs); err != nil {
		t.Fatal(err)
	}
	if sfs.Flags&unix.ST_NOSUID != 0 {
		t.Logf("%s is on a nosuid filesystem: setuid not checked", dir)
		return ""
	}
	src, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "setuid-root")
	if err := os.WriteFile(path, src, 0o755); err != nil {
		t.Fatal(err)
	}
	// unix.Chmod, not os.Chmod: os.FileMode spells setuid ModeSetuid
	// and would drop 0o4000; and WriteFile's mode went through the umask.
	if err := unix.Chmod(path, 0o4755); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestExec checks that an exec process stays able to start commands,
// setuid helpers included, and is not dumpable.
func TestExec(t *testing.T) {
	suid := setuidCopy(t)
	args := []string{}
	if suid != "" {
		args = append(args, suid)
	}
	p := runConfined(t, "exec", args...)
	if !hasPrefix(p.Report.Applied, "not dumpable") {
		t.Errorf("Applied %q lacks not dumpable", p.Report.Applied)
	}
	want(t, "run /bin/true", p.True, "ok")
	want(t, "NoNewPrivs", p.NoNewPrivs, "0")
	if p.Dumpable != 0 {
		t.Errorf("PR_GET_DUMPABLE %d, want 0", p.Dumpable)
	}
	if suid != "" {
		want(t, "euid of a setuid-root program", p.SetuidEUID, "0")
	}
}

// TestParent checks that the parent keeps what reload needs (starting
// programs, which become setuid-capable children) and is not dumpable.
func TestParent(t *testing.T) {
	suid := setuidCopy(t)
	args := []string{}
	if suid != "" {
		args = append(args, suid)
	}
	p := runConfined(t, "parent", args...)
	if !hasPrefix(p.Report.Applied, "not dumpable") {
		t.Errorf("Applied %q lacks not dumpable", p.Report.Applied)
	}
	if !hasPrefix(p.Report.Missing, "no_new_privs: ") {
		t.Errorf("Missing %q does not say no_new_privs is not set", p.Report.Missing)
	}
	want(t, "run /bin/true", p.True, "ok")
	want(t, "NoNewPrivs", p.NoNewPrivs, "0")
	if p.Dumpable != 0 {
		t.Errorf("PR_GET_DUMPABLE %d, want 0", p.Dumpable)
	}
	if suid != "" {
		want(t, "euid of a setuid-root program", p.SetuidEUID, "0")
	}
}

// hasFilter reports whether this architecture has an allow-list.
func hasFilter(t *testing.T) bool {
	t.Helper()
	prog, calls, err := netFilter()
	if err != nil {
		t.Fatalf("netFilter: %v", err)
	}
	if (prog == nil) != (calls == 0) {
		t.Fatalf("netFilter: %d instructions for %d calls", len(prog), calls)
	}
	return prog != nil
}

func TestAsmRefusesFarJumps(t *testing.T) {
	var a asm
	a.ld(0)
	for range 257 {
		a.jeq(1, "far", "")
	}
	a.label("far")
	a.ret(0)
	if _, err := a.assemble(); err == nil || !strings.Contains(err.Error(), "256 instructions away") {
		t.Fatalf("assemble: %v, want a refusal of a jump over 255", err)
	}
	var b asm
	b.jeq(1, "nowhere", "")
	if _, err := b.assemble(); err == nil {
		t.Fatal("assemble accepted an unknown label")
	}
}
