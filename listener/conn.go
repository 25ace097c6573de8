package listener

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// epoch anchors conn.start, which is stored as a monotonic offset so the
// time it yields keeps Go's monotonic clock reading.
var epoch = time.Now()

// timedListener wraps every accepted connection in a conn, after the
// checks that need nothing from the client but its address.
type timedListener struct {
	net.Listener
	s *Server
}

// Accept returns the next connection that the allow list admits and the
// open-connection caps have room for.
//
// Security-sensitive: the allow list is applied here, before any TLS
// handshake, so a disallowed peer is sent nothing (not even the
// certificate) and costs no handshake. Connections refused here are
// closed at once; each is logged at warn through the rate limiter, as a
// hostile client decides how many there are.
func (l timedListener) Accept() (net.Conn, error) {
	s := l.s
	var evicted []eviction
	for {
		raw, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		peer := peerOf(raw)
		p := s.policy.Load()
		if !p.allows(peer.Addr()) {
			raw.Close()
			s.warnConn("connection refused", peer, "peer not in allow list")
			continue
		}
		c := s.newConn(raw, peer, p)
		var reason string
		evicted, reason = s.open.admit(c, evicted[:0])
		for _, e := range evicted {
			// The raw connection, not the TLS one: closing that
			// would first try to send an alert, with a 5 s deadline,
			// on this accept loop's goroutine.
			e.c.tcp.Close()
			s.warnConn("idle connection closed", e.c.peer, e.reason)
		}
		if reason != "" {
			raw.Close()
			s.warnConn("connection refused", peer, reason+", none idle")
			continue
		}
		return c, nil
	}
}

// warnConn logs a connection closed at accept.
func (s *Server) warnConn(msg string, peer netip.AddrPort, reason string) {
	s.warn.warn(context.Background(), logKey{msg: msg, reason: reason, addr: peer.Addr()},
		slog.String("peer", peer.String()), slog.String("reason", reason))
}

// connState keeps openConns' idle lists in step with net/http.
func (s *Server) connState(nc net.Conn, state http.ConnState) {
	c, ok := nc.(*conn)
	if !ok || c.open == nil {
		return
	}
	switch state {
	case http.StateActive:
		c.open.setIdle(c, false)
	case http.StateIdle:
		c.open.setIdle(c, true)
	case http.StateClosed, http.StateHijacked:
		c.open.remove(c)
	}
}

// conn is a server connection that knows its peer and whether the allow
// list admits it (both computed once, not per request: the allow list is
// judged again only after an Update), and when the current request's first
// bytes arrived. With TLS it is the plaintext side: net/http reads
// decrypted bytes through it, so framing sees the requests as sent.
type conn struct {
	net.Conn          // what net/http reads and writes: tcp, or a *tls.Conn over it
	tcp      net.Conn // the accepted connection
	tls      *tls.Conn
	s        *Server
	peer     netip.AddrPort // IPv4-mapped addresses unmapped
	// handshaken is set by the first Read, on the connection's goroutine;
	// later Reads (net/http's background reader among them) start after.
	handshaken bool
	// judged is the policy allowed was computed under. Only the
	// connection's own goroutine reads or writes the two (net/http serves
	// a connection's requests one after another, on the goroutine started
	// after Accept returned it).
	judged  *policy
	allowed bool
	// start is time.Since(epoch) when the first read of the current
	// request returned data; 0 until then. Atomic because net/http's
	// background reader may read while the handler runs.
	start atomic.Int64

	// frMu guards fr: Read (on the connection's goroutine or net/http's
	// background reader) feeds it while the handler takes verdicts.
	frMu sync.Mutex
	fr   framing

	body idleReader // the current request's, see readBody

	// Owned by openConns, under its lock; open is set once by admit.
	open        *openConns
	addr        *addrConns // nil once off the books
	idle        bool
	all, byAddr links
}

func peerOf(c net.Conn) netip.AddrPort {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return unmap(a.AddrPort())
	}
	ap, _ := netip.ParseAddrPort(c.RemoteAddr().String())
	return unmap(ap)
}

// newConn wraps raw, accepted from peer under policy p (which admits it),
// in TLS when the server has it.
func (s *Server) newConn(raw net.Conn, peer netip.AddrPort, p *policy) *conn {
	c := &conn{Conn: raw, tcp: raw, s: s, peer: peer, judged: p, allowed: true}
	if s.tls != nil {
		c.tls = tls.Server(raw, s.tls)
		c.Conn = c.tls
	}
	return c
}

