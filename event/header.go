package event

import (
	"fmt"
	"io"
	"mime"
	"strings"
	"unicode/utf8"
)

var wordDecoder = &mime.WordDecoder{CharsetReader: charsetReader}

// DecodeHeader turns a raw header value as Dovecot sends it (From, Subject)
// into text: it unfolds it, then decodes RFC 2047 encoded-words.
//
// Unfolding replaces a line break (CRLF or LF) followed by spaces or tabs
// with one space, so "part one\n  and part two" reads "part one and part
// two". A line break not followed by whitespace is not a fold and is kept
// (Sanitize turns it into a space later).
//
// Encoded-words may use UTF-8, US-ASCII, ISO-8859-1 (latin1),
// ISO-8859-15 or Windows-1252. When decoding fails (another charset) the
// unfolded raw text is returned: an undecoded subject is more useful to a
// script than none. Malformed encoded-words are left as they are.
func DecodeHeader(s string) string {
	s = unfold(s)
	if !strings.Contains(s, "=?") {
		return s
	}
	d, err := wordDecoder.DecodeHeader(s)
	if err != nil {
		return s
	}
	return d
}

func unfold(s string) string {
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		n := 0 // length of a line break at s[i]
		if s[i] == '\n' {
			n = 1
		} else if s[i] == '\r' && i+1 < len(s) && s[i+1] == '\n' {
			n = 2
		}
		if n > 0 && i+n < len(s) && (s[i+n] == ' ' || s[i+n] == '\t') {
			i += n
			for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
				i++
			}
			b.WriteByte(' ')
			continue
		}
		b.WriteByte(s[i])
		i++
	}
	return b.String()
}

// charsetReader handles the charsets mime.WordDecoder does not know itself
// (it knows exactly "utf-8", "iso-8859-1" and "us-ascii"). The name arrives
// lower-cased; an RFC 2231 language suffix ("utf-8*en") is ignored.
func charsetReader(charset string, input io.Reader) (io.Reader, error) {
	if i := strings.IndexByte(charset, '*'); i >= 0 {
		charset = charset[:i]
	}
	var table *[128]rune // the upper half; nil means latin1
	switch charset {
	case "utf-8", "utf8":
		return input, nil
	case "us-ascii", "ascii", "us", "ansi_x3.4-1968", "iso646-us":
		table = &asciiHigh
	case "iso-8859-1", "iso8859-1", "iso_8859-1", "latin1", "latin-1", "l1", "cp819", "iso-ir-100":
	case "iso-8859-15", "iso8859-15", "iso_8859-15", "latin9", "latin-9", "l9":
		table = &iso885915High
	case "windows-1252", "cp1252", "x-cp1252":
		table = &windows1252High
	default:
		return nil, fmt.Errorf("unsupported charset %q", charset)
	}
	in, err := io.ReadAll(input)
	if err != nil {
		return nil, fmt.Errorf("reading %s encoded-word: %w", charset, err)
	}
	out := make([]byte, 0, len(in)+len(in)/2)
	for _, c := range in {
		r := rune(c)
		if c >= 0x80 && table != nil {
			r = table[c-0x80]
		}
		out = utf8.AppendRune(out, r)
	}
	return strings.NewReader(string(out)), nil
}

var asciiHigh = func() (t [128]rune) {
	for i := range t {
		t[i] = utf8.RuneError
	}
	return t
}()

// iso885915High is latin1 with eight code points changed (€ Š š Ž ž Œ œ Ÿ).
var iso885915High = func() (t [128]rune) {
	for i := range t {
		t[i] = rune(0x80 + i)
	}
	for c, r := range map[byte]rune{
		0xA4: '€', 0xA6: 'Š', 0xA8: 'š', 0xB4: 'Ž',
		0xB8: 'ž', 0xBC: 'Œ', 0xBD: 'œ', 0xBE: 'Ÿ',
	} {
		t[c-0x80] = r
	}
	return t
}()

// windows1252High is latin1 with printable characters in 0x80–0x9F; the
// five bytes Windows-1252 leaves undefined become U+FFFD.
var windows1252High = func() (t [128]rune) {
	for i := range t {
		t[i] = rune(0x80 + i)
	}
	copy(t[:32], []rune{
		'€', '\uFFFD', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\uFFFD', 'Ž', '\uFFFD',
		'\uFFFD', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\uFFFD', 'ž', 'Ÿ',
	})
	return t
}()
