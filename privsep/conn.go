package privsep

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
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

// Conn is one end of a SOCK_SEQPACKET socketpair. Each Send is one packet,
// so message boundaries need no reassembly and concurrent senders cannot
// interleave. Send is safe for concurrent use; Recv must be called from
// one goroutine at a time (it reuses its buffers).
type Conn struct {
	uc   *net.UnixConn
	rbuf []byte
	oob  []byte
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
	return &Conn{uc: uc}, nil
}

// Send sends one message with files attached (at most MaxFDs). The files
// stay open: the receiver gets its own descriptors for them.
func (c *Conn) Send(typ uint32, payload []byte, files ...*os.File) error {
	if len(files) > MaxFDs {
		return fmt.Errorf("privsep: send type %d: %d descriptors, at most %d: %w", typ, len(files), MaxFDs, ErrTooManyFDs)
	}
	frame, err := EncodeFrame(typ, payload)
	if err != nil {
		return err
	}
	return withFDs(files, func(fds []int) error {
		var oob []byte
		if len(fds) > 0 {
			oob = unix.UnixRights(fds...)
		}
		n, oobn, err := c.uc.WriteMsgUnix(frame, oob, nil)
		if err != nil {
			return fmt.Errorf("privsep: send type %d (%d bytes, %d descriptors): %w", typ, len(frame), len(fds), err)
		}
		// A seqpacket send is atomic; a short one would be a kernel or
		// runtime surprise that must not pass for success.
		if n != len(frame) || oobn != len(oob) {
			return fmt.Errorf("privsep: send type %d: short write of %d of %d bytes, %d of %d control bytes", typ, n, len(frame), oobn, len(oob))
		}
		return nil
	})
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
	return Msg{Type: typ, Payload: bytes.Clone(payload), Files: files}, nil
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

// SetDeadline sets the read and write deadline, as net.Conn does.
func (c *Conn) SetDeadline(t time.Time) error {
	return c.uc.SetDeadline(t)
}
