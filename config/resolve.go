package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/imserious/imserious/event"
	"github.com/imserious/imserious/internal/intern"
	"github.com/imserious/imserious/privsep"
	"github.com/imserious/imserious/tlsreload"
)

// Resolve is the deep check behind -n and the last step before starting:
// it looks at the system the configuration names and loads the TLS pair.
// root says whether the daemon runs as root, which decides whose accounts
// commands run as (spec §5) and, with the environment LookupEnv reads, the
// default control socket (ResolveControl). It fills Handler.Account
// (left zero for a Dynamic handler: DynamicAccount names it per user),
// Handler.Path (as written for a "~/rel" program) and Control.Socket and
// returns Errors with every problem
// found, among them a command that someone other than root and its
// account could replace, or an explicit control socket whose directory
// is missing or whose path holds something else. It changes
// nothing on the system (a missing chroot is created by the daemon at
// start, not here).
//
// What is unsafe but works (a password or key others can read) is not an
// error: Resolve leaves it in Warnings, for -n and start-up to show.
func (c *Config) Resolve(root bool) error {
	c.warnings = nil
	r := &resolver{c: c, root: root, accounts: map[string]memo[privsep.Account]{}, commands: map[string]memo[string]{},
		trust: map[trustKey]string{}, warns: slices.Clone(c.parseWarnings)}
	if root {
		r.rootAccounts()
		r.privsepUser()
		r.chroot()
	} else {
		r.userAccounts()
	}
	// Equal command lines and run_as are kept once (Path is, through
	// commands): each handler's table was decoded on its own, and 10,000
	// copies of one line stay in the parent for its whole life.
	var in intern.Table
	for i := range c.Handlers {
		r.command(i)
		r.passEnv(i)
		h := &c.Handlers[i]
		h.Command, h.RunAs = in.Argv(h.Command), in.Str(h.RunAs)
	}
	if c.TLS != nil {
		r.tlsPair()
	}
	if c.Auth != nil && c.Auth.Pass != "" {
		r.passFile()
	}
	c.ResolveControl(root)
	r.controlSocket()
	sortErrors(r.warns)
	c.warnings = r.warns
	if len(r.errs) == 0 {
		return nil
	}
	sortErrors(r.errs)
	return r.errs
}

// ForgetSource drops what Parse kept of where each key was written,
// which only Resolve's messages use: with 10,000 handlers it is 5.6 MB
// that a daemon would otherwise keep for its whole life. A Resolve after
// it names keys without their lines.
func (c *Config) ForgetSource() { c.src = nil }

type resolver struct {
	c     *Config
	root  bool
	errs  Errors
	warns Errors

	// Lookups by name, each done once per Resolve: a site with 10,000
	// handlers over one account and one program pays one read of the
	// password and group databases and one search of CommandPath, not
	// 10,000 of each. The system is read once, so every handler naming an
	// account sees the same answer.
	accounts map[string]memo[privsep.Account]
	commands map[string]memo[string]
	trust    map[trustKey]string // untrusted's answer
}

type trustKey struct {
	path string
	uid  int
}

// memo is one remembered lookup, failures included.
type memo[T any] struct {
	val T
	err error
}

// systemAccount looks an account up in the system's database: it is
// privsep.LookupAccount, which tests replace to fake accounts. Resolve
// and DynamicAccount both look accounts up through it.
var systemAccount = privsep.LookupAccount

// lookupAccount is systemAccount, once per name.
func (r *resolver) lookupAccount(name string) (privsep.Account, error) {
	m, ok := r.accounts[name]
	if !ok {
		m.val, m.err = systemAccount(name)
		r.accounts[name] = m
	}
	a := m.val
	// Each handler gets its own Groups, so that changing one handler's
	// account can never change another's.
	a.Groups = slices.Clone(a.Groups)
	return a, m.err
}

