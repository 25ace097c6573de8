package privsep

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// dropRequest asks the drop child for Drop(Account, Chroot), or, with
// ByFD, for DropInto(Account, the one descriptor sent with the request).
type dropRequest struct {
	Account Account
	Chroot  string
	ByFD    bool
}

type dropReport struct {
	Err                 string
	RUID, EUID, SUID    int
	RGID, EGID, SGID    int
	Groups              []int
	Wd                  string
	RootDev, RootIno    uint64
	RootEntries         int
	RootReadErr         string
	SecondDropErr       string
	PinnedThreadsBefore int
}

// childDrop receives an account and a chroot directory (a name or a
// descriptor), drops to them,
// reports what it sees, and stays alive until the parent closes the
// channel so the parent can inspect every thread in /proc.
func childDrop() int {
	c, err := ParentConn()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	m, err := c.Recv()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	var req dropRequest
	if err := DecodeJSON(m.Payload, &req); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	// Threads that exist, as root, before Drop and that stay: the parent
	// checks that Drop changed them too, not only the calling thread.
	const pinned = 4
	ready, stop := make(chan struct{}), make(chan struct{})
	for range pinned {
		go func() {
			runtime.LockOSThread()
			ready <- struct{}{}
			<-stop
		}()
	}
	for range pinned {
		<-ready
	}
	var rep dropReport
	rep.PinnedThreadsBefore = pinned
	var dropErr error
	switch {
	case req.ByFD && len(m.Files) != 1:
		dropErr = fmt.Errorf("got %d descriptors, want 1", len(m.Files))
	case req.ByFD:
		dropErr = DropInto(req.Account, m.Files[0])
	default:
		dropErr = Drop(req.Account, req.Chroot)
	}
	for _, f := range m.Files {
		f.Close()
	}
	if dropErr != nil {
		rep.Err = dropErr.Error()
	} else {
		rep.RUID, rep.EUID, rep.SUID = unix.Getresuid()
		rep.RGID, rep.EGID, rep.SGID = unix.Getresgid()
		rep.Groups, _ = unix.Getgroups()
		rep.Wd, _ = os.Getwd()
		var st unix.Stat_t
		if err := unix.Stat("/", &st); err == nil {
			rep.RootDev, rep.RootIno = st.Dev, st.Ino
		}
		names, err := os.ReadDir("/")
		rep.RootEntries = len(names)
		if err != nil {
			rep.RootReadErr = err.Error()
		}
		if err := Drop(req.Account, ""); err != nil {
			rep.SecondDropErr = err.Error()
		}
	}
	b, _ := EncodeJSON(rep)
	if err := c.Send(msgReport, b); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	_, err = c.Recv()
	close(stop)
	if err != io.EOF {
		fmt.Fprintln(os.Stderr, "want EOF, got", err)
		return 3
	}
	return 0
}

// runRetry runs an account tool, retrying while another process (a
// parallel test package, say) holds the password file lock: that lock
// belongs to another program and offers no way to wait for it.
func runRetry(t *testing.T, name string, args ...string) {
	t.Helper()
	for attempt := 0; ; attempt++ {
		out, err := exec.Command(name, args...).CombinedOutput()
		if err == nil {
			return
		}
		if attempt < 50 && bytes.Contains(bytes.ToLower(out), []byte("lock")) {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

// removeAccount deletes the test user and groups, ignoring those that do
// not exist (a cleanup, or a leftover of an interrupted run).
func removeAccount(t *testing.T, user string, groups ...string) {
	t.Helper()
	if _, err := LookupAccount(user); err == nil {
		runRetry(t, "userdel", user)
	}
	for _, g := range groups {
		if exec.Command("getent", "group", g).Run() == nil {
			runRetry(t, "groupdel", g)
		}
	}
}

// testAccount creates a throwaway user with its own primary group and one
// supplementary group, removed when the test ends.
func testAccount(t *testing.T) Account {
	t.Helper()
	const user, extra = "imse_t_ps1", "imse_t_psg1"
	if _, err := exec.LookPath("useradd"); err != nil {
		t.Fatalf("useradd is needed to create a test account: %v", err)
	}
	removeAccount(t, user, user, extra)
	runRetry(t, "groupadd", extra)
	t.Cleanup(func() { removeAccount(t, user, user, extra) })
	runRetry(t, "useradd", "-M", "-U", "-d", "/nonexistent", "-s", "/usr/sbin/nologin", "-G", extra, user)
	a, err := LookupAccount(user)
	if err != nil {
		t.Fatalf("LookupAccount after useradd: %v", err)
	}
	if a.UID == 0 || len(a.Groups) != 2 || a.Groups[0] != a.GID {
		t.Fatalf("test account %+v: want a non-root uid and groups [primary, %s]", a, extra)
	}
	return a
}

// emptyRoot returns a fresh, empty, root-owned 0755 directory for chroot,
// made by PrepareChroot itself under rootOnlyBase (not t.TempDir: /tmp
// fails the chroot checks). 0755 because after the drop the child, no
// longer root, must be able to read its new "/".
func emptyRoot(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(rootOnlyBase(t), "empty")
	f, err := PrepareChroot(dir)
	if err != nil {
		t.Fatalf("PrepareChroot: %v", err)
	}
	f.Close()
	return dir
}

// threadCreds reads the Uid, Gid and Groups lines of every thread of pid.
func threadCreds(t *testing.T, pid int) map[string][3]string {
	t.Helper()
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	creds := map[string][3]string{}
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, task.Name()))
		if err != nil {
			t.Fatal(err)
		}
		var c [3]string
		for line := range strings.Lines(string(b)) {
			k, v, _ := strings.Cut(line, ":")
			v = strings.Join(strings.Fields(v), " ")
			switch k {
			case "Uid":
				c[0] = v
			case "Gid":
				c[1] = v
			case "Groups":
				c[2] = v
			}
		}
		creds[task.Name()] = c
	}
	return creds
}

