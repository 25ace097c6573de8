// Package load is the load generator of the benchmarks: Dovecot's
// notification PUT, over HTTP/1.1 keep-alive connections or a new
// connection per request (what dovecot-lda does, one process per
// delivery), in clear or over TLS, from a fixed number of concurrent
// connections, with the latency of every request kept.
//
// It speaks HTTP/1.1 by hand rather than through net/http's client: the
// generator shares the machine's cores with the server it measures, so
// the less it spends per request the closer the figure is to the
// server's. It reads exactly what both servers measured send: a status
// line, headers with Content-Length, and that many bytes of body.
package load

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Timeout bounds one request, dial and handshake included: a server that
// stops answering fails the run instead of hanging it.
const Timeout = 10 * time.Second

// Target is where requests go.
type Target struct {
	Addr string      // host:port
	Path string      // the request path; "" is "/notify"
	TLS  *tls.Config // nil: plain HTTP. Without ClientSessionCache every new connection makes a full handshake, as a new dovecot-lda process does
	// KeepAlive reuses one connection for every request of a worker;
	// false dials a new one for each and closes it after the answer.
	KeepAlive bool
}

// Client sends requests one at a time to a Target, reusing its
// connection when the target is keep-alive. It is not safe for
// concurrent use; Run gives each worker its own.
type Client struct {
	t    Target
	head []byte // the request up to the Content-Length value
	req  []byte // reused for each request
	conn net.Conn
	br   *bufio.Reader
}

// NewClient returns a client of t.
func NewClient(t Target) *Client {
	if t.Path == "" {
		t.Path = "/notify"
	}
	// The headers Dovecot's OX driver sends, in its order (see
	// internal/dovecotsamples), but the Date and the credentials.
	// dovecot-lda says Keep-Alive too, and closes the connection when
	// its process exits after the answer; without KeepAlive the client
	// does the same.
	head := fmt.Appendf(nil, "PUT %s HTTP/1.1\r\nHost: %s\r\nConnection: Keep-Alive\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ",
		t.Path, t.Addr)
	return &Client{t: t, head: head, br: bufio.NewReaderSize(nil, 4096)}
}

// Close closes the client's connection, if any.
func (c *Client) Close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}

// Do sends one PUT with body and returns the status of the answer. The
// body of the answer is read and discarded.
func (c *Client) Do(body []byte) (int, error) {
	c.req = append(c.req[:0], c.head...)
	c.req = strconv.AppendInt(c.req, int64(len(body)), 10)
	c.req = append(c.req, "\r\n\r\n"...)
	c.req = append(c.req, body...)
	fresh := c.conn == nil
	if fresh {
		if err := c.dial(); err != nil {
			return 0, err
		}
	}
	status, keep, err := c.roundTrip()
	if err != nil && !fresh && c.t.KeepAlive && errors.Is(err, errStale) {
		// The server closed an idle connection before this request
		// reached it: a new connection, once, as any client does.
		c.Close()
		if err := c.dial(); err != nil {
			return 0, err
		}
		status, keep, err = c.roundTrip()
	}
	if err != nil || !keep || !c.t.KeepAlive {
		c.Close()
	}
	return status, err
}

// errStale is a connection that failed before any byte of the answer
// came: on a keep-alive connection used before, the server most likely
// closed it while it was idle.
var errStale = errors.New("connection closed before the answer")

func (c *Client) dial() error {
	d := net.Dialer{Timeout: Timeout}
	conn, err := d.Dial("tcp", c.t.Addr)
	if err != nil {
		return err
	}
	if c.t.TLS != nil {
		tc := tls.Client(conn, c.t.TLS)
		tc.SetDeadline(time.Now().Add(Timeout))
		if err := tc.Handshake(); err != nil {
			conn.Close()
			return fmt.Errorf("TLS handshake: %w", err)
		}
		conn = tc
	}
	c.conn = conn
	c.br.Reset(conn)
	return nil
}

// roundTrip writes the request and reads the answer; keep says the
// connection may carry another request.
func (c *Client) roundTrip() (status int, keep bool, err error) {
	c.conn.SetDeadline(time.Now().Add(Timeout))
	if _, err := c.conn.Write(c.req); err != nil {
		return 0, false, fmt.Errorf("%w: %w", errStale, err)
	}
	line, err := c.br.ReadSlice('\n')
	if err != nil {
		if len(line) == 0 {
			return 0, false, fmt.Errorf("%w: %w", errStale, err)
		}
		return 0, false, fmt.Errorf("reading the status line: %w", err)
	}
	// "HTTP/1.1 200 OK\r\n"
	if len(line) < 12 || string(line[:9]) != "HTTP/1.1 " {
		return 0, false, fmt.Errorf("bad status line %q", line)
	}
	status, err = strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, false, fmt.Errorf("bad status line %q", line)
	}
	length, keep := -1, true
	for {
		h, err := c.br.ReadSlice('\n')
		if err != nil {
			return 0, false, fmt.Errorf("reading the headers: %w", err)
		}
		if len(h) <= 2 { // "\r\n"
			break
		}
		name, value, ok := cutHeader(h)
		if !ok {
			return 0, false, fmt.Errorf("bad header %q", h)
		}
		switch {
		case asciiEqualFold(name, "Content-Length"):
			length, err = strconv.Atoi(string(value))
			if err != nil || length < 0 {
				return 0, false, fmt.Errorf("bad Content-Length %q", value)
			}
		case asciiEqualFold(name, "Connection"):
			keep = !asciiEqualFold(value, "close")
		case asciiEqualFold(name, "Transfer-Encoding"):
			return 0, false, fmt.Errorf("transfer-encoding %q: not what the servers measured send", value)
		}
	}
	if length < 0 {
		return 0, false, errors.New("answer without Content-Length")
	}
	if _, err := c.br.Discard(length); err != nil {
		return 0, false, fmt.Errorf("reading the body: %w", err)
	}
	return status, keep, nil
}

