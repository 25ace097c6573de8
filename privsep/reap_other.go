//go:build !linux && !(freebsd && (amd64 || arm64 || riscv64))

package privsep

import (
	"errors"
	"fmt"
)

// BecomeSubreaper is unsupported here: OpenBSD has no subreaper (orphans
// go to init, and only what stays in a command's process group is killed
// with it), and 32-bit FreeBSD would need procctl's 64-bit id split per
// architecture. The error wraps errors.ErrUnsupported.
func BecomeSubreaper() error {
	return fmt.Errorf("privsep: subreaper: %w", errors.ErrUnsupported)
}

// Children is unsupported here; the error wraps errors.ErrUnsupported.
func Children() ([]int, error) {
	return nil, fmt.Errorf("privsep: children: %w", errors.ErrUnsupported)
}
