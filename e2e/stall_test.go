//go:build e2e && linux

package e2e

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imserious/imserious/internal/daemontest"
)

// The limits imseriousctl prints for how long a delivery waits for
// imserious: attempts of attemptTimeout each (2.3: max_retries=1
// timeout_msecs=2000; 2.4: http_client_request_max_attempts = 2,
// http_client_request_timeout = 2s).
const (
	printedAttempts = 2
	attemptTimeout  = 2 * time.Second
)

// TestStalledReceiverDelaysDeliveryBriefly points the printed settings at
// a receiver that reads each request and never answers, as a stopped or
// wedged imserious would: dovecot-lda waits for the PUT, so the printed
// limits are all that stands between a stall and every delivery waiting
// for it. Dovecot 2.4.1's own defaults are one attempt of a minute; with
// the printed block it must be two attempts, about 4 s, and the mail
// delivered.
func TestStalledReceiverDelaysDeliveryBriefly(t *testing.T) { forEachDovecot(t, testStalled) }

func testStalled(t *testing.T, r *release) {
	daemontest.Account(t, runAlice)
	cfg := daemonConf(t, "allow = [\"127.0.0.1\"]\n", handlerConf{alice, runAlice})
	push := dovecotSettings(t, r, cfg)
	dc := newDovecot(t, r, r.openDir(t), push, alice)
	dc.applyDoveadm(t, push, alice)

	s := newStaller(t)
	conf, log := dc.variant(t, "stalled", withURL(t, r, push, "http://"+authURLInfo+"@"+s.addr()+endpoint))
	msg := newMessage("From: x@example.org\nSubject: stalled\n", "Nobody answers.\n")
	took, err := dc.tryLDA(conf, alice, "", msg.text())
	if err != nil {
		t.Fatalf("after %v, against a receiver that never answers (the printed limits: %d attempts of %v; 2.4.1's defaults: one of a minute): %v",
			took.Round(time.Millisecond), printedAttempts, attemptTimeout, err)
	}
	dc.uidOf(t, alice, "INBOX", msg.id) // delivered all the same
	reqs := s.stop(t)
	t.Logf("dovecot-lda took %v against a receiver that never answers; %d requests", took.Round(time.Millisecond), len(reqs))

	if len(reqs) != printedAttempts {
		t.Errorf("%d requests reached the stalled receiver, want %d (the printed attempts)", len(reqs), printedAttempts)
	}
	for i, q := range reqs {
		if q != "PUT "+endpoint {
			t.Errorf("request %d: %q, want PUT %s", i, q, endpoint)
		}
	}
	// Every attempt ran to its timeout; an upper bound far below the
	// minute of 2.4.1's default, with room for a slow machine.
	if lo, hi := printedAttempts*attemptTimeout-attemptTimeout/2, printedAttempts*attemptTimeout+5*time.Second; took < lo || took > hi {
		t.Errorf("dovecot-lda took %v, want %v to %v: %d attempts of %v", took, lo, hi, printedAttempts, attemptTimeout)
	}
	timedOut := false
	for _, p := range dc.problems(t, log) {
		t.Logf("dovecot logged: %s", p)
		timedOut = timedOut || strings.Contains(p, "push-notification") && strings.Contains(p, "timed out")
	}
	if !timedOut {
		t.Errorf("dovecot logged no push-notification timeout: %q", dc.problems(t, log))
	}
}

// staller is a TCP server that reads HTTP requests and answers none.
type staller struct {
	l    net.Listener
	wg   sync.WaitGroup
	mu   sync.Mutex
	reqs []string // "METHOD PATH" of each request read
}

func newStaller(t *testing.T) *staller {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &staller{l: l}
	t.Cleanup(func() { l.Close() })
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go s.serve(c)
		}
	}()
	return s
}

func (s *staller) addr() string { return s.l.Addr().String() }

// serve reads requests until the client gives up on the connection.
func (s *staller) serve(c net.Conn) {
	defer s.wg.Done()
	defer c.Close()
	c.SetDeadline(time.Now().Add(waitLimit))
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		s.mu.Lock()
		s.reqs = append(s.reqs, req.Method+" "+req.URL.Path)
		s.mu.Unlock()
	}
}

// stop closes the listener and, once every connection has ended (the
// client that made them has exited, so each read sees EOF), returns the
// requests read.
func (s *staller) stop(t *testing.T) []string {
	t.Helper()
	s.l.Close()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(waitLimit):
		t.Fatalf("connections to the stalled receiver still open %v after dovecot-lda exited", waitLimit)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.reqs...)
}
