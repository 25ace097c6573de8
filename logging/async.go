package logging

import (
	"io"
	"sync"
)

// Queued is an io.Writer for a handler's records that returns at once and
// writes from a goroutine of its own: when idle at once, and what gathered
// in the meantime in as few writes as fit. A request whose handler logs a
// line then waits for no system call, and under load the lines of many
// requests go out in one write (and wake whoever reads the other end of a
// pipe once).
//
// Every Write must be one whole record, as Handle makes them. A write to
// the underlying writer holds whole records and at most maxLine bytes,
// unless one record alone is longer, so that the lines of several
// processes sharing a pipe still never interleave (a write of up to
// PIPE_BUF bytes is atomic). Records keep their order.
//
// Memory is bounded: once maxQueued bytes wait, Write blocks until the
// goroutine has written them, as a blocking writer would. What waits when
// the process is killed is lost: the lines written in the last write's
// time. Flush before a process ends.
type Queued struct {
	w    io.Writer
	wake chan struct{}

	mu    sync.Mutex
	done  sync.Cond // broadcast when a write ends
	queue []byte    // records waiting
	ends  []int     // where each record in queue ends
	spare []byte    // the last written buffer, reused
	busy  bool      // the goroutine is writing
}

// maxQueued bounds the bytes waiting in a Queued; a buffer up to it is
// kept for reuse.
const maxQueued = 64 << 10

// NewQueued returns a Queued writing to w. Its goroutine lives as long as
// the process.
func NewQueued(w io.Writer) *Queued {
	q := &Queued{w: w, wake: make(chan struct{}, 1)}
	q.done.L = &q.mu
	go q.run()
	return q
}

// Write queues p, one record, and returns at once unless maxQueued bytes
// already wait. It never fails: a failed write is the underlying
// writer's, as a log line's is for every handler.
func (q *Queued) Write(p []byte) (int, error) {
	q.mu.Lock()
	for len(q.queue) > 0 && len(q.queue)+len(p) > maxQueued {
		q.done.Wait()
	}
	q.queue = append(q.queue, p...)
	q.ends = append(q.ends, len(q.queue))
	if !q.busy {
		select {
		case q.wake <- struct{}{}:
		default: // already woken
		}
	}
	q.mu.Unlock()
	return len(p), nil
}

// Flush returns once every record queued before it was written.
func (q *Queued) Flush() {
	q.mu.Lock()
	for q.busy || len(q.queue) > 0 {
		q.done.Wait()
	}
	q.mu.Unlock()
}

func (q *Queued) run() {
	var ends []int
	for range q.wake {
		q.mu.Lock()
		for len(q.queue) > 0 {
			buf := q.queue
			ends = append(ends[:0], q.ends...)
			q.queue, q.ends, q.spare = q.spare[:0], q.ends[:0], nil
			q.busy = true
			q.mu.Unlock()
			writeRecords(q.w, buf, ends)
			q.mu.Lock()
			if cap(buf) <= maxQueued {
				q.spare = buf[:0]
			}
			q.busy = false
			q.done.Broadcast()
		}
		q.mu.Unlock()
	}
}

// writeRecords writes buf, records ending at ends, in writes of whole
// records of at most maxLine bytes, or of one longer record alone.
func writeRecords(w io.Writer, buf []byte, ends []int) {
	start, last := 0, 0 // the write's start, the end of its last record
	for _, end := range ends {
		if end-start > maxLine && last > start {
			w.Write(buf[start:last])
			start = last
		}
		last = end
	}
	if last > start {
		w.Write(buf[start:last])
	}
}
