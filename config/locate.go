package config

import (
	"strconv"
	"strings"
)

// BurntSushi/toml does not expose the line of a key, and an error without a
// line is useless to an operator with a long file. locate scans the raw
// text once, understanding just enough TOML to know where each key, table
// header and array element starts: comments, the four string forms
// (multi-line ones included, so their contents are not taken for keys),
// arrays and inline tables, dotted and quoted keys, and [[array]] headers.
//
// It runs on text the TOML decoder has accepted, but never trusts that:
// every loop makes progress and unknown input is skipped to the end of the
// line, so garbage gives missing lines, not a hang or a panic (FuzzLocate).

// indexKey is the path element for the i-th (0-based) element of an array
// of tables. The NUL keeps it apart from any key a sane file contains.
func indexKey(i int) string { return "\x00#" + strconv.Itoa(i) }

// pathKey joins a key path into a map key.
func pathKey(path []string) string { return strings.Join(path, "\x1f") }

type locator struct {
	lines map[string]int // pathKey -> first line where the key or table appears
}

// line returns the line of path, or of its longest located prefix (a
// required key that is missing is reported at its table's header), or 0.
func (l *locator) line(path []string) int {
	if l == nil {
		return 0
	}
	for n := len(path); n > 0; n-- {
		if ln, ok := l.lines[pathKey(path[:n])]; ok {
			return ln
		}
	}
	return 0
}

type scanner struct {
	s      string
	i      int
	line   int
	lines  map[string]int
	arrays map[string]int // pathKey of an array of tables -> elements so far
}

func locate(src string) *locator {
	sc := &scanner{s: src, line: 1, lines: map[string]int{}, arrays: map[string]int{}}
	sc.document()
	return &locator{lines: sc.lines}
}

func (sc *scanner) record(path []string, line int) {
	k := pathKey(path)
	if _, ok := sc.lines[k]; !ok {
		sc.lines[k] = line
	}
}

// recordPrefixes records path[:n] for every n > from: the tables a dotted
// key creates appear where it does. The keys are built incrementally, as a
// key with thousands of dots would otherwise cost quadratic time.
func (sc *scanner) recordPrefixes(path []string, from, line int) {
	var b strings.Builder
	b.WriteString(pathKey(path[:from]))
	for n := from; n < len(path); n++ {
		if n > 0 {
			b.WriteByte('\x1f')
		}
		b.WriteString(path[n])
		if _, ok := sc.lines[b.String()]; !ok {
			sc.lines[b.String()] = line
		}
	}
}

func (sc *scanner) eof() bool { return sc.i >= len(sc.s) }

func (sc *scanner) peek(off int) byte {
	if sc.i+off < len(sc.s) {
		return sc.s[sc.i+off]
	}
	return 0
}

// blanks skips spaces and tabs.
func (sc *scanner) blanks() {
	for !sc.eof() && (sc.s[sc.i] == ' ' || sc.s[sc.i] == '\t') {
		sc.i++
	}
}

// skipLine moves to the newline ending this line (not past it).
func (sc *scanner) skipLine() {
	for !sc.eof() && sc.s[sc.i] != '\n' {
		sc.i++
	}
}

// space skips blanks, newlines and comments, as allowed inside arrays (and
// inside inline tables since TOML 1.1).
func (sc *scanner) space() {
	for !sc.eof() {
		switch sc.s[sc.i] {
		case ' ', '\t', '\r':
			sc.i++
		case '\n':
			sc.i++
			sc.line++
		case '#':
			sc.skipLine()
		default:
			return
		}
	}
}

func (sc *scanner) document() {
	var table []string
	for !sc.eof() {
		start := sc.i
		sc.blanks()
		if sc.eof() {
			return
		}
		switch c := sc.s[sc.i]; {
		case c == '\n':
			sc.i++
			sc.line++
		case c == '\r':
			sc.i++
		case c == '#':
			sc.skipLine()
		case c == '[':
			if t, ok := sc.header(); ok {
				table = t
			}
			sc.skipLine()
		default:
			line := sc.line
			keys := sc.key()
			sc.blanks()
			if len(keys) == 0 || sc.peek(0) != '=' {
				sc.skipLine()
				break
			}
			sc.i++
			path := append(append([]string(nil), table...), keys...)
			sc.recordPrefixes(path, len(table), line)
			sc.blanks()
			sc.value(path)
		}
		if sc.i == start {
			sc.i++ // never loop without progress, whatever the input
		}
	}
}

// header reads "[a.b]" or "[[a.b]]" and returns the path that following
// keys belong to, with array elements resolved to the current index.
func (sc *scanner) header() ([]string, bool) {
	line := sc.line
	array := sc.peek(1) == '['
	if array {
		sc.i += 2
	} else {
		sc.i++
	}
	sc.blanks()
	keys := sc.key()
	sc.blanks()
	if len(keys) == 0 {
		return nil, false
	}
	// A header names a table inside the last element of any array of
	// tables on its way: [handler.env] after the third [[handler]] is the
	// env of handler[3].
	var path []string
	resolve := func(parts []string) {
		if len(parts) > 64 {
			// No array of tables is that deep in any configuration this
			// locator serves; skip the quadratic walk.
			path = append(path, parts...)
			return
		}
		for _, p := range parts {
			path = append(path, p)
			if n, ok := sc.arrays[pathKey(path)]; ok && n > 0 {
				path = append(path, indexKey(n-1))
			}
		}
	}
	if array {
		resolve(keys[:len(keys)-1])
		path = append(path, keys[len(keys)-1])
		sc.record(path, line)
		k := pathKey(path)
		n := sc.arrays[k]
		sc.arrays[k] = n + 1
		path = append(path, indexKey(n))
	} else {
		resolve(keys)
	}
	sc.record(path, line)
	return path, true
}

