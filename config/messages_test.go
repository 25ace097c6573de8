package config

import (
	"runtime"
	"slices"
	"strings"
	"testing"
)

// TestOperatorMessages: each problem of pass_env, the syslog keys, event
// names and keys defined twice, as the operator reads it: the whole line,
// file, line, key and message.
func TestOperatorMessages(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		want      string // the one error, rendered; testFile is prefixed
	}{
		// pass_env
		{"pass_env PATH", h + `pass_env = ["DISPLAY", "PATH"]`,
			`:4: handler[1].pass_env[2]: PATH cannot be passed: every command gets PATH=` + CommandPath + ` (set PATH in env to give it another)`},
		{"pass_env IMSE_", h + `pass_env = ["IMSE_USER"]`,
			`:4: handler[1].pass_env[1]: "IMSE_USER" cannot be passed: names starting with IMSE_ are reserved for the event`},
		{"pass_env imse_ in any case", h + `pass_env = ["Imse_Folder"]`,
			`:4: handler[1].pass_env[1]: "Imse_Folder" cannot be passed: names starting with IMSE_ are reserved for the event`},
		{"pass_env bad name", h + `pass_env = ["DBUS-ADDR"]`,
			`:4: handler[1].pass_env[1]: "DBUS-ADDR" is not a valid variable name: want letters, digits and _, not starting with a digit`},
		{"pass_env digit first", h + `pass_env = ["1X"]`,
			`:4: handler[1].pass_env[1]: "1X" is not a valid variable name: want letters, digits and _, not starting with a digit`},
		{"pass_env empty name", h + `pass_env = [""]`,
			`:4: handler[1].pass_env[1]: "" is not a valid variable name: want letters, digits and _, not starting with a digit`},
		{"pass_env twice", h + "pass_env = [\n  \"DISPLAY\",\n  \"XDG_RUNTIME_DIR\",\n  \"DISPLAY\",\n]",
			`:7: handler[1].pass_env[3]: "DISPLAY" is listed twice (first as handler[1].pass_env[1], line 5)`},
		{"pass_env also in env", h + "env = { DISPLAY = \":0\" }\npass_env = [\"DISPLAY\"]",
			`:5: handler[1].pass_env[1]: "DISPLAY" is also set in env (handler[1].env.DISPLAY, line 4): take it from one or the other`},
		{"pass_env also in env table", h + "pass_env = [\"DISPLAY\"]\n[handler.env]\nDISPLAY = \":0\"",
			`:4: handler[1].pass_env[1]: "DISPLAY" is also set in env (handler[1].env.DISPLAY, line 6): take it from one or the other`},
		{"pass_env string", h + `pass_env = "DISPLAY"`,
			`:4: handler[1].pass_env: expected an array, found a string`},
		{"pass_env int", h + `pass_env = [1]`,
			`:4: handler[1].pass_env[1]: expected a string, found an integer`},
		{"pass_env in 2nd handler", h + h + `pass_env = ["PATH"]`,
			`:7: handler[2].pass_env[1]: PATH cannot be passed: every command gets PATH=` + CommandPath + ` (set PATH in env to give it another)`},

		// [log] output, facility, syslog_socket
		{"output typo", "[log]\noutput = \"sylog\"", `:2: log.output: invalid output "sylog" (did you mean "syslog"?)`},
		{"output typo stdout", "[log]\noutput = \"stdot\"", `:2: log.output: invalid output "stdot" (did you mean "stdout"?)`},
		{"output unknown", "[log]\noutput = \"file\"", `:2: log.output: invalid output "file": want stdout or syslog`},
		{"output int", "[log]\noutput = 1", `:2: log.output: expected a string, found an integer`},
		{"facility typo", "[log]\noutput = \"syslog\"\nfacility = \"deamon\"", `:3: log.facility: invalid facility "deamon" (did you mean "daemon"?)`},
		{"facility LOG_ prefix", "[log]\noutput = \"syslog\"\nfacility = \"LOG_MAIL\"", `:3: log.facility: invalid facility "LOG_MAIL" (did you mean "mail"?)`},
		{"facility LOG_KERN", "[log]\nfacility = \"LOG_KERN\"", `:2: log.facility: invalid facility "LOG_KERN" (did you mean "kern"?)`},
		{"facility local8", "[log]\noutput = \"syslog\"\nfacility = \"local8\"", `:3: log.facility: invalid facility "local8": the local facilities are local0 to local7`},
		{"facility unknown", "[log]\noutput = \"syslog\"\nfacility = \"security\"",
			`:3: log.facility: invalid facility "security": want one of kern, user, mail, daemon, auth, syslog, lpr, news, uucp, cron, authpriv, ftp, local0, local1, local2, local3, local4, local5, local6, local7`},
		{"facility typo with stdout", "[log]\nfacility = \"deamon\"", `:2: log.facility: invalid facility "deamon" (did you mean "daemon"?)`},
		{"syslog_socket relative", "[log]\noutput = \"syslog\"\nsyslog_socket = \"dev/log\"", `:3: log.syslog_socket: "dev/log" is not an absolute path`},
		{"syslog_socket empty", "[log]\noutput = \"syslog\"\nsyslog_socket = \"\"", `:3: log.syslog_socket: must not be empty`},

		// event
		{"event typo", h + `event = "MessageNwe"`, `:4: handler[1].event: unknown event "MessageNwe" (did you mean "MessageNew"?)`},
		{"event snake case", h + `event = "message_new"`, `:4: handler[1].event: unknown event "message_new" (did you mean "MessageNew"?)`},
		{"event plural", h + `event = "FlagSet"`, `:4: handler[1].event: unknown event "FlagSet" (did you mean "FlagsSet"?)`},
		{"event far off", h + `event = "Delivered"`,
			`:4: handler[1].event: unknown event "Delivered": want one of FlagsClear, FlagsSet, MailboxCreate, MailboxDelete, MailboxRename, MailboxSubscribe, MailboxUnsubscribe, MessageAppend, MessageExpunge, MessageNew, MessageRead, MessageTrash`},

		// defined twice: our words for BurntSushi/toml's, with the
		// handler's index and the first line
		{"user twice", "[[handler]]\nuser = \"a\"\ncommand = \"true\"\nuser = \"b\"",
			`:4: handler[1].user: key "user" is set twice (first at line 2)`},
		{"user twice in 2nd handler", h + "[[handler]]\nuser = \"a\"\nuser = \"b\"\ncommand = \"true\"",
			`:6: handler[2].user: key "user" is set twice (first at line 5)`},
		{"table twice", "[log]\nformat = \"json\"\n\n[log]\nansi = true",
			`:4: log: table [log] is defined twice (first at line 1)`},
		{"handler env table twice", h + h + "[handler.env]\nA = \"1\"\n[handler.env]\nB = \"2\"",
			`:9: handler[2].env: table [handler.env] is defined twice (first at line 7)`},
		{"env key twice", h + "[handler.env]\nA = \"1\"\nA = \"2\"",
			`:6: handler[1].env.A: key "A" is set twice (first at line 5)`},
		{"inline env key twice", h + `env = { A = "1", A = "2" }`,
			`:4: handler[1].env.A: key "A" is set twice`},
		{"dotted key twice", h + "env.A = \"1\"\n[handler.env]\nA = \"2\"",
			`:6: handler[1].env.A: key "A" is set twice (first at line 4)`},
		{"quoted key twice", h + "[handler.env]\n\"A B\" = \"1\"\n\"A B\" = \"2\"",
			`:6: handler[1].env."A B": key "A B" is set twice (first at line 5)`},
		{"table after key", "log = { format = \"json\" }\n[log]\nansi = true",
			`:2: log: table [log] conflicts with key "log" at line 1: define each name once`},
		{"array after table", "[handler]\nuser = \"a\"\n[[handler]]\nuser = \"b\"",
			`:3: handler: array of tables [[handler]] conflicts with table [handler] at line 1: define each name once`},
		{"table after array", h + "[handler]\nuser = \"b\"",
			`:4: handler: table [handler] conflicts with array of tables [[handler]] at line 1: define each name once`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			es := parseErrors(t, tc.src)
			if len(es) != 1 || es[0].Error() != testFile+tc.want {
				t.Errorf("got  %v\nwant %s", es, testFile+tc.want)
			}
		})
	}
}

