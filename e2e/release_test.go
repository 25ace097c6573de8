//go:build e2e && linux

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imserious/imserious/internal/daemontest"
	"github.com/imserious/imserious/privsep"
)

// release is a Dovecot under test: the host's Dovecot 2.3 (Debian 12's
// packages), or Debian 13's Dovecot 2.4 in a chroot that shares the
// host's network, so that its dovecot-lda and LMTP reach imserious on
// loopback. The same cases run against each.
type release struct {
	version string // the syntax: what imseriousctl dovecot is given, and the base configuration's
	root    string // the chroot it runs in; "" for the host's own
}

// The releases, in the order they run.
var (
	dovecot23 = &release{version: "2.3"}
	dovecot24 = &release{version: "2.4", root: chrootDir()}
)

// chrootDir is where the Dovecot 2.4 chroot is made and kept:
// $IMSERIOUS_E2E_CHROOT (made absolute), else a fixed place, so that
// later runs reuse it.
func chrootDir() string {
	if d := os.Getenv("IMSERIOUS_E2E_CHROOT"); d != "" {
		if abs, err := filepath.Abs(d); err == nil {
			return abs
		}
		return filepath.Clean(d)
	}
	return "/var/cache/imserious-e2e/trixie"
}

// chrootBin is coreutils' chroot, where Debian puts it.
const chrootBin = "/usr/sbin/chroot"

// chrootMarker is the file install-dovecot24.sh writes last into a chroot
// it made: one without it is not a chroot to use.
const chrootMarker = ".imserious-e2e-chroot"

// releases are those $IMSERIOUS_E2E_DOVECOT names (words, "2.3 2.4" when
// unset): 2.4 can be left out where its chroot cannot be made (no
// network to Debian's mirrors), 2.3 where only 2.4 is of interest.
func releases() ([]*release, error) {
	words := strings.Fields(os.Getenv("IMSERIOUS_E2E_DOVECOT"))
	if len(words) == 0 {
		return []*release{dovecot23, dovecot24}, nil
	}
	var out []*release
	for _, w := range words {
		switch w {
		case "2.3":
			out = append(out, dovecot23)
		case "2.4":
			out = append(out, dovecot24)
		default:
			return nil, fmt.Errorf("IMSERIOUS_E2E_DOVECOT=%q: want 2.3, 2.4 or both", os.Getenv("IMSERIOUS_E2E_DOVECOT"))
		}
	}
	return out, nil
}

// forEachDovecot runs f as a subtest per release under test, named by
// its version, once that Dovecot is there.
func forEachDovecot(t *testing.T, f func(t *testing.T, r *release)) {
	t.Helper()
	requireRoot(t)
	rs, err := releases()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		t.Run("dovecot"+r.version, func(t *testing.T) {
			r.require(t)
			f(t, r)
		})
	}
}

// argv is how to run bin (a path inside the release's root) with args.
func (r *release) argv(bin string, args ...string) []string {
	if r.root == "" {
		return append([]string{bin}, args...)
	}
	return append([]string{chrootBin, r.root, bin}, args...)
}

// command is exec.CommandContext for bin inside the release's root.
func (r *release) command(ctx context.Context, bin string, args ...string) *exec.Cmd {
	a := r.argv(bin, args...)
	return exec.CommandContext(ctx, a[0], a[1:]...)
}