// key reads a possibly dotted key of bare and quoted parts.
func (sc *scanner) key() []string {
	var parts []string
	for {
		sc.blanks()
		if sc.eof() {
			return parts
		}
		var part string
		switch c := sc.s[sc.i]; {
		case c == '"':
			raw, ok := sc.basicString()
			if !ok {
				return nil
			}
			part = unescapeKey(raw)
		case c == '\'':
			raw, ok := sc.literalString()
			if !ok {
				return nil
			}
			part = raw
		case isBare(c):
			j := sc.i
			for !sc.eof() && isBare(sc.s[sc.i]) {
				sc.i++
			}
			part = sc.s[j:sc.i]
		default:
			return parts
		}
		parts = append(parts, part)
		sc.blanks()
		if sc.peek(0) != '.' {
			return parts
		}
		sc.i++
	}
}

func isBare(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// unescapeKey decodes a basic-string key; TOML's escapes are a subset of
// Go's, and a key that does not decode keeps its raw form (its line is
// then merely not found).
func unescapeKey(raw string) string {
	if s, err := strconv.Unquote(`"` + raw + `"`); err == nil {
		return s
	}
	return raw
}

// basicString reads a single-line "..." string and returns its raw
// contents.
func (sc *scanner) basicString() (string, bool) {
	sc.i++
	j := sc.i
	for !sc.eof() {
		switch sc.s[sc.i] {
		case '\\':
			sc.i += 2
		case '"':
			sc.i++
			return sc.s[j : sc.i-1], true
		case '\n':
			return "", false
		default:
			sc.i++
		}
	}
	sc.i = len(sc.s)
	return "", false
}

// literalString reads a single-line '...' string.
func (sc *scanner) literalString() (string, bool) {
	sc.i++
	j := sc.i
	for !sc.eof() {
		switch sc.s[sc.i] {
		case '\'':
			sc.i++
			return sc.s[j : sc.i-1], true
		case '\n':
			return "", false
		default:
			sc.i++
		}
	}
	return "", false
}

// multiline skips a """...""" or ”'...”' string, counting its newlines.
func (sc *scanner) multiline(q byte) {
	sc.i += 3
	for !sc.eof() {
		c := sc.s[sc.i]
		switch {
		case c == '\\' && q == '"':
			if sc.peek(1) == '\n' {
				sc.line++
			}
			sc.i += 2
		case c == '\n':
			sc.line++
			sc.i++
		case c == q && sc.peek(1) == q && sc.peek(2) == q:
			sc.i += 3
			// Up to two more quotes may end the string's contents.
			for n := 0; n < 2 && sc.peek(0) == q; n++ {
				sc.i++
			}
			return
		default:
			sc.i++
		}
	}
	sc.i = len(sc.s)
}

// value skips one value, recording the lines of keys inside inline tables
// and of inline tables inside arrays.
func (sc *scanner) value(path []string) {
	if sc.eof() {
		return
	}
	switch c := sc.s[sc.i]; c {
	case '"', '\'':
		if sc.peek(1) == c && sc.peek(2) == c {
			sc.multiline(c)
		} else if c == '"' {
			sc.basicString()
		} else {
			sc.literalString()
		}
	case '{':
		sc.inlineTable(path)
	case '[':
		sc.array(path)
	default:
		for !sc.eof() {
			switch sc.s[sc.i] {
			case ',', ']', '}', '\n', '#':
				return
			}
			sc.i++
		}
	}
}

func (sc *scanner) inlineTable(path []string) {
	sc.i++
	for !sc.eof() {
		start := sc.i
		sc.space()
		switch sc.peek(0) {
		case '}':
			sc.i++
			return
		case ',':
			sc.i++
			continue
		case 0:
			if sc.eof() {
				return
			}
		}
		line := sc.line
		keys := sc.key()
		sc.blanks()
		if len(keys) == 0 || sc.peek(0) != '=' {
			if sc.i == start {
				sc.i++
			}
			continue
		}
		sc.i++
		sub := append(append([]string(nil), path...), keys...)
		sc.recordPrefixes(sub, len(path), line)
		sc.blanks()
		sc.value(sub)
		if sc.i == start {
			sc.i++
		}
	}
}

func (sc *scanner) array(path []string) {
	sc.i++
	idx := 0
	for !sc.eof() {
		start := sc.i
		sc.space()
		if sc.eof() {
			return
		}
		switch sc.s[sc.i] {
		case ']':
			sc.i++
			return
		case ',':
			sc.i++
			idx++
			continue
		}
		elem := append(append([]string(nil), path...), indexKey(idx))
		sc.record(elem, sc.line)
		sc.value(elem)
		if sc.i == start {
			sc.i++
		}
	}
}