// lookCommand is the package's lookCommand, once per name.
func (r *resolver) lookCommand(name string) (string, error) {
	m, ok := r.commands[name]
	if !ok {
		m.val, m.err = lookCommand(name)
		r.commands[name] = m
	}
	return m.val, m.err
}

func (r *resolver) errorf(path []string, cause error, format string, args ...any) {
	line, key := r.c.src.where(path)
	r.errs = append(r.errs, &Error{File: r.c.File, Line: line, Key: key, Msg: fmt.Sprintf(format, args...), err: cause})
}

func (r *resolver) warnf(path []string, format string, args ...any) {
	line, key := r.c.src.where(path)
	r.warns = append(r.warns, &Error{File: r.c.File, Line: line, Key: key, Msg: fmt.Sprintf(format, args...)})
}

// Warnings returns what Parse found valid but likely not meant (no
// handler at all, syslog keys with output to stdout), then what the last
// Resolve found unsafe but not wrong, one line each, located like errors
// and saying what to do:
//
//	/etc/imserious.toml:9: auth.pass: /etc/imserious.toml holds the password and is readable by others (mode 0644): run chmod 600 /etc/imserious.toml
func (c *Config) Warnings() []string {
	out := make([]string, len(c.warnings))
	for i, w := range c.warnings {
		out[i] = w.Error()
	}
	return out
}

func handlerPath(i int, key string) []string {
	return []string{"handler", indexKey(i), key}
}

// rootAccounts picks each handler's account when started as root.
//
// A wildcard handler has no user to name its account, so it needs run_as.
// A Dynamic one (a wildcard user and run_as with %-variables) gets no
// account here: which one it runs as depends on the event's user, and the
// parent decides that per user (DynamicAccount). A handler for one user
// whose run_as has %-variables is expanded for that user and resolved
// like a literal run_as, with min_uid besides.
//
// Security: this decides the uid and groups commands run as. uid 0 is
// refused here whatever the name, so a misconfiguration can never run a
// command as root; so is primary gid 0, which privsep.Drop refuses when the
// exec process starts: -n must not call OK what start-up would refuse.
func (r *resolver) rootAccounts() {
	for i := range r.c.Handlers {
		h := &r.c.Handlers[i]
		h.Account = privsep.Account{}
		if h.Pattern && h.RunAs == "" {
			r.errorf(handlerPath(i, "run_as"), nil, "a wildcard handler (user = %q) needs run_as, e.g. run_as = %q (the account named like the user's part before @) or a literal account such as %q (one account for every user)", h.User, "%n", "vmail")
			continue
		}
		if h.Dynamic {
			continue
		}
		name, key := h.RunAs, "run_as"
		if name == "" {
			name, key = h.User, "user"
		}
		// what names the account in messages: "alice", or for a run_as
		// with %-variables "alice" (run_as "%n" for "alice@example.org").
		what := fmt.Sprintf("%q", name)
		vars := HasRunAsVars(h.RunAs)
		if vars {
			var err error
			if name, err = ExpandRunAs(h.RunAs, h.User); err != nil {
				r.errorf(handlerPath(i, key), err, "%q: %v", h.RunAs, err) // Parse refuses it; a Config built by hand may not
				continue
			}
			what = fmt.Sprintf("%q (run_as %q for %q)", name, h.RunAs, h.User)
			if !ValidAccountName(name) {
				r.errorf(handlerPath(i, key), nil, "run_as %q gives %q for the user %q, which cannot name an account", h.RunAs, name, h.User)
				continue
			}
		}
		a, err := r.lookupAccount(name)
		switch {
		case errors.Is(err, privsep.ErrNoAccount) && key == "user":
			r.errorf(handlerPath(i, key), err, "handler user %q is not a system account; set run_as", name)
			continue
		case errors.Is(err, privsep.ErrNoAccount):
			r.errorf(handlerPath(i, key), err, "account %s does not exist", what)
			continue
		case err != nil:
			r.errorf(handlerPath(i, key), err, "cannot look up account %q: %v", name, err)
			continue
		case a.UID == 0:
			r.errorf(handlerPath(i, key), nil, "account %q has uid 0: commands never run as root; set run_as to an unprivileged account", name)
			continue
		case a.GID == 0:
			r.errorf(handlerPath(i, key), nil, "account %q has primary group 0 (root's): commands never run with root's group, and its exec process would refuse to start; %s, or set run_as to another account", name, regroupHint(name))
			continue
		case vars && a.UID < h.MinUID:
			r.errorf(handlerPath(i, key), nil, "account %s has uid %d, below min_uid %d: an account named through %%-variables must have a uid of at least min_uid; lower min_uid or name the account outright", what, a.UID, h.MinUID)
			continue
		}
		h.Account = a
	}
}