// admitted reports whether the allow list of p admits the peer, judging it
// again when p is not the policy it was last judged under, so that an
// Update that removes a peer reaches its keep-alive connections too.
func (c *conn) admitted(p *policy) bool {
	if c.judged != p {
		c.judged, c.allowed = p, p.allows(c.peer.Addr())
	}
	return c.allowed
}

// unmap returns ap with an IPv4-mapped IPv6 address as IPv4, as the allow
// list, routes and IMSE_REMOTE_IP compare and show it.
func unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func (c *conn) Read(p []byte) (int, error) {
	if c.tls != nil && !c.handshaken {
		if err := c.handshake(); err != nil {
			return 0, err
		}
	}
	n, err := c.Conn.Read(p)
	if n > 0 {
		if c.start.Load() == 0 {
			c.start.Store(max(int64(time.Since(epoch)), 1))
		}
		c.frMu.Lock()
		c.fr.feed(p[:n])
		c.frMu.Unlock()
	}
	return n, err
}

// handshake runs the TLS handshake, which net/http would otherwise run
// itself had it been handed the *tls.Conn: it is here because this conn
// must sit above TLS to see the plaintext. The read deadline net/http set
// for the request's headers bounds it; the write deadline, which net/http
// sets only once headers are read, is set to the same Timeout here.
func (c *conn) handshake() error {
	c.handshaken = true
	c.tls.SetWriteDeadline(time.Now().Add(c.s.timeout))
	err := c.tls.Handshake()
	if err == nil {
		return nil
	}
	var re tls.RecordHeaderError
	if errors.As(err, &re) && re.Conn != nil && looksLikeHTTP(re.RecordHeader) {
		// What net/http answers in the same case: the operator reading
		// Dovecot's log learns the URL should say https.
		re.Conn.Write([]byte("HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"))
	}
	c.s.log.LogAttrs(context.Background(), slog.LevelDebug, "tls handshake failed",
		slog.String("peer", c.peer.String()), slog.Any("error", err))
	// A read error is what makes net/http close without answering (its
	// isCommonNetReadError); any other error would make it write a 400
	// into the failed TLS connection.
	return &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

func looksLikeHTTP(hdr [5]byte) bool {
	switch string(hdr[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		return true
	}
	return false
}

// Close takes the connection off openConns' books before closing it.
func (c *conn) Close() error {
	if c.open != nil {
		c.open.remove(c)
	}
	return c.Conn.Close()
}

// CloseWrite keeps net/http's graceful close (half-close, then drain) that
// it only does for connections with a CloseWrite method: without it a
// client still sending a rejected body could get a reset instead of the
// answer. With TLS it sends close_notify, as net/http would on a *tls.Conn.
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// verdict returns framing's verdict on the request being handled, or false
// when it has none (it lost its place). Every request must take exactly
// one, in order: the handler calls it once, first. A verdict with both
// headers is returned even if it does not match the request (HTTP/1.0,
// where net/http ignores Transfer-Encoding): the connection is closed
// after it anyway. Any other mismatch means framing lost its place.
func (c *conn) verdict(contentLength int64, transferEncoding []string) (verdict, bool) {
	c.frMu.Lock()
	defer c.frMu.Unlock()
	v, ok := c.fr.next()
	if ok && !(v.cl && v.te) && !v.matches(contentLength, transferEncoding) {
		c.fr.lose()
		return verdict{}, false
	}
	return v, ok
}

// requestStart returns when the current request's first bytes arrived. A
// request already buffered with the previous one (pipelining) has no read
// of its own: it starts now.
func (c *conn) requestStart() time.Time {
	if d := c.start.Load(); d != 0 {
		return epoch.Add(time.Duration(d))
	}
	return time.Now()
}

// requestDone makes the next read mark the start of the next request.
func (c *conn) requestDone() {
	c.start.Store(0)
}

type connKey struct{}

// connContext makes the *conn reachable from each request's context.
func connContext(ctx context.Context, c net.Conn) context.Context {
	if cc, ok := c.(*conn); ok {
		return context.WithValue(ctx, connKey{}, cc)
	}
	return ctx
}
