package logging

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"testing/slogtest"
	"time"
	"unicode/utf8"
)

var testTime = time.Date(2026, 11, 25, 13, 26, 42, 123456789, time.UTC)

func fixedNow() time.Time { return testTime }

// logTo returns a logger at trace level writing into a buffer.
func logTo(o Options, proc string) (*slog.Logger, *bytes.Buffer) {
	var buf bytes.Buffer
	if o.Level == nil {
		o.Level = LevelTrace
	}
	if o.Now == nil {
		o.Now = fixedNow
	}
	return New(&buf, o, proc), &buf
}

func TestFormats(t *testing.T) {
	all := func(f string) Options { return Options{Format: f, Timestamp: true, Target: true, ShowLevel: true} }
	logIt := func(l *slog.Logger) {
		l.With(ComponentKey, "http").Info("request done", "status", 200, "peer", "127.0.0.1:4000", "reason", "bad password", "ok", false)
	}
	tests := []struct {
		name string
		o    Options
		want string
	}{
		{"full defaults: only the process", Options{},
			`net: request done status=200 peer=127.0.0.1:4000 reason="bad password" ok=false` + "\n"},
		{"empty format is full", Options{Format: ""},
			`net: request done status=200 peer=127.0.0.1:4000 reason="bad password" ok=false` + "\n"},
		{"full timestamp", Options{Timestamp: true},
			`2026-11-25T13:26:42.123456Z net: request done status=200 peer=127.0.0.1:4000 reason="bad password" ok=false` + "\n"},
		{"full level", Options{ShowLevel: true},
			` INFO net: request done status=200 peer=127.0.0.1:4000 reason="bad password" ok=false` + "\n"},
		{"full target", Options{Target: true},
			`net http: request done status=200 peer=127.0.0.1:4000 reason="bad password" ok=false` + "\n"},
		{"full all", all("full"),
			`2026-11-25T13:26:42.123456Z  INFO net http: request done status=200 peer=127.0.0.1:4000 reason="bad password" ok=false` + "\n"},
		{"compact defaults", Options{Format: "compact"},
			`net: request done status=200 peer=127.0.0.1:4000 reason="bad password" ok=false` + "\n"},
		{"compact all", all("compact"),
			`2026-11-25T13:26:42Z INFO net/http: request done status=200 peer=127.0.0.1:4000 reason="bad password" ok=false` + "\n"},
		{"pretty defaults", Options{Format: "pretty"},
			"net: request done\n    status: 200\n    peer: 127.0.0.1:4000\n    reason: \"bad password\"\n    ok: false\n"},
		{"pretty all", all("pretty"),
			"2026-11-25T13:26:42.123456Z  INFO net http: request done\n    status: 200\n    peer: 127.0.0.1:4000\n    reason: \"bad password\"\n    ok: false\n"},
		{"json defaults", Options{Format: "json"},
			`{"proc":"net","msg":"request done","status":200,"peer":"127.0.0.1:4000","reason":"bad password","ok":false}` + "\n"},
		{"json all", all("json"),
			`{"time":"2026-11-25T13:26:42.123456Z","level":"INFO","proc":"net","component":"http","msg":"request done","status":200,"peer":"127.0.0.1:4000","reason":"bad password","ok":false}` + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, buf := logTo(tt.o, "net")
			logIt(l)
			if got := buf.String(); got != tt.want {
				t.Errorf("got\n%q\nwant\n%q", got, tt.want)
			}
			if strings.Contains(buf.String(), "\x1b") {
				t.Errorf("ANSI escape without ansi=true: %q", buf.String())
			}
		})
	}
}

func TestComponentInRecord(t *testing.T) {
	l, buf := logTo(Options{Target: true}, "exec[alice]")
	l.Info("run", ComponentKey, "scheduler", "n", 1)
	l.With(ComponentKey, "a").With(ComponentKey, "b").Info("inner wins")
	l.WithGroup("g").With(ComponentKey, "x").Info("in a group it is an attribute")
	want := "exec[alice] scheduler: run n=1\n" +
		"exec[alice] b: inner wins\n" +
		"exec[alice]: in a group it is an attribute g.component=x\n"
	if buf.String() != want {
		t.Errorf("got\n%s\nwant\n%s", buf, want)
	}
	// Without target the component is not shown at all.
	l, buf = logTo(Options{}, "net")
	l.With(ComponentKey, "http").Info("x", ComponentKey, "y")
	if buf.String() != "net: x\n" {
		t.Errorf("target=false: %q", buf)
	}
}

