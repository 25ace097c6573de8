package privsep

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// guard is a deadline that only fails a hung test; nothing waits for it.
const guard = 30 * time.Second

// connPair returns two connected Conns, closed at the end of the test.
func connPair(t testing.TB) (*Conn, *Conn) {
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
func rawPair(t testing.TB) (*os.File, *os.File) {
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

// fill sends numbered messages with TrySend until the peer's receive
// buffer is full and returns how many went out.
func fill(t *testing.T, c *Conn) int {
	t.Helper()
	for n := 0; n < 1<<20; n++ {
		err := c.TrySend(msgFill, fillPayload(n))
		if errors.Is(err, ErrWouldBlock) {
			if n == 0 {
				t.Fatal("TrySend would block on an empty channel")
			}
			return n
		}
		if err != nil {
			t.Fatalf("TrySend %d: %v", n, err)
		}
	}
	t.Fatal("TrySend never found the peer's buffer full")
	return 0
}

const msgFill = 40

func fillPayload(n int) []byte {
	return fmt.Appendf(bytes.Repeat([]byte{'f'}, 1000), "%d", n)
}

// drain receives the n messages fill sent, checking each.
func drain(t *testing.T, c *Conn, n int) {
	t.Helper()
	for i := range n {
		m, err := c.Recv()
		if err != nil {
			t.Fatalf("Recv of filler %d: %v", i, err)
		}
		if m.Type != msgFill || !bytes.Equal(m.Payload, fillPayload(i)) {
			t.Fatalf("filler %d: got type %d, %d bytes", i, m.Type, len(m.Payload))
		}
	}
}

// waitParked returns once some goroutine is parked in the runtime poller
// inside fn (say "(*FD).WriteMsg"): blocked on the socket, not about to
// be. It reads goroutine stacks, which is how a test can know this
// without sleeping.
func waitParked(t *testing.T, fn string) {
	t.Helper()
	buf := make([]byte, 1<<20)
	for end := time.Now().Add(guard); time.Now().Before(end); runtime.Gosched() {
		n := runtime.Stack(buf, true)
		for g := range strings.SplitSeq(string(buf[:n]), "\n\n") {
			if strings.Contains(g, "[IO wait") && strings.Contains(g, fn) {
				return
			}
		}
	}
	t.Fatalf("no goroutine blocked in %s", fn)
}

// result waits for the error from ch, failing the test if none comes:
// the guard bounds a hang, it asserts no speed.
func result(t *testing.T, what string, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(guard):
		t.Fatalf("%s did not return", what)
		return nil
	}
}

// async runs fn in a goroutine; its error arrives on the channel.
func async(fn func() error) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- fn() }()
	return ch
}

func TestSendTimeoutPeerNotReading(t *testing.T) {
	a, b := connPair(t)
	// No deadline on the socket: only SendTimeout's own may end the send.
	a.SetDeadline(time.Time{})
	n := fill(t, a)
	err := result(t, "SendTimeout to a peer that does not read", async(func() error {
		return a.SendTimeout(50*time.Millisecond, 7, []byte("late"))
	}))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("SendTimeout to a full peer = %v, want os.ErrDeadlineExceeded", err)
	}
	// Still usable: once the peer reads, a plain Send goes through, so
	// the expired deadline did not stay on the socket, and the message
	// that timed out was not sent.
	drain(t, b, n)
	if err := a.Send(8, []byte("after")); err != nil {
		t.Fatalf("Send after a SendTimeout timed out: %v", err)
	}
	if m, err := b.Recv(); err != nil || m.Type != 8 || string(m.Payload) != "after" {
		t.Fatalf("Recv after the timeout = type %d %q, %v; want 8 \"after\"", m.Type, m.Payload, err)
	}
	if err := a.SendTimeout(guard, 9, []byte("in time")); err != nil {
		t.Fatalf("SendTimeout with room: %v", err)
	}
	if m, err := b.Recv(); err != nil || m.Type != 9 {
		t.Fatalf("Recv = type %d, %v; want 9", m.Type, err)
	}
}

