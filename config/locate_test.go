package config

import (
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

const locateSrc = `# comment with a = 1 and [table]
a = 1
"quoted key" = 2
b.c = 3
s = """
x = 1
[not_a_table]
"""
[t]
k = 'lit' # trailing comment
[[arr]]
x = 1
[arr.sub]
y = 2
[[arr]]
x = [
  1, # comment inside an array
  { z = 3 },
]
inl = { p = 1, q.r = 2 }
m = '''
[fake]
'''
e = "a \" # [not] a comment"
after = true
[ "t 2" . 'u' ]
v = 1
"esc\u0041ped" = 1
w = """quotes "" inside"""""
last = 1
`

func TestLocate(t *testing.T) {
	// The fixture must be valid TOML, or the test would prove nothing.
	var m map[string]any
	if _, err := toml.Decode(locateSrc, &m); err != nil {
		t.Fatalf("fixture is not valid TOML: %v", err)
	}
	l := locate(locateSrc)
	i0, i1, i2 := indexKey(0), indexKey(1), indexKey(2)
	for _, tc := range []struct {
		path []string
		line int
	}{
		{[]string{"a"}, 2},
		{[]string{"quoted key"}, 3},
		{[]string{"b"}, 4},
		{[]string{"b", "c"}, 4},
		{[]string{"s"}, 5},
		{[]string{"x"}, 0},           // inside a multi-line string
		{[]string{"not_a_table"}, 0}, // likewise
		{[]string{"t"}, 9},
		{[]string{"t", "k"}, 10},
		{[]string{"arr"}, 11},
		{[]string{"arr", i0}, 11},
		{[]string{"arr", i0, "x"}, 12},
		{[]string{"arr", i0, "sub"}, 13},
		{[]string{"arr", i0, "sub", "y"}, 14},
		{[]string{"arr", i1}, 15},
		{[]string{"arr", i1, "x"}, 16},
		{[]string{"arr", i1, "x", i0}, 17},
		{[]string{"arr", i1, "x", i1}, 18},
		{[]string{"arr", i1, "x", i1, "z"}, 18},
		{[]string{"arr", i1, "x", i2}, 16}, // trailing comma: no element, so the array's line
		{[]string{"arr", i1, "inl"}, 20},
		{[]string{"arr", i1, "inl", "p"}, 20},
		{[]string{"arr", i1, "inl", "q", "r"}, 20},
		{[]string{"arr", i1, "m"}, 21},
		{[]string{"fake"}, 0},
		{[]string{"arr", i1, "e"}, 24},
		{[]string{"arr", i1, "after"}, 25},
		{[]string{"t 2", "u"}, 26},
		{[]string{"t 2", "u", "v"}, 27},
		{[]string{"t 2", "u", "escAped"}, 28},
		{[]string{"t 2", "u", "w"}, 29},
		{[]string{"t 2", "u", "last"}, 30},
		// A missing key falls back to its table.
		{[]string{"arr", i1, "missing"}, 15},
		{[]string{"nowhere", "at", "all"}, 0},
	} {
		if got := l.line(tc.path); got != tc.line {
			t.Errorf("line(%s) = %d, want %d", render(tc.path), got, tc.line)
		}
	}
}

func TestLocateCRLF(t *testing.T) {
	src := strings.ReplaceAll("a = 1\n[t]\nb = \"\"\"\nx\n\"\"\"\nc = 2\n", "\n", "\r\n")
	l := locate(src)
	for path, want := range map[string]int{"a": 1, "t": 2, "t\x1fb": 3, "t\x1fc": 6} {
		if got := l.line(strings.Split(path, "\x1f")); got != want {
			t.Errorf("line(%q) = %d, want %d", path, got, want)
		}
	}
}

func TestRender(t *testing.T) {
	for _, tc := range []struct {
		path []string
		want string
	}{
		{[]string{"listen"}, "listen"},
		{[]string{"handler", indexKey(0), "limit_period"}, "handler[1].limit_period"},
		{[]string{"handler", indexKey(11), "env", "A B"}, `handler[12].env."A B"`},
		{[]string{"allow", indexKey(2)}, "allow[3]"},
		{[]string{""}, `""`},
	} {
		if got := render(tc.path); got != tc.want {
			t.Errorf("render(%q) = %s, want %s", tc.path, got, tc.want)
		}
	}
}

func TestSuggest(t *testing.T) {
	keys := handlerSpec.keys
	for _, tc := range []struct{ in, want string }{
		{"limit_perod", "limit_period"},
		{"limitperod", "limit_period"},
		{"limit-period", "limit_period"},
		{"Command", "command"},
		{"comand", "command"},
		{"runs_as", "run_as"},
		{"evnet", "event"},
		{"frobnicate", ""},
		{"x", ""},
		{strings.Repeat("a", 100), ""},
	} {
		if got := suggest(tc.in, keys); got != tc.want {
			t.Errorf("suggest(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if got := suggest("tsl", topSpec.keys); got != "tls" {
		t.Errorf(`suggest("tsl") = %q, want "tls"`, got)
	}
}

// FuzzLocate checks the locator terminates and does not panic on any
// input, valid TOML or not.
func FuzzLocate(f *testing.F) {
	f.Add(locateSrc)
	f.Add("a = [\n{ b = \"\\")
	f.Add("[[a]]\n[[a.b]]\n[a.b.c]\nx='''")
	f.Fuzz(func(t *testing.T, src string) {
		l := locate(src)
		for _, ln := range l.lines {
			if ln < 1 || ln > strings.Count(src, "\n")+1 {
				t.Fatalf("line %d out of range", ln)
			}
		}
	})
}
