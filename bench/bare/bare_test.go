package bare

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
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

// readBodies reads packets from b until EOF and returns the bodies in
// them, in order, and how many packets there were.
func readBodies(t *testing.T, b *net.UnixConn) (bodies []string, packets int) {
	t.Helper()
	buf := make([]byte, MaxPacket+1)
	for {
		k, err := b.Read(buf)
		if errors.Is(err, io.EOF) {
			return bodies, packets
		}
		if err != nil {
			t.Fatal(err)
		}
		if k > MaxPacket {
			t.Fatalf("a packet of more than %d bytes", MaxPacket)
		}
		packets++
		for p := buf[:k]; len(p) > 0; {
			if len(p) < 4 || int(binary.BigEndian.Uint32(p)) > len(p)-4 {
				t.Fatalf("packet %d: %q does not split into bodies", packets, p)
			}
			n := int(binary.BigEndian.Uint32(p))
			bodies = append(bodies, string(p[4:4+n]))
			p = p[4+n:]
		}
	}
}

// Bodies sent at once from many goroutines each arrive once, whole, and
// decode.
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
	// the socket's buffer: Close comes after every one is queued.
	go func() {
		wg.Wait()
		close(errs)
		if err := fw.Close(); err != nil {
			t.Error(err)
		}
	}()
	bodies, _ := readBodies(t, b)
	seen := map[string]bool{}
	for _, body := range bodies {
		var msg notification
		if err := json.Unmarshal([]byte(body), &msg); err != nil {
			t.Fatalf("body %q: %v", body, err)
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

// What gathers while the sender is busy goes in one packet, in order; a
// Send waits while maxQueued packets are queued, and nothing is lost.
func TestForwarderBatches(t *testing.T) {
	a, b := socketpair(t)
	fw := newForwarder(a) // the sender starts below
	var want []string
	for i := range 10 {
		want = append(want, fmt.Sprintf(`{"user":"u%d","event":"MessageNew"}`, i))
		if err := fw.Send([]byte(want[i])); err != nil {
			t.Fatal(err)
		}
	}
	// Bodies of MaxBody fill a packet each: three more packets fill the
	// queue, and the one after waits for the sender.
	big := `{"user":"big","event":"MessageNew","subject":"`
	big += strings.Repeat("x", MaxBody-len(big)-2) + `"}`
	for range maxQueued - 1 {
		if err := fw.Send([]byte(big)); err != nil {
			t.Fatal(err)
		}
		want = append(want, big)
	}
	if k := len(fw.queue); k != maxQueued {
		t.Fatalf("%d packets queued, want %d", k, maxQueued)
	}
	want = append(want, big)
	waited := make(chan error, 1)
	go func() { waited <- fw.Send([]byte(big)) }()
	go fw.send()
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
	go fw.Close()
	got, packets := readBodies(t, b)
	if !slices.Equal(got, want) {
		t.Errorf("%d bodies arrived, want %d in order", len(got), len(want))
	}
	if packets != maxQueued+1 {
		t.Errorf("%d packets, want %d: the 10 small bodies in one, each big one in its own", packets, maxQueued+1)
	}
	if err := fw.Send([]byte(want[0])); err == nil {
		t.Error("Send after Close: nil, want an error")
	}
}

// Sink decodes what a Forwarder sends, a body of MaxBody included, and
// returns nil once the sender closes; a body that does not decode, or a
// packet that does not split into bodies, is an error.
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
	if err := fw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Errorf("Sink: %v, want nil at the end", err)
	}

	a, b = socketpair(t)
	go func() { done <- Sink(b) }()
	if err := NewForwarder(a).Send([]byte("not json")); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err == nil {
		t.Error("Sink: nil after a body that is not JSON, want an error")
	}

	ok := []byte(`{"user":"a","event":"MessageNew"}`)
	for _, p := range [][]byte{
		{0, 0, 1},                          // no whole length
		append([]byte{0, 0, 0, 40}, ok...), // longer than the packet
		append(append([]byte{0, 0, 0, 33}, ok...), 0), // a length cut short after it
	} {
		a, b = socketpair(t)
		go func() { done <- Sink(b) }()
		if _, err := a.Write(p); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err == nil {
			t.Errorf("Sink: nil after packet %q, want an error", p)
		}
	}
}
