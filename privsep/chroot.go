package privsep

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// The chroot of a confined child is checked and entered through
// descriptors, never by name.
//
// Security-sensitive: a name can be swapped between a check and its use.
// If any directory on the way down could be written by someone other
// than root, that someone could replace the chroot with a symbolic link
// to / after the check and the child would be confined to the whole
// system. So every component from / down is opened relative to the
// descriptor of its parent, with O_NOFOLLOW, and checked with fstat: it
// must be root's and writable by nobody else (the rule sshd applies to
// ChrootDirectory; a sticky world-writable directory such as /tmp fails
// it, since anyone can create the name in it). Once every component
// passes, only root can change what the path leads to; and the child
// enters the descriptor the walk ended on, not the path.

// chrootFlags open each directory of the walk. O_NOFOLLOW turns a
// symbolic link into an error instead of a detour; O_RDONLY is enough
// for fstat, fchdir and reading the entries.
const chrootFlags = unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_RDONLY | unix.O_CLOEXEC

// CheckChroot reports whether dir can serve as the chroot of a confined
// child, without keeping anything open: for -n. dir must be absolute and
// clean; / and every directory down to dir must be owned by root, not
// writable by group or others, and not a symbolic link; dir must be
// empty. A missing dir (or missing parents) is accepted when everything
// that exists above it passes: PrepareChroot creates the rest.
func CheckChroot(dir string) error {
	f, err := walkChroot(dir, false)
	if errors.Is(err, errChrootMissing) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("privsep: %w", err)
	}
	return f.Close()
}

// OpenChroot applies CheckChroot's checks and returns dir open, from the
// same walk: the descriptor, not the name, is what the child enters
// (DropInto). A missing dir is an error. The caller closes the file.
func OpenChroot(dir string) (*os.File, error) {
	f, err := walkChroot(dir, false)
	if err != nil {
		return nil, fmt.Errorf("privsep: %w", err)
	}
	return f, nil
}

// PrepareChroot is OpenChroot that first creates dir and its missing
// parents, root-owned with mode 0755. Each is made with mkdirat under
// the already checked descriptor of its parent, so nothing is created
// through a symbolic link or in a directory someone else can write.
// Called by the parent as root before starting the child.
func PrepareChroot(dir string) (*os.File, error) {
	f, err := walkChroot(dir, true)
	if err != nil {
		return nil, fmt.Errorf("privsep: %w", err)
	}
	return f, nil
}

// errChrootMissing marks a walk that stopped at a component that does
// not exist; only CheckChroot accepts it.
var errChrootMissing = errors.New("does not exist")

// walkChroot opens dir from / one component at a time, checking each
// descriptor, creating missing components when create is set, and
// returns the last one open once dir is also found empty.
func walkChroot(dir string, create bool) (*os.File, error) {
	if dir == "" {
		return nil, errors.New("chroot: empty path")
	}
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("chroot %q: not an absolute path", dir)
	}
	if clean := filepath.Clean(dir); clean != dir {
		return nil, fmt.Errorf("chroot %s: not a clean path: name %s", dir, clean)
	}
	fd, err := unix.Open("/", chrootFlags, 0)
	if err != nil {
		return nil, fmt.Errorf("chroot %s: open /: %w", dir, err)
	}
	// fd is closed on every error below; on success it becomes the file.
	if err := checkChrootDir(fd, "/"); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("chroot %s: %w", dir, err)
	}
	path := "/"
	for name := range strings.SplitSeq(strings.TrimPrefix(dir, "/"), "/") {
		if name == "" { // dir is "/"
			break
		}
		path = filepath.Join(path, name)
		next, err := openChrootComponent(fd, name, path, create)
		unix.Close(fd)
		if err != nil {
			return nil, fmt.Errorf("chroot %s: %w", dir, err)
		}
		fd = next
	}
	if err := checkEmpty(fd, dir); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("chroot %s: %w", dir, err)
	}
	return os.NewFile(uintptr(fd), dir), nil
}

