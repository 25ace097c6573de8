package tlsreload

import (
	"encoding/pem"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imserious/imserious/tlsreload/tlstest"
)

// TestLoadSwapped: a certificate file holding a private key and a key
// file holding a certificate is said to be that, naming both files; any
// other pair that fails keeps its own message.
func TestLoadSwapped(t *testing.T) {
	ca := tlstest.NewCA(t)
	a := ca.Issue(t, tlstest.Options{})
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	// The key as older tools write it: the same bytes under a typed header.
	ecKey := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte("not parsed")})
	both := append(append([]byte(nil), a.CertPEM...), a.KeyPEM...)
	swapped := "tls: cert and key look swapped: " + cert + " holds a private key and " + key + " a certificate"

	for _, tc := range []struct {
		name            string
		certPEM, keyPEM []byte
		want            string // the whole message when swapped, else a part of it
		swapped         bool
	}{
		{"swapped", a.KeyPEM, a.CertPEM, swapped, true},
		{"swapped, typed key", ecKey, a.CertPEM, swapped, true},
		{"swapped, chain in the key file", a.KeyPEM, append(append([]byte(nil), a.CertPEM...), ca.PEM...), swapped, true},
		{"swapped, key file with both", a.KeyPEM, both, swapped, true},
		{"key in both", a.KeyPEM, a.KeyPEM, "no CERTIFICATE block", false},
		{"certificate in both", a.CertPEM, a.CertPEM, "no PRIVATE KEY block", false},
		{"key as cert, garbage as key", a.KeyPEM, []byte("garbage\n"), "no CERTIFICATE block", false},
		{"garbage as cert, cert as key", []byte("garbage\n"), a.CertPEM, "no CERTIFICATE block", false},
		{"BEGIN without its dashes", []byte("-----BEGIN PRIVATE KEY\n"), a.CertPEM, "incomplete or damaged", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tlstest.WriteFile(t, cert, tc.certPEM, 0o644)
			tlstest.WriteFile(t, key, tc.keyPEM, 0o600)
			_, err := Load(cert, key)
			var se *SwappedError
			switch {
			case err == nil:
				t.Fatalf("Load succeeded")
			case tc.swapped && (!errors.As(err, &se) || err.Error() != tc.want || se.CertFile != cert || se.KeyFile != key):
				t.Errorf("Load: %v (%T)\nwant %s", err, err, tc.want)
			case !tc.swapped && (errors.As(err, &se) || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Load: %v, want an error with %q", err, tc.want)
			}
		})
	}

	// A pair that loads is never called swapped, whatever else its files
	// hold: a certificate file with the key appended, as some tools write
	// it, beside a key file with the certificate first.
	tlstest.WriteFile(t, cert, both, 0o644)
	tlstest.WriteFile(t, key, both, 0o600)
	if _, err := Load(cert, key); err != nil {
		t.Errorf("Load of combined files: %v", err)
	}
}

func TestHasPEM(t *testing.T) {
	for _, tc := range []struct {
		data string
		cert bool
		key  bool
	}{
		{"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n", true, false},
		{"-----BEGIN PRIVATE KEY-----\r\n", false, true},
		{"junk\n-----BEGIN RSA PRIVATE KEY-----  \n", false, true},
		{"-----BEGIN PRIVATE KEYS-----\n", false, false},
		{"-----BEGIN CERTIFICATE REQUEST-----\n", false, false},
		{"-----BEGIN CERTIFICATE", false, false},
		{"", false, false},
	} {
		if got := hasPEM([]byte(tc.data), isCertType); got != tc.cert {
			t.Errorf("hasPEM(%q, cert) = %v", tc.data, got)
		}
		if got := hasPEM([]byte(tc.data), isKeyType); got != tc.key {
			t.Errorf("hasPEM(%q, key) = %v", tc.data, got)
		}
	}
}
