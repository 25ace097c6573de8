package intern

import (
	"strings"
	"testing"
	"unsafe"
)

func TestTable(t *testing.T) {
	var tb Table
	// Built at run time, so that the compiler's constants do not share.
	mk := func(s string) string { return strings.Clone(s) }
	a := tb.Str(mk("/bin/true"))
	b := tb.Str(mk("/bin/true"))
	if a != b || unsafe.StringData(a) != unsafe.StringData(b) {
		t.Error("equal strings are two copies")
	}
	if c := tb.Str(mk("/bin/false")); c != "/bin/false" {
		t.Errorf("got %q", c)
	}
	x := tb.Argv([]string{mk("fdm"), mk("-a"), mk("x"), mk("fetch")})
	y := tb.Argv(append(make([]string, 0, 10), mk("fdm"), mk("-a"), mk("x"), mk("fetch")))
	z := tb.Argv([]string{mk("fdm"), mk("-a"), mk("x\x00fetch")})
	if &x[0] != &y[0] {
		t.Error("the same command line is two slices")
	}
	if cap(y) != len(y) {
		t.Error("a shared command line has room to append into")
	}
	if len(z) != 3 || &z[0] == &x[0] || z[2] != "x\x00fetch" {
		t.Errorf("different command lines mixed: %q", z)
	}
	if unsafe.StringData(z[0]) != unsafe.StringData(x[0]) {
		t.Error("a command line's strings are not the table's")
	}
}
