package config

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// BurntSushi/toml reports a key or table defined twice as "Key
// 'handler.user' has already been defined." with the line of the second
// one: a dotted path that does not say which [[handler]] it is, and no
// word of where the first one was. duplicateError rewrites it in the shape
// of every other configuration error (file, line, key path with the
// handler's index) and names the line of the first definition, which the
// locator finds.
var duplicateForms = []struct{ prefix, suffix string }{
	{"Key '", "' has already been defined."},
	{"Key '", "' was already created and cannot be used as an array."},
	{"Key '", "' was already created as a hash."},
}

func duplicateError(file, src string, pe toml.ParseError, err error) (*Error, bool) {
	var name string
	found := false
	for _, f := range duplicateForms {
		if s, ok := strings.CutPrefix(pe.Message, f.prefix); ok {
			if s, ok = strings.CutSuffix(s, f.suffix); ok {
				name, found = s, true
				break
			}
		}
	}
	line := pe.Position.Line
	if !found || line < 1 {
		return nil, false
	}
	parts := splitDottedKey(name)
	if len(parts) == 0 {
		return nil, false
	}
	// Scan the text up to the end of the offending line: the arrays of
	// tables counted so far say which element the key is in, and the
	// first line recorded for its path is the first definition.
	sc := &scanner{s: src[:lineEnd(src, line)], line: 1, lines: map[string]int{}, arrays: map[string]int{}}
	sc.document()
	var path []string
	for _, p := range parts[:len(parts)-1] {
		path = append(path, p)
		if n := sc.arrays[pathKey(path)]; n > 0 {
			path = append(path, indexKey(n-1))
		}
	}
	path = append(path, parts[len(parts)-1])
	first := sc.lines[pathKey(path)]

	again := describeDefinition(lineKind(src, line), name, parts)
	var msg string
	switch {
	case first == 0 || first == line:
		msg = again.what + " twice"
	case lineKind(src, first) == lineKind(src, line):
		msg = fmt.Sprintf("%s twice (first at line %d)", again.what, first)
	default:
		msg = fmt.Sprintf("%s conflicts with %s at line %d: define each name once",
			again.desc, describeDefinition(lineKind(src, first), name, parts).desc, first)
	}
	return &Error{File: file, Line: line, Key: render(path), Msg: msg, err: err}, true
}

type definition struct {
	what string // `key "user" is set`, `table [log] is defined`
	desc string // `key "user"`, `table [log]`, `array of tables [[handler]]`
}

func describeDefinition(kind byte, name string, parts []string) definition {
	switch kind {
	case '[':
		return definition{"table [" + name + "] is defined", "table [" + name + "]"}
	case '#':
		return definition{"array of tables [[" + name + "]] is defined", "array of tables [[" + name + "]]"}
	}
	k := strconv.Quote(parts[len(parts)-1])
	return definition{"key " + k + " is set", "key " + k}
}

// lineKind says what line n (1-based) of src defines: '[' a table header,
// '#' an array of tables header, '=' anything else (a key).
func lineKind(src string, n int) byte {
	start := 0
	for i := 1; i < n; i++ {
		j := strings.IndexByte(src[start:], '\n')
		if j < 0 {
			return '='
		}
		start += j + 1
	}
	s := strings.TrimLeft(src[start:lineEnd(src, n)], " \t")
	switch {
	case strings.HasPrefix(s, "[["):
		return '#'
	case strings.HasPrefix(s, "["):
		return '['
	}
	return '='
}

// lineEnd is the offset just past line n (1-based) of src, newline
// included, or len(src).
func lineEnd(src string, n int) int {
	off := 0
	for i := 0; i < n; i++ {
		j := strings.IndexByte(src[off:], '\n')
		if j < 0 {
			return len(src)
		}
		off += j + 1
	}
	return off
}

// splitDottedKey splits a key as toml.Key.String writes it: bare parts,
// and double-quoted parts with Go-compatible escapes, joined by dots.
func splitDottedKey(s string) []string {
	var parts []string
	for s != "" {
		if s[0] == '"' {
			end := 1
			for end < len(s) && s[end] != '"' {
				if s[end] == '\\' {
					end++
				}
				end++
			}
			if end >= len(s) {
				return append(parts, s) // not as toml writes keys: keep it whole
			}
			raw := s[:end+1]
			p, err := strconv.Unquote(raw)
			if err != nil {
				p = raw[1 : len(raw)-1]
			}
			parts = append(parts, p)
			s = s[end+1:]
		} else {
			i := strings.IndexByte(s, '.')
			if i < 0 {
				i = len(s)
			}
			parts = append(parts, s[:i])
			s = s[i:]
		}
		s = strings.TrimPrefix(s, ".")
	}
	return parts
}
