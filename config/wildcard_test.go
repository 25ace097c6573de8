package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imserious/imserious/privsep"
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

// fakeAccounts makes systemAccount, the lookup Resolve and DynamicAccount
// use, answer from accts for the test's duration: any other name does not
// exist, and a name in broken fails to look up.
func fakeAccounts(t *testing.T, broken []string, accts ...privsep.Account) {
	t.Helper()
	m := map[string]privsep.Account{}
	for _, a := range accts {
		if a.Groups == nil {
			a.Groups = []int{a.GID}
		}
		if a.Home == "" {
			a.Home = "/home/" + a.Name
		}
		m[a.Name] = a
	}
	old := systemAccount
	systemAccount = func(name string) (privsep.Account, error) {
		if slices.Contains(broken, name) {
			return privsep.Account{}, fmt.Errorf("account %q: %w", name, errBrokenDB)
		}
		a, ok := m[name]
		if !ok {
			return privsep.Account{}, fmt.Errorf("account %q: %w", name, privsep.ErrNoAccount)
		}
		a.Groups = slices.Clone(a.Groups)
		return a, nil
	}
	t.Cleanup(func() { systemAccount = old })
}

var errBrokenDB = errors.New("input/output error")

// testAccounts are the fake system accounts of the tests below.
var testAccounts = []privsep.Account{
	{Name: "alice", UID: 1001, GID: 1001},
	{Name: "carol@example.org", UID: 1003, GID: 1003},
	{Name: "bob", UID: 999, GID: 999},
	{Name: "vmail", UID: 500, GID: 500},
	{Name: "root", UID: 0, GID: 0},
	{Name: "gid0", UID: 1500, GID: 0},
	{Name: "_imse", UID: 2000, GID: 2000},
	{Name: "_imsealias", UID: 2000, GID: 2000},
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: commands run as the fake accounts must be in directories only root can write")
	}
}

// TestWildcardResolveRoot: as root, a Dynamic handler gets no account and
// is left to DynamicAccount; a ~/ program is kept as written; a handler
// for one user with %-variables is resolved for that user.
func TestWildcardResolveRoot(t *testing.T) {
	needRoot(t)
	bin, _ := testBin(t)
	fakeAccounts(t, nil, testAccounts...)
	c := mustParse(t, fmt.Sprintf(`[privsep]
user = "_imse"
chroot = %q
[[handler]]
user = "*"
run_as = "%%n"
command = "~/.config/imserious/new-mail --quiet"
[[handler]]
user = "*@example.org"
run_as = "%%u"
command = "mycmd"
[[handler]]
user = "*"
run_as = "vmail"
command = "mycmd"
[[handler]]
user = "alice@example.org"
run_as = "%%n"
command = "mycmd"
[[handler]]
user = "bob"
run_as = "%%u"
min_uid = 500
command = "~/hook"
[[handler]]
user = "vmail"
command = "~/hook"
`, filepath.Join(safeDir(t), "missing")))
	if err := c.Resolve(true); err != nil {
		t.Fatalf("Resolve(true):\n%v", err)
	}
	if w := c.Warnings(); len(w) != 0 {
		t.Errorf("Warnings() = %q", w)
	}
	for i, want := range []struct {
		account string
		uid     int
		path    string
		summary string
	}{
		{"", 0, "~/.config/imserious/new-mail", `"%n" (per user, on demand, uid at least 1000)`},
		{"", 0, filepath.Join(bin, "mycmd"), `"%u" (per user, on demand, uid at least 1000)`},
		{"vmail", 500, filepath.Join(bin, "mycmd"), "vmail (uid 500, gid 500)"},
		{"alice", 1001, filepath.Join(bin, "mycmd"), "alice (uid 1001, gid 1001)"},
		{"bob", 999, "~/hook", "bob (uid 999, gid 999)"},
		{"vmail", 500, "~/hook", "vmail (uid 500, gid 500)"},
	} {
		h := &c.Handlers[i]
		if h.Account.Name != want.account || h.Account.UID != want.uid || h.Path != want.path {
			t.Errorf("handler[%d]: account %q uid %d path %q, want %q %d %q", i+1, h.Account.Name, h.Account.UID, h.Path, want.account, want.uid, want.path)
		}
		if s := h.AccountSummary(); s != want.summary {
			t.Errorf("handler[%d].AccountSummary() = %q, want %q", i+1, s, want.summary)
		}
	}
	var names []string
	for _, a := range c.Accounts() {
		names = append(names, a.Name)
	}
	if want := []string{"vmail", "alice", "bob"}; !slices.Equal(names, want) {
		t.Errorf("Accounts() = %q, want %q: Dynamic handlers have none", names, want)
	}
	// What a reload compares: the same file resolves to the Same handlers.
	again := mustParse(t, "")
	*again = *c
	again.Handlers = slices.Clone(c.Handlers)
	if err := again.Resolve(true); err != nil {
		t.Fatal(err)
	}
	for i := range c.Handlers {
		if !c.Handlers[i].Same(&again.Handlers[i]) {
			t.Errorf("handler[%d] is not Same after a second Resolve", i+1)
		}
	}
}