// openDir is daemontest.OpenDir for files the release's Dovecot reads or
// writes: for the chroot, a directory inside it, whose host path is valid
// inside the chroot too (see prepareChroot).
func (r *release) openDir(t *testing.T) string {
	t.Helper()
	if r.root == "" {
		return daemontest.OpenDir(t)
	}
	d, err := os.MkdirTemp(filepath.Join(r.root, "srv"), "imse-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

// require fails, rather than skips, when the release cannot run: `make
// e2e` installs Dovecot 2.3 and the suite makes the 2.4 chroot, so a
// missing one is a broken set-up, which a skip would hide.
func (r *release) require(t *testing.T) {
	t.Helper()
	if r.root == "" {
		requireDovecot(t)
		return
	}
	chrootOnce.Do(func() { chrootNote, chrootErr = makeChroot(r.root) })
	if chrootErr != nil {
		t.Fatalf("the Dovecot 2.4 chroot %s: %v", r.root, chrootErr)
	}
	chrootLog.Do(func() { t.Logf("Dovecot 2.4 chroot %s: %s", r.root, chrootNote) })
}

// The 2.4 chroot is made or checked once per run, by the first test that
// needs it: a run that tests 2.3 alone never makes it.
var (
	chrootOnce, chrootLog sync.Once
	chrootNote            string // made or reused, and the version
	chrootErr             error
)

// setupScript makes the chroot when it is missing and leaves one that is
// there alone; go test runs in the package's directory.
const setupScript = "install-dovecot24.sh"

// makeChroot runs the set-up script for the chroot at root, then readies
// it for the suite (prepareChroot), and says what it did.
func makeChroot(root string) (note string, err error) {
	begin := time.Now()
	_, statErr := os.Stat(filepath.Join(root, chrootMarker))
	// A failure deadline for a download and an install that took under
	// a minute where measured.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", setupScript, root)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("sh %s %s: %v\n%s", setupScript, root, err, out.String())
	}
	if err := prepareChroot(root); err != nil {
		return "", err
	}
	v, err := exec.Command(chrootBin, root, dovecotBin, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("chroot %s %s --version: %v", root, dovecotBin, err)
	}
	how := "reused"
	if statErr != nil {
		how = fmt.Sprintf("made in %v by %s", time.Since(begin).Round(time.Second), setupScript)
	}
	return fmt.Sprintf("%s, dovecot %s", how, strings.TrimSpace(string(v))), nil
}

// prepareChroot makes every host path under root a path inside the chroot
// too: a link at root+root, inside the chroot, back to the chroot's own
// root. The configuration under test names host paths (the imserious of
// the host reads its certificate where imseriousctl tells Dovecot to find
// the CA), and so does the Dovecot configuration, which the suite writes
// once for both releases. The link is relative, so that it leads to the
// chroot's root seen from the host as well, never to the host's.
func prepareChroot(root string) error {
	link := filepath.Join(root, root)
	depth := strings.Count(root, "/")
	target := strings.TrimSuffix(strings.Repeat("../", depth-1), "/")
	if depth == 1 {
		target = "."
	}
	if got, err := os.Readlink(link); err == nil && got == target {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		return err
	}
	if err := os.Symlink(target, link); err != nil {
		return fmt.Errorf("the chroot's link to itself: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(root, "srv"), 0o755); err != nil {
		return err
	}
	return nil
}

// accountsMu serialises the edits of the chroot's passwd and group.
var accountsMu sync.Mutex

// addAccounts gives the chroot the host's accounts (same name, uid and
// gid), for the mail users of the release's Dovecot, which drops to
// their uids inside the chroot: the commands imserious runs on the host
// then run as the very accounts the mail belongs to. An entry of the same
// name is rewritten; another name with the same uid is an error.
func (r *release) addAccounts(t *testing.T, accts ...privsep.Account) {
	t.Helper()
	if r.root == "" {
		return
	}
	accountsMu.Lock()
	defer accountsMu.Unlock()
	for _, a := range accts {
		group := a.Name
		if g, err := user.LookupGroupId(strconv.Itoa(a.GID)); err == nil {
			group = g.Name
		}
		if err := editDB(filepath.Join(r.root, "etc/passwd"), a.Name, 2, strconv.Itoa(a.UID),
			fmt.Sprintf("%s:x:%d:%d::/nonexistent:/usr/sbin/nologin", a.Name, a.UID, a.GID)); err != nil {
			t.Fatal(err)
		}
		if err := editDB(filepath.Join(r.root, "etc/group"), group, 2, strconv.Itoa(a.GID),
			fmt.Sprintf("%s:x:%d:", group, a.GID)); err != nil {
			t.Fatal(err)
		}
	}
}

// editDB puts line, the entry for name whose field idx is id, into the
// colon-separated database at path (passwd, group), replacing an entry of
// that name.
func editDB(path, name string, idx int, id, line string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var out []string
	found := false
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		l := sc.Text()
		f := strings.Split(l, ":")
		switch {
		case len(f) > idx && f[0] == name:
			if l == line {
				found = true
				out = append(out, l)
			}
			continue // rewritten below unless already right
		case len(f) > idx && f[idx] == id:
			return fmt.Errorf("%s: %q has id %s, which the host gives %s", path, f[0], id, name)
		}
		out = append(out, l)
	}
	if found {
		return nil
	}
	out = append(out, line)
	return os.WriteFile(path, []byte(strings.Join(out, "\n")+"\n"), 0o644)
}
