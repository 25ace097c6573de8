package exec

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
)

// maxLine is the longest line logged in one record; longer lines are
// split.
const maxLine = 4096

// output logs the lines a command writes, both streams sharing one budget
// per run. Once the budget is spent it logs one "output truncated" record
// and discards the rest, still accepting every write so the command never
// blocks on a full pipe.
type output struct {
	log      *slog.Logger
	ready    chan struct{} // closed once pid is known
	pid      int
	mu       sync.Mutex
	lines    int
	bytes    int
	maxLines int
	maxBytes int
	full     bool
	streams  []*stream
}

type stream struct {
	o     *output
	name  string
	level slog.Level
	buf   []byte // a partial line, at most maxLine bytes
}

func newOutput(log *slog.Logger, maxLines, maxBytes int) *output {
	if maxLines <= 0 {
		maxLines = DefaultMaxLines
	}
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	return &output{log: log, ready: make(chan struct{}), maxLines: maxLines, maxBytes: maxBytes}
}

func (o *output) stream(name string, level slog.Level) io.Writer {
	s := &stream{o: o, name: name, level: level}
	o.streams = append(o.streams, s)
	return s
}

// started records the pid for the log lines. os/exec starts copying output
// inside Start, before the pid is returned to us, so writers wait for it.
func (o *output) started(pid int) {
	o.pid = pid
	close(o.ready)
}

// Write is called by one os/exec copying goroutine per stream.
func (s *stream) Write(p []byte) (int, error) {
	<-s.o.ready
	n := len(p)
	s.o.mu.Lock()
	defer s.o.mu.Unlock()
	for len(p) > 0 && !s.o.full {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			room := maxLine - len(s.buf)
			if len(p) < room {
				s.buf = append(s.buf, p...)
				break
			}
			s.buf = append(s.buf, p[:room]...)
			p = p[room:]
			s.emit()
			continue
		}
		if len(s.buf)+i > maxLine {
			room := maxLine - len(s.buf)
			s.buf = append(s.buf, p[:room]...)
			p = p[room:]
			s.emit()
			continue
		}
		s.buf = append(s.buf, p[:i]...)
		p = p[i+1:]
		s.emit()
	}
	return n, nil
}

// emit logs the buffered line. Must be called with o.mu held.
func (s *stream) emit() {
	o := s.o
	line := strings.TrimSuffix(string(s.buf), "\r")
	s.buf = s.buf[:0]
	if o.full {
		return
	}
	if o.lines+1 > o.maxLines || o.bytes+len(line) > o.maxBytes {
		o.full = true
		o.log.Warn("command output truncated", "pid", o.pid, "max_lines", o.maxLines, "max_bytes", o.maxBytes)
		return
	}
	o.lines++
	o.bytes += len(line)
	o.log.Log(context.Background(), s.level, "command output",
		"pid", o.pid, "stream", s.name, "line", strings.ToValidUTF8(line, "\uFFFD"))
}

// flush logs a last line that did not end in a newline. Called after Wait,
// when the copying goroutines are done.
func (o *output) flush() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, s := range o.streams {
		if len(s.buf) > 0 {
			s.emit()
		}
	}
}
