package logging

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"
)

// ComponentKey names the part of a process a record comes from:
// logger.With(logging.ComponentKey, "http"). It is not shown as a plain
// attribute but as part of the source after the process name, and only
// when Options.Target is set. The innermost With wins; inside a group it
// is an ordinary attribute.
const ComponentKey = "component"

// Formats are the values Options.Format accepts; "" means "full". The
// names are tracing-subscriber's, which the original used.
var Formats = []string{"full", "compact", "pretty", "json"}

// Options is the [log] table plus the level and a clock for tests.
type Options struct {
	Level     slog.Leveler // nil: info
	Format    string       // one of Formats; "" or unknown: full
	ANSI      bool         // colours (text formats only)
	Timestamp bool         // show the time
	Target    bool         // show the component after the process name
	ShowLevel bool         // show the level word
	// Priority starts every record with its syslog severity, "<3>" for
	// an error ... "<7>" for debug and trace (see Severity), as
	// sd-daemon(3) has it: for a writer that sorts lines by severity,
	// Syslog.Stream or a journald stdout stream. Only the first line of
	// a pretty record carries it.
	Priority bool
	Now      func() time.Time
}

// Size limits. Several processes write to one stdout pipe, and a write of
// up to PIPE_BUF bytes (512 on POSIX, 4096 on Linux) is never interleaved
// with another, so a record aims to stay below maxLine: values are cut at
// maxValue bytes (as escaped) with "…", and attributes that would still
// not fit are left out and replaced by a marker.
const (
	maxLine  = 4096
	maxValue = 2000
	reserve  = 64 // room kept for closing braces, the marker and "\n"
)

type format int

const (
	fmtFull format = iota
	fmtCompact
	fmtPretty
	fmtJSON
)

// output is shared by a handler and every handler derived from it, so that
// their records are written one at a time even to a writer that is not
// safe for concurrent use.
type output struct {
	mu sync.Mutex
	w  io.Writer
}

// groupOrAttrs is one WithGroup or WithAttrs call, in order.
type groupOrAttrs struct {
	group string
	attrs []slog.Attr
}

type handler struct {
	out       *output
	opts      Options
	format    format
	proc      string
	component string
	goas      []groupOrAttrs
	groups    int // number of WithGroup calls in goas
}

// New returns a logger writing to w. proc names the process ("parent",
// "net", "exec[alice]") and appears on every record, whatever the
// options, because every process writes to the same stdout.
func New(w io.Writer, o Options, proc string) *slog.Logger {
	return slog.New(NewHandler(w, o, proc))
}

// NewHandler is New's handler, for callers that wrap it.
//
// Each record is written with exactly one Write call and ends in "\n".
// Records whose time is zero have no timestamp (as slog asks); Options.Now,
// when set, replaces the record's time.
func NewHandler(w io.Writer, o Options, proc string) slog.Handler {
	f := fmtFull
	switch o.Format {
	case "compact":
		f = fmtCompact
	case "pretty":
		f = fmtPretty
	case "json":
		f = fmtJSON
	}
	return &handler{out: &output{w: w}, opts: o, format: f, proc: proc}
}

func (h *handler) Enabled(_ context.Context, l slog.Level) bool {
	min := slog.LevelInfo
	if h.opts.Level != nil {
		min = h.opts.Level.Level()
	}
	return l >= min
}

func (h *handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	h2 := *h
	kept := make([]slog.Attr, 0, len(attrs))
	for _, a := range attrs {
		if h.groups == 0 && a.Key == ComponentKey {
			h2.component = a.Value.Resolve().String()
			continue
		}
		kept = append(kept, a)
	}
	if len(kept) > 0 {
		h2.goas = append(slices.Clip(h.goas), groupOrAttrs{attrs: kept})
	}
	return &h2
}