// TestDuplicateKeepsCause: the rewritten message still unwraps to the
// decoder's error, for anyone testing for a toml.ParseError.
func TestDuplicateKeepsCause(t *testing.T) {
	es := parseErrors(t, "a = 1\na = 2\n")
	if es[0].Unwrap() == nil || !strings.Contains(es[0].Unwrap().Error(), "has already been defined") {
		t.Errorf("cause lost: %#v", es[0])
	}
}

func TestSplitDottedKey(t *testing.T) {
	for in, want := range map[string][]string{
		"a":                 {"a"},
		"handler.env.A":     {"handler", "env", "A"},
		`handler.env."A B"`: {"handler", "env", "A B"},
		`"a.b".c`:           {"a.b", "c"},
		`"q\"x".y`:          {`q"x`, "y"},
		`""`:                {""},
		`"open`:             {`"open`},
	} {
		if got := splitDottedKey(in); !slices.Equal(got, want) {
			t.Errorf("splitDottedKey(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLogOutput(t *testing.T) {
	for _, tc := range []struct {
		src  string
		want Log
	}{
		{"", Log{Output: "stdout", Facility: "daemon", FacilityCode: 3, SyslogSocket: DefaultSyslogSocket}},
		{"[log]\noutput = \"syslog\"", Log{Output: "syslog", Facility: "daemon", FacilityCode: 3, SyslogSocket: DefaultSyslogSocket}},
		{"[log]\noutput = \"SysLog\"\nfacility = \"LOCAL7\"\nsyslog_socket = \"/run/systemd/journal/dev-log\"",
			Log{Output: "syslog", Facility: "local7", FacilityCode: 23, SyslogSocket: "/run/systemd/journal/dev-log"}},
		{"[log]\noutput = \"syslog\"\nsyslog_socket = \"/var/run/../run/log/\"", Log{Output: "syslog", Facility: "daemon", FacilityCode: 3, SyslogSocket: "/var/run/log"}},
		{"[log]\noutput = \"stdout\"", Log{Output: "stdout", Facility: "daemon", FacilityCode: 3, SyslogSocket: DefaultSyslogSocket}},
	} {
		c := mustParse(t, tc.src+"\n"+h)
		got := c.Log
		got.MaxLevel, got.Format = "", ""
		if got != tc.want {
			t.Errorf("%q: Log = %+v, want %+v", tc.src, got, tc.want)
		}
	}
	// Every facility by name, in any case, with its syslog number.
	want := map[string]int{"kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6,
		"news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "local0": 16, "local1": 17,
		"local2": 18, "local3": 19, "local4": 20, "local5": 21, "local6": 22, "local7": 23}
	if len(SyslogFacilities) != len(want) {
		t.Errorf("SyslogFacilities has %d names, want %d", len(SyslogFacilities), len(want))
	}
	for name, code := range want {
		for _, spelt := range []string{name, strings.ToUpper(name)} {
			c := mustParse(t, "[log]\noutput = \"syslog\"\nfacility = \""+spelt+"\"\n"+h)
			if c.Log.Facility != name || c.Log.FacilityCode != code || SyslogFacilities[name] != code {
				t.Errorf("facility %q: %q %d, want %q %d", spelt, c.Log.Facility, c.Log.FacilityCode, name, code)
			}
		}
	}
}

// TestDefaultSyslogSocket: where each system's syslogd listens.
func TestDefaultSyslogSocket(t *testing.T) {
	want := map[string]string{"linux": "/dev/log", "openbsd": "/dev/log", "freebsd": "/var/run/log"}
	if w, ok := want[runtime.GOOS]; ok && DefaultSyslogSocket != w {
		t.Errorf("DefaultSyslogSocket on %s = %q, want %q", runtime.GOOS, DefaultSyslogSocket, w)
	}
}

// TestParseWarnings: what loads but likely is not what was meant, located
// like errors; Resolve keeps these and adds its own.
func TestParseWarnings(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		want      []string
	}{
		{"no handler", "listen = \"127.0.0.1:1\"\n",
			[]string{testFile + ": no [[handler]]: notifications will be accepted, but no command runs"}},
		{"empty handler array", "\nhandler = []\n",
			[]string{testFile + ":2: handler: no [[handler]]: notifications will be accepted, but no command runs"}},
		{"facility with stdout", "[log]\nfacility = \"local0\"\n" + h,
			[]string{testFile + `:2: log.facility: has no effect: output is "stdout"; set output = "syslog" to log to syslog`}},
		{"both with explicit stdout", "[log]\noutput = \"stdout\"\nsyslog_socket = \"/dev/log\"\nfacility = \"mail\"\n" + h, []string{
			testFile + `:3: log.syslog_socket: has no effect: output is "stdout"; set output = "syslog" to log to syslog`,
			testFile + `:4: log.facility: has no effect: output is "stdout"; set output = "syslog" to log to syslog`,
		}},
		{"syslog", "[log]\noutput = \"syslog\"\nfacility = \"local0\"\nsyslog_socket = \"/dev/log\"\n" + h, nil},
		{"one handler", h, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := mustParse(t, tc.src)
			if got := c.Warnings(); !slices.Equal(got, tc.want) {
				t.Errorf("Warnings():\n got %q\nwant %q", got, tc.want)
			}
			// Resolve starts again from what Parse found, every time.
			for range 2 {
				c.Resolve(false)
				got := c.Warnings()
				if len(got) < len(tc.want) || !slices.Equal(got[:len(tc.want)], tc.want) {
					t.Errorf("after Resolve: Warnings():\n got %q\nwant %q first", got, tc.want)
				}
			}
		})
	}
}

// TestHandlerNumber: each handler's position in the file, whichever way
// the handlers are written.
func TestHandlerNumber(t *testing.T) {
	for _, src := range []string{
		h + h + h,
		"handler = [\n{ user = \"a\", command = \"x\" },\n{ user = \"b\", command = \"x\" },\n{ user = \"c\", command = \"x\" }]",
	} {
		c := mustParse(t, src)
		for i, hd := range c.Handlers {
			if hd.Number != i+1 {
				t.Errorf("%q: handler %d has Number %d", src, i+1, hd.Number)
			}
		}
	}
}
