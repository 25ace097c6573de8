// Package tlsreload owns the TLS certificate of spec §6 on both sides of the
// privilege separation. In the parent it loads and checks the certificate
// chain and key (Load), watches the files and re-reads them when they
// change, periodically and on request (Reloader), and hands each new pair on
// as PEM bytes. In the network process, which never opens the key file, the
// Store decodes and checks those bytes again and swaps the certificate in
// atomically behind tls.Config.GetCertificate.
package tlsreload

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/imserious/imserious/privsep"
)

// WarnBefore is how close to its expiry a certificate is warned about, at
// start, at every reload and by -n.
const WarnBefore = 14 * 24 * time.Hour

// MaxPairSize is the largest encoded pair (certificate chain, key and two
// length words): it travels as one privsep message. A chain of a handful of
// certificates takes a few KiB, so a pair near this size is not a server
// certificate.
const MaxPairSize = privsep.MaxPayload

// Roles name the file a FileError is about.
const (
	RoleCert = "certificate"
	RoleKey  = "key"
)

// FileError says which of the two files could not be used, so the
// configuration check can point at the right key.
type FileError struct {
	Role string // RoleCert or RoleKey
	Path string
	Err  error
}

func (e *FileError) Error() string { return e.Role + " " + e.Path + ": " + e.Err.Error() }
func (e *FileError) Unwrap() error { return e.Err }

// Pair is a certificate chain and its key as read from the files, with the
// leaf certificate parsed for logging and expiry checks.
type Pair struct {
	CertFile, KeyFile string
	CertPEM, KeyPEM   []byte
	Leaf              *x509.Certificate
	Chain             int // certificates in the chain, leaf included
}

// Load reads the certificate chain and key files and checks them as the
// network process will: every PEM block complete, every certificate of the
// chain parseable, the key matching the leaf, and the encoded pair within
// MaxPairSize. Errors are *FileError, or *SwappedError when the two files
// look given the wrong way round.
//
// Security: this runs in the privileged parent on files an operator names;
// a FIFO or device there would block or flood it, so only regular files are
// read, and no more than MaxPairSize bytes of each.
func Load(certFile, keyFile string) (*Pair, error) {
	certPEM, err := readFile(certFile)
	if err != nil {
		return nil, &FileError{RoleCert, certFile, err}
	}
	keyPEM, err := readFile(keyFile)
	if err != nil {
		return nil, &FileError{RoleKey, keyFile, err}
	}
	if n := encodedLen(certPEM, keyPEM); n > MaxPairSize {
		return nil, &FileError{RoleCert, certFile, fmt.Errorf("certificate and key %s together take %d bytes, more than the %d the network process accepts", keyFile, n, MaxPairSize)}
	}
	cert, err := parsePair(certPEM, keyPEM)
	if err != nil {
		// The likeliest slip with two PEM files: each named at the
		// other's key. Say so rather than "no CERTIFICATE block".
		if hasPEM(certPEM, isKeyType) && hasPEM(keyPEM, isCertType) {
			return nil, &SwappedError{CertFile: certFile, KeyFile: keyFile}
		}
		var fe *FileError
		if errors.As(err, &fe) {
			fe.Path = certFile
			if fe.Role == RoleKey {
				fe.Path = keyFile
			}
			var m *MismatchError
			if errors.As(err, &m) {
				m.CertFile = certFile
			}
		}
		return nil, err
	}
	return &Pair{CertFile: certFile, KeyFile: keyFile, CertPEM: certPEM, KeyPEM: keyPEM,
		Leaf: cert.Leaf, Chain: len(cert.Certificate)}, nil
}

func readFile(name string) ([]byte, error) {
	// O_NONBLOCK so that opening a FIFO does not wait for a writer; it
	// changes nothing for a regular file.
	f, err := os.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, unwrapPath(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, unwrapPath(err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("not a regular file (%s)", fi.Mode().Type())
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxPairSize+1))
	if err != nil {
		return nil, unwrapPath(err)
	}
	if len(b) > MaxPairSize {
		return nil, fmt.Errorf("larger than %d bytes", MaxPairSize)
	}
	return b, nil
}

// unwrapPath drops the *PathError's own repetition of the path, which
// FileError already names, keeping the cause (errors.Is still works).
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// SwappedError is a pair that does not load because the certificate file
// holds a private key and the key file a certificate.
type SwappedError struct {
	CertFile, KeyFile string
}

func (e *SwappedError) Error() string {
	return "tls: cert and key look swapped: " + e.CertFile + " holds a private key and " + e.KeyFile + " a certificate"
}

func isCertType(t string) bool { return t == "CERTIFICATE" }
func isKeyType(t string) bool  { return t == "PRIVATE KEY" || strings.HasSuffix(t, " PRIVATE KEY") }

