// Package bare is the ceiling the benchmarks measure imserious against:
// a plain net/http server in one process that does the least a
// notification endpoint can do. It reads the body (at most 64 KiB, as
// imserious does), decodes it with encoding/json into the fields of
// Dovecot's notification, and answers 200 with an empty body; no
// privilege separation, no log line.
//
// HandlerTo, Forwarder and Sink add the one cost no privilege-separated
// design can avoid: every accepted body goes over a unix seqpacket socket
// to a second process, which decodes it again. That is the floor of
// imserious's process shape, without any of its own work.
package bare

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
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

// Forwarder hands bodies to a second process, one packet each, over a
// connected unix seqpacket socket. It is safe for concurrent use: the
// runtime serialises writes on one socket, and a seqpacket write is all
// or nothing, so two bodies never mix and none is split.
type Forwarder struct {
	conn *net.UnixConn
}

// NewForwarder returns a Forwarder writing to conn, a connected unix
// seqpacket socket (network "unixpacket").
func NewForwarder(conn *net.UnixConn) *Forwarder { return &Forwarder{conn: conn} }

// Send writes body as exactly one packet. It waits while the receiver's
// buffer is full: the receiver slowing down slows the senders, which is
// the cost of the hand-over being measured, not hidden.
func (f *Forwarder) Send(body []byte) error {
	if len(body) > MaxBody {
		return fmt.Errorf("forward: %d bytes, at most %d", len(body), MaxBody)
	}
	if _, err := f.conn.Write(body); err != nil {
		return fmt.Errorf("forward: %w", err)
	}
	return nil
}

// Close closes the socket: the receiver's Sink sees the end of its input
// once it has read what was sent before.
func (f *Forwarder) Close() error { return f.conn.Close() }

// Sink is the second process's side of a Forwarder: it reads packets
// from conn until the sender closes its end and decodes each into the
// notification, checking user and event again, as imserious's exec
// process decodes and validates each event a second time. It returns nil
// at the end of the input. Every body was accepted by HandlerTo, so a
// packet that fails to decode, or is longer than MaxBody (the buffer's
// extra byte shows a packet it truncated), is a bug and returned as an
// error.
func Sink(conn *net.UnixConn) error {
	buf := make([]byte, MaxBody+1)
	for {
		k, err := conn.Read(buf)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("sink: %w", err)
		}
		if k > MaxBody {
			return fmt.Errorf("sink: a packet over %d bytes", MaxBody)
		}
		if status := check(buf[:k]); status != 0 {
			return fmt.Errorf("sink: %.40q: refused with %d", buf[:k], status)
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
