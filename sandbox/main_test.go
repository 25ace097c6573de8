package sandbox

import (
	"fmt"
	"os"
	"testing"
)

// childFlag in argv[1] makes the test binary run a child role instead of
// the tests: confinement cannot be undone, so each is tried in a process
// of its own, started by the test that checks it.
const childFlag = "-sandbox-test-child"

// childRoles maps a role name to its body, given the arguments after the
// role; files for systems where the role works register it. The result
// is the exit status.
var childRoles = map[string]func(args []string) int{}

func TestMain(m *testing.M) {
	if len(os.Args) >= 3 && os.Args[1] == childFlag {
		role, ok := childRoles[os.Args[2]]
		if !ok {
			fmt.Fprintf(os.Stderr, "sandbox test child: unknown role %q\n", os.Args[2])
			os.Exit(2)
		}
		os.Exit(role(os.Args[3:]))
	}
	os.Exit(m.Run())
}
