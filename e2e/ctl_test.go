//go:build e2e && linux

package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/shlex"

	"github.com/imserious/imserious/internal/daemontest"
)

// The Dovecot configuration under test is what imseriousctl dovecot 2.3
// or 2.4 prints for the imserious configuration under test, pasted as
// is: a wrong URL, encoding, plugin, setting or doveadm line fails the
// suite.

// ctlBin is the imseriousctl under test: $IMSERIOUSCTL_BIN, or one built
// for the run (setCtl).
var ctlBin string

// ctlPkg is what setCtl builds when IMSERIOUSCTL_BIN is not set.
const ctlPkg = "github.com/imserious/imserious/cmd/imseriousctl"

// setCtl finds or builds imseriousctl and returns what removes the build.
func setCtl() (cleanup func(), err error) {
	if p := os.Getenv("IMSERIOUSCTL_BIN"); p != "" {
		abs, err := filepath.Abs(p)
		if err == nil {
			_, err = os.Stat(abs)
		}
		if err != nil {
			return nil, fmt.Errorf("IMSERIOUSCTL_BIN %q: %w", p, err)
		}
		ctlBin = abs
		return func() {}, nil
	}
	dir, err := os.MkdirTemp("", "imseriousctl-e2e-")
	if err != nil {
		return nil, err
	}
	// go test puts its own toolchain first in PATH.
	goBin, err := exec.LookPath("go")
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("building imseriousctl: no go command in PATH: %w", err)
	}
	bin := filepath.Join(dir, "imseriousctl")
	cmd := exec.Command(goBin, "build", "-o", bin, ctlPkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("go build %s: %w\n%s", ctlPkg, err, out)
	}
	ctlBin = bin
	return func() { os.RemoveAll(dir) }, nil
}

// dovecotSettings runs imseriousctl dovecot VERSION on the imserious
// configuration text and returns what it printed.
func dovecotSettings(t *testing.T, r *release, cfgText string) string {
	t.Helper()
	cmd := exec.Command(ctlBin, "-c", daemontest.WriteConfig(t, cfgText), "dovecot", r.version)
	cmd.Env = []string{"PATH=/usr/bin:/bin:/usr/sbin:/sbin"}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("imseriousctl dovecot %s: %v\n%s", r.version, err, stderr.String())
	}
	// The daemon started on this configuration: nothing may be wrong
	// with it but what -n would warn of.
	for _, l := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		if l != "" && !strings.HasPrefix(l, "warning: ") {
			t.Errorf("imseriousctl dovecot %s complained: %s", r.version, stderr.String())
			break
		}
	}
	return stdout.String()
}

// The line of the push driver's URL, and how a URL is written in it:
// 2.3 expands %-variables in plugin settings, so every % of the URL is
// doubled there; 2.4 takes the URL as it is (and refuses %%).
var (
	driverURL23 = regexp.MustCompile(`(?m)^\s*push_notification_driver = ox:url=(\S+) `)
	driverURL24 = regexp.MustCompile(`(?m)^\s*ox_url = (\S+)$`)
)

// urlIn is a URL as the release's configuration writes it.
func (r *release) urlIn(url string) string {
	if r.version == "2.3" {
		return strings.ReplaceAll(url, "%", "%%")
	}
	return url
}

// pushURL returns the URL of the settings' push driver as written there
// (for 2.3, every % doubled).
func pushURL(t *testing.T, r *release, settings string) string {
	t.Helper()
	re := driverURL23
	if r.version == "2.4" {
		re = driverURL24
	}
	m := re.FindAllStringSubmatch(settings, -1)
	if len(m) != 1 {
		t.Fatalf("%d push driver URLs in imseriousctl's %s output, want one:\n%s", len(m), r.version, settings)
	}
	return m[0][1]
}

// withURL returns the settings with the push driver pointed at url (a
// URL as Go would write it; written here as the release wants it).
func withURL(t *testing.T, r *release, settings, url string) string {
	t.Helper()
	old := pushURL(t, r, settings)
	if strings.Count(settings, old) != 1 {
		t.Fatalf("the URL %s is in imseriousctl's output more than once:\n%s", old, settings)
	}
	return strings.Replace(settings, old, r.urlIn(url), 1)
}

// doveadmCommands returns the doveadm commands the settings tell the
// operator to run, each split as a shell would.
func doveadmCommands(t *testing.T, settings string) [][]string {
	t.Helper()
	var out [][]string
	for _, l := range strings.Split(settings, "\n") {
		cmd, ok := strings.CutPrefix(l, "#   doveadm ")
		if !ok {
			continue
		}
		args, err := shlex.Split(cmd)
		if err != nil {
			t.Fatalf("printed doveadm line %q: %v", l, err)
		}
		out = append(out, args)
	}
	return out
}

// applyDoveadm runs the printed doveadm lines on the main configuration
// and checks they switch on exactly users.
func (d *dovecot) applyDoveadm(t *testing.T, settings string, users ...string) {
	t.Helper()
	var got []string
	for _, args := range doveadmCommands(t, settings) {
		if i := slices.Index(args, "-u"); i >= 0 && i+1 < len(args) {
			got = append(got, args[i+1])
		}
		d.doveadm(t, args...)
	}
	if !slices.Equal(got, users) {
		t.Fatalf("the printed doveadm lines switch on %q, want %q:\n%s", got, users, settings)
	}
}
