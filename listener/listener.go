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
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/imserious/imserious/event"
)

// MaxBody is the largest notification body accepted; Dovecot's bodies are
// well under 1 KiB (a 540-character subject made 916 bytes).
const MaxBody = 64 << 10

// maxHeaderBytes caps the request line and headers. Dovecot sends six short
// headers; anything near this size is not Dovecot.
const maxHeaderBytes = 16 << 10

// Defaults of spec §2, applied by New when a Config field is zero so a
// hand-built Config (tests, embedding) behaves like the daemon's.
const (
	DefaultEndpoint       = "/notify"
	DefaultMaxConnections = 8
	DefaultTimeout        = 5 * time.Second
)

// Route sends the events of one handler to one exec channel.
type Route struct {
	User   string         // Dovecot user, matched exactly
	Event  string         // canonical CamelCase, e.g. "MessageNew"
	IP     []netip.Prefix // peers accepted for this handler; empty: any
	Target int            // index of the exec channel Deliver is called with
}

// Auth holds the HTTP Basic credentials clients must present.
type Auth struct {
	User string
	Pass string
}

// Config is what the network process needs to serve HTTP.
type Config struct {
	Allow          []netip.Prefix // peers allowed at all; empty: everyone
	Endpoint       string         // exact request path; "" means DefaultEndpoint
	MaxConnections int            // requests handled at once; <= 0 means DefaultMaxConnections
	Timeout        time.Duration  // whole-request deadline and idle keep-alive limit; <= 0 means DefaultTimeout
	Auth           *Auth          // nil: no authentication
	Routes         []Route
	TLS            *tls.Config // nil: plain HTTP; cloned by New, GetCertificate kept
}

// Deliver hands a validated body to exec channel target. The remote is the
// HTTP peer (IPv4-mapped addresses unmapped). It is called on the request
// path while Dovecot waits, so it must only queue the body (write it to a
// socket), never wait for the command. body is freshly allocated for each
// request and may be retained, but it is shared by the calls for all the
// targets of one request and must not be modified. An error means the
// channel is gone: the request is answered 503.
type Deliver func(target int, remote netip.AddrPort, body []byte) error

// Server serves notifications. Create it with New.
type Server struct {
	endpoint string
	timeout  time.Duration
	allow    []netip.Prefix
	auth     *credentials       // nil: no authentication
	routes   map[string][]route // by user
	sem      chan struct{}      // one token per request being handled
	deliver  Deliver
	log      *slog.Logger
	tls      *tls.Config
	srv      *http.Server
	handler  http.Handler

	// onWait, when set (tests only), is called when a request starts
	// waiting for a slot, so tests can synchronise on it.
	onWait func()
}

type route struct {
	event  string
	ip     []netip.Prefix
	target int
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
		endpoint: cfg.Endpoint,
		timeout:  cfg.Timeout,
		allow:    normalizePrefixes(cfg.Allow),
		routes:   make(map[string][]route),
		deliver:  deliver,
		log:      log,
	}
	if s.endpoint == "" {
		s.endpoint = DefaultEndpoint
	}
	if s.timeout <= 0 {
		s.timeout = DefaultTimeout
	}
	n := cfg.MaxConnections
	if n <= 0 {
		n = DefaultMaxConnections
	}
	s.sem = make(chan struct{}, n)
	if cfg.Auth != nil {
		s.auth = &credentials{
			user: sha256.Sum256([]byte(cfg.Auth.User)),
			pass: sha256.Sum256([]byte(cfg.Auth.Pass)),
		}
	}
	for _, r := range cfg.Routes {
		// Decoded events carry the canonical name; a route spelled
		// otherwise would silently never match.
		ev := r.Event
		if c, ok := event.Canonical(ev); ok {
			ev = c
		}
		s.routes[r.User] = append(s.routes[r.User], route{
			event:  ev,
			ip:     normalizePrefixes(r.IP),
			target: r.Target,
		})
	}
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
		// in the body.
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
		// net/http's own messages (TLS handshake failures, malformed
		// requests) are client noise, not daemon errors.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return s
}

// normalizePrefixes masks each prefix and rewrites IPv4-mapped IPv6
// prefixes as IPv4, since peers are compared unmapped.
func normalizePrefixes(ps []netip.Prefix) []netip.Prefix {
	if len(ps) == 0 {
		return nil
	}
	out := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		out = append(out, p.Masked())
	}
	return out
}

// Serve accepts connections on ln until Shutdown, wrapping them in TLS when
// the Config had TLS. It returns nil after Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	var l net.Listener = timedListener{ln, s}
	if s.tls != nil {
		l = tls.NewListener(l, s.tls)
	}
	err := s.srv.Serve(l)
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