func (h *handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	h2.goas = append(slices.Clip(h.goas), groupOrAttrs{group: name})
	h2.groups++
	return &h2
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

func (h *handler) Handle(_ context.Context, r slog.Record) error {
	bp := bufPool.Get().(*[]byte)
	buf := (*bp)[:0]

	component := h.component
	if h.groups == 0 {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == ComponentKey {
				component = a.Value.Resolve().String()
			}
			return true
		})
	}
	t := r.Time
	if !t.IsZero() && h.opts.Now != nil {
		t = h.opts.Now()
	}
	if h.opts.Priority {
		buf = append(buf, '<', byte('0'+Severity(r.Level)), '>')
	}
	if h.format == fmtJSON {
		buf = h.appendJSON(buf, r, t, component)
	} else {
		buf = h.appendText(buf, r, t, component)
	}

	h.out.mu.Lock()
	_, err := h.out.w.Write(buf)
	h.out.mu.Unlock()

	if cap(buf) <= 64<<10 {
		*bp = buf
		bufPool.Put(bp)
	}
	if err != nil {
		return fmt.Errorf("logging: write: %w", err)
	}
	return nil
}

// ANSI escape sequences, used only when Options.ANSI is set.
const (
	ansiReset  = "\x1b[0m"
	ansiBold   = "\x1b[1m"
	ansiDim    = "\x1b[2m"
	ansiItalic = "\x1b[3m"
)

func levelColour(l slog.Level) string {
	switch {
	case l >= slog.LevelError:
		return "\x1b[31m" // red
	case l >= slog.LevelWarn:
		return "\x1b[33m" // yellow
	case l >= slog.LevelInfo:
		return "\x1b[32m" // green
	case l >= slog.LevelDebug:
		return "\x1b[34m" // blue
	}
	return "\x1b[35m" // magenta
}

// textState carries what the text formats need while appending attributes.
type textState struct {
	h   *handler
	buf []byte
}

func (s *textState) colour(c string) {
	if s.h.opts.ANSI {
		s.buf = append(s.buf, c...)
	}
}

// appendText writes the full, compact and pretty formats:
//
//	full:    [TIME ][LEVEL ]PROC[ COMPONENT]: message key=value key="quoted value"
//	compact: [TIME ][LEVEL ]PROC[/COMPONENT]: message key=value
//	pretty:  [TIME ][LEVEL ]PROC[ COMPONENT]: message
//	             key: value
//
// full and pretty show the time in UTC with microseconds and pad the level
// to five columns, as tracing-subscriber does; compact shows the time to
// the second and the level unpadded.
func (h *handler) appendText(buf []byte, r slog.Record, t time.Time, component string) []byte {
	s := &textState{h: h, buf: buf}
	if h.opts.Timestamp && !t.IsZero() {
		s.colour(ansiDim)
		if h.format == fmtCompact {
			s.buf = t.UTC().AppendFormat(s.buf, "2006-01-02T15:04:05Z")
		} else {
			s.buf = t.UTC().AppendFormat(s.buf, "2006-01-02T15:04:05.000000Z")
		}
		s.colour(ansiReset)
		s.buf = append(s.buf, ' ')
	}
	if h.opts.ShowLevel {
		name := levelName(r.Level)
		s.colour(levelColour(r.Level))
		if h.format != fmtCompact {
			for i := len(name); i < 5; i++ {
				s.buf = append(s.buf, ' ')
			}
		}
		s.buf = append(s.buf, name...)
		s.colour(ansiReset)
		s.buf = append(s.buf, ' ')
	}
	s.colour(ansiBold)
	s.buf = appendText(s.buf, h.proc, maxValue)
	s.colour(ansiReset)
	if h.opts.Target && component != "" {
		if h.format == fmtCompact {
			s.buf = append(s.buf, '/')
		} else {
			s.buf = append(s.buf, ' ')
		}
		s.colour(ansiDim)
		s.buf = appendText(s.buf, component, maxValue)
		s.colour(ansiReset)
	}
	s.buf = append(s.buf, ':', ' ')
	s.buf = appendMessage(s.buf, r.Message, maxValue)

	// Attributes, each whole or not at all (see maxLine): one that does
	// not fit is left out, and smaller ones after it still get their turn.
	truncated := false
	add := func(prefix string, a slog.Attr) bool {
		mark := len(s.buf)
		s.appendAttr(prefix, a)
		if len(s.buf) > maxLine-reserve {
			s.buf = s.buf[:mark]
			truncated = true
		}
		return true
	}
	prefix := ""
	for _, g := range h.goas {
		if g.group != "" {
			prefix += g.group + "."
			continue
		}
		for _, a := range g.attrs {
			add(prefix, a)
		}
	}
	r.Attrs(func(a slog.Attr) bool {
		if h.groups == 0 && a.Key == ComponentKey {
			return true
		}
		return add(prefix, a)
	})
	if truncated {
		if h.format == fmtPretty {
			s.buf = append(s.buf, "\n    "...)
		} else {
			s.buf = append(s.buf, ' ')
		}
		s.buf = append(s.buf, "…(attributes left out: line too long)"...)
	}
	return append(s.buf, '\n')
}

