package exec

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Ids of the accounts in hook tests: the account whose hook it is, and
// someone else. Files root creates are root's, which the rules allow.
const (
	hookUID  = 4242
	otherUID = 5555
)

const hookRel = ".config/imserious/new-mail"

// hookHome makes a home with the directories of hookRel, all root's and
// 0755 but the home (0700, as t.TempDir makes it), and returns it.
func hookHome(t *testing.T) string {
	t.Helper()
	home := t.TempDir()
	mkdir(t, filepath.Join(home, ".config"), 0o755)
	mkdir(t, filepath.Join(home, ".config/imserious"), 0o755)
	return home
}

func mkdir(t *testing.T, p string, mode os.FileMode) {
	t.Helper()
	if err := os.Mkdir(p, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // whatever the umask
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, p string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(p, []byte("#!/bin/sh\nexit 0\n"), mode); err != nil {
		t.Fatal(err)
	}
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

func symlink(t *testing.T, target, p string) {
	t.Helper()
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
}

func TestLookupHook(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give files other owners")
	}
	const (
		found   = "found"
		missing = "missing"
	)
	cases := []struct {
		name string
		// setup prepares home (made by hookHome) and returns the path
		// the lookup must find, when it must find one.
		setup func(t *testing.T, home string) string
		want  string // found, missing, or a substring of the refusal
	}{
		{"missing file", func(t *testing.T, home string) string { return "" }, missing},
		{"missing directory", func(t *testing.T, home string) string {
			if err := os.RemoveAll(filepath.Join(home, ".config")); err != nil {
				t.Fatal(err)
			}
			return ""
		}, missing},
		{"missing home", func(t *testing.T, home string) string {
			if err := os.RemoveAll(home); err != nil {
				t.Fatal(err)
			}
			return ""
		}, missing},
		{"good, root's", func(t *testing.T, home string) string {
			p := filepath.Join(home, hookRel)
			writeFile(t, p, 0o755)
			return p
		}, found},
		{"good, the account's", func(t *testing.T, home string) string {
			p := filepath.Join(home, hookRel)
			writeFile(t, p, 0o700)
			for _, q := range []string{home, filepath.Join(home, ".config"), filepath.Join(home, ".config/imserious"), p} {
				chown(t, q, hookUID)
			}
			return p
		}, found},
		{"group-writable file", func(t *testing.T, home string) string {
			writeFile(t, filepath.Join(home, hookRel), 0o775)
			return ""
		}, "new-mail: writable by group (mode 0775)"},
		{"file writable by others", func(t *testing.T, home string) string {
			writeFile(t, filepath.Join(home, hookRel), 0o757)
			return ""
		}, "new-mail: writable by others"},
		{"file owned by someone else", func(t *testing.T, home string) string {
			p := filepath.Join(home, hookRel)
			writeFile(t, p, 0o755)
			chown(t, p, otherUID)
			return ""
		}, "new-mail: owned by uid 5555"},
		{"file not executable", func(t *testing.T, home string) string {
			writeFile(t, filepath.Join(home, hookRel), 0o644)
			return ""
		}, "not executable by its owner"},
		{"file is a directory", func(t *testing.T, home string) string {
			mkdir(t, filepath.Join(home, hookRel), 0o755)
			return ""
		}, "not a regular file (a directory)"},
		{"file is a named pipe", func(t *testing.T, home string) string {
			if err := unix.Mkfifo(filepath.Join(home, hookRel), 0o700); err != nil {
				t.Fatal(err)
			}
			return ""
		}, "not a regular file (a named pipe)"},
		{"group-writable directory", func(t *testing.T, home string) string {
			writeFile(t, filepath.Join(home, hookRel), 0o755)
			if err := os.Chmod(filepath.Join(home, ".config"), 0o775); err != nil {
				t.Fatal(err)
			}
			return ""
		}, ".config: writable by group"},
		{"directory owned by someone else", func(t *testing.T, home string) string {
			writeFile(t, filepath.Join(home, hookRel), 0o755)
			chown(t, filepath.Join(home, ".config/imserious"), otherUID)
			return ""
		}, "imserious: owned by uid 5555"},
		{"directory is a file", func(t *testing.T, home string) string {
			if err := os.RemoveAll(filepath.Join(home, ".config")); err != nil {
				t.Fatal(err)
			}
			writeFile(t, filepath.Join(home, ".config"), 0o644)
			return ""
		}, ".config: not a directory (a regular file)"},
		{"home owned by someone else", func(t *testing.T, home string) string {
			writeFile(t, filepath.Join(home, hookRel), 0o755)
			chown(t, home, otherUID)
			return ""
		}, "owned by uid 5555"},
		{"home writable by others", func(t *testing.T, home string) string {
			writeFile(t, filepath.Join(home, hookRel), 0o755)
			if err := os.Chmod(home, 0o1777); err != nil {
				t.Fatal(err)
			}
			return ""
		}, "writable by group and others"},
		{"symlink to a good file", func(t *testing.T, home string) string {
			mkdir(t, filepath.Join(home, "bin"), 0o755)
			p := filepath.Join(home, "bin/hook")
			writeFile(t, p, 0o755)
			symlink(t, "../../bin/hook", filepath.Join(home, hookRel))
			return p
		}, found},
		{"symlink to a good file outside the home", func(t *testing.T, home string) string {
			p, err := filepath.EvalSymlinks("/usr/bin/true")
			if err != nil {
				t.Skip("no /usr/bin/true")
			}
			symlink(t, "/usr/bin/true", filepath.Join(home, hookRel))
			return p
		}, found},
		{"symlinked directory", func(t *testing.T, home string) string {
			mkdir(t, filepath.Join(home, "dotfiles"), 0o755)
			mkdir(t, filepath.Join(home, "dotfiles/imserious"), 0o700)
			p := filepath.Join(home, "dotfiles/imserious/new-mail")
			writeFile(t, p, 0o755)
			if err := os.Remove(filepath.Join(home, ".config/imserious")); err != nil {
				t.Fatal(err)
			}
			symlink(t, filepath.Join(home, "dotfiles/imserious"), filepath.Join(home, ".config/imserious"))
			return p
		}, found},
		{"symlink to a bad file", func(t *testing.T, home string) string {
			p := filepath.Join(home, "hook")
			writeFile(t, p, 0o777)
			symlink(t, p, filepath.Join(home, hookRel))
			return ""
		}, "hook: writable by group and others (mode 0777) (reached through the symbolic link"},
		{"symlink to a file of someone else", func(t *testing.T, home string) string {
			p := filepath.Join(home, "hook")
			writeFile(t, p, 0o755)
			chown(t, p, otherUID)
			symlink(t, "../../hook", filepath.Join(home, hookRel))
			return ""
		}, "owned by uid 5555"},
		{"symlink out to a writable directory", func(t *testing.T, home string) string {
			dir := t.TempDir()
			if err := os.Chmod(dir, 0o777); err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(dir, "hook")
			writeFile(t, p, 0o755)
			symlink(t, p, filepath.Join(home, hookRel))
			return ""
		}, "writable by"},
		{"symlink to a directory", func(t *testing.T, home string) string {
			symlink(t, "..", filepath.Join(home, hookRel))
			return ""
		}, "not a regular file (a directory)"},
		{"symlink to the home", func(t *testing.T, home string) string {
			symlink(t, home, filepath.Join(home, hookRel))
			return ""
		}, "symbolic link to a directory"},
		{"dangling symlink", func(t *testing.T, home string) string {
			symlink(t, "nowhere", filepath.Join(home, hookRel))
			return ""
		}, missing},
		{"symlink loop", func(t *testing.T, home string) string {
			dir := filepath.Join(home, ".config/imserious")
			symlink(t, "loop", filepath.Join(dir, "new-mail"))
			symlink(t, "new-mail", filepath.Join(dir, "loop"))
			return ""
		}, "too many levels of symbolic links"},
		{"symlink to itself", func(t *testing.T, home string) string {
			symlink(t, "new-mail", filepath.Join(home, hookRel))
			return ""
		}, "too many levels of symbolic links"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			home := hookHome(t)
			want := c.setup(t, home)
			got, err := lookupHook(home, hookUID, hookRel)
			var refused *hookRefused
			switch c.want {
			case found:
				if err != nil || got != want {
					t.Fatalf("lookupHook = %q, %v; want %q", got, err, want)
				}
			case missing:
				if !errors.Is(err, errNoHook) || errors.As(err, &refused) {
					t.Fatalf("lookupHook = %q, %v; want no hook", got, err)
				}
			default:
				if !errors.As(err, &refused) || errors.Is(err, errNoHook) {
					t.Fatalf("lookupHook = %q, %v; want a refusal", got, err)
				}
				if !strings.Contains(err.Error(), c.want) {
					t.Fatalf("refusal %q does not say %q", err, c.want)
				}
				if got != "" {
					t.Fatalf("refused with a path %q", got)
				}
			}
		})
	}
}

// TestLookupHookHomeSymlink: symbolic links in the home's own path are
// the system's (FreeBSD's /home is one): the real home is checked.
func TestLookupHookHomeSymlink(t *testing.T) {
	real := hookHome(t)
	p := filepath.Join(real, hookRel)
	writeFile(t, p, 0o755)
	home := filepath.Join(t.TempDir(), "home")
	symlink(t, real, home)
	got, err := lookupHook(home, hookUID, hookRel)
	want, _ := filepath.EvalSymlinks(p)
	if err != nil || got != want {
		t.Fatalf("lookupHook = %q, %v; want %q", got, err, want)
	}
}

func TestLookupHookBadArguments(t *testing.T) {
	for _, c := range []struct{ home, rel string }{
		{"", "x"}, {"relative", "x"}, {"/", ""}, {"/", "/etc/passwd"}, {"/", "../x"}, {"/", "a//b"},
	} {
		if _, err := lookupHook(c.home, hookUID, c.rel); err == nil || errors.Is(err, errNoHook) {
			t.Errorf("lookupHook(%q, %q) = %v, want a refusal", c.home, c.rel, err)
		}
	}
}
