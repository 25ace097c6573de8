package privsep

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

func header(typ, n uint32) []byte {
	b := make([]byte, HeaderLen)
	binary.BigEndian.PutUint32(b[0:4], typ)
	binary.BigEndian.PutUint32(b[4:8], n)
	return b
}

func TestFrameRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name    string
		typ     uint32
		payload []byte
	}{
		{"empty", 1, nil},
		{"small", 0xdeadbeef, []byte(`{"user":"alice"}`)},
		{"max", 7, bytes.Repeat([]byte{0xa5}, MaxPayload)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := EncodeFrame(tc.typ, tc.payload)
			if err != nil {
				t.Fatalf("EncodeFrame: %v", err)
			}
			if len(b) != HeaderLen+len(tc.payload) {
				t.Fatalf("frame is %d bytes, want %d", len(b), HeaderLen+len(tc.payload))
			}
			if want := header(tc.typ, uint32(len(tc.payload))); !bytes.Equal(b[:HeaderLen], want) {
				t.Fatalf("header % x, want % x", b[:HeaderLen], want)
			}
			typ, p, err := DecodeFrame(b)
			if err != nil {
				t.Fatalf("DecodeFrame: %v", err)
			}
			if typ != tc.typ || !bytes.Equal(p, tc.payload) {
				t.Fatalf("decoded type %d, %d bytes; want type %d, %d bytes", typ, len(p), tc.typ, len(tc.payload))
			}
		})
	}
}

func TestEncodeFrameOversize(t *testing.T) {
	_, err := EncodeFrame(1, make([]byte, MaxPayload+1))
	if !errors.Is(err, ErrOversize) {
		t.Fatalf("EncodeFrame(MaxPayload+1) = %v, want ErrOversize", err)
	}
}

// A frame begun with StartFrame and sealed is what EncodeFrame makes of
// the same payload, whatever buf held; a payload over MaxPayload is not
// sealed.
func TestStartSealFrame(t *testing.T) {
	for _, n := range []int{0, 1, MaxPayload} {
		payload := bytes.Repeat([]byte{0x5a}, n)
		f := append(StartFrame([]byte("left over from the last frame")), payload...)
		if err := SealFrame(f, 9); err != nil {
			t.Fatalf("SealFrame of %d bytes: %v", n, err)
		}
		want, _ := EncodeFrame(9, payload)
		if !bytes.Equal(f, want) {
			t.Fatalf("%d bytes: sealed % x..., want % x...", n, f[:HeaderLen], want[:HeaderLen])
		}
	}
	if err := SealFrame(append(StartFrame(nil), make([]byte, MaxPayload+1)...), 9); !errors.Is(err, ErrOversize) {
		t.Errorf("SealFrame over MaxPayload = %v, want ErrOversize", err)
	}
	if err := SealFrame(make([]byte, HeaderLen-1), 9); !errors.Is(err, ErrTruncated) {
		t.Errorf("SealFrame without a header = %v, want ErrTruncated", err)
	}
}

func TestDecodeFrameErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		want error
	}{
		{"nothing", nil, ErrTruncated},
		{"truncated header", header(1, 0)[:HeaderLen-1], ErrTruncated},
		{"truncated payload", append(header(1, 5), "abcd"...), ErrTruncated},
		{"header only, payload announced", header(1, 1), ErrTruncated},
		{"trailing garbage", append(header(1, 2), "abc"...), ErrMalformed},
		{"oversize length", header(1, MaxPayload+1), ErrOversize},
		{"oversize length with payload", append(header(1, MaxPayload+1), make([]byte, MaxPayload+1)...), ErrOversize},
		{"max uint32 length", header(1, 0xffffffff), ErrOversize},
		{"http garbage", []byte("PUT /notify HTTP/1.1\r\n\r\n"), ErrOversize},
		{"small garbage", []byte("\x00\x00\x00\x01\x00\x00\x00\x00junk"), ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := DecodeFrame(tc.in)
			if !errors.Is(err, tc.want) {
				t.Fatalf("DecodeFrame = %v, want %v", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "privsep: decode") {
				t.Errorf("error %q does not say what failed", err)
			}
		})
	}
}

func FuzzDecodeFrame(f *testing.F) {
	f.Add([]byte{})
	f.Add(header(1, 0))
	f.Add(append(header(2, 3), "abc"...))
	f.Add(append(header(2, 3), "abcd"...))
	f.Add(header(3, MaxPayload+1))
	f.Add([]byte("PUT /notify HTTP/1.1\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		typ, p, err := DecodeFrame(b)
		if err != nil {
			if !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrOversize) {
				t.Fatalf("DecodeFrame(% x): unexpected error kind %v", b, err)
			}
			return
		}
		if len(p) > MaxPayload {
			t.Fatalf("accepted a %d-byte payload", len(p))
		}
		again, err := EncodeFrame(typ, p)
		if err != nil {
			t.Fatalf("re-encode of accepted frame: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("re-encoded % x, decoded from % x", again, b)
		}
	})
}

func TestDecodeJSON(t *testing.T) {
	type msg struct {
		User  string `json:"user"`
		Count int    `json:"count"`
	}
	for _, tc := range []struct {
		name string
		in   string
		ok   bool
	}{
		{"valid", `{"user":"alice","count":2}`, true},
		{"valid, trailing white space", "{\"user\":\"alice\"}\n ", true},
		{"unknown field", `{"user":"alice","uid":0}`, false},
		{"trailing data", `{"user":"alice"}x`, false},
		{"trailing brace", `{"user":"alice"}}`, false},
		{"two values", `{"user":"alice"}{"user":"bob"}`, false},
		{"two values, space", `{"user":"alice"} {"user":"bob"}`, false},
		{"empty", ``, false},
		{"wrong type", `{"count":"2"}`, false},
		{"truncated", `{"user":"al`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var m msg
			err := DecodeJSON([]byte(tc.in), &m)
			if tc.ok && err != nil {
				t.Fatalf("DecodeJSON(%q): %v", tc.in, err)
			}
			if !tc.ok && !errors.Is(err, ErrMalformed) {
				t.Fatalf("DecodeJSON(%q) = %v, want ErrMalformed", tc.in, err)
			}
		})
	}
	var m msg
	if err := DecodeJSON([]byte(`{"user":"alice","count":2}`), &m); err != nil || m != (msg{"alice", 2}) {
		t.Fatalf("decoded %+v, %v", m, err)
	}
}

func TestEncodeJSON(t *testing.T) {
	b, err := EncodeJSON(map[string]int{"a": 1})
	if err != nil || string(b) != `{"a":1}` {
		t.Fatalf("EncodeJSON = %q, %v", b, err)
	}
	if _, err := EncodeJSON(strings.Repeat("x", MaxPayload)); !errors.Is(err, ErrOversize) {
		t.Fatalf("EncodeJSON of an oversize value = %v, want ErrOversize", err)
	}
	if _, err := EncodeJSON(make(chan int)); err == nil {
		t.Fatal("EncodeJSON of a channel succeeded")
	}
}
