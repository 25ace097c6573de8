package listener

import (
	"net/netip"
	"sync"

	"github.com/imserious/imserious/internal/prefix"
)

// Defaults of spec §2 for the open-connection caps. A LAN's Dovecot holds
// a few connections; these only bind a client that opens them on purpose.
const (
	DefaultMaxOpen      = 1000
	DefaultMaxOpenPerIP = 100
)

// openConns counts the open connections, in all and per peer address, and
// keeps the idle ones in the order they became idle, so that a connection
// over a cap can make room by closing the longest-idle one instead of
// being refused. Each open connection costs a goroutine and net/http's
// 4 KiB read and 4 KiB write buffers (plus TLS's when on), so the caps
// bound the memory the network process spends on clients that only hold
// sockets.
//
// Idle means between requests as net/http sees it (http.StateNew and
// StateIdle): from accept or the end of the previous answer until a
// request's headers have been read. A client trickling its headers is
// therefore idle since it connected, and is among the first closed: it
// holds a socket, but has not earned one.
type openConns struct {
	mu       sync.Mutex
	maxOpen  int
	maxPerIP int
	n        int
	idle     idleList // oldest first
	byAddr   map[netip.Addr]*addrConns
}

// addrConns is the part of openConns for one peer address.
type addrConns struct {
	n    int
	idle idleList
}

// idleList is an intrusive doubly linked list of conns, through the links
// that sel picks in each conn: joining or leaving it allocates nothing,
// which matters as every keep-alive request does both.
type idleList struct {
	head, tail *conn
}

type links struct{ prev, next *conn }

func allLinks(c *conn) *links  { return &c.all }
func addrLinks(c *conn) *links { return &c.byAddr }

func (l *idleList) push(c *conn, sel func(*conn) *links) {
	lc := sel(c)
	lc.prev, lc.next = l.tail, nil
	if l.tail != nil {
		sel(l.tail).next = c
	} else {
		l.head = c
	}
	l.tail = c
}

func (l *idleList) remove(c *conn, sel func(*conn) *links) {
	lc := sel(c)
	if lc.prev != nil {
		sel(lc.prev).next = lc.next
	} else {
		l.head = lc.next
	}
	if lc.next != nil {
		sel(lc.next).prev = lc.prev
	} else {
		l.tail = lc.prev
	}
	lc.prev, lc.next = nil, nil
}

func newOpenConns(cfg Config) *openConns {
	o := &openConns{byAddr: make(map[netip.Addr]*addrConns)}
	o.setCaps(cfg)
	return o
}

// setCaps applies cfg's caps, with the defaults. A lowered cap is
// enforced at the next accept, which closes idle connections until it is
// met (a busy connection is never cut short for a configuration change).
func (o *openConns) setCaps(cfg Config) {
	maxOpen, perIP := maxOpen(cfg), maxOpenPerIP(cfg)
	o.mu.Lock()
	o.maxOpen, o.maxPerIP = maxOpen, perIP
	o.mu.Unlock()
}

func maxOpen(cfg Config) int {
	if cfg.MaxOpen <= 0 {
		return DefaultMaxOpen
	}
	return cfg.MaxOpen
}

func maxOpenPerIP(cfg Config) int {
	if cfg.MaxOpenPerIP <= 0 {
		return DefaultMaxOpenPerIP
	}
	return cfg.MaxOpenPerIP
}

// Why a connection was closed or refused at accept, as logged.
const (
	reasonPerIP = "max_open_per_ip reached"
	reasonOpen  = "max_open_connections reached"
)

// eviction is an idle connection closed to make room, and why.
type eviction struct {
	c      *conn
	reason string
}

// admit counts c (idle, as it has sent nothing yet) if the caps allow,
// first making room by taking the longest-idle connections of its address,
// then of all, off the books. The caller closes those (outside the lock:
// closing is a system call). When there is no idle connection to take,
// c is not admitted and reason says which cap is full; the connections
// already taken stay closed, as they were the longest idle over a cap.
func (o *openConns) admit(c *conn, evicted []eviction) (_ []eviction, reason string) {
	addr := prefix.Peer(c.peer.Addr())
	o.mu.Lock()
	defer o.mu.Unlock()
	a := o.byAddr[addr]
	if a == nil {
		a = &addrConns{}
		o.byAddr[addr] = a
	}
	for a.n >= o.maxPerIP {
		v := a.idle.head
		if v == nil {
			o.dropAddr(addr, a)
			return evicted, reasonPerIP
		}
		o.removeLocked(v)
		evicted = append(evicted, eviction{v, reasonPerIP})
	}
	for o.n >= o.maxOpen {
		v := o.idle.head
		if v == nil {
			o.dropAddr(addr, a)
			return evicted, reasonOpen
		}
		o.removeLocked(v)
		evicted = append(evicted, eviction{v, reasonOpen})
	}
	c.open, c.addr, c.idle = o, a, true
	o.n++
	a.n++
	o.idle.push(c, allLinks)
	a.idle.push(c, addrLinks)
	return evicted, ""
}

// dropAddr forgets an address without connections, so byAddr holds only
// the addresses of open connections.
func (o *openConns) dropAddr(addr netip.Addr, a *addrConns) {
	if a.n == 0 {
		delete(o.byAddr, addr)
	}
}

// setIdle records that c went idle (true) or started a request (false).
func (o *openConns) setIdle(c *conn, idle bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if c.addr == nil || c.idle == idle {
		return // closed, or evicted meanwhile
	}
	c.idle = idle
	if idle {
		o.idle.push(c, allLinks)
		c.addr.idle.push(c, addrLinks)
	} else {
		o.idle.remove(c, allLinks)
		c.addr.idle.remove(c, addrLinks)
	}
}

// remove takes c off the books; it is a no-op the second time.
func (o *openConns) remove(c *conn) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if c.addr != nil {
		o.removeLocked(c)
	}
}

func (o *openConns) removeLocked(c *conn) {
	if c.idle {
		o.idle.remove(c, allLinks)
		c.addr.idle.remove(c, addrLinks)
	}
	o.n--
	c.addr.n--
	if c.addr.n == 0 {
		delete(o.byAddr, prefix.Peer(c.peer.Addr()))
	}
	c.addr, c.idle = nil, false
}
