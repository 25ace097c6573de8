package listener

import (
	"context"
	"crypto/tls"
	"net"
	"net/netip"
	"sync/atomic"
	"time"
)

// epoch anchors conn.start, which is stored as a monotonic offset so the
// time it yields keeps Go's monotonic clock reading.
var epoch = time.Now()

// timedListener wraps every accepted connection in a conn.
type timedListener struct {
	net.Listener
	s *Server
}

func (l timedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.s.newConn(c), nil
}

// conn is a server connection that knows its peer and whether the allow
// list admits it (both computed once, not per request: the allow list is
// judged again only after an Update), and when the current request's first
// bytes arrived.
type conn struct {
	net.Conn
	peer netip.AddrPort // IPv4-mapped addresses unmapped
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
}

func (s *Server) newConn(c net.Conn) *conn {
	var peer netip.AddrPort
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		peer = unmap(a.AddrPort())
	} else {
		ap, _ := netip.ParseAddrPort(c.RemoteAddr().String())
		peer = unmap(ap)
	}
	p := s.policy.Load()
	return &conn{Conn: c, peer: peer, judged: p, allowed: p.allows(peer.Addr())}
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
	n, err := c.Conn.Read(p)
	if n > 0 && c.start.Load() == 0 {
		c.start.Store(max(int64(time.Since(epoch)), 1))
	}
	return n, err
}

// CloseWrite keeps net/http's graceful close (half-close, then drain) that
// it only does for connections with a CloseWrite method: without it a
// client still sending a rejected body could get a reset instead of the
// answer.
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
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
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if cc, ok := c.(*conn); ok {
		return context.WithValue(ctx, connKey{}, cc)
	}
	return ctx
}
