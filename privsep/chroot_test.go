package privsep

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// rootOnlyBase returns a fresh directory, removed when the test ends,
// whose every ancestor only root can write, for chroot trees. Not
// t.TempDir: that is under /tmp, which is 1777, and the chroot checks
// refuse everything beneath it. /run is root's 0755 on Linux; /var/lib
// is the fallback where it is not (or is missing, on the BSDs). The
// directory itself is root's 0700: chroot happens while the child is
// still root, so no other uid needs to pass through it.
func rootOnlyBase(t *testing.T) string {
	t.Helper()
	requireRoot(t)
	var refusals []string
	for _, parent := range []string{"/run", "/var/lib"} {
		base, err := os.MkdirTemp(parent, "imse-privsep-")
		if err != nil {
			refusals = append(refusals, err.Error())
			continue
		}
		// Checks / down to base; "probe" itself is missing, which passes.
		if err := CheckChroot(filepath.Join(base, "probe")); err != nil {
			os.RemoveAll(base)
			refusals = append(refusals, err.Error())
			continue
		}
		t.Cleanup(func() { os.RemoveAll(base) })
		return base
	}
	t.Fatalf("no root-only place for a test chroot: %s", strings.Join(refusals, "; "))
	return ""
}

// chrootCase builds a tree under base for dir = base/a/b/empty.
type chrootCase struct {
	name  string
	setup func(t *testing.T, base, dir string)
	// want is what every function's error must contain ("" for
	// success); missing means dir does not exist after setup and should
	// not: CheckChroot and PrepareChroot succeed, OpenChroot fails.
	want    string
	missing bool
}

