package tlsreload

import (
	"bytes"
	"testing"

	"github.com/imserious/imserious/tlsreload/tlstest"
)

// FuzzStoreSet feeds the network process's decoder what a compromised or
// buggy sender could: it must never panic, and a refused payload must
// leave the served certificate alone.
func FuzzStoreSet(f *testing.F) {
	ca := tlstest.NewCA(f)
	a, b := ca.Issue(f, tlstest.Options{}), ca.Issue(f, tlstest.Options{})
	good := encode(f, b)
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add(encode(f, &tlstest.Leaf{CertPEM: a.CertPEM, KeyPEM: b.KeyPEM}))
	f.Add([]byte("\x00\x00\x00\x01x\x00\x00\x00\x01y"))
	f.Add([]byte{})
	initial := encode(f, a)
	f.Fuzz(func(t *testing.T, payload []byte) {
		var s Store
		// Set clears what it is given, and neither the fuzzer's input nor
		// the seed may change.
		if _, err := s.Set(bytes.Clone(initial)); err != nil {
			t.Fatal(err)
		}
		c, err := s.Set(bytes.Clone(payload))
		got, _ := s.GetCertificate(nil)
		if err != nil {
			if c != nil || got.Leaf.SerialNumber.Cmp(a.Cert.SerialNumber) != 0 {
				t.Fatalf("refused payload changed the certificate")
			}
			return
		}
		if got != c || c.Leaf == nil || c.PrivateKey == nil || len(c.Certificate) == 0 {
			t.Fatalf("accepted payload gave an incomplete certificate")
		}
	})
}
