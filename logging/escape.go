package logging

import (
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// Security: everything below decides whether a log line can be split or
// forged. Values come from the network (user names, subjects, peers): a
// raw newline would start a fake record, a carriage return or an escape
// sequence would rewrite the terminal, a bidi override would reorder what
// the operator reads. So every character that is not printable, and every
// invalid byte, is escaped; printable non-ASCII text stays readable.

const hexDigits = "0123456789abcdef"

// needsQuote reports whether a text-format value must be quoted: empty,
// or containing a space, '"', '=', '\\', or anything escaped.
func needsQuote(s string) bool {
	if s == "" {
		return true
	}
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c <= ' ' || c == '"' || c == '=' || c == '\\' || c == 0x7f {
				return true
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && size == 1) || !unicode.IsPrint(r) {
			return true
		}
		i += size
	}
	return false
}

// appendText appends s as a text-format value: bare when that is
// unambiguous, else quoted and escaped like strconv.Quote. At most limit
// bytes of content are written; a longer value ends in "…".
func appendText(buf []byte, s string, limit int) []byte {
	if !needsQuote(s) {
		return appendCut(buf, s, limit)
	}
	return appendQuoted(buf, s, false, limit)
}

// appendCut appends s, cut after limit bytes on a character boundary with
// "…".
func appendCut(buf []byte, s string, limit int) []byte {
	if len(s) <= limit {
		return append(buf, s...)
	}
	cut := limit
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return append(append(buf, s[:cut]...), "…"...)
}

// appendMessage appends a record's message in a text format: as it is when
// it only has printable characters and spaces (messages are sentences),
// else quoted and escaped.
func appendMessage(buf []byte, s string, limit int) []byte {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && size == 1) || !unicode.IsPrint(r) {
			return appendQuoted(buf, s, false, limit)
		}
		i += size
	}
	return appendCut(buf, s, limit)
}

// appendJSONString appends s as a JSON string. Beyond what JSON requires,
// DEL, U+2028/U+2029 and other unprintable characters are escaped too,
// and invalid bytes become U+FFFD.
func appendJSONString(buf []byte, s string, limit int) []byte {
	return appendQuoted(buf, s, true, limit)
}

// appendQuoted appends s in double quotes with escapes: JSON escapes when
// json is set, Go escapes (\x.. for single bytes) otherwise. Content is
// cut after limit bytes of output, on a character boundary, with "…".
func appendQuoted(buf []byte, s string, json bool, limit int) []byte {
	buf = append(buf, '"')
	start := len(buf)
	var tmp [12]byte
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		e := tmp[:0]
		switch {
		case r == '"' || r == '\\':
			e = append(e, '\\', byte(r))
		case r == '\n':
			e = append(e, '\\', 'n')
		case r == '\r':
			e = append(e, '\\', 'r')
		case r == '\t':
			e = append(e, '\\', 't')
		case r == utf8.RuneError && size == 1:
			if json {
				e = append(e, `\ufffd`...)
			} else {
				e = append(e, '\\', 'x', hexDigits[s[i]>>4], hexDigits[s[i]&0xf])
			}
		case r < 0x80 && (r < ' ' || r == 0x7f):
			if json {
				e = append(e, '\\', 'u', '0', '0', hexDigits[r>>4], hexDigits[r&0xf])
			} else {
				e = append(e, '\\', 'x', hexDigits[r>>4], hexDigits[r&0xf])
			}
		case r < 0x80 || unicode.IsPrint(r):
			e = append(e, s[i:i+size]...)
		case r <= 0xffff:
			e = appendU4(e, r)
		case json:
			r1, r2 := utf16.EncodeRune(r)
			e = appendU4(appendU4(e, r1), r2)
		default:
			e = append(e, '\\', 'U', '0', '0',
				hexDigits[r>>20&0xf], hexDigits[r>>16&0xf], hexDigits[r>>12&0xf],
				hexDigits[r>>8&0xf], hexDigits[r>>4&0xf], hexDigits[r&0xf])
		}
		if len(buf)-start+len(e) > limit {
			buf = append(buf, "…"...)
			break
		}
		buf = append(buf, e...)
		i += size
	}
	return append(buf, '"')
}

func appendU4(e []byte, r rune) []byte {
	return append(e, '\\', 'u', hexDigits[r>>12&0xf], hexDigits[r>>8&0xf], hexDigits[r>>4&0xf], hexDigits[r&0xf])
}
