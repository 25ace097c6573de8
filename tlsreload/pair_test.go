package tlsreload

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imserious/imserious/tlsreload/tlstest"
)

func TestLoad(t *testing.T) {
	ca := tlstest.NewCA(t)
	a := ca.Issue(t, tlstest.Options{})
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	a.Write(t, cert, key)

	p, err := Load(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	if p.Leaf.SerialNumber.Cmp(a.Cert.SerialNumber) != 0 || p.Chain != 1 || !bytes.Equal(p.CertPEM, a.CertPEM) || !bytes.Equal(p.KeyPEM, a.KeyPEM) {
		t.Errorf("Load: got serial %v chain %d", p.Leaf.SerialNumber, p.Chain)
	}
	if got := strings.Join(p.Names(), " "); got != "localhost 127.0.0.1 ::1" {
		t.Errorf("Names = %q", got)
	}
	if s := p.Summary(time.Now()); !strings.Contains(s, "expires") || !strings.Contains(s, "in 89 days") || !strings.Contains(s, "127.0.0.1") {
		t.Errorf("Summary = %q", s)
	}

	// A chain: the leaf, then the CA.
	tlstest.WriteFile(t, cert, append(append([]byte(nil), a.CertPEM...), ca.PEM...), 0o644)
	if p, err := Load(cert, key); err != nil || p.Chain != 2 {
		t.Errorf("Load with a chain: %v, chain %d", err, p.Chain)
	}
	// Text around the blocks (openssl's "Bag Attributes", comments) is
	// not an error.
	tlstest.WriteFile(t, cert, append([]byte("subject=CN = imserious test\n"), a.CertPEM...), 0o644)
	if _, err := Load(cert, key); err != nil {
		t.Errorf("Load with text before the block: %v", err)
	}
	// A key file holding the certificate too, as some tools write it.
	tlstest.WriteFile(t, key, append(append([]byte(nil), a.CertPEM...), a.KeyPEM...), 0o600)
	if _, err := Load(cert, key); err != nil {
		t.Errorf("Load with a combined key file: %v", err)
	}
}

func TestLoadErrors(t *testing.T) {
	ca := tlstest.NewCA(t)
	a := ca.Issue(t, tlstest.Options{})
	b := ca.Issue(t, tlstest.Options{})
	half := func(b []byte) []byte { return b[:len(b)/2] }
	// A block that is valid PEM but not a certificate inside.
	badDER := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("not DER")})
	// A block whose base64 is broken: pem.Decode skips it silently.
	brokenB64 := []byte("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n")
	cases := []struct {
		name       string
		cert, key  []byte // nil: file absent
		role       string
		msg        string
		errIs      error
		mismatched bool
	}{
		{"missing cert", nil, a.KeyPEM, RoleCert, "no such file", fs.ErrNotExist, false},
		{"missing key", a.CertPEM, nil, RoleKey, "no such file", fs.ErrNotExist, false},
		{"mismatched key", a.CertPEM, b.KeyPEM, RoleKey, "does not match the certificate", nil, true},
		{"garbage cert", []byte("garbage\n"), a.KeyPEM, RoleCert, "no CERTIFICATE block", nil, false},
		{"garbage key", a.CertPEM, []byte("garbage\n"), RoleKey, "no PRIVATE KEY block", nil, false},
		{"empty cert", []byte{}, a.KeyPEM, RoleCert, "no CERTIFICATE block", nil, false},
		{"empty key", a.CertPEM, []byte{}, RoleKey, "no PRIVATE KEY block", nil, false},
		{"half-written cert", half(a.CertPEM), a.KeyPEM, RoleCert, "incomplete or damaged", nil, false},
		{"half-written key", a.CertPEM, half(a.KeyPEM), RoleKey, "incomplete or damaged", nil, false},
		{"half-written chain", append(append([]byte(nil), a.CertPEM...), half(ca.PEM)...), a.KeyPEM, RoleCert, "1 of 2 PEM blocks are incomplete", nil, false},
		{"broken base64 in chain", append(append([]byte(nil), a.CertPEM...), brokenB64...), a.KeyPEM, RoleCert, "incomplete or damaged", nil, false},
		{"damaged intermediate", append(append([]byte(nil), a.CertPEM...), badDER...), a.KeyPEM, RoleCert, "certificate 2 of the chain", nil, false},
		{"key is a certificate", a.CertPEM, a.CertPEM, RoleKey, "no PRIVATE KEY block", nil, false},
		{"key block damaged", a.CertPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("junk")}), RoleKey, "tls:", nil, false},
		{"huge cert", append(bytes.Repeat([]byte("# padding\n"), MaxPairSize/10+1), a.CertPEM...), a.KeyPEM, RoleCert, "larger than", nil, false},
		{"pair too large", append(bytes.Repeat([]byte("#"), MaxPairSize-len(a.CertPEM)-100), a.CertPEM...), a.KeyPEM, RoleCert, "together take", nil, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
			if c.cert != nil {
				tlstest.WriteFile(t, cert, c.cert, 0o644)
			}
			if c.key != nil {
				tlstest.WriteFile(t, key, c.key, 0o600)
			}
			p, err := Load(cert, key)
			if err == nil {
				t.Fatalf("Load succeeded: %v", p.Leaf.Subject)
			}
			var fe *FileError
			if !errors.As(err, &fe) {
				t.Fatalf("error %T %v, want *FileError", err, err)
			}
			wantPath := cert
			if c.role == RoleKey {
				wantPath = key
			}
			if fe.Role != c.role || fe.Path != wantPath {
				t.Errorf("error about %s %s, want %s %s: %v", fe.Role, fe.Path, c.role, wantPath, err)
			}
			if !strings.Contains(err.Error(), c.msg) || !strings.HasPrefix(err.Error(), c.role+" "+wantPath+": ") {
				t.Errorf("error %q, want it to start with the file and contain %q", err, c.msg)
			}
			if c.errIs != nil && !errors.Is(err, c.errIs) {
				t.Errorf("error %v is not %v", err, c.errIs)
			}
			var me *MismatchError
			if errors.As(err, &me) != c.mismatched {
				t.Errorf("error %v: MismatchError %v, want %v", err, !c.mismatched, c.mismatched)
			} else if c.mismatched && (me.CertFile != cert || !strings.Contains(err.Error(), cert)) {
				t.Errorf("mismatch error %q does not name the certificate %s", err, cert)
			}
		})
	}
}

