package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/imserious/imserious/config"
	"github.com/imserious/imserious/listener"
	"github.com/imserious/imserious/logging"
	"github.com/imserious/imserious/privsep"
	"github.com/imserious/imserious/tlsreload"
)

// ShutdownGrace is how long running commands may go on after SIGTERM
// before their process groups are killed.
const ShutdownGrace = 10 * time.Second

// startTimeout bounds how long a child may take to configure itself and
// report ready.
const startTimeout = 15 * time.Second

// Parent is the privileged process: it binds the socket, starts and
// supervises the children and tells them when to stop.
type Parent struct {
	Config *config.Config // loaded and resolved
	Root   bool           // started as root: children drop privileges
	Log    *slog.Logger
	LogOpt logOptions
	Stdout io.Writer // where children log; normally os.Stdout

	// Ready, when set, is called with the bound address once every child
	// reported ready.
	Ready func(addr net.Addr)

	tls atomic.Pointer[tlsreload.Reloader] // set while serving with [tls]
}

// ReloadTLS asks for the certificate and key to be read again now, as
// SIGHUP does. It reports false when there is nothing to reload: no [tls],
// or the daemon is not serving (yet, or any more).
func (p *Parent) ReloadTLS(reason string) bool {
	r := p.tls.Load()
	if r == nil {
		return false
	}
	r.Reload(reason)
	return true
}

// NewLogOptions converts the resolved log settings for the children.
func NewLogOptions(level slog.Level, l config.Log) logOptions {
	return logOptions{Level: int(level), Format: l.Format, ANSI: l.ANSI,
		Timestamp: l.Timestamp, Target: l.Target, ShowLevel: l.Level}
}

type child struct {
	*privsep.Child
	done  chan struct{} // closed when Wait returned
	err   error         // Wait's result, valid after done
	ready chan struct{} // closed on msgReady
	fault chan error    // a protocol violation on the control channel
}