func cutHeader(h []byte) (name, value []byte, ok bool) {
	for i, b := range h {
		if b == ':' {
			v := h[i+1:]
			for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
				v = v[1:]
			}
			for len(v) > 0 && (v[len(v)-1] == '\n' || v[len(v)-1] == '\r' || v[len(v)-1] == ' ') {
				v = v[:len(v)-1]
			}
			return h[:i], v, i > 0
		}
	}
	return nil, nil, false
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		x, y := b[i]|0x20, s[i]|0x20
		if x != y {
			return false
		}
	}
	return true
}

// Options are one run of the generator.
type Options struct {
	Target Target
	// Conns is the number of concurrent connections (workers), each
	// sending its next request once the previous one is answered.
	Conns int
	// Requests ends the run after this many requests in all; 0: after
	// Duration.
	Requests int
	Duration time.Duration
	// Body returns the body of request n (counted from 0 over the whole
	// run) of worker w into buf, which it may reuse. Run calls it from
	// the workers' goroutines.
	Body func(buf []byte, w, n int) []byte
	// Status, when set, is told the status of every request (the load
	// test checks each); nil counts anything but 200 as failed.
	Status func(w, n, status int)
}

// Result is what a run measured.
type Result struct {
	Requests int           // answered
	Failed   int           // errors, and answers other than 200
	Err      error         // the first error, if any
	Elapsed  time.Duration // from the first request to the last answer
	// Latency holds every answered request's time, dial and handshake
	// included, sorted.
	Latency []time.Duration
}

// RPS is the rate of answered requests.
func (r Result) RPS() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Requests) / r.Elapsed.Seconds()
}

// Percentile returns the latency below which a fraction p (0..1) of the
// requests were answered: p 0.5 is the median, 1 the maximum.
func (r Result) Percentile(p float64) time.Duration {
	return Percentile(r.Latency, p)
}

// Percentile is the value at fraction p of sorted, nearest rank.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// Run sends requests from o.Conns workers until o.Requests are sent or
// o.Duration has passed.
func Run(o Options) Result {
	if o.Conns < 1 {
		o.Conns = 1
	}
	var (
		next     atomic.Int64 // requests handed out
		mu       sync.Mutex
		res      Result
		wg       sync.WaitGroup
		deadline time.Time
	)
	start := time.Now()
	if o.Requests <= 0 {
		deadline = start.Add(o.Duration)
	}
	for w := range o.Conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := NewClient(o.Target)
			defer c.Close()
			var (
				buf    []byte
				lat    []time.Duration
				failed int
				first  error
			)
			if o.Requests > 0 {
				lat = make([]time.Duration, 0, o.Requests/o.Conns+1)
			}
			for {
				n := int(next.Add(1) - 1)
				if o.Requests > 0 && n >= o.Requests {
					break
				}
				buf = o.Body(buf, w, n)
				t0 := time.Now()
				if !deadline.IsZero() && t0.After(deadline) {
					break
				}
				status, err := c.Do(buf)
				d := time.Since(t0)
				switch {
				case err != nil:
					failed++
					first = cmpErr(first, fmt.Errorf("worker %d request %d: %w", w, n, err))
				case o.Status != nil:
					o.Status(w, n, status)
					lat = append(lat, d)
				case status != 200:
					failed++
					first = cmpErr(first, fmt.Errorf("worker %d request %d: status %d", w, n, status))
					lat = append(lat, d)
				default:
					lat = append(lat, d)
				}
			}
			mu.Lock()
			res.Latency = append(res.Latency, lat...)
			res.Failed += failed
			res.Err = cmpErr(res.Err, first)
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	res.Requests = len(res.Latency)
	slices.Sort(res.Latency)
	return res
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// Body is a Dovecot 2.3 messageNew notification for user, with uid as
// its imap-uid, appended to buf: the shape and size (about 300 bytes) of
// the captures in internal/dovecotsamples, RFC 2047 words included.
func Body(buf []byte, user string, uid int) []byte {
	buf = append(buf[:0], `{"user":"`...)
	buf = append(buf, user...)
	buf = append(buf, `","event":"messageNew","folder":"INBOX","imap-uidvalidity":1795613200,"imap-uid":`...)
	buf = strconv.AppendInt(buf, int64(uid), 10)
	buf = append(buf, `,"from":"=?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?= <juergen@example.org>","subject":"=?UTF-8?B?R3LDvMOfZSBhdXMgTcO8bmNoZW4g4pyT?=","snippet":"Gr\u00fc\u00dfe aus M\u00fcnchen","unseen":3}`...)
	return buf
}
