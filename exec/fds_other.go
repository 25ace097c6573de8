//go:build !linux && !freebsd

package exec

import "errors"

// sealFdsOS has no single call to use here (OpenBSD has no close_range
// and forbids raw syscalls): sealFds scans instead.
func sealFdsOS() error { return errors.ErrUnsupported }