// SendFrameTimeout waits for room and sends the frame as it is once the
// peer reads; a SetDeadline that comes sooner cuts it short, the frame
// not sent.
func TestSendFrameTimeout(t *testing.T) {
	a, b := connPair(t)
	a.SetDeadline(time.Time{})
	frame, err := EncodeFrame(7, []byte("waited"))
	if err != nil {
		t.Fatal(err)
	}
	n := fill(t, a)
	waiting := async(func() error { return a.SendFrameTimeout(guard, frame) })
	waitParked(t, "(*FD).WriteMsg")
	drain(t, b, n)
	if err := result(t, "SendFrameTimeout once the peer read", waiting); err != nil {
		t.Fatal(err)
	}
	if m, err := b.Recv(); err != nil || m.Type != 7 || string(m.Payload) != "waited" {
		t.Fatalf("Recv = type %d %q, %v; want 7 \"waited\"", m.Type, m.Payload, err)
	}

	n = fill(t, a)
	cut := async(func() error { return a.SendFrameTimeout(guard, frame) })
	waitParked(t, "(*FD).WriteMsg")
	a.SetDeadline(time.Now())
	if err := result(t, "SendFrameTimeout cut short", cut); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("SendFrameTimeout after SetDeadline(now) = %v, want os.ErrDeadlineExceeded", err)
	}
	a.SetDeadline(time.Time{})
	drain(t, b, n)
	if err := a.Send(8, []byte("after")); err != nil {
		t.Fatal(err)
	}
	if m, err := b.Recv(); err != nil || m.Type != 8 {
		t.Fatalf("Recv = type %d, %v; want 8, and not the frame cut short", m.Type, err)
	}
	if err := a.SendFrameTimeout(guard, []byte("short")); err == nil {
		t.Error("SendFrameTimeout of bytes that are no frame: nil, want an error")
	}
}

func TestSendTimeoutBehindBlockedSend(t *testing.T) {
	a, b := connPair(t)
	a.SetDeadline(time.Time{})
	n := fill(t, a)
	// A Send without deadline blocks for as long as the peer does not
	// read, holding its turn; a SendTimeout behind it still gives up.
	blocked := async(func() error { return a.Send(7, []byte("blocked")) })
	waitParked(t, "(*FD).WriteMsg")
	err := result(t, "SendTimeout behind a blocked Send", async(func() error {
		return a.SendTimeout(50*time.Millisecond, 8, []byte("behind"))
	}))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("SendTimeout behind a blocked Send = %v, want os.ErrDeadlineExceeded", err)
	}
	drain(t, b, n)
	if err := result(t, "the blocked Send", blocked); err != nil {
		t.Fatalf("Send once the peer read: %v", err)
	}
	if m, err := b.Recv(); err != nil || m.Type != 7 {
		t.Fatalf("Recv = type %d, %v; want the blocked message (7) and not the timed-out one", m.Type, err)
	}
}

func TestSendTimeoutKeepsReadDeadline(t *testing.T) {
	a, b := connPair(t)
	a.SetDeadline(time.Time{})
	n := fill(t, a)
	// A Recv blocked on the same Conn must not end when SendTimeout's
	// write deadline does.
	type recvd struct {
		m   Msg
		err error
	}
	got := make(chan recvd, 1)
	go func() {
		m, err := a.Recv()
		got <- recvd{m, err}
	}()
	waitParked(t, "(*FD).ReadMsg")
	err := result(t, "SendTimeout", async(func() error {
		return a.SendTimeout(50*time.Millisecond, 7, nil)
	}))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("SendTimeout to a full peer = %v, want os.ErrDeadlineExceeded", err)
	}
	if err := b.Send(5, []byte("to a")); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-got:
		if r.err != nil || r.m.Type != 5 {
			t.Fatalf("Recv during SendTimeout = type %d, %v; want the message sent after it", r.m.Type, r.err)
		}
	case <-time.After(guard):
		t.Fatal("Recv did not return")
	}
	drain(t, b, n)
}

