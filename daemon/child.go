package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/imserious/imserious/event"
	"github.com/imserious/imserious/exec"
	"github.com/imserious/imserious/listener"
	"github.com/imserious/imserious/logging"
	"github.com/imserious/imserious/privsep"
	"github.com/imserious/imserious/tlsreload"
)

func newLogger(w io.Writer, o logOptions, proc string) *slog.Logger {
	return logging.New(w, logging.Options{Level: slog.Level(o.Level), Format: o.Format,
		ANSI: o.ANSI, Timestamp: o.Timestamp, Target: o.Target, ShowLevel: o.ShowLevel}, proc)
}

func closeFiles(m privsep.Msg) {
	for _, f := range m.Files {
		f.Close()
	}
}

// oneFile returns the single descriptor a message must carry.
func oneFile(m privsep.Msg) (*os.File, error) {
	if len(m.Files) != 1 {
		closeFiles(m)
		return nil, fmt.Errorf("message type %d: want 1 descriptor, got %d", m.Type, len(m.Files))
	}
	return m.Files[0], nil
}

// RunNet is the network process: it collects its configuration from the
// parent, drops to the privsep account inside the chroot, serves HTTP and
// forwards valid notifications to the exec processes.
func RunNet(ctl *privsep.Conn, stdout io.Writer) error {
	var (
		cfg    *netConfig
		lnFile *os.File
		chans  = map[int]*os.File{}
		certs  tlsreload.Store
	)
	defer func() {
		for _, f := range chans {
			f.Close()
		}
	}()
	for started := false; !started; {
		m, err := ctl.Recv()
		if err != nil {
			return fmt.Errorf("net: control channel: %w", err)
		}
		switch m.Type {
		case msgNetConfig:
			closeFiles(m)
			var c netConfig
			if err := privsep.DecodeJSON(m.Payload, &c); err != nil {
				return fmt.Errorf("net: config: %w", err)
			}
			cfg = &c
		case msgListener:
			if lnFile, err = oneFile(m); err != nil {
				return fmt.Errorf("net: %w", err)
			}
		case msgExecChannel:
			f, err := oneFile(m)
			if err != nil {
				return fmt.Errorf("net: %w", err)
			}
			var ch execChannel
			if err := privsep.DecodeJSON(m.Payload, &ch); err != nil || chans[ch.Target] != nil {
				f.Close()
				return fmt.Errorf("net: bad exec channel message")
			}
			chans[ch.Target] = f
		case msgTLSPair:
			closeFiles(m)
			if len(m.Files) != 0 {
				return fmt.Errorf("net: tls pair: unexpected descriptors")
			}
			if _, err := certs.Set(m.Payload); err != nil {
				return fmt.Errorf("net: tls pair: %w", err)
			}
		case msgStart:
			closeFiles(m)
			started = true
		default:
			closeFiles(m)
			return fmt.Errorf("net: unexpected message type %d", m.Type)
		}
	}
	if cfg == nil || lnFile == nil {
		return errors.New("net: started without configuration or socket")
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	// Security: with [tls] nothing is served in clear, so no certificate
	// means no start; without it, a certificate is a confused parent.
	switch have := certs.Current() != nil; {
	case cfg.TLS && !have:
		return errors.New("net: tls configured but no certificate received")
	case !cfg.TLS && have:
		return errors.New("net: certificate received without tls configured")
	}
	if len(chans) != len(cfg.Execs) {
		return fmt.Errorf("net: got %d exec channels, want %d", len(chans), len(cfg.Execs))
	}
	log := newLogger(stdout, cfg.Log, "net")

	ln, err := net.FileListener(lnFile)
	lnFile.Close()
	if err != nil {
		return fmt.Errorf("net: listener: %w", err)
	}
	execs := make([]*privsep.Conn, len(cfg.Execs))
	for i := range execs {
		f, ok := chans[i]
		if !ok {
			return fmt.Errorf("net: no channel for exec process %d", i)
		}
		c, err := privsep.NewConn(f)
		delete(chans, i)
		if err != nil {
			return fmt.Errorf("net: exec channel %d: %w", i, err)
		}
		execs[i] = c
		defer c.Close()
	}

	if cfg.Drop != nil {
		// Load the local time zone while /etc is still reachable.
		_, _ = time.Now().Zone()
		if err := privsep.Drop(cfg.Drop.Account, cfg.Drop.Chroot); err != nil {
			return fmt.Errorf("net: drop privileges: %w", err)
		}
		log.Debug("dropped privileges", "user", cfg.Drop.Account.Name, "uid", cfg.Drop.Account.UID, "chroot", cfg.Drop.Chroot)
	}

	deliver := func(target int, remote netip.AddrPort, body []byte) error {
		// An exec process that stopped reading must not hold request
		// slots for ever: the send gives up with the request's deadline
		// (a deadline belongs to the socket, so every waiting sender
		// gives up with it) and the request is answered 503.
		c := execs[target]
		if err := c.SetDeadline(time.Now().Add(cfg.Timeout)); err != nil {
			return err
		}
		return c.Send(msgEvent, encodeEvent(remote, body))
	}
	lc := listener.Config{
		Allow: cfg.Allow, Endpoint: cfg.Endpoint, MaxConnections: cfg.MaxConnections,
		Timeout: cfg.Timeout, Auth: cfg.Auth, Routes: cfg.Routes,
	}
	tlsLog := log.With(logging.ComponentKey, "tls")
	if cfg.TLS {
		lc.TLS = certs.TLSConfig()
		logInstalled(tlsLog, certs.Current())
	}
	srv := listener.New(lc, deliver, log)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	if err := ctl.Send(msgReady, nil); err != nil {
		return fmt.Errorf("net: control channel: %w", err)
	}

	for {
		m, err := ctl.Recv()
		closeFiles(m)
		switch {
		case err != nil:
			// The parent is gone: stop at once.
			srv.Shutdown(context.Background())
			return fmt.Errorf("net: control channel: %w", err)
		case m.Type == msgTLSPair && cfg.TLS && len(m.Files) == 0:
			// The parent checked the pair; one that fails here is a
			// malformed message, which ends the channel like any other.
			c, err := certs.Set(m.Payload)
			if err != nil {
				srv.Shutdown(context.Background())
				return fmt.Errorf("net: tls pair: %w", err)
			}
			logInstalled(tlsLog, c)
		case m.Type == msgShutdown:
			ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout+time.Second)
			err := srv.Shutdown(ctx)
			cancel()
			if err != nil {
				log.Warn("requests still in flight at shutdown", "err", err)
			}
			log.Debug("stopped")
			return nil
		default:
			return fmt.Errorf("net: unexpected message type %d", m.Type)
		}
	}
}