func chrootCases() []chrootCase {
	a := func(base string) string { return filepath.Join(base, "a") }
	ab := func(base string) string { return filepath.Join(base, "a", "b") }
	return []chrootCase{
		{name: "missing, with missing parents", setup: func(t *testing.T, base, dir string) {}, missing: true},
		{name: "missing, parent exists", setup: func(t *testing.T, base, dir string) { mkdir(0o755, 0)(t, ab(base)) }, missing: true},
		{name: "existing empty 0755", setup: func(t *testing.T, base, dir string) { mkdir(0o755, 0)(t, dir) }},
		{name: "existing empty 0711", setup: func(t *testing.T, base, dir string) { mkdir(0o711, 0)(t, dir) }},

		{name: "world-writable", setup: func(t *testing.T, base, dir string) { mkdir(0o777, 0)(t, dir) },
			want: "/a/b/empty is writable by group or others (mode 0777): chmod go-w "},
		{name: "sticky world-writable", setup: func(t *testing.T, base, dir string) { mkdir(os.ModeSticky|0o777, 0)(t, dir) },
			want: "/a/b/empty is writable by group or others (mode 1777)"},
		{name: "group-writable", setup: func(t *testing.T, base, dir string) { mkdir(0o775, 0)(t, dir) },
			want: "/a/b/empty is writable by group or others (mode 0775)"},
		{name: "owned by another user", setup: func(t *testing.T, base, dir string) { mkdir(0o755, 65534)(t, dir) },
			want: "/a/b/empty is owned by uid 65534, not root: chown root "},

		{name: "ancestor world-writable", setup: ancestor(a, 0o777, 0),
			want: "/a is writable by group or others (mode 0777): chmod go-w "},
		{name: "ancestor sticky world-writable", setup: ancestor(a, os.ModeSticky|0o777, 0),
			want: "/a is writable by group or others (mode 1777)"},
		{name: "ancestor group-writable", setup: ancestor(ab, 0o770, 0),
			want: "/a/b is writable by group or others (mode 0770)"},
		{name: "ancestor owned by another user", setup: ancestor(a, 0o755, 65534),
			want: "/a is owned by uid 65534, not root"},
		{name: "missing under a world-writable parent", setup: func(t *testing.T, base, dir string) { mkdir(0o777, 0)(t, ab(base)) },
			want: "/a/b is writable by group or others (mode 0777)"},

		{name: "symbolic link at the end", setup: func(t *testing.T, base, dir string) {
			real := filepath.Join(base, "real")
			mkdir(0o755, 0)(t, real)
			mkdir(0o755, 0)(t, ab(base))
			symlink(t, real, dir)
		}, want: "/a/b/empty is a symbolic link: name the directory itself"},
		{name: "symbolic link in the middle", setup: func(t *testing.T, base, dir string) {
			real := filepath.Join(base, "real")
			mkdir(0o755, 0)(t, filepath.Join(real, "empty"))
			mkdir(0o755, 0)(t, a(base))
			symlink(t, real, ab(base))
		}, want: "/a/b is a symbolic link: name the directory itself"},
		{name: "not empty", setup: func(t *testing.T, base, dir string) {
			mkdir(0o755, 0)(t, dir)
			if err := os.WriteFile(filepath.Join(dir, ".hidden"), nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}, want: `/a/b/empty is not empty (it holds ".hidden")`},
		{name: "a file", setup: func(t *testing.T, base, dir string) {
			mkdir(0o755, 0)(t, ab(base))
			if err := os.WriteFile(dir, nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}, want: "/a/b/empty is not a directory (a regular file)"},
		{name: "a file in the middle", setup: func(t *testing.T, base, dir string) {
			mkdir(0o755, 0)(t, a(base))
			if err := os.WriteFile(ab(base), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}, want: "/a/b is not a directory (a regular file)"},
	}
}

// ancestor returns a setup that makes dir as a root-owned empty 0755
// directory except for the ancestor which(base), given mode and owner.
func ancestor(which func(base string) string, mode os.FileMode, uid int) func(t *testing.T, base, dir string) {
	return func(t *testing.T, base, dir string) {
		mkdir(0o755, 0)(t, dir)
		mkdir(mode, uid)(t, which(base))
	}
}

func symlink(t *testing.T, target, name string) {
	t.Helper()
	if err := os.Symlink(target, name); err != nil {
		t.Fatal(err)
	}
}

func TestChrootChecks(t *testing.T) {
	requireRoot(t)
	funcs := []struct {
		name string
		run  func(dir string) (*os.File, error)
	}{
		{"CheckChroot", func(dir string) (*os.File, error) { return nil, CheckChroot(dir) }},
		{"OpenChroot", OpenChroot},
		{"PrepareChroot", PrepareChroot},
	}
	for _, tc := range chrootCases() {
		for _, fn := range funcs {
			t.Run(tc.name+"/"+fn.name, func(t *testing.T) {
				base := rootOnlyBase(t)
				dir := filepath.Join(base, "a", "b", "empty")
				tc.setup(t, base, dir)
				f, err := fn.run(dir)
				if f != nil {
					defer f.Close()
				}
				want := tc.want
				if tc.missing && fn.name == "OpenChroot" {
					want = " does not exist"
				}
				if want != "" {
					if err == nil || !strings.Contains(err.Error(), want) {
						t.Fatalf("%s = %v, want an error containing %q", fn.name, err, want)
					}
					if !strings.HasPrefix(err.Error(), "privsep: chroot "+dir+": ") {
						t.Errorf("%s error %q does not start by naming the chroot", fn.name, err)
					}
					if f != nil {
						t.Errorf("%s returned a file with its error", fn.name)
					}
					if tc.missing || strings.HasPrefix(tc.name, "missing") {
						// Refused or only checked: nothing was created.
						if _, err := os.Lstat(dir); !errors.Is(err, fs.ErrNotExist) {
							t.Errorf("after %s, %s: %v, want it still missing", fn.name, dir, err)
						}
					}
					return
				}
				if err != nil {
					t.Fatalf("%s: %v", fn.name, err)
				}
				if fn.name == "CheckChroot" {
					if tc.missing {
						if _, err := os.Lstat(dir); !errors.Is(err, fs.ErrNotExist) {
							t.Errorf("CheckChroot created %s (%v)", dir, err)
						}
					}
					return
				}
				checkOpenChroot(t, f, dir)
			})
		}
	}
}

// checkOpenChroot checks that f is dir, open close-on-exec, and that dir
// is now a root-owned directory nobody else can write.
func checkOpenChroot(t *testing.T, f *os.File, dir string) {
	t.Helper()
	var got, want unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &got); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lstat(dir, &want); err != nil {
		t.Fatal(err)
	}
	if got.Dev != want.Dev || got.Ino != want.Ino {
		t.Errorf("returned file is device %d inode %d, %s is device %d inode %d", got.Dev, got.Ino, dir, want.Dev, want.Ino)
	}
	if uint32(want.Mode)&unix.S_IFMT != unix.S_IFDIR || want.Uid != 0 || want.Mode&0o022 != 0 {
		t.Errorf("%s: mode %o owned by %d, want a root-owned directory nobody else can write", dir, want.Mode, want.Uid)
	}
	flags, err := unix.FcntlInt(f.Fd(), unix.F_GETFD, 0)
	if err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Errorf("returned descriptor lacks close-on-exec (flags %#x, %v)", flags, err)
	}
	if f.Name() != dir {
		t.Errorf("returned file is named %q, want %q", f.Name(), dir)
	}
}

func TestPrepareChrootCreatesMode0755(t *testing.T) {
	base := rootOnlyBase(t)
	// A restrictive umask must not leave the new directories 0700.
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	dir := filepath.Join(base, "new", "empty")
	f, err := PrepareChroot(dir)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	for _, p := range []string{filepath.Dir(dir), dir} {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		if !fi.IsDir() || fi.Mode().Perm() != 0o755 {
			t.Errorf("%s created with mode %v, want a directory with 0755", p, fi.Mode())
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 || st.Gid != 0 {
			t.Errorf("%s created owned by %d:%d, want 0:0", p, st.Uid, st.Gid)
		}
	}
}

func TestChrootPathForms(t *testing.T) {
	// Refused before anything is opened, so no root needed.
	for _, tc := range []struct{ dir, want string }{
		{"", "privsep: chroot: empty path"},
		{"var/empty", `privsep: chroot "var/empty": not an absolute path`},
		{"/var/../var/empty", "privsep: chroot /var/../var/empty: not a clean path: name /var/empty"},
		{"/var/empty/", "privsep: chroot /var/empty/: not a clean path: name /var/empty"},
		{"/", "privsep: chroot /: / is not empty"},
	} {
		if err := CheckChroot(tc.dir); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("CheckChroot(%q) = %v, want %q", tc.dir, err, tc.want)
		}
		if f, err := PrepareChroot(tc.dir); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			f.Close()
			t.Errorf("PrepareChroot(%q) = %v, want %q", tc.dir, err, tc.want)
		}
	}
}

// mkdir returns a setup that creates the directory (and any missing
// parents, 0755) with mode (set explicitly, past the umask) and owner.
func mkdir(mode os.FileMode, uid int) func(t *testing.T, dir string) {
	return func(t *testing.T, dir string) {
		t.Helper()
		// The parents too get 0755 whatever the umask: one group-writable
		// parent would make every case a refusal.
		var missing []string
		for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
			if _, err := os.Lstat(p); err == nil {
				break
			}
			missing = append(missing, p)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, p := range missing {
			if err := os.Chmod(p, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(dir, uid, -1); err != nil {
			t.Fatal(err)
		}
	}
}
