//go:build e2e && linux

package e2e

import (
	"crypto/tls"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imserious/imserious/internal/daemontest"
	"github.com/imserious/imserious/tlsreload/tlstest"
)

// issue makes a server certificate for 127.0.0.1 alone: the host in
// Dovecot's URL, which Dovecot checks against the SAN.
func issue(t *testing.T, ca *tlstest.CA) *tlstest.Leaf {
	t.Helper()
	return ca.Issue(t, tlstest.Options{IPs: []net.IP{net.ParseIP("127.0.0.1")}})
}

// installPair puts a new pair into dir the way Kubernetes updates a
// mounted secret: cert.pem and key.pem are links through ..data, a link
// to a versioned directory, which one rename swaps for the next: the
// pair changes at once, never half. cert.pem holds the chain up to the
// CA, so that Dovecot can trust that file (imseriousctl names it as
// ssl_client_ca_file); dovecot-lda reads it as the mail user, so it and
// the directories above it are open to all, the key not.
func installPair(t *testing.T, ca *tlstest.CA, dir, version string) *big.Int {
	t.Helper()
	leaf := issue(t, ca)
	vdir := filepath.Join(dir, version)
	if err := os.MkdirAll(vdir, 0o755); err != nil {
		t.Fatal(err)
	}
	tlstest.WriteFile(t, filepath.Join(vdir, "cert.pem"), append(append([]byte(nil), leaf.CertPEM...), ca.PEM...), 0o644)
	tlstest.WriteFile(t, filepath.Join(vdir, "key.pem"), leaf.KeyPEM, 0o600)
	tmp := filepath.Join(dir, "..data.tmp")
	os.Remove(tmp)
	if err := os.Symlink(version, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"cert.pem", "key.pem"} {
		link := filepath.Join(dir, f)
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.Symlink(filepath.Join("..data", f), link); err != nil {
			t.Fatal(err)
		}
	}
	return leaf.Cert.SerialNumber
}

// servedSerial connects as Dovecot does, verifying the chain against the
// test CA and the name against 127.0.0.1, and returns the serial of the
// certificate the server presents.
func servedSerial(addr string, ca *tlstest.CA) (*big.Int, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: waitLimit}, "tcp", addr,
		&tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber, nil
}

// TestDovecotOverHTTPS does the deliveries again over HTTPS, Dovecot
// trusting the test CA through ssl_client_ca_file, with a password that
// needs percent-encoding in the URL; then rotates the certificate while
// deliveries go on, and checks that every one of them notified.
func TestDovecotOverHTTPS(t *testing.T) { forEachDovecot(t, testOverHTTPS) }

func testOverHTTPS(t *testing.T, r *release) {
	ca := tlstest.NewCA(t)
	// Not under t.TempDir, which other uids cannot enter; for the 2.4
	// chroot, inside it, where the path imserious reads the certificate
	// from, and imseriousctl names as Dovecot's CA file, is the same.
	tlsDir := filepath.Join(r.openDir(t), "tls")
	first := installPair(t, ca, tlsDir, "v1")
	m := newMail(t, r, fmt.Sprintf("[tls]\ncert = %q\nkey = %q\n", filepath.Join(tlsDir, "cert.pem"), filepath.Join(tlsDir, "key.pem")), ca)
	if s, err := servedSerial(m.d.Addr, ca); err != nil || s.Cmp(first) != 0 {
		t.Fatalf("imserious serves serial %v (%v), want the first certificate's %v", s, err, first)
	}

	t.Run("RFC 2047 subject and from", func(t *testing.T) { m.deliver(t, alice, encodedMessage()) })
	t.Run("no subject", func(t *testing.T) { m.deliver(t, bob, noSubjectMessage()) })
	t.Run("LMTP to two recipients", func(t *testing.T) { m.lmtp(t, lmtpMessage()) })
	t.Run("certificate rotation", func(t *testing.T) { rotate(t, m, ca, tlsDir) })
	m.check(t)
	t.Run("delivery time", m.timing)
}

// rotate delivers to alice one mail after another in a goroutine, swaps
// the certificate while one is in flight, and goes on until imserious
// serves the new certificate and five more deliveries have been made
// after that; every delivery must notify.
func rotate(t *testing.T, m *mail, ca *tlstest.CA, tlsDir string) {
	from := m.d.Mark()
	next, done := make(chan struct{}), make(chan error)
	go func() {
		defer close(done)
		for range next {
			msg := newMessage("From: rotation@example.org\nSubject: during rotation\n", "Rotating.\n")
			_, err := m.dc.tryLDA(m.dc.conf, alice, "", msg.text())
			done <- err
		}
	}()
	defer func() {
		close(next)
		for range done {
		}
	}()

	const before, after = 3, 5
	var (
		second   *big.Int
		rotated  time.Time
		servedAt = -1 // the delivery after which the new certificate was seen served
		n        int
	)
	for n = 0; servedAt < 0 || n < servedAt+after; n++ {
		next <- struct{}{}
		if n == before {
			// The swap happens while delivery n is in flight.
			second = installPair(t, ca, tlsDir, "v2")
			rotated = time.Now()
		}
		if err := <-done; err != nil {
			t.Fatalf("delivery %d: %v", n, err)
		}
		if second != nil && servedAt < 0 {
			// Checked between deliveries, driven by them: once the new
			// certificate is served, every later delivery uses it.
			s, err := servedSerial(m.d.Addr, ca)
			switch {
			case err != nil:
				t.Errorf("after delivery %d: TLS handshake: %v", n, err)
			case s.Cmp(second) == 0:
				servedAt = n + 1
				t.Logf("new certificate served %v after the swap, after delivery %d", time.Since(rotated).Round(time.Millisecond), n)
			case time.Since(rotated) > waitLimit:
				t.Fatalf("still serving serial %v %v after the swap, want %v", s, waitLimit, second)
			}
		}
	}
	m.inbox[alice] += n
	m.d.WaitFrom(t, from, "reload of the new certificate", func(l daemontest.Line) bool {
		return strings.Contains(l.Str("msg"), "reloaded")
	})
	// Each delivery was answered before dovecot-lda exited, so all the
	// notifications are logged; wait for the reader to have them all.
	seen := 0
	m.d.WaitFrom(t, from, fmt.Sprintf("%d notifications for alice", n), func(l daemontest.Line) bool {
		if accepted(alice)(l) {
			seen++
		}
		return seen == n
	})
	if got := len(m.d.Since(from, accepted(alice))); got != n {
		t.Errorf("%d notifications for %d deliveries across the rotation", got, n)
	}
	// The handler coalesces events that come while its command runs, but
	// every one is followed by a run: the runs' counts add up to n.
	sum := 0
	m.d.WaitFrom(t, from, fmt.Sprintf("runs for all %d deliveries", n), func(l daemontest.Line) bool {
		if l.Str("msg") == "command started" && l.Str("user") == alice {
			c, _ := l.Num("count")
			sum += c
		}
		return sum >= n
	})
	runs := m.d.Since(from, func(l daemontest.Line) bool { return l.Str("msg") == "command started" && l.Str("user") == alice })
	m.runs[alice] += len(runs)
	if sum != n {
		t.Errorf("runs for alice cover %d events, want %d", sum, n)
	}
	t.Logf("%d deliveries across the rotation, %d runs", n, len(runs))
}
