package config

import (
	"maps"
	"strings"
	"testing"
)

// fakeEnv makes LookupEnv read env for the rest of the test.
func fakeEnv(t *testing.T, env map[string]string) {
	t.Helper()
	old := LookupEnv
	LookupEnv = func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	}
	t.Cleanup(func() { LookupEnv = old })
}

// TestPassEnv: Resolve copies what pass_env names from the daemon's
// environment into Env, the table the exec process gets: a set variable,
// even to "", is copied, an unset one is not, and the handler's own env
// is kept beside them.
func TestPassEnv(t *testing.T) {
	testBin(t)
	env := map[string]string{
		"DISPLAY":                  ":0",
		"WAYLAND_DISPLAY":          "",
		"DBUS_SESSION_BUS_ADDRESS": "unix:path=/run/user/1000/bus",
		"HOME":                     "/root",
		"SECRET":                   "not named, not passed",
	}
	fakeEnv(t, env)
	c := mustParse(t, `
[[handler]]
user = "u"
command = "mycmd"
pass_env = ["DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS", "XDG_RUNTIME_DIR"]
env = { NOTMUCH_CONFIG = "/n" }
`)
	h := &c.Handlers[0]
	if want := []string{"DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS", "XDG_RUNTIME_DIR"}; strings.Join(h.PassEnv, " ") != strings.Join(want, " ") {
		t.Errorf("PassEnv = %q, want %q (as written)", h.PassEnv, want)
	}
	if want := map[string]string{"NOTMUCH_CONFIG": "/n"}; !maps.Equal(h.Env, want) {
		t.Errorf("Env before Resolve = %q, want %q", h.Env, want)
	}
	if err := c.Resolve(false); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"NOTMUCH_CONFIG":           "/n",
		"DISPLAY":                  ":0",
		"WAYLAND_DISPLAY":          "",
		"DBUS_SESSION_BUS_ADDRESS": "unix:path=/run/user/1000/bus",
	}
	if !maps.Equal(h.Env, want) {
		t.Errorf("Env after Resolve = %q, want %q", h.Env, want)
	}

	// Resolved again, as on a reload, with a variable gone and one
	// changed: Env follows the environment, not the first Resolve.
	delete(env, "DISPLAY")
	env["XDG_RUNTIME_DIR"] = "/run/user/1000"
	before := *h
	before.Env = maps.Clone(h.Env)
	if err := c.Resolve(false); err != nil {
		t.Fatal(err)
	}
	delete(want, "DISPLAY")
	want["XDG_RUNTIME_DIR"] = "/run/user/1000"
	if !maps.Equal(h.Env, want) {
		t.Errorf("Env after a second Resolve = %q, want %q", h.Env, want)
	}
	if before.Same(h) {
		t.Errorf("a handler whose passed variables changed is Same")
	}
}

// TestPassEnvTooLong: a value the exec side could not be sent is an
// error at the key, not a failure at start; at the bound it passes.
func TestPassEnvTooLong(t *testing.T) {
	testBin(t)
	env := map[string]string{"DISPLAY": ":0", "BIG": strings.Repeat("x", MaxPassEnvValue+1)}
	fakeEnv(t, env)
	c := mustParse(t, `[[handler]]
user = "u"
command = "mycmd"

[[handler]]
user = "u"
command = "mycmd"
pass_env = ["DISPLAY",
  "BIG"]
`)
	checkErrors(t, resolveErrors(t, c, false), []wantErr{{9, "handler[2].pass_env[2]",
		"BIG in the daemon's environment is 4097 bytes, more than the 4096 a passed variable may hold"}})
	if _, ok := c.Handlers[1].Env["BIG"]; ok {
		t.Errorf("a value over the bound reached Env")
	}

	env["BIG"] = strings.Repeat("x", MaxPassEnvValue)
	if err := c.Resolve(false); err != nil {
		t.Fatalf("a value at the bound: %v", err)
	}
	if len(c.Handlers[1].Env["BIG"]) != MaxPassEnvValue {
		t.Errorf("a value at the bound did not reach Env")
	}
}

// TestPassEnvReadsTheEnvironment: without a test's hand in it, LookupEnv
// is the process's environment, where "" is a value.
func TestPassEnvReadsTheEnvironment(t *testing.T) {
	testBin(t)
	t.Setenv("IMSERIOUS_TEST_SET", "v")
	t.Setenv("IMSERIOUS_TEST_EMPTY", "")
	c := mustParse(t, "[[handler]]\nuser = \"u\"\ncommand = \"mycmd\"\npass_env = [\"IMSERIOUS_TEST_SET\", \"IMSERIOUS_TEST_EMPTY\", \"IMSERIOUS_TEST_UNSET_8c1f\"]\n")
	if err := c.Resolve(false); err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"IMSERIOUS_TEST_SET": "v", "IMSERIOUS_TEST_EMPTY": ""}; !maps.Equal(c.Handlers[0].Env, want) {
		t.Errorf("Env = %q, want %q", c.Handlers[0].Env, want)
	}
}
