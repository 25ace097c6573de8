package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/imserious/imserious/internal/pathwalk"
	"github.com/imserious/imserious/privsep"
)

// The checks on who can read or change the files a configuration names
// (spec §5, issue "Sandboxed and abuse-proof", point 4). They only look;
// Resolve reports what they find.

// untrusted returns why the program at name cannot be trusted to run as
// acct, or "" when it can: what runs is decided by whoever can write the
// file or any directory on the way to it, links included, so each of those
// must be owned by root or acct and writable by nobody else. The file
// reached through a link is checked, and so is every directory holding a
// link on the way, since replacing the link changes what runs.
//
// Security: group and other write bits count whatever the group, and a
// sticky directory (/tmp) counts as writable by others: anyone can create
// a file there, and once a cleaner removes the command anyone can put
// another in its place. This runs in the parent before any command does;
// a file changed after the check is the same threat the check exists for,
// and the reload after such a change checks again.
func untrusted(name string, acct privsep.Account) string {
	if !filepath.IsAbs(name) {
		return name + " is not an absolute path"
	}
	var why string
	_, err := pathwalk.Walk(name, func(p string, fi fs.FileInfo) error {
		// A link's own mode means nothing; its directory, checked
		// already, decides who can replace it.
		if fi.Mode()&fs.ModeSymlink != 0 {
			return nil
		}
		if why = changeable(p, fi, acct); why != "" {
			return errUntrusted
		}
		return nil
	})
	var we *pathwalk.Error
	switch {
	case why != "":
		return why
	case err == nil:
		return ""
	case !errors.As(err, &we):
		return err.Error()
	case we.Links:
		return fmt.Sprintf("more than %d symbolic links on the way to %s", pathwalk.MaxLinks, name)
	}
	return fmt.Sprintf("cannot check %s: %v", we.Path, unwrapPath(we.Err))
}

// errUntrusted ends a walk at the first component someone else can change.
var errUntrusted = errors.New("untrusted")

// changeable says who other than root and acct can change p, or "".
func changeable(p string, fi fs.FileInfo, acct privsep.Account) string {
	trusted := "root"
	if acct.UID != 0 {
		trusted = fmt.Sprintf("root or %q", acct.Name)
	}
	if uid, ok := fileOwner(fi); ok && uid != 0 && uid != acct.UID {
		return fmt.Sprintf("%s is owned by uid %d, not %s: run chown root %s", p, uid, trusted, p)
	}
	m := fi.Mode()
	if m.Perm()&0o022 == 0 {
		return ""
	}
	var who []string
	if m.Perm()&0o020 != 0 {
		g := "group"
		if gid, ok := fileGroup(fi); ok {
			g += " " + strconv.Itoa(gid)
		}
		who = append(who, g)
	}
	if m.Perm()&0o002 != 0 {
		who = append(who, "others")
	}
	by := strings.Join(who, " and ")
	if fi.IsDir() && m&fs.ModeSticky != 0 {
		return fmt.Sprintf("%s is writable by %s (mode %s; sticky is not enough): move the command to a directory only %s can write", p, by, octal(m), trusted)
	}
	return fmt.Sprintf("%s is writable by %s (mode %s): run chmod go-w %s", p, by, octal(m), p)
}

// exposed returns the classes of users (0o040 group, 0o004 others, within
// mask) who can read name: its mode must let them, and every directory
// above it must let them search it. A directory of mode 0700 hides a file
// of mode 0644 (certbot's archive/ did this for years), so warning about
// that file would be noise. Group search is taken as granted by either
// the group or the other bit, as the directory's group may differ from
// the file's.
//
// Security: for warnings only; it errs towards warning.
func exposed(name string, mask fs.FileMode) (mode, who fs.FileMode, err error) {
	fi, err := os.Stat(name)
	if err != nil {
		return 0, 0, err
	}
	mode = fi.Mode()
	who = mode.Perm() & mask & 0o044
	if who == 0 {
		return mode, 0, nil
	}
	real, err := filepath.EvalSymlinks(name)
	if err != nil {
		return mode, who, nil // cannot tell: assume reachable
	}
	if real, err = filepath.Abs(real); err != nil {
		return mode, who, nil
	}
	for dir := filepath.Dir(real); ; dir = filepath.Dir(dir) {
		d, err := os.Stat(dir)
		if err != nil {
			break
		}
		if d.Mode().Perm()&0o001 == 0 {
			who &^= 0o004
		}
		if d.Mode().Perm()&0o011 == 0 {
			who &^= 0o040
		}
		if dir == "/" || dir == "." || who == 0 {
			break
		}
	}
	return mode, who, nil
}

// readers names the classes exposed returned.
func readers(who fs.FileMode) string {
	switch who & 0o044 {
	case 0o044:
		return "group and others"
	case 0o040:
		return "group"
	}
	return "others"
}

// octal writes a mode as chmod takes it, special bits included: 0644,
// 1777, 2775.
func octal(m fs.FileMode) string {
	n := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		n |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		n |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		n |= 0o1000
	}
	return fmt.Sprintf("%04o", n)
}

// unwrapPath drops a *PathError's repetition of the path the message
// already names.
func unwrapPath(err error) error {
	if pe, ok := err.(*fs.PathError); ok {
		return pe.Err
	}
	return err
}
