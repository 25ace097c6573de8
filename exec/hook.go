package exec

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Users' own hooks (spec §4): a handler whose program is written "~/rel"
// (config.HomeRelative) runs the account's own file, looked up when each
// run is launched, by this process, which already is the account. The
// checks are those smtpd and sendmail apply to ~/.forward: a file the
// account could not have written alone is not run.
//
//   - The home (cfg.Account.Home) is taken with the symbolic links in its
//     own path resolved: how the system reaches the home is root's
//     business. The real home must be a directory owned by the account or
//     root and not writable by group or others.
//   - Below it, every component of rel is examined with Lstat, from the
//     home down: each directory must be a directory owned by the account
//     or root and not writable by group or others; the file must be a
//     regular file owned by the account or root, not writable by group or
//     others, and executable by its owner.
//   - A symbolic link met on the way (a directory of rel or the file) is
//     followed only if its target passes the same checks. The target is
//     made absolute against the link's directory and cleaned lexically
//     (which is exact: that directory has no link left in its path); a
//     target inside the real home is examined from the home down, like
//     rel; any other target is examined from / down, so that "/" and
//     every directory to the target must pass the directory checks and
//     the target the file checks: a link to /usr/local/libexec/hook
//     (root's directories) passes, one into /tmp (writable by everyone)
//     or another account's home does not. Links inside a target are
//     followed by the same rule, at most maxHookLinks in one lookup (a
//     loop is refused).
//
// What runs is the resolved path, which holds no symbolic link: the file
// that passed the checks. Between the check and execve only the account
// or root can change any directory on that path (that is what the checks
// ensure), and the command runs as the account anyway.

// maxHookLinks bounds the symbolic links one lookup follows, like the
// kernel's own limit (40 on Linux, 32 on the BSDs).
const maxHookLinks = 32

// errNoHook is wrapped by lookupHook when the hook, or a directory on
// its way, does not exist: the account has none, which is not a mistake
// (users opt in by creating the file).
var errNoHook = errors.New("no hook")

// hookRefused is lookupHook's error for a hook that exists but is not
// run: Path names what failed the checks and Reason why.
type hookRefused struct {
	Path, Reason string
}

func (e *hookRefused) Error() string { return e.Path + ": " + e.Reason }

// hookMissing is errNoHook with the path that does not exist.
type hookMissing struct{ Path string }

func (e *hookMissing) Error() string { return e.Path + ": " + errNoHook.Error() }
func (e *hookMissing) Unwrap() error { return errNoHook }

// lookupHook finds the program rel (clean and relative, see
// config.HomeRelative) in the home of the account with uid, by the rules
// above, and returns its absolute path with no symbolic link in it. The
// error wraps errNoHook when something on the way does not exist, and is
// a *hookRefused for anything else.
func lookupHook(home string, uid int, rel string) (string, error) {
	if home == "" || !filepath.IsAbs(home) {
		return "", &hookRefused{Path: home, Reason: "the account's home is not an absolute path"}
	}
	if rel == "" || filepath.IsAbs(rel) || rel != filepath.Clean(rel) || rel == ".." || strings.HasPrefix(rel, "../") {
		// config.HomeRelative never gives such a path.
		return "", &hookRefused{Path: rel, Reason: "not a clean path below the home"}
	}
	real, err := filepath.EvalSymlinks(home)
	if err != nil {
		return "", statError(home, err)
	}
	w := &hookWalk{uid: uid, home: real}
	fi, err := os.Lstat(real)
	if err != nil {
		return "", statError(real, err)
	}
	if err := w.check(real, fi, false); err != nil {
		return "", err
	}
	return w.resolve(real, strings.Split(rel, "/"), true)
}

// hookWalk is the state of one lookup.
type hookWalk struct {
	uid    int
	home   string // the real home, checked
	links  int    // symbolic links followed so far
	rootOK bool   // "/" has passed the directory checks
}

// resolve walks comps, each one name (not "." or ".."), down from dir, a
// directory with no link in its path that has passed the checks, and
// returns the real path they lead to. The last component is checked as
// the file when file is set, as a directory otherwise; the others as
// directories.
func (w *hookWalk) resolve(dir string, comps []string, file bool) (string, error) {
	for i, name := range comps {
		isFile := file && i == len(comps)-1
		p := filepath.Join(dir, name)
		fi, err := os.Lstat(p)
		if err != nil {
			return "", statError(p, err)
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			if p, err = w.follow(dir, p, isFile); err != nil {
				return "", err
			}
		} else if err := w.check(p, fi, isFile); err != nil {
			return "", err
		}
		dir = p
	}
	return dir, nil
}

