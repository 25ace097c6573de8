package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"strings"

	"github.com/imserious/imserious/config"
	"github.com/imserious/imserious/event"
	"github.com/imserious/imserious/exec"
	"github.com/imserious/imserious/internal/prefix"
	"github.com/imserious/imserious/listener"
)

// defaultPeer is the peer check pretends the body came from: Dovecot on
// the same machine, port unknown.
const defaultPeer = "127.0.0.1:0"

func (c *ctl) check(file string, args []string) error {
	fs := newFlags("check")
	peerFlag := fs.String("i", defaultPeer, "the peer address")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("check takes one file, or - for standard input")
	}
	peer, err := parsePeer(*peerFlag)
	if err != nil {
		return usagef("-i %s: %v", *peerFlag, err)
	}
	cfg, resolveErr, err := c.load(file)
	if err != nil {
		return err
	}
	if resolveErr != nil {
		// Without accounts there is no environment to show.
		return &failure{resolveErr.Error()}
	}
	c.warn(cfg)
	name := fs.Arg(0)
	body, err := c.readBody(name)
	if err != nil {
		return err
	}
	return c.report(cfg, peer, name, body)
}

// parsePeer reads IP or IP:port ([IPv6]:port, or a bare IPv6 address),
// unmapped as the network process sees peers.
func parsePeer(s string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		a, aerr := netip.ParseAddr(strings.Trim(s, "[]"))
		if aerr != nil {
			return netip.AddrPort{}, errors.New("want IP or IP:port ([IPv6]:port)")
		}
		ap = netip.AddrPortFrom(a, 0)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// refused is a body the daemon would not accept: the status it would
// answer (0: the connection is closed unanswered) and the reason it would
// log.
type refused struct {
	status int
	reason string
}

func (r *refused) Error() string {
	if r.status == 0 {
		return "imseriousctl: refused: the daemon closes the connection unanswered: " + r.reason
	}
	return fmt.Sprintf("imseriousctl: refused: the daemon answers %d %s: %s", r.status, http.StatusText(r.status), r.reason)
}

// readBody reads the notification body, at most listener.MaxBody bytes,
// as the daemon does.
func (c *ctl) readBody(name string) ([]byte, error) {
	r, size := c.stdin, int64(-1)
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			size = fi.Size()
		}
		r = f
	}
	body, err := io.ReadAll(io.LimitReader(r, listener.MaxBody+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	if len(body) > listener.MaxBody {
		// The daemon's own words, for a declared length and for a chunked
		// body.
		if size >= 0 {
			return nil, &failure{(&refused{http.StatusRequestEntityTooLarge, fmt.Sprintf("body of %d bytes is over 64 KiB", size)}).Error()}
		}
		return nil, &failure{(&refused{http.StatusRequestEntityTooLarge, "chunked body over 64 KiB"}).Error()}
	}
	return body, nil
}

// report prints what the daemon would do with body from peer.
func (c *ctl) report(cfg *config.Config, peer netip.AddrPort, name string, body []byte) error {
	// The allow list decides at accept, before a byte is read.
	if len(cfg.Allow) > 0 && !prefix.Contains(prefix.Normalize(cfg.Allow), peer.Addr()) {
		return &failure{(&refused{0, fmt.Sprintf("peer %s not in allow list", peer.Addr())}).Error()}
	}
	ev, err := event.Decode(body)
	if err != nil {
		r := &refused{http.StatusBadRequest, err.Error()}
		var de *event.Error
		if errors.As(err, &de) {
			r.reason = de.Reason
			if de.Status == http.StatusUnprocessableEntity {
				r.status = de.Status
			}
		}
		return &failure{r.Error()}
	}

	w := c.stdout
	if name == "-" {
		name = "standard input"
	}
	fmt.Fprintf(w, "%s: event %s for user %q from %s: accepted (200)\n", name, ev.Event, ev.User, peer)
	var triggered int
	var wontStart []string
	for i := range cfg.Handlers {
		h := &cfg.Handlers[i]
		if !exec.Matches(h, &ev, peer) {
			continue
		}
		triggered++
		var refusal error
		if h.Dynamic {
			// The account the parent would start an exec process for.
			a, err := cfg.DynamicAccount(h, ev.User)
			hc := *h
			hc.Account, refusal = a, err
			h = &hc
		}
		env, err := exec.EventEnv(h, &ev, peer)
		fmt.Fprintf(w, "\nhandler[%d], line %d: triggered\n", i+1, h.Line)
		fmt.Fprintf(w, "  user     %s\n", h.User)
		fmt.Fprintf(w, "  event    %s\n", h.Event)
		fmt.Fprintf(w, "  command  %s\n", quoteArgs(h.Command))
		fmt.Fprintf(w, "  path     %s\n", h.Path)
		switch {
		case refusal != nil:
			fmt.Fprintf(w, "  run_as   %q: no account, nothing runs: %v\n", h.RunAs, refusal)
			wontStart = append(wontStart, fmt.Sprintf("handler[%d]", i+1))
			continue
		case h.Dynamic:
			fmt.Fprintf(w, "  run_as   %s (uid %d, gid %d; from %q, on demand)\n", h.Account.Name, h.Account.UID, h.Account.GID, h.RunAs)
		default:
			fmt.Fprintf(w, "  run_as   %s (uid %d, gid %d)\n", h.Account.Name, h.Account.UID, h.Account.GID)
		}
		if h.Delay > 0 {
			fmt.Fprintf(w, "  delay    %v\n", h.Delay)
		}
		if len(h.PassEnv) > 0 {
			// Resolve copied them from this process's environment: the
			// daemon's, which its service manager gives it, may differ.
			fmt.Fprintf(w, "  pass_env %s (the values of imseriousctl's environment; the daemon passes those of its own)\n", strings.Join(h.PassEnv, ", "))
		}
		fmt.Fprintln(w, "  environment (an event run, the first of its burst):")
		for _, kv := range env {
			fmt.Fprintf(w, "    %s\n", kv)
		}
		if err != nil {
			fmt.Fprintf(w, "  would not start: %v\n", err)
			wontStart = append(wontStart, fmt.Sprintf("handler[%d]", i+1))
		}
	}
	// Handlers of the same user that this event misses, and why: the
	// usual surprise.
	for i := range cfg.Handlers {
		h := &cfg.Handlers[i]
		if h.User != ev.User || exec.Matches(h, &ev, peer) {
			continue
		}
		why := fmt.Sprintf("its event is %s", h.Event)
		if h.Event == ev.Event {
			why = fmt.Sprintf("its ip list (%s) does not admit %s", prefixes(h), peer.Addr())
		}
		fmt.Fprintf(w, "\nhandler[%d], line %d: not triggered: %s\n", i+1, h.Line, why)
	}
	fmt.Fprintln(w)
	switch triggered {
	case 0:
		fmt.Fprintf(w, "No handler runs for user %q and event %s. Nothing was run.\n", ev.User, ev.Event)
	case 1:
		fmt.Fprintln(w, "1 handler would run. Nothing was run.")
	default:
		fmt.Fprintf(w, "%d handlers would run. Nothing was run.\n", triggered)
	}
	if len(wontStart) > 0 {
		return &failure{fmt.Sprintf("imseriousctl: %s would not start: environment too large", strings.Join(wontStart, ", "))}
	}
	return nil
}

func prefixes(h *config.Handler) string {
	s := make([]string, len(h.IP))
	for i, p := range h.IP {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}

// quoteArgs writes an argument vector as a shell would read it back.
func quoteArgs(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = shellQuote(a)
	}
	return strings.Join(q, " ")
}
