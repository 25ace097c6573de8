package config

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestDefaultControlSocket(t *testing.T) {
	env := func(m map[string]string) func(string) string {
		return func(k string) string { return m[k] }
	}
	for _, tc := range []struct {
		name string
		root bool
		env  map[string]string
		want string
	}{
		{"root", true, map[string]string{"XDG_RUNTIME_DIR": "/run/user/0"}, "/var/run/imserious.sock"},
		{"root without XDG_RUNTIME_DIR", true, nil, "/var/run/imserious.sock"},
		{"user", false, map[string]string{"XDG_RUNTIME_DIR": "/run/user/1000"}, "/run/user/1000/imserious.sock"},
		{"user, unclean dir", false, map[string]string{"XDG_RUNTIME_DIR": "/run/user/1000/"}, "/run/user/1000/imserious.sock"},
		{"user without XDG_RUNTIME_DIR", false, nil, ""},
		{"user, empty XDG_RUNTIME_DIR", false, map[string]string{"XDG_RUNTIME_DIR": ""}, ""},
		{"user, relative XDG_RUNTIME_DIR", false, map[string]string{"XDG_RUNTIME_DIR": "run/user/1000"}, ""},
	} {
		if got := DefaultControlSocket(tc.root, env(tc.env)); got != tc.want {
			t.Errorf("%s: DefaultControlSocket = %q, want %q", tc.name, got, tc.want)
		}
	}
	// nil reads the environment through LookupEnv.
	fakeEnv(t, map[string]string{"XDG_RUNTIME_DIR": "/run/user/1234"})
	if got := DefaultControlSocket(false, nil); got != "/run/user/1234/imserious.sock" {
		t.Errorf("nil getenv: %q", got)
	}
}

// TestControlParse: what Parse makes of [control]; the default is left
// to Resolve.
func TestControlParse(t *testing.T) {
	for _, tc := range []struct {
		src  string
		want Control
	}{
		{h, Control{}},
		{"[control]\n" + h, Control{}},
		{"[control]\nsocket = \"\"\n" + h, Control{Socket: "", Explicit: true}},
		{"[control]\nsocket = \"/run/imserious/ctl\"\n" + h, Control{Socket: "/run/imserious/ctl", Explicit: true}},
		{"control = { socket = \"/tmp/s\" }\n" + h, Control{Socket: "/tmp/s", Explicit: true}},
	} {
		c := mustParse(t, tc.src)
		if c.Control != tc.want {
			t.Errorf("%q: Control = %+v, want %+v", tc.src, c.Control, tc.want)
		}
	}
}

func TestControlErrors(t *testing.T) {
	long := "/" + strings.Repeat("x", maxSocketPath)
	for _, tc := range []struct {
		name, src string
		line      int
		key, msg  string
	}{
		{"relative", "[control]\nsocket = \"run/imserious.sock\"", 2, "control.socket", `"run/imserious.sock" is not an absolute path (socket = "" turns the control socket off)`},
		{"unclean", "[control]\nsocket = \"/run//imserious.sock\"", 2, "control.socket", `"/run//imserious.sock" is not a clean path: write "/run/imserious.sock"`},
		{"trailing slash", "[control]\nsocket = \"/run/imserious/\"", 2, "control.socket", `write "/run/imserious"`},
		{"dot dot", "[control]\nsocket = \"/run/x/../imserious.sock\"", 2, "control.socket", `write "/run/imserious.sock"`},
		{"too long", "[control]\nsocket = \"" + long + "\"", 2, "control.socket", "longer than the"},
		{"not a string", "[control]\nsocket = false", 2, "control.socket", "expected a string, found a boolean"},
		{"not a table", "control = \"/run/s\"", 1, "control", "expected a table, found a string"},
		{"unknown key", "[control]\nsockets = \"/run/s\"", 2, "control.sockets", `unknown key (did you mean "socket"?)`},
		{"key at top", "\nsocket = \"/run/s\"", 2, "socket", "belongs in [control]"},
		{"NUL", "[control]\nsocket = \"/run/a\\u0000b\"", 2, "control.socket", "NUL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			es := parseErrors(t, tc.src+"\n"+h)
			if len(es) != 1 {
				t.Fatalf("want one error, got %d:\n%v", len(es), es)
			}
			e := es[0]
			if e.File != testFile || e.Line != tc.line || e.Key != tc.key || !strings.Contains(e.Msg, tc.msg) {
				t.Errorf("got  %s\nwant %s:%d: %s: ...%s...", e, testFile, tc.line, tc.key, tc.msg)
			}
		})
	}
	// At the bound it is accepted.
	ok := "/" + strings.Repeat("x", maxSocketPath-1)
	if c := mustParse(t, "[control]\nsocket = \""+ok+"\"\n"+h); c.Control.Socket != ok {
		t.Errorf("a path of %d bytes: %q", len(ok), c.Control.Socket)
	}
}

