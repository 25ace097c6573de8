package config

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// TestWildcardParse: what Parse makes of wildcard users, run_as with
// %-variables, min_uid and ~/ programs that it accepts.
func TestWildcardParse(t *testing.T) {
	const tr = "command = \"true\"\n"
	for _, tc := range []struct {
		name, src string // the body of one [[handler]]
		pattern   bool
		dynamic   bool
		runAs     string
		minUID    int
		command   []string
	}{
		{"exact user", "user = \"alice\"\n" + tr, false, false, "", 1000, []string{"true"}},
		{"star", "user = \"*\"\nrun_as = \"%n\"\n" + tr, true, true, "%n", 1000, []string{"true"}},
		{"domain glob", "user = \"*@example.org\"\nrun_as = \"%u\"\n" + tr, true, true, "%u", 1000, []string{"true"}},
		{"question mark", "user = \"user?\"\nrun_as = \"vmail\"\n" + tr, true, false, "vmail", 1000, []string{"true"}},
		{"class", "user = \"[a-c]*\"\nrun_as = \"%n\"\n" + tr, true, true, "%n", 1000, []string{"true"}},
		{"negated class", "user = \"[^x]*\"\nrun_as = \"%n\"\n" + tr, true, true, "%n", 1000, []string{"true"}},
		{"escape", "user = 'a\\*b'\nrun_as = \"%n\"\n" + tr, true, true, "%n", 1000, []string{"true"}},
		{"pattern without run_as", "user = \"*\"\n" + tr, true, false, "", 1000, []string{"true"}},
		{"pattern, literal run_as", "user = \"*\"\nrun_as = \"vmail\"\n" + tr, true, false, "vmail", 1000, []string{"true"}},
		{"exact user, %n", "user = \"alice@example.org\"\nrun_as = \"%n\"\n" + tr, false, false, "%n", 1000, []string{"true"}},
		{"%d and text", "user = \"*\"\nrun_as = \"mail-%d\"\n" + tr, true, true, "mail-%d", 1000, []string{"true"}},
		{"%n_%d", "user = \"*\"\nrun_as = \"%n_%d\"\n" + tr, true, true, "%n_%d", 1000, []string{"true"}},
		{"runas alias", "user = \"*\"\nrunas = \"%n\"\n" + tr, true, true, "%n", 1000, []string{"true"}},
		{"min_uid", "user = \"*\"\nrun_as = \"%n\"\nmin_uid = 2000\n" + tr, true, true, "%n", 2000, []string{"true"}},
		{"minuid alias", "user = \"*\"\nrun_as = \"%n\"\nminuid = 1\n" + tr, true, true, "%n", 1, []string{"true"}},
		{"min_uid at its top", "user = \"*\"\nrun_as = \"%n\"\nmin_uid = 2147483647\n" + tr, true, true, "%n", 1<<31 - 1, []string{"true"}},
		{"min_uid, exact user, %n", "user = \"a@b\"\nrun_as = \"%n\"\nmin_uid = 500\n" + tr, false, false, "%n", 500, []string{"true"}},
		{"run_at_start false on a pattern", "user = \"*\"\nrun_as = \"%n\"\nrun_at_start = false\n" + tr, true, true, "%n", 1000, []string{"true"}},
		{"periodic on an exact user with %n", "user = \"a@b\"\nrun_as = \"%n\"\nperiodic = \"1h\"\n" + tr, false, false, "%n", 1000, []string{"true"}},
		{"~/ program", "user = \"*\"\nrun_as = \"%n\"\ncommand = \"~/.config/imserious/new-mail --quiet\"\n",
			true, true, "%n", 1000, []string{"~/.config/imserious/new-mail", "--quiet"}},
		{"~/ program in an array", "user = \"alice\"\ncommand = [\"~/bin/hook\", \"a b\"]\n", false, false, "", 1000, []string{"~/bin/hook", "a b"}},
		{"~/ with dots in names", "user = \"alice\"\ncommand = \"~/..hook/.x..y\"\n", false, false, "", 1000, []string{"~/..hook/.x..y"}},
		{"~/ in an argument only", "user = \"alice\"\ncommand = \"mycmd ~/../x\"\n", false, false, "", 1000, []string{"mycmd", "~/../x"}},
		{"~ alone is a bare name", "user = \"alice\"\ncommand = \"~\"\n", false, false, "", 1000, []string{"~"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := mustParse(t, "[[handler]]\n"+tc.src)
			h := c.Handlers[0]
			if h.Pattern != tc.pattern || h.Dynamic != tc.dynamic || h.RunAs != tc.runAs || h.MinUID != tc.minUID || !slices.Equal(h.Command, tc.command) {
				t.Errorf("got Pattern %v Dynamic %v RunAs %q MinUID %d Command %q\nwant %v %v %q %d %q",
					h.Pattern, h.Dynamic, h.RunAs, h.MinUID, h.Command, tc.pattern, tc.dynamic, tc.runAs, tc.minUID, tc.command)
			}
			if w := c.Warnings(); len(w) != 0 {
				t.Errorf("Warnings() = %q, want none", w)
			}
		})
	}
}

