// Command imserious-bare is the bare server of the benchmarks (package
// bare) as a process of its own, like the daemon it is compared with. It
// prints "listening ADDR" once it accepts connections, and serves until
// SIGTERM or SIGINT.
//
//	imserious-bare [-listen 127.0.0.1:0] [-cert FILE -key FILE] [-forward]
//
// With -forward it hands every body it accepts to a second process, this
// same binary started with -sink in a session of its own as imserious
// starts its children, which decodes it again (bare.HandlerTo,
// bare.Forwarder, bare.Sink), in batches sent after the answers as
// imserious sends its events: the floor of a privilege-separated shape.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/imserious/imserious/bench/bare"
	"github.com/imserious/imserious/privsep"
)

// sinkArg is the one argument of the second process. It is not a flag
// of the command line: only -forward starts a process with it.
const sinkArg = "-sink"

func main() {
	if len(os.Args) == 2 && os.Args[1] == sinkArg {
		if err := runSink(); err != nil {
			fmt.Fprintln(os.Stderr, "imserious-bare: sink:", err)
			os.Exit(1)
		}
		return
	}
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	certFile := flag.String("cert", "", "PEM certificate chain: serve HTTPS")
	keyFile := flag.String("key", "", "PEM private key of -cert")
	forward := flag.Bool("forward", false, "hand every accepted body to a second process, which decodes it")
	flag.Parse()
	if err := run(*listen, *certFile, *keyFile, *forward); err != nil {
		fmt.Fprintln(os.Stderr, "imserious-bare:", err)
		os.Exit(1)
	}
}

func run(listen, certFile, keyFile string, forward bool) error {
	var cert *tls.Certificate
	if certFile != "" || keyFile != "" {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return err
		}
		cert = &c
	}
	srv := bare.Server(cert)
	var s *sink
	var sinkDone <-chan struct{} // nil, never ready, without -forward
	if forward {
		var err error
		if s, err = startSink(); err != nil {
			return err
		}
		srv.Handler = bare.HandlerTo(s.fw.Send)
		sinkDone = s.done
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return errors.Join(err, s.stop())
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		// A sink that exits ends the server: every request would get 503.
		select {
		case <-ctx.Done():
		case <-sinkDone:
		}
		srv.Close()
	}()
	fmt.Printf("listening %s\n", ln.Addr())
	if cert != nil {
		err = srv.ServeTLS(ln, "", "")
	} else {
		err = srv.Serve(ln)
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return errors.Join(err, s.stop())
}

// sinkGrace is how long the sink may take to read what is left in its
// socket and exit once the server closes its end.
const sinkGrace = 5 * time.Second

// sink is the second process of -forward and the server's end of the
// socket to it.
type sink struct {
	cmd  *exec.Cmd
	fw   *bare.Forwarder
	done chan struct{} // closed once cmd.Wait has returned, into err
	err  error
}

// startSink starts this binary with -sink, the other end of a unix
// seqpacket socketpair as its fd 3.
func startSink() (*sink, error) {
	// privsep's, as imserious's channels: close-on-exec from creation,
	// buffers checked to hold whole packets of a MaxBody body and more.
	mine, theirs, err := privsep.Socketpair()
	if err != nil {
		return nil, err
	}
	// Closed once the sink has its copy, so that the sink's exit closes
	// the socket's other end and a send fails rather than waits forever.
	defer theirs.Close()
	ours, err := bare.SeqpacketConn(mine)
	if err != nil {
		return nil, err
	}
	exe, err := os.Executable()
	if err != nil {
		ours.Close()
		return nil, err
	}
	cmd := exec.Command(exe, sinkArg)
	cmd.ExtraFiles = []*os.File{theirs}
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = sinkAttr()
	if err := cmd.Start(); err != nil {
		ours.Close()
		return nil, fmt.Errorf("starting the sink: %w", err)
	}
	s := &sink{cmd: cmd, fw: bare.NewForwarder(ours), done: make(chan struct{})}
	go func() {
		s.err = cmd.Wait()
		close(s.done)
	}()
	return s, nil
}

// stop sends what is queued and closes the server's end, which the sink
// reads as the end of its input, and waits for the sink to exit (killing it after sinkGrace). It
// reports a sink that exited before, or not with status 0. A nil sink
// (no -forward) has nothing to stop.
func (s *sink) stop() error {
	if s == nil {
		return nil
	}
	var early bool
	select {
	case <-s.done:
		early = true
	default:
	}
	// Close sends what is queued first, which waits for a sink that
	// does not read.
	closed := make(chan error, 1)
	go func() { closed <- s.fw.Close() }()
	var ferr error
	select {
	case ferr = <-closed:
	case <-time.After(sinkGrace):
		s.cmd.Process.Kill()
		<-closed
		<-s.done
		return fmt.Errorf("sink not reading %v after the server ended: killed", sinkGrace)
	}
	select {
	case <-s.done:
	case <-time.After(sinkGrace):
		s.cmd.Process.Kill()
		<-s.done
		return fmt.Errorf("sink still running %v after its input ended: killed", sinkGrace)
	}
	switch {
	case ferr != nil:
		return ferr
	case s.err != nil:
		return fmt.Errorf("sink: %w", s.err)
	case early:
		return errors.New("sink exited while the server ran")
	}
	return nil
}

// runSink is the second process: it decodes what arrives on fd 3 until
// the server closes its end.
func runSink() error {
	conn, err := bare.SeqpacketConn(os.NewFile(3, "sink socket"))
	if err != nil {
		return err
	}
	defer conn.Close()
	return bare.Sink(conn)
}
