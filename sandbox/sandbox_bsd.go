//go:build openbsd || freebsd

package sandbox

import "golang.org/x/sys/unix"

// notDumpable reports the BSDs' own rule: a process that changed its
// credentials (P_SUGID, which issetugid(2) reads) dumps no core and cannot
// be debugged by its new user. It is claimed only once checked.
func notDumpable(r *Report) {
	if unix.Issetugid() {
		r.applied("not dumpable (changed credentials, issetugid)")
		return
	}
	r.missing("not dumpable: this process did not change its credentials, so its user may debug it")
}