// TestWildcardParseErrors: each rule of wildcard handlers, and of
// [privsep] exec_idle and max_exec, as the operator reads it.
func TestWildcardParseErrors(t *testing.T) {
	const known = `run_as knows %u (the Dovecot user), %n (the part before @), %d (the domain) and %% (a %)`
	const noList = `there is no list of users to run it for; write a handler for each user that needs it`
	const hw = "[[handler]]\nuser = \"*\"\nrun_as = \"%n\"\ncommand = \"true\"\n" // lines 1-4
	for _, tc := range []struct {
		name, src string
		want      string // the one error, rendered; testFile is prefixed
	}{
		// user
		{"unclosed class", "[[handler]]\nuser = \"[a-\"\nrun_as = \"%n\"\ncommand = \"true\"",
			`:2: handler[1].user: not a valid glob: "[a-" has a syntax error (the rules are path.Match's: * is any run of characters but /, ? one character, [a-z] one of a class, [^a-z] one not in it, \ quotes the next)`},
		{"trailing backslash", "[[handler]]\nuser = 'x\\'\ncommand = \"true\"",
			`:2: handler[1].user: not a valid glob: "x\\" has a syntax error`},
		{"glob in a later handler", h + "[[handler]]\nuser = \"[\"\ncommand = \"true\"",
			`:5: handler[2].user: not a valid glob: "["`},

		// periodic, run_at_start
		{"periodic on a pattern", hw + "periodic = \"1h\"",
			`:5: handler[1].periodic: not allowed on a wildcard handler (user = "*"): ` + noList},
		{"periodic on a pattern, literal run_as", "[[handler]]\nuser = \"*@x\"\nrun_as = \"vmail\"\ncommand = \"true\"\nperiodic = \"1h\"",
			`:5: handler[1].periodic: not allowed on a wildcard handler (user = "*@x"): ` + noList},
		{"run_at_start on a pattern", hw + "run_at_start = true",
			`:5: handler[1].run_at_start: not allowed on a wildcard handler (user = "*"): ` + noList},
		{"runatstart alias on a pattern", hw + "runatstart = true",
			`:5: handler[1].runatstart: not allowed on a wildcard handler (user = "*"): ` + noList},

		// run_as
		{"unknown variable", "[[handler]]\nuser = \"*\"\nrun_as = \"%x\"\ncommand = \"true\"",
			`:3: handler[1].run_as: "%x" uses %x, which is not a variable: ` + known},
		{"upper-case variable", "[[handler]]\nuser = \"*\"\nrun_as = \"u%N\"\ncommand = \"true\"",
			`:3: handler[1].run_as: "u%N" uses %N, which is not a variable: ` + known},
		{"multibyte after %", "[[handler]]\nuser = \"*\"\nrun_as = \"%é\"\ncommand = \"true\"",
			`:3: handler[1].run_as: "%é" uses %é, which is not a variable: ` + known},
		{"lone % at the end", "[[handler]]\nuser = \"*\"\nrun_as = \"%n%\"\ncommand = \"true\"",
			`:3: handler[1].run_as: "%n%" ends with a lone %, which is not a variable: ` + known},
		{"unknown variable, exact user", "[[handler]]\nuser = \"a\"\nrunas = \"%s\"\ncommand = \"true\"",
			`:3: handler[1].runas: "%s" uses %s, which is not a variable: ` + known},
		{"%% gives a %", "[[handler]]\nuser = \"*\"\nrun_as = \"%n%%\"\ncommand = \"true\"",
			`:3: handler[1].run_as: "%n%%" cannot name an account: for the user "alice@example.org" it gives "alice%", and an account name has no /, no % and no control character`},
		{"slash", "[[handler]]\nuser = \"*\"\nrun_as = \"%d/%n\"\ncommand = \"true\"",
			`:3: handler[1].run_as: "%d/%n" cannot name an account: for the user "alice@example.org" it gives "example.org/alice"`},
		{"colon", "[[handler]]\nuser = \"*\"\nrun_as = \"%n:x\"\ncommand = \"true\"",
			`:3: handler[1].run_as: "%n:x" is not a valid account name`},

		// min_uid
		{"min_uid 0", hw + "min_uid = 0", `:5: handler[1].min_uid: 0 is out of range (1 to 2147483647)`},
		{"min_uid negative", hw + "min_uid = -5", `:5: handler[1].min_uid: -5 is out of range (1 to 2147483647)`},
		{"min_uid too large", hw + "min_uid = 2147483648", `:5: handler[1].min_uid: 2147483648 is out of range (1 to 2147483647)`},
		{"min_uid string", hw + "min_uid = \"1000\"", `:5: handler[1].min_uid: expected an integer, found a string`},
		{"min_uid both spellings", hw + "min_uid = 1\nminuid = 2", `:6: handler[1].minuid: "minuid" is an alias of "min_uid", which is also set; keep only "min_uid"`},
		{"min_uid typo", hw + "min_id = 1", `:5: handler[1].min_id: unknown key (did you mean "min_uid"?)`},

		// command
		{"~/..", "[[handler]]\nuser = \"a\"\ncommand = \"~/../etc/x\"",
			`:3: handler[1].command: program "~/../etc/x": ~/ must be followed by a clean path inside the home, such as ~/.config/imserious/new-mail (no .., no //, no trailing /)`},
		{"~/ alone", "[[handler]]\nuser = \"a\"\ncommand = \"~/\"", `:3: handler[1].command: program "~/": ~/ must be followed by a clean path`},
		{"~/.", "[[handler]]\nuser = \"a\"\ncommand = [\"~/.\"]", `:3: handler[1].command: program "~/.": ~/ must be followed`},
		{"~// ", "[[handler]]\nuser = \"a\"\ncommand = \"~//bin/x\"", `:3: handler[1].command: program "~//bin/x": ~/ must be followed`},
		{"~/a//b", "[[handler]]\nuser = \"a\"\ncommand = \"~/a//b\"", `:3: handler[1].command: program "~/a//b": ~/ must be followed`},
		{"~/a/../b", "[[handler]]\nuser = \"a\"\ncommand = \"~/a/../b\"", `:3: handler[1].command: program "~/a/../b": ~/ must be followed`},
		{"~/a/", "[[handler]]\nuser = \"a\"\ncommand = \"~/a/ x\"", `:3: handler[1].command: program "~/a/": ~/ must be followed`},
		{"~/./a", "[[handler]]\nuser = \"a\"\ncommand = \"~/./a\"", `:3: handler[1].command: program "~/./a": ~/ must be followed`},

		// [privsep]
		{"exec_idle zero", "[privsep]\nexec_idle = \"0s\"", `:2: privsep.exec_idle: `},
		{"exec_idle negative", "[privsep]\nexec_idle = \"-1m\"", `:2: privsep.exec_idle: `},
		{"exec_idle integer", "[privsep]\nexec_idle = 600", `:2: privsep.exec_idle: expected a duration string such as "30s" or "1h 30m", found an integer`},
		{"exec_idle typo", "[privsep]\nexec_idel = \"1m\"", `:2: privsep.exec_idel: unknown key (did you mean "exec_idle"?)`},
		{"max_exec zero", "[privsep]\nmax_exec = 0", `:2: privsep.max_exec: 0 is out of range (1 to 100000)`},
		{"max_exec too large", "[privsep]\nmax_exec = 100001", `:2: privsep.max_exec: 100001 is out of range (1 to 100000)`},
		{"max_exec string", "[privsep]\nmax_exec = \"64\"", `:2: privsep.max_exec: expected an integer, found a string`},
		{"max_exec at the top level", "max_exec = 3", `:1: max_exec: unknown key ("max_exec" belongs in [privsep])`},
		{"min_uid in [privsep]", "[privsep]\nmin_uid = 3", `:2: privsep.min_uid: unknown key ("min_uid" belongs in [[handler]])`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			es := parseErrors(t, tc.src)
			if len(es) != 1 || !strings.HasPrefix(es[0].Error(), testFile+tc.want) {
				t.Errorf("got  %v\nwant %s", es, testFile+tc.want)
			}
		})
	}
}

