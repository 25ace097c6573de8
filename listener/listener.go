// Package listener is the HTTP side of the network process: it accepts
// Dovecot's OX push notifications, applies the allow list, credentials,
// limits and deadlines of spec §3, validates the body, and hands the raw
// body to the exec process(es) whose handlers match. It never sees the
// command configuration: routing is by (user, event, peer IP) to an exec
// channel index only.
package listener

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/imserious/imserious/clock"
	"github.com/imserious/imserious/config"
	"github.com/imserious/imserious/event"
	"github.com/imserious/imserious/internal/byuser"
	"github.com/imserious/imserious/internal/prefix"
	"github.com/imserious/imserious/logging"
)

// MaxBody is the largest notification body accepted; Dovecot's bodies are
// well under 1 KiB (a 540-character subject made 916 bytes).
const MaxBody = 64 << 10

// maxHeaderBytes caps the request line and headers. Dovecot sends six short
// headers; anything near this size is not Dovecot.
const maxHeaderBytes = 16 << 10

// maxBodyIdle is the longest a body read waits for the client's next bytes
// (Timeout when shorter). Dovecot sends its body with its headers; a body
// that pauses this long on a LAN is a client holding a socket on purpose.
const maxBodyIdle = time.Second

// Defaults of spec §2, applied by New when a Config field is zero so a
// hand-built Config (tests, embedding) behaves like the daemon's.
const (
	DefaultEndpoint       = "/notify"
	DefaultMaxConnections = 8
	DefaultTimeout        = 5 * time.Second
)

// Route sends the events of one handler to one exec channel.
type Route struct {
	// User is the Dovecot user, matched exactly, or a glob
	// (config.IsUserPattern) matched by config.MatchUser.
	User   string
	Event  string         // canonical CamelCase, e.g. "MessageNew"
	IP     []netip.Prefix // peers accepted for this handler; empty: any
	Target int            // index of the exec channel Deliver is called with
	// RunAs, when set, is the run_as of a handler whose account depends
	// on the event's user (config.Handler.Dynamic): Target is unused, and
	// the account config.ExpandRunAs gives is handed to Config.Accounts,
	// with Handler, the handler's number, for the parent's check.
	RunAs   string
	Handler int
}

// Accounts finds the exec channel of an account named by a handler's
// run_as (Route.RunAs). Route returns the target of its exec process
// when it has one; otherwise it takes the event itself (queued until the
// process exists, which it asks the parent for) and returns queued. It
// must never wait, like Deliver; an error is answered 503. It is called
// once per account and request.
type Accounts interface {
	Route(account string, handler int, user string, remote netip.AddrPort, body []byte) (target int, queued bool, err error)
	// Note is told the user of each event a wildcard handler with a
	// fixed target takes: a recovery of that exec process runs the
	// handler for the users it may have lost.
	Note(target int, user string)
}

// Auth holds the HTTP Basic credentials clients must present.
type Auth struct {
	User string
	Pass string
	// UserSHA256 and PassSHA256, when set, are the digests of the
	// credentials and User and Pass are ignored: the daemon's network
	// process gets only these, so no plaintext password is ever in its
	// memory.
	UserSHA256, PassSHA256 [sha256.Size]byte
}

// AuthDigests returns the Auth of the credentials user and pass as
// digests only.
func AuthDigests(user, pass string) *Auth {
	return &Auth{UserSHA256: sha256.Sum256([]byte(user)), PassSHA256: sha256.Sum256([]byte(pass))}
}

// Config is what the network process needs to serve HTTP.
type Config struct {
	Allow          []netip.Prefix // peers allowed at all; empty: everyone
	Endpoint       string         // exact request path; "" means DefaultEndpoint
	MaxConnections int            // requests handled at once; <= 0 means DefaultMaxConnections
	Timeout        time.Duration  // whole-request deadline and idle keep-alive limit; <= 0 means DefaultTimeout
	Auth           *Auth          // nil: no authentication
	Routes         []Route
	// Accounts routes the events of Routes with RunAs; nil: such routes
	// take no event.
	Accounts Accounts
	TLS      *tls.Config // nil: plain HTTP; cloned by New, GetCertificate kept
	// MaxOpen and MaxOpenPerIP cap the open connections, in all and from
	// one peer address; a new connection over a cap closes the longest-
	// idle one it is over (of its address for MaxOpenPerIP), or is closed
	// itself when none is idle. <= 0 means DefaultMaxOpen and
	// DefaultMaxOpenPerIP. Update changes them in place.
	MaxOpen      int
	MaxOpenPerIP int
	// Clock times the limits of log lines; nil: clock.System.
	Clock clock.Clock
}

// unmatchedPerHour bounds the lines about users without a handler, all
// users together: enough for a server's worth of misconfigured users, not
// a log flood from forged names.
const unmatchedPerHour = 100