// Run starts everything and blocks until ctx ends (clean shutdown, nil) or
// a child dies (error: the daemon is fail-stop until restart is built).
func (p *Parent) Run(ctx context.Context) error {
	cfg := p.Config
	var drop *dropTo
	if p.Root {
		if err := privsep.PrepareChroot(cfg.Privsep.Chroot); err != nil {
			return fmt.Errorf("privsep chroot: %w", err)
		}
		acct, err := privsep.LookupAccount(cfg.Privsep.User)
		if err != nil {
			return fmt.Errorf("privsep user: %w", err)
		}
		if acct.UID == 0 {
			return fmt.Errorf("privsep user %q has uid 0", acct.Name)
		}
		acct.Groups = []int{acct.GID} // the network process gets no supplementary groups
		drop = &dropTo{Account: acct, Chroot: cfg.Privsep.Chroot}
	}

	// The pair is read before anything starts: a certificate that does not
	// load at start-up is fatal.
	var certs *tlsreload.Reloader
	if cfg.TLS != nil {
		var err error
		certs, err = tlsreload.New(tlsreload.Options{Cert: cfg.TLS.Cert, Key: cfg.TLS.Key,
			Periodic: cfg.TLS.PeriodicReload, Log: p.Log.With(logging.ComponentKey, "tls")})
		if err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		defer certs.Close()
	} else if cfg.Auth != nil && !isLoopback(cfg.Listen) {
		p.Log.Warn("[auth] without [tls] on a non-loopback address: the password crosses the network in clear; add [tls]", "listen", cfg.Listen)
	}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	defer ln.Close()
	lnFile, err := ln.(*net.TCPListener).File()
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	defer lnFile.Close()

	accounts := cfg.Accounts()
	var children []*child
	// On any error below, take down what was started.
	started := false
	defer func() {
		if !started {
			p.stopAll(children, 2*time.Second)
		}
	}()

	execs := make([]*child, len(accounts))
	for i, a := range accounts {
		c, err := p.start("exec["+a.Name+"]", []string{"-R", "exec:" + a.Name})
		if err != nil {
			return err
		}
		execs[i] = c
		children = append(children, c)
	}
	netc, err := p.start("net", []string{"-R", "net"})
	if err != nil {
		return err
	}
	children = append(children, netc)

	nc := netConfig{
		Log: p.LogOpt, Drop: drop, Allow: cfg.Allow, Endpoint: cfg.Endpoint,
		MaxConnections: cfg.MaxConnections, Timeout: cfg.Timeout, TLS: certs != nil,
	}
	if cfg.Auth != nil {
		nc.Auth = &listener.Auth{User: cfg.Auth.User, Pass: cfg.Auth.Pass}
	}
	target := map[string]int{}
	for i, a := range accounts {
		target[a.Name] = i
		nc.Execs = append(nc.Execs, a.Name)
	}
	for _, h := range cfg.Handlers {
		nc.Routes = append(nc.Routes, listener.Route{User: h.User, Event: h.Event, IP: h.IP, Target: target[h.Account.Name]})
	}

	for i, a := range accounts {
		ec := execConfig{Log: p.LogOpt, Account: a, Drop: p.Root}
		for _, h := range cfg.Handlers {
			if h.Account.Name == a.Name {
				ec.Handlers = append(ec.Handlers, h)
			}
		}
		if err := sendJSON(execs[i].Conn, msgExecConfig, ec); err != nil {
			return fmt.Errorf("%s: %w", execs[i].Name, err)
		}
		toNet, toExec, err := privsep.Socketpair()
		if err != nil {
			return err
		}
		err = execs[i].Conn.Send(msgNetChannel, nil, toExec)
		if err == nil {
			var b []byte
			if b, err = privsep.EncodeJSON(execChannel{Target: i}); err == nil {
				err = netc.Conn.Send(msgExecChannel, b, toNet)
			}
		}
		toNet.Close()
		toExec.Close()
		if err != nil {
			return fmt.Errorf("channel net-%s: %w", execs[i].Name, err)
		}
	}
	if err := sendJSON(netc.Conn, msgNetConfig, nc); err != nil {
		return fmt.Errorf("net: %w", err)
	}
	if err := netc.Conn.Send(msgListener, nil, lnFile); err != nil {
		return fmt.Errorf("net: %w", err)
	}
	sendPair := func(pr *tlsreload.Pair) error {
		b, err := pr.Encode()
		if err != nil {
			return err
		}
		return netc.Conn.Send(msgTLSPair, b)
	}
	if certs != nil {
		if err := sendPair(certs.Current()); err != nil {
			return fmt.Errorf("net: tls pair: %w", err)
		}
	}
	for _, c := range children {
		if err := c.Conn.Send(msgStart, nil); err != nil {
			return fmt.Errorf("%s: %w", c.Name, err)
		}
	}
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	for _, c := range children {
		select {
		case <-c.ready:
		case <-c.done:
			return fmt.Errorf("%s exited during start-up: %v", c.Name, c.err)
		case err := <-c.fault:
			return fmt.Errorf("%s: %w", c.Name, err)
		case <-timer.C:
			return fmt.Errorf("%s did not become ready within %s", c.Name, startTimeout)
		case <-ctx.Done():
			p.Log.Info("stopping before start-up completed")
			started = true
			p.shutdown(netc, execs)
			return nil
		}
	}
	started = true
	// The watcher runs while the children do and stops before they are
	// told to, so nothing is sent to a network process on its way out.
	stopTLS := func() {}
	if certs != nil {
		rctx, cancel := context.WithCancel(context.Background())
		reloading := make(chan struct{})
		go func() {
			defer close(reloading)
			certs.Run(rctx, sendPair)
		}()
		p.tls.Store(certs)
		stopTLS = sync.OnceFunc(func() {
			p.tls.Store(nil)
			cancel()
			<-reloading
		})
		defer stopTLS()
	}
	p.Log.Info("listening", "addr", ln.Addr().String(), "handlers", len(cfg.Handlers), "accounts", len(accounts), "privsep", p.Root, "tls", certs != nil)
	if p.Ready != nil {
		p.Ready(ln.Addr())
	}

	// Supervise: any child leaving on its own stops the daemon.
	died := make(chan *child, len(children))
	for _, c := range children {
		go func(c *child) {
			select {
			case <-c.done:
			case err := <-c.fault:
				p.Log.Error("protocol violation, stopping the child", "child", c.Name, "err", err)
				c.Cmd.Process.Signal(syscall.SIGTERM)
				<-c.done
			}
			died <- c
		}(c)
	}
	select {
	case <-ctx.Done():
		p.Log.Info("shutting down")
		stopTLS()
		p.shutdown(netc, execs)
		p.Log.Info("stopped")
		return nil
	case c := <-died:
		err := fmt.Errorf("child %s died (%v); stopping", c.Name, exitReason(c.err))
		p.Log.Error("child died", "child", c.Name, "status", exitReason(c.err))
		stopTLS()
		p.stopAll(children, ShutdownGrace)
		return err
	}
}

