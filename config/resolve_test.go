package config

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imserious/imserious/privsep"
	"github.com/imserious/imserious/tlsreload/tlstest"
)

// testBin makes a private CommandPath: bin/mycmd (executable), bin/noexec
// (not executable), bin/adir (a directory), bin2/second (executable), and
// a relative entry that must be ignored. They are in safe directories, as
// Resolve refuses commands others could replace.
func testBin(t *testing.T) (bin, bin2 string) {
	t.Helper()
	bin, bin2 = safeDir(t), safeDir(t)
	write := func(p string, mode os.FileMode) {
		if err := os.WriteFile(p, []byte("#!/bin/sh\nexit 0\n"), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // umask-proof
			t.Fatal(err)
		}
	}
	write(filepath.Join(bin, "mycmd"), 0o755)
	write(filepath.Join(bin, "noexec"), 0o644)
	write(filepath.Join(bin2, "second"), 0o700)
	write(filepath.Join(bin, "second"), 0o644) // shadowed by nothing: not executable, so skipped
	if err := os.Mkdir(filepath.Join(bin, "adir"), 0o755); err != nil {
		t.Fatal(err)
	}
	old := CommandPath
	CommandPath = "relative:" + bin + "::" + bin2
	t.Cleanup(func() { CommandPath = old })
	return bin, bin2
}

func lookup(t *testing.T, name string) privsep.Account {
	t.Helper()
	a, err := privsep.LookupAccount(name)
	if err != nil {
		t.Fatalf("test needs the system account %q: %v", name, err)
	}
	return a
}

func resolveErrors(t *testing.T, c *Config, root bool) Errors {
	t.Helper()
	err := c.Resolve(root)
	if err == nil {
		t.Fatalf("Resolve(%v) succeeded, want errors", root)
	}
	var es Errors
	if !errors.As(err, &es) || len(es) == 0 {
		t.Fatalf("Resolve error %T %v is not a non-empty Errors", err, err)
	}
	return es
}

type wantErr struct {
	line int
	key  string
	msg  string
}

func checkErrors(t *testing.T, es Errors, want []wantErr) {
	t.Helper()
	if len(es) != len(want) {
		t.Errorf("got %d errors, want %d:\n%v", len(es), len(want), es)
	}
	for i := range min(len(es), len(want)) {
		e, w := es[i], want[i]
		if e.File != testFile || e.Line != w.line || e.Key != w.key || !strings.Contains(e.Msg, w.msg) {
			t.Errorf("error %d:\n got %s\nwant %s:%d: %s: ...%s...", i, e, testFile, w.line, w.key, w.msg)
		}
	}
}

func TestResolveRoot(t *testing.T) {
	bin, bin2 := testBin(t)
	for _, name := range []string{"daemon", "bin"} {
		if why := untrusted(bin, lookup(t, name)); why != "" {
			// Only root can make a directory that only root can write.
			t.Skipf("needs root: commands for %q must be in a directory only root or %q can write: %s", name, name, why)
		}
	}
	chroot := filepath.Join(safeDir(t), "missing")
	c := mustParse(t, fmt.Sprintf(`
[privsep]
user = "nobody"
chroot = %q

[[handler]]
user = "daemon"
command = "mycmd --flag"

[[handler]]
user = "someone@example.org"
run_as = "bin"
command = %q

[[handler]]
user = "daemon"
event = "MessageRead"
command = ["second"]
`, chroot, filepath.Join(bin, "..", filepath.Base(bin), "mycmd")))
	if err := c.Resolve(true); err != nil {
		t.Fatalf("Resolve(true):\n%v", err)
	}
	daemon, binAcct := lookup(t, "daemon"), lookup(t, "bin")
	for i, want := range []struct {
		acct privsep.Account
		path string
	}{
		{daemon, filepath.Join(bin, "mycmd")},
		{binAcct, filepath.Join(bin, "mycmd")}, // cleaned
		{daemon, filepath.Join(bin2, "second")},
	} {
		h := c.Handlers[i]
		if h.Account.Name != want.acct.Name || h.Account.UID != want.acct.UID || h.Account.GID != want.acct.GID {
			t.Errorf("handler[%d] account = %+v, want %+v", i+1, h.Account, want.acct)
		}
		if h.Path != want.path {
			t.Errorf("handler[%d] path = %q, want %q", i+1, h.Path, want.path)
		}
	}
	accts := c.Accounts()
	if len(accts) != 2 || accts[0].Name != "daemon" || accts[1].Name != "bin" {
		t.Errorf("Accounts() = %+v, want daemon then bin", accts)
	}
	// Resolve must not create the chroot: the daemon does, when it starts.
	if _, err := os.Lstat(chroot); err == nil {
		t.Errorf("Resolve created the chroot")
	}
}

