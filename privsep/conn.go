package privsep

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Msg is one received message. Files are the descriptors that came with
// it; the receiver owns them and must close them.
type Msg struct {
	Type    uint32
	Payload []byte
	Files   []*os.File
}

var (
	// ErrWouldBlock: TrySend found the peer's receive buffer full (the
	// peer is slow or stopped); nothing was sent.
	ErrWouldBlock = errors.New("peer not reading, send would block")
	// ErrClosed: the peer has closed its end (it exited or was killed).
	ErrClosed = errors.New("peer closed the channel")
)

// Conn is one end of a SOCK_SEQPACKET socketpair. Each send is one packet,
// so message boundaries need no reassembly and concurrent senders cannot
// interleave. Send, SendTimeout and TrySend are safe for concurrent use;
// Recv must be called from one goroutine at a time (it reuses its
// buffers).
type Conn struct {
	uc   *net.UnixConn
	raw  syscall.RawConn // of uc, kept so TrySend allocates no new one
	rbuf []byte
	oob  []byte

	// turn serialises Send and SendTimeout, so the write deadline one
	// SendTimeout sets on the socket cannot cut short another's send. A
	// channel rather than a sync.Mutex because SendTimeout's wait for its
	// turn must end at its deadline too: a Send ahead of it may block for
	// as long as the peer does not read. TrySend does not take it.
	turn chan struct{}

	// dmu guards the two write deadlines; the socket's is the earlier of
	// them (zero is none). SetDeadline sets connDL without waiting for a
	// turn, so it can still end a send that blocks.
	dmu    sync.Mutex
	connDL time.Time // from SetDeadline
	sendDL time.Time // of the SendTimeout holding the turn
}

// sockBuf is what Socketpair asks for as send and receive buffer: a whole
// MaxPayload message must fit (a seqpacket send larger than the send
// buffer fails with EMSGSIZE on Linux and the BSDs), with room for a few
// more queued behind it.
const sockBuf = 4 * (HeaderLen + MaxPayload)

// minSockBuf is what the kernel must grant: one maximal frame plus slack
// for the accounting overhead Linux subtracts from the send buffer.
const minSockBuf = HeaderLen + MaxPayload + 1024

// oobSize holds far more descriptors than MaxFDs so that a sender going
// over the limit has its descriptors delivered to us, where we close them,
// instead of relying on each kernel to discard what did not fit.
var oobSize = unix.CmsgSpace(64 * 4)

// Socketpair returns the two ends of an AF_UNIX SOCK_SEQPACKET socketpair,
// both close-on-exec from creation (so no concurrently started child can
// inherit them) and with buffers large enough for a MaxPayload message.
func Socketpair() (a, b *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("privsep: socketpair: %w", err)
	}
	for _, fd := range fds {
		if err := setBuffers(fd); err != nil {
			unix.Close(fds[0])
			unix.Close(fds[1])
			return nil, nil, err
		}
	}
	return os.NewFile(uintptr(fds[0]), "privsep-socket"), os.NewFile(uintptr(fds[1]), "privsep-socket"), nil
}

func setBuffers(fd int) error {
	for _, opt := range []struct {
		name string
		opt  int
	}{{"SO_SNDBUF", unix.SO_SNDBUF}, {"SO_RCVBUF", unix.SO_RCVBUF}} {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt.opt, sockBuf); err != nil {
			return fmt.Errorf("privsep: socketpair: set %s to %d: %w", opt.name, sockBuf, err)
		}
		// Kernels cap the value silently (Linux at net.core.wmem_max and
		// rmem_max), so read it back rather than fail on the first big
		// message much later.
		got, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, opt.opt)
		if err != nil {
			return fmt.Errorf("privsep: socketpair: get %s: %w", opt.name, err)
		}
		if got < minSockBuf {
			return fmt.Errorf("privsep: socketpair: %s is %d bytes after asking for %d, need at least %d (raise the system's socket buffer limit)", opt.name, got, sockBuf, minSockBuf)
		}
	}
	return nil
}

