package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/imserious/imserious/config"
	"github.com/imserious/imserious/control"
)

// ctlTimeout bounds one exchange with the daemon; a reload may bind and
// start processes.
const ctlTimeout = 40 * time.Second

// socketPath is the control socket to use: -s, else [control] socket of
// the configuration file, else the daemon's default. A file that does not
// load gives the default: a reload's errors come from the daemon anyway.
func (c *ctl) socketPath(file, flagPath string) (string, error) {
	if flagPath != "" {
		return flagPath, nil
	}
	path := config.DefaultControlSocket(c.root, os.Getenv)
	if cfg, err := config.Load(file); err == nil && cfg.Control.Explicit {
		path = cfg.Control.Socket
	}
	if path == "" {
		return "", &failure{fmt.Sprintf("imseriousctl: no control socket: %s turns it off (or XDG_RUNTIME_DIR is unset); give one with -s", file)}
	}
	return path, nil
}

// remote sends one request to the daemon.
func (c *ctl) remote(file, sock string, req control.Request) (*control.Response, error) {
	path, err := c.socketPath(file, sock)
	if err != nil {
		return nil, err
	}
	resp, err := control.Do(path, req, ctlTimeout)
	if err != nil {
		return nil, &failure{"imseriousctl: " + err.Error()}
	}
	return resp, nil
}

func (c *ctl) status(file, sock string, asJSON bool, args []string) error {
	if len(args) > 0 {
		return usagef("status takes no arguments")
	}
	resp, err := c.remote(file, sock, control.Request{Verb: control.VerbStatus})
	if err != nil {
		return err
	}
	if resp.Status == nil {
		return &failure{"imseriousctl: status: " + orDefault(resp.Error, "no status in the answer")}
	}
	if asJSON {
		b, err := json.MarshalIndent(resp.Status, "", "  ")
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "%s\n", b)
		return nil
	}
	for _, line := range resp.Status.Lines(time.Now()) {
		fmt.Fprintln(c.stdout, line)
	}
	return nil
}

func (c *ctl) reload(file, sock string, asJSON bool, args []string) error {
	if len(args) > 0 {
		return usagef("reload takes no arguments")
	}
	resp, err := c.remote(file, sock, control.Request{Verb: control.VerbReload})
	if err != nil {
		return err
	}
	if asJSON {
		b, _ := json.MarshalIndent(resp, "", "  ")
		fmt.Fprintf(c.stdout, "%s\n", b)
	}
	if !resp.OK || resp.Reload == nil {
		var b strings.Builder
		for _, e := range resp.Errors {
			b.WriteString(e + "\n")
		}
		b.WriteString("imseriousctl: " + orDefault(resp.Error, "reload failed"))
		return &failure{b.String()}
	}
	if !asJSON {
		r := resp.Reload
		fmt.Fprintf(c.stdout, "reloaded: %d added, %d changed, %d removed, %d unchanged\n", r.Added, r.Changed, r.Removed, r.Unchanged)
	}
	return nil
}

func (c *ctl) runNow(file, sock string, asJSON bool, args []string) error {
	if len(args) < 1 || len(args) > 2 {
		return usagef("run takes a user and, optionally, an event")
	}
	req := control.Request{Verb: control.VerbRun, User: args[0]}
	if len(args) == 2 {
		req.Event = args[1]
	}
	resp, err := c.remote(file, sock, req)
	if err != nil {
		return err
	}
	if asJSON {
		b, _ := json.MarshalIndent(resp, "", "  ")
		fmt.Fprintf(c.stdout, "%s\n", b)
	}
	n := 0
	if resp.Run != nil {
		n = resp.Run.Handlers
	}
	if !asJSON && n > 0 {
		fmt.Fprintf(c.stdout, "started %d %s for %s (IMSE_TRIGGER=manual, through the delay)\n", n, plural(n, "handler"), req.User)
	}
	if !resp.OK || resp.Error != "" {
		return &failure{"imseriousctl: run: " + orDefault(resp.Error, "nothing started")}
	}
	return nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}
