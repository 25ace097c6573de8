package privsep

import (
	"fmt"
	"os"
	"runtime"
	"slices"

	"golang.org/x/sys/unix"
)

// Drop confines the calling process to chroot (unless it is "") and
// changes all its credentials to those of a, for good. A non-empty
// chroot is checked and opened as OpenChroot does and entered as
// DropInto does, through the descriptor.
//
// Security-sensitive and ordering-dependent: chroot needs root, and so do
// setgroups and setresgid, so the uid goes last. Every result is read back
// afterwards and any mismatch is an error; the caller must exit on error,
// since the process may be half-dropped. Credentials change for every
// thread (syscall.Setgroups/Setresgid/Setresuid on Linux, where the kernel
// keeps them per thread; per process on the BSDs).
//
// Drop must be called as root. It refuses uid 0 and primary gid 0. When
// a.Groups is empty, the supplementary groups are just a.GID. On Linux,
// call SetNotDumpable after Drop: changing credentials resets the flag.
func Drop(a Account, chroot string) error {
	groups, err := dropGroups(a)
	if err != nil {
		return err
	}
	if chroot == "" {
		return setCredentials(a, groups)
	}
	root, err := walkChroot(chroot, false)
	if err != nil {
		return fmt.Errorf("privsep: drop to %q: %w", a.Name, err)
	}
	defer root.Close()
	return DropInto(a, root)
}

// DropInto is Drop confined to the directory open as root, which the
// parent got from OpenChroot or PrepareChroot: fchdir(root), chroot("."),
// chdir("/"), then "/" must be the device and inode root was; then the
// credentials change as in Drop. root is not closed: close it afterwards
// (it is the new "/", so keeping it leads nowhere else, but it is one
// descriptor less to pass on).
//
// Security-sensitive: the descriptor, unlike a name, cannot be swapped
// between the parent's check and this chroot. root must still be a
// directory owned by root and writable by nobody else. As with Drop, the
// caller must exit on error. Messages name root by root.Name().
func DropInto(a Account, root *os.File) error {
	groups, err := dropGroups(a)
	if err != nil {
		return err
	}
	if root == nil {
		return fmt.Errorf("privsep: drop to %q: no chroot directory", a.Name)
	}
	if err := enterRoot(root); err != nil {
		return fmt.Errorf("privsep: drop to %q: %w", a.Name, err)
	}
	return setCredentials(a, groups)
}

// dropGroups refuses accounts and callers Drop must not serve, before
// anything changes, and returns the supplementary groups to set.
func dropGroups(a Account) ([]int, error) {
	if a.UID == 0 {
		return nil, fmt.Errorf("privsep: drop to %q: refusing uid 0", a.Name)
	}
	if a.GID == 0 {
		return nil, fmt.Errorf("privsep: drop to %q: refusing primary gid 0", a.Name)
	}
	if a.UID < 0 || a.GID < 0 {
		return nil, fmt.Errorf("privsep: drop to %q: invalid uid %d or gid %d", a.Name, a.UID, a.GID)
	}
	groups := a.Groups
	if len(groups) == 0 {
		groups = []int{a.GID}
	}
	for _, g := range groups {
		if g < 0 {
			return nil, fmt.Errorf("privsep: drop to %q: invalid group %d", a.Name, g)
		}
	}
	if euid := os.Geteuid(); euid != 0 {
		return nil, fmt.Errorf("privsep: drop to %q: must be root, running as euid %d", a.Name, euid)
	}
	return groups, nil
}

// enterRoot makes the directory open as root the process's root and
// working directory, and checks the result. The root and working
// directory are shared by all threads (Go starts threads with CLONE_FS
// on Linux; per process on the BSDs).
func enterRoot(root *os.File) error {
	name := root.Name()
	fd := int(root.Fd())
	defer runtime.KeepAlive(root)
	var want unix.Stat_t
	if err := unix.Fstat(fd, &want); err != nil {
		return fmt.Errorf("chroot %s: fstat: %w", name, err)
	}
	if err := checkChrootDir(fd, name); err != nil {
		return fmt.Errorf("chroot %s: %w", name, err)
	}
	if err := unix.Fchdir(fd); err != nil {
		return fmt.Errorf("chroot %s: fchdir: %w", name, err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot %s: chroot(\".\"): %w", name, err)
	}
	// A no-op after fchdir, but it states where the process must be.
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("chroot %s: chdir /: %w", name, err)
	}
	var got unix.Stat_t
	if err := unix.Stat("/", &got); err != nil {
		return fmt.Errorf("chroot %s: stat / after chroot: %w", name, err)
	}
	if got.Dev != want.Dev || got.Ino != want.Ino {
		return fmt.Errorf("chroot %s: / is device %d inode %d after chroot, want device %d inode %d", name, got.Dev, got.Ino, want.Dev, want.Ino)
	}
	return nil
}

// setCredentials changes groups, gid and uid, in that order, and reads
// them back.
func setCredentials(a Account, groups []int) error {
	if err := setgroups(groups); err != nil {
		return fmt.Errorf("privsep: drop to %q: setgroups %v: %w", a.Name, groups, err)
	}
	if err := setresgid(a.GID); err != nil {
		return fmt.Errorf("privsep: drop to %q: setresgid %d: %w", a.Name, a.GID, err)
	}
	if err := setresuid(a.UID); err != nil {
		return fmt.Errorf("privsep: drop to %q: setresuid %d: %w", a.Name, a.UID, err)
	}
	if err := verifyDropped(a.UID, a.GID, groups); err != nil {
		return fmt.Errorf("privsep: drop to %q: %w", a.Name, err)
	}
	return nil
}

// verifyDropped reads the credentials back and checks that root cannot be
// regained: setuid(0) and setgid(0) succeed for a process whose real or
// saved id is still 0, so their failure also proves the saved ids changed.
func verifyDropped(uid, gid int, groups []int) error {
	if r, e, s := getresuid(); r != uid || e != uid || s != uid {
		return fmt.Errorf("verify: uids are %d/%d/%d (real/effective/saved), want %d", r, e, s, uid)
	}
	if r, e, s := getresgid(); r != gid || e != gid || s != gid {
		return fmt.Errorf("verify: gids are %d/%d/%d (real/effective/saved), want %d", r, e, s, gid)
	}
	got, err := unix.Getgroups()
	if err != nil {
		return fmt.Errorf("verify: getgroups: %w", err)
	}
	if !sameSet(got, groups) {
		return fmt.Errorf("verify: groups are %v, want %v", got, groups)
	}
	// If either succeeded, the process is root again; the caller exits on
	// the error.
	if err := unix.Setuid(0); err == nil {
		return fmt.Errorf("verify: setuid(0) succeeded after dropping to uid %d", uid)
	}
	if err := unix.Setgid(0); err == nil {
		return fmt.Errorf("verify: setgid(0) succeeded after dropping to gid %d", gid)
	}
	return nil
}

// sameSet compares as sets: the kernel may sort or deduplicate, and on
// FreeBSD the egid may or may not be listed.
func sameSet(a, b []int) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}
