// Command imserious-load is the load generator of the benchmarks
// (package load) on its own: it sends Dovecot notifications to one
// server and prints the rate and latencies.
//
//	imserious-load [-conns 8] [-n 0 | -d 5s] [-new-conn] [-users 10000]
//	               [-user-prefix user] [-ca FILE] URL
//
// URL is http://HOST:PORT/PATH or https://...; -ca names the PEM
// certificate that signed the server's (without it, https is not
// verified). Every request is for one of -users users, in turn:
// user0, user1, ...
package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/imserious/imserious/bench/load"
)

func main() {
	conns := flag.Int("conns", 8, "concurrent connections")
	n := flag.Int("n", 0, "requests in all (0: for -d)")
	d := flag.Duration("d", 5*time.Second, "how long to send, without -n")
	newConn := flag.Bool("new-conn", false, "a new connection per request, as dovecot-lda")
	users := flag.Int("users", 10000, "distinct users, requests go to each in turn")
	prefix := flag.String("user-prefix", "user", "user names are this and a number")
	caFile := flag.String("ca", "", "PEM certificate to verify an https server with")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: imserious-load [flags] URL")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 || *users < 1 {
		flag.Usage()
		os.Exit(2)
	}
	t, err := target(flag.Arg(0), *caFile, !*newConn)
	if err != nil {
		fmt.Fprintln(os.Stderr, "imserious-load:", err)
		os.Exit(2)
	}
	names := make([]string, *users)
	for i := range names {
		names[i] = *prefix + strconv.Itoa(i)
	}
	r := load.Run(load.Options{Target: t, Conns: *conns, Requests: *n, Duration: *d,
		Body: func(buf []byte, w, i int) []byte { return load.Body(buf, names[i%len(names)], i+1) }})
	fmt.Printf("%d requests in %.2fs: %.0f/s; latency p50 %v p99 %v max %v; %d failed\n",
		r.Requests, r.Elapsed.Seconds(), r.RPS(), r.Percentile(0.5), r.Percentile(0.99), r.Percentile(1), r.Failed)
	if r.Err != nil {
		fmt.Fprintln(os.Stderr, "imserious-load: first failure:", r.Err)
		os.Exit(1)
	}
}

func target(raw, caFile string, keepAlive bool) (load.Target, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return load.Target{}, err
	}
	t := load.Target{Addr: u.Host, Path: u.Path, KeepAlive: keepAlive}
	switch u.Scheme {
	case "http":
	case "https":
		t.TLS = &tls.Config{ServerName: u.Hostname(), InsecureSkipVerify: caFile == ""}
		if caFile != "" {
			pem, err := os.ReadFile(caFile)
			if err != nil {
				return t, err
			}
			t.TLS.RootCAs = x509.NewCertPool()
			if !t.TLS.RootCAs.AppendCertsFromPEM(pem) {
				return t, fmt.Errorf("%s: no certificate", caFile)
			}
		}
	default:
		return t, fmt.Errorf("%s: not http or https", raw)
	}
	return t, nil
}