// userAccounts gives every handler the invoking user's account: without
// root there is no uid to change to, and a run_as naming someone else
// would silently not be honoured.
func (r *resolver) userAccounts() {
	cur, err := privsep.Current()
	if err != nil {
		r.errs = append(r.errs, &Error{File: r.c.File, Msg: fmt.Sprintf("cannot look up the invoking user: %v", err), err: err})
		return
	}
	for i := range r.c.Handlers {
		h := &r.c.Handlers[i]
		h.Account = privsep.Account{}
		if HasRunAsVars(h.RunAs) {
			r.errorf(handlerPath(i, "run_as"), nil, "not started as root, so commands run as the invoking user %q, and a run_as with %%-variables (%q) cannot give each user's account: remove run_as or start imserious as root", cur.Name, h.RunAs)
			continue
		}
		if h.RunAs != "" && h.RunAs != cur.Name {
			// Another name for the same uid is still the invoking user.
			if a, err := r.lookupAccount(h.RunAs); err != nil || a.UID != cur.UID {
				r.errorf(handlerPath(i, "run_as"), nil, "not started as root, so commands run as the invoking user %q, not %q: remove run_as or start imserious as root", cur.Name, h.RunAs)
				continue
			}
		}
		h.Account = cur
	}
}

// privsepUser checks the network process's account.
//
// Security: the network process faces the network; it must not be root and
// must not share a uid with any command's account, or a compromise of it
// could signal, trace or impersonate those processes.
func (r *resolver) privsepUser() {
	path := []string{"privsep", "user"}
	name := r.c.Privsep.User
	a, err := r.lookupAccount(name)
	switch {
	case errors.Is(err, privsep.ErrNoAccount):
		r.errorf(path, err, "account %q does not exist; create it, e.g. \"useradd -r -d /var/empty -s /usr/sbin/nologin %s\" (Linux) or \"useradd -d /var/empty -s /sbin/nologin %s\" (BSD)", name, name, name)
		return
	case err != nil:
		r.errorf(path, err, "cannot look up account %q: %v", name, err)
		return
	case a.UID == 0:
		r.errorf(path, nil, "account %q has uid 0: the network process must run unprivileged", name)
		return
	case a.GID == 0:
		r.errorf(path, nil, "account %q has primary group 0 (root's): the network process must run unprivileged, and would refuse to start; %s", name, regroupHint(name))
		return
	}
	seen := map[string]bool{}
	for i, h := range r.c.Handlers {
		if h.Account.Name == "" || seen[h.Account.Name] || h.Account.UID != a.UID {
			continue
		}
		seen[h.Account.Name] = true
		r.errorf(path, nil, "account %q (uid %d) is also the account of handler[%d] (%q): the network process must not share a uid with any command", name, a.UID, i+1, h.Account.Name)
	}
}

// regroupHint says how to give an account another primary group.
func regroupHint(name string) string {
	return fmt.Sprintf("give it an unprivileged primary group, e.g. \"usermod -g GROUP %s\" (Linux, OpenBSD) or \"pw usermod %s -g GROUP\" (FreeBSD)", name, name)
}

