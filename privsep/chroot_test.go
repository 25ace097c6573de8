package privsep

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestPrepareChroot(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, dir string) // dir does not exist yet
		want  string                         // "" for success
	}{
		{"missing, with missing parents", func(t *testing.T, dir string) {}, ""},
		{"existing empty 0755", mkdir(0o755, 0), ""},
		{"existing empty 0711", mkdir(0o711, 0), ""},
		{"world-writable", mkdir(0o777, 0), "lets group or others write"},
		{"sticky world-writable", mkdir(os.ModeSticky|0o777, 0), "lets group or others write"},
		{"group-writable", mkdir(0o775, 0), "lets group or others write"},
		{"owned by another user", mkdir(0o755, 65534), "owned by uid 65534"},
		{"not empty", func(t *testing.T, dir string) {
			mkdir(0o755, 0)(t, dir)
			if err := os.WriteFile(filepath.Join(dir, ".hidden"), nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "not empty"},
		{"a file", func(t *testing.T, dir string) {
			if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(dir, nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}, "not a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "a", "b", "empty")
			tc.setup(t, dir)
			err := PrepareChroot(dir)
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("PrepareChroot = %v, want an error containing %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("PrepareChroot: %v", err)
			}
			fi, err := os.Stat(dir)
			if err != nil {
				t.Fatal(err)
			}
			st := fi.Sys().(*syscall.Stat_t)
			if !fi.IsDir() || st.Uid != 0 || fi.Mode().Perm()&0o022 != 0 {
				t.Fatalf("after PrepareChroot: %v owned by %d", fi.Mode(), st.Uid)
			}
		})
	}
}

func TestPrepareChrootCreatesMode0755(t *testing.T) {
	requireRoot(t)
	// A restrictive umask must not leave the new directory 0700.
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	dir := filepath.Join(t.TempDir(), "new")
	if err := PrepareChroot(dir); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o755 {
		t.Fatalf("created with mode %04o, want 0755", fi.Mode().Perm())
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 || st.Gid != 0 {
		t.Fatalf("created owned by %d:%d, want 0:0", st.Uid, st.Gid)
	}
}

// mkdir returns a setup that creates the directory with mode (set
// explicitly, past the umask) and owner.
func mkdir(mode os.FileMode, uid int) func(t *testing.T, dir string) {
	return func(t *testing.T, dir string) {
		t.Helper()
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(dir, uid, -1); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPrepareChrootEmptyPath(t *testing.T) {
	if err := PrepareChroot(""); err == nil {
		t.Fatal("PrepareChroot(\"\") succeeded")
	}
}
