// Package tlstest makes a certificate authority and server certificates
// for tests of the TLS side: the unit tests of tlsreload, the daemon's end
// to end tests, and anything else that needs a client trusting one CA
// only. Keys are ECDSA P-256, quick to make.
package tlstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a self-signed certificate authority.
type CA struct {
	Cert *x509.Certificate
	PEM  []byte
	key  *ecdsa.PrivateKey
}

// Leaf is a server certificate issued by a CA, and its key.
type Leaf struct {
	Cert    *x509.Certificate
	CertPEM []byte // the leaf only: clients trust the CA itself
	KeyPEM  []byte // PKCS #8
}

// Options describe a server certificate. The zero value gives one for
// 127.0.0.1, ::1 and localhost, valid from an hour ago for 90 days.
type Options struct {
	CommonName string    // default "imserious test"
	DNSNames   []string  // default localhost (when IPs is also empty)
	IPs        []net.IP  // default 127.0.0.1 and ::1 (when DNSNames is also empty)
	NotBefore  time.Time // default an hour ago
	NotAfter   time.Time // default 90 days from now
}

// NewCA makes a certificate authority.
func NewCA(tb testing.TB) *CA {
	tb.Helper()
	key := newKey(tb)
	tmpl := &x509.Certificate{
		SerialNumber:          serial(tb),
		Subject:               pkix.Name{CommonName: "imserious test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatalf("tlstest: create CA: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatalf("tlstest: parse CA: %v", err)
	}
	return &CA{Cert: cert, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), key: key}
}

// Pool returns a pool holding only the CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Issue makes a server certificate signed by the CA, with a fresh random
// serial number (tests tell certificates apart by it).
func (ca *CA) Issue(tb testing.TB, o Options) *Leaf {
	tb.Helper()
	if o.CommonName == "" {
		o.CommonName = "imserious test"
	}
	if len(o.DNSNames) == 0 && len(o.IPs) == 0 {
		o.DNSNames = []string{"localhost"}
		o.IPs = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	}
	if o.NotBefore.IsZero() {
		o.NotBefore = time.Now().Add(-time.Hour)
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = time.Now().Add(90 * 24 * time.Hour)
	}
	key := newKey(tb)
	tmpl := &x509.Certificate{
		SerialNumber: serial(tb),
		Subject:      pkix.Name{CommonName: o.CommonName},
		DNSNames:     o.DNSNames,
		IPAddresses:  o.IPs,
		NotBefore:    o.NotBefore,
		NotAfter:     o.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		tb.Fatalf("tlstest: create certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatalf("tlstest: parse certificate: %v", err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatalf("tlstest: marshal key: %v", err)
	}
	return &Leaf{
		Cert:    cert,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}),
	}
}

// Write writes the certificate to certPath (mode 0644) and the key to
// keyPath (mode 0600), each in place, creating missing directories.
func (l *Leaf) Write(tb testing.TB, certPath, keyPath string) {
	tb.Helper()
	WriteFile(tb, certPath, l.CertPEM, 0o644)
	WriteFile(tb, keyPath, l.KeyPEM, 0o600)
}

// WriteFile writes data to path in place with exactly mode (whatever the
// umask), creating missing directories with mode 0755.
func WriteFile(tb testing.TB, path string, data []byte, mode os.FileMode) {
	tb.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(path, data, mode); err != nil {
		tb.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		tb.Fatal(err)
	}
}

func newKey(tb testing.TB) *ecdsa.PrivateKey {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("tlstest: generate key: %v", err)
	}
	return key
}

func serial(tb testing.TB) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		tb.Fatalf("tlstest: serial: %v", err)
	}
	return n.Add(n, big.NewInt(1)) // never 0
}

// WriteAtomic writes data beside path and renames it over path, as
// editors' save-by-rename and most tools do.
func WriteAtomic(tb testing.TB, path string, data []byte, mode os.FileMode) {
	tb.Helper()
	tmp := path + ".tmp"
	WriteFile(tb, tmp, data, mode)
	Rename(tb, tmp, path)
}

// Rename is os.Rename, failing the test on error.
func Rename(tb testing.TB, from, to string) {
	tb.Helper()
	if err := os.Rename(from, to); err != nil {
		tb.Fatal(err)
	}
}

// Symlink is os.Symlink, failing the test on error.
func Symlink(tb testing.TB, target, link string) {
	tb.Helper()
	if err := os.Symlink(target, link); err != nil {
		tb.Fatal(err)
	}
}

// ReplaceLink points link at target atomically: a new link beside it,
// renamed over it (ln -sfn with a rename, as certbot and kubelet do).
func ReplaceLink(tb testing.TB, target, link string) {
	tb.Helper()
	tmp := link + ".new"
	Symlink(tb, target, tmp)
	Rename(tb, tmp, link)
}