// TestWildcardResolveRootErrors: every problem a wildcard handler or a
// run_as with %-variables can have at load, as root, each at its line
// and key.
func TestWildcardResolveRootErrors(t *testing.T) {
	needRoot(t)
	testBin(t)
	fakeAccounts(t, []string{"broken"}, testAccounts...)
	alices := safeDir(t) // alice's own directory: fine for alice, not for everyone
	if err := os.WriteFile(filepath.Join(alices, "hook"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{alices, filepath.Join(alices, "hook")} {
		if err := os.Chown(p, 1001, 1001); err != nil {
			t.Fatal(err)
		}
	}
	hook := filepath.Join(alices, "hook")
	c := mustParse(t, fmt.Sprintf(`[privsep]
user = "_imse"
chroot = %q
[[handler]]
user = "*"
command = "mycmd"
[[handler]]
user = "bob@example.org"
run_as = "%%n"
command = "mycmd"
[[handler]]
user = "ghost@example.org"
run_as = "%%n"
command = "mycmd"
[[handler]]
user = "root@example.org"
run_as = "%%n"
command = "mycmd"
[[handler]]
user = "nodomain"
run_as = "%%d"
command = "mycmd"
[[handler]]
user = "*"
run_as = "%%n"
command = %q
[[handler]]
user = "alice"
command = %q
[[handler]]
user = "_imsealias@example.org"
run_as = "%%n"
min_uid = 2000
command = "~/x"
[[handler]]
user = "broken@example.org"
runas = "%%n"
command = "~/x"
[[handler]]
user = "gid0@x"
run_as = "%%n"
command = "~/x"
[[handler]]
user = "*@x"
command = "~/x"
`, filepath.Join(safeDir(t), "missing"), hook, hook))
	checkErrors(t, resolveErrors(t, c, true), []wantErr{
		{2, "privsep.user", `account "_imse" (uid 2000) is also the account of handler[8] ("_imsealias")`},
		{4, "handler[1].run_as", `a wildcard handler (user = "*") needs run_as, e.g. run_as = "%n" (the account named like the user's part before @) or a literal account such as "vmail" (one account for every user)`},
		{9, "handler[2].run_as", `account "bob" (run_as "%n" for "bob@example.org") has uid 999, below min_uid 1000: an account named through %-variables must have a uid of at least min_uid; lower min_uid or name the account outright`},
		{13, "handler[3].run_as", `account "ghost" (run_as "%n" for "ghost@example.org") does not exist`},
		{17, "handler[4].run_as", `account "root" has uid 0: commands never run as root`},
		{21, "handler[5].run_as", `run_as "%d" gives "" for the user "nodomain", which cannot name an account`},
		{26, "handler[6].command", fmt.Sprintf(`command %s is not safe to run as every account run_as "%%n" gives: %s is owned by uid 1001, not root: run chown root %s`, hook, alices, alices)},
		{37, "handler[9].runas", `cannot look up account "broken": account "broken": input/output error`},
		{41, "handler[10].run_as", `account "gid0" has primary group 0 (root's)`},
		{43, "handler[11].run_as", `a wildcard handler (user = "*@x") needs run_as`},
	})
	if err := resolveErrors(t, c, true); !errors.Is(err, privsep.ErrNoAccount) {
		t.Errorf("a missing account does not unwrap to privsep.ErrNoAccount: %v", err)
	}
	for _, i := range []int{0, 1, 2, 3, 4, 5, 8, 9, 10} {
		if c.Handlers[i].Account.Name != "" {
			t.Errorf("refused handler[%d] got account %q", i+1, c.Handlers[i].Account.Name)
		}
	}
	if a := c.Handlers[6].Account; a.Name != "alice" {
		t.Errorf("handler[7] (alice's own program, run as alice) got account %q", a.Name)
	}
}

// TestWildcardResolveNotRoot: without root, a run_as with %-variables is an
// error (there is no uid to change to); a wildcard handler without run_as
// runs as the invoking user, and a ~/ program in that user's home.
func TestWildcardResolveNotRoot(t *testing.T) {
	testBin(t)
	cur, err := privsep.Current()
	if err != nil {
		t.Fatal(err)
	}
	alices := safeDir(t) // a program only root may own for a Dynamic handler: not checked without root
	c := mustParse(t, fmt.Sprintf(`[[handler]]
user = "*"
command = "~/hook"
[[handler]]
user = "*"
run_as = "%%n"
command = "mycmd"
[[handler]]
user = "alice@example.org"
run_as = "x%%u"
command = %q
`, filepath.Join(alices, "nothing")))
	checkErrors(t, resolveErrors(t, c, false), []wantErr{
		{6, "handler[2].run_as", fmt.Sprintf(`not started as root, so commands run as the invoking user %q, and a run_as with %%-variables ("%%n") cannot give each user's account: remove run_as or start imserious as root`, cur.Name)},
		{10, "handler[3].run_as", `not started as root, so commands run as the invoking user`},
		{11, "handler[3].command", "no such file or directory"},
	})
	if h := c.Handlers[0]; h.Account.UID != cur.UID || h.Path != "~/hook" {
		t.Errorf("handler[1]: account %+v path %q, want the invoking user and ~/hook", h.Account, h.Path)
	}
	if a := c.Accounts(); len(a) != 1 || a[0].Name != cur.Name {
		t.Errorf("Accounts() = %+v, want only %q", a, cur.Name)
	}
}

// TestDynamicAccount: every rule the parent applies before it starts an
// exec process for (handler, user).
func TestDynamicAccount(t *testing.T) {
	fakeAccounts(t, []string{"broken"}, testAccounts...)
	c := mustParse(t, `[privsep]
user = "_imse"
[[handler]]
user = "*@example.org"
run_as = "%n"
command = "~/hook"
[[handler]]
user = "*"
run_as = "%u"
min_uid = 500
command = "~/hook"
[[handler]]
user = "*"
run_as = "vmail"
command = "~/hook"
[[handler]]
user = "alice@example.org"
run_as = "%n"
command = "~/hook"
[[handler]]
user = "*"
run_as = "%d"
min_uid = 1
command = "~/hook"
[[handler]]
user = "*/*"
run_as = "%u"
command = "~/hook"
`)
	bad := c.Handlers[0]
	bad.RunAs = "%x" // Parse refuses it; a handler built by hand may not
	gone := *c
	gone.Privsep.User = "_gone"
	brokenPS := *c
	brokenPS.Privsep.User = "broken"
	const (
		ok = iota
		refusedErr
		missing
		lookupErr
	)
	for _, tc := range []struct {
		name string
		c    *Config
		h    *Handler
		user string
		want string // account name, or the error's message
		kind int
	}{
		{"%n", c, &c.Handlers[0], "alice@example.org", "alice", ok},
		{"%u", c, &c.Handlers[1], "carol@example.org", "carol@example.org", ok},
		{"min_uid lowered", c, &c.Handlers[1], "bob", "bob", ok},
		{"min_uid equal", c, &c.Handlers[1], "vmail", "vmail", ok},

		{"nil handler", c, nil, "alice@example.org", "no handler", refusedErr},
		{"literal run_as", c, &c.Handlers[2], "alice", `handler[3] (line 12) has no per-user account: its user "*" is not a glob or its run_as "vmail" has no %-variables`, refusedErr},
		{"exact user", c, &c.Handlers[3], "alice@example.org", `handler[4] (line 16) has no per-user account: its user "alice@example.org" is not a glob or its run_as "%n" has no %-variables`, refusedErr},
		{"empty user", c, &c.Handlers[1], "", `user "" is not a valid Dovecot user (empty, or a control character)`, refusedErr},
		{"control character", c, &c.Handlers[1], "alice\x1b[2J", `user "alice\x1b[2J" is not a valid Dovecot user (empty, or a control character)`, refusedErr},
		{"no match", c, &c.Handlers[0], "alice@example.net", `user "alice@example.net" does not match handler[1]'s user "*@example.org"`, refusedErr},
		{"no match, case", c, &c.Handlers[0], "alice@EXAMPLE.org", `user "alice@EXAMPLE.org" does not match handler[1]'s user "*@example.org"`, refusedErr},
		{"bad variable", c, &bad, "alice@example.org", `run_as "%x": unknown variable: run_as knows %u`, refusedErr},
		{"empty domain", c, &c.Handlers[4], "alice", `run_as "%d" gives "" for the user "alice", which cannot name an account`, refusedErr},
		{"slash", c, &c.Handlers[5], "../etc", `run_as "%u" gives "../etc" for the user "../etc", which cannot name an account`, refusedErr},
		{"* does not match /", c, &c.Handlers[1], "../etc", `user "../etc" does not match handler[2]'s user "*"`, refusedErr},
		{"dot dot", c, &c.Handlers[0], "..@example.org", `run_as "%n" gives ".." for the user "..@example.org", which cannot name an account`, refusedErr},
		{"percent", c, &c.Handlers[1], "a%b", `run_as "%u" gives "a%b" for the user "a%b", which cannot name an account`, refusedErr},
		{"colon", c, &c.Handlers[1], "a:b", `run_as "%u" gives "a:b" for the user "a:b", which cannot name an account`, refusedErr},
		{"root", c, &c.Handlers[0], "root@example.org", `account "root" has uid 0: commands never run as root`, refusedErr},
		{"gid 0", c, &c.Handlers[0], "gid0@example.org", `account "gid0" has primary group 0 (root's): commands never run with root's group`, refusedErr},
		{"below min_uid", c, &c.Handlers[0], "bob@example.org", `account "bob" has uid 999, below min_uid 1000`, refusedErr},
		{"%d, min_uid 1", c, &c.Handlers[4], "x@vmail", "vmail", ok},
		{"privsep user by name", c, &c.Handlers[0], "_imse@example.org", `account "_imse" is the [privsep] user, which runs the network process: commands never run as it`, refusedErr},
		{"privsep user by uid", c, &c.Handlers[0], "_imsealias@example.org", `account "_imsealias" has uid 2000, the uid of the [privsep] user "_imse", which runs the network process: commands never run as it`, refusedErr},
		{"privsep user missing", &gone, &gone.Handlers[0], "alice@example.org", `cannot check account "alice" against the [privsep] user "_gone": no such account`, refusedErr},
		{"privsep user lookup fails", &brokenPS, &brokenPS.Handlers[0], "alice@example.org", `cannot check account "alice" against the [privsep] user "broken": input/output error`, refusedErr},

		{"missing", c, &c.Handlers[0], "ghost@example.org", `account "ghost" (run_as "%n" for "ghost@example.org") does not exist`, missing},
		{"lookup fails", c, &c.Handlers[0], "broken@example.org", `cannot look up account "broken" (run_as "%n" for "broken@example.org"): input/output error`, lookupErr},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := tc.c.DynamicAccount(tc.h, tc.user)
			if tc.kind == ok {
				if err != nil || a.Name != tc.want {
					t.Fatalf("DynamicAccount = %+v, %v; want account %q", a, err, tc.want)
				}
				want := testAccounts[slices.IndexFunc(testAccounts, func(x privsep.Account) bool { return x.Name == tc.want })]
				if a.UID != want.UID || a.GID != want.GID || a.Home != "/home/"+want.Name || !slices.Equal(a.Groups, []int{want.GID}) {
					t.Errorf("DynamicAccount = %+v, want %+v", a, want)
				}
				return
			}
			if err == nil {
				t.Fatalf("DynamicAccount = %+v, want an error %q", a, tc.want)
			}
			if a.Name != "" || a.UID != 0 {
				t.Errorf("an error came with account %+v", a)
			}
			if !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("error\n got %q\nwant %q", err, tc.want)
			}
			if got := errors.Is(err, ErrAccountRefused); got != (tc.kind == refusedErr) {
				t.Errorf("errors.Is(err, ErrAccountRefused) = %v", got)
			}
			if got := errors.Is(err, privsep.ErrNoAccount); got != (tc.kind == missing || tc.name == "privsep user missing") {
				t.Errorf("errors.Is(err, privsep.ErrNoAccount) = %v", got)
			}
			if got := errors.Is(err, errBrokenDB); got != (tc.kind == lookupErr || tc.name == "privsep user lookup fails") {
				t.Errorf("errors.Is(err, errBrokenDB) = %v", got)
			}
		})
	}
	if _, err := c.DynamicAccount(&bad, "alice@example.org"); !errors.Is(err, ErrRunAsVar) {
		t.Errorf("a bad variable does not unwrap to ErrRunAsVar: %v", err)
	}
}

