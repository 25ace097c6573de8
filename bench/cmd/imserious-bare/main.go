// Command imserious-bare is the bare server of the benchmarks (package
// bare) as a process of its own, like the daemon it is compared with. It
// prints "listening ADDR" once it accepts connections, and serves until
// SIGTERM or SIGINT.
//
//	imserious-bare [-listen 127.0.0.1:0] [-cert FILE -key FILE]
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
	"os/signal"
	"syscall"

	"github.com/imserious/imserious/bench/bare"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	certFile := flag.String("cert", "", "PEM certificate chain: serve HTTPS")
	keyFile := flag.String("key", "", "PEM private key of -cert")
	flag.Parse()
	if err := run(*listen, *certFile, *keyFile); err != nil {
		fmt.Fprintln(os.Stderr, "imserious-bare:", err)
		os.Exit(1)
	}
}

func run(listen, certFile, keyFile string) error {
	var cert *tls.Certificate
	if certFile != "" || keyFile != "" {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return err
		}
		cert = &c
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	srv := bare.Server(cert)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	fmt.Printf("listening %s\n", ln.Addr())
	if cert != nil {
		err = srv.ServeTLS(ln, "", "")
	} else {
		err = srv.Serve(ln)
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}
