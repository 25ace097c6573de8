// Command imseriousctl prints the Dovecot configuration matching an
// imserious configuration and tells which handlers a notification would
// trigger, without a running daemon. See imseriousctl(8).
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/imserious/imserious/config"
)

// Version is set at build time by the Makefile.
var Version = "devel"

// Exit statuses.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

const usageText = `usage: imseriousctl [-j] [-c file] [-s socket] status
       imseriousctl [-j] [-c file] [-s socket] reload
       imseriousctl [-j] [-c file] [-s socket] run user [event]
       imseriousctl [-c file] dovecot [2.3 | 2.4]
       imseriousctl [-c file] check [-i ip[:port]] file | -
       imseriousctl -h | -V
`

// ctl is one invocation. Everything it takes from the system is a field,
// so that tests run it in process, as any user, with fixed answers.
type ctl struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	// root says whether to resolve the configuration as the daemon
	// started as root would (accounts from run_as or user).
	root bool
	// hostname names this machine, for a wildcard listen address.
	hostname func() (string, error)
	// dovecotVersion asks the local Dovecot its version, for dovecot
	// without a version argument: the version it printed and the binary
	// that printed it.
	dovecotVersion func() (version, binary string, err error)
}

func main() {
	c := &ctl{
		stdin:          os.Stdin,
		stdout:         os.Stdout,
		stderr:         os.Stderr,
		root:           os.Geteuid() == 0,
		hostname:       os.Hostname,
		dovecotVersion: localDovecotVersion,
	}
	os.Exit(c.run(os.Args[1:]))
}

// usageError is a command line that cannot be run: usage on stderr, exit 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

// failure ends the invocation with status 1; its message, when not
// empty, goes to stderr as is.
type failure struct{ msg string }

func (e *failure) Error() string { return e.msg }

func (c *ctl) run(args []string) int {
	err := c.dispatch(args)
	var ue *usageError
	var fe *failure
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(c.stdout, usageText)
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(c.stderr, "imseriousctl: %s\n%s", ue.msg, usageText)
		return exitUsage
	case errors.As(err, &fe):
		if fe.msg != "" {
			fmt.Fprintln(c.stderr, fe.msg)
		}
		return exitError
	default:
		fmt.Fprintf(c.stderr, "imseriousctl: %v\n", err)
		return exitError
	}
}

func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported with the usage, once
	return fs
}

// parse parses a flag set, turning its errors into usage errors.
func parse(fs *flag.FlagSet, args []string) error {
	err := fs.Parse(args)
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return err
	}
	return &usageError{err.Error()}
}

func (c *ctl) dispatch(args []string) error {
	fs := newFlags("imseriousctl")
	file := fs.String("c", config.DefaultPath, "configuration file")
	help := fs.Bool("h", false, "print the usage")
	version := fs.Bool("V", false, "print the version")
	sock := fs.String("s", "", "control socket")
	asJSON := fs.Bool("j", false, "print JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case *help:
		return flag.ErrHelp
	case *version:
		if fs.NArg() > 0 {
			return usagef("-V takes no verb")
		}
		fmt.Fprintln(c.stdout, "imseriousctl", Version)
		return nil
	case fs.NArg() == 0:
		return usagef("no verb")
	}
	verb, rest := fs.Arg(0), fs.Args()[1:]
	switch verb {
	case "dovecot":
		return c.dovecot(*file, rest)
	case "check":
		return c.check(*file, rest)
	case "status":
		return c.status(*file, *sock, *asJSON, rest)
	case "reload":
		return c.reload(*file, *sock, *asJSON, rest)
	case "run":
		return c.runNow(*file, *sock, *asJSON, rest)
	default:
		return usagef("unknown verb %q", verb)
	}
}

// load reads and resolves the configuration as the daemon does (the same
// calls as imserious -n). A failure to load is returned with every error
// in the form -n prints; a failure to resolve is returned apart, with the
// configuration, for the verbs that can do without it.
func (c *ctl) load(file string) (cfg *config.Config, resolveErr error, err error) {
	cfg, err = config.Load(file)
	if err != nil {
		return nil, nil, &failure{err.Error()}
	}
	return cfg, cfg.Resolve(c.root), nil
}

// warn prints the configuration's warnings as imserious -n does.
func (c *ctl) warn(cfg *config.Config) {
	for _, w := range cfg.Warnings() {
		fmt.Fprintf(c.stderr, "warning: %s\n", w)
	}
}
