package privsep

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// guard is a deadline that only fails a hung test; nothing waits for it.
const guard = 30 * time.Second

// connPair returns two connected Conns, closed at the end of the test.
func connPair(t *testing.T) (*Conn, *Conn) {
	t.Helper()
	a, b := rawPair(t)
	ca, err := NewConn(a)
	if err != nil {
		t.Fatalf("NewConn: %v", err)
	}
	cb, err := NewConn(b)
	if err != nil {
		t.Fatalf("NewConn: %v", err)
	}
	for _, c := range []*Conn{ca, cb} {
		c.SetDeadline(time.Now().Add(guard))
		t.Cleanup(func() { c.Close() })
	}
	return ca, cb
}

// rawPair returns the two ends of a Socketpair as files, closed at the
// end of the test (closing a file NewConn already closed is harmless).
func rawPair(t *testing.T) (*os.File, *os.File) {
	t.Helper()
	a, b, err := Socketpair()
	if err != nil {
		t.Fatalf("Socketpair: %v", err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// rawSend writes one packet on f, bypassing Send's checks, as a
// compromised peer could.
func rawSend(t *testing.T, f *os.File, p []byte, fds ...int) {
	t.Helper()
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if err := unix.Sendmsg(int(f.Fd()), p, oob, nil, 0); err != nil {
		t.Fatalf("sendmsg of %d bytes, %d fds: %v", len(p), len(fds), err)
	}
}

// expectAllClosed fails unless every write end of the pipe whose read end
// is r has been closed: only then does r see EOF. It proves that
// descriptors received in this process were closed.
func expectAllClosed(t *testing.T, r *os.File) {
	t.Helper()
	r.SetReadDeadline(time.Now().Add(guard))
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("pipe never reached EOF, a received descriptor was left open: %v", err)
	}
	if len(b) != 0 {
		t.Fatalf("unexpected data %q on the pipe", b)
	}
}

func pipe(t *testing.T) (r, w *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}

func TestConnConcurrent(t *testing.T) {
	a, b := connPair(t)
	const senders, each = 8, 200
	payload := func(s, i int) []byte {
		p := make([]byte, 8+(s*each+i)%4096)
		binary.BigEndian.PutUint32(p[0:4], uint32(s))
		binary.BigEndian.PutUint32(p[4:8], uint32(i))
		for j := 8; j < len(p); j++ {
			p[j] = byte(s + i + j)
		}
		return p
	}
	var wg sync.WaitGroup
	errs := make(chan error, senders)
	for s := range senders {
		wg.Go(func() {
			for i := range each {
				if err := a.Send(uint32(100+s), payload(s, i)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	next := make([]int, senders)
	for range senders * each {
		m, err := b.Recv()
		if err != nil {
			t.Fatalf("Recv: %v", err)
		}
		if len(m.Payload) < 8 {
			t.Fatalf("payload of %d bytes", len(m.Payload))
		}
		s := int(binary.BigEndian.Uint32(m.Payload[0:4]))
		i := int(binary.BigEndian.Uint32(m.Payload[4:8]))
		if s >= senders || m.Type != uint32(100+s) {
			t.Fatalf("message type %d from sender %d", m.Type, s)
		}
		// One sender's messages arrive whole and in order.
		if i != next[s] || !bytes.Equal(m.Payload, payload(s, i)) {
			t.Fatalf("sender %d: got message %d (%d bytes), want %d intact", s, i, len(m.Payload), next[s])
		}
		next[s]++
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Send: %v", err)
	}
}

func TestConnMaxPayload(t *testing.T) {
	a, b := connPair(t)
	p := bytes.Repeat([]byte("0123456789abcdef"), MaxPayload/16)
	if err := a.Send(9, p); err != nil {
		t.Fatalf("Send of MaxPayload: %v", err)
	}
	m, err := b.Recv()
	if err != nil {
		t.Fatalf("Recv of MaxPayload: %v", err)
	}
	if m.Type != 9 || !bytes.Equal(m.Payload, p) {
		t.Fatalf("got type %d, %d bytes", m.Type, len(m.Payload))
	}
	if err := a.Send(9, make([]byte, MaxPayload+1)); !errors.Is(err, ErrOversize) {
		t.Fatalf("Send of MaxPayload+1 = %v, want ErrOversize", err)
	}
}

func TestConnRecvRawOversize(t *testing.T) {
	a, b := rawPair(t)
	ca, err := NewConn(a)
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close()
	ca.SetDeadline(time.Now().Add(guard))
	r, w := pipe(t)
	// A header that claims a valid length but a packet longer than any
	// frame: the receiver must not trust the header.
	p := append(header(1, MaxPayload), make([]byte, MaxPayload+100)...)
	rawSend(t, b, p, int(w.Fd()))
	w.Close()
	if _, err := ca.Recv(); !errors.Is(err, ErrOversize) {
		t.Fatalf("Recv of an oversize packet = %v, want ErrOversize", err)
	}
	expectAllClosed(t, r)
}

func TestConnPassFD(t *testing.T) {
	a, b := connPair(t)
	r, w := pipe(t)
	if err := a.Send(3, []byte("fd"), w); err != nil {
		t.Fatalf("Send with a descriptor: %v", err)
	}
	w.Close()
	m, err := b.Recv()
	if err != nil {
		t.Fatalf("Recv: %v", err)
	}
	if len(m.Files) != 1 || string(m.Payload) != "fd" {
		t.Fatalf("got %d files, payload %q", len(m.Files), m.Payload)
	}
	got := m.Files[0]
	flags, err := unix.FcntlInt(got.Fd(), unix.F_GETFD, 0)
	if err != nil {
		t.Fatalf("F_GETFD on received descriptor: %v", err)
	}
	if flags&unix.FD_CLOEXEC == 0 {
		t.Fatalf("received descriptor %d lacks close-on-exec", got.Fd())
	}
	if _, err := got.Write([]byte("through")); err != nil {
		t.Fatalf("write through received descriptor: %v", err)
	}
	got.Close()
	r.SetReadDeadline(time.Now().Add(guard))
	all, err := io.ReadAll(r)
	if err != nil || string(all) != "through" {
		t.Fatalf("read %q, %v; want %q", all, err, "through")
	}
}

func TestConnTooManyFDs(t *testing.T) {
	t.Run("Send refuses", func(t *testing.T) {
		a, _ := connPair(t)
		_, w := pipe(t)
		files := make([]*os.File, MaxFDs+1)
		for i := range files {
			files[i] = w
		}
		if err := a.Send(1, nil, files...); !errors.Is(err, ErrTooManyFDs) {
			t.Fatalf("Send of %d files = %v, want ErrTooManyFDs", len(files), err)
		}
	})
	// MaxFDs+1 fits the control buffer and is counted; 100 overflows it,
	// so the kernel truncates (MSG_CTRUNC) and discards the rest.
	for _, n := range []int{MaxFDs + 1, 100} {
		t.Run(fmt.Sprintf("Recv %d", n), func(t *testing.T) {
			a, b := rawPair(t)
			ca, err := NewConn(a)
			if err != nil {
				t.Fatal(err)
			}
			defer ca.Close()
			ca.SetDeadline(time.Now().Add(guard))
			r, w := pipe(t)
			fds := make([]int, n)
			for i := range fds {
				fds[i] = int(w.Fd())
			}
			f, _ := EncodeFrame(1, []byte("x"))
			rawSend(t, b, f, fds...)
			w.Close()
			if _, err := ca.Recv(); !errors.Is(err, ErrTooManyFDs) {
				t.Fatalf("Recv with %d descriptors = %v, want ErrTooManyFDs", n, err)
			}
			expectAllClosed(t, r)
		})
	}
}

func TestConnMalformedClosesFDs(t *testing.T) {
	a, b := rawPair(t)
	ca, err := NewConn(a)
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close()
	ca.SetDeadline(time.Now().Add(guard))
	r, w := pipe(t)
	rawSend(t, b, append(header(1, 1), "xy"...), int(w.Fd()), int(w.Fd()))
	w.Close()
	if _, err := ca.Recv(); !errors.Is(err, ErrMalformed) {
		t.Fatalf("Recv of a malformed frame = %v, want ErrMalformed", err)
	}
	expectAllClosed(t, r)
}

func TestConnEOF(t *testing.T) {
	a, b := connPair(t)
	if err := a.Send(1, []byte("last")); err != nil {
		t.Fatal(err)
	}
	a.Close()
	// A message sent before the close is still delivered, then EOF.
	if m, err := b.Recv(); err != nil || string(m.Payload) != "last" {
		t.Fatalf("Recv = %q, %v", m.Payload, err)
	}
	for range 2 {
		if _, err := b.Recv(); err != io.EOF {
			t.Fatalf("Recv after peer close = %v, want io.EOF", err)
		}
	}
	if err := b.Send(1, nil); err == nil {
		t.Fatal("Send to a closed peer succeeded")
	}
}

func TestNewConnRefusesNonSeqpacket(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(fds[1])
	f := os.NewFile(uintptr(fds[0]), "stream")
	if _, err := NewConn(f); err == nil {
		t.Fatal("NewConn accepted a stream socket")
	}
	// NewConn owns f and closed it.
	if _, err := unix.FcntlInt(uintptr(fds[0]), unix.F_GETFD, 0); err == nil {
		t.Errorf("NewConn left fd %d open after refusing it", fds[0])
	}
}

func TestParentConnChecks(t *testing.T) {
	r, _ := pipe(t)
	if _, err := parentConn(int(r.Fd())); err == nil {
		t.Error("parentConn accepted a pipe")
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	if _, err := parentConn(fds[0]); err == nil {
		t.Error("parentConn accepted a stream socket")
	}
	// A descriptor number that is certainly not open.
	if _, err := parentConn(1 << 20); err == nil {
		t.Error("parentConn accepted a closed descriptor")
	}
	// Raw descriptors, not files: parentConn closes the first, and an
	// *os.File for it would close the number again when collected.
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	c, err := parentConn(sp[0])
	if err != nil {
		t.Fatalf("parentConn on a seqpacket socket: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(guard))
	if _, err := unix.FcntlInt(uintptr(sp[0]), unix.F_GETFD, 0); err == nil {
		t.Error("parentConn left the original descriptor open")
	}
	cb, err := NewConn(os.NewFile(uintptr(sp[1]), "peer"))
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	if err := cb.Send(5, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if m, err := c.Recv(); err != nil || m.Type != 5 {
		t.Fatalf("Recv through parentConn = %+v, %v", m, err)
	}
}