// logInstalled records a certificate new handshakes now get; tests and
// operators can match its serial with the parent's "reloaded" line.
func logInstalled(log *slog.Logger, c *tls.Certificate) {
	log.Info("TLS certificate installed", "subject", c.Leaf.Subject.String(),
		"serial", tlsreload.SerialHex(c.Leaf), "not_after", c.Leaf.NotAfter.UTC())
}

// RunExec is the exec process of one account: it drops to the account,
// then schedules and runs the handlers' commands for the events the
// network process sends.
func RunExec(ctl *privsep.Conn, name string, stdout io.Writer) error {
	var (
		cfg     *execConfig
		netFile *os.File
	)
	for started := false; !started; {
		m, err := ctl.Recv()
		if err != nil {
			return fmt.Errorf("exec[%s]: control channel: %w", name, err)
		}
		switch m.Type {
		case msgExecConfig:
			closeFiles(m)
			var c execConfig
			if err := privsep.DecodeJSON(m.Payload, &c); err != nil {
				return fmt.Errorf("exec[%s]: config: %w", name, err)
			}
			cfg = &c
		case msgNetChannel:
			if netFile != nil {
				closeFiles(m)
				return fmt.Errorf("exec[%s]: second net channel", name)
			}
			if netFile, err = oneFile(m); err != nil {
				return fmt.Errorf("exec[%s]: %w", name, err)
			}
		case msgStart:
			closeFiles(m)
			started = true
		default:
			closeFiles(m)
			return fmt.Errorf("exec[%s]: unexpected message type %d", name, m.Type)
		}
	}
	if cfg == nil || netFile == nil {
		return fmt.Errorf("exec[%s]: started without configuration or channel", name)
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	if cfg.Account.Name != name {
		return fmt.Errorf("exec[%s]: configured for account %q", name, cfg.Account.Name)
	}
	proc := "exec[" + name + "]"
	log := newLogger(stdout, cfg.Log, proc)
	netConn, err := privsep.NewConn(netFile)
	if err != nil {
		return fmt.Errorf("%s: net channel: %w", proc, err)
	}
	defer netConn.Close()

	if cfg.Drop {
		if err := privsep.Drop(cfg.Account, ""); err != nil {
			return fmt.Errorf("%s: drop privileges: %w", proc, err)
		}
		if err := privsep.SetNotDumpable(); err != nil {
			return fmt.Errorf("%s: %w", proc, err)
		}
		log.Debug("dropped privileges", "uid", cfg.Account.UID, "gid", cfg.Account.GID, "groups", cfg.Account.Groups)
	}
	// The exec package starts each command in the account's home; the
	// process itself holds no directory open.
	if err := os.Chdir("/"); err != nil {
		return fmt.Errorf("%s: chdir /: %w", proc, err)
	}

	x := exec.New(exec.Options{Handlers: cfg.Handlers, Log: log})
	x.Start()
	if err := ctl.Send(msgReady, nil); err != nil {
		return fmt.Errorf("%s: control channel: %w", proc, err)
	}

	// Events from the network process, validated again here: this process
	// never trusts the less privileged one.
	netDone := make(chan error, 1)
	go func() {
		for {
			m, err := netConn.Recv()
			if err != nil {
				netDone <- err
				return
			}
			closeFiles(m)
			if m.Type != msgEvent || len(m.Files) != 0 {
				netDone <- fmt.Errorf("unexpected message type %d", m.Type)
				return
			}
			remote, body, err := decodeEvent(m.Payload)
			if err != nil {
				netDone <- err
				return
			}
			ev, err := event.Decode(body)
			if err != nil {
				netDone <- fmt.Errorf("invalid event: %w", err)
				return
			}
			if n := x.Deliver(ev, remote); n == 0 {
				log.Warn("event from the network process matches no handler", "user", ev.User, "event", ev.Event, "peer", remote.String())
			}
		}
	}()

	ctlMsgs := make(chan privsep.Msg)
	ctlErr := make(chan error, 1)
	go func() {
		for {
			m, err := ctl.Recv()
			if err != nil {
				ctlErr <- err
				return
			}
			ctlMsgs <- m
		}
	}()
	for {
		select {
		case err := <-netDone:
			netConn.Close()
			if errors.Is(err, io.EOF) {
				// The network process stopped; wait for the parent's word.
				log.Debug("network process closed its channel")
			} else {
				log.Error("network channel ended", "err", err)
			}
			netDone = nil
		case err := <-ctlErr:
			x.Shutdown(time.Second)
			return fmt.Errorf("%s: control channel: %w", proc, err)
		case m := <-ctlMsgs:
			closeFiles(m)
			if m.Type != msgShutdown {
				x.Shutdown(time.Second)
				return fmt.Errorf("%s: unexpected message type %d", proc, m.Type)
			}
			var s shutdownMsg
			if err := privsep.DecodeJSON(m.Payload, &s); err != nil || s.Grace < 0 {
				s.Grace = ShutdownGrace
			}
			x.Shutdown(s.Grace)
			log.Debug("stopped")
			return nil
		}
	}
}
