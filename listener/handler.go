package listener

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/imserious/imserious/config"
	"github.com/imserious/imserious/event"
	"github.com/imserious/imserious/internal/byuser"
	"github.com/imserious/imserious/internal/prefix"
	"github.com/imserious/imserious/logging"
)

// serveHTTP runs the checks of spec §3 in the table's order, after the
// framing check (both Content-Length and Transfer-Encoding: 400, closed).
// The allow list was applied at accept already (timedListener); it is
// applied again here for connections accepted before an Update. The body
// is read only once the peer, credentials and path have passed (and the
// method, content type and declared size, which cost nothing to check),
// and a request slot is taken only once the body is in.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	// One policy for the whole request, even if Update swaps it meanwhile.
	p := s.policy.Load()
	var (
		peer    netip.AddrPort
		allowed bool
		start   time.Time
	)
	c, _ := r.Context().Value(connKey{}).(*conn)
	if c != nil {
		defer c.requestDone()
		peer, allowed, start = c.peer, c.admitted(p), c.requestStart()
	} else {
		ap, _ := netip.ParseAddrPort(r.RemoteAddr)
		peer = unmap(ap)
		allowed, start = p.allows(peer.Addr()), time.Now()
	}
	deadline := start.Add(s.timeout)

	// Framing before anything else: a request whose length is ambiguous
	// has no trustworthy end, so nothing after it on the connection may
	// be taken for a request (it would be the smuggled one). The close
	// is explicit: reject closes only when a body is left unread, and an
	// HTTP/1.0 request may declare Content-Length: 0.
	if c != nil {
		if reason := c.framingError(r); reason != "" {
			w.Header().Set("Connection", "close")
			s.reject(w, r, peer, http.StatusBadRequest, reason, true)
			return
		}
	}
	if !allowed {
		s.reject(w, r, peer, http.StatusForbidden, "peer not in allow list", true)
		return
	}
	if p.auth != nil {
		h := r.Header.Get("Authorization")
		if !p.auth.check(h) {
			reason := "wrong credentials"
			if h == "" {
				reason = "no credentials"
			}
			w.Header().Set("WWW-Authenticate", `Basic realm="imserious"`)
			s.reject(w, r, peer, http.StatusUnauthorized, reason, true)
			return
		}
	}
	if r.URL.Path != p.endpoint {
		s.reject(w, r, peer, http.StatusNotFound, "not the endpoint", true)
		return
	}
	if r.Method != http.MethodPut && r.Method != http.MethodPost {
		w.Header().Set("Allow", "PUT, POST")
		s.reject(w, r, peer, http.StatusMethodNotAllowed, "method not allowed", true)
		return
	}
	if ct := r.Header.Get("Content-Type"); !isJSON(ct) {
		s.reject(w, r, peer, http.StatusUnsupportedMediaType, "content type "+strconv.Quote(ct)+" is not JSON", true)
		return
	}
	if r.ContentLength > MaxBody {
		s.reject(w, r, peer, http.StatusRequestEntityTooLarge, "body of "+strconv.FormatInt(r.ContentLength, 10)+" bytes is over 64 KiB", true)
		return
	}

	// The body is read before a slot is taken: a client sending it slowly
	// holds its own socket, never one of the MaxConnections slots, and
	// each read waits at most bodyIdle (see readBody). Bodies in memory
	// are bounded by the open connections (MaxOpen times MaxBody at
	// worst, each for at most Timeout), not by the slots.
	body, status, reason := s.readBody(w, r, c, deadline)
	if status != 0 {
		s.reject(w, r, peer, status, reason, true)
		return
	}
	// The slot is taken after the checks above, which need no slot and no
	// waiting: requests that will be refused never queue behind valid
	// ones. It covers decoding only, never delivery: a slot held while
	// one account's exec channel is slow would make every other
	// account's requests wait for it (Deliver must not block, but the
	// slots do not depend on it).
	if reason := s.acquire(r, deadline); reason != "" {
		s.reject(w, r, peer, http.StatusRequestTimeout, reason, false)
		return
	}
	ev, status, reason := decodeEvent(body)
	s.release()
	if status != 0 {
		s.reject(w, r, peer, status, reason, false)
		return
	}

	// Handlers are few; a small array keeps the distinct targets off the
	// heap in the common case.
	var buf [8]int
	targets := buf[:0]
	handlers := 0
	var acctBuf [2]string
	accounts := acctBuf[:0] // of routes with RunAs, each asked once
	var failed []int
	var firstErr error
	take := func(rt *route) {
		if rt.event != ev.Event || (len(rt.ip) != 0 && !prefix.Contains(rt.ip, peer.Addr())) {
			return
		}
		handlers++
		t := rt.target
		if rt.runAs != "" {
			acct, err := config.ExpandRunAs(rt.runAs, ev.User)
			if err != nil || !config.ValidAccountName(acct) || p.accounts == nil || slices.Contains(accounts, acct) {
				// No account can have such a name: the parent would
				// refuse it; nothing runs, as for a refused account.
				return
			}
			accounts = append(accounts, acct)
			var queued bool
			t, queued, err = p.accounts.Route(acct, rt.handler, ev.User, peer, body)
			if err != nil {
				failed = append(failed, -1)
				firstErr = cmp.Or(firstErr, err)
				return
			}
			if queued {
				return
			}
		}
		if !slices.Contains(targets, t) {
			targets = append(targets, t)
		}
	}
	exact := p.routesFor(ev.User)
	for i := range exact {
		take(&exact[i])
	}
	for i := range p.patterns {
		rt := &p.patterns[i]
		if !config.MatchUser(rt.user, ev.User) {
			continue
		}
		n := handlers
		take(rt)
		if handlers > n && rt.runAs == "" && p.accounts != nil {
			p.accounts.Note(rt.target, ev.User)
		}
	}
	for _, t := range targets {
		// Deliver to every target even when one fails: the others' exec
		// processes are fine and should get the event.
		if err := s.deliver(t, peer, body); err != nil {
			failed = append(failed, t)
			firstErr = cmp.Or(firstErr, err)
		}
	}
	if failed != nil {
		// Not the client's fault, so an error rather than a rejection's
		// warn; nothing is lost that Dovecot was told was accepted.
		w.WriteHeader(http.StatusServiceUnavailable)
		s.log.LogAttrs(r.Context(), slog.LevelError, "cannot hand event to exec process",
			slog.String("peer", peer.String()), slog.String("user", ev.User), slog.String("event", ev.Event),
			slog.Any("targets", failed), slog.Int("status", http.StatusServiceUnavailable), slog.Any("error", firstErr))
		return
	}
	// One info line per accepted event: the operator sees each
	// notification arrive, and how many handlers it starts.
	if handlers == 0 {
		s.unmatched(r, p, &ev, peer)
	} else if s.log.Enabled(r.Context(), slog.LevelInfo) { // peer.String allocates
		s.log.LogAttrs(r.Context(), slog.LevelInfo, "event accepted",
			slog.String("user", ev.User), slog.String("event", ev.Event),
			slog.String("peer", peer.String()), slog.Int("handlers", handlers))
	}
	// Sent even if Deliver outlived the deadline: the event is queued, and
	// a 408 would make Dovecot send it again.
	w.WriteHeader(http.StatusOK)
}

