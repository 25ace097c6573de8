package event

import (
	"fmt"
	"mime"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/imserious/imserious/internal/dovecotsamples"
)

// FuzzDecodeHeader holds the decoder of From and Subject (mail headers
// as anyone can write them) to what can be checked from outside: plain
// text without encoded-words or line breaks comes back as it is; the
// result grows at most threefold (a latin1 byte is at most three bytes
// of UTF-8); what mime's encoder writes for UTF-8 text decodes back to
// it; and an encoded-word in each single-byte charset the decoder knows
// gives valid UTF-8, one character per byte.
func FuzzDecodeHeader(f *testing.F) {
	for _, s := range dovecotsamples.Load(f) {
		ev, err := Decode(s.Body)
		if err != nil {
			continue
		}
		for _, p := range []*string{ev.From, ev.Subject} {
			if p != nil {
				f.Add(*p, []byte(*p), uint8(0))
			}
		}
	}
	for _, s := range []string{
		"", "plain", "=?UTF-8?Q?Gr=C3=BC=C3=9Fe?=", "=?utf-8?b?R3LDvMOfZQ==?=", "=?iso-8859-1?q?=E9t=E9?=",
		"=?windows-1252?Q?=80=81?=", "=?x-unknown?q?a?=", "=?utf-8?q?a?=\r\n =?utf-8?q?b?=", "a\n\tb", "=?", "=?=?=?",
		"=?utf-8*en?q?x?=", "=?us-ascii?q?=FF?=",
	} {
		f.Add(s, []byte(s), uint8(1))
	}
	charsets := []string{"iso-8859-1", "latin1", "iso-8859-15", "windows-1252", "us-ascii"}
	f.Fuzz(func(t *testing.T, s string, b []byte, cs uint8) {
		out := DecodeHeader(s)
		if !strings.Contains(s, "=?") && !strings.ContainsAny(s, "\r\n") && out != s {
			t.Fatalf("DecodeHeader(%q) = %q, want it unchanged", s, out)
		}
		if len(out) > 3*len(s) {
			t.Fatalf("DecodeHeader(%q) grew to %d bytes", s, len(out))
		}

		if x := string(b); utf8.ValidString(x) {
			for _, enc := range []mime.WordEncoder{mime.QEncoding, mime.BEncoding} {
				if w := enc.Encode("UTF-8", x); w != x {
					if got := DecodeHeader(w); got != x {
						t.Fatalf("%q encoded as %q decodes as %q", x, w, got)
					}
				}
			}
		}

		var w strings.Builder
		fmt.Fprintf(&w, "=?%s?Q?", charsets[int(cs)%len(charsets)])
		for _, c := range b {
			fmt.Fprintf(&w, "=%02X", c)
		}
		w.WriteString("?=")
		got := DecodeHeader(w.String())
		if len(b) > 0 && (!utf8.ValidString(got) || utf8.RuneCountInString(got) != len(b)) {
			t.Fatalf("%q decodes as %q: want valid UTF-8, %d characters", w.String(), got, len(b))
		}
	})
}
