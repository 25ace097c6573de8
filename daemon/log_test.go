package daemon

import (
	"bufio"
	"os"
	"strings"
	"testing"
	"time"
)

// logLines is the log of a role run inside the test process, line by line.
type logLines chan string

// logPipe returns the writer to hand a role as its stdout, and its lines.
// The lines end when the writer is closed.
func logPipe(t *testing.T) (*os.File, logLines) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	lines := make(logLines, 100)
	go func() {
		defer r.Close()
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	return w, lines
}

// wait returns the first line containing substr. The deadline fails the
// test; the line itself comes long before it.
func (l logLines) wait(t *testing.T, substr string, more ...string) string {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case line, ok := <-l:
			if !ok {
				t.Fatalf("log ended before a line with %q %q", substr, more)
			}
			if containsAll(line, append(more, substr)) {
				return line
			}
		case <-deadline:
			t.Fatalf("no log line with %q within 30s", substr)
		}
	}
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