// TestResolveControl: Resolve fills the default from the environment when
// the key is not written, every time (a later Resolve sees a changed
// environment), and leaves a written one, "" included, as it is.
func TestResolveControl(t *testing.T) {
	testBin(t)
	env := map[string]string{"XDG_RUNTIME_DIR": "/run/user/1000"}
	fakeEnv(t, env)
	c := mustParse(t, "[[handler]]\nuser = \"u\"\ncommand = \"mycmd\"\n")
	if err := c.Resolve(false); err != nil {
		t.Fatal(err)
	}
	if c.Control != (Control{Socket: "/run/user/1000/imserious.sock"}) {
		t.Errorf("not root: Control = %+v", c.Control)
	}
	delete(env, "XDG_RUNTIME_DIR")
	if err := c.Resolve(false); err != nil {
		t.Fatal(err)
	}
	if c.Control != (Control{}) {
		t.Errorf("not root, no XDG_RUNTIME_DIR: Control = %+v, want none", c.Control)
	}
	c.ResolveControl(true)
	if c.Control != (Control{Socket: DefaultRootControlSocket}) {
		t.Errorf("ResolveControl(true): Control = %+v", c.Control)
	}

	env["XDG_RUNTIME_DIR"] = "/run/user/1000"
	off := mustParse(t, "[control]\nsocket = \"\"\n[[handler]]\nuser = \"u\"\ncommand = \"mycmd\"\n")
	if err := off.Resolve(false); err != nil {
		t.Fatal(err)
	}
	if off.Control != (Control{Explicit: true}) {
		t.Errorf("socket = \"\": Control = %+v, want off", off.Control)
	}
	off.ResolveControl(true)
	if off.Control != (Control{Explicit: true}) {
		t.Errorf("socket = \"\", ResolveControl(true): Control = %+v, want off", off.Control)
	}
}

