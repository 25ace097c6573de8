package logging

import (
	"strings"
	"testing"
)

// TestSyslogTooBig: a message the socket refuses as too big (EMSGSIZE) is
// sent again cut to 1024 bytes. Linux only: there SO_SNDBUF bounds a unix
// datagram, and its minimum (some 4 KiB) still takes 1024 bytes.
func TestSyslogTooBig(t *testing.T) {
	path := sockPath(t)
	srv := listenDgram(t, path)
	s, _ := dialTest(t, "unixgram", path, facDaemon)
	s.mu.Lock()
	err := s.conn.SetWriteBuffer(1) // the kernel's minimum, some 4 KiB
	s.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	w := s.Stream(SeverityInfo)
	write(t, w, strings.Repeat("é", 3900)+"\n")
	got := srv.next()
	head := len(msg(30, ""))
	want := msg(30, strings.Repeat("é", (syslogSmallMessage-head-len("…"))/2)+"…")
	if got != want || len(got) > syslogSmallMessage {
		t.Errorf("got %d bytes %.80q, want %d bytes", len(got), got, len(want))
	}
	write(t, w, "short\n")
	if got := srv.next(); got != msg(30, "short") {
		t.Errorf("got %q", got)
	}
	if lost, _ := s.stats(); lost != 0 {
		t.Errorf("%d lost", lost)
	}
}
