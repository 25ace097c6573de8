package logging

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// gate is an io.Writer that records each write and, while closed, holds
// every write until it is opened.
type gate struct {
	mu      sync.Mutex
	writes  [][]byte
	entered chan struct{} // a write has begun
	open    chan struct{}
}

func newGate() *gate {
	return &gate{entered: make(chan struct{}, 1000), open: make(chan struct{})}
}

func (g *gate) Write(p []byte) (int, error) {
	g.entered <- struct{}{}
	<-g.open
	g.mu.Lock()
	g.writes = append(g.writes, bytes.Clone(p))
	g.mu.Unlock()
	return len(p), nil
}

func (g *gate) all() [][]byte {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.writes
}

func waitFor(t *testing.T, c <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

func TestQueuedKeepsEveryRecordInOrder(t *testing.T) {
	var mu sync.Mutex
	var out bytes.Buffer
	w := writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return out.Write(p)
	})
	q := NewQueued(w)
	const writers, each = 8, 2000
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			for i := range each {
				fmt.Fprintf(q, "g%d %d\n", g, i)
			}
		})
	}
	wg.Wait()
	q.Flush()
	mu.Lock()
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	mu.Unlock()
	if len(lines) != writers*each {
		t.Fatalf("%d lines written, want %d", len(lines), writers*each)
	}
	next := make([]int, writers)
	for _, l := range lines {
		var g, i int
		if _, err := fmt.Sscanf(l, "g%d %d", &g, &i); err != nil {
			t.Fatalf("garbled line %q", l)
		}
		if i != next[g] {
			t.Fatalf("writer %d: record %d after %d", g, i, next[g]-1)
		}
		next[g]++
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// While a write is under way the records that arrive gather, and go out
// in writes of whole records of at most maxLine bytes; one longer record
// goes alone.
func TestQueuedGathersWholeRecords(t *testing.T) {
	g := newGate()
	q := NewQueued(g)
	q.Write([]byte("first\n"))
	waitFor(t, g.entered, "the first write")
	var want []string
	for i := range 300 {
		r := fmt.Sprintf("record %03d %s\n", i, strings.Repeat("x", 40))
		if i == 150 {
			r = strings.Repeat("L", maxLine+100) + "\n"
		}
		if i == 151 {
			r = "two\nlines\n" // one record of several lines (pretty)
		}
		want = append(want, r)
		q.Write([]byte(r)) // returns though the writer is held
	}
	close(g.open)
	q.Flush()
	writes := g.all()
	if string(writes[0]) != "first\n" {
		t.Fatalf("first write %q", writes[0])
	}
	var got []byte
	for _, w := range writes[1:] {
		got = append(got, w...)
		if len(w) > maxLine && !bytes.HasPrefix(w, []byte("LLL")) {
			t.Errorf("a write of %d bytes, over %d, holds more than one record", len(w), maxLine)
		}
	}
	if string(got) != strings.Join(want, "") {
		t.Fatal("the records written are not the records queued, in order")
	}
	if n := len(writes) - 1; n > 8 {
		t.Errorf("300 gathered records took %d writes", n)
	}
	// Every write starts with a record: none is split.
	starts := map[string]bool{}
	for _, r := range want {
		starts[r] = true
	}
	for _, w := range writes[1:] {
		rest := string(w)
		for rest != "" {
			found := false
			for r := range starts {
				if strings.HasPrefix(rest, r) {
					rest, found = rest[len(r):], true
					break
				}
			}
			if !found {
				t.Fatalf("a write does not start with a whole record: %.40q", rest)
			}
		}
	}
}

// A writer that does not return (a terminal paused with ^S, a pipe nobody
// reads) makes Write block once maxQueued bytes wait, not memory grow.
func TestQueuedBoundsWhatWaits(t *testing.T) {
	g := newGate()
	q := NewQueued(g)
	q.Write([]byte("first\n"))
	waitFor(t, g.entered, "the first write")
	rec := []byte(strings.Repeat("y", 1023) + "\n")
	for range maxQueued / len(rec) {
		q.Write(rec)
	}
	returned := make(chan struct{})
	go func() {
		q.Write(rec)
		close(returned)
	}()
	select {
	case <-returned:
		t.Fatal("Write returned with its queue full and its writer held")
	case <-time.After(100 * time.Millisecond):
	}
	q.mu.Lock()
	if n := len(q.queue); n > maxQueued {
		t.Errorf("%d bytes queued, over %d", n, maxQueued)
	}
	q.mu.Unlock()
	close(g.open)
	waitFor(t, returned, "Write once the writer is free")
	q.Flush()
	total := 0
	for _, w := range g.all() {
		total += len(w)
	}
	if want := len("first\n") + (maxQueued/len(rec)+1)*len(rec); total != want {
		t.Errorf("%d bytes written, want %d", total, want)
	}
}

// Flush waits for the write under way, not only for the queue.
func TestQueuedFlushWaitsForTheWrite(t *testing.T) {
	g := newGate()
	q := NewQueued(g)
	q.Write([]byte("only\n"))
	waitFor(t, g.entered, "the write")
	flushed := make(chan struct{})
	go func() {
		q.Flush()
		close(flushed)
	}()
	select {
	case <-flushed:
		t.Fatal("Flush returned while the record was still being written")
	case <-time.After(100 * time.Millisecond):
	}
	close(g.open)
	waitFor(t, flushed, "Flush")
	if w := g.all(); len(w) != 1 || string(w[0]) != "only\n" {
		t.Fatalf("written %q", w)
	}
}

// Through a handler, every record is one Write of a Queued.
func TestQueuedUnderHandler(t *testing.T) {
	var out bytes.Buffer
	q := NewQueued(&out)
	log := New(q, Options{Format: "pretty"}, "net")
	log.Info("event accepted", "user", "alice", "event", "MessageNew")
	log.Warn("request rejected", "reason", "bad\x1b[2Jcredentials")
	q.Flush()
	got := out.String()
	if !strings.Contains(got, "event accepted") || !strings.Contains(got, "request rejected") {
		t.Fatalf("missing records:\n%s", got)
	}
	if strings.Contains(got, "\x1b") {
		t.Fatalf("an escape reached the output: %q", got)
	}
	if strings.Index(got, "event accepted") > strings.Index(got, "request rejected") {
		t.Fatal("records out of order")
	}
}

// A record that comes alone is written at once; those that follow it
// within the pace wait and go together when it ends, and Flush writes
// them without waiting for it.
func TestQueuedPacesWrites(t *testing.T) {
	g, q := wroteOne(t)
	q.Write([]byte("b\n"))
	q.Write([]byte("c\n"))
	select {
	case <-g.entered:
		t.Fatal("a record following a write within the pace was written at once")
	case <-time.After(100 * time.Millisecond):
	}
	flushed := make(chan struct{})
	go func() {
		q.Flush()
		close(flushed)
	}()
	waitFor(t, flushed, "Flush, in the middle of a pace")
	if w := g.all(); len(w) != 2 || string(w[0]) != "a\n" || string(w[1]) != "b\nc\n" {
		t.Fatalf("written %q, want \"a\\n\" then \"b\\nc\\n\"", w)
	}
}

// Records that fill a write do not wait for the pace to end: what waits
// stays one write's worth.
func TestQueuedFullWriteSkipsPace(t *testing.T) {
	g, q := wroteOne(t)
	rec := []byte(strings.Repeat("z", 127) + "\n")
	q.Write(rec)
	waitPacing(t, q)
	for range maxLine/len(rec) - 1 {
		q.Write(rec)
	}
	waitFor(t, g.entered, "a full write, before the pace ends")
	q.Flush() // the write under way ends
	if w := g.all(); len(w) != 2 || len(w[1]) != maxLine {
		t.Fatalf("%d writes, the last of %d bytes; want a second of %d", len(w), len(w[len(w)-1]), maxLine)
	}
}

// wroteOne is a Queued of an hour's pace on an open gate, once it wrote
// its first record, "a\n", alone: what follows waits for the pace.
func wroteOne(t *testing.T) (*gate, *Queued) {
	t.Helper()
	g := newGate()
	close(g.open)
	q := newQueued(g, time.Hour)
	q.Write([]byte("a\n"))
	waitFor(t, g.entered, "the first record, alone")
	return g, q
}

// waitPacing returns once q's goroutine waits for its pace to end with
// records queued.
func waitPacing(t *testing.T, q *Queued) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		q.mu.Lock()
		pacing := q.pacing
		q.mu.Unlock()
		if pacing {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the queue never waited for its pace")
		}
		time.Sleep(time.Millisecond)
	}
}