// openChrootComponent opens name under the checked directory parent (at
// path) and checks it in turn.
func openChrootComponent(parent int, name, path string, create bool) (int, error) {
	fd, err := unix.Openat(parent, name, chrootFlags, 0)
	created := false
	if errors.Is(err, unix.ENOENT) && create {
		// The parent passed the checks, so only root can have created
		// or replaced name between mkdirat and openat.
		err = unix.Mkdirat(parent, name, 0o755)
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return -1, fmt.Errorf("create %s: %w", path, err)
		}
		created = err == nil
		fd, err = unix.Openat(parent, name, chrootFlags, 0)
	}
	switch {
	case errors.Is(err, unix.ENOENT):
		return -1, fmt.Errorf("%s %w", path, errChrootMissing)
	case err != nil:
		return -1, describeOpenError(parent, name, path, err)
	}
	if created {
		// mkdirat's mode is reduced by the umask, and on the BSDs the
		// group comes from the parent.
		if err := unix.Fchmod(fd, 0o755); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("chmod 0755 %s: %w", path, err)
		}
		if err := unix.Fchown(fd, 0, 0); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("chown root:0 %s: %w", path, err)
		}
	}
	if err := checkChrootDir(fd, path); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// describeOpenError says why name could not be opened as a directory.
// With O_DIRECTORY|O_NOFOLLOW a symbolic link fails with ENOTDIR or ELOOP
// (Linux, OpenBSD) or EMLINK (FreeBSD), a file with ENOTDIR. fstatat only
// picks the message, the refusal stands whatever it says; it may see a
// directory again when the name is being swapped.
func describeOpenError(parent int, name, path string, err error) error {
	var st unix.Stat_t
	if serr := unix.Fstatat(parent, name, &st, unix.AT_SYMLINK_NOFOLLOW); serr == nil {
		switch kind := uint32(st.Mode) & unix.S_IFMT; {
		case kind == unix.S_IFLNK:
			return fmt.Errorf("%s is a symbolic link: name the directory itself", path)
		case kind != unix.S_IFDIR:
			return fmt.Errorf("%s is not a directory (%s): name a directory", path, fileKind(kind))
		case errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EMLINK):
			return fmt.Errorf("%s was a symbolic link or not a directory when opened, and is a directory now: something is replacing it", path)
		}
	}
	return fmt.Errorf("open %s: %w", path, err)
}

// checkChrootDir checks one descriptor of the walk: a directory owned by
// root that nobody else can write.
func checkChrootDir(fd int, path string) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("fstat %s: %w", path, err)
	}
	mode := uint32(st.Mode)
	if kind := mode & unix.S_IFMT; kind != unix.S_IFDIR {
		// O_DIRECTORY should have refused it already.
		return fmt.Errorf("%s is not a directory (%s): name a directory", path, fileKind(kind))
	}
	if st.Uid != 0 {
		return fmt.Errorf("%s is owned by uid %d, not root: chown root %s, or choose a directory whose every parent only root can write", path, st.Uid, path)
	}
	if mode&0o022 != 0 {
		return fmt.Errorf("%s is writable by group or others (mode %04o): chmod go-w %s, or choose a directory whose every parent only root can write", path, mode&0o7777, path)
	}
	return nil
}

// checkEmpty reads the entries of the directory open as fd through a
// descriptor of its own, leaving fd's offset alone. Security: whatever
// the chroot holds, the confined process can use.
func checkEmpty(fd int, path string) error {
	dup, err := unix.Openat(fd, ".", unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	f := os.NewFile(uintptr(dup), path)
	defer f.Close()
	names, err := f.Readdirnames(1)
	if err != nil && err != io.EOF {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if len(names) > 0 {
		return fmt.Errorf("%s is not empty (it holds %q): use an empty directory", path, names[0])
	}
	return nil
}

// fileKind names a file type from the S_IFMT bits of a mode.
func fileKind(kind uint32) string {
	switch kind {
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFLNK:
		return "a symbolic link"
	case unix.S_IFREG:
		return "a regular file"
	default:
		return fmt.Sprintf("file type %#o", kind)
	}
}
