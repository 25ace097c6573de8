package control

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
)

func frame(body string) []byte {
	b := make([]byte, 4+len(body))
	binary.BigEndian.PutUint32(b, uint32(len(body)))
	copy(b[4:], body)
	return b
}

func TestRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	in := Request{Verb: VerbRun, User: "alice", Event: "MessageNew"}
	if err := WriteFrame(&buf, in, MaxRequest); err != nil {
		t.Fatal(err)
	}
	var out Request
	if err := ReadFrame(&buf, &out, MaxRequest); err != nil || out != in {
		t.Fatalf("got %+v, %v", out, err)
	}
	if err := ReadFrame(&buf, &out, MaxRequest); err != io.EOF {
		t.Errorf("at the end: %v, want io.EOF", err)
	}
}

// Garbage is refused as a malformed frame, whatever it is.
func TestStrict(t *testing.T) {
	big := make([]byte, 4)
	binary.BigEndian.PutUint32(big, MaxRequest+1)
	for name, raw := range map[string][]byte{
		"unknown field":  frame(`{"verb":"status","x":1}`),
		"trailing data":  frame(`{"verb":"status"}{"verb":"status"}`),
		"not an object":  frame(`["status"]`),
		"bad json":       frame(`{"verb":`),
		"wrong type":     frame(`{"verb":3}`),
		"zero length":    frame(``),
		"over the limit": big,
		"truncated body": frame(`{"verb":"status"}`)[:10],
		"truncated len":  {0, 0},
		"not a frame":    []byte("GET / HTTP/1.1\r\n\r\n"),
	} {
		var r Request
		err := ReadFrame(bytes.NewReader(raw), &r, MaxRequest)
		if !errors.Is(err, ErrFrame) {
			t.Errorf("%s: %v, want ErrFrame", name, err)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, c := range []struct {
		r   Request
		err string
	}{
		{Request{Verb: VerbStatus}, ""},
		{Request{Verb: VerbReload}, ""},
		{Request{Verb: VerbRun, User: "alice"}, ""},
		{Request{Verb: VerbRun, User: "alice", Event: "MessageNew"}, ""},
		{Request{Verb: VerbRun}, "needs a user"},
		{Request{Verb: VerbStatus, User: "x"}, "takes no user"},
		{Request{}, "no verb"},
		{Request{Verb: "halt"}, "unknown verb"},
	} {
		err := c.r.Validate()
		if c.err == "" && err != nil || c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)) {
			t.Errorf("%+v: %v, want %q", c.r, err, c.err)
		}
	}
}

func FuzzReadRequest(f *testing.F) {
	f.Add(frame(`{"verb":"status"}`))
	f.Add(frame(`{"verb":"run","user":"alice","event":"MessageNew"}`))
	f.Add(frame(`{"verb":"reload"}`))
	f.Add([]byte{0, 0, 0, 1, '{'})
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Request
		if err := ReadFrame(bytes.NewReader(b), &r, MaxRequest); err != nil {
			return
		}
		// What decodes re-encodes to a frame that decodes the same.
		var buf bytes.Buffer
		if err := WriteFrame(&buf, r, MaxRequest); err != nil {
			t.Fatal(err)
		}
		var again Request
		if err := ReadFrame(&buf, &again, MaxRequest); err != nil || again != r {
			t.Fatalf("%+v re-decoded as %+v, %v", r, again, err)
		}
	})
}
