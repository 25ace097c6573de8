// Package sandbox owns what confines each process after it has dropped its
// privileges: no_new_privs, Landlock and a seccomp allow-list on Linux,
// pledge and unveil on OpenBSD, Capsicum on FreeBSD. Each role calls its
// function once: Net in the network process before it serves, Exec in an
// exec process after its drop, Parent in the parent.
//
// Each function returns a Report: what was applied, and what this system
// lacks or what the role cannot have, for one log line each (Missing at
// debug level). Nothing is claimed that was not applied and, where the
// system allows it, checked. An error means a restriction the system
// claims to support could not be applied: the caller must treat it as
// fatal, since the process may be half-confined.
package sandbox

import (
	"fmt"
	"path/filepath"
	"sync/atomic"
	"time"
)

// Net confines the network process. Call it once serving needs nothing
// more from the system: after the chroot and the drop, after the listener
// and exec channels are open, before serving. What stays possible:
// accepting on the inherited listener, reading and writing the sockets and
// pipes it holds or is sent, TLS, time, goroutines.
func Net() (Report, error) {
	return confine("net", netOS)
}

// Exec confines an exec process after its drop. commands are the absolute
// program paths it may run, home the account's home (the working
// directory of commands).
func Exec(commands []string, home string) (Report, error) {
	if err := checkExec(commands, home); err != nil {
		return Report{}, err
	}
	return confine("exec", func(r *Report) error { return execOS(r, commands, home) })
}

// Parent confines the parent as far as reloading allows.
func Parent() (Report, error) {
	return confine("parent", parentOS)
}

// confine is what every role's call shares: once per process, the time
// zone loaded while the files are reachable, then the system's own steps.
func confine(role string, apply func(*Report) error) (Report, error) {
	var r Report
	if err := once(role); err != nil {
		return r, err
	}
	loadZone()
	err := apply(&r)
	return r, err
}

// Report says what a sandbox call applied, for one log line.
type Report struct {
	Applied []string
	Missing []string
}

func (r *Report) applied(format string, args ...any) {
	r.Applied = append(r.Applied, fmt.Sprintf(format, args...))
}

func (r *Report) missing(format string, args ...any) {
	r.Missing = append(r.Missing, fmt.Sprintf(format, args...))
}

// confined is set by the first call of Net, Exec or Parent: a process has
// one role, and a second call would find the system calls it needs to
// apply anything already forbidden by the first.
var confined atomic.Bool

func once(role string) error {
	if !confined.CompareAndSwap(false, true) {
		return fmt.Errorf("sandbox: %s: this process is already confined", role)
	}
	return nil
}

// checkExec validates Exec's arguments on every system, so that a caller's
// mistake shows on Linux too and not only where unveil uses the paths:
// each command must be absolute (the path that is executed,
// config.Handler.Path), and the home absolute, or empty for none.
func checkExec(commands []string, home string) error {
	for _, c := range commands {
		if !filepath.IsAbs(c) {
			return fmt.Errorf("sandbox: exec: command %q is not an absolute path", c)
		}
	}
	if home != "" && !filepath.IsAbs(home) {
		return fmt.Errorf("sandbox: exec: home %q is not an absolute path", home)
	}
	return nil
}

// loadZone makes sure the local time zone is loaded: package time reads it
// on first use, which would fail silently (falling back to UTC) once the
// filesystem is out of reach.
func loadZone() {
	_, _ = time.Now().Zone()
}