func TestANSI(t *testing.T) {
	for _, f := range []string{"full", "compact", "pretty"} {
		l, buf := logTo(Options{Format: f, ANSI: true, ShowLevel: true, Timestamp: true, Target: true}, "net")
		l.Error("boom", "k", "v")
		out := buf.String()
		if !strings.Contains(out, "\x1b[31mERROR\x1b[0m") {
			t.Errorf("%s: error level not red: %q", f, out)
		}
		if !strings.Contains(out, ansiDim) {
			t.Errorf("%s: no dim keys: %q", f, out)
		}
		plain := stripANSI(out)
		if !strings.Contains(plain, "net http: boom") && !strings.Contains(plain, "net/http: boom") && !strings.Contains(plain, "net: boom") {
			t.Errorf("%s: text lost: %q", f, plain)
		}
	}
	l, buf := logTo(Options{Format: "json", ANSI: true, ShowLevel: true}, "net")
	l.Error("boom")
	if strings.Contains(buf.String(), "\x1b") {
		t.Errorf("json has colours: %q", buf)
	}
}

func stripANSI(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == 0x1b {
			for i < len(s) && s[i] != 'm' {
				i++
			}
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func TestLevels(t *testing.T) {
	logAll := func(l *slog.Logger) {
		ctx := context.Background()
		l.Log(ctx, LevelTrace, "t")
		l.Debug("d")
		l.Info("i")
		l.Warn("w")
		l.Error("e")
		l.Log(ctx, LevelTrace+1, "t1")
		l.Log(ctx, slog.LevelWarn+2, "w2")
	}
	tests := []struct {
		level slog.Level
		want  string
	}{
		{LevelTrace, "TRACE t\nDEBUG d\n INFO i\n WARN w\nERROR e\nTRACE+1 t1\nWARN+2 w2\n"},
		{slog.LevelDebug, "DEBUG d\n INFO i\n WARN w\nERROR e\nWARN+2 w2\n"},
		{slog.LevelInfo, " INFO i\n WARN w\nERROR e\nWARN+2 w2\n"},
		{slog.LevelWarn, " WARN w\nERROR e\nWARN+2 w2\n"},
		{slog.LevelError, "ERROR e\n"},
		{LevelOff, ""},
	}
	for _, tt := range tests {
		var buf bytes.Buffer
		l := New(&buf, Options{Level: tt.level, ShowLevel: true}, "p")
		logAll(l)
		got := strings.ReplaceAll(buf.String(), "p: ", "")
		if got != tt.want {
			t.Errorf("level %v: got\n%q\nwant\n%q", tt.level, got, tt.want)
		}
	}
	// A nil Level means info.
	var buf bytes.Buffer
	logAll(New(&buf, Options{}, "p"))
	if got := strings.Count(buf.String(), "\n"); got != 4 {
		t.Errorf("nil level: %d records, want 4 (info and above): %q", got, buf.String())
	}
	// A LevelVar changes the level of a running logger.
	var lv slog.LevelVar
	lv.Set(slog.LevelError)
	buf.Reset()
	l := New(&buf, Options{Level: &lv}, "p")
	l.Info("hidden")
	lv.Set(LevelTrace)
	l.Log(context.Background(), LevelTrace, "shown")
	if buf.String() != "p: shown\n" {
		t.Errorf("LevelVar: %q", buf.String())
	}
}

func TestParseLevel(t *testing.T) {
	for in, want := range map[string]slog.Level{
		"error": slog.LevelError, "WARN": slog.LevelWarn, "Info": slog.LevelInfo,
		"debug": slog.LevelDebug, "TRACE": LevelTrace, "off": LevelOff, " info ": slog.LevelInfo,
	} {
		got, err := ParseLevel(in)
		if err != nil || got != want {
			t.Errorf("ParseLevel(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "verbose", "warning", "3", "inf"} {
		if _, err := ParseLevel(in); !errors.Is(err, ErrLevel) {
			t.Errorf("ParseLevel(%q) error = %v, want ErrLevel", in, err)
		}
	}
}

func TestEffectiveLevel(t *testing.T) {
	tests := []struct {
		name       string
		configured string
		debug      bool
		env        map[string]string
		want       slog.Level
		wantErr    string
	}{
		{"default", "", false, nil, slog.LevelInfo, ""},
		{"configured", "warn", false, nil, slog.LevelWarn, ""},
		{"configured trace", "trace", false, nil, LevelTrace, ""},
		{"-d beats config", "error", true, nil, slog.LevelDebug, ""},
		{"-d never quieter than config", "trace", true, nil, LevelTrace, ""},
		{"env beats -d and config", "error", true, map[string]string{"IMSERIOUS_LOG": "warn"}, slog.LevelWarn, ""},
		{"env can be quieter than -d", "", true, map[string]string{"IMSERIOUS_LOG": "error"}, slog.LevelError, ""},
		{"alias", "error", false, map[string]string{"IMSERIOUSLOG": "trace"}, LevelTrace, ""},
		{"canonical beats alias", "", false, map[string]string{"IMSERIOUS_LOG": "debug", "IMSERIOUSLOG": "error"}, slog.LevelDebug, ""},
		{"empty env ignored", "warn", false, map[string]string{"IMSERIOUS_LOG": " "}, slog.LevelWarn, ""},
		{"env case", "", false, map[string]string{"IMSERIOUS_LOG": "DEBUG"}, slog.LevelDebug, ""},
		{"env off", "", false, map[string]string{"IMSERIOUS_LOG": "off"}, LevelOff, ""},
		{"envfilter target", "", false, map[string]string{"IMSERIOUS_LOG": "imserious=debug"}, slog.LevelDebug, ""},
		{"envfilter target beats bare", "", false, map[string]string{"IMSERIOUS_LOG": "imserious=trace,warn"}, LevelTrace, ""},
		{"envfilter module", "", false, map[string]string{"IMSERIOUS_LOG": "info,imserious::handler=debug,hyper=trace"}, slog.LevelDebug, ""},
		{"envfilter others ignored", "", false, map[string]string{"IMSERIOUS_LOG": "hyper=trace,error"}, slog.LevelError, ""},
		{"envfilter bare target is trace", "", false, map[string]string{"IMSERIOUS_LOG": "imserious"}, LevelTrace, ""},
		{"envfilter numeric", "", false, map[string]string{"IMSERIOUS_LOG": "imserious=4"}, slog.LevelDebug, ""},
		{"envfilter span", "", false, map[string]string{"IMSERIOUS_LOG": "imserious[notify]=debug"}, slog.LevelDebug, ""},
		{"env typo", "", false, map[string]string{"IMSERIOUS_LOG": "debgu"}, 0, "IMSERIOUS_LOG"},
		{"env bad level for us", "", false, map[string]string{"IMSERIOUS_LOG": "imserious=loud"}, 0, "IMSERIOUS_LOG"},
		{"env nothing for us", "warn", false, map[string]string{"IMSERIOUS_LOG": "hyper=debug"}, slog.LevelWarn, ""}, // see TestEffectiveLevelNote
		{"bad alias", "", false, map[string]string{"IMSERIOUSLOG": "x=1=2"}, 0, "IMSERIOUSLOG"},
		{"bad config", "loud", false, nil, 0, "max_level"},
		{"bad config with -d", "loud", true, nil, 0, "max_level"},
		{"env hides bad config", "loud", false, map[string]string{"IMSERIOUS_LOG": "info"}, slog.LevelInfo, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := EffectiveLevel(tt.configured, tt.debug, func(k string) string { return tt.env[k] })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrLevel) {
					t.Errorf("err = %v, want one mentioning %q wrapping ErrLevel", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("got %v, %v; want %v", got, err, tt.want)
			}
		})
	}
	// nil getenv reads the real environment.
	t.Setenv("IMSERIOUS_LOG", "error")
	if got, err := EffectiveLevel("", true, nil); err != nil || got != slog.LevelError {
		t.Errorf("nil getenv: %v, %v", got, err)
	}
}

// hostile holds what a mail sender or a client can put into a logged
// value: line breaks, a terminal escape, a Unicode line separator, a bidi
// override, NUL, DEL, a C1 control and an invalid byte.
const hostile = "alice\nnet: forged record\r\x1b[2J\u2028x\u202e\x00\x7f\u0085\xff end"

func TestValuesCannotSplitOrForgeLines(t *testing.T) {
	for _, f := range Formats {
		t.Run(f, func(t *testing.T) {
			l, buf := logTo(Options{Format: f, Timestamp: true, Target: true, ShowLevel: true}, "net")
			l.With(ComponentKey, hostile).Warn(hostile, hostile, hostile, "g", slog.GroupValue(slog.String("k", hostile)))
			out := buf.String()
			wantLines := 1
			if f == "pretty" {
				wantLines = 3 // message, then one line per attribute
			}
			if n := strings.Count(out, "\n"); n != wantLines || !strings.HasSuffix(out, "\n") {
				t.Fatalf("%d line breaks, want %d:\n%s", n, wantLines, out)
			}
			if strings.ContainsAny(out, "\r\x1b\x00\x7f\u2028\u202e\u0085") || !utf8.ValidString(out) {
				t.Errorf("raw control or invalid bytes in %q", out)
			}
			if strings.Contains(out, "\nnet: forged") {
				t.Errorf("forged a record: %q", out)
			}
			if f == "json" {
				var m map[string]any
				if err := json.Unmarshal([]byte(out), &m); err != nil {
					t.Fatalf("not JSON: %v: %q", err, out)
				}
				// Nothing is lost but the invalid byte.
				want := strings.Replace(hostile, "\xff", "\uFFFD", 1)
				if m["msg"] != want || m["component"] != want || m[want] != want {
					t.Errorf("round trip lost data: %q", out)
				}
			}
		})
	}
}

func TestQuoting(t *testing.T) {
	tests := []struct {
		v    any
		want string
	}{
		{"plain", "k=plain"},
		{"Grüße✓", "k=Grüße✓"},
		{"", `k=""`},
		{"two words", `k="two words"`},
		{`say "hi"`, `k="say \"hi\""`},
		{"a=b", `k="a=b"`},
		{`back\slash`, `k="back\\slash"`},
		{"tab\there", `k="tab\there"`},
		{"nbsp\u00a0", `k="nbsp\u00a0"`},
		{"\xff", `k="\xff"`},
		{"\U000e0001", `k="\U000e0001"`},
		{errors.New("open /x: no such file"), `k="open /x: no such file"`},
		{1.5, "k=1.5"},
		{int64(-3), "k=-3"},
		{uint64(7), "k=7"},
		{true, "k=true"},
		{1500 * time.Millisecond, "k=1.5s"},
		{time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), "k=2026-01-02T03:04:05Z"},
		{nil, "k=<nil>"},
		{[]byte("raw"), "k=raw"},
		{struct{ A int }{1}, "k={A:1}"},
	}
	for _, tt := range tests {
		l, buf := logTo(Options{}, "p")
		l.Info("m", "k", tt.v)
		want := "p: m " + tt.want + "\n"
		if buf.String() != want {
			t.Errorf("%#v: got %q, want %q", tt.v, buf.String(), want)
		}
	}
	// Messages are sentences: spaces and quotes stay, control characters
	// make the message quoted.
	l, buf := logTo(Options{}, "p")
	l.Info(`a "quoted" message = fine`)
	l.Info("line\nbreak")
	l.Info("")
	want := "p: a \"quoted\" message = fine\np: \"line\\nbreak\"\np: \n"
	if buf.String() != want {
		t.Errorf("messages: got %q, want %q", buf.String(), want)
	}
}

func TestJSONValues(t *testing.T) {
	l, buf := logTo(Options{Format: "json"}, "p")
	l.Info("m", "f", 1.25, "nan", 0.0/zero(), "d", 2*time.Second, "err", errors.New("e\n"),
		"map", map[string]any{"a": 1}, "list", []any{1, "x"}, "raw", json.RawMessage(`{"b" : 2}`),
		"s", struct{ A int }{3}, "n", nil)
	want := `{"proc":"p","msg":"m","f":1.25,"nan":"NaN","d":"2s","err":"e\n","map":{"a":1},"list":[1,"x"],"raw":{"b":2},"s":"{A:3}","n":"<nil>"}` + "\n"
	if buf.String() != want {
		t.Errorf("got  %s\nwant %s", buf.String(), want)
	}
}

func zero() float64 { return 0 }

func TestGroups(t *testing.T) {
	for _, tt := range []struct {
		format, want string
	}{
		{"full", "p: m a=1 g.b=2 g.h.c=3 g.h.r=4 g.h.in.x=5 g.h.y=6\n"},
		{"pretty", "p: m\n    a: 1\n    g.b: 2\n    g.h.c: 3\n    g.h.r: 4\n    g.h.in.x: 5\n    g.h.y: 6\n"},
		{"json", `{"proc":"p","msg":"m","a":1,"g":{"b":2,"h":{"c":3,"r":4,"in":{"x":5},"y":6}}}` + "\n"},
	} {
		l, buf := logTo(Options{Format: tt.format}, "p")
		l = l.With("a", 1).WithGroup("g").With("b", 2).WithGroup("h").With("c", 3)
		// An inline group (empty key) is flattened; an empty Attr and an
		// empty group are dropped; WithGroup("") is no group.
		l.WithGroup("").Info("m", "r", 4, slog.Group("in", "x", 5), slog.Group("", "y", 6), slog.Attr{}, slog.Group("none"))
		if buf.String() != tt.want {
			t.Errorf("%s: got\n%s\nwant\n%s", tt.format, buf, tt.want)
		}
		// A group with nothing in it does not appear.
		buf.Reset()
		l.WithGroup("nothing").WithGroup("here").Info("m2")
		if strings.Contains(buf.String(), "nothing") || strings.Contains(buf.String(), "here") {
			t.Errorf("%s: empty group shown: %q", tt.format, buf)
		}
	}
}

// TestSlogConformance runs the standard library's handler test suite on
// the JSON format, whose output it can parse.
func TestSlogConformance(t *testing.T) {
	var buf bytes.Buffer
	newHandler := func(*testing.T) slog.Handler {
		buf.Reset()
		return NewHandler(&buf, Options{Format: "json", Timestamp: true, ShowLevel: true, Level: LevelTrace}, "test")
	}
	result := func(t *testing.T) map[string]any {
		var m map[string]any
		if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
			t.Fatalf("%v: %q", err, buf.String())
		}
		return m
	}
	slogtest.Run(t, newHandler, result)
}

func TestZeroTimeHasNoTimestamp(t *testing.T) {
	var buf bytes.Buffer
	h := NewHandler(&buf, Options{Timestamp: true}, "p")
	if err := h.Handle(context.Background(), slog.NewRecord(time.Time{}, slog.LevelInfo, "m", 0)); err != nil {
		t.Fatal(err)
	}
	if buf.String() != "p: m\n" {
		t.Errorf("got %q", buf.String())
	}
}

func TestLongValuesAreCut(t *testing.T) {
	long := strings.Repeat("ü", 5000) // 10000 bytes
	for _, f := range Formats {
		t.Run(f, func(t *testing.T) {
			l, buf := logTo(Options{Format: f, Timestamp: true, ShowLevel: true, Target: true}, "net")
			l.Info(long, "a", long, "b", "short", "c", long, "d", long, "e", 1)
			out := buf.String()
			if len(out) >= maxLine {
				t.Errorf("line is %d bytes, want < %d", len(out), maxLine)
			}
			if !utf8.ValidString(out) || !strings.HasSuffix(out, "\n") {
				t.Errorf("broken line")
			}
			if !strings.Contains(out, "ü…") {
				t.Errorf("no cut marker")
			}
			if !strings.Contains(out, "left out") && !strings.Contains(out, `"truncated":true`) {
				t.Errorf("no marker for left-out attributes: %q", out[len(out)-100:])
			}
			if f == "json" {
				var m map[string]any
				if err := json.Unmarshal([]byte(out), &m); err != nil {
					t.Fatalf("cut JSON is invalid: %v", err)
				}
				// Attributes that fit after one that did not are kept.
				if m["b"] != "short" || m["e"] != 1.0 {
					t.Errorf("small attributes lost: b=%v e=%v", m["b"], m["e"])
				}
				for k, v := range m {
					if s, ok := v.(string); ok && len(s) > maxValue+len("…") {
						t.Errorf("%s is %d bytes long", k, len(s))
					}
				}
			}
		})
	}
	// Escapes count against the limit: a value of control characters
	// must not expand sixfold past it.
	l, buf := logTo(Options{Format: "json"}, "p")
	l.Info("m", "x", strings.Repeat("\x01", 3000))
	if buf.Len() > maxValue+100 {
		t.Errorf("escaped value not cut: %d bytes", buf.Len())
	}
}

// writes records every Write call separately.
type writes struct {
	mu   sync.Mutex
	list [][]byte
}

func (w *writes) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.list = append(w.list, bytes.Clone(p))
	return len(p), nil
}

