//go:build !linux

package exec

import "testing"

// waitGone cannot wait for an unrelated process portably; the caller's
// check that Run returned long before WaitDelay already shows the process
// holding the pipes is gone.
func waitGone(t *testing.T, pid int) {
	t.Logf("not checking process %d directly on this system", pid)
}