func (s *textState) appendAttr(prefix string, a slog.Attr) {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return
	}
	if a.Value.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p = prefix + a.Key + "."
		}
		for _, ga := range a.Value.Group() {
			s.appendAttr(p, ga)
		}
		return
	}
	if s.h.format == fmtPretty {
		s.buf = append(s.buf, "\n    "...)
	} else {
		s.buf = append(s.buf, ' ')
	}
	s.colour(ansiDim + ansiItalic)
	s.buf = appendText(s.buf, prefix+a.Key, maxValue)
	if s.h.format == fmtPretty {
		s.buf = append(s.buf, ':')
		s.colour(ansiReset)
		s.buf = append(s.buf, ' ')
	} else {
		s.colour(ansiReset + ansiDim)
		s.buf = append(s.buf, '=')
		s.colour(ansiReset)
	}
	s.buf = appendTextValue(s.buf, a.Value)
}

func appendTextValue(buf []byte, v slog.Value) []byte {
	switch v.Kind() {
	case slog.KindInt64:
		return strconv.AppendInt(buf, v.Int64(), 10)
	case slog.KindUint64:
		return strconv.AppendUint(buf, v.Uint64(), 10)
	case slog.KindFloat64:
		return strconv.AppendFloat(buf, v.Float64(), 'g', -1, 64)
	case slog.KindBool:
		return strconv.AppendBool(buf, v.Bool())
	case slog.KindDuration:
		return append(buf, v.Duration().String()...)
	case slog.KindTime:
		return v.Time().AppendFormat(buf, time.RFC3339Nano)
	case slog.KindString:
		return appendText(buf, v.String(), maxValue)
	}
	return appendText(buf, anyString(v.Any()), maxValue)
}

func anyString(x any) string {
	switch x := x.(type) {
	case nil:
		return "<nil>"
	case error:
		return x.Error()
	case []byte:
		return string(x)
	case fmt.Stringer:
		return x.String()
	}
	return fmt.Sprintf("%+v", x)
}

