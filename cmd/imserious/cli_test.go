//go:build linux

package main

import (
	"bytes"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/imserious/imserious/internal/daemontest"
)

// The original's spellings (-v, -t, -c and their long forms, -h) work
// beside ours, so its users' scripts and rc files keep working.
func TestOriginalFlags(t *testing.T) {
	user, _ := account(t, "imse_alice")
	good := daemontest.WriteConfig(t, fmt.Sprintf("%s[[handler]]\nuser = %q\ncommand = \"/bin/true\"\n", daemontest.PrivsepTOML(t), user))
	cases := []struct {
		args           []string
		code           int
		stdout, stderr string // prefixes
	}{
		{[]string{"-V"}, 0, "imserious ", ""},
		{[]string{"-v"}, 0, "imserious ", ""},
		{[]string{"--version"}, 0, "imserious ", ""},
		{[]string{"-h"}, 0, "usage: imserious", ""},
		{[]string{"--help"}, 0, "usage: imserious", ""},
		{[]string{"-n", good}, 0, "", "configuration OK"},
		{[]string{"-t", good}, 0, "", "configuration OK"},
		{[]string{"--test", "--config", good}, 0, "", "configuration OK"},
		{[]string{"-t", "-c", good}, 0, "", "configuration OK"},
		{[]string{"--config=" + good, "--test"}, 0, "", "configuration OK"},
		{[]string{"--bogus"}, 1, "", "imserious: flag provided but not defined"},
		{[]string{"-c", good, good}, 1, "", "usage: imserious"},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			cmd := daemontest.Command(t, c.args...)
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != c.code {
				t.Errorf("exit status %d, want %d (stderr %q)", code, c.code, stderr.String())
			}
			if !strings.HasPrefix(stdout.String(), c.stdout) || c.stdout == "" && stdout.Len() > 0 {
				t.Errorf("stdout %q, want it to start with %q", stdout.String(), c.stdout)
			}
			if !strings.Contains(stderr.String(), c.stderr) || c.stderr == "" && stderr.Len() > 0 {
				t.Errorf("stderr %q, want it to contain %q", stderr.String(), c.stderr)
			}
		})
	}
}