func TestOneWritePerRecord(t *testing.T) {
	for _, f := range Formats {
		var w writes
		l := New(&w, Options{Format: f, Level: LevelTrace}, "p")
		l.Info("one", "a", 1, "b", "two words")
		l.WithGroup("g").Warn("two", "c", 3)
		if len(w.list) != 2 {
			t.Errorf("%s: %d writes for 2 records", f, len(w.list))
		}
		for _, p := range w.list {
			if !bytes.HasSuffix(p, []byte("\n")) {
				t.Errorf("%s: write %q does not end a line", f, p)
			}
		}
	}
}

// TestConcurrent logs from many goroutines through separate handlers (as
// separate processes would) onto one pipe, and checks that the reader
// sees only whole records.
func TestConcurrent(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	const writers, perWriter = 16, 300
	payload := strings.Repeat("x", 1500) // records near 1.6 KB, well over a pipe's minimum atomic size of 512
	lines := make(chan string, 64)
	scanErr := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		scanErr <- sc.Err()
	}()
	var wg sync.WaitGroup
	for i := range writers {
		// Every other writer has its own handler, as another process would.
		l := New(w, Options{Format: "json", Level: LevelTrace}, fmt.Sprintf("exec[u%d]", i))
		for j := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ll := l.With("j", j)
				for n := range perWriter {
					ll.Info("record", "n", n, "payload", payload)
				}
			}()
		}
	}
	go func() { wg.Wait(); w.Close() }()
	seen := map[string]int{}
	count := 0
	for line := range lines {
		var m struct {
			Proc    string
			J       int
			N       int
			Payload string
		}
		if err := json.Unmarshal([]byte(line), &m); err != nil || m.Payload != payload {
			t.Fatalf("torn line (%v): %.120q", err, line)
		}
		seen[fmt.Sprintf("%s/%d", m.Proc, m.J)]++
		count++
	}
	if err := <-scanErr; err != nil {
		t.Fatal(err)
	}
	if count != writers*2*perWriter {
		t.Errorf("%d records, want %d", count, writers*2*perWriter)
	}
	for k, n := range seen {
		if n != perWriter {
			t.Errorf("%s: %d records, want %d", k, n, perWriter)
		}
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk on fire") }

func TestWriteError(t *testing.T) {
	h := NewHandler(failWriter{}, Options{}, "p")
	err := h.Handle(context.Background(), slog.NewRecord(time.Now(), slog.LevelInfo, "m", 0))
	if err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Errorf("err = %v", err)
	}
}

func BenchmarkFull(b *testing.B) {
	l := New(discard{}, Options{Timestamp: true, ShowLevel: true, Target: true}, "net")
	l = l.With(ComponentKey, "http")
	b.ReportAllocs()
	for b.Loop() {
		l.Info("request", "peer", "127.0.0.1:4000", "status", 200, "user", "alice")
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
