package logging

import (
	"io"
	"sync"
	"time"
)

// Queued is an io.Writer for a handler's records that returns at once and
// writes from a goroutine of its own, at most one write per pace: a
// record that comes when nothing was written for a pace goes at once,
// the records that follow it within the pace gather and go together when
// it ends, or as soon as they fill a write (maxLine bytes). A request
// whose handler logs a line then waits for no system call, and under load
// the lines of many requests go out in one write, which wakes whoever
// reads the other end (journald, syslog, a pipe) once.
//
// Every Write must be one whole record, as Handle makes them. A write to
// the underlying writer holds whole records and at most maxLine bytes,
// unless one record alone is longer, so that the lines of several
// processes sharing a pipe still never interleave (a write of up to
// PIPE_BUF bytes is atomic). Records keep their order.
//
// Memory is bounded: once maxQueued bytes wait, Write blocks until the
// goroutine has written them, as a blocking writer would. What waits when
// the process is killed is lost: the lines of the last pace and of the
// last write's time. Flush before a process ends; it writes what waits at
// once, whatever the pace.
type Queued struct {
	w     io.Writer
	pace  time.Duration
	wake  chan struct{}
	hurry chan struct{} // cuts a pace short: Flush, or a full write waits

	mu    sync.Mutex
	done  sync.Cond // broadcast when a write ends
	queue []byte    // records waiting
	ends  []int     // where each record in queue ends
	spare []byte    // the last written buffer, reused
	busy  bool      // the goroutine is writing
	last  time.Time // when the last write began
	// pacing is set while the goroutine waits for the pace to end with
	// records queued; flushes counts the Flush calls waiting.
	pacing  bool
	flushes int
}

// logPace is the least time between two writes of a Queued: under load,
// the network process's `event accepted` lines go out in writes of about
// a millisecond's worth, not one each. A record that comes alone is not
// delayed.
const logPace = time.Millisecond

// maxQueued bounds the bytes waiting in a Queued; a buffer up to it is
// kept for reuse.
const maxQueued = 64 << 10

// NewQueued returns a Queued writing to w. Its goroutine lives as long as
// the process.
func NewQueued(w io.Writer) *Queued {
	return newQueued(w, logPace)
}

func newQueued(w io.Writer, pace time.Duration) *Queued {
	q := &Queued{w: w, pace: pace, wake: make(chan struct{}, 1), hurry: make(chan struct{}, 1)}
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
	switch {
	case q.pacing:
		if len(q.queue) >= maxLine {
			q.hurryLocked()
		}
	case !q.busy:
		select {
		case q.wake <- struct{}{}:
		default: // already woken
		}
	}
	q.mu.Unlock()
	return len(p), nil
}

func (q *Queued) hurryLocked() {
	select {
	case q.hurry <- struct{}{}:
	default: // already hurried
	}
}

// Flush returns once every record queued before it was written.
func (q *Queued) Flush() {
	q.mu.Lock()
	q.flushes++
	if q.pacing {
		q.hurryLocked()
	}
	for q.busy || len(q.queue) > 0 {
		q.done.Wait()
	}
	q.flushes--
	q.mu.Unlock()
}

func (q *Queued) run() {
	var ends []int
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for range q.wake {
		q.mu.Lock()
		for len(q.queue) > 0 {
			if wait := q.pace - time.Since(q.last); wait > 0 && len(q.queue) < maxLine && q.flushes == 0 {
				// Written less than a pace ago: what follows gathers.
				q.pacing = true
				q.mu.Unlock()
				timer.Reset(wait)
				select {
				case <-timer.C:
				case <-q.hurry:
					timer.Stop()
				}
				q.mu.Lock()
				q.pacing = false
				// The pace is over or cut short: write now. A hurry that
				// came as the timer fired stays, and only shortens the
				// next pace.
				q.last = time.Time{}
				continue
			}
			q.last = time.Now()
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