// Deliver hands a validated body to exec channel target. The remote is the
// HTTP peer (IPv4-mapped addresses unmapped). It is called on the request
// path while Dovecot waits, after the request's slot is released, and must
// never wait: not for the command, and not for the exec process to read.
// The daemon's Deliver hands the body to the exec channel's socket with a
// non-blocking send, and returns nil when that account's exec process is
// down (the daemon covers such events with a recovery run once it is back),
// so one account's slow or dead exec process delays no other account's
// requests. body is freshly allocated for each request and may be
// retained, but it is shared by the calls for all the targets of one
// request and must not be modified. An error means the channel is broken
// for good: the request is answered 503.
type Deliver func(target int, remote netip.AddrPort, body []byte) error

// ErrRestartNeeded is wrapped by Update when the new Config changes what a
// running server cannot: the request slots, the deadlines, TLS on or off.
// The caller starts a new network process instead.
var ErrRestartNeeded = errors.New("a new network process is needed")

// Server serves notifications. Create it with New.
type Server struct {
	// policy is what Update swaps: each request loads it once and is
	// judged by that one policy from the first check to delivery.
	policy  atomic.Pointer[policy]
	timeout time.Duration
	// bodyIdle is how long a body read may wait for the client's next
	// bytes: far below timeout, so a body that stalls is cut off soon.
	bodyIdle time.Duration
	sem      chan struct{} // one token per request being decoded
	open     *openConns
	warn     *rateLog // warn lines about clients
	// noHandler limits the info lines about events for users without a
	// handler: one per user per hour (users come from the client).
	noHandler *logging.Limiter
	deliver   Deliver
	log       *slog.Logger
	tls       *tls.Config
	srv       *http.Server
	handler   http.Handler

	// onWait, when set (tests only), is called when a request starts
	// waiting for a slot, so tests can synchronise on it.
	onWait func()
}

// policy is the part of a Config that Update may change. It is built whole
// by newPolicy and never modified afterwards, so a request that loaded it
// needs no lock.
type policy struct {
	endpoint string
	allow    []netip.Prefix      // as prefix.Normalize returns them; empty: everyone
	auth     *credentials        // nil: no authentication
	exact    byuser.Index[route] // routes of exact users, by user, in the order written
	patterns []route             // routes whose user is a glob, in order
	accounts Accounts
}

// routesFor returns the routes of an exact user, in the order written;
// nil when there are none.
func (p *policy) routesFor(user string) []route { return p.exact.Of(user) }

type route struct {
	user    string // the user, or for patterns the pattern
	event   string
	ip      []netip.Prefix
	target  int
	runAs   string // set: the account comes from the event's user
	handler int
}

// credentials keeps only digests of the configured user and password:
// comparing fixed-length digests hides the secrets' lengths, and the
// plaintext need not stay in this process's memory.
type credentials struct {
	user, pass [sha256.Size]byte
}

// New builds a server from cfg. The caller keeps ownership of cfg; nothing
// in it is retained except through copies.
func New(cfg Config, deliver Deliver, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		timeout:   timeout(cfg),
		sem:       make(chan struct{}, maxConnections(cfg)),
		open:      newOpenConns(cfg),
		warn:      newRateLog(log, time.Now),
		noHandler: logging.NewLimiterTotal(time.Hour, 1, unmatchedPerHour, cfg.Clock),
		deliver:   deliver,
		log:       log,
	}
	s.bodyIdle = min(s.timeout, maxBodyIdle)
	s.policy.Store(newPolicy(cfg))
	if cfg.TLS != nil {
		t := cfg.TLS.Clone()
		if t.MinVersion < tls.VersionTLS12 {
			t.MinVersion = tls.VersionTLS12
		}
		// Dovecot speaks HTTP/1.1 only; offering h2 would only add a
		// second code path to harden.
		t.NextProtos = []string{"http/1.1"}
		s.tls = t
	}
	s.handler = http.HandlerFunc(s.serveHTTP)

	var protocols http.Protocols
	protocols.SetHTTP1(true)
	s.srv = &http.Server{
		Handler: s.handler,
		// ReadHeaderTimeout bounds the headers from the first byte of a
		// request (net/http starts it after the idle wait; for the first
		// request of a connection, at accept). ReadTimeout is then set
		// from the same instant, so headers and body together get Timeout;
		// the handler's own waiting ends at the same deadline (see
		// conn.requestStart). The write deadline, set by net/http when
		// the headers are read, leaves another Timeout after the request's
		// deadline so a 408 can still be written to a client that stalled
		// in the body. Body reads also have a deadline of their own,
		// bodyIdle after the previous bytes (see readBody).
		ReadHeaderTimeout: s.timeout,
		ReadTimeout:       s.timeout,
		WriteTimeout:      2 * s.timeout,
		IdleTimeout:       s.timeout,
		MaxHeaderBytes:    maxHeaderBytes,
		// Without this net/http answers "OPTIONS *" itself, before the
		// allow list and credentials are checked.
		DisableGeneralOptionsHandler: true,
		Protocols:                    &protocols,
		ConnContext:                  connContext,
		ConnState:                    s.connState,
		// net/http's own messages (malformed requests) are client noise,
		// not daemon errors.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return s
}