// appendJSON writes one JSON object: time, level, proc, component, msg,
// then the attributes, groups as nested objects. Durations are strings
// ("1.5s") rather than nanoseconds, for people reading the log.
func (h *handler) appendJSON(buf []byte, r slog.Record, t time.Time, component string) []byte {
	buf = append(buf, '{')
	if h.opts.Timestamp && !t.IsZero() {
		buf = append(buf, `"time":"`...)
		buf = t.UTC().AppendFormat(buf, "2006-01-02T15:04:05.000000Z")
		buf = append(buf, `",`...)
	}
	if h.opts.ShowLevel {
		buf = append(buf, `"level":`...)
		buf = appendJSONString(buf, levelName(r.Level), maxValue)
		buf = append(buf, ',')
	}
	buf = append(buf, `"proc":`...)
	buf = appendJSONString(buf, h.proc, maxValue)
	if h.opts.Target && component != "" {
		buf = append(buf, `,"component":`...)
		buf = appendJSONString(buf, component, maxValue)
	}
	buf = append(buf, `,"msg":`...)
	buf = appendJSONString(buf, r.Message, maxValue)

	s := &jsonState{buf: buf}
	truncated := false
	add := func(a slog.Attr) bool {
		mark, opened := len(s.buf), s.opened
		s.appendAttr(a)
		if len(s.buf) > maxLine-reserve-s.opened {
			s.buf, s.opened = s.buf[:mark], opened
			truncated = true
		}
		return true
	}
	for _, g := range h.goas {
		if g.group != "" {
			s.stack = append(s.stack, g.group)
			continue
		}
		for _, a := range g.attrs {
			add(a)
		}
	}
	r.Attrs(func(a slog.Attr) bool {
		if h.groups == 0 && a.Key == ComponentKey {
			return true
		}
		return add(a)
	})
	for ; s.opened > 0; s.opened-- {
		s.buf = append(s.buf, '}')
	}
	if truncated {
		s.buf = append(s.buf, `,"truncated":true`...)
	}
	return append(s.buf, '}', '\n')
}

// jsonState opens group objects lazily, so that a group with nothing in
// it does not appear (slog's rule).
type jsonState struct {
	buf    []byte
	stack  []string // groups the next attribute is in
	opened int      // how many of stack are open in buf
}

func (s *jsonState) member(key string) {
	for ; s.opened < len(s.stack); s.opened++ {
		s.comma()
		s.buf = appendJSONString(s.buf, s.stack[s.opened], maxValue)
		s.buf = append(s.buf, ':', '{')
	}
	s.comma()
	s.buf = appendJSONString(s.buf, key, maxValue)
	s.buf = append(s.buf, ':')
}

// comma separates members: none right after an object opens.
func (s *jsonState) comma() {
	if s.buf[len(s.buf)-1] != '{' {
		s.buf = append(s.buf, ',')
	}
}

func (s *jsonState) appendAttr(a slog.Attr) {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return
	}
	if a.Value.Kind() == slog.KindGroup {
		attrs := a.Value.Group()
		if a.Key == "" {
			for _, ga := range attrs {
				s.appendAttr(ga)
			}
			return
		}
		s.stack = append(s.stack, a.Key)
		for _, ga := range attrs {
			s.appendAttr(ga)
		}
		s.stack = s.stack[:len(s.stack)-1]
		if s.opened > len(s.stack) {
			s.buf = append(s.buf, '}')
			s.opened--
		}
		return
	}
	s.member(a.Key)
	s.buf = appendJSONValue(s.buf, a.Value)
}

func appendJSONValue(buf []byte, v slog.Value) []byte {
	switch v.Kind() {
	case slog.KindInt64:
		return strconv.AppendInt(buf, v.Int64(), 10)
	case slog.KindUint64:
		return strconv.AppendUint(buf, v.Uint64(), 10)
	case slog.KindFloat64:
		f := v.Float64()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return appendJSONString(buf, strconv.FormatFloat(f, 'g', -1, 64), maxValue)
		}
		return strconv.AppendFloat(buf, f, 'g', -1, 64)
	case slog.KindBool:
		return strconv.AppendBool(buf, v.Bool())
	case slog.KindDuration:
		return appendJSONString(buf, v.Duration().String(), maxValue)
	case slog.KindTime:
		return appendJSONString(buf, v.Time().Format(time.RFC3339Nano), maxValue)
	case slog.KindString:
		return appendJSONString(buf, v.String(), maxValue)
	}
	switch x := v.Any().(type) {
	case error:
		return appendJSONString(buf, x.Error(), maxValue)
	case json.Marshaler, map[string]any, []any:
		// Structured values stay structured when they are small; anything
		// else, or too big, becomes a (truncated) string.
		if b, err := json.Marshal(x); err == nil && len(b) <= maxValue {
			return append(buf, b...)
		}
	}
	return appendJSONString(buf, anyString(v.Any()), maxValue)
}
