package privsep

import (
	"os"
	"testing"
)

// requireRoot skips a test that needs root; CI runs as root, so there
// these tests always run.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("requires root (euid is %d): run the tests as root to cover this", os.Geteuid())
	}
}