// framingError returns why the request's framing is refused, or "". See
// framing for why it is judged from the raw bytes.
func (c *conn) framingError(r *http.Request) string {
	v, known := c.verdict(r.ContentLength, r.TransferEncoding)
	switch {
	case known && v.cl && v.te:
		return "both Content-Length and Transfer-Encoding"
	case !known && len(r.TransferEncoding) > 0:
		// Only a chunked request can have lost its Content-Length in
		// net/http; where framing cannot vouch for its headers it is
		// refused rather than trusted.
		return "chunked request whose headers could not be checked"
	}
	return ""
}

// decodeEvent decodes the body. On failure it returns the status to
// answer and why.
func decodeEvent(body []byte) (ev event.Event, status int, reason string) {
	ev, err := event.Decode(body)
	if err != nil {
		status, reason := http.StatusBadRequest, err.Error()
		var de *event.Error
		if errors.As(err, &de) {
			reason = de.Reason
			if de.Status == http.StatusUnprocessableEntity {
				status = de.Status
			}
		}
		return ev, status, reason
	}
	return ev, 0, ""
}

// acquire waits for a handling slot until the deadline. It returns "" with
// a slot, or why there is none.
func (s *Server) acquire(r *http.Request, deadline time.Time) string {
	select {
	case s.sem <- struct{}{}:
		return ""
	default:
	}
	if s.onWait != nil {
		s.onWait()
	}
	d := time.Until(deadline)
	if d <= 0 {
		return "no free slot before the deadline"
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case s.sem <- struct{}{}:
		return ""
	case <-t.C:
		return "no free slot before the deadline"
	case <-r.Context().Done():
		return "client went away while waiting for a slot"
	}
}