// The socket's write deadline is the sooner of SetDeadline's and that of
// the SendTimeout in progress, whichever is set first.
func TestSendTimeoutAndSetDeadline(t *testing.T) {
	a, _ := connPair(t)
	a.SetDeadline(time.Time{})
	fill(t, a)

	// SetDeadline does not wait for a blocked send's turn, and ends it.
	blocked := async(func() error { return a.SendTimeout(time.Hour, 7, nil) })
	waitParked(t, "(*FD).WriteMsg")
	a.SetDeadline(time.Now().Add(-time.Second))
	if err := result(t, "SendTimeout after SetDeadline in the past", blocked); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("SendTimeout = %v, want os.ErrDeadlineExceeded", err)
	}

	// A SendTimeout does not outlast an expired SetDeadline.
	if err := result(t, "SendTimeout with SetDeadline in the past", async(func() error {
		return a.SendTimeout(time.Hour, 7, nil)
	})); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("SendTimeout = %v, want os.ErrDeadlineExceeded", err)
	}

	// Clearing SetDeadline's deadline leaves SendTimeout's in place.
	a.SetDeadline(time.Time{})
	blocked = async(func() error { return a.SendTimeout(50*time.Millisecond, 7, nil) })
	waitParked(t, "(*FD).WriteMsg")
	a.SetDeadline(time.Time{})
	if err := result(t, "SendTimeout after SetDeadline cleared the deadline", blocked); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("SendTimeout = %v, want os.ErrDeadlineExceeded", err)
	}
}

func TestTrySend(t *testing.T) {
	a, b := connPair(t)
	// The socket keeps connPair's deadline: a TrySend that waited would
	// fail with it rather than hang.
	n := fill(t, a)
	if err := a.TrySend(7, nil); !errors.Is(err, ErrWouldBlock) || errors.Is(err, ErrClosed) {
		t.Fatalf("TrySend to a full peer = %v, want ErrWouldBlock", err)
	}

	// Nor does TrySend wait behind a blocked SendTimeout, which holds
	// the runtime's write lock on the socket.
	a.SetDeadline(time.Time{})
	blocked := async(func() error { return a.SendTimeout(time.Hour, 8, nil) })
	waitParked(t, "(*FD).WriteMsg")
	if err := result(t, "TrySend next to a blocked SendTimeout", async(func() error {
		return a.TrySend(7, nil)
	})); !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("TrySend next to a blocked SendTimeout = %v, want ErrWouldBlock", err)
	}
	a.SetDeadline(time.Now().Add(-time.Second))
	if err := result(t, "SendTimeout", blocked); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("SendTimeout = %v, want os.ErrDeadlineExceeded", err)
	}
	a.SetDeadline(time.Now().Add(guard))

	drain(t, b, n)
	if err := a.TrySend(9, []byte("room")); err != nil {
		t.Fatalf("TrySend with room: %v", err)
	}
	if m, err := b.Recv(); err != nil || m.Type != 9 || string(m.Payload) != "room" {
		t.Fatalf("Recv = type %d %q, %v", m.Type, m.Payload, err)
	}

	b.Close()
	if err := a.TrySend(9, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("TrySend after the peer closed = %v, want ErrClosed", err)
	}
	if err := a.Send(9, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after the peer closed = %v, want ErrClosed", err)
	}
	a.Close()
	if err := a.TrySend(9, nil); err == nil || errors.Is(err, ErrWouldBlock) {
		t.Fatalf("TrySend on a closed Conn = %v, want an error", err)
	}
}

