package config

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
)

// Error is one problem in a configuration, located so an operator can find
// it: the file, the line, and the key path (handler[2].limit_period).
type Error struct {
	File string
	Line int    // 0: unknown
	Key  string // "": the problem is not about one key
	Msg  string

	err error // underlying cause, for errors.Is/As
}

// Error renders "FILE:LINE: KEY: MSG", leaving out the parts that are
// unknown.
func (e *Error) Error() string {
	var b strings.Builder
	switch {
	case e.File != "" && e.Line > 0:
		b.WriteString(e.File + ":" + strconv.Itoa(e.Line) + ": ")
	case e.File != "":
		b.WriteString(e.File + ": ")
	case e.Line > 0:
		b.WriteString("line " + strconv.Itoa(e.Line) + ": ")
	}
	if e.Key != "" {
		b.WriteString(e.Key + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Unwrap returns the underlying cause, if any (a read error, a lookup
// error), so callers can test it with errors.Is.
func (e *Error) Unwrap() error { return e.err }

// Errors is every problem found in a configuration. Load, Parse and Resolve
// return it (never an empty one) so that -n can list them all at once.
type Errors []*Error

// Error renders one problem per line.
func (es Errors) Error() string {
	s := make([]string, len(es))
	for i, e := range es {
		s[i] = e.Error()
	}
	return strings.Join(s, "\n")
}

// Unwrap exposes every problem to errors.Is and errors.As.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// sortErrors orders problems as they appear in the file, so the output of
// -n reads top to bottom; problems with no line come first.
func sortErrors(es Errors) {
	slices.SortStableFunc(es, func(a, b *Error) int {
		return cmp.Or(
			cmp.Compare(a.Line, b.Line),
			cmp.Compare(a.Key, b.Key),
			cmp.Compare(a.Msg, b.Msg),
		)
	})
}
