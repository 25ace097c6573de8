// Package pathwalk resolves a path component by component, following
// symbolic links as open(2) does, and shows each step to the caller: the
// one home of the walk behind the TLS watcher's list of what to watch and
// the configuration's check of who can replace a command.
package pathwalk

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// MaxLinks bounds symbolic link resolution as the kernels do (Linux and
// the BSDs allow 32 to 40).
const MaxLinks = 40

// Error is a walk that could not go on at Path.
type Error struct {
	Path  string // the component that failed
	Err   error  // from lstat or readlink; nil when too many links
	Links bool   // more than MaxLinks symbolic links
}

func (e *Error) Error() string {
	if e.Links {
		return fmt.Sprintf("%s: more than %d symbolic links", e.Path, MaxLinks)
	}
	return e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// Walk resolves the absolute path name. visit sees "/" and then every
// component reached, as a path without links with its lstat information:
// a directory or file on the way, and each symbolic link before it is
// followed. An error from visit ends the walk and is returned as is. Walk
// returns the path of the file reached, without links.
func Walk(name string, visit func(path string, fi fs.FileInfo) error) (string, error) {
	if !filepath.IsAbs(name) {
		return "", fmt.Errorf("%s: not an absolute path", name)
	}
	cur := "/" // always a path without links: each component is checked
	fi, err := os.Lstat(cur)
	if err != nil {
		return cur, &Error{Path: cur, Err: err}
	}
	if err := visit(cur, fi); err != nil {
		return cur, err
	}
	todo := split(name)
	links := 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case ".":
			continue
		case "..":
			cur = filepath.Dir(cur)
			continue
		}
		next := filepath.Join(cur, c)
		fi, err := os.Lstat(next)
		if err != nil {
			return next, &Error{Path: next, Err: err}
		}
		if err := visit(next, fi); err != nil {
			return next, err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			cur = next
			continue
		}
		if links++; links > MaxLinks {
			return next, &Error{Path: next, Links: true}
		}
		target, err := os.Readlink(next)
		if err != nil {
			return next, &Error{Path: next, Err: err}
		}
		if filepath.IsAbs(target) {
			cur = "/"
		}
		todo = append(split(target), todo...)
	}
	return cur, nil
}

func split(p string) []string {
	var out []string
	for _, c := range strings.Split(p, "/") {
		if c != "" {
			out = append(out, c)
		}
	}
	return out
}
