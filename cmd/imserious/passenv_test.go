//go:build linux

package main

import (
	"fmt"
	"slices"
	"testing"

	"github.com/imserious/imserious/internal/daemontest"
)

// pass_env copies the named variables of the daemon's own environment to
// the command, across the exec process (whose own environment is empty)
// and the uid drop; a variable not named, or named but unset, does not
// reach it.
func TestPassEnvReachesCommand(t *testing.T) {
	user, _ := account(t, "imse_alice")
	cfg := fmt.Sprintf("listen = \"127.0.0.1:0\"\n%s%s\n[[handler]]\nuser = %q\n"+
		"pass_env = [\"DISPLAY\", \"WAYLAND_DISPLAY\", \"DBUS_SESSION_BUS_ADDRESS\"]\n"+
		"command = [\"/bin/sh\", \"-c\", 'echo \"d=$DISPLAY w=${WAYLAND_DISPLAY-unset} b=${DBUS_SESSION_BUS_ADDRESS-unset} s=${SECRET_X-unset}\"']\n",
		daemontest.LogTOML, daemontest.PrivsepTOML(t), user)
	d := daemontest.Start(t, cfg, daemontest.Options{Env: []string{
		"DISPLAY=:7", "DBUS_SESSION_BUS_ADDRESS=", "SECRET_X=leaked"}})
	if resp := notify(t, notifyURL(d), fmt.Sprintf(body1, user, 1), nil); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	d.WaitFor("the command's output", func(m daemontest.Line) bool { return m.Str("msg") == "command output" })
	want := "d=:7 w=unset b= s=unset"
	if got := output(d, 0); !slices.Equal(got, []string{want}) {
		t.Errorf("command printed %q, want %q", got, want)
	}
}
