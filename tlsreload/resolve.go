package tlsreload

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// maxLinks bounds symbolic link resolution as the kernels do (Linux and
// the BSDs allow 32 to 40).
const maxLinks = 40

// resolve follows name through every symbolic link, in its directories as
// in its last component, as open(2) would, and returns the file reached
// and deps: the paths whose replacement changes what name opens. Those are
// each link met on the way (certbot's live/ links, Kubernetes' ..data) and
// the file itself; watching their directories sees every way of replacing
// the file. When a component is missing, deps ends with the missing path,
// so that its directory is watched for its creation, and err says so.
func resolve(name string) (final string, deps []string, err error) {
	if !filepath.IsAbs(name) {
		return "", nil, fmt.Errorf("%s: not an absolute path", name)
	}
	todo := split(name)
	cur := "/" // always a path without links: each component is checked
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
			return next, append(deps, next), err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			cur = next
			continue
		}
		if links++; links > maxLinks {
			return next, append(deps, next), fmt.Errorf("%s: more than %d symbolic links", name, maxLinks)
		}
		target, err := os.Readlink(next)
		if err != nil {
			return next, append(deps, next), err
		}
		deps = append(deps, next)
		if filepath.IsAbs(target) {
			cur = "/"
		}
		todo = append(split(target), todo...)
	}
	return cur, append(deps, cur), nil
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
