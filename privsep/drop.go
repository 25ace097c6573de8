package privsep

import (
	"fmt"
	"os"
	"slices"

	"golang.org/x/sys/unix"
)

// Drop confines the calling process to chroot (unless it is "") and
// changes all its credentials to those of a, for good.
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
	if a.UID == 0 {
		return fmt.Errorf("privsep: drop to %q: refusing uid 0", a.Name)
	}
	if a.GID == 0 {
		return fmt.Errorf("privsep: drop to %q: refusing primary gid 0", a.Name)
	}
	if a.UID < 0 || a.GID < 0 {
		return fmt.Errorf("privsep: drop to %q: invalid uid %d or gid %d", a.Name, a.UID, a.GID)
	}
	groups := a.Groups
	if len(groups) == 0 {
		groups = []int{a.GID}
	}
	for _, g := range groups {
		if g < 0 {
			return fmt.Errorf("privsep: drop to %q: invalid group %d", a.Name, g)
		}
	}
	if euid := os.Geteuid(); euid != 0 {
		return fmt.Errorf("privsep: drop to %q: must be root, running as euid %d", a.Name, euid)
	}
	if chroot != "" {
		// The root and working directory are shared by all threads (Go
		// starts threads with CLONE_FS on Linux).
		if err := unix.Chroot(chroot); err != nil {
			return fmt.Errorf("privsep: drop to %q: chroot %s: %w", a.Name, chroot, err)
		}
		// Without this the working directory stays outside the new root.
		if err := unix.Chdir("/"); err != nil {
			return fmt.Errorf("privsep: drop to %q: chdir / in chroot %s: %w", a.Name, chroot, err)
		}
	}
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
