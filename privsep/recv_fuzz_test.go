//go:build linux

package privsep

import (
	"bytes"
	"errors"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// FuzzRecv sends any packet, with up to MaxFDs+3 descriptors, the way a
// compromised process at the other end of a channel could, and holds
// Recv to it: a message only when the packet is one whole frame with at
// most MaxFDs descriptors (and then exactly those), otherwise an error
// of one of the documented kinds; and in both cases no descriptor left
// open in this process once the message's own are closed.
func FuzzRecv(f *testing.F) {
	frame := func(typ uint32, p string) []byte {
		b, err := EncodeFrame(typ, []byte(p))
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	f.Add(frame(19, "127.0.0.1:1\n{}"), uint8(0))
	f.Add(frame(9, ""), uint8(1))
	f.Add(frame(11, `{"target":1}`), uint8(MaxFDs+1))
	f.Add([]byte{}, uint8(1))
	f.Add([]byte{0, 0, 0, 1}, uint8(0))
	f.Add(append(frame(1, "ab"), 'c'), uint8(2))
	f.Fuzz(func(t *testing.T, packet []byte, nfds uint8) {
		nfds %= MaxFDs + 4
		a, b, err := Socketpair()
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		defer b.Close()
		rc, err := NewConn(b)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		devnull, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		fds := make([]int, nfds)
		for i := range fds {
			fds[i] = int(devnull.Fd())
		}
		var oob []byte
		if nfds > 0 {
			oob = unix.UnixRights(fds...)
		}
		// An empty packet with no descriptors is what a closed peer
		// reads as: Recv reports io.EOF for it.
		if err := unix.Sendmsg(int(a.Fd()), packet, oob, nil, 0); err != nil {
			devnull.Close()
			t.Skipf("the kernel refuses the packet: %v", err) // over the socket buffer
		}
		devnull.Close()
		before := openFDs(t)
		m, err := rc.Recv()
		for _, f := range m.Files {
			f.Close()
		}
		// The descriptors in flight are opened in this process by Recv:
		// a message's own are closed above, a refused one's must be closed
		// by Recv itself.
		if after := openFDs(t); after != before {
			t.Fatalf("%d descriptors open before Recv, %d after it took %d (error %v)", before, after, nfds, err)
		}
		if err != nil {
			for _, kind := range []error{ErrMalformed, ErrOversize, ErrTruncated, ErrTooManyFDs} {
				if errors.Is(err, kind) {
					return
				}
			}
			if len(packet) == 0 && nfds == 0 {
				return // io.EOF
			}
			t.Fatalf("error of no documented kind: %v", err)
		}
		if len(m.Files) != int(nfds) || nfds > MaxFDs {
			t.Fatalf("%d descriptors received, %d sent (at most %d)", len(m.Files), nfds, MaxFDs)
		}
		again, err := EncodeFrame(m.Type, m.Payload)
		if err != nil || !bytes.Equal(again, packet) {
			t.Fatalf("received type %d %q from packet %q", m.Type, m.Payload, packet)
		}
	})
}

// openFDs counts this process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents) - 1 // the directory ReadDir had open
}
