// Package bare is the ceiling the benchmarks measure imserious against:
// a plain net/http server in one process that does the least a
// notification endpoint can do. It reads the body (at most 64 KiB, as
// imserious does), decodes it with encoding/json into the fields of
// Dovecot's notification, and answers 200 with an empty body; no
// privilege separation, no hand-over to another process, no log line.
package bare

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
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
// one without user or event 422.
func Handler() http.Handler {
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
		var n notification
		if err := json.Unmarshal(body, &n); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		if n.User == "" || n.Event == "" {
			w.WriteHeader(http.StatusUnprocessableEntity)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
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