// TestWildcardParseWarnings: min_uid where nothing it could apply to.
func TestWildcardParseWarnings(t *testing.T) {
	const why = `has no effect: min_uid applies only to a run_as with %-variables (run_as = "%n"); an account named outright is not subject to it`
	for _, tc := range []struct {
		name, src string
		want      string // the one warning; testFile is prefixed
	}{
		{"literal run_as", "[[handler]]\nuser = \"*\"\nrun_as = \"vmail\"\nmin_uid = 5000\ncommand = \"true\"", `:4: handler[1].min_uid: ` + why},
		{"no run_as", "[[handler]]\nuser = \"alice\"\nminuid = 5000\ncommand = \"true\"", `:3: handler[1].minuid: ` + why},
		{"pattern, no run_as", "[[handler]]\nuser = \"*\"\nmin_uid = 1000\ncommand = \"true\"", `:3: handler[1].min_uid: ` + why},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := mustParse(t, tc.src)
			if got := c.Warnings(); len(got) != 1 || got[0] != testFile+tc.want {
				t.Errorf("Warnings():\n got %q\nwant %q", got, testFile+tc.want)
			}
		})
	}
}

// TestPrivsepExec: exec_idle and max_exec, written and not.
func TestPrivsepExec(t *testing.T) {
	for _, tc := range []struct {
		src  string
		idle time.Duration
		max  int
	}{
		{"", DefaultExecIdle, DefaultMaxExec},
		{"[privsep]\nuser = \"x\"", 10 * time.Minute, 64},
		{"[privsep]\nexec_idle = \"30s\"", 30 * time.Second, 64},
		{"[privsep]\nexec_idle = \"1h 30m\"", 90 * time.Minute, 64},
		{"[privsep]\nexec_idle = \"2 days\"", 48 * time.Hour, 64},
		{"[privsep]\nmax_exec = 1", 10 * time.Minute, 1},
		{"[privsep]\nmax_exec = 100000\nexec_idle = \"1s\"", time.Second, 100000},
	} {
		c := mustParse(t, tc.src)
		if c.Privsep.ExecIdle != tc.idle || c.Privsep.MaxExec != tc.max {
			t.Errorf("%q: exec_idle %v, max_exec %d; want %v, %d", tc.src, c.Privsep.ExecIdle, c.Privsep.MaxExec, tc.idle, tc.max)
		}
	}
}
