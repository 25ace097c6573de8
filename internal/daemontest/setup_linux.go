package daemontest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imserious/imserious/privsep"
)

// LogTOML is the [log] table Start needs: JSON, every level, with the
// level and the target (which process logged) on each line.
const LogTOML = "[log]\nformat = \"json\"\nmax_level = \"debug\"\nlevel = true\ntarget = true\n"

// netUser is the account the network process runs as in tests.
const netUser = "_imserious"

// WriteConfig writes the configuration text to a fresh file, mode 0600,
// and returns its path.
func WriteConfig(tb testing.TB, text string) string {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), "imserious.toml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		tb.Fatal(err)
	}
	return p
}

// Account returns a system account, creating it with useradd when missing
// (which needs root). Tests leave the accounts in place, as `make
// test-accounts` does: they are locked and own nothing outside the tests'
// directories. _imserious, the network process's, is made as a system
// account without a home or a shell, as a package would make it.
func Account(tb testing.TB, name string) privsep.Account {
	tb.Helper()
	a, err := privsep.LookupAccount(name)
	if err == nil {
		return a
	}
	if !errors.Is(err, privsep.ErrNoAccount) {
		tb.Fatalf("looking up account %s: %v", name, err)
	}
	args := []string{"-m", "-s", "/bin/sh", name}
	if name == netUser {
		args = []string{"-r", "-M", "-d", "/var/empty", "-s", "/usr/sbin/nologin", name}
	}
	if out, err := exec.Command("useradd", args...).CombinedOutput(); err != nil {
		tb.Fatalf("useradd %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	a, err = privsep.LookupAccount(name)
	if err != nil {
		tb.Fatalf("looking up account %s after useradd: %v", name, err)
	}
	return a
}

// PrivsepTOML returns, as root, a [privsep] table that runs the network
// process as _imserious (created when missing) confined to a fresh empty
// directory instead of the system's /var/empty. It returns "" for other
// users, as whom the daemon changes neither uid nor root.
//
// The directory is not under tb.TempDir: /tmp is writable by others
// (1777), and the daemon refuses a chroot with any such ancestor. It is
// made in a root-only place instead (/run, else /var/lib) and removed at
// cleanup; privsep.CheckChroot, the daemon's own check, must pass it.
func PrivsepTOML(tb testing.TB) string {
	tb.Helper()
	if os.Geteuid() != 0 {
		return ""
	}
	Account(tb, netUser)
	var refusals []string
	for _, parent := range []string{"/run", "/var/lib"} {
		base, err := os.MkdirTemp(parent, "imserious-test-")
		if err != nil {
			refusals = append(refusals, err.Error())
			continue
		}
		d := filepath.Join(base, "empty")
		if err := os.Mkdir(d, 0o755); err != nil {
			os.RemoveAll(base)
			tb.Fatal(err)
		}
		// Mkdir's mode is reduced by the umask.
		if err := os.Chmod(d, 0o755); err != nil {
			os.RemoveAll(base)
			tb.Fatal(err)
		}
		if err := privsep.CheckChroot(d); err != nil {
			os.RemoveAll(base)
			refusals = append(refusals, err.Error())
			continue
		}
		tb.Cleanup(func() { os.RemoveAll(base) })
		return fmt.Sprintf("[privsep]\nuser = %q\nchroot = %q\n", netUser, d)
	}
	tb.Fatalf("no root-only place for the network process's chroot: %s", strings.Join(refusals, "; "))
	return ""
}

// PublicDir returns a fresh directory every uid can write (mode 1777):
// commands run as other accounts write there. t.TempDir is in a 0700
// directory, which other uids cannot enter.
func PublicDir(tb testing.TB) string {
	tb.Helper()
	return sharedDir(tb, os.ModeSticky|0o777)
}

// OpenDir returns a fresh directory every uid can traverse and read (mode
// 0755), for files that processes of other uids read.
func OpenDir(tb testing.TB) string {
	tb.Helper()
	return sharedDir(tb, 0o755)
}

func sharedDir(tb testing.TB, mode os.FileMode) string {
	tb.Helper()
	d, err := os.MkdirTemp("", "imserious-test-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(d) })
	// MkdirTemp makes it 0700. os.Chmod sets the sticky bit from
	// os.ModeSticky, not from 0o1000.
	if err := os.Chmod(d, mode); err != nil {
		tb.Fatal(err)
	}
	return d
}