// chroot checks the network process's chroot directory if it exists.
//
// Security: the directory must be root's, not writable by anyone else and
// empty, so the confined process finds nothing to use and cannot plant
// anything there. A symbolic link is refused: what it points to could be
// swapped after this check.
func (r *resolver) chroot() {
	path := []string{"privsep", "chroot"}
	dir := r.c.Privsep.Chroot
	if !filepath.IsAbs(dir) {
		r.errorf(path, nil, "%q is not an absolute path", dir)
		return
	}
	// The rule the daemon applies when it opens the directory: every
	// component from / down root-owned, not writable by group or others,
	// no symbolic link, the directory itself empty (or missing: it is
	// created at start). One home for it, in privsep.
	if err := privsep.CheckChroot(dir); err != nil {
		r.errorf(path, err, "%v", err)
	}
}

// command resolves a handler's program to the absolute path exec will run.
// A program in the account's home ("~/rel") is kept as written: it is
// looked up, and checked, when it runs, by the exec process, as the
// account (users opt in by creating it, so a missing one is no error).
func (r *resolver) command(i int) {
	h := &r.c.Handlers[i]
	h.Path = ""
	if len(h.Command) == 0 {
		r.errorf(handlerPath(i, "command"), nil, "empty command")
		return
	}
	if _, ok := HomeRelative(h.Command[0]); ok {
		h.Path = h.Command[0]
		return
	}
	p, err := r.lookCommand(h.Command[0])
	if err != nil {
		r.errorf(handlerPath(i, "command"), err, "%v", err)
		return
	}
	h.Path = p
	// Security: whoever can replace the program runs code as the
	// account, so it must be root's or the account's alone (untrusted).
	// A Dynamic handler runs it as every account its run_as gives, so
	// root alone may be able to replace it: any one of those accounts
	// could otherwise run code as all the others. Another account that
	// did not resolve is reported already; whom to trust besides root is
	// not known without it.
	acct, as := h.Account, fmt.Sprintf("as %q", h.Account.Name)
	switch {
	case h.Dynamic && r.root:
		acct, as = privsep.Account{}, fmt.Sprintf("as every account run_as %q gives", h.RunAs)
	case h.Account.Name == "":
		return
	}
	k := trustKey{p, acct.UID}
	why, ok := r.trust[k]
	if !ok {
		why = untrusted(p, acct)
		r.trust[k] = why
	}
	if why != "" {
		r.errorf(handlerPath(i, "command"), nil, "command %s is not safe to run %s: %s", p, as, why)
	}
}

// LookupEnv reads the daemon's own environment for pass_env; tests replace
// it. It is os.LookupEnv, not os.Getenv, because a variable set to ""
// is passed and one that is unset is not.
var LookupEnv = os.LookupEnv

// MaxPassEnvValue bounds the value of a variable pass_env copies: the
// bound spec §4 sets for every value that comes from outside the
// configuration (event.MaxValue, 4 KiB). The exec process would take
// more (it refuses only an entry over the kernel's 128 KiB), but the
// handler and its whole environment travel to it in one privsep message
// of at most 128 KiB, so a value near that would fail at start with a
// message about the wire rather than this variable.
const MaxPassEnvValue = event.MaxValue

// passEnv copies the pass_env variables that are set into the handler's
// Env, the table the exec process gets. A value an earlier Resolve
// copied is dropped first (Parse refuses a pass_env name that env also
// sets), so a variable unset since then is not passed.
func (r *resolver) passEnv(i int) {
	h := &r.c.Handlers[i]
	for j, name := range h.PassEnv {
		delete(h.Env, name)
		v, ok := LookupEnv(name)
		if !ok {
			continue
		}
		if len(v) > MaxPassEnvValue {
			r.errorf([]string{"handler", indexKey(i), "pass_env", indexKey(j)}, nil,
				"%s in the daemon's environment is %d bytes, more than the %d a passed variable may hold", name, len(v), MaxPassEnvValue)
			continue
		}
		if h.Env == nil {
			h.Env = map[string]string{}
		}
		h.Env[name] = v
	}
}

