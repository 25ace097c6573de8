package config

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/imserious/imserious/privsep"
	"github.com/imserious/imserious/tlsreload/tlstest"
)

// safeDir is a fresh directory Resolve trusts for commands. The test's
// temporary directory is under /tmp, which anyone can write (sticky or
// not), so this one is made in the user's cache directory, where Go's own
// build cache lives, and removed after the test.
func safeDir(tb testing.TB) string {
	tb.Helper()
	base, err := os.UserCacheDir()
	if err != nil {
		tb.Skipf("no cache directory to hold commands Resolve trusts: %v", err)
	}
	if err := os.MkdirAll(base, 0o700); err != nil {
		tb.Fatal(err)
	}
	dir, err := os.MkdirTemp(base, "imserious-test-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	cur, err := privsep.Current()
	if err != nil {
		tb.Fatal(err)
	}
	if why := untrusted(dir, cur); why != "" {
		tb.Skipf("commands in %s would be refused, so the test cannot run: %s", dir, why)
	}
	return dir
}

func gidOf(t *testing.T, p string) int {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return int(fi.Sys().(*syscall.Stat_t).Gid)
}

func writeProg(t *testing.T, p string) string {
	t.Helper()
	if err := os.WriteFile(p, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func chmod(t *testing.T, p string, mode fs.FileMode) {
	t.Helper()
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

func chown(t *testing.T, p string, uid int) {
	t.Helper()
	if err := os.Lchown(p, uid, -1); err != nil {
		t.Fatal(err)
	}
}

// commandAccount is whom the tests' commands run as: as root an
// unprivileged system account (Resolve(true)), otherwise the invoking user.
func commandAccount(t *testing.T) (privsep.Account, bool) {
	t.Helper()
	if os.Geteuid() == 0 {
		return lookup(t, "daemon"), true
	}
	cur, err := privsep.Current()
	if err != nil {
		t.Fatal(err)
	}
	return cur, false
}

// TestResolveUntrustedCommand: a command that anyone but root and its
// account could replace, through its file, a directory on its path or a
// link on the way, is refused at the handler's command.
func TestResolveUntrustedCommand(t *testing.T) {
	acct, root := commandAccount(t)
	other := lookup(t, "bin")
	tmp := t.TempDir()
	tmpRoot := os.TempDir()
	for _, tc := range []struct {
		name     string
		needRoot bool
		// setup makes the command in dir (0755, trusted) and returns the
		// command to write and the message expected ("" accepted).
		setup func(t *testing.T, dir string) (cmd, msg string)
	}{
		{name: "safe", setup: func(t *testing.T, dir string) (string, string) {
			return writeProg(t, filepath.Join(dir, "prog")), ""
		}},
		{name: "group-writable file", setup: func(t *testing.T, dir string) (string, string) {
			p := writeProg(t, filepath.Join(dir, "prog"))
			chmod(t, p, 0o775)
			return p, fmt.Sprintf("command %s is not safe to run as %q: %s is writable by group %d (mode 0775): run chmod go-w %s", p, acct.Name, p, gidOf(t, p), p)
		}},
		{name: "world-writable file", setup: func(t *testing.T, dir string) (string, string) {
			p := writeProg(t, filepath.Join(dir, "prog"))
			chmod(t, p, 0o757)
			return p, p + " is writable by others (mode 0757): run chmod go-w " + p
		}},
		{name: "world-writable directory", setup: func(t *testing.T, dir string) (string, string) {
			p := writeProg(t, filepath.Join(dir, "prog"))
			chmod(t, dir, 0o777)
			return p, fmt.Sprintf("%s is writable by group %d and others (mode 0777): run chmod go-w %s", dir, gidOf(t, dir), dir)
		}},
		{name: "sticky directory", setup: func(t *testing.T, dir string) (string, string) {
			p := writeProg(t, filepath.Join(dir, "prog"))
			chmod(t, dir, 0o777|fs.ModeSticky)
			want := "root"
			if acct.UID != 0 {
				want = fmt.Sprintf("root or %q", acct.Name)
			}
			return p, fmt.Sprintf("%s is writable by group %d and others (mode 1777; sticky is not enough): move the command to a directory only %s can write", dir, gidOf(t, dir), want)
		}},
		{name: "under the temporary directory", setup: func(t *testing.T, dir string) (string, string) {
			if fi, err := os.Stat(tmpRoot); err != nil || fi.Mode().Perm()&0o002 == 0 {
				t.Skipf("%s is not writable by others here", tmpRoot)
			}
			return writeProg(t, filepath.Join(tmp, "prog")), tmpRoot + " is writable by"
		}},
		{name: "bare name found in a writable directory", setup: func(t *testing.T, dir string) (string, string) {
			p := writeProg(t, filepath.Join(dir, "imse-prog"))
			chmod(t, dir, 0o757)
			old := CommandPath
			CommandPath = dir
			t.Cleanup(func() { CommandPath = old })
			return "imse-prog", fmt.Sprintf("command %s is not safe to run as %q: %s is writable by others (mode 0757)", p, acct.Name, dir)
		}},
		{name: "link to a file in a writable directory", setup: func(t *testing.T, dir string) (string, string) {
			bad := filepath.Join(dir, "bad")
			mkdir(t, bad, 0o755)
			writeProg(t, filepath.Join(bad, "prog"))
			chmod(t, bad, 0o757)
			link := filepath.Join(dir, "link")
			if err := os.Symlink("bad/prog", link); err != nil {
				t.Fatal(err)
			}
			return link, fmt.Sprintf("command %s is not safe to run as %q: %s is writable by others", link, acct.Name, bad)
		}},
		{name: "link in a writable directory", setup: func(t *testing.T, dir string) (string, string) {
			p := writeProg(t, filepath.Join(dir, "prog"))
			bad := filepath.Join(dir, "bad")
			mkdir(t, bad, 0o757)
			link := filepath.Join(bad, "link")
			if err := os.Symlink(p, link); err != nil {
				t.Fatal(err)
			}
			return link, bad + " is writable by others"
		}},
		{name: "relative links through ..", setup: func(t *testing.T, dir string) (string, string) {
			writeProg(t, filepath.Join(dir, "prog"))
			mkdir(t, filepath.Join(dir, "sub"), 0o755)
			if err := os.Symlink("../prog", filepath.Join(dir, "sub", "link")); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("sub", filepath.Join(dir, "sublink")); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(dir, "sublink", "link"), ""
		}},
		{name: "file owned by another account", needRoot: true, setup: func(t *testing.T, dir string) (string, string) {
			p := writeProg(t, filepath.Join(dir, "prog"))
			chown(t, p, other.UID)
			return p, fmt.Sprintf("command %s is not safe to run as %q: %s is owned by uid %d, not root or %q: run chown root %s", p, acct.Name, p, other.UID, acct.Name, p)
		}},
		{name: "directory owned by another account", needRoot: true, setup: func(t *testing.T, dir string) (string, string) {
			p := writeProg(t, filepath.Join(dir, "prog"))
			chown(t, dir, other.UID)
			return p, fmt.Sprintf("%s is owned by uid %d, not root or %q", dir, other.UID, acct.Name)
		}},
		{name: "file and directory owned by the account", needRoot: true, setup: func(t *testing.T, dir string) (string, string) {
			p := writeProg(t, filepath.Join(dir, "prog"))
			chown(t, p, acct.UID)
			chown(t, dir, acct.UID)
			return p, ""
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.needRoot && !root {
				t.Skip("needs root: changes the owner of files")
			}
			dir := filepath.Join(safeDir(t), "d")
			mkdir(t, dir, 0o755)
			cmd, msg := tc.setup(t, dir)
			c := mustParse(t, fmt.Sprintf("[privsep]\nuser = \"nobody\"\nchroot = %q\n[[handler]]\nuser = %q\ncommand = %q\n",
				filepath.Join(safeDir(t), "missing"), acct.Name, cmd))
			err := c.Resolve(root)
			if msg == "" {
				if err != nil {
					t.Fatalf("Resolve: %v", err)
				}
				return
			}
			checkErrors(t, resolveErrors(t, c, root), []wantErr{{6, "handler[1].command", msg}})
		})
	}
}

// TestResolveUntrustedPerAccount: one program owned by one account is
// trusted for that account's handlers and refused for another's, each
// handler reported at its own line although the check is done once per
// program and account.
func TestResolveUntrustedPerAccount(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: changes the owner of files and resolves other accounts")
	}
	daemon, bin := lookup(t, "daemon"), lookup(t, "bin")
	p := writeProg(t, filepath.Join(safeDir(t), "prog"))
	chown(t, p, daemon.UID)
	h := func(user string) string { return fmt.Sprintf("[[handler]]\nuser = %q\ncommand = %q\n", user, p) }
	c := mustParse(t, fmt.Sprintf("[privsep]\nuser = \"nobody\"\nchroot = %q\n", filepath.Join(safeDir(t), "missing"))+
		h("daemon")+h("bin")+h("daemon")+h("bin"))
	why := fmt.Sprintf("%s is owned by uid %d, not root or %q", p, daemon.UID, bin.Name)
	checkErrors(t, resolveErrors(t, c, true), []wantErr{{9, "handler[2].command", why}, {15, "handler[4].command", why}})
	if c.Handlers[0].Path != p || c.Handlers[0].Account.UID != daemon.UID {
		t.Errorf("handler[1] = %+v, want %s as daemon", c.Handlers[0], p)
	}

	// Without root every command runs as the invoking user, root here,
	// who trusts only root.
	c = mustParse(t, h("x"))
	checkErrors(t, resolveErrors(t, c, false), []wantErr{{3, "handler[1].command",
		fmt.Sprintf("command %s is not safe to run as \"root\": %s is owned by uid %d, not root: run chown root %s", p, p, daemon.UID, p)}})
}

// TestResolveWarnings: a password or key others can read is warned of,
// not refused, at its key, with the chmod that fixes it.
func TestResolveWarnings(t *testing.T) {
	dir := t.TempDir()
	// Open the test's directories as /etc is: a file under a directory
	// others cannot search is not exposed, and not warned of.
	chmod(t, filepath.Dir(dir), 0o755)
	chmod(t, dir, 0o755)
	ca := tlstest.NewCA(t)
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	ca.Issue(t, tlstest.Options{}).Write(t, cert, key)
	file := filepath.Join(dir, "imserious.toml")
	testBin(t)
	// A handler, so that the warning about none is not among these.
	const handler = "[[handler]]\nuser = \"u\"\ncommand = \"mycmd\"\n"
	withAuth := fmt.Sprintf("[auth]\nuser = \"dove\"\npass = \"s3cret\"\n[tls]\ncert = %q\nkey = %q\n", cert, key) + handler
	pass := func(mode string) string {
		return fmt.Sprintf("%s:3: auth.pass: %s holds the password and is readable by others (mode %s): run chmod 600 %s", file, file, mode, file)
	}
	keyWarn := func(who, mode string) string {
		return fmt.Sprintf("%s:6: tls.key: %s holds the private key and is readable by %s (mode %s): run chmod 600 %s", file, key, who, mode, key)
	}
	resolve := func(t *testing.T, src string, fileMode, keyMode fs.FileMode) *Config {
		t.Helper()
		if err := os.WriteFile(file, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
		chmod(t, file, fileMode)
		chmod(t, key, keyMode)
		c, err := Load(file)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Resolve(false); err != nil {
			t.Fatalf("Resolve: warnings must not be errors: %v", err)
		}
		return c
	}
	for _, tc := range []struct {
		name              string
		src               string
		fileMode, keyMode fs.FileMode
		want              []string
	}{
		{"private", withAuth, 0o600, 0o600, nil},
		{"config readable by others", withAuth, 0o644, 0o600, []string{pass("0644")}},
		{"config readable by group only", withAuth, 0o640, 0o600, nil},
		{"config without a password", fmt.Sprintf("[tls]\ncert = %q\nkey = %q\n", cert, key) + handler, 0o644, 0o600, nil},
		{"key readable by group", withAuth, 0o600, 0o640, []string{keyWarn("group", "0640")}},
		{"key readable by others", withAuth, 0o600, 0o604, []string{keyWarn("others", "0604")}},
		{"both", withAuth, 0o604, 0o644, []string{pass("0604"), keyWarn("group and others", "0644")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := resolve(t, tc.src, tc.fileMode, tc.keyMode)
			if got := c.Warnings(); !slices.Equal(got, tc.want) {
				t.Errorf("Warnings():\n got %q\nwant %q", got, tc.want)
			}
		})
	}

	// Fixed and resolved again, as on a reload: the warning goes.
	c := resolve(t, withAuth, 0o644, 0o644)
	if len(c.Warnings()) != 2 {
		t.Fatalf("Warnings() = %q, want two", c.Warnings())
	}
	chmod(t, file, 0o600)
	chmod(t, key, 0o600)
	if err := c.Resolve(false); err != nil || len(c.Warnings()) != 0 {
		t.Errorf("after chmod 600: Resolve = %v, Warnings() = %q", err, c.Warnings())
	}

	// A key reached through a link is judged by the file it reaches, and
	// one in a directory nobody else can search is not exposed (certbot
	// kept 0644 keys in a 0700 archive/ for years).
	hidden := filepath.Join(dir, "archive")
	mkdir(t, hidden, 0o700)
	real := filepath.Join(hidden, "privkey1.pem")
	if err := os.Rename(key, real); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, key); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []fs.FileMode{0o600, 0o644} {
		if c := resolve(t, withAuth, 0o600, mode); len(c.Warnings()) != 0 {
			t.Errorf("key %04o behind a 0700 directory: Warnings() = %q", mode, c.Warnings())
		}
	}
	chmod(t, hidden, 0o755)
	if got := resolve(t, withAuth, 0o600, 0o640).Warnings(); len(got) != 1 || !strings.Contains(got[0], "readable by group (mode 0640)") {
		t.Errorf("key 0640 through a link: Warnings() = %q", got)
	}
}
