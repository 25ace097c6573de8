package config

import (
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

const testFile = "/etc/imserious.toml"

func mustParse(t *testing.T, src string) *Config {
	t.Helper()
	c, err := Parse(testFile, []byte(src))
	if err != nil {
		t.Fatalf("Parse:\n%v", err)
	}
	return c
}

func parseErrors(t *testing.T, src string) Errors {
	t.Helper()
	c, err := Parse(testFile, []byte(src))
	if err == nil {
		t.Fatalf("Parse succeeded (%+v), want an error", c)
	}
	if c != nil {
		t.Errorf("Parse returned a config with its error")
	}
	var es Errors
	if !errors.As(err, &es) || len(es) == 0 {
		t.Fatalf("Parse error %T %v is not a non-empty Errors", err, err)
	}
	return es
}

func TestDefaults(t *testing.T) {
	c := mustParse(t, "[[handler]]\nuser = \"alice\"\ncommand = \"true\"\n")
	want := &Config{
		File:           testFile,
		Listen:         "127.0.0.1:12525",
		Endpoint:       "/notify",
		MaxConnections: 8,
		Timeout:        5 * time.Second,
		Log: Log{MaxLevel: "info", Format: "full",
			Output: "stdout", Facility: "daemon", FacilityCode: 3, SyslogSocket: DefaultSyslogSocket},
		Privsep:            Privsep{User: "_imserious", Chroot: "/var/empty", ExecIdle: 10 * time.Minute, MaxExec: 64},
		MaxOpenConnections: 1000,
		MaxOpenPerIP:       100,
		Handlers: []Handler{{
			Line:           1,
			Number:         1,
			User:           "alice",
			Event:          "MessageNew",
			Command:        []string{"true"},
			LimitPeriod:    30 * time.Second,
			LimitBurst:     1,
			CommandTimeout: 10 * time.Minute,
			RetryBackoff:   10 * time.Second,
			MinUID:         1000,
		}},
	}
	c.src = nil
	if !reflect.DeepEqual(c, want) {
		t.Errorf("defaults:\n got %+v\nwant %+v", c, want)
	}

	empty := mustParse(t, "")
	if empty.Handlers != nil || empty.Auth != nil || empty.TLS != nil || empty.Allow != nil {
		t.Errorf("empty config: %+v", empty)
	}
	if got, want := empty.Warnings(), []string{testFile + ": no [[handler]]: notifications will be accepted, but no command runs"}; !slices.Equal(got, want) {
		t.Errorf("empty config: Warnings() = %q, want %q", got, want)
	}
	if got := c.Warnings(); len(got) != 0 {
		t.Errorf("one handler: Warnings() = %q, want none", got)
	}
}

func TestFull(t *testing.T) {
	data, err := os.ReadFile("testdata/full.toml")
	if err != nil {
		t.Fatal(err)
	}
	c := mustParse(t, string(data))
	pfx := netip.MustParsePrefix
	want := &Config{
		File:               testFile,
		Listen:             "[::1]:12526",
		Allow:              []netip.Prefix{pfx("127.0.0.1/32"), pfx("10.0.0.0/8"), pfx("192.168.1.0/24"), pfx("2001:db8::/32")},
		Endpoint:           "/push",
		MaxConnections:     16,
		MaxOpenConnections: 500,
		MaxOpenPerIP:       50,
		Timeout:            10 * time.Second,
		InsecurePlaintext:  true,
		Auth:               &Auth{User: "dovecot", Pass: "s3cret pass"},
		TLS:                &TLS{Cert: "/etc/certs/fullchain.pem", Key: "/etc/ssl/private/imserious.key", PeriodicReload: 24 * time.Hour},
		Log: Log{MaxLevel: "debug", Format: "json", ANSI: true, Timestamp: true, Target: true, Level: true,
			Output: "syslog", Facility: "local3", FacilityCode: 19, SyslogSocket: "/var/run/syslog.sock"},
		Privsep: Privsep{User: "_imse", Chroot: "/var/empty/imserious", ExecIdle: 5 * time.Minute, MaxExec: 128},
		Control: Control{Socket: "/run/imserious/ctl.sock", Explicit: true},
		Handlers: []Handler{{
			Line:           40,
			Number:         1,
			User:           "alice",
			Event:          "MessageNew",
			Command:        []string{"/usr/local/bin/fdm", "-a", "my account", "fetch"},
			Delay:          250 * time.Millisecond,
			LimitPeriod:    90 * time.Minute,
			LimitBurst:     3,
			Periodic:       14 * 24 * time.Hour,
			RunAs:          "alice",
			Env:            map[string]string{"DISPLAY": ":0", "NOTMUCH_CONFIG": "/home/alice/.notmuch-config"},
			CommandTimeout: 30 * time.Minute,
			IP:             []netip.Prefix{pfx("192.0.2.1/32"), pfx("198.51.100.7/32"), pfx("2001:db8::/48")},
			PassEnv:        []string{"WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS"},
			RunAtStart:     true,
			Retries:        3,
			RetryBackoff:   30 * time.Second,
			MinUID:         1000,
		}, {
			Line:           60,
			Number:         2,
			User:           "bob@example.org",
			Event:          "FlagsSet",
			Command:        []string{"notify-send", "--app-name=imserious", "new mail"},
			LimitPeriod:    30 * time.Second,
			LimitBurst:     1,
			CommandTimeout: 10 * time.Minute,
			RetryBackoff:   10 * time.Second,
			MinUID:         1000,
			Env:            map[string]string{"XDG_RUNTIME_DIR": "/run/user/1001"},
		}, {
			Line:           66,
			Number:         3,
			User:           "*@example.org",
			Event:          "MessageNew",
			Command:        []string{"~/.config/imserious/new-mail", "--quiet"},
			LimitPeriod:    30 * time.Second,
			LimitBurst:     1,
			RunAs:          "%n",
			CommandTimeout: 10 * time.Minute,
			RetryBackoff:   10 * time.Second,
			Pattern:        true,
			MinUID:         2000,
			Dynamic:        true,
		}},
	}
	c.src = nil
	if !reflect.DeepEqual(c, want) {
		t.Errorf("full.toml:\n got %+v\nwant %+v", c, want)
		for i := range min(len(c.Handlers), len(want.Handlers)) {
			if !reflect.DeepEqual(c.Handlers[i], want.Handlers[i]) {
				t.Errorf("handler %d:\n got %+v\nwant %+v", i+1, c.Handlers[i], want.Handlers[i])
			}
		}
	}

	// Every key of the schema appears in full.toml, so a key added to the
	// schema without a test fails here.
	var raw map[string]any
	if _, err := toml.Decode(string(data), &raw); err != nil {
		t.Fatal(err)
	}
	tables := map[*tableSpec][]map[string]any{&topSpec: {raw}}
	for _, name := range []string{"auth", "tls", "log", "privsep", "control"} {
		m, _ := raw[name].(map[string]any)
		tables[specOf(name)] = []map[string]any{m}
	}
	tables[&handlerSpec], _ = raw["handler"].([]map[string]any)
	for _, spec := range allSpecs {
		for _, k := range spec.keys {
			found := false
			for _, m := range tables[spec] {
				_, ok := m[k]
				found = found || ok
			}
			if !found {
				t.Errorf("full.toml lacks %s key %q", spec.name, k)
			}
		}
	}
}

func specOf(name string) *tableSpec {
	for _, s := range allSpecs {
		if s.name == "["+name+"]" {
			return s
		}
	}
	panic(name)
}

func TestTLSRelativePaths(t *testing.T) {
	src := "[tls]\ncert = \"cert.pem\"\nkey = \"../private/key.pem\"\n"
	c, err := Parse("/usr/local/etc/imserious/imserious.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if c.TLS.Cert != "/usr/local/etc/imserious/cert.pem" || c.TLS.Key != "/usr/local/etc/private/key.pem" {
		t.Errorf("tls paths: %+v", c.TLS)
	}
	// A relative config path still gives absolute TLS paths.
	c, err = Parse("imserious.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	wd, _ := os.Getwd()
	if c.TLS.Cert != filepath.Join(wd, "cert.pem") {
		t.Errorf("tls cert relative to a relative config: %q", c.TLS.Cert)
	}
}

func TestAliases(t *testing.T) {
	c := mustParse(t, `
maxconnections = 9
maxopenconnections = 300
maxopenperip = 30
insecureplaintext = true
listen = "0.0.0.0:1"
[tls]
cert = "/c"
key = "/k"
periodicreload = "1h"
[log]
maxlevel = "trace"
[[handler]]
user = "u"
command = "true"
limitperiod = "1m"
limitburst = 4
commandtimeout = "2m"
runas = "nobody"
passenv = ["DISPLAY"]
`)
	h := c.Handlers[0]
	if c.MaxConnections != 9 || c.MaxOpenConnections != 300 || c.MaxOpenPerIP != 30 || !c.InsecurePlaintext || c.TLS.PeriodicReload != time.Hour || c.Log.MaxLevel != "trace" ||
		h.LimitPeriod != time.Minute || h.LimitBurst != 4 || h.CommandTimeout != 2*time.Minute || h.RunAs != "nobody" || !slices.Equal(h.PassEnv, []string{"DISPLAY"}) {
		t.Errorf("aliases not applied: %+v %+v", c, h)
	}
	// An error in an aliased key names the key as written.
	es := parseErrors(t, "[[handler]]\nuser = \"u\"\ncommand = \"true\"\nlimitperiod = \"0s\"\n")
	if len(es) != 1 || es[0].Key != "handler[1].limitperiod" || es[0].Line != 4 {
		t.Errorf("aliased key error: %v", es)
	}
}

func TestEventCaseInsensitive(t *testing.T) {
	for in, want := range map[string]string{"messagenew": "MessageNew", "MESSAGEREAD": "MessageRead", "flagsClear": "FlagsClear", "MailboxUnsubscribe": "MailboxUnsubscribe"} {
		c := mustParse(t, "[[handler]]\nuser = \"u\"\ncommand = \"true\"\nevent = \""+in+"\"\n")
		if c.Handlers[0].Event != want {
			t.Errorf("event %q = %q, want %q", in, c.Handlers[0].Event, want)
		}
	}
}

func TestCommandSplitting(t *testing.T) {
	for _, tc := range []struct {
		toml string
		want []string
	}{
		{`"fdm fetch"`, []string{"fdm", "fetch"}},
		{`"  notmuch   new  "`, []string{"notmuch", "new"}},
		{`"sh -c 'echo \"$IMSE_USER\" > /tmp/x'"`, []string{"sh", "-c", `echo "$IMSE_USER" > /tmp/x`}},
		{`'notify-send "New mail" ""'`, []string{"notify-send", "New mail", ""}},
		{`'a\ b c'`, []string{"a b", "c"}},
		{`'echo a;b|c&&d'`, []string{"echo", "a;b|c&&d"}}, // no shell operators
		{`["/bin/echo", "two words", "'quoted'", ""]`, []string{"/bin/echo", "two words", "'quoted'", ""}},
	} {
		c := mustParse(t, "[[handler]]\nuser = \"u\"\ncommand = "+tc.toml+"\n")
		if !reflect.DeepEqual(c.Handlers[0].Command, tc.want) {
			t.Errorf("command = %s: got %q, want %q", tc.toml, c.Handlers[0].Command, tc.want)
		}
	}
}

func TestInlineHandlers(t *testing.T) {
	c := mustParse(t, "handler = [\n  { user = \"a\", command = \"true\" },\n  { user = \"b\", command = \"false\", event = \"MessageRead\" },\n]\n")
	if len(c.Handlers) != 2 || c.Handlers[1].User != "b" || c.Handlers[1].Line != 3 || c.Handlers[1].LimitBurst != 1 {
		t.Errorf("inline handlers: %+v", c.Handlers)
	}
	es := parseErrors(t, "handler = [\n  { user = \"a\", command = \"true\" },\n  { user = \"b\", command = \"\" },\n]\n")
	if len(es) != 1 || es[0].Line != 3 || es[0].Key != "handler[2].command" {
		t.Errorf("inline handler error: %v", es)
	}
}

func TestAcceptedValues(t *testing.T) {
	for _, src := range []string{
		`listen = "127.0.0.1:0"`, // any free port, as tests bind
		`listen = "[::1]:80"`,
		`listen = "[::ffff:127.0.0.1]:80"`, // loopback once unmapped
		`listen = "127.0.0.2:80"`,          // all of 127/8 is loopback
		"listen = \"0.0.0.0:80\"\ninsecure_plaintext = true",
		"listen = \"[::]:80\"\n[tls]\ncert = \"/c\"\nkey = \"/k\"",
		`allow = []`,
		`endpoint = "/"`,
		`max_connections = 4096`,
		"max_open_connections = 1\nmax_open_per_ip = 1",
		`max_open_per_ip = 1000`, // the default total
		"[log]\nmax_level = \"WARN\"\nformat = \"Pretty\"",
		"[privsep]\nchroot = \"/var/empty/\"",
		"[[handler]]\nuser = \"u\"\ncommand = \"true\"\nlimit_burst = 1\n[handler.env]\nlowercase_ok = \"x\"\n_X1 = \"\"",
	} {
		if _, err := Parse(testFile, []byte(src)); err != nil {
			t.Errorf("Parse(%q):\n%v", src, err)
		}
	}
}

// TestOpenLimits: the per-address default shrinks to a total written
// below it, rather than making that total alone an error.
func TestOpenLimits(t *testing.T) {
	for src, want := range map[string][2]int{
		"":                            {1000, 100},
		"max_open_connections = 50":   {50, 50},
		"max_open_connections = 5000": {5000, 100},
		"max_open_per_ip = 7":         {1000, 7},
		"max_open_connections = 8\nmax_open_per_ip = 8": {8, 8},
	} {
		c := mustParse(t, src)
		if got := [2]int{c.MaxOpenConnections, c.MaxOpenPerIP}; got != want {
			t.Errorf("%q: max_open_connections, max_open_per_ip = %v, want %v", src, got, want)
		}
	}
}

func TestPrefixes(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.7":              "192.0.2.7/32",
		"2001:db8::1":            "2001:db8::1/128",
		"::ffff:192.0.2.7":       "192.0.2.7/32",
		"::ffff:192.0.2.0/120":   "192.0.2.0/24",
		"::ffff:0.0.0.0/96":      "0.0.0.0/0",
		"10.1.2.3/8":             "10.0.0.0/8",
		"2001:db8::/32":          "2001:db8::/32",
		"0.0.0.0/0":              "0.0.0.0/0",
		"2001:db8:1:2:3:4:5:6/0": "::/0",
	} {
		got, err := parsePrefix(in)
		if err != nil || got.String() != want {
			t.Errorf("parsePrefix(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
}

const h = "[[handler]]\nuser = \"u\"\ncommand = \"true\"\n" // lines 1-3

// TestErrors covers every kind of problem Parse reports: each must come
// alone, with its line and key, so an operator can find it.
func TestErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		src  string
		line int
		key  string
		msg  string // substring
	}{
		// TOML syntax
		{"syntax", "a = 1\nb = = 2\n", 2, "", "invalid TOML"},
		{"duplicate key", "listen = \"127.0.0.1:1\"\n\nlisten = \"127.0.0.1:2\"\n", 3, "listen", `key "listen" is set twice (first at line 1)`},
		{"unclosed string", "endpoint = \"/x\n", 1, "", "invalid TOML"},

		// unknown keys and tables
		{"unknown top", "listn = \"127.0.0.1:1\"", 1, "listn", `unknown key (did you mean "listen"?)`},
		{"unknown no hint", "\nfrobnicate = 1", 2, "frobnicate", "unknown key"},
		{"unknown table", "[tsl]\ncert = \"/c\"", 1, "tsl", `unknown table (did you mean "tls"?)`},
		{"unknown table no hint", "[server]\nport = 1", 1, "server", "unknown table"},
		{"unknown handler key", h + "limit_perod = \"5s\"", 4, "handler[1].limit_perod", `unknown key (did you mean "limit_period"?)`},
		{"unknown in 2nd handler", h + h + "\nrunas_ = \"x\"", 8, "handler[2].runas_", `did you mean "run_as"?`},
		{"unknown handler table", h + "[handler.environment]\nA = \"1\"", 4, "handler[1].environment", "unknown table"},
		{"unknown auth", "[auth]\nuser = \"u\"\npass = \"p\"\npassword = \"p\"", 4, "auth.password", `did you mean "pass"?`},
		{"unknown auth prefix", "[auth]\nuser = \"u\"\npass = \"p\"\nusername = \"u\"", 4, "auth.username", `did you mean "user"?`},
		{"unknown tls", "[tls]\ncert = \"/c\"\nkey = \"/k\"\nperiodic_reloads = \"1h\"", 4, "tls.periodic_reloads", `did you mean "periodic_reload"?`},
		{"unknown log", "[log]\nformats = \"json\"", 2, "log.formats", `did you mean "format"?`},
		{"unknown privsep", "[privsep]\nchrot = \"/x\"", 2, "privsep.chrot", `did you mean "chroot"?`},
		{"top key after header", "[log]\nformat = \"json\"\ntimeout = \"1s\"", 3, "log.timeout", "belongs at the top level"},
		{"log key at top", "max_level = \"debug\"", 1, "max_level", "belongs in [log]"},
		{"dotted unknown", "log.colour = true", 1, "log.colour", "unknown key"},

		// both spellings
		{"both max_level", "[log]\nmax_level = \"info\"\nmaxlevel = \"debug\"", 3, "log.maxlevel", `alias of "max_level", which is also set`},
		{"both limit_period", h + "limitperiod = \"1m\"\nlimit_period = \"2m\"", 4, "handler[1].limitperiod", "keep only \"limit_period\""},
		{"both run_as", h + "run_as = \"a\"\nrunas = \"a\"", 5, "handler[1].runas", "alias"},
		{"both max_connections", "maxconnections = 1\nmax_connections = 2", 1, "maxconnections", "alias"},

		// types
		{"listen int", "listen = 12525", 1, "listen", "expected a string, found an integer"},
		{"max_connections string", "max_connections = \"8\"", 1, "max_connections", "expected an integer, found a string"},
		{"max_connections float", "max_connections = 8.0", 1, "max_connections", "expected an integer, found a float"},
		{"timeout int", "timeout = 5", 1, "timeout", "expected a duration string"},
		{"insecure string", "insecure_plaintext = \"yes\"", 1, "insecure_plaintext", "expected true or false, found a string"},
		{"log not table", "log = \"debug\"", 1, "log", "expected a table, found a string"},
		{"auth array", "[[auth]]\nuser = \"u\"", 1, "auth", "expected a table, found an array of tables"},
		{"handler table", "[handler]\nuser = \"u\"\ncommand = \"true\"", 1, "handler", "expected an array of tables ([[handler]])"},
		{"handler array of strings", "handler = [\"x\"]", 1, "handler[1]", "expected a table, found a string"},
		{"allow string", "allow = \"10.0.0.1\"", 1, "allow", "expected an array, found a string"},
		{"allow element", "allow = [\n  \"10.0.0.1\",\n  1,\n]", 3, "allow[2]", "expected a string, found an integer"},
		{"ansi int", "[log]\nansi = 1", 2, "log.ansi", "expected true or false"},
		{"date", "timeout = 1979-05-27", 1, "timeout", "found a date/time"},
		{"env string", h + "env = \"A=1\"", 4, "handler[1].env", "expected a table"},
		{"env value int", h + "[handler.env]\nA = 1", 5, "handler[1].env.A", "expected a string, found an integer"},
		{"limit_burst float", h + "limit_burst = 1.5", 4, "handler[1].limit_burst", "expected an integer, found a float"},
		{"command int", "[[handler]]\nuser = \"u\"\ncommand = 5", 3, "handler[1].command", "expected a string or an array of strings"},
		{"command array int", "[[handler]]\nuser = \"u\"\ncommand = [\"a\", 5]", 3, "handler[1].command[2]", "expected a string"},
		{"user int", "[[handler]]\nuser = 5\ncommand = \"true\"", 2, "handler[1].user", "expected a string"},
		{"ip string", h + "ip = \"10.0.0.1\"", 4, "handler[1].ip", "expected an array"},
		{"run_as bool", h + "run_as = true", 4, "handler[1].run_as", "expected a string"},

		// listen
		{"listen host name", "listen = \"localhost:12525\"", 1, "listen", "not a host name"},
		{"listen no port", "listen = \"127.0.0.1\"", 1, "listen", "want IP:port"},
		{"listen big port", "listen = \"127.0.0.1:70000\"", 1, "listen", "invalid address"},
		{"listen v6 no brackets", "listen = \"::1:80\"", 1, "listen", "invalid address"},
		{"plaintext on network", "\nlisten = \"0.0.0.0:12525\"", 2, "listen", "add a [tls] table with cert and key, or set insecure_plaintext = true"},
		{"plaintext on v6 network", "listen = \"[2001:db8::1]:443\"\ninsecure_plaintext = false", 1, "listen", "not a loopback address"},

		// allow
		{"allow bad cidr", "allow = [\"10.0.0.0/33\"]", 1, "allow[1]", `invalid CIDR "10.0.0.0/33"`},
		{"allow garbage", "allow = [\"10.0.0.256\"]", 1, "allow[1]", "invalid IP address or CIDR"},
		{"allow zone", "allow = [\"fe80::1%eth0\"]", 1, "allow[1]", "zones"},
		{"allow short mapped", "allow = [\"::ffff:0:0/90\"]", 1, "allow[1]", "/96 or longer"},
		{"allow empty string", "allow = [\"\"]", 1, "allow[1]", "invalid IP"},

		// endpoint, max_connections, timeout
		{"endpoint relative", "endpoint = \"notify\"", 1, "endpoint", "must start with /"},
		{"endpoint query", "endpoint = \"/notify?x=1\"", 1, "endpoint", "without ? or #"},
		{"endpoint fragment", "endpoint = \"/notify#x\"", 1, "endpoint", "without ? or #"},
		{"endpoint space", "endpoint = \"/no tify\"", 1, "endpoint", "spaces or control"},
		{"endpoint empty", "endpoint = \"\"", 1, "endpoint", "must start with /"},
		{"max_connections 0", "max_connections = 0", 1, "max_connections", "0 is out of range (1 to 4096)"},
		{"max_connections negative", "max_connections = -1", 1, "max_connections", "out of range"},
		{"max_connections huge", "max_connections = 5000", 1, "max_connections", "out of range"},

		// max_open_connections, max_open_per_ip
		{"max_open_connections 0", "max_open_connections = 0", 1, "max_open_connections", "0 is out of range (1 to 1048576)"},
		{"max_open_per_ip 0", "\nmax_open_per_ip = 0", 2, "max_open_per_ip", "0 is out of range (1 to 1048576)"},
		{"max_open_per_ip string", "max_open_per_ip = \"5\"", 1, "max_open_per_ip", "expected an integer, found a string"},
		{"max_open_connections huge", "maxopenconnections = 1048577", 1, "maxopenconnections", "out of range"},
		{"both max_open_connections", "max_open_connections = 5\nmaxopenconnections = 5", 2, "maxopenconnections", `alias of "max_open_connections", which is also set`},
		{"both max_open_per_ip", "maxopenperip = 5\nmax_open_per_ip = 5", 1, "maxopenperip", "alias"},
		{"per ip above total", "max_open_connections = 100\nmax_open_per_ip = 101", 2, "max_open_per_ip",
			"101 is more than max_open_connections (100, line 1): one address could never open that many; lower it or raise max_open_connections"},
		{"per ip above default total", "\nmaxopenperip = 1001", 2, "maxopenperip", "1001 is more than max_open_connections (1000, the default)"},
		{"per ip above aliased total", "maxopenconnections = 10\nmax_open_per_ip = 11", 2, "max_open_per_ip", "more than maxopenconnections (10, line 1)"},
		{"timeout zero", "timeout = \"0s\"", 1, "timeout", "must be greater than zero"},
		{"timeout negative", "timeout = \"-5s\"", 1, "timeout", "expected a number"},
		{"timeout no unit", "timeout = \"5\"", 1, "timeout", "missing unit"},
		{"timeout empty", "timeout = \"\"", 1, "timeout", "empty duration"},

		// auth
		{"auth no pass", "[auth]\nuser = \"u\"", 1, "auth.pass", "missing: [auth] needs both user and pass"},
		{"auth no user", "\n[auth]\npass = \"p\"", 2, "auth.user", "missing"},
		{"auth empty pass", "[auth]\nuser = \"u\"\npass = \"\"", 3, "auth.pass", "must not be empty"},
		{"auth colon", "[auth]\nuser = \"a:b\"\npass = \"p\"", 2, "auth.user", "must not contain ':'"},
		{"auth NUL", "[auth]\nuser = \"a\\u0000b\"\npass = \"p\"", 2, "auth.user", "NUL"},

		// tls
		{"tls no key", "[tls]\ncert = \"/c\"", 1, "tls.key", "missing: [tls] needs both cert and key"},
		{"tls empty cert", "[tls]\ncert = \"\"\nkey = \"/k\"", 2, "tls.cert", "must not be empty"},
		{"tls reload zero", "[tls]\ncert = \"/c\"\nkey = \"/k\"\nperiodic_reload = \"0m\"", 4, "tls.periodic_reload", "greater than zero"},

		// log, privsep
		{"log level", "[log]\nmax_level = \"verbose\"", 2, "log.max_level", "want one of error, warn, info, debug, trace"},
		{"log format", "[log]\nformat = \"xml\"", 2, "log.format", "want one of full, compact, pretty, json"},
		{"privsep relative chroot", "[privsep]\nchroot = \"var/empty\"", 2, "privsep.chroot", "not an absolute path"},
		{"privsep empty user", "[privsep]\nuser = \"\"", 2, "privsep.user", "must not be empty"},
		{"privsep user colon", "[privsep]\nuser = \"a:b\"", 2, "privsep.user", "not a valid account name"},
		{"too large", "# " + strings.Repeat("x", MaxSize), 0, "", "more than the 16777216 allowed"},

		// handlers
		{"handler no user", "\n[[handler]]\ncommand = \"true\"", 2, "handler[1].user", "missing"},
		{"handler empty user", "[[handler]]\nuser = \"\"\ncommand = \"true\"", 2, "handler[1].user", "must not be empty"},
		{"handler no command", "[[handler]]\nuser = \"u\"", 1, "handler[1].command", "missing"},
		{"handler empty command", "[[handler]]\nuser = \"u\"\ncommand = \"\"", 3, "handler[1].command", "empty command"},
		{"handler blank command", "[[handler]]\nuser = \"u\"\ncommand = \"   \"", 3, "handler[1].command", "empty command"},
		{"handler comment command", "[[handler]]\nuser = \"u\"\ncommand = \"#x\"", 3, "handler[1].command", "empty command"},
		{"handler empty argv", "[[handler]]\nuser = \"u\"\ncommand = []", 3, "handler[1].command", "empty command"},
		{"handler empty program", "[[handler]]\nuser = \"u\"\ncommand = \"'' x\"", 3, "handler[1].command", "empty program name"},
		{"handler unbalanced quote", "[[handler]]\nuser = \"u\"\ncommand = \"echo 'a\"", 3, "handler[1].command", "unbalanced quote"},
		{"handler unbalanced dquote", "[[handler]]\nuser = \"u\"\ncommand = 'echo \"a'", 3, "handler[1].command", "unbalanced quote"},
		{"handler trailing backslash", "[[handler]]\nuser = \"u\"\ncommand = 'echo a\\'", 3, "handler[1].command", "ends with a backslash"},
		{"handler NUL in argv", "[[handler]]\nuser = \"u\"\ncommand = [\"a\", \"b\\u0000\"]", 3, "handler[1].command[2]", "NUL"},
		{"handler event", h + "event = \"NewMessage\"", 4, "handler[1].event", `unknown event "NewMessage": want one of FlagsClear,`},
		{"handler delay zero", h + "delay = \"0s\"", 4, "handler[1].delay", "greater than zero"},
		{"handler periodic negative", h + "periodic = \"-1h\"", 4, "handler[1].periodic", "expected a number"},
		{"handler limit_period zero", h + "limit_period = \"0ms\"", 4, "handler[1].limit_period", "greater than zero"},
		{"handler command_timeout zero", h + "command_timeout = \"0s\"", 4, "handler[1].command_timeout", "greater than zero"},
		{"handler limit_burst zero", h + "limit_burst = 0", 4, "handler[1].limit_burst", "out of range"},
		{"handler run_as empty", h + "run_as = \"\"", 4, "handler[1].run_as", "must not be empty"},
		{"handler run_as colon", h + "run_as = \"a:b\"", 4, "handler[1].run_as", "not a valid account name"},
		{"env name digit", h + "env = { 1A = \"x\" }", 4, "handler[1].env.1A", "invalid variable name"},
		{"env name dash", h + "[handler.env]\n\"A-B\" = \"x\"", 5, "handler[1].env.A-B", "invalid variable name"},
		{"env name space", h + "[handler.env]\n\"A B\" = \"x\"", 5, `handler[1].env."A B"`, "invalid variable name"},
		{"env reserved", h + "[handler.env]\nIMSE_USER = \"x\"", 5, "handler[1].env.IMSE_USER", "reserved"},
		{"env NUL", h + "env = { A = \"x\\u0000y\" }", 4, "handler[1].env.A", "must not contain NUL"},
		{"ip bad", h + "ip = [\"10.0.0.0/8\", \"nope\"]", 4, "handler[1].ip[2]", "invalid IP address or CIDR \"nope\""},
		{"2nd handler error", h + h + "\ndelay = \"5\"", 8, "handler[2].delay", "missing unit"},
		{"env in 2nd handler", h + h + "[handler.env]\nIMSE_X = \"1\"", 8, "handler[2].env.IMSE_X", "reserved"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			es := parseErrors(t, tc.src)
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

// TestEveryError checks that Parse reports all problems, not just the
// first, in file order.
func TestEveryError(t *testing.T) {
	src := `listen = "localhost:1"
timeout = "5"
[log]
maxlevel = "loud"
[[handler]]
user = "a"
command = "x 'y"
limit_perod = "1s"
[[handler]]
event = "nope"
command = "true"
`
	es := parseErrors(t, src)
	want := []string{
		testFile + `:1: listen: invalid address "localhost:1"`,
		testFile + `:2: timeout: invalid duration "5"`,
		testFile + `:4: log.maxlevel: invalid level "loud"`,
		testFile + `:7: handler[1].command: cannot split "x 'y": unbalanced quote`,
		testFile + `:8: handler[1].limit_perod: unknown key (did you mean "limit_period"?)`,
		testFile + `:9: handler[2].user: missing`,
		testFile + `:10: handler[2].event: unknown event "nope"`,
	}
	if len(es) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%v", len(es), len(want), es)
	}
	for i, w := range want {
		if !strings.HasPrefix(es[i].Error(), w) {
			t.Errorf("error %d:\n got %s\nwant %s...", i, es[i], w)
		}
	}
	if got := strings.Count(es.Error(), "\n"); got != len(want)-1 {
		t.Errorf("Errors.Error() has %d newlines, want %d", got, len(want)-1)
	}
}

func TestErrorRendering(t *testing.T) {
	for _, tc := range []struct {
		e    Error
		want string
	}{
		{Error{File: "/f", Line: 3, Key: "k", Msg: "m"}, "/f:3: k: m"},
		{Error{File: "/f", Key: "k", Msg: "m"}, "/f: k: m"},
		{Error{File: "/f", Line: 3, Msg: "m"}, "/f:3: m"},
		{Error{Line: 3, Key: "k", Msg: "m"}, "line 3: k: m"},
		{Error{Key: "k", Msg: "m"}, "k: m"},
		{Error{Msg: "m"}, "m"},
	} {
		if got := tc.e.Error(); got != tc.want {
			t.Errorf("%+v.Error() = %q, want %q", tc.e, got, tc.want)
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "imserious.toml")
	if err := os.WriteFile(p, []byte("[[handler]]\nuser = \"u\"\ncommand = \"true\"\ntimeout = \"1s\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(p)
	var es Errors
	if !errors.As(err, &es) || len(es) != 1 || es[0].Error() != p+`:4: handler[1].timeout: unknown key ("timeout" belongs at the top level, before the first [table] header)` {
		t.Errorf("Load: %v", err)
	}

	_, err = Load(filepath.Join(dir, "missing.toml"))
	if !errors.Is(err, fs.ErrNotExist) || !errors.As(err, &es) || es[0].File == "" {
		t.Errorf("Load of a missing file: %v", err)
	}
}
