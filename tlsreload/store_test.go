package tlsreload

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"slices"
	"sync"
	"testing"

	"github.com/imserious/imserious/tlsreload/tlstest"
)

func encode(t testing.TB, l *tlstest.Leaf) []byte {
	t.Helper()
	b, err := EncodePair(l.CertPEM, l.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestStoreSet(t *testing.T) {
	ca := tlstest.NewCA(t)
	a, b := ca.Issue(t, tlstest.Options{}), ca.Issue(t, tlstest.Options{})
	var s Store
	if _, err := s.GetCertificate(nil); err == nil || s.Current() != nil {
		t.Fatalf("empty store served a certificate")
	}
	c, err := s.Set(encode(t, a))
	if err != nil {
		t.Fatal(err)
	}
	if c.Leaf.SerialNumber.Cmp(a.Cert.SerialNumber) != 0 {
		t.Fatalf("Set returned serial %v", c.Leaf.SerialNumber)
	}
	// What the parent would never send, and the network process must
	// refuse anyway, keeping what it serves.
	for name, p := range map[string][]byte{
		"mismatched":     encode(t, &tlstest.Leaf{CertPEM: b.CertPEM, KeyPEM: a.KeyPEM}),
		"garbage":        []byte("\x00\x00\x00\x01x\x00\x00\x00\x01y"),
		"truncated":      encode(t, b)[:100],
		"half-written":   encode(t, &tlstest.Leaf{CertPEM: b.CertPEM[:len(b.CertPEM)-40], KeyPEM: b.KeyPEM}),
		"empty":          nil,
		"trailing bytes": append(encode(t, b), 0),
	} {
		if _, err := s.Set(p); err == nil {
			t.Errorf("%s: Set accepted it", name)
		}
		got, _ := s.GetCertificate(nil)
		if got.Leaf.SerialNumber.Cmp(a.Cert.SerialNumber) != 0 {
			t.Errorf("%s: the refused pair replaced the served one", name)
		}
	}
	if _, err := s.Set(encode(t, b)); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetCertificate(nil); got.Leaf.SerialNumber.Cmp(b.Cert.SerialNumber) != 0 {
		t.Errorf("after Set(b) serving serial %v", got.Leaf.SerialNumber)
	}
	cfg := s.TLSConfig()
	if cfg.MinVersion != tls.VersionTLS12 || cfg.GetCertificate == nil {
		t.Errorf("TLSConfig: min version %x", cfg.MinVersion)
	}
}

// TestStoreConcurrent: handshakes read while the parent's updates write;
// every read must see one whole certificate (run with -race).
func TestStoreConcurrent(t *testing.T) {
	ca := tlstest.NewCA(t)
	pairs := [][]byte{encode(t, ca.Issue(t, tlstest.Options{})), encode(t, ca.Issue(t, tlstest.Options{}))}
	var s Store
	if _, err := s.Set(bytes.Clone(pairs[0])); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan string, 8)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, err := s.GetCertificate(nil)
				if err != nil || c.Leaf == nil || len(c.Certificate) == 0 || !c.Leaf.Equal(mustParse(c.Certificate[0])) {
					errs <- "inconsistent certificate"
					return
				}
			}
		}()
	}
	for i := range 200 {
		if _, err := s.Set(bytes.Clone(pairs[i%2])); err != nil { // Set clears it
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

func mustParse(der []byte) *x509.Certificate {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil
	}
	return c
}

// TestStoreServes: through a real TLS listener, a connection made before a
// Set keeps working with the old certificate while new handshakes get the
// new one.
func TestStoreServes(t *testing.T) {
	ca := tlstest.NewCA(t)
	a, b := ca.Issue(t, tlstest.Options{}), ca.Issue(t, tlstest.Options{})
	var s Store
	if _, err := s.Set(encode(t, a)); err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", s.TLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []*tls.Conn
	)
	defer func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}()
	wg.Add(1)
	go func() { // echo server
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	client := &tls.Config{RootCAs: ca.Pool()}
	dial := func() (*tls.Conn, *bufio.Reader) {
		t.Helper()
		c, err := tls.Dial("tcp", ln.Addr().String(), client)
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
		return c, bufio.NewReader(c)
	}
	echo := func(c *tls.Conn, r *bufio.Reader, msg string) {
		t.Helper()
		if _, err := io.WriteString(c, msg+"\n"); err != nil {
			t.Fatal(err)
		}
		got, err := r.ReadString('\n')
		if err != nil || got != msg+"\n" {
			t.Fatalf("echo: %q, %v", got, err)
		}
	}
	serial := func(c *tls.Conn) string { return c.ConnectionState().PeerCertificates[0].SerialNumber.String() }

	old, oldR := dial()
	echo(old, oldR, "before")
	if serial(old) != a.Cert.SerialNumber.String() {
		t.Fatalf("first connection got serial %s", serial(old))
	}
	if _, err := s.Set(encode(t, b)); err != nil {
		t.Fatal(err)
	}
	nc, _ := dial()
	if serial(nc) != b.Cert.SerialNumber.String() {
		t.Errorf("new handshake got serial %s, want the new certificate", serial(nc))
	}
	echo(old, oldR, "after")
	if serial(old) != a.Cert.SerialNumber.String() {
		t.Errorf("old connection changed certificate")
	}
	// Below TLS 1.2 nothing is served.
	if c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: ca.Pool(), MaxVersion: tls.VersionTLS11}); err == nil {
		c.Close()
		t.Errorf("TLS 1.1 handshake succeeded")
	}
}

// TestStoreSetClearsPayload: the network process keeps no copy of the key
// PEM once Set has parsed it, whether the pair was taken or refused, and
// what it serves still works: the parsed key is independent of the bytes.
func TestStoreSetClearsPayload(t *testing.T) {
	ca := tlstest.NewCA(t)
	a, b := ca.Issue(t, tlstest.Options{}), ca.Issue(t, tlstest.Options{})
	zero := func(p []byte) bool { return !slices.ContainsFunc(p, func(c byte) bool { return c != 0 }) }
	var s Store
	for name, p := range map[string][]byte{
		"accepted":       encode(t, a),
		"mismatched":     encode(t, &tlstest.Leaf{CertPEM: b.CertPEM, KeyPEM: a.KeyPEM}),
		"trailing bytes": append(encode(t, b), 0xff),
	} {
		_, keyPEM, err := DecodePair(bytes.TrimSuffix(p, []byte{0xff}))
		if err != nil || !bytes.Contains(keyPEM, []byte("PRIVATE KEY")) {
			t.Fatalf("%s: the test payload holds no key: %v", name, err)
		}
		_, err = s.Set(p)
		if (err == nil) != (name == "accepted") {
			t.Errorf("%s: Set = %v", name, err)
		}
		if !zero(keyPEM) || !zero(p) {
			t.Errorf("%s: the payload is not cleared after Set (key PEM cleared: %v)", name, zero(keyPEM))
		}
	}
	// Handshakes still sign with the key parsed from the cleared bytes.
	c, err := s.GetCertificate(nil)
	if err != nil || c.Leaf.SerialNumber.Cmp(a.Cert.SerialNumber) != 0 {
		t.Fatalf("serving %v, %v; want A", c, err)
	}
	sig, err := c.PrivateKey.(crypto.Signer).Sign(rand.Reader, make([]byte, 32), crypto.SHA256)
	if err != nil || len(sig) == 0 {
		t.Errorf("the served key cannot sign after its PEM was cleared: %v", err)
	}
}