// NewConn wraps f, which must be a unix SOCK_SEQPACKET socket. It takes
// ownership of f and closes it, also on error: net.FileConn works on a
// close-on-exec duplicate, and closing the original matters when f came
// from fd 3, which a child inherits without close-on-exec.
func NewConn(f *os.File) (*Conn, error) {
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("privsep: channel %s: %w", f.Name(), err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok || uc.LocalAddr().Network() != "unixpacket" {
		c.Close()
		return nil, fmt.Errorf("privsep: channel %s: %s socket, want a unix seqpacket socket", f.Name(), c.LocalAddr().Network())
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		uc.Close()
		return nil, fmt.Errorf("privsep: channel %s: %w", f.Name(), err)
	}
	return &Conn{uc: uc, raw: raw, turn: make(chan struct{}, 1)}, nil
}

// Send sends one message with files attached (at most MaxFDs). The files
// stay open: the receiver gets its own descriptors for them. Send waits
// for as long as the peer's receive buffer is full, bounded only by
// SetDeadline: it is for children writing to their parent. The parent,
// which must never block on a child, uses SendTimeout or TrySend.
func (c *Conn) Send(typ uint32, payload []byte, files ...*os.File) error {
	frame, err := encodeSend(typ, payload, files)
	if err != nil {
		return err
	}
	c.turn <- struct{}{}
	defer func() { <-c.turn }()
	return c.write(typ, frame, files)
}

// SendTimeout is Send giving up after d, waiting for an earlier Send
// included, with an error wrapping os.ErrDeadlineExceeded; a deadline
// from SetDeadline that comes sooner still applies. A message that timed
// out was not sent (a seqpacket send is all or nothing), and the channel
// stays usable.
func (c *Conn) SendTimeout(d time.Duration, typ uint32, payload []byte, files ...*os.File) error {
	frame, err := encodeSend(typ, payload, files)
	if err != nil {
		return err
	}
	return c.sendTimeout(d, typ, frame, files)
}

// SendFrameTimeout is SendTimeout of a frame the caller built with
// NewFrame or StartFrame and sealed, sent as it is.
func (c *Conn) SendFrameTimeout(d time.Duration, frame []byte) error {
	typ, _, err := DecodeFrame(frame)
	if err != nil {
		return fmt.Errorf("privsep: send: %w", err)
	}
	return c.sendTimeout(d, typ, frame, nil)
}

func (c *Conn) sendTimeout(d time.Duration, typ uint32, frame []byte, files []*os.File) error {
	deadline := time.Now().Add(d)
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case c.turn <- struct{}{}:
	case <-timer.C:
		return fmt.Errorf("privsep: send type %d: an earlier send still blocked after %v: %w", typ, d, os.ErrDeadlineExceeded)
	}
	defer func() { <-c.turn }()
	if err := c.setSendDeadline(deadline); err != nil {
		return fmt.Errorf("privsep: send type %d: %w", typ, err)
	}
	// Cleared before the turn passes on, so the next Send sees only the
	// deadline from SetDeadline. An error here means the socket is
	// closed, which the next send reports.
	defer c.setSendDeadline(time.Time{})
	return c.write(typ, frame, files)
}

func encodeSend(typ uint32, payload []byte, files []*os.File) ([]byte, error) {
	if len(files) > MaxFDs {
		return nil, fmt.Errorf("privsep: send type %d: %d descriptors, at most %d: %w", typ, len(files), MaxFDs, ErrTooManyFDs)
	}
	return EncodeFrame(typ, payload)
}

// write sends frame through the runtime's poller, which waits for room
// until the socket's write deadline.
func (c *Conn) write(typ uint32, frame []byte, files []*os.File) error {
	return withFDs(files, func(fds []int) error {
		var oob []byte
		if len(fds) > 0 {
			oob = unix.UnixRights(fds...)
		}
		n, oobn, err := c.uc.WriteMsgUnix(frame, oob, nil)
		if err != nil {
			return fmt.Errorf("privsep: send type %d (%d bytes, %d descriptors): %w", typ, len(frame), len(fds), peerGone(err))
		}
		// A seqpacket send is atomic; a short one would be a kernel or
		// runtime surprise that must not pass for success.
		if n != len(frame) || oobn != len(oob) {
			return fmt.Errorf("privsep: send type %d: short write of %d of %d bytes, %d of %d control bytes", typ, n, len(frame), oobn, len(oob))
		}
		return nil
	})
}

// setSendDeadline sets the deadline of the SendTimeout holding the turn
// (zero: none) and gives the socket the earlier of it and SetDeadline's.
func (c *Conn) setSendDeadline(t time.Time) error {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	c.sendDL = t
	return c.uc.SetWriteDeadline(earlier(c.connDL, c.sendDL))
}