func (s *Server) release() { <-s.sem }

// readBody reads the whole body, at most MaxBody bytes. A request that
// came through Serve (c not nil) has each read bounded by bodyIdle of
// silence, and none past the deadline. On failure it returns the status to
// answer and why.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, c *conn, deadline time.Time) (body []byte, status int, reason string) {
	var src io.Reader = r.Body
	if r.ContentLength < 0 {
		src = http.MaxBytesReader(w, r.Body, MaxBody)
	}
	if c != nil {
		// In the conn, which serves one request at a time: no allocation.
		c.body = idleReader{r: src, c: c, idle: s.bodyIdle, deadline: deadline}
		src = &c.body
	}
	var err error
	if r.ContentLength >= 0 {
		body, err = readN(src, r.ContentLength)
	} else {
		body, err = io.ReadAll(src)
	}
	if c != nil {
		c.body = idleReader{} // keeps nothing of this request
	}
	if err == nil {
		return body, 0, ""
	}
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return nil, http.StatusRequestEntityTooLarge, "chunked body over 64 KiB"
	case errors.Is(err, os.ErrDeadlineExceeded) && time.Now().Before(deadline):
		return nil, http.StatusRequestTimeout, "body stalled for " + s.bodyIdle.String()
	case errors.Is(err, os.ErrDeadlineExceeded):
		return nil, http.StatusRequestTimeout, "body not received before the deadline"
	default:
		return nil, http.StatusBadRequest, "reading body: " + err.Error()
	}
}

// bodyChunk is the first allocation for a body with a Content-Length: all
// of a Dovecot body (under 1 KiB), exactly.
const bodyChunk = 4 << 10

// readN reads exactly n bytes (n <= MaxBody, already checked). A declared
// size over bodyChunk is believed only as its bytes arrive, so a client
// that declares 64 KiB and sends nothing holds 4 KiB, not 64.
func readN(r io.Reader, n int64) ([]byte, error) {
	body := make([]byte, 0, min(n, bodyChunk))
	for int64(len(body)) < n {
		if len(body) == cap(body) {
			body = slices.Grow(body, int(min(n-int64(len(body)), int64(len(body)))))
		}
		k, err := r.Read(body[len(body):min(int64(cap(body)), n)])
		body = body[:len(body)+k]
		switch {
		case err == io.EOF && int64(len(body)) == n:
		case err == io.EOF:
			return nil, io.ErrUnexpectedEOF
		case err != nil:
			return nil, err
		}
	}
	return body, nil
}

// idleReader sets the connection's read deadline before each read of the
// body: bodyIdle from now, never past the request's deadline. It stops
// touching the deadline after the first error (io.EOF included): by then
// net/http's background reader may own the connection, and a deadline
// set under it would make it take the connection for broken.
type idleReader struct {
	r        io.Reader
	c        *conn
	idle     time.Duration
	deadline time.Time
	err      error
}

func (ir *idleReader) Read(p []byte) (int, error) {
	if ir.err != nil {
		return 0, ir.err
	}
	d := time.Now().Add(ir.idle)
	if d.After(ir.deadline) {
		d = ir.deadline
	}
	ir.c.SetReadDeadline(d)
	n, err := ir.r.Read(p)
	ir.err = err
	return n, err
}

