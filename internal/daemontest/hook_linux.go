package daemontest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/imserious/imserious/privsep"
)

// WriteHook installs script as a's own hook, ~/.config/imserious/new-mail,
// the way the daemon wants one: the directories from the home down owned
// by a and mode 0755 (the home's group and other write bits cleared), the
// file owned by owner with mode mode (0755 for a good hook; a test of the
// refusals passes another owner or mode). It returns the file's path.
func WriteHook(tb testing.TB, a, owner privsep.Account, mode os.FileMode, script string) string {
	tb.Helper()
	home, err := os.Stat(a.Home)
	if err != nil {
		tb.Fatalf("%s's home: %v", a.Name, err)
	}
	if err := os.Chmod(a.Home, home.Mode().Perm()&^0o022); err != nil {
		tb.Fatal(err)
	}
	dir := filepath.Join(a.Home, ".config", "imserious")
	for _, d := range []string{filepath.Join(a.Home, ".config"), dir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.Chown(d, a.UID, a.GID); err != nil {
			tb.Fatal(err)
		}
		if err := os.Chmod(d, 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	p := filepath.Join(dir, "new-mail")
	if err := os.WriteFile(p, []byte(script), 0o700); err != nil {
		tb.Fatal(err)
	}
	if err := os.Chown(p, owner.UID, owner.GID); err != nil {
		tb.Fatal(err)
	}
	// WriteFile's mode is reduced by the umask, and kept for a file that
	// was there.
	if err := os.Chmod(p, mode); err != nil {
		tb.Fatal(err)
	}
	return p
}
