package listener

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/netip"
	"strings"

	"github.com/imserious/imserious/internal/prefix"
)

// allows reports whether the allow list admits addr.
func (p *policy) allows(addr netip.Addr) bool {
	return len(p.allow) == 0 || prefix.Contains(p.allow, addr)
}

// Sizes of the on-stack buffers for decoding credentials; longer ones are
// decoded on the heap, still correctly.
const (
	maxDecodedCredentials = 192
	maxEncodedCredentials = (maxDecodedCredentials + 2) / 3 * 4
)

// check reports whether header, an Authorization header value, carries the
// configured Basic credentials.
//
// Security-sensitive: user and password are both hashed and both compared,
// with subtle.ConstantTimeCompare over fixed-length SHA-256 digests, so the
// time taken does not tell which one was wrong, nor how long either secret
// is, nor how many leading bytes matched. What does vary with timing (the
// presented header's length and shape) is the client's own input.
func (c *credentials) check(header string) bool {
	var buf [maxDecodedCredentials]byte
	user, pass, ok := parseBasic(header, &buf)
	u := sha256.Sum256(user)
	p := sha256.Sum256(pass)
	okUser := subtle.ConstantTimeCompare(u[:], c.user[:])
	okPass := subtle.ConstantTimeCompare(p[:], c.pass[:])
	return ok && okUser&okPass == 1
}

// parseBasic splits a Basic Authorization header value as
// http.Request.BasicAuth does (case-insensitive scheme, standard padded
// base64, user ending at the first colon), but decodes into buf when it
// fits instead of allocating. The results may alias buf.
func parseBasic(header string, buf *[maxDecodedCredentials]byte) (user, pass []byte, ok bool) {
	const prefix = "Basic "
	if len(header) < len(prefix) || !strings.EqualFold(header[:len(prefix)], prefix) {
		return nil, nil, false
	}
	enc := header[len(prefix):]
	var dec []byte
	if len(enc) <= maxEncodedCredentials {
		var src [maxEncodedCredentials]byte
		n, err := base64.StdEncoding.Decode(buf[:], src[:copy(src[:], enc)])
		if err != nil {
			return nil, nil, false
		}
		dec = buf[:n]
	} else {
		var err error
		if dec, err = base64.StdEncoding.DecodeString(enc); err != nil {
			return nil, nil, false
		}
	}
	return bytes.Cut(dec, []byte{':'})
}
