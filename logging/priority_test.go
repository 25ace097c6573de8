package logging

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestSeverity(t *testing.T) {
	for _, tt := range []struct {
		level slog.Level
		want  int
	}{
		{LevelTrace - 4, 7}, {LevelTrace, 7}, {LevelTrace + 1, 7}, {slog.LevelDebug, 7}, {slog.LevelDebug + 3, 7},
		{slog.LevelInfo, 6}, {slog.LevelInfo + 2, 6}, {slog.LevelWarn, 4}, {slog.LevelWarn + 3, 4},
		{slog.LevelError, 3}, {slog.LevelError + 100, 3},
	} {
		if got := Severity(tt.level); got != tt.want {
			t.Errorf("Severity(%v) = %d, want %d", tt.level, got, tt.want)
		}
	}
}

// TestPriority: with Options.Priority, each record is the record without
// it after a "<N>" prefix, in one Write, for every format and level.
func TestPriority(t *testing.T) {
	levels := []struct {
		level  slog.Level
		prefix string
	}{
		{LevelTrace, "<7>"}, {slog.LevelDebug, "<7>"}, {slog.LevelInfo, "<6>"},
		{slog.LevelWarn, "<4>"}, {slog.LevelError, "<3>"}, {slog.LevelWarn + 2, "<4>"},
	}
	for _, f := range Formats {
		for _, ansi := range []bool{false, true} {
			o := Options{Format: f, ANSI: ansi, Level: LevelTrace, Timestamp: true, Target: true, ShowLevel: true, Now: fixedNow}
			var plain bytes.Buffer
			want := New(&plain, o, "net").With(ComponentKey, "http")
			o.Priority = true
			var w writes
			l := New(&w, o, "net").With(ComponentKey, "http")
			for _, lv := range levels {
				plain.Reset()
				w.list = nil
				want.WithGroup("g").Log(context.Background(), lv.level, "done", "status", 200, "who", "two words")
				l.WithGroup("g").Log(context.Background(), lv.level, "done", "status", 200, "who", "two words")
				name := fmt.Sprintf("%s ansi=%v %v", f, ansi, lv.level)
				if len(w.list) != 1 {
					t.Fatalf("%s: %d writes", name, len(w.list))
				}
				got := string(w.list[0])
				if got != lv.prefix+plain.String() {
					t.Errorf("%s: got\n%q\nwant\n%q", name, got, lv.prefix+plain.String())
				}
				if !strings.HasSuffix(got, "\n") || strings.Count(got, "<") != 1 {
					t.Errorf("%s: %q", name, got)
				}
			}
		}
	}
	// Without Priority there is no prefix.
	l, buf := logTo(Options{}, "p")
	l.Error("e")
	if buf.String() != "p: e\n" {
		t.Errorf("no Priority: %q", buf.String())
	}
}

// TestPriorityLongRecord: the prefix counts in the size limit.
func TestPriorityLongRecord(t *testing.T) {
	for _, f := range Formats {
		l, buf := logTo(Options{Format: f, Priority: true}, "p")
		args := []any{}
		for i := range 10 {
			args = append(args, fmt.Sprint("k", i), strings.Repeat("v", 1000))
		}
		l.Warn("m", args...)
		if !strings.HasPrefix(buf.String(), "<4>") || buf.Len() > maxLine {
			t.Errorf("%s: %d bytes, %.20q", f, buf.Len(), buf.String())
		}
	}
}