// lookCommand finds name as exec will: an absolute path as is, a bare name
// in CommandPath (never the daemon's own PATH). A relative path with a
// slash is refused, as its meaning would depend on the working directory.
func lookCommand(name string) (string, error) {
	if filepath.IsAbs(name) {
		p := filepath.Clean(name)
		if err := checkExecutable(p); err != nil {
			return "", err
		}
		return p, nil
	}
	if strings.Contains(name, "/") {
		return "", fmt.Errorf("%q is a relative path: give an absolute path, or a bare name to search in %s", name, CommandPath)
	}
	for _, dir := range filepath.SplitList(CommandPath) {
		if !filepath.IsAbs(dir) {
			continue
		}
		p := filepath.Join(dir, name)
		if checkExecutable(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%q: no executable file of that name in %s", name, CommandPath)
}

func checkExecutable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return fmt.Errorf("command %s: %w", p, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("command %s: not a regular file", p)
	}
	if fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("command %s: not executable (mode %04o)", p, fi.Mode().Perm())
	}
	return nil
}

// tlsPair loads the certificate and key as the daemon will at start:
// readable regular files holding a complete chain and the key that
// matches it. The errors point at the key of the file at fault.
func (r *resolver) tlsPair() {
	certOK := r.tlsFile([]string{"tls", "cert"}, r.c.TLS.Cert)
	keyOK := r.tlsFile([]string{"tls", "key"}, r.c.TLS.Key)
	if keyOK {
		r.secretFile([]string{"tls", "key"}, r.c.TLS.Key, 0o044, "the private key")
	}
	if !certOK || !keyOK {
		return
	}
	pair, err := tlsreload.Load(r.c.TLS.Cert, r.c.TLS.Key)
	if err == nil {
		r.c.TLS.Pair = pair
		return
	}
	key := "cert"
	var fe *tlsreload.FileError
	if errors.As(err, &fe) && fe.Role == tlsreload.RoleKey {
		key = "key"
	}
	r.errorf([]string{"tls", key}, err, "%v", err)
}

// tlsFile checks that a certificate or key file can be read, so that
// each file's problem is reported at its own key.
func (r *resolver) tlsFile(path []string, name string) bool {
	// O_NONBLOCK: a FIFO named by mistake must not hang the check.
	f, err := os.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		r.errorf(path, err, "cannot read %s: %v", name, err)
		return false
	}
	defer f.Close()
	fi, err := f.Stat()
	switch {
	case err != nil:
		r.errorf(path, err, "cannot read %s: %v", name, err)
		return false
	case !fi.Mode().IsRegular():
		r.errorf(path, nil, "%s is not a regular file", name)
		return false
	}
	return true
}

// passFile warns when the configuration holding [auth] pass is readable by
// others. Group is let be: a root:wheel 0640 file is a common choice, and
// the group is the operator's.
func (r *resolver) passFile() {
	if r.c.File == "" {
		return
	}
	r.secretFile([]string{"auth", "pass"}, r.c.File, 0o004, "the password")
}

// secretFile warns when a file holding what is named is readable by the
// classes in mask (0o040 group, 0o004 others).
//
// Security: a warning, not an error, as the daemon still works and what
// to do is a chmod away; the message says which.
func (r *resolver) secretFile(path []string, name string, mask fs.FileMode, what string) {
	mode, who, err := exposed(name, mask)
	if err != nil || who == 0 {
		return // unreadable files are errors elsewhere, or not ours (Parse of bytes)
	}
	r.warnf(path, "%s holds %s and is readable by %s (mode %s): run chmod 600 %s", name, what, readers(who), octal(mode), name)
}
