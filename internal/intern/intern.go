// Package intern gives equal strings and command lines one copy.
//
// With thousands of handlers, most run the same program as the same
// account, and each was decoded on its own (a TOML table, a message):
// one copy of each serves them all. What is shared must only be read;
// a shared command line has no room to append into.
package intern

import (
	"slices"
	"strconv"
	"strings"
)

// Table remembers the copies it has given; the zero value is ready.
// Drop it once the values are in place: it holds every one.
type Table struct {
	strs  map[string]string
	argvs map[string][]string
}

// Str returns the copy of s the table keeps.
func (t *Table) Str(s string) string {
	if c, ok := t.strs[s]; ok {
		return c
	}
	if t.strs == nil {
		t.strs = make(map[string]string)
	}
	t.strs[s] = s
	return s
}

// Argv returns the copy of the command line a the table keeps; a itself
// when it is the first of its kind, its strings then made the table's.
func (t *Table) Argv(a []string) []string {
	var kb strings.Builder
	for _, s := range a {
		// Each argument with its length: no two lines share a key.
		kb.WriteString(strconv.Itoa(len(s)))
		kb.WriteByte(':')
		kb.WriteString(s)
	}
	key := kb.String()
	if c, ok := t.argvs[key]; ok {
		return c
	}
	if t.argvs == nil {
		t.argvs = make(map[string][]string)
	}
	for i := range a {
		a[i] = t.Str(a[i])
	}
	a = slices.Clip(a)
	t.argvs[key] = a
	return a
}
