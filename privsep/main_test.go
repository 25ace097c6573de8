package privsep

import (
	"fmt"
	"os"
	"testing"
)

// childFlag in argv[1] makes the test binary run a child role instead of
// the tests. It is an argument, not an environment variable, because
// StartChild gives children an empty environment (and keeps argv[0]).
const childFlag = "-privsep-test-child"

// childRoles maps a role name to its body; files for systems where the
// role works register it. The result is the exit status.
var childRoles = map[string]func() int{}

func TestMain(m *testing.M) {
	if len(os.Args) >= 3 && os.Args[1] == childFlag {
		role, ok := childRoles[os.Args[2]]
		if !ok {
			fmt.Fprintf(os.Stderr, "privsep test child: unknown role %q\n", os.Args[2])
			os.Exit(2)
		}
		os.Exit(role())
	}
	os.Exit(m.Run())
}
