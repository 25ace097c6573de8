package tlsreload

import (
	"crypto/tls"
	"errors"
	"sync/atomic"
)

// Store is the network process's certificate: set from the bytes the
// parent sends, read by every handshake. Connections already established
// keep the certificate they were made with; only new handshakes see a
// replacement. The zero Store is empty and ready to use.
type Store struct {
	cert atomic.Pointer[tls.Certificate]
}

// errEmpty is what a handshake gets before the first Set, which the
// network process never lets happen by not serving until it has one.
var errEmpty = errors.New("tlsreload: no certificate yet")

// Set decodes a payload made by EncodePair, parses and checks the pair
// again, and makes it the certificate new handshakes get. On error the
// current certificate stays. Set clears payload before it returns, on
// success and on error alike: the caller must not use it afterwards.
//
// Security: the payload comes over a socket from another process; it is
// decoded strictly and checked as completely as Load checks the files, so
// a malformed or mismatched pair is refused rather than served. It holds
// the private key, and the network process keeps no copy of the key but
// the parsed one in the tls.Certificate crypto/tls serves: the PEM is
// wiped here, and the DER blocks parsePair decodes are wiped there. What
// Go leaves beyond reach, until the garbage collector reuses the memory:
// the DER copy tls.X509KeyPair decodes internally, the intermediate
// values of the key's parsing, and whatever buffer the payload was read
// into before the caller got it (the privsep receive buffer).
func (s *Store) Set(payload []byte) (*tls.Certificate, error) {
	defer clear(payload)
	certPEM, keyPEM, err := DecodePair(payload)
	if err != nil {
		return nil, err
	}
	cert, err := parsePair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	// parsePair succeeded, so these hold; a nil leaf would crash logging
	// and GetCertificate's callers later, far from the cause.
	if cert.Leaf == nil || len(cert.Certificate) == 0 || cert.PrivateKey == nil {
		return nil, errors.New("tlsreload: parsed pair is incomplete")
	}
	s.cert.Store(&cert)
	return &cert, nil
}

// Current returns the certificate being served, nil before the first Set.
func (s *Store) Current() *tls.Certificate {
	return s.cert.Load()
}

// GetCertificate is for tls.Config.GetCertificate.
func (s *Store) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c := s.cert.Load(); c != nil {
		return c, nil
	}
	return nil, errEmpty
}

// TLSConfig returns a server configuration serving the store's certificate
// with TLS 1.2 at least.
func (s *Store) TLSConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: s.GetCertificate}
}