// runDrop starts a drop child and sends it req, with files attached
// (the descriptor of a ByFD request).
func runDrop(t *testing.T, req dropRequest, files ...*os.File) (*Child, *syncBuffer, dropReport) {
	t.Helper()
	ch, out := startTestChild(t, "drop")
	b, err := EncodeJSON(req)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Conn.Send(msgReport, b, files...); err != nil {
		t.Fatalf("Send request: %v", err)
	}
	var rep dropReport
	recvReport(t, ch, out, &rep)
	return ch, out, rep
}

func TestDrop(t *testing.T) {
	requireRoot(t)
	a := testAccount(t)
	root := emptyRoot(t)
	var rootSt unix.Stat_t
	if err := unix.Stat(root, &rootSt); err != nil {
		t.Fatal(err)
	}
	var realRoot unix.Stat_t
	if err := unix.Stat("/", &realRoot); err != nil {
		t.Fatal(err)
	}
	cwd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	rootFile, err := OpenChroot(root)
	if err != nil {
		t.Fatal(err)
	}
	defer rootFile.Close()
	for _, tc := range []struct {
		name     string
		chroot   string
		byFD     bool
		wd       string
		dev, ino uint64
	}{
		{"chroot", root, false, "/", rootSt.Dev, rootSt.Ino},
		{"chroot by descriptor", root, true, "/", rootSt.Dev, rootSt.Ino},
		{"no chroot", "", false, cwd, realRoot.Dev, realRoot.Ino},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := dropRequest{Account: a, Chroot: tc.chroot}
			var files []*os.File
			if tc.byFD {
				req = dropRequest{Account: a, ByFD: true}
				files = append(files, rootFile)
			}
			ch, out, rep := runDrop(t, req, files...)
			if rep.Err != "" {
				t.Fatalf("Drop: %s; child output:\n%s", rep.Err, out)
			}
			if rep.RUID != a.UID || rep.EUID != a.UID || rep.SUID != a.UID {
				t.Errorf("uids %d/%d/%d, want %d", rep.RUID, rep.EUID, rep.SUID, a.UID)
			}
			if rep.RGID != a.GID || rep.EGID != a.GID || rep.SGID != a.GID {
				t.Errorf("gids %d/%d/%d, want %d", rep.RGID, rep.EGID, rep.SGID, a.GID)
			}
			if !sameSet(rep.Groups, a.Groups) {
				t.Errorf("groups %v, want %v", rep.Groups, a.Groups)
			}
			if rep.Wd != tc.wd {
				t.Errorf("working directory %q, want %q", rep.Wd, tc.wd)
			}
			if rep.RootDev != tc.dev || rep.RootIno != tc.ino {
				t.Errorf("\"/\" is dev %d ino %d, want dev %d ino %d", rep.RootDev, rep.RootIno, tc.dev, tc.ino)
			}
			if tc.chroot != "" && (rep.RootEntries != 0 || rep.RootReadErr != "") {
				t.Errorf("chroot \"/\" has %d entries (%s), want an empty readable directory", rep.RootEntries, rep.RootReadErr)
			}
			if !strings.Contains(rep.SecondDropErr, "must be root") {
				t.Errorf("a second Drop said %q, want a refusal because no longer root", rep.SecondDropErr)
			}

			// Every thread, as the kernel sees it; the child waits for us.
			creds := threadCreds(t, ch.Cmd.Process.Pid)
			if len(creds) <= rep.PinnedThreadsBefore {
				t.Fatalf("child has %d threads, want more than the %d it pinned", len(creds), rep.PinnedThreadsBefore)
			}
			wantUID := strings.Repeat(strconv.Itoa(a.UID)+" ", 4)
			wantGID := strings.Repeat(strconv.Itoa(a.GID)+" ", 4)
			for task, c := range creds {
				if c[0] != strings.TrimSpace(wantUID) || c[1] != strings.TrimSpace(wantGID) {
					t.Errorf("thread %s: Uid %q Gid %q, want %q and %q", task, c[0], c[1], strings.TrimSpace(wantUID), strings.TrimSpace(wantGID))
				}
				var groups []int
				for _, f := range strings.Fields(c[2]) {
					g, err := strconv.Atoi(f)
					if err != nil {
						t.Fatalf("thread %s: Groups %q", task, c[2])
					}
					groups = append(groups, g)
				}
				if !sameSet(groups, a.Groups) {
					t.Errorf("thread %s: groups %v, want %v", task, groups, a.Groups)
				}
			}

			ch.Conn.Close()
			if code := waitExit(t, ch, out); code != 0 {
				t.Fatalf("child exited %d, want 0; output:\n%s", code, out)
			}
		})
	}
}

