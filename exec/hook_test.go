package exec

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imserious/imserious/clock/clocktest"
	"github.com/imserious/imserious/config"
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

// hookHandler is a wildcard handler running each user's own hook in
// home, as the account hookUID.
func hookHandler(home string) config.Handler {
	h := patternHandler("*")
	h.Command = []string{"~/" + hookRel, "--quiet"}
	h.Path = "~/" + hookRel
	h.Account.Home = home
	return h
}

// TestHookMissingRunsNothing: a user without a hook runs nothing, logs
// a debug line only, counts no run, and gives its token back, so its
// state is freed at once and the next event is not held by the limit.
func TestHookMissingRunsNothing(t *testing.T) {
	home := hookHome(t)
	hc := hookHandler(home)
	hc.Retries = 2
	h := newHarness(t, hc)
	for i := range 2 {
		if n := h.x.Deliver(newEvent("u1", "s"), peer); n != 1 {
			t.Fatalf("Deliver matched %d", n)
		}
		h.waitEnd()
		h.noRun()
		h.wantUsers(0)
		if !h.x.Idle() {
			t.Fatal("not idle")
		}
		recs := h.logs.find(t, "no hook, nothing runs")
		if len(recs) != i+1 || recs[i]["level"] != "DEBUG" || recs[i]["user"] != "u1" || recs[i]["program"] != "~/"+hookRel {
			t.Fatalf("records %v", recs)
		}
	}
	if n := len(h.logs.find(t, "run deferred by rate limit")); n != 0 {
		t.Errorf("deferred %d times", n)
	}
	if st := h.x.Status(); st[0].Runs != 0 || st[0].Failures != 0 || st[0].LastRun != nil {
		t.Errorf("status %+v", st[0])
	}
	h.clock.Advance(time.Hour)
	h.noRun()
	if h.clock.Pending() != 0 {
		t.Errorf("%d timers armed", h.clock.Pending())
	}
}

// TestHookRefusedRunsNothing: a hook that fails the checks runs nothing
// and says why at warn; it is neither counted nor retried, and keeps the
// token it took, which bounds those lines by the limit.
func TestHookRefusedRunsNothing(t *testing.T) {
	home := hookHome(t)
	writeFile(t, filepath.Join(home, hookRel), 0o775)
	hc := hookHandler(home)
	hc.Retries = 2
	h := newHarness(t, hc)
	h.x.Deliver(newEvent("u1", "s"), peer)
	h.waitEnd()
	h.noRun()
	recs := h.logs.find(t, "hook refused, nothing runs")
	if len(recs) != 1 || recs[0]["level"] != "WARN" || recs[0]["user"] != "u1" ||
		recs[0]["path"] != filepath.Join(home, hookRel) || recs[0]["reason"] != "writable by group (mode 0775)" {
		t.Fatalf("records %v", recs)
	}
	if st := h.x.Status(); st[0].Runs != 0 || st[0].Failures != 0 || st[1].State != StateIdle {
		t.Errorf("status %+v", st)
	}
	h.x.Deliver(newEvent("u1", "s"), peer)
	if s := h.userStatus("u1"); s.State != StateDeferred {
		t.Errorf("u1 %+v", s)
	}
	// Fixed meanwhile: the deferred run finds it.
	if err := os.Chmod(filepath.Join(home, hookRel), 0o755); err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(30 * time.Second)
	r := h.next()
	if r.Path != filepath.Join(home, hookRel) {
		t.Errorf("job path %q", r.Path)
	}
	h.finish(r)
	h.clock.Advance(30 * time.Second)
	h.wantUsers(0)
	if st := h.x.Status(); st[0].Runs != 1 {
		t.Errorf("status %+v", st)
	}
}

// TestHookExactHandler: an exact handler may run a program in the home
// too.
func TestHookExactHandler(t *testing.T) {
	home := hookHome(t)
	hc := testHandler("alice")
	hc.Command, hc.Path = []string{"~/" + hookRel}, "~/"+hookRel
	hc.Account.Home, hc.Account.UID = home, hookUID
	h := newHarness(t, hc)
	h.x.Deliver(newEvent("alice", "s"), peer)
	h.waitEnd()
	h.noRun()
	if !h.x.Idle() {
		t.Error("not idle")
	}
	writeFile(t, filepath.Join(home, hookRel), 0o755)
	h.x.Deliver(newEvent("alice", "s"), peer) // not deferred: the token was given back
	r := h.next()
	if r.Path != filepath.Join(home, hookRel) || r.Handler.Path != "~/"+hookRel {
		t.Errorf("job path %q, handler's %q", r.Path, r.Handler.Path)
	}
	h.finish(r)
	h.wantRuns(0, 1)
}

// TestHookRuns runs a real hook: argv is the path found, then the
// handler's arguments, with no shell, and IMSE_USER is the event's user.
func TestHookRuns(t *testing.T) {
	home := hookHome(t)
	p := filepath.Join(home, hookRel)
	if err := os.WriteFile(p, []byte("#!/bin/sh\necho \"$0|$*|$IMSE_USER|$USER|$HOME\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	hc := hookHandler(home)
	hc.Command = []string{"~/" + hookRel, "--quiet", "a b", "$HOME"}
	hc.Account.UID = os.Getuid()
	logs := &logBuf{}
	x := New(Options{Handlers: []config.Handler{hc}, Log: newLogger(logs), Clock: clocktest.New(epoch)})
	ended := make(chan int, 1)
	x.ended = func(i int) { ended <- i }
	defer x.Shutdown(0)
	x.Deliver(newEvent("alice@example.org", "s"), peer)
	select {
	case <-ended:
	case <-time.After(safety):
		t.Fatalf("run did not end; log:\n%s", logs.String())
	}
	want := p + "|--quiet a b $HOME|alice@example.org|vmail|" + home
	if got := outputLines(t, logs, "stdout"); !slices.Equal(got, []string{want}) {
		t.Errorf("output %q, want %q; log:\n%s", got, want, logs.String())
	}
	if rec := one(t, logs, "command started"); rec["path"] != p || rec["user"] != "alice@example.org" {
		t.Errorf("start record %v", rec)
	}
}

// TestRunnerRefusesUnresolved: a runner handed a "~/" program that was
// not looked up never starts it.
func TestRunnerRefusesUnresolved(t *testing.T) {
	j := realJob(t, "~/"+hookRel, "~/"+hookRel)
	logs := runLogged(t, &CommandRunner{}, context.Background(), j)
	if rec := one(t, logs, "command not started: its program is not an absolute path"); rec["level"] != "ERROR" {
		t.Errorf("record %v", rec)
	}
	if n := len(logs.find(t, "command started")); n != 0 {
		t.Errorf("%d starts", n)
	}
}
