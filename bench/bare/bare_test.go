package bare

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/imserious/imserious/internal/dovecotsamples"
	"github.com/imserious/imserious/privsep"
)

// The bare server answers Dovecot's captured requests as imserious does,
// 200, and what is not a notification with imserious's 4xx.
func TestHandler(t *testing.T) {
	h := Handler()
	do := func(method, body string) int {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(method, "/notify", strings.NewReader(body)))
		if w.Body.Len() != 0 {
			t.Errorf("%s %.20q: body %q, want none", method, body, w.Body)
		}
		return w.Code
	}
	for _, s := range dovecotsamples.Load(t) {
		if got := do("PUT", string(s.Body)); got != http.StatusOK {
			t.Errorf("%s: %d, want 200", s.Case, got)
		}
	}
	for _, tc := range []struct {
		method, body string
		want         int
	}{
		{"POST", `{"user":"a","event":"MessageNew"}`, 200},
		{"GET", "", 405},
		{"PUT", "not json", 400},
		{"PUT", `{"user":"a","event":"MessageNew","unseen":"x"}`, 400},
		{"PUT", `{"event":"MessageNew"}`, 422},
		{"PUT", `{"user":"a","event":"MessageNew","subject":"` + strings.Repeat("x", MaxBody) + `"}`, 413},
	} {
		if got := do(tc.method, tc.body); got != tc.want {
			t.Errorf("%s %.40q: %d, want %d", tc.method, tc.body, got, tc.want)
		}
	}
}

// Server speaks HTTP/1.1 only, over TLS as in clear.
func TestServer(t *testing.T) {
	srv := httptest.NewUnstartedServer(nil)
	srv.Config = Server(nil)
	srv.EnableHTTP2 = false
	srv.StartTLS()
	defer srv.Close()
	c := srv.Client()
	c.Transport.(*http.Transport).ForceAttemptHTTP2 = true
	resp, err := c.Post(srv.URL+"/notify", "application/json", bytes.NewReader(dovecotsamples.Load(t)[0].Body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 1 {
		t.Errorf("%s %d, want HTTP/1.1 200", resp.Proto, resp.StatusCode)
	}
}

// HandlerTo hands over exactly the body of a request it accepts, answers
// 503 when the hand-over fails, and hands over nothing it rejects.
func TestHandlerTo(t *testing.T) {
	var got [][]byte
	var fail error
	h := HandlerTo(func(body []byte) error {
		got = append(got, body)
		return fail
	})
	do := func(method, body string) int {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(method, "/notify", strings.NewReader(body)))
		return w.Code
	}
	ok := `{"user":"a","event":"MessageNew","subject":"hi"}`
	if code := do("PUT", ok); code != 200 || len(got) != 1 || string(got[0]) != ok {
		t.Errorf("accepted: %d, handed over %q; want 200 and %q", code, got, ok)
	}
	got, fail = nil, errors.New("sink gone")
	if code := do("PUT", ok); code != 503 || len(got) != 1 {
		t.Errorf("hand-over failing: %d after %d hand-overs, want 503 after 1", code, len(got))
	}
	got, fail = nil, nil
	for _, tc := range []struct {
		method, body string
		want         int
	}{
		{"GET", "", 405},
		{"PUT", `{"user":"a","event":"MessageNew","subject":"` + strings.Repeat("x", MaxBody) + `"}`, 413},
		{"PUT", "not json", 400},
		{"PUT", `{"event":"MessageNew"}`, 422},
	} {
		if code := do(tc.method, tc.body); code != tc.want {
			t.Errorf("%s %.40q: %d, want %d", tc.method, tc.body, code, tc.want)
		}
	}
	if len(got) != 0 {
		t.Errorf("rejected requests handed over %d bodies, want none", len(got))
	}
}

// socketpair returns the two ends of a unix seqpacket socketpair, made
// as imserious-bare -forward makes its own, closed when the test ends.
func socketpair(t *testing.T) (a, b *net.UnixConn) {
	t.Helper()
	fa, fb, err := privsep.Socketpair()
	if err != nil {
		t.Fatal(err)
	}
	var ends [2]*net.UnixConn
	for i, f := range []*os.File{fa, fb} {
		c, err := SeqpacketConn(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		ends[i] = c
	}
	return ends[0], ends[1]
}

// Bodies sent at once from many goroutines arrive each as one whole
// packet, and decode.
func TestForwarderConcurrent(t *testing.T) {
	a, b := socketpair(t)
	fw := NewForwarder(a)
	const n = 200
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			errs <- fw.Send(fmt.Appendf(nil, `{"user":"u%d","event":"MessageNew"}`, i))
		})
	}
	// The sends finish while the packets are read below, however small
	// the socket's buffer: Close comes after every one is written.
	go func() {
		wg.Wait()
		close(errs)
		fw.Close()
	}()
	seen := map[string]bool{}
	buf := make([]byte, MaxBody+1)
	for {
		k, err := b.Read(buf)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		var msg notification
		if err := json.Unmarshal(buf[:k], &msg); err != nil {
			t.Fatalf("packet %q: %v", buf[:k], err)
		}
		if seen[msg.User] {
			t.Errorf("%s arrived twice", msg.User)
		}
		seen[msg.User] = true
	}
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if len(seen) != n {
		t.Errorf("%d bodies arrived, want %d", len(seen), n)
	}
}

// Sink decodes what a Forwarder sends, a body of MaxBody included, and
// returns nil once the sender closes; a packet that does not decode is
// an error.
func TestSink(t *testing.T) {
	a, b := socketpair(t)
	done := make(chan error, 1)
	go func() { done <- Sink(b) }()
	fw := NewForwarder(a)
	big := `{"user":"a","event":"MessageNew","subject":"`
	big += strings.Repeat("x", MaxBody-len(big)-2) + `"}`
	for _, body := range []string{`{"user":"a","event":"MessageNew"}`, big} {
		if err := fw.Send([]byte(body)); err != nil {
			t.Fatalf("%.40q: %v", body, err)
		}
	}
	fw.Close()
	if err := <-done; err != nil {
		t.Errorf("Sink: %v, want nil at the end", err)
	}

	a, b = socketpair(t)
	go func() { done <- Sink(b) }()
	if err := NewForwarder(a).Send([]byte("not json")); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err == nil {
		t.Error("Sink: nil after a packet that is not JSON, want an error")
	}
}