// isJSON reports whether a Content-Type names JSON: application/json or any
// type/subtype+json, with any parameters (they are ignored, even malformed
// ones: the body is what gets validated).
func isJSON(ct string) bool {
	switch ct {
	case "application/json; charset=utf-8", "application/json":
		return true // what Dovecot sends, without parsing
	case "":
		return false
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil && !errors.Is(err, mime.ErrInvalidMediaParameter) {
		return false
	}
	if mt == "application/json" {
		return true
	}
	_, sub, ok := strings.Cut(mt, "/")
	return ok && len(sub) > len("+json") && strings.HasSuffix(sub, "+json")
}

// reject answers status and logs one warn line. unread says the body was
// not (fully) read: the answer then says the connection closes, so it goes
// out at once instead of after net/http has read and discarded the body.
// net/http still drains what the client sends of it afterwards (at most
// 256 KiB, within the request's deadline) before closing, so a client that
// sent its whole body reads the answer rather than a reset.
func (s *Server) reject(w http.ResponseWriter, r *http.Request, peer netip.AddrPort, status int, reason string, unread bool) {
	if unread && r.ContentLength != 0 {
		w.Header().Set("Connection", "close")
	}
	w.WriteHeader(status)
	// Security: never log headers (Authorization) or the body; the path is
	// logged without its query, which may carry a token. Rate-limited per
	// peer address and status (StatusText: a fixed set, unlike reason).
	s.warn.warn(r.Context(), logKey{msg: "request rejected", reason: http.StatusText(status), addr: peer.Addr()},
		slog.String("peer", peer.String()), slog.String("method", r.Method),
		slog.String("path", r.URL.Path), slog.Int("status", status),
		slog.String("reason", reason))
}

// unmatched logs an event no handler takes. For a user with no handler at
// all it is an info line, once per user per hour, with a hint when a
// handler is written for what is most likely the same user: the local part
// of the address Dovecot sent, the address of a bare name, another case.
// This is the classic virtual-user trap (Dovecot sends "alice@example.org",
// the handler says "alice"), and nothing else would show it. For a user
// whose handlers want another event or peer it stays a debug line.
func (s *Server) unmatched(r *http.Request, p *policy, ev *event.Event, peer netip.AddrPort) {
	ctx := r.Context()
	if len(p.routesFor(ev.User)) > 0 || p.patternFor(ev.User) {
		if s.log.Enabled(ctx, slog.LevelDebug) {
			s.log.LogAttrs(ctx, slog.LevelDebug, "event matches no handler",
				slog.String("user", ev.User), slog.String("event", ev.Event),
				slog.String("peer", peer.String()), slog.Int("handlers", 0))
		}
		return
	}
	if !s.log.Enabled(ctx, slog.LevelInfo) {
		return
	}
	ok, suppressed := s.noHandler.Allow(ev.User)
	if !ok {
		return
	}
	attrs := []slog.Attr{slog.String("user", ev.User), slog.String("event", ev.Event),
		slog.String("peer", peer.String()), slog.Int("handlers", 0)}
	if hint := userHint(p.exact, ev.User); hint != "" {
		attrs = append(attrs, slog.String("hint", hint))
	}
	if suppressed > 0 {
		attrs = append(attrs, slog.Int(logging.SuppressedKey, suppressed))
	}
	s.log.LogAttrs(ctx, slog.LevelInfo, "event for a user without a handler, accepted and ignored", attrs...)
}

// patternFor reports whether a wildcard handler is written for user.
func (p *policy) patternFor(user string) bool {
	for i := range p.patterns {
		if config.MatchUser(p.patterns[i].user, user) {
			return true
		}
	}
	return false
}

// userHint names the handler's user most likely meant for user, or "",
// of the users routes has. Of several candidates the first in sort order
// is named, so the hint does not change from one line to the next.
func userHint(routes byuser.Index[route], user string) string {
	var best string
	pick := func(u string) {
		if best == "" || u < best {
			best = u
		}
	}
	local, _, hasAt := strings.Cut(user, "@")
	if hasAt {
		if routes.Has(local) {
			pick(local)
		}
	}
	if best == "" {
		for u := range routes.Users() {
			if !hasAt && strings.HasPrefix(u, user+"@") {
				pick(u)
			}
		}
	}
	if best != "" {
		return fmt.Sprintf("a handler is written for user %q, but Dovecot names this user %q: write user = %q", best, user, user)
	}
	for u := range routes.Users() {
		if strings.EqualFold(u, user) {
			pick(u)
		}
	}
	if best != "" {
		return fmt.Sprintf("a handler is written for user %q; user names are matched exactly, case included", best)
	}
	return ""
}
