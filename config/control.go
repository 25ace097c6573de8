package config

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// Defaults of the [control] table (spec §2, §7).
const (
	// DefaultRootControlSocket is the control socket of a daemon started
	// as root.
	DefaultRootControlSocket = "/var/run/imserious.sock"
	// ControlSocketName is the control socket's name in $XDG_RUNTIME_DIR
	// for a daemon started by another user.
	ControlSocketName = "imserious.sock"
)

// maxSocketPath is the longest path a Unix socket can be bound at here:
// sun_path less its terminating NUL (107 bytes on Linux, 103 on the BSDs).
var maxSocketPath = len(syscall.RawSockaddrUnix{}.Path) - 1

// DefaultControlSocket is the control socket used when [control] socket
// is not written: DefaultRootControlSocket as root; otherwise
// $XDG_RUNTIME_DIR/imserious.sock when getenv("XDG_RUNTIME_DIR") is an
// absolute path, and "" (no control socket) when it is unset, empty or
// relative. A nil getenv reads the process's environment (LookupEnv).
// imseriousctl calls it with its own root and environment to find the
// socket of a daemon started the same way.
func DefaultControlSocket(root bool, getenv func(string) string) string {
	if root {
		return DefaultRootControlSocket
	}
	if getenv == nil {
		getenv = lookupGetenv
	}
	dir := getenv("XDG_RUNTIME_DIR")
	if dir == "" || !filepath.IsAbs(dir) {
		return ""
	}
	return filepath.Join(dir, ControlSocketName)
}

// lookupGetenv is LookupEnv as DefaultControlSocket takes it, so that
// tests replacing LookupEnv replace this too.
func lookupGetenv(k string) string {
	v, _ := LookupEnv(k)
	return v
}

// ResolveControl fills in Control.Socket when the file does not set it:
// DefaultControlSocket(root, ...) from the environment LookupEnv reads.
// Resolve calls it; imseriousctl, which does not resolve the rest of the
// file, may call it alone. An explicit socket is left as written.
func (c *Config) ResolveControl(root bool) {
	if !c.Control.Explicit {
		c.Control.Socket = DefaultControlSocket(root, lookupGetenv)
	}
}

// control reads the [control] table. socket = "" is written and turns
// the socket off; a path must be absolute, clean and short enough to bind.
func (p *parser) control(e entry, c *Control) {
	m, ok := p.subtable(e)
	if !ok {
		return
	}
	t := p.table(&controlSpec, e.path, m)
	f, ok := t["socket"]
	if !ok {
		return
	}
	s, ok := p.str(f)
	if !ok {
		return
	}
	switch {
	case s == "":
	case !filepath.IsAbs(s):
		p.errorf(f.path, "%q is not an absolute path (socket = \"\" turns the control socket off)", s)
		return
	case filepath.Clean(s) != s:
		p.errorf(f.path, "%q is not a clean path: write %q", s, filepath.Clean(s))
		return
	case len(s) > maxSocketPath:
		p.errorf(f.path, "%q is %d bytes, longer than the %d a Unix socket's path may have on this system", s, len(s), maxSocketPath)
		return
	}
	c.Socket, c.Explicit = s, true
}

// controlSocket checks an explicit control socket's path as the daemon
// will bind it: its directory must exist, and anything already at the
// path must be a socket (a stale one is replaced; any other file is
// refused). The default path is not checked: failing to bind it is only a
// warning at start.
func (r *resolver) controlSocket() {
	s := r.c.Control.Socket
	if !r.c.Control.Explicit || s == "" {
		return
	}
	path := []string{"control", "socket"}
	dir := filepath.Dir(s)
	switch fi, err := os.Stat(dir); {
	case err != nil:
		r.errorf(path, err, "cannot use directory %s for the control socket: %v", dir, err)
		return
	case !fi.IsDir():
		r.errorf(path, nil, "%s is not a directory", dir)
		return
	}
	fi, err := os.Lstat(s)
	switch {
	case err != nil && os.IsNotExist(err):
	case err != nil:
		r.errorf(path, err, "cannot check %s: %v", s, err)
	case fi.Mode().Type() != fs.ModeSocket:
		r.errorf(path, nil, "%s exists and is not a socket (%s): imserious replaces only a stale socket; remove it or choose another path", s, fileKind(fi.Mode()))
	}
}

// fileKind names what a path holds, for messages.
func fileKind(m fs.FileMode) string {
	switch m.Type() {
	case 0:
		return "a regular file"
	case fs.ModeDir:
		return "a directory"
	case fs.ModeSymlink:
		return "a symbolic link"
	case fs.ModeNamedPipe:
		return "a FIFO"
	case fs.ModeDevice, fs.ModeDevice | fs.ModeCharDevice:
		return "a device"
	}
	return fmt.Sprintf("mode %v", m)
}
