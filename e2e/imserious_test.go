//go:build e2e && linux

package e2e

import (
	"fmt"
	"strings"
	"testing"

	"github.com/imserious/imserious/internal/daemontest"
)

// The Basic credentials Dovecot sends, with the characters that must be
// percent-encoded in the URL's userinfo (the user cannot have ':'), and
// '%', which Dovecot 2.3 expands besides (2.4 does not, and refuses a
// doubled one); the endpoint is not the default. imseriousctl prints the
// URL Dovecot gets.
const (
	authUser = "push@dove"
	authPass = "p@ss:w%25rd 50%/x"
	// authURLInfo is user:pass as it goes into the URL, written out by
	// hand: imseriousctl's URL must be this (for 2.3 with every %
	// doubled, for 2.4 as it is).
	authURLInfo = "push%40dove:p%40ss%3Aw%2525rd%2050%25%2Fx"
	endpoint    = "/imserious/dovecot"
)

// waitLimit bounds every wait: a failure deadline, not a
// synchronisation.
const waitLimit = daemontest.WaitLimit

// handlerConf is one [[handler]] of the configuration under test.
type handlerConf struct {
	user, runAs string
}

// recordCommand is the command every handler runs: it prints its uid,
// its arguments and its environment, one per line, to stdout, which the
// exec process logs line by line as "command output". The arguments test
// the shell-like splitting of the command line (quotes, a space, an
// apostrophe); values cannot contain newlines, since the daemon turns
// control characters into spaces.
const recordCommand = `/bin/sh -c 'echo "uid=$(id -u)"; for a; do echo "arg=$a"; done; env | sed "s/^/env=/"' imse-e2e "two words" "it's"`

// recordArgs is what recordCommand prints as its arguments.
var recordArgs = []string{"two words", "it's"}

// daemonConf is the configuration of an imserious under test: loopback,
// a free port (fixed in the file: the Dovecot configuration printed from
// it names the port), the endpoint, Basic auth, JSON log at debug level,
// the network process confined to a fresh empty directory. extra is more
// TOML after listen (allow, then tables such as [tls]).
func daemonConf(t *testing.T, extra string, handlers ...handlerConf) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "listen = \"127.0.0.1:%d\"\nendpoint = %q\n", freePort(t), endpoint)
	b.WriteString(extra)
	fmt.Fprintf(&b, "\n[auth]\nuser = %q\npass = %q\n", authUser, authPass)
	b.WriteString("\n" + daemontest.LogTOML)
	b.WriteString("\n" + daemontest.PrivsepTOML(t))
	for _, h := range handlers {
		// A burst allowance larger than the suite's deliveries: every
		// delivery the suite waits for gets its own run.
		fmt.Fprintf(&b, "\n[[handler]]\nuser = %q\nrun_as = %q\nevent = \"MessageNew\"\ncommand = %q\nlimit_burst = 1000\nlimit_period = \"1s\"\ncommand_timeout = \"30s\"\n",
			h.user, h.runAs, recordCommand)
	}
	return b.String()
}

// accepted matches the network process's line for a valid notification
// that reached a handler of user.
func accepted(user string) func(daemontest.Line) bool {
	return func(l daemontest.Line) bool { return l.Str("msg") == "event accepted" && l.Str("user") == user }
}

// run is one command run as the exec process logged it.
type run struct {
	proc    string // the exec process that logged it, exec[ACCOUNT]
	handler int
	pid     int
	trigger string
	count   int
	uid     string
	args    []string
	env     map[string]string
	status  string // the exit line: "command exited" with status 0, or what else
}

// nextRun waits for the next command of user's handler started at index
// from or later, then for its end, and returns what it reported.
func nextRun(t *testing.T, d *daemontest.Daemon, from int, user string) run {
	t.Helper()
	st := d.WaitFrom(t, from, "command started for "+user, func(l daemontest.Line) bool {
		return l.Str("msg") == "command started" && l.Str("user") == user
	})
	pid, _ := st.Num("pid")
	r := run{proc: st.Str("proc"), pid: pid, trigger: st.Str("trigger"), env: map[string]string{}}
	r.handler, _ = st.Num("handler")
	r.count, _ = st.Num("count")
	end := d.WaitFrom(t, from, fmt.Sprintf("end of command pid %d", pid), func(l daemontest.Line) bool {
		p, _ := l.Num("pid")
		m := l.Str("msg")
		return p == pid && l.Str("proc") == r.proc && strings.HasPrefix(m, "command ") &&
			m != "command started" && m != "command output"
	})
	if s, ok := end.Num("status"); end.Str("msg") == "command exited" && ok && s == 0 {
		r.status = "ok"
	} else {
		r.status = fmt.Sprint(end)
	}
	// The exec process logs a run's output before its end.
	for _, l := range d.Since(from, func(l daemontest.Line) bool {
		p, _ := l.Num("pid")
		return l.Str("msg") == "command output" && p == pid && l.Str("proc") == r.proc
	}) {
		k, v, _ := strings.Cut(l.Str("line"), "=")
		switch k {
		case "uid":
			r.uid = v
		case "arg":
			r.args = append(r.args, v)
		case "env":
			name, val, _ := strings.Cut(v, "=")
			r.env[name] = val
		}
	}
	return r
}