// earlier returns the sooner of two deadlines, where zero means none.
func earlier(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// TrySend sends one message without ever waiting: when the peer's
// receive buffer is full it returns an error wrapping ErrWouldBlock, and
// when the peer is gone one wrapping ErrClosed; either way nothing was
// sent. It ignores deadlines and does not wait for a blocked Send or
// SendTimeout to finish. It is the network process's path for every
// notification, so it costs one sendmsg and allocates only the frame.
func (c *Conn) TrySend(typ uint32, payload []byte) error {
	frame, err := EncodeFrame(typ, payload)
	if err != nil {
		return err
	}
	return c.trySend(typ, frame)
}

// TrySendFrame is TrySend of a frame the caller built with NewFrame and
// filled, so that a payload made of parts is copied once, into the frame.
func (c *Conn) TrySendFrame(frame []byte) error {
	typ, _, err := DecodeFrame(frame)
	if err != nil {
		return fmt.Errorf("privsep: try send: %w", err)
	}
	return c.trySend(typ, frame)
}

func (c *Conn) trySend(typ uint32, frame []byte) error {
	// Control, not Write: RawConn.Write takes the runtime's write lock on
	// the socket, which a Send blocked on a full buffer holds, and checks
	// the deadline SendTimeout set. Control only keeps the descriptor from
	// being closed and reused while the send runs. A seqpacket send is one
	// atomic packet, so it cannot interleave with a concurrent Send.
	s := trySenders.Get().(*trySender)
	s.frame = frame
	cerr := c.raw.Control(s.sendFn)
	n, err := s.n, s.err
	s.frame, s.err = nil, nil
	trySenders.Put(s)
	if cerr != nil {
		return fmt.Errorf("privsep: try send type %d: %w", typ, cerr)
	}
	switch {
	case err == unix.EAGAIN || err == unix.EWOULDBLOCK || err == unix.ENOBUFS:
		// The BSDs may report a full seqpacket buffer as ENOBUFS.
		return fmt.Errorf("privsep: try send type %d (%d bytes): %w: %w", typ, len(frame), ErrWouldBlock, err)
	case err != nil:
		return fmt.Errorf("privsep: try send type %d (%d bytes): %w", typ, len(frame), peerGone(err))
	case n != len(frame):
		return fmt.Errorf("privsep: try send type %d: short write of %d of %d bytes", typ, n, len(frame))
	}
	return nil
}

// trySender carries one TrySend into RawConn.Control. A func passed to
// an interface method escapes, so a closure made per call would be a
// second allocation; each pooled trySender keeps one bound to itself.
type trySender struct {
	frame  []byte
	n      int
	err    error
	sendFn func(fd uintptr)
}

var trySenders = sync.Pool{New: func() any {
	s := &trySender{}
	s.sendFn = s.send
	return s
}}

func (s *trySender) send(fd uintptr) {
	for {
		// MSG_DONTWAIT although the runtime made the socket non-blocking:
		// this send must not wait, whatever the descriptor's mode.
		// MSG_NOSIGNAL: a gone peer is an error, not a SIGPIPE.
		s.n, s.err = unix.SendmsgN(int(fd), s.frame, nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		if s.err != unix.EINTR {
			return
		}
	}
}

// peerGone adds ErrClosed to the errors that mean the peer has closed
// its end, keeping err in the chain.
func peerGone(err error) error {
	if errors.Is(err, unix.EPIPE) || errors.Is(err, unix.ECONNRESET) || errors.Is(err, unix.ENOTCONN) {
		return fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return err
}

// withFDs calls fn with the descriptors of files. It goes through
// SyscallConn().Control rather than File.Fd because Fd switches a
// pollable file to blocking mode, which would change the shared file
// description of, say, a listening socket; Control also keeps each
// descriptor from being closed and reused while fn runs.
func withFDs(files []*os.File, fn func(fds []int) error) error {
	fds := make([]int, 0, len(files))
	var next func(i int) error
	next = func(i int) error {
		if i == len(files) {
			return fn(fds)
		}
		if files[i] == nil {
			return fmt.Errorf("privsep: send: descriptor %d is nil", i)
		}
		rc, err := files[i].SyscallConn()
		if err != nil {
			return fmt.Errorf("privsep: send: descriptor %s: %w", files[i].Name(), err)
		}
		var inner error
		if err := rc.Control(func(fd uintptr) {
			fds = append(fds, int(fd))
			inner = next(i + 1)
		}); err != nil {
			return fmt.Errorf("privsep: send: descriptor %s: %w", files[i].Name(), err)
		}
		return inner
	}
	return next(0)
}

// Recv receives one message. It returns io.EOF when the peer has closed
// its end. Received descriptors are close-on-exec (ReadMsgUnix asks the
// kernel for that), so a command started later cannot inherit them. On
// every error the descriptors that came with the packet are closed, and
// after any error but io.EOF the caller must end the channel.
func (c *Conn) Recv() (Msg, error) {
	if c.rbuf == nil {
		// One byte over the largest frame, so a longer packet is detected
		// by its length even where the kernel does not report MSG_TRUNC.
		c.rbuf = make([]byte, HeaderLen+MaxPayload+1)
		c.oob = make([]byte, oobSize)
	}
	n, oobn, flags, _, err := c.uc.ReadMsgUnix(c.rbuf, c.oob)
	files, cerr := parseRights(c.oob[:oobn])
	fail := func(err error) (Msg, error) {
		for _, f := range files {
			f.Close()
		}
		return Msg{}, err
	}
	switch {
	case errors.Is(err, io.EOF) || (err == nil && n == 0 && oobn == 0):
		return fail(io.EOF)
	case err != nil:
		return fail(fmt.Errorf("privsep: recv: %w", err))
	case cerr != nil:
		return fail(fmt.Errorf("privsep: recv: control message: %w: %w", ErrMalformed, cerr))
	case flags&unix.MSG_CTRUNC != 0:
		return fail(fmt.Errorf("privsep: recv: control data truncated after %d descriptors: %w", len(files), ErrTooManyFDs))
	case len(files) > MaxFDs:
		return fail(fmt.Errorf("privsep: recv: %d descriptors, at most %d: %w", len(files), MaxFDs, ErrTooManyFDs))
	case flags&unix.MSG_TRUNC != 0 || n > HeaderLen+MaxPayload:
		return fail(fmt.Errorf("privsep: recv: packet over %d bytes: %w", HeaderLen+MaxPayload, ErrOversize))
	}
	typ, payload, err := DecodeFrame(c.rbuf[:n])
	if err != nil {
		return fail(fmt.Errorf("privsep: recv: %w", err))
	}
	m := Msg{Type: typ, Payload: bytes.Clone(payload), Files: files}
	// Security: a payload may be a private key; the receiver can wipe
	// its copy, and none stays behind in the reused buffer.
	clear(c.rbuf[:n])
	return m, nil
}

// parseRights returns every descriptor in the control data as a file,
// including those found before a parse error, so the caller can close
// them all. Anything but SCM_RIGHTS is an error: we never ask for
// credentials or timestamps.
func parseRights(oob []byte) ([]*os.File, error) {
	var files []*os.File
	var bad error
	for len(oob) > 0 {
		hdr, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			return files, err
		}
		oob = rest
		if hdr.Level != unix.SOL_SOCKET || hdr.Type != unix.SCM_RIGHTS {
			if bad == nil {
				bad = fmt.Errorf("level %d type %d", hdr.Level, hdr.Type)
			}
			continue
		}
		fds, err := unix.ParseUnixRights(&unix.SocketControlMessage{Header: hdr, Data: data})
		if err != nil {
			return files, err
		}
		for _, fd := range fds {
			files = append(files, os.NewFile(uintptr(fd), "privsep-received"))
		}
	}
	return files, bad
}

// Close closes the channel; the peer's Recv then returns io.EOF.
func (c *Conn) Close() error {
	return c.uc.Close()
}

// SetDeadline sets the read and write deadline, as net.Conn does; a
// SendTimeout in progress keeps its own deadline if that is sooner. It
// does not wait for a blocked send, which it can thus cut short.
func (c *Conn) SetDeadline(t time.Time) error {
	if err := c.uc.SetReadDeadline(t); err != nil {
		return err
	}
	c.dmu.Lock()
	defer c.dmu.Unlock()
	c.connDL = t
	return c.uc.SetWriteDeadline(earlier(c.connDL, c.sendDL))
}
