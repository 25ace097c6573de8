//go:build !unix

package config

import "io/fs"

// fileOwner and fileGroup are unknown where there are no uids; the daemon
// does not run there, but the package still builds for tools.
func fileOwner(fs.FileInfo) (int, bool) { return 0, false }

func fileGroup(fs.FileInfo) (int, bool) { return 0, false }
