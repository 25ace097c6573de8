package event

import (
	"strings"
	"unicode/utf8"
)

// isControl reports the characters Sanitize replaces: C0 (tab included),
// DEL and C1.
func isControl(r rune) bool {
	return r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f)
}

// needsSanitize is the test Sanitize applies per rune.
func needsSanitize(r rune, size int) bool {
	switch {
	case r == '\t':
		return false
	case isControl(r), r == '\u2028', r == '\u2029':
		return true
	case r == utf8.RuneError && size == 1: // an invalid byte
		return true
	}
	return false
}

// Sanitize makes a string safe for an environment value and a log field:
// NUL is removed (it would end the C string), other control characters
// (C0, DEL and C1 U+0080–U+009F) except tab become a space, so do the
// Unicode line and paragraph separators U+2028 and U+2029, and invalid
// UTF-8 becomes U+FFFD.
//
// Security: the values come from whoever sent the mail. Sanitize keeps
// them from breaking anything that reads the environment line by line; it
// does not make them safe to interpolate into a shell command.
func Sanitize(s string) string {
	// Fast path: most values are clean, and returning s allocates nothing.
	clean := true
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if (c < 0x20 && c != '\t') || c == 0x7f {
				clean = false
				break
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if needsSanitize(r, size) {
			clean = false
			break
		}
		i += size
	}
	if clean {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 2)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		i += size
		switch {
		case r == 0:
			// removed
		case !needsSanitize(r, size):
			b.WriteRune(r)
		case r == utf8.RuneError && size == 1:
			b.WriteRune(utf8.RuneError)
		default:
			b.WriteByte(' ')
		}
	}
	return b.String()
}