// TestLoadSpecialFiles: a directory or a FIFO where a file should be is
// refused without blocking the parent.
func TestLoadSpecialFiles(t *testing.T) {
	a := tlstest.NewCA(t).Issue(t, tlstest.Options{})
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	a.Write(t, cert, key)

	sub := filepath.Join(dir, "adir")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(sub, key); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("Load of a directory: %v", err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := Load(cert, fifo)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("Load of a FIFO: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Load blocked on a FIFO")
	}
}

func TestEncodeDecodePair(t *testing.T) {
	p, err := EncodePair([]byte("cert"), []byte("key!"))
	if err != nil {
		t.Fatal(err)
	}
	want := []byte("\x00\x00\x00\x04cert\x00\x00\x00\x04key!")
	if !bytes.Equal(p, want) {
		t.Fatalf("EncodePair = %q, want %q", p, want)
	}
	c, k, err := DecodePair(p)
	if err != nil || string(c) != "cert" || string(k) != "key!" {
		t.Fatalf("DecodePair = %q, %q, %v", c, k, err)
	}
	for _, bad := range []struct {
		name, in, msg string
	}{
		{"empty", "", "truncated before the certificate length"},
		{"short length", "\x00\x00\x04", "truncated before the certificate length"},
		{"empty cert", "\x00\x00\x00\x00\x00\x00\x00\x01k", "empty certificate"},
		{"cert overruns", "\x00\x00\x00\x09cert", "certificate of 9 bytes, only 4 left"},
		{"huge length", "\xff\xff\xff\xffcert", "certificate of 4294967295 bytes"},
		{"no key", "\x00\x00\x00\x04cert", "truncated before the key length"},
		{"empty key", "\x00\x00\x00\x04cert\x00\x00\x00\x00", "empty key"},
		{"key overruns", "\x00\x00\x00\x04cert\x00\x00\x00\x05key!", "key of 5 bytes, only 4 left"},
		{"trailing bytes", "\x00\x00\x00\x04cert\x00\x00\x00\x04key!x", "1 bytes after the key"},
	} {
		if _, _, err := DecodePair([]byte(bad.in)); err == nil || !strings.Contains(err.Error(), bad.msg) {
			t.Errorf("%s: DecodePair error %v, want %q", bad.name, err, bad.msg)
		}
	}
	if _, err := EncodePair(make([]byte, MaxPairSize), []byte("k")); err == nil {
		t.Errorf("EncodePair accepted a pair over MaxPairSize")
	}
	if _, _, err := DecodePair(make([]byte, MaxPairSize+1)); err == nil {
		t.Errorf("DecodePair accepted a payload over MaxPairSize")
	}
}

func TestApprox(t *testing.T) {
	for d, want := range map[time.Duration]string{
		89*24*time.Hour + 23*time.Hour: "89 days",
		3*24*time.Hour + 4*time.Hour:   "3 days 4 hours",
		24*time.Hour + 30*time.Minute:  "1 day",
		5 * time.Hour:                  "5 hours",
		time.Hour:                      "1 hour",
		12 * time.Minute:               "12 minutes",
		30 * time.Second:               "0 minutes",
	} {
		if got := Approx(d); got != want {
			t.Errorf("Approx(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestSerialHex(t *testing.T) {
	for n, want := range map[int64]string{0x1: "01", 0xabc: "0ABC", 0x1234: "1234"} {
		if got := SerialHex(&x509.Certificate{SerialNumber: big.NewInt(n)}); got != want {
			t.Errorf("SerialHex(%#x) = %q, want %q", n, got, want)
		}
	}
}
