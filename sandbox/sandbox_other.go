//go:build !linux && !openbsd && !freebsd

package sandbox

import "runtime"

// The daemon runs on Linux, OpenBSD and FreeBSD; elsewhere each role gets
// nothing and says so.

func netOS(r *Report) error                                  { return nothing(r, "net") }
func execOS(r *Report, commands []string, home string) error { return nothing(r, "exec") }
func parentOS(r *Report) error                               { return nothing(r, "parent") }

func nothing(r *Report, role string) error {
	r.missing("sandbox: nothing for %s on %s", role, runtime.GOOS)
	return nil
}