// hasPEM reports whether data has a PEM block whose type want accepts. It
// reads only the "-----BEGIN TYPE-----" lines: nothing is decoded, so a
// private key where a certificate was expected is not copied anywhere.
func hasPEM(data []byte, want func(string) bool) bool {
	const begin, dashes = "-----BEGIN ", "-----"
	for rest := data; ; {
		i := bytes.Index(rest, []byte(begin))
		if i < 0 {
			return false
		}
		rest = rest[i+len(begin):]
		line := rest
		if j := bytes.IndexByte(line, '\n'); j >= 0 {
			line = line[:j]
		}
		if t, ok := bytes.CutSuffix(bytes.TrimRight(line, " \t\r"), []byte(dashes)); ok && want(string(t)) {
			return true
		}
	}
}

// MismatchError is a key that parses but is not the leaf certificate's.
type MismatchError struct {
	CertFile string // "" in the network process, which has no file
	Err      error
}

func (e *MismatchError) Error() string {
	if e.CertFile == "" {
		return "does not match the certificate: " + e.Err.Error()
	}
	return "does not match the certificate " + e.CertFile + ": " + e.Err.Error()
}
func (e *MismatchError) Unwrap() error { return e.Err }

// parsePair is the one parser both processes use. Errors are *FileError
// without a Path.
func parsePair(certPEM, keyPEM []byte) (tls.Certificate, error) {
	certs, err := pemBlocks(certPEM, isCertType)
	if err != nil {
		return tls.Certificate{}, &FileError{Role: RoleCert, Err: err}
	}
	if len(certs) == 0 {
		return tls.Certificate{}, &FileError{Role: RoleCert, Err: errors.New("no CERTIFICATE block")}
	}
	// tls.X509KeyPair parses only the leaf; a damaged intermediate would
	// otherwise be served and fail every client's verification.
	for i, b := range certs {
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			return tls.Certificate{}, &FileError{Role: RoleCert, Err: fmt.Errorf("certificate %d of the chain: %w", i+1, err)}
		}
	}
	keys, err := pemBlocks(keyPEM, isKeyType)
	// Only counted: the decoded key must not linger until the garbage
	// collector reuses its memory (see Store.Set).
	defer func() {
		for _, b := range keys {
			clear(b.Bytes)
		}
	}()
	if err != nil {
		return tls.Certificate{}, &FileError{Role: RoleKey, Err: err}
	}
	if len(keys) == 0 {
		return tls.Certificate{}, &FileError{Role: RoleKey, Err: errors.New("no PRIVATE KEY block")}
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// crypto/tls has no typed error for this; its message has said
		// "does not match" since Go 1.0.
		if strings.Contains(err.Error(), "does not match") {
			err = &MismatchError{Err: err}
		}
		return tls.Certificate{}, &FileError{Role: RoleKey, Err: err}
	}
	if cert.Leaf == nil {
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			return tls.Certificate{}, &FileError{Role: RoleCert, Err: err}
		}
		cert.Leaf = leaf
	}
	return cert, nil
}

// pemBlocks returns the blocks of data whose type want accepts. A file
// caught half-written, or damaged, has a BEGIN line that pem.Decode skips
// silently; counting BEGIN lines against decoded blocks catches it.
func pemBlocks(data []byte, want func(string) bool) ([]*pem.Block, error) {
	begins := bytes.Count(data, []byte("-----BEGIN "))
	var out []*pem.Block
	n := 0
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		n++
		if want(b.Type) {
			out = append(out, b)
		}
	}
	if n != begins {
		return nil, fmt.Errorf("%d of %d PEM blocks are incomplete or damaged (file written while read?)", begins-n, begins)
	}
	return out, nil
}

// Equal reports whether p and q hold the same bytes; a nil Pair equals
// nothing.
func (p *Pair) Equal(q *Pair) bool {
	return p != nil && q != nil && bytes.Equal(p.CertPEM, q.CertPEM) && bytes.Equal(p.KeyPEM, q.KeyPEM)
}

// Names returns the leaf's DNS names, IP addresses, e-mail addresses and
// URIs, which is what clients match.
func (p *Pair) Names() []string {
	l := p.Leaf
	out := append([]string(nil), l.DNSNames...)
	for _, ip := range l.IPAddresses {
		out = append(out, ip.String())
	}
	out = append(out, l.EmailAddresses...)
	for _, u := range l.URIs {
		out = append(out, u.String())
	}
	return out
}

// Serial is the leaf's serial number as SerialHex writes it.
func (p *Pair) Serial() string { return SerialHex(p.Leaf) }