// follow resolves the symbolic link at link, in dir, to the real path of
// a target that passes the checks (as the file when isFile is set).
func (w *hookWalk) follow(dir, link string, isFile bool) (string, error) {
	w.links++
	if w.links > maxHookLinks {
		return "", &hookRefused{Path: link, Reason: "too many levels of symbolic links"}
	}
	t, err := os.Readlink(link)
	if err != nil {
		return "", statError(link, err)
	}
	if !filepath.IsAbs(t) {
		t = filepath.Join(dir, t)
	}
	t = filepath.Clean(t)
	start := "/"
	if within(t, w.home) {
		start = w.home
	} else if err := w.checkRoot(); err != nil {
		return "", err
	}
	rest := strings.TrimPrefix(strings.TrimPrefix(t, start), "/")
	if rest == "" {
		// The link names the home, or /, itself: a checked directory.
		if isFile {
			return "", &hookRefused{Path: link, Reason: "is a symbolic link to a directory (" + t + "), not to a file"}
		}
		return start, nil
	}
	p, err := w.resolve(start, strings.Split(rest, "/"), isFile)
	var r *hookRefused
	if errors.As(err, &r) && !strings.Contains(r.Reason, "symbolic link") {
		// Say which link led there.
		r.Reason += " (reached through the symbolic link " + link + ")"
	}
	return p, err
}

// within reports whether the clean absolute path p is dir or below it.
func within(p, dir string) bool {
	return p == dir || dir == "/" || strings.HasPrefix(p, dir+"/")
}

// checkRoot checks "/" as a directory on the way to a link's target
// outside the home, once per lookup.
func (w *hookWalk) checkRoot() error {
	if w.rootOK {
		return nil
	}
	fi, err := os.Lstat("/")
	if err != nil {
		return statError("/", err)
	}
	if err := w.check("/", fi, false); err != nil {
		return err
	}
	w.rootOK = true
	return nil
}

// check applies the owner and mode rules to p, which Lstat described as
// fi and which is no symbolic link: the file when file is set, a
// directory on the way to it otherwise.
func (w *hookWalk) check(p string, fi fs.FileInfo, file bool) error {
	refuse := func(format string, a ...any) error {
		return &hookRefused{Path: p, Reason: fmt.Sprintf(format, a...)}
	}
	mode := fi.Mode()
	switch {
	case file && !mode.IsRegular():
		return refuse("not a regular file (%s)", kindOf(mode))
	case !file && !mode.IsDir():
		return refuse("not a directory (%s)", kindOf(mode))
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return refuse("cannot tell its owner")
	}
	if owner := int(st.Uid); owner != w.uid && owner != 0 {
		return refuse("owned by uid %d, neither the account (uid %d) nor root", owner, w.uid)
	}
	if perm := mode.Perm(); perm&0o022 != 0 {
		return refuse("writable by %s (mode %04o)", writers(perm), perm)
	}
	if file && mode.Perm()&0o100 == 0 {
		return refuse("not executable by its owner (mode %04o)", mode.Perm())
	}
	return nil
}

// writers says who besides the owner may write, for a mode with 0o022
// bits.
func writers(perm fs.FileMode) string {
	switch {
	case perm&0o022 == 0o022:
		return "group and others"
	case perm&0o020 != 0:
		return "group"
	}
	return "others"
}

// kindOf names a file's type for a refusal.
func kindOf(mode fs.FileMode) string {
	switch {
	case mode.IsDir():
		return "a directory"
	case mode.IsRegular():
		return "a regular file"
	case mode&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case mode&fs.ModeSocket != 0:
		return "a socket"
	case mode&fs.ModeDevice != 0:
		return "a device"
	}
	return "type " + mode.Type().String()
}

// statError is the lookup's error when p cannot be examined: no hook
// when it does not exist, a refusal otherwise (permission denied, a
// component that is not a directory, an I/O error).
func statError(p string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return &hookMissing{Path: p}
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return &hookRefused{Path: p, Reason: "cannot be examined: " + err.Error()}
}