func TestDropRefuses(t *testing.T) {
	requireRoot(t)
	x := Account{Name: "x", UID: 61234, GID: 61234}
	base := rootOnlyBase(t)
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	notRoots := filepath.Join(base, "not-roots")
	mkdir(0o755, 65534)(t, notRoots)
	open := func(name string) *os.File {
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	// In children, so that a regression cannot drop the test process.
	for _, tc := range []struct {
		name  string
		req   dropRequest
		files []*os.File
		want  string
	}{
		{"uid 0", dropRequest{Account: Account{Name: "root", UID: 0, GID: 0, Groups: []int{0}}}, nil, "refusing uid 0"},
		{"gid 0", dropRequest{Account: Account{Name: "x", UID: 61234, GID: 0, Groups: []int{0}}}, nil, "refusing primary gid 0"},
		{"missing chroot", dropRequest{Account: x, Chroot: "/nonexistent/imse-privsep"}, nil, "chroot /nonexistent/imse-privsep: /nonexistent does not exist"},
		{"chroot under /tmp", dropRequest{Account: x, Chroot: t.TempDir()}, nil, "/tmp is writable by group or others (mode 1777)"},
		{"descriptor of a file", dropRequest{Account: x, ByFD: true}, []*os.File{open(file)}, "is not a directory (a regular file)"},
		{"descriptor of another user's directory", dropRequest{Account: x, ByFD: true}, []*os.File{open(notRoots)}, "is owned by uid 65534, not root"},
		{"descriptor uid 0", dropRequest{Account: Account{Name: "root", UID: 0, GID: 0}, ByFD: true}, []*os.File{open(base)}, "refusing uid 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch, out, rep := runDrop(t, tc.req, tc.files...)
			if !strings.Contains(rep.Err, tc.want) {
				t.Errorf("Drop error %q, want one containing %q", rep.Err, tc.want)
			}
			// Refused before any change: every thread still root, and
			// still under the real "/".
			for task, c := range threadCreds(t, ch.Cmd.Process.Pid) {
				if c[0] != "0 0 0 0" {
					t.Errorf("thread %s: Uid %q after a refused Drop, want root", task, c[0])
				}
			}
			if r, err := os.Readlink(fmt.Sprintf("/proc/%d/root", ch.Cmd.Process.Pid)); r != "/" {
				t.Errorf("child's root is %q (%v) after a refused Drop, want /", r, err)
			}
			ch.Conn.Close()
			if code := waitExit(t, ch, out); code != 0 {
				t.Fatalf("child exited %d, want 0; output:\n%s", code, out)
			}
		})
	}
}

func TestSetNotDumpable(t *testing.T) {
	// The flag is per process and harmless to flip in the test binary;
	// restore it so the rest of the run stays debuggable.
	old, err := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if old == 0 {
		t.Fatal("test process already not dumpable: the test could not tell SetNotDumpable's effect")
	}
	t.Cleanup(func() { unix.Prctl(unix.PR_SET_DUMPABLE, uintptr(old), 0, 0, 0) })
	if err := SetNotDumpable(); err != nil {
		t.Fatalf("SetNotDumpable: %v", err)
	}
	v, err := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0)
	if err != nil || v != 0 {
		t.Fatalf("PR_GET_DUMPABLE = %d, %v; want 0", v, err)
	}
}
