package privsep

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

const (
	// HeaderLen is the size of a frame header: the message type and the
	// payload length, each a big-endian uint32.
	HeaderLen = 8
	// MaxPayload is the hard limit on a payload. It bounds what a
	// compromised peer can make the receiver allocate, and it is large
	// enough for a certificate chain and key sent as one message.
	MaxPayload = 128 << 10
	// MaxFDs is the most descriptors one message may carry; no message of
	// the protocol needs more, so more is an attack or a bug.
	MaxFDs = 4
)

var (
	// ErrOversize: a payload or packet over MaxPayload.
	ErrOversize = errors.New("message too large")
	// ErrTruncated: fewer bytes than the header or its length announces.
	ErrTruncated = errors.New("message truncated")
	// ErrMalformed: bytes after the announced payload, an unexpected
	// control message, or a payload that does not decode strictly.
	ErrMalformed = errors.New("malformed message")
	// ErrTooManyFDs: more than MaxFDs descriptors on one message.
	ErrTooManyFDs = errors.New("too many descriptors")
)

// EncodeFrame returns the header followed by payload.
func EncodeFrame(typ uint32, payload []byte) ([]byte, error) {
	if len(payload) > MaxPayload {
		return nil, fmt.Errorf("privsep: encode type %d: payload of %d bytes: %w", typ, len(payload), ErrOversize)
	}
	b := make([]byte, HeaderLen+len(payload))
	binary.BigEndian.PutUint32(b[0:4], typ)
	binary.BigEndian.PutUint32(b[4:8], uint32(len(payload)))
	copy(b[HeaderLen:], payload)
	return b, nil
}

// NewFrame returns the header of a frame for a payload of exactly n
// bytes, with room for them: the caller appends the payload and sends the
// frame with Conn.TrySendFrame, which checks that the length matches.
func NewFrame(typ uint32, n int) ([]byte, error) {
	if n < 0 || n > MaxPayload {
		return nil, fmt.Errorf("privsep: encode type %d: payload of %d bytes: %w", typ, n, ErrOversize)
	}
	b := make([]byte, HeaderLen, HeaderLen+n)
	binary.BigEndian.PutUint32(b[0:4], typ)
	binary.BigEndian.PutUint32(b[4:8], uint32(n))
	return b, nil
}

// StartFrame empties buf and reserves a frame header in it, for a
// payload appended piece by piece whose length is not known in advance;
// SealFrame writes the header once it is complete.
func StartFrame(buf []byte) []byte {
	return append(buf[:0], make([]byte, HeaderLen)...)
}

// SealFrame writes the header of f, which StartFrame began: its type,
// and the length of what follows the header, at most MaxPayload.
func SealFrame(f []byte, typ uint32) error {
	if len(f) < HeaderLen {
		return fmt.Errorf("privsep: seal type %d: %d bytes, no header: %w", typ, len(f), ErrTruncated)
	}
	if len(f)-HeaderLen > MaxPayload {
		return fmt.Errorf("privsep: seal type %d: payload of %d bytes: %w", typ, len(f)-HeaderLen, ErrOversize)
	}
	binary.BigEndian.PutUint32(f[0:4], typ)
	binary.BigEndian.PutUint32(f[4:8], uint32(len(f)-HeaderLen))
	return nil
}

// DecodeFrame parses exactly one frame: b must be the header and exactly
// the payload it announces. The payload aliases b.
func DecodeFrame(b []byte) (typ uint32, payload []byte, err error) {
	if len(b) < HeaderLen {
		return 0, nil, fmt.Errorf("privsep: decode: %d bytes, header needs %d: %w", len(b), HeaderLen, ErrTruncated)
	}
	typ = binary.BigEndian.Uint32(b[0:4])
	n := binary.BigEndian.Uint32(b[4:8])
	// Compared as uint64 so a huge length cannot wrap on 32-bit systems.
	if uint64(n) > MaxPayload {
		return 0, nil, fmt.Errorf("privsep: decode type %d: length %d: %w", typ, n, ErrOversize)
	}
	switch have := uint64(len(b) - HeaderLen); {
	case have < uint64(n):
		return 0, nil, fmt.Errorf("privsep: decode type %d: %d of %d payload bytes: %w", typ, have, n, ErrTruncated)
	case have > uint64(n):
		return 0, nil, fmt.Errorf("privsep: decode type %d: %d bytes after a payload of %d: %w", typ, have-uint64(n), n, ErrMalformed)
	}
	return typ, b[HeaderLen:], nil
}

// EncodeJSON marshals v as a payload and refuses one over MaxPayload, so
// the error names the value rather than surfacing later in Send.
func EncodeJSON(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("privsep: encode %T: %w", v, err)
	}
	if len(b) > MaxPayload {
		return nil, fmt.Errorf("privsep: encode %T: %d bytes: %w", v, len(b), ErrOversize)
	}
	return b, nil
}

// DecodeJSON decodes payload into v strictly: unknown fields, an empty
// payload, and anything but white space after the one value are errors
// wrapping ErrMalformed. Strict because the sender may be compromised and
// a lenient decoder would let it smuggle fields a later version trusts.
func DecodeJSON(payload []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("privsep: decode %T: %w: %w", v, ErrMalformed, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		if err == nil {
			err = errors.New("a second value follows")
		}
		return fmt.Errorf("privsep: decode %T: trailing data at offset %d: %w: %w", v, dec.InputOffset(), ErrMalformed, err)
	}
	return nil
}
