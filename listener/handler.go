package listener

import (
	"cmp"
	"errors"
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

	"github.com/imserious/imserious/event"
	"github.com/imserious/imserious/internal/prefix"
)

// serveHTTP runs the checks of spec §3 in the table's order. The body is
// read only once the peer, credentials and path have passed (and the
// method, content type and declared size, which cost nothing to check).
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	// One policy for the whole request, even if Update swaps it meanwhile.
	p := s.policy.Load()
	var (
		peer    netip.AddrPort
		allowed bool
		start   time.Time
	)
	if c, _ := r.Context().Value(connKey{}).(*conn); c != nil {
		defer c.requestDone()
		peer, allowed, start = c.peer, c.admitted(p), c.requestStart()
	} else {
		ap, _ := netip.ParseAddrPort(r.RemoteAddr)
		peer = unmap(ap)
		allowed, start = p.allows(peer.Addr()), time.Now()
	}
	deadline := start.Add(s.timeout)

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

	// The slot is taken after the checks above, which need no memory and
	// no waiting: requests that will be refused never queue behind valid
	// ones, and at most MaxConnections bodies are in memory at once.
	if reason := s.acquire(r, deadline); reason != "" {
		s.reject(w, r, peer, http.StatusRequestTimeout, reason, true)
		return
	}
	body, ev, status, reason, unread := readEvent(w, r)
	// The slot covers reading and decoding only, never delivery: a slot
	// held while one account's exec channel is slow would make every
	// other account's requests wait for it.
	s.release()
	if status != 0 {
		s.reject(w, r, peer, status, reason, unread)
		return
	}

	// Handlers are few; a small array keeps the distinct targets off the
	// heap in the common case.
	var buf [8]int
	targets := buf[:0]
	for _, rt := range p.routes[ev.User] {
		if rt.event == ev.Event && !slices.Contains(targets, rt.target) &&
			(len(rt.ip) == 0 || prefix.Contains(rt.ip, peer.Addr())) {
			targets = append(targets, rt.target)
		}
	}
	var failed []int
	var firstErr error
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
	// notification arrive; one for nobody is only debug.
	level, msg := slog.LevelInfo, "event accepted"
	if len(targets) == 0 {
		level, msg = slog.LevelDebug, "event matches no handler"
	}
	if s.log.Enabled(r.Context(), level) { // peer.String allocates
		s.log.LogAttrs(r.Context(), level, msg,
			slog.String("user", ev.User), slog.String("event", ev.Event),
			slog.String("peer", peer.String()), slog.Int("handlers", len(targets)))
	}
	// Sent even if Deliver outlived the deadline: the event is queued, and
	// a 408 would make Dovecot send it again.
	w.WriteHeader(http.StatusOK)
}

// readEvent reads and decodes the body. On failure it returns the status
// to answer, why, and whether the body was left (partly) unread.
func readEvent(w http.ResponseWriter, r *http.Request) (body []byte, ev event.Event, status int, reason string, unread bool) {
	body, status, reason = readBody(w, r)
	if status != 0 {
		return nil, ev, status, reason, true
	}
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
		return nil, ev, status, reason, false
	}
	return body, ev, 0, "", false
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

// readBody reads the whole body, at most MaxBody bytes. On failure it
// returns the status to answer and why.
func readBody(w http.ResponseWriter, r *http.Request) (body []byte, status int, reason string) {
	var err error
	if r.ContentLength >= 0 {
		// Dovecot always sends Content-Length (already checked against
		// MaxBody): one allocation of exactly the right size.
		body = make([]byte, r.ContentLength)
		_, err = io.ReadFull(r.Body, body)
	} else {
		body, err = io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	}
	if err == nil {
		return body, 0, ""
	}
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return nil, http.StatusRequestEntityTooLarge, "chunked body over 64 KiB"
	case errors.Is(err, os.ErrDeadlineExceeded):
		return nil, http.StatusRequestTimeout, "body not received before the deadline"
	default:
		return nil, http.StatusBadRequest, "reading body: " + err.Error()
	}
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
	// logged without its query, which may carry a token.
	s.log.LogAttrs(r.Context(), slog.LevelWarn, "request rejected",
		slog.String("peer", peer.String()), slog.String("method", r.Method),
		slog.String("path", r.URL.Path), slog.Int("status", status),
		slog.String("reason", reason))
}