// isLoopback says whether a validated listen address is a loopback one.
func isLoopback(listen string) bool {
	ap, err := netip.ParseAddrPort(listen)
	return err == nil && ap.Addr().Unmap().IsLoopback()
}

func exitReason(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

func sendJSON(c *privsep.Conn, typ uint32, v any) error {
	b, err := privsep.EncodeJSON(v)
	if err != nil {
		return err
	}
	return c.Send(typ, b)
}

// start re-executes the binary in a role and watches its control channel.
func (p *Parent) start(name string, args []string) (*child, error) {
	pc, err := privsep.StartChild(name, args, p.Stdout, p.Stdout)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{Child: pc, done: make(chan struct{}), ready: make(chan struct{}), fault: make(chan error, 1)}
	go func() {
		c.err = c.Cmd.Wait()
		close(c.done)
	}()
	go func() {
		readied := false
		for {
			m, err := c.Conn.Recv()
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
					c.fault <- err
				}
				return
			}
			for _, f := range m.Files {
				f.Close()
			}
			if m.Type != msgReady || readied || len(m.Payload) != 0 || len(m.Files) != 0 {
				c.fault <- fmt.Errorf("unexpected message type %d", m.Type)
				return
			}
			readied = true
			close(c.ready)
		}
	}()
	p.Log.Debug("started child", "child", name, "pid", pc.Cmd.Process.Pid)
	return c, nil
}

// shutdown stops the network process first, so nothing new is accepted,
// then lets the exec processes finish what they run.
func (p *Parent) shutdown(netc *child, execs []*child) {
	p.stopChild(netc, 0, p.Config.Timeout+5*time.Second)
	var wg sync.WaitGroup
	for _, c := range execs {
		wg.Add(1)
		go func(c *child) {
			defer wg.Done()
			p.stopChild(c, ShutdownGrace, ShutdownGrace+5*time.Second)
		}(c)
	}
	wg.Wait()
}

// stopAll ends every child still running after a fault, network first.
func (p *Parent) stopAll(children []*child, grace time.Duration) {
	var wg sync.WaitGroup
	for i := len(children) - 1; i >= 0; i-- { // net was started last
		c := children[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.stopChild(c, grace, grace+5*time.Second)
		}()
	}
	wg.Wait()
}

// stopChild asks a child to stop and kills it if it does not within wait.
func (p *Parent) stopChild(c *child, grace, wait time.Duration) {
	select {
	case <-c.done:
		return
	default:
	}
	if err := sendJSON(c.Conn, msgShutdown, shutdownMsg{Grace: grace}); err != nil {
		c.Cmd.Process.Signal(syscall.SIGTERM)
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-c.done:
		if c.err != nil {
			p.Log.Warn("child exited uncleanly", "child", c.Name, "status", c.err.Error())
		}
	case <-t.C:
		p.Log.Error("child did not stop in time, killing it", "child", c.Name)
		c.Cmd.Process.Kill()
		<-c.done
	}
	c.Conn.Close()
}