// TestResolveControlSocketPath: an explicit socket is checked as the
// daemon will bind it; the default is not (failing to bind it is a
// warning at start).
func TestResolveControlSocketPath(t *testing.T) {
	testBin(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(dir, "stale.sock")
	l, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	link := filepath.Join(dir, "link")
	if err := os.Symlink(stale, link); err != nil {
		t.Fatal(err)
	}
	src := func(sock string) string {
		return "[control]\nsocket = \"" + sock + "\"\n[[handler]]\nuser = \"u\"\ncommand = \"mycmd\"\n"
	}
	for _, sock := range []string{filepath.Join(dir, "new.sock"), stale} {
		if err := mustParse(t, src(sock)).Resolve(false); err != nil {
			t.Errorf("socket %s: %v", sock, err)
		}
	}
	for _, tc := range []struct{ sock, msg string }{
		{filepath.Join(dir, "missing", "s.sock"), "cannot use directory " + filepath.Join(dir, "missing") + " for the control socket"},
		{filepath.Join(file, "s.sock"), file + " is not a directory"},
		{file, file + " exists and is not a socket (a regular file)"},
		{dir, dir + " exists and is not a socket (a directory)"},
		{link, link + " exists and is not a socket (a symbolic link)"},
	} {
		es := resolveErrors(t, mustParse(t, src(tc.sock)), false)
		checkErrors(t, es, []wantErr{{2, "control.socket", tc.msg}})
	}
	// The default is not checked.
	fakeEnv(t, map[string]string{"XDG_RUNTIME_DIR": file})
	c := mustParse(t, "[[handler]]\nuser = \"u\"\ncommand = \"mycmd\"\n")
	if err := c.Resolve(false); err != nil || c.Control.Socket != filepath.Join(file, ControlSocketName) {
		t.Errorf("default under a file: %v, %+v", err, c.Control)
	}
}

func TestRetriesAndRunAtStart(t *testing.T) {
	c := mustParse(t, h+"run_at_start = true\nretries = 5\nretry_backoff = \"1m\"\n")
	if hd := c.Handlers[0]; !hd.RunAtStart || hd.Retries != 5 || hd.RetryBackoff != time.Minute {
		t.Errorf("handler %+v", hd)
	}
	c = mustParse(t, h+"runatstart = true\nretries = 100\nretrybackoff = \"2 seconds\"\n")
	if hd := c.Handlers[0]; !hd.RunAtStart || hd.Retries != 100 || hd.RetryBackoff != 2*time.Second {
		t.Errorf("aliases: handler %+v", hd)
	}
	if w := c.Warnings(); len(w) != 0 {
		t.Errorf("Warnings() = %q", w)
	}
	c = mustParse(t, h+"run_at_start = false\nretries = 0\n")
	if hd := c.Handlers[0]; hd.RunAtStart || hd.Retries != 0 || hd.RetryBackoff != DefaultRetryBackoff {
		t.Errorf("explicit defaults: handler %+v", hd)
	}

	for _, tc := range []struct {
		name, src string
		line      int
		key, msg  string
	}{
		{"retries negative", "retries = -1", 4, "handler[1].retries", "-1 is out of range (0 to 100)"},
		{"retries huge", "retries = 101", 4, "handler[1].retries", "101 is out of range (0 to 100)"},
		{"retries string", "retries = \"3\"", 4, "handler[1].retries", "expected an integer, found a string"},
		{"retry_backoff zero", "retries = 1\nretry_backoff = \"0s\"", 5, "handler[1].retry_backoff", "greater than zero"},
		{"retry_backoff int", "retries = 1\nretry_backoff = 10", 5, "handler[1].retry_backoff", "expected a duration string"},
		{"retrybackoff no unit", "retries = 1\nretrybackoff = \"10\"", 5, "handler[1].retrybackoff", "missing unit"},
		{"run_at_start string", "run_at_start = \"yes\"", 4, "handler[1].run_at_start", "expected true or false, found a string"},
		{"both run_at_start", "run_at_start = true\nrunatstart = true", 5, "handler[1].runatstart", `alias of "run_at_start", which is also set`},
		{"both retry_backoff", "retries = 1\nretrybackoff = \"1s\"\nretry_backoff = \"1s\"", 5, "handler[1].retrybackoff", "keep only \"retry_backoff\""},
		{"misspelled retries", "retires = 1", 4, "handler[1].retires", `did you mean "retries"?`},
		{"misspelled run_at_start", "run_at_stat = true", 4, "handler[1].run_at_stat", `did you mean "run_at_start"?`},
		{"retries at top", "", 1, "retries", "belongs in [[handler]]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := h + tc.src
			if tc.name == "retries at top" {
				src = "retries = 1\n" + h
			}
			es := parseErrors(t, src)
			if len(es) != 1 {
				t.Fatalf("want one error, got %d:\n%v", len(es), es)
			}
			e := es[0]
			if e.File != testFile || e.Line != tc.line || e.Key != tc.key || !strings.Contains(e.Msg, tc.msg) {
				t.Errorf("got  %s\nwant %s:%d: %s: ...%s...", e, testFile, tc.line, tc.key, tc.msg)
			}
		})
	}
}

// TestRetryBackoffWithoutRetries: a back-off without retries works (it
// does nothing) and is a warning, located like an error; with retries
// invalid, only the error is reported.
func TestRetryBackoffWithoutRetries(t *testing.T) {
	want := testFile + ":4: handler[1].retry_backoff: has no effect: retries is 0; set retries to the number of times a failed run is tried again"
	for _, src := range []string{
		h + "retry_backoff = \"30s\"\n",
		h + "retry_backoff = \"30s\"\nretries = 0\n",
	} {
		c := mustParse(t, src)
		if got := c.Warnings(); !slices.Equal(got, []string{want}) {
			t.Errorf("%q: Warnings() =\n%q\nwant\n%q", src, got, want)
		}
		if c.Handlers[0].RetryBackoff != 30*time.Second {
			t.Errorf("RetryBackoff %v", c.Handlers[0].RetryBackoff)
		}
	}
	es := parseErrors(t, h+"retry_backoff = \"30s\"\nretries = 1000\n")
	if len(es) != 1 || es[0].Key != "handler[1].retries" {
		t.Errorf("errors %v", es)
	}
}
