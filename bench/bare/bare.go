// Package bare is the ceiling the benchmarks measure imserious against:
// a plain net/http server in one process that does the least a
// notification endpoint can do. It reads the body (at most 64 KiB, as
// imserious does), decodes it with encoding/json into the fields of
// Dovecot's notification, and answers 200 with an empty body; no
// privilege separation, no log line.
//
// HandlerTo, Forwarder and Sink add the one cost no privilege-separated
// design can avoid: every accepted body goes over a unix seqpacket socket
// to a second process, which decodes it again, in batches as imserious
// hands its events over. That is the floor of imserious's process shape,
// without any of its own work.
package bare

import (
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

// MaxBody is imserious's limit on a body (listener.MaxBody).
const MaxBody = 64 << 10

// notification is what imserious reads of a body (spec §3).
type notification struct {
	User         string          `json:"user"`
	Event        string          `json:"event"`
	Folder       *string         `json:"folder"`
	IMAPUIDValid *uint32         `json:"imap-uidvalidity"`
	IMAPUID      json.RawMessage `json:"imap-uid"` // a number or an array of numbers
	From         *string         `json:"from"`
	Subject      *string         `json:"subject"`
	Snippet      *string         `json:"snippet"`
	Unseen       *uint32         `json:"unseen"`
}

// Handler answers a PUT or POST whose body is a JSON notification with
// 200; another method 405, a body over MaxBody 413, one encoding/json
// refuses 400 (imserious says 422 for a known field of the wrong type),
// one without user or event 422. It is HandlerTo(nil).
func Handler() http.Handler { return HandlerTo(nil) }

// HandlerTo is Handler that also hands every body it accepts to out
// before it answers, as imserious's network process hands each event to
// its exec process: 200 once out has returned nil, 503 when out fails.
// A body Handler rejects is not handed over. out nil hands over nothing.
// The body is out's to keep.
func HandlerTo(out func(body []byte) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPut && r.Method != http.MethodPost {
			w.Header().Set("Allow", "PUT, POST")
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
		if err != nil {
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			return
		}
		if status := check(body); status != 0 {
			w.WriteHeader(status)
			return
		}
		if out != nil {
			if err := out(body); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
		}
		w.WriteHeader(http.StatusOK)
	})
}

// check decodes a body and returns the status that refuses it, 400 for
// JSON encoding/json refuses and 422 without user or event, or 0.
func check(body []byte) int {
	var n notification
	if err := json.Unmarshal(body, &n); err != nil {
		return http.StatusBadRequest
	}
	if n.User == "" || n.Event == "" {
		return http.StatusUnprocessableEntity
	}
	return 0
}

// SeqpacketConn wraps f, which must be a unix seqpacket socket, for
// NewForwarder or Sink. It closes f, also on error: net.FileConn works
// on a duplicate, and f may be an inherited descriptor (fd 3) that would
// otherwise stay open beside it.
func SeqpacketConn(f *os.File) (*net.UnixConn, error) {
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, err
	}
	uc, ok := c.(*net.UnixConn)
	if !ok || uc.LocalAddr().Network() != "unixpacket" {
		c.Close()
		return nil, fmt.Errorf("%s: %s socket, want a unix seqpacket socket", f.Name(), c.LocalAddr().Network())
	}
	return uc, nil
}

// Forwarder hands bodies to a second process over a connected unix
// seqpacket socket the way imserious's network process hands events to
// its exec process: Send queues the body and returns, and a goroutine of
// the Forwarder's own sends what gathered meanwhile as one packet, so
// that under load the receiver wakes once for many bodies and no request
// waits for a system call. In a packet each body is preceded by its
// length, 4 bytes big-endian; a packet holds at most MaxPacket bytes.
//
// Where imserious owes a recovery for what its exec process's socket
// cannot take, Send waits while maxQueued packets are queued: the floor
// of a measurement must lose nothing, and the receiver slowing down then
// slows the senders.
type Forwarder struct {
	conn *net.UnixConn

	mu     sync.Mutex
	queue  [][]byte      // packets not yet sent, the last one filling
	spare  [][]byte      // sent packets' buffers, for the next
	wake   chan struct{} // tells the sender the queue is not empty
	room   sync.Cond     // signalled when the sender took the queue
	err    error         // the first failed write: every Send after it fails
	closed bool
	done   chan struct{} // closed when the sender has ended
}

// MaxPacket is the largest packet a Forwarder sends: one body of MaxBody
// with its length.
const MaxPacket = MaxBody + 4

// maxQueued bounds the packets a Forwarder queues, as imserious's
// network process bounds the batches it queues for an exec process.
const maxQueued = 4

// NewForwarder returns a Forwarder writing to conn, a connected unix
// seqpacket socket (network "unixpacket"), and starts its sender.
func NewForwarder(conn *net.UnixConn) *Forwarder {
	f := newForwarder(conn)
	go f.send()
	return f
}

