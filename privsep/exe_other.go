//go:build !linux

package privsep

import (
	"fmt"
	"os"
	"path/filepath"
)

// selfExe is os.Executable, which on OpenBSD is rebuilt from argv[0] and
// the start directory; only an absolute result is trustworthy (rc starts
// daemons by absolute path), so anything else is refused.
func selfExe() (string, error) {
	p, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("path of the running binary: %w", err)
	}
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("path of the running binary is %q, not absolute: start the daemon by its absolute path", p)
	}
	return p, nil
}