func TestTrySendConcurrent(t *testing.T) {
	a, b := connPair(t)
	const senders, each = 8, 300
	payload := func(s, i int) []byte {
		p := make([]byte, 8+(s*each+i*37)%4096)
		binary.BigEndian.PutUint32(p[0:4], uint32(s))
		binary.BigEndian.PutUint32(p[4:8], uint32(i))
		for j := 8; j < len(p); j++ {
			p[j] = byte(s ^ i ^ j)
		}
		return p
	}
	// Start full, so the senders meet ErrWouldBlock and the SendTimeout
	// waits in the poller while TrySends go past it.
	n := fill(t, a)
	var wouldBlock atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, senders+1)
	for s := range senders {
		wg.Go(func() {
			for i := 0; i < each; {
				err := a.TrySend(uint32(100+s), payload(s, i))
				switch {
				case err == nil:
					i++
				case errors.Is(err, ErrWouldBlock):
					wouldBlock.Add(1)
					runtime.Gosched()
				default:
					errs <- err
					return
				}
			}
		})
	}
	wg.Go(func() {
		for i := range each {
			if err := a.SendTimeout(guard, 100+senders, payload(senders, i)); err != nil {
				errs <- err
				return
			}
		}
	})
	drain(t, b, n)
	next := make([]int, senders+1)
	for range (senders + 1) * each {
		m, err := b.Recv()
		if err != nil {
			t.Fatalf("Recv: %v", err)
		}
		if len(m.Payload) < 8 {
			t.Fatalf("payload of %d bytes", len(m.Payload))
		}
		s := int(binary.BigEndian.Uint32(m.Payload[0:4]))
		i := int(binary.BigEndian.Uint32(m.Payload[4:8]))
		if s > senders || m.Type != uint32(100+s) {
			t.Fatalf("message type %d from sender %d", m.Type, s)
		}
		if i != next[s] || !bytes.Equal(m.Payload, payload(s, i)) {
			t.Fatalf("sender %d: got message %d (%d bytes), want %d intact", s, i, len(m.Payload), next[s])
		}
		next[s]++
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("send: %v", err)
	}
	t.Logf("%d TrySends found the buffer full", wouldBlock.Load())
}

// benchSend measures one send of a notification-sized message to a peer
// with room; the peer drains outside the timer.
func benchSend(b *testing.B, send func(c *Conn, p []byte) error) {
	a, r := connPair(b)
	p := bytes.Repeat([]byte("x"), 512)
	const batch = 256 // fits the socket buffer
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := send(a, p); err != nil {
			b.Fatal(err)
		}
		if i++; i == batch {
			b.StopTimer()
			for range batch {
				if _, err := r.Recv(); err != nil {
					b.Fatal(err)
				}
			}
			i = 0
			b.StartTimer()
		}
	}
}

func BenchmarkTrySend(b *testing.B) {
	benchSend(b, func(c *Conn, p []byte) error { return c.TrySend(1, p) })
}

func BenchmarkSend(b *testing.B) {
	benchSend(b, func(c *Conn, p []byte) error { return c.Send(1, p) })
}

func BenchmarkSendTimeout(b *testing.B) {
	benchSend(b, func(c *Conn, p []byte) error { return c.SendTimeout(time.Second, 1, p) })
}

// A frame built with NewFrame arrives as TrySend's would; one whose
// header does not match its length is refused and nothing is sent.
func TestTrySendFrame(t *testing.T) {
	a, b := connPair(t)
	f, err := NewFrame(7, 5)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.TrySendFrame(append(f, "hello"...)); err != nil {
		t.Fatal(err)
	}
	m, err := b.Recv()
	if err != nil || m.Type != 7 || string(m.Payload) != "hello" {
		t.Fatalf("got %d %q %v", m.Type, m.Payload, err)
	}
	for _, bad := range [][]byte{append(f[:HeaderLen:HeaderLen], "hi"...), append(f[:HeaderLen:HeaderLen], "hello!"...), f[:4]} {
		if err := a.TrySendFrame(bad); err == nil {
			t.Errorf("frame %q sent", bad)
		}
	}
	if _, err := NewFrame(7, MaxPayload+1); !errors.Is(err, ErrOversize) {
		t.Errorf("an oversized frame: %v", err)
	}
	// Nothing of the refused frames reached the peer.
	if err := a.TrySend(8, nil); err != nil {
		t.Fatal(err)
	}
	if m, err := b.Recv(); err != nil || m.Type != 8 {
		t.Errorf("after the refused frames: %d %v", m.Type, err)
	}
}