// TestResolveRootErrors puts every per-handler problem in one file: all of
// them must be reported, each at its line and key.
func TestResolveRootErrors(t *testing.T) {
	if os.Geteuid() != 0 {
		// The chroot below must be root-owned to fail only for being
		// non-empty; CI runs as root.
		t.Skip("needs root: the chroot it checks must be owned by root")
	}
	bin, _ := testBin(t)
	chroot := safeDir(t)
	if err := os.WriteFile(filepath.Join(chroot, "stray"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(chroot, 0o755); err != nil {
		t.Fatal(err)
	}
	tlsDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(tlsDir, "cert.pem"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	src := fmt.Sprintf(`[privsep]
user = "daemon"
chroot = %q
[tls]
cert = %q
key = %q
[[handler]]
user = "imse_no_such_user"
command = "mycmd"
[[handler]]
user = "x"
run_as = "imse_no_such_acct"
command = "mycmd"
[[handler]]
user = "root"
command = "mycmd"
[[handler]]
user = "daemon"
runas = "root"
command = "mycmd"
[[handler]]
user = "daemon"
command = "./mycmd"
[[handler]]
user = "daemon"
command = "bin/mycmd"
[[handler]]
user = "daemon"
command = "imse-no-such-command"
[[handler]]
user = "daemon"
command = %q
[[handler]]
user = "daemon"
command = %q
[[handler]]
user = "daemon"
command = "noexec"
`, chroot, filepath.Join(tlsDir, "cert.pem"), filepath.Join(tlsDir, "key.pem"),
		filepath.Join(bin, "noexec"), filepath.Join(bin, "adir"))
	c := mustParse(t, src)
	es := resolveErrors(t, c, true)
	checkErrors(t, es, []wantErr{
		{2, "privsep.user", `account "daemon" (uid 1) is also the account of handler[5] ("daemon")`},
		{3, "privsep.chroot", `is not empty (it holds "stray")`},
		{6, "tls.key", "cannot read " + filepath.Join(tlsDir, "key.pem")},
		{8, "handler[1].user", `handler user "imse_no_such_user" is not a system account; set run_as`},
		{12, "handler[2].run_as", `account "imse_no_such_acct" does not exist`},
		{15, "handler[3].user", `account "root" has uid 0`},
		{19, "handler[4].runas", `account "root" has uid 0`},
		{23, "handler[5].command", `"./mycmd" is a relative path`},
		{26, "handler[6].command", `"bin/mycmd" is a relative path`},
		{29, "handler[7].command", `"imse-no-such-command": no executable file of that name in relative:`},
		{32, "handler[8].command", "not executable (mode 0644)"},
		{35, "handler[9].command", "not a regular file"},
		{38, "handler[10].command", `"noexec": no executable file`},
	})
	if c.Handlers[0].Account.Name != "" || c.Handlers[2].Account.Name != "" || c.Handlers[4].Path != "" {
		t.Errorf("failed handlers got an account or path: %+v", c.Handlers)
	}
	if c.Handlers[4].Account.Name != "daemon" {
		t.Errorf("a bad command must not stop the account check: %+v", c.Handlers[4])
	}
}

func TestResolvePrivsepUser(t *testing.T) {
	testBin(t)
	chroot := filepath.Join(safeDir(t), "missing")
	for _, tc := range []struct{ user, msg string }{
		{"imse_no_such_user", `account "imse_no_such_user" does not exist; create it, e.g. "useradd -r -d /var/empty -s /usr/sbin/nologin imse_no_such_user" (Linux) or "useradd -d /var/empty -s /sbin/nologin imse_no_such_user" (BSD)`},
		{"root", `account "root" has uid 0`},
	} {
		c := mustParse(t, fmt.Sprintf("[privsep]\nuser = %q\nchroot = %q\n", tc.user, chroot))
		checkErrors(t, resolveErrors(t, c, true), []wantErr{{2, "privsep.user", tc.msg}})
	}
	// The default account is checked when [privsep] is absent; the error
	// then has no line to point at.
	c := mustParse(t, "")
	c.Privsep.User = "imse_no_such_user"
	c.Privsep.Chroot = chroot
	checkErrors(t, resolveErrors(t, c, true), []wantErr{{0, "privsep.user", "does not exist"}})
}

func TestResolveChroot(t *testing.T) {
	testBin(t)
	root := os.Getuid() == 0
	for _, tc := range []struct {
		name     string
		setup    func(t *testing.T, p string)
		msg      string // "": accepted
		needRoot bool   // the check depends on ownership by root
	}{
		{name: "missing", setup: func(*testing.T, string) {}},
		{name: "empty root-owned 0755", needRoot: true, setup: func(t *testing.T, p string) { mkdir(t, p, 0o755) }},
		{name: "empty root-owned 0711", needRoot: true, setup: func(t *testing.T, p string) { mkdir(t, p, 0o711) }},
		{name: "regular file", msg: "is not a directory", setup: func(t *testing.T, p string) {
			if err := os.WriteFile(p, nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "symlink", msg: "is a symbolic link", setup: func(t *testing.T, p string) {
			mkdir(t, p+".real", 0o755)
			if err := os.Symlink(p+".real", p); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "world writable", msg: "writable by group or others (mode 0777)", needRoot: true, setup: func(t *testing.T, p string) { mkdir(t, p, 0o777) }},
		{name: "group writable", msg: "writable by group or others (mode 0775)", needRoot: true, setup: func(t *testing.T, p string) { mkdir(t, p, 0o775) }},
		{name: "not empty", msg: "is not empty", needRoot: true, setup: func(t *testing.T, p string) {
			mkdir(t, p, 0o755)
			mkdir(t, filepath.Join(p, "sub"), 0o755)
		}},
		{name: "not owned by root", msg: "is owned by uid 65534, not root", needRoot: true, setup: func(t *testing.T, p string) {
			mkdir(t, p, 0o755)
			if err := os.Chown(p, 65534, 65534); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.needRoot && !root {
				t.Skip("needs root: the check depends on a root-owned directory")
			}
			p := filepath.Join(safeDir(t), "chroot")
			tc.setup(t, p)
			c := mustParse(t, fmt.Sprintf("[privsep]\nuser = \"nobody\"\nchroot = %q\n", p))
			err := c.Resolve(true)
			if tc.msg == "" {
				if err != nil {
					t.Fatalf("Resolve: %v", err)
				}
				return
			}
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("Resolve = %v, want an error about %q", err, tc.msg)
			}
			checkErrors(t, es, []wantErr{{3, "privsep.chroot", tc.msg}})
		})
	}
}

func mkdir(t *testing.T, p string, mode os.FileMode) {
	t.Helper()
	if err := os.Mkdir(p, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // umask-proof
		t.Fatal(err)
	}
}

func TestResolveTLS(t *testing.T) {
	testBin(t)
	dir := t.TempDir()
	ca := tlstest.NewCA(t)
	a, b := ca.Issue(t, tlstest.Options{}), ca.Issue(t, tlstest.Options{})
	a.Write(t, filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	tlstest.WriteFile(t, filepath.Join(dir, "other-key.pem"), b.KeyPEM, 0o600)
	tlstest.WriteFile(t, filepath.Join(dir, "garbage.pem"), []byte("x"), 0o600)
	tlstest.WriteFile(t, filepath.Join(dir, "half-key.pem"), a.KeyPEM[:len(a.KeyPEM)/2], 0o600)
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Relative to the configuration file's directory.
	c, err := Parse(filepath.Join(dir, "imserious.toml"), []byte("[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Resolve(false); err != nil {
		t.Errorf("Resolve with a good pair: %v", err)
	} else if p := c.TLS.Pair; p == nil || p.Leaf.SerialNumber.Cmp(a.Cert.SerialNumber) != 0 {
		t.Errorf("Resolve kept pair %v, want the loaded certificate A", p)
	}
	c, err = Parse(filepath.Join(dir, "imserious.toml"), []byte("[tls]\ncert = \"nope.pem\"\nkey = \".\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	err = c.Resolve(false)
	var es Errors
	if !errors.As(err, &es) || len(es) != 2 ||
		es[0].Key != "tls.cert" || es[0].Line != 2 || !errors.Is(es[0], os.ErrNotExist) ||
		es[1].Key != "tls.key" || es[1].Line != 3 || !strings.Contains(es[1].Msg, "not a regular file") {
		t.Errorf("Resolve with bad TLS files: %v", err)
	}
	// Files that read but do not make a pair: the error is at the key of
	// the file at fault.
	for _, tc := range []struct {
		cert, key string
		wantKey   string
		msg       string
	}{
		{"cert.pem", "other-key.pem", "tls.key", "does not match the certificate " + filepath.Join(dir, "cert.pem")},
		{"garbage.pem", "key.pem", "tls.cert", "no CERTIFICATE block"},
		{"cert.pem", "garbage.pem", "tls.key", "no PRIVATE KEY block"},
		{"cert.pem", "half-key.pem", "tls.key", "incomplete or damaged"},
		{"fifo", "key.pem", "tls.cert", "not a regular file"},
		{"key.pem", "cert.pem", "tls.cert", "tls: cert and key look swapped: " + filepath.Join(dir, "key.pem") +
			" holds a private key and " + filepath.Join(dir, "cert.pem") + " a certificate"},
	} {
		c, err := Parse(filepath.Join(dir, "imserious.toml"), []byte(fmt.Sprintf("[tls]\ncert = %q\nkey = %q\n", tc.cert, tc.key)))
		if err != nil {
			t.Fatal(err)
		}
		err = c.Resolve(false)
		var es Errors
		if !errors.As(err, &es) || len(es) != 1 || es[0].Key != tc.wantKey || !strings.Contains(es[0].Msg, tc.msg) {
			t.Errorf("cert %s key %s: %v, want one error at %s with %q", tc.cert, tc.key, err, tc.wantKey, tc.msg)
		}
	}
}

// TestResolveNotRoot: without root every command runs as the invoking
// user, run_as may only name that user, and [privsep] is not checked.
func TestResolveNotRoot(t *testing.T) {
	bin, _ := testBin(t)
	cur, err := privsep.Current()
	if err != nil {
		t.Fatal(err)
	}
	other := "daemon"
	if cur.Name == other {
		other = "bin"
	}
	c := mustParse(t, fmt.Sprintf(`[privsep]
user = "imse_no_such_user"
chroot = %q
[[handler]]
user = "imse_no_such_user"
command = "mycmd"
[[handler]]
user = "x"
run_as = %q
command = "mycmd"
[[handler]]
user = "y"
run_as = %q
command = "mycmd"
`, bin, cur.Name, other))
	checkErrors(t, resolveErrors(t, c, false), []wantErr{
		{13, "handler[3].run_as", fmt.Sprintf("not started as root, so commands run as the invoking user %q, not %q", cur.Name, other)},
	})
	for i := range 2 {
		if h := c.Handlers[i]; h.Account.UID != cur.UID || h.Account.Name != cur.Name || h.Path != filepath.Join(bin, "mycmd") {
			t.Errorf("handler[%d]: %+v, want account %q", i+1, h, cur.Name)
		}
	}
	if a := c.Accounts(); len(a) != 1 || a[0].Name != cur.Name {
		t.Errorf("Accounts() = %+v", a)
	}
}

// TestResolveThrowawayAccounts checks Resolve against accounts created for
// the test, so it proves the lookup reads the live system.
func TestResolveThrowawayAccounts(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root: creates system accounts with useradd")
	}
	testBin(t)
	useradd(t, "imse_t_cfg1")
	useradd(t, "imse_t_cfg2")
	src := fmt.Sprintf(`[privsep]
user = "imse_t_cfg1"
chroot = %q
[[handler]]
user = "imse_t_cfg2"
command = "mycmd"
[[handler]]
user = "someone"
run_as = "imse_t_cfg2"
command = "mycmd"
`, filepath.Join(safeDir(t), "missing"))
	c := mustParse(t, src)
	if err := c.Resolve(true); err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	want := lookup(t, "imse_t_cfg2")
	if a := c.Accounts(); len(a) != 1 || a[0].UID != want.UID || a[0].UID == 0 {
		t.Errorf("Accounts() = %+v, want only imse_t_cfg2 (uid %d)", a, want.UID)
	}

	// Sharing the network process's account with commands is refused.
	c = mustParse(t, strings.Replace(src, `user = "imse_t_cfg1"`, `user = "imse_t_cfg2"`, 1))
	checkErrors(t, resolveErrors(t, c, true), []wantErr{{2, "privsep.user", `is also the account of handler[1] ("imse_t_cfg2")`}})

	userdel(t, "imse_t_cfg2")
	c = mustParse(t, src)
	checkErrors(t, resolveErrors(t, c, true), []wantErr{
		{5, "handler[1].user", `handler user "imse_t_cfg2" is not a system account; set run_as`},
		{9, "handler[2].run_as", `account "imse_t_cfg2" does not exist`},
	})
}

func useradd(t testing.TB, name string, opts ...string) {
	t.Helper()
	userdel(t, name) // a leftover from an interrupted run
	argv := append([]string{"useradd", "-r", "-M", "-d", "/nonexistent", "-s", "/usr/sbin/nologin"}, opts...)
	shadow(t, append(argv, name)...)
	t.Cleanup(func() { userdel(t, name) })
}

func userdel(t testing.TB, name string) {
	t.Helper()
	if _, err := privsep.LookupAccount(name); err != nil {
		return
	}
	shadow(t, "userdel", name)
}

// shadow runs a shadow-utils command. Other packages' tests may edit the
// account database at the same moment, and useradd gives up at once when
// /etc/passwd is locked, so a lock failure is retried; nothing in this
// test waits on it for ordering.
func shadow(t testing.TB, argv ...string) {
	t.Helper()
	var out []byte
	var err error
	for attempt := range 50 {
		out, err = exec.Command(argv[0], argv[1:]...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "lock") {
			break
		}
		time.Sleep(time.Duration(attempt+1) * 20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(argv, " "), err, out)
	}
}

// TestResolveGID0: an account whose primary group is 0 is refused, as
// privsep.Drop refuses it at start-up, for a command's account (named by
// run_as or by user) and for the network process's.
func TestResolveGID0(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root: creates a system account with useradd")
	}
	testBin(t)
	useradd(t, "imse_t_gid0", "-g", "0")
	chroot := filepath.Join(safeDir(t), "missing")
	c := mustParse(t, fmt.Sprintf(`[privsep]
user = "nobody"
chroot = %q
[[handler]]
user = "x"
run_as = "imse_t_gid0"
command = "mycmd"
[[handler]]
user = "imse_t_gid0"
command = "mycmd"
`, chroot))
	const why = `account "imse_t_gid0" has primary group 0 (root's): commands never run with root's group, and its exec process would refuse to start; give it an unprivileged primary group, e.g. "usermod -g GROUP imse_t_gid0"`
	checkErrors(t, resolveErrors(t, c, true), []wantErr{
		{6, "handler[1].run_as", why},
		{9, "handler[2].user", why},
	})
	if c.Handlers[0].Account.Name != "" || c.Handlers[1].Account.Name != "" {
		t.Errorf("refused handlers got an account: %+v", c.Handlers)
	}

	c = mustParse(t, fmt.Sprintf("[privsep]\nuser = \"imse_t_gid0\"\nchroot = %q\n", chroot))
	checkErrors(t, resolveErrors(t, c, true), []wantErr{
		{2, "privsep.user", `account "imse_t_gid0" has primary group 0 (root's): the network process must run unprivileged`},
	})
}

// After ForgetSource a configuration still resolves; its messages name
// the key without the line, and the handlers keep their own lines.
func TestForgetSource(t *testing.T) {
	c, err := Parse("/etc/imserious.toml", []byte("[[handler]]\nuser = \"alice\"\ncommand = \"/nonexistent/prog\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	first := c.Resolve(false)
	if first == nil || !strings.Contains(first.Error(), "imserious.toml:3:") {
		t.Fatalf("before: %v", first)
	}
	c.ForgetSource()
	if c.src != nil {
		t.Fatal("source kept")
	}
	again := c.Resolve(false)
	if again == nil || strings.Contains(again.Error(), ":3:") || !strings.Contains(again.Error(), "handler[1].command") {
		t.Errorf("after: %v", again)
	}
	if c.Handlers[0].Line != 1 {
		t.Errorf("handler line %d", c.Handlers[0].Line)
	}
}

// Handlers with the same command line and run_as keep one copy of them
// after Resolve; a different line stays apart.
func TestResolveShares(t *testing.T) {
	testBin(t)
	c := mustParse(t, `
[[handler]]
user = "a"
command = "mycmd --fetch x"
[[handler]]
user = "b"
command = "mycmd --fetch x"
[[handler]]
user = "c"
command = "mycmd --fetch y"
`)
	if err := c.Resolve(false); err != nil {
		t.Fatal(err)
	}
	h := c.Handlers
	if &h[0].Command[0] != &h[1].Command[0] || cap(h[0].Command) != len(h[0].Command) {
		t.Error("the same command line is not one slice without room to append")
	}
	if &h[2].Command[0] == &h[0].Command[0] || h[2].Command[2] != "y" || h[0].Command[2] != "x" {
		t.Errorf("different command lines mixed: %q, %q", h[0].Command, h[2].Command)
	}
}