// TestSample: the shipped sample loads as is, and so does each of its
// commented tables ("# [privsep]", "# [[handler]]", ... down to the next
// blank line) uncommented on its own, the wildcard examples among them.
func TestSample(t *testing.T) {
	data, err := os.ReadFile("../etc/imserious.toml.sample")
	if err != nil {
		t.Skipf("no sample: %v", err)
	}
	if _, err := Parse("imserious.toml.sample", data); err != nil {
		t.Errorf("the sample as shipped:\n%v", err)
	}
	key := regexp.MustCompile(`^# ([a-z_]+ = |\[)`)
	var blocks []string
	in := false
	for _, l := range strings.Split(string(data), "\n") {
		switch {
		case strings.HasPrefix(l, "# ["):
			blocks, in = append(blocks, ""), true
		case !strings.HasPrefix(l, "#"):
			in = false
		}
		if in && key.MatchString(l) {
			blocks[len(blocks)-1] += l[2:] + "\n"
		}
	}
	dynamic := 0
	for _, b := range blocks {
		c, err := Parse("imserious.toml.sample", []byte(b))
		if err != nil {
			t.Errorf("the sample's commented\n%s\ndoes not load:\n%v", b, err)
			continue
		}
		for _, h := range c.Handlers {
			if h.Dynamic && strings.HasPrefix(h.Command[0], HomeCommandPrefix) {
				dynamic++
			}
		}
	}
	if len(blocks) < 6 || dynamic != 1 {
		t.Errorf("%d commented tables, %d of them a Dynamic handler with a ~/ program; want at least 6 and 1:\n%q", len(blocks), dynamic, blocks)
	}
}
