package privsep

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// PrepareChroot makes sure dir can serve as the empty root of a confined
// child: created root-owned with mode 0755 when missing (with missing
// parents, mode 0755), and otherwise refused unless it is a directory,
// owned by root, not writable by group or others, and empty. Called by
// the parent as root before starting the child.
//
// Security-sensitive: a directory another user can write to, or that
// holds files, would let the confined process find or be handed things.
func PrepareChroot(dir string) error {
	if dir == "" {
		return errors.New("privsep: chroot directory: empty path")
	}
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("privsep: chroot directory %s: %w", dir, err)
		}
		// MkdirAll's mode is reduced by the umask.
		if err := os.Chmod(dir, 0o755); err != nil {
			return fmt.Errorf("privsep: chroot directory %s: %w", dir, err)
		}
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("privsep: chroot directory %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("privsep: chroot directory %s: not a directory (%s)", dir, fi.Mode().Type())
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("privsep: chroot directory %s: no owner information", dir)
	}
	if st.Uid != 0 {
		return fmt.Errorf("privsep: chroot directory %s: owned by uid %d, must be owned by root", dir, st.Uid)
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Errorf("privsep: chroot directory %s: mode %04o lets group or others write to it", dir, perm)
	}
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("privsep: chroot directory %s: %w", dir, err)
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	if err != nil && err != io.EOF {
		return fmt.Errorf("privsep: chroot directory %s: %w", dir, err)
	}
	if len(names) > 0 {
		return fmt.Errorf("privsep: chroot directory %s: not empty (holds %q)", dir, names[0])
	}
	return nil
}
