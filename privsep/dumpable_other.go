//go:build !linux

package privsep

// SetNotDumpable does nothing here: the BSDs already refuse core dumps and
// debugging of a process that changed its credentials (P_SUGID).
func SetNotDumpable() error { return nil }
