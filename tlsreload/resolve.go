package tlsreload

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/imserious/imserious/internal/pathwalk"
)

// resolve follows name through every symbolic link, in its directories as
// in its last component, as open(2) would, and returns the file reached
// and deps: the paths whose replacement changes what name opens. Those are
// each link met on the way (certbot's live/ links, Kubernetes' ..data) and
// the file itself; watching their directories sees every way of replacing
// the file. When a component is missing, deps ends with the missing path,
// so that its directory is watched for its creation, and err says so.
func resolve(name string) (final string, deps []string, err error) {
	final, err = pathwalk.Walk(name, func(p string, fi fs.FileInfo) error {
		if fi.Mode()&fs.ModeSymlink != 0 {
			deps = append(deps, p)
		}
		return nil
	})
	var we *pathwalk.Error
	switch {
	case err == nil:
	case !errors.As(err, &we):
		return "", nil, err // not an absolute path
	case we.Links:
		err = fmt.Errorf("%s: more than %d symbolic links", name, pathwalk.MaxLinks)
	}
	if len(deps) == 0 || deps[len(deps)-1] != final {
		deps = append(deps, final)
	}
	return final, deps, err
}