// maxConnections and timeout are cfg's values with the defaults of New.
func maxConnections(cfg Config) int {
	if cfg.MaxConnections <= 0 {
		return DefaultMaxConnections
	}
	return cfg.MaxConnections
}

func timeout(cfg Config) time.Duration {
	if cfg.Timeout <= 0 {
		return DefaultTimeout
	}
	return cfg.Timeout
}

// newPolicy builds the policy of cfg, with the defaults of New. Nothing of
// cfg is retained: its slices and credentials are copied or digested.
func newPolicy(cfg Config) *policy {
	p := &policy{
		endpoint: cfg.Endpoint,
		allow:    prefix.Normalize(cfg.Allow),
	}
	if p.endpoint == "" {
		p.endpoint = DefaultEndpoint
	}
	if a := cfg.Auth; a != nil {
		p.auth = &credentials{user: a.UserSHA256, pass: a.PassSHA256}
		if a.UserSHA256 == ([sha256.Size]byte{}) && a.PassSHA256 == ([sha256.Size]byte{}) {
			p.auth = &credentials{user: sha256.Sum256([]byte(a.User)), pass: sha256.Sum256([]byte(a.Pass))}
		}
	}
	var exact []route
	for _, r := range cfg.Routes {
		// Decoded events carry the canonical name; a route spelled
		// otherwise would silently never match.
		ev := r.Event
		if c, ok := event.Canonical(ev); ok {
			ev = c
		}
		rt := route{user: r.User, event: ev, ip: prefix.Normalize(r.IP), target: r.Target, runAs: r.RunAs, handler: r.Handler}
		if config.IsUserPattern(r.User) {
			p.patterns = append(p.patterns, rt)
			continue
		}
		exact = append(exact, rt)
	}
	p.exact = byuser.New(exact, func(r route) string { return r.user })
	p.accounts = cfg.Accounts
	return p
}

// Update makes cfg's allow list, endpoint, credentials and routes those of
// every request handled after it returns, and its MaxOpen and MaxOpenPerIP
// those of every connection accepted after; a request already being handled
// finishes under the policy it started with, never a mix of both. A
// connection accepted before is judged against the new allow list at its
// next request. It is safe to call while serving.
//
// MaxConnections, Timeout and whether there is TLS are fixed when the
// server is built (they size its slots and its net/http deadlines): when
// cfg changes any of them, Update changes nothing and returns an error
// wrapping ErrRestartNeeded. The TLS configuration itself is not looked
// at: certificates are swapped by the TLS config's GetCertificate.
func (s *Server) Update(cfg Config) error {
	var changed []string
	if n := maxConnections(cfg); n != cap(s.sem) {
		changed = append(changed, fmt.Sprintf("max_connections from %d to %d", cap(s.sem), n))
	}
	if d := timeout(cfg); d != s.timeout {
		changed = append(changed, fmt.Sprintf("timeout from %v to %v", s.timeout, d))
	}
	if (cfg.TLS != nil) != (s.tls != nil) {
		changed = append(changed, fmt.Sprintf("tls from %v to %v", onOff(s.tls != nil), onOff(cfg.TLS != nil)))
	}
	if changed != nil {
		return fmt.Errorf("listener: cannot change %s in place: %w", strings.Join(changed, ", "), ErrRestartNeeded)
	}
	s.policy.Store(newPolicy(cfg))
	s.open.setCaps(cfg)
	return nil
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// Serve accepts connections on ln until Shutdown, wrapping them in TLS when
// the Config had TLS. It returns nil after Shutdown.
//
// TLS is terminated in conn, below net/http, rather than by handing
// net/http *tls.Conns: the allow list and the connection caps act before
// the handshake, and request framing is checked on the plaintext (see
// framing). What net/http did for a *tls.Conn is done there too (the
// deadline-bound handshake, the plaintext 400 to an HTTP client);
// Request.TLS is nil, which nothing here reads.
func (s *Server) Serve(ln net.Listener) error {
	err := s.srv.Serve(timedListener{ln, s})
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting, closes idle connections and waits for the
// requests in flight to finish, or for ctx to end.
func (s *Server) Shutdown(ctx context.Context) error {
	return s.srv.Shutdown(ctx)
}

// Handler returns the request handler, for tests and benchmarks that drive
// it without a listener. Requests that did not come through Serve have no
// header start time; their deadline counts from when the handler starts.
func (s *Server) Handler() http.Handler {
	return s.handler
}