// SerialHex writes a certificate's serial number as openssl x509 -serial
// does: upper-case hex, an even number of digits. Both processes log it, so
// the parent's "reloaded" line can be matched with the network process's
// "installed" one and with the file.
func SerialHex(c *x509.Certificate) string {
	s := strings.ToUpper(c.SerialNumber.Text(16))
	if len(s)%2 == 1 {
		s = "0" + s
	}
	return s
}

// LogAttrs describes the pair for a log record.
func (p *Pair) LogAttrs() []any {
	return []any{
		"subject", p.Leaf.Subject.String(),
		"names", strings.Join(p.Names(), ","),
		"issuer", p.Leaf.Issuer.String(),
		"serial", p.Serial(),
		"not_after", p.Leaf.NotAfter.UTC(),
		"chain", p.Chain,
		"cert", p.CertFile,
		"key", p.KeyFile,
	}
}

// Remaining is how long the leaf is still valid at now; negative once it
// has expired.
func (p *Pair) Remaining(now time.Time) time.Duration {
	return p.Leaf.NotAfter.Sub(now)
}

// Summary is the one-line description -n prints.
func (p *Pair) Summary(now time.Time) string {
	names := strings.Join(p.Names(), ", ")
	if names == "" {
		names = "none"
	}
	when := "in " + Approx(p.Remaining(now))
	if p.Remaining(now) < 0 {
		when = Approx(-p.Remaining(now)) + " ago"
	}
	return fmt.Sprintf("certificate %q (names: %s), issued by %q, serial %s, expires %s (%s)",
		p.Leaf.Subject.String(), names, p.Leaf.Issuer.String(), p.Serial(),
		p.Leaf.NotAfter.UTC().Format(time.RFC3339), when)
}

// Approx formats a duration in the largest sensible units, for people:
// "89 days", "3 days 4 hours", "5 hours", "12 minutes".
func Approx(d time.Duration) string {
	plural := func(n int64, unit string) string {
		if n == 1 {
			return "1 " + unit
		}
		return fmt.Sprintf("%d %ss", n, unit)
	}
	switch days := int64(d / (24 * time.Hour)); {
	case days >= 10:
		return plural(days, "day")
	case days >= 1:
		if h := int64(d/time.Hour) % 24; h > 0 {
			return plural(days, "day") + " " + plural(h, "hour")
		}
		return plural(days, "day")
	case d >= time.Hour:
		return plural(int64(d/time.Hour), "hour")
	default:
		return plural(int64(d/time.Minute), "minute")
	}
}

// encodedLen is the size of EncodePair's result.
func encodedLen(certPEM, keyPEM []byte) int {
	return 8 + len(certPEM) + len(keyPEM)
}

// Encode is the pair as the network process receives it.
func (p *Pair) Encode() ([]byte, error) {
	return EncodePair(p.CertPEM, p.KeyPEM)
}

// EncodePair frames a certificate chain and key as one message payload:
// a big-endian uint32 length and the chain's PEM, then the same for the
// key. Nothing else: the receiver decodes it strictly.
func EncodePair(certPEM, keyPEM []byte) ([]byte, error) {
	n := encodedLen(certPEM, keyPEM)
	if n > MaxPairSize {
		return nil, fmt.Errorf("tls pair: %d bytes, more than %d", n, MaxPairSize)
	}
	b := make([]byte, 0, n)
	b = binary.BigEndian.AppendUint32(b, uint32(len(certPEM)))
	b = append(b, certPEM...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(keyPEM)))
	return append(b, keyPEM...), nil
}

// DecodePair splits what EncodePair made. Both parts must be non-empty and
// exactly fill p. The results alias p.
func DecodePair(p []byte) (certPEM, keyPEM []byte, err error) {
	if len(p) > MaxPairSize {
		return nil, nil, fmt.Errorf("tls pair: %d bytes, more than %d", len(p), MaxPairSize)
	}
	next := func(what string) ([]byte, error) {
		if len(p) < 4 {
			return nil, fmt.Errorf("tls pair: truncated before the %s length", what)
		}
		n := uint64(binary.BigEndian.Uint32(p))
		p = p[4:]
		switch {
		case n == 0:
			return nil, fmt.Errorf("tls pair: empty %s", what)
		case n > uint64(len(p)) || n > math.MaxInt32:
			return nil, fmt.Errorf("tls pair: %s of %d bytes, only %d left", what, n, len(p))
		}
		b := p[:n:n]
		p = p[n:]
		return b, nil
	}
	if certPEM, err = next("certificate"); err != nil {
		return nil, nil, err
	}
	if keyPEM, err = next("key"); err != nil {
		return nil, nil, err
	}
	if len(p) != 0 {
		return nil, nil, fmt.Errorf("tls pair: %d bytes after the key", len(p))
	}
	return certPEM, keyPEM, nil
}
