//go:build !linux && !openbsd && !freebsd

package sandbox

import "runtime"

// The daemon runs on Linux, OpenBSD and FreeBSD; elsewhere each function
// applies nothing and says so.

// Net applies nothing here.
func Net() (Report, error) { return nothing("net") }

// Exec applies nothing here.
func Exec(commands []string, home string) (Report, error) {
	if err := checkExec(commands, home); err != nil {
		return Report{}, err
	}
	return nothing("exec")
}

// Parent applies nothing here.
func Parent() (Report, error) { return nothing("parent") }

func nothing(role string) (Report, error) {
	var r Report
	if err := once(role); err != nil {
		return r, err
	}
	r.missing("sandbox: nothing for %s on %s", role, runtime.GOOS)
	return r, nil
}