// newForwarder is NewForwarder without its sender, which the caller
// starts (go f.send()).
func newForwarder(conn *net.UnixConn) *Forwarder {
	f := &Forwarder{conn: conn, wake: make(chan struct{}, 1), done: make(chan struct{})}
	f.room.L = &f.mu
	return f
}

// Send queues body for the next packet. It returns an error once the
// Forwarder is closed or a write has failed, and for a body over
// MaxBody. body is not kept.
func (f *Forwarder) Send(body []byte) error {
	if len(body) > MaxBody {
		return fmt.Errorf("forward: %d bytes, at most %d", len(body), MaxBody)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for {
		if f.closed {
			return errors.New("forward: closed")
		}
		if f.err != nil {
			return f.err
		}
		k := len(f.queue)
		if k > 0 && len(f.queue[k-1])+4+len(body) <= MaxPacket {
			break
		}
		if k < maxQueued {
			var p []byte
			if n := len(f.spare); n > 0 {
				p, f.spare = f.spare[n-1][:0], f.spare[:n-1]
			}
			f.queue = append(f.queue, p)
			break
		}
		f.room.Wait()
	}
	wasEmpty := len(f.queue) == 1 && len(f.queue[0]) == 0
	k := len(f.queue) - 1
	f.queue[k] = binary.BigEndian.AppendUint32(f.queue[k], uint32(len(body)))
	f.queue[k] = append(f.queue[k], body...)
	if wasEmpty {
		select {
		case f.wake <- struct{}{}:
		default:
		}
	}
	return nil
}

// send writes what is queued each time wake says there is some, until
// Close, then what is left.
func (f *Forwarder) send() {
	defer close(f.done)
	for range f.wake {
		f.mu.Lock()
		q := f.queue
		f.queue = nil
		f.room.Broadcast()
		f.mu.Unlock()
		var err error
		for _, p := range q {
			if _, err = f.conn.Write(p); err != nil {
				err = fmt.Errorf("forward: %w", err)
				break
			}
		}
		f.mu.Lock()
		if err != nil && f.err == nil {
			f.err = err
		}
		for _, p := range q {
			if cap(p) <= MaxPacket && len(f.spare) < maxQueued {
				f.spare = append(f.spare, p)
			}
		}
		f.room.Broadcast()
		f.mu.Unlock()
	}
}

// Close sends what is queued, then closes the socket: the receiver's
// Sink sees the end of its input once it has read every packet. It
// returns the first write that failed.
func (f *Forwarder) Close() error {
	f.mu.Lock()
	if !f.closed {
		f.closed = true
		f.room.Broadcast()
		// A last wake for what is queued: the sender reads it before
		// the close ends its loop.
		select {
		case f.wake <- struct{}{}:
		default:
		}
		close(f.wake)
	}
	f.mu.Unlock()
	<-f.done
	f.mu.Lock()
	err := f.err
	f.mu.Unlock()
	return errors.Join(err, f.conn.Close())
}

// Sink is the second process's side of a Forwarder: it reads packets
// from conn until the sender closes its end and decodes every body in
// each into the notification, checking user and event again, as
// imserious's exec process decodes and validates each event a second
// time. It returns nil at the end of the input. Every body was accepted
// by HandlerTo, so a packet that does not split into whole bodies, is
// longer than MaxPacket (the buffer's extra byte shows a packet it
// truncated), or holds a body that fails to decode, is a bug and
// returned as an error.
func Sink(conn *net.UnixConn) error {
	buf := make([]byte, MaxPacket+1)
	for {
		k, err := conn.Read(buf)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("sink: %w", err)
		}
		if k > MaxPacket {
			return fmt.Errorf("sink: a packet over %d bytes", MaxPacket)
		}
		if k == 0 {
			return errors.New("sink: an empty packet")
		}
		for p := buf[:k]; len(p) > 0; {
			if len(p) < 4 {
				return fmt.Errorf("sink: %d bytes left in a packet, not a length", len(p))
			}
			n := binary.BigEndian.Uint32(p)
			if uint64(n) > uint64(len(p)-4) {
				return fmt.Errorf("sink: a body of %d bytes, %d left in the packet", n, len(p)-4)
			}
			body := p[4 : 4+n]
			if status := check(body); status != 0 {
				return fmt.Errorf("sink: %.40q: refused with %d", body, status)
			}
			p = p[4+n:]
		}
	}
}

// Server is an http.Server for Handler with imserious's defaults: the
// 5 s timeout for a request and for an idle keep-alive connection, and
// over TLS, TLS 1.2 and up with HTTP/1.1 only. cert nil: plain HTTP.
func Server(cert *tls.Certificate) *http.Server {
	const timeout = 5 * time.Second
	s := &http.Server{
		Handler:           Handler(),
		ReadHeaderTimeout: timeout,
		ReadTimeout:       timeout,
		WriteTimeout:      2 * timeout,
		IdleTimeout:       timeout,
	}
	var p http.Protocols
	p.SetHTTP1(true)
	s.Protocols = &p
	if cert != nil {
		s.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{*cert}}
	}
	return s
}
