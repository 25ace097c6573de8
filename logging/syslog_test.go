package logging

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// testClock is the Syslog's clock in tests: it moves only when told.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// dgramServer is a system logger for tests: a unixgram socket bound in a
// temporary directory.
type dgramServer struct {
	t    *testing.T
	path string
	conn *net.UnixConn
}

func listenDgram(t *testing.T, path string) *dgramServer {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	srv := &dgramServer{t: t, path: path, conn: c}
	t.Cleanup(func() { c.Close() })
	return srv
}

// stop closes the socket and removes its file, as a syslogd that exits.
func (srv *dgramServer) stop() {
	srv.t.Helper()
	srv.conn.Close()
	if err := os.Remove(srv.path); err != nil {
		srv.t.Fatal(err)
	}
}

// next returns the next datagram. The deadline only turns a missing
// datagram into a failure instead of a hang.
func (srv *dgramServer) next() string {
	srv.t.Helper()
	m, err := srv.read()
	if err != nil {
		srv.t.Fatalf("no datagram: %v", err)
	}
	return m
}

// read is next for goroutines other than the test's.
func (srv *dgramServer) read() (string, error) {
	buf := make([]byte, 1<<16)
	srv.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, _, err := srv.conn.ReadFromUnix(buf)
	return string(buf[:n]), err
}

// none fails if a datagram is queued. A send is complete when it returns,
// so a non-blocking read sees everything sent before it.
func (srv *dgramServer) none() {
	srv.t.Helper()
	raw, err := srv.conn.SyscallConn()
	if err != nil {
		srv.t.Fatal(err)
	}
	buf := make([]byte, 1<<16)
	var n int
	var rerr error
	raw.Read(func(fd uintptr) bool {
		n, _, rerr = unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT)
		return true
	})
	if rerr == nil {
		srv.t.Errorf("unexpected datagram %q", buf[:n])
	} else if rerr != unix.EAGAIN {
		srv.t.Fatal(rerr)
	}
}

func sockPath(t *testing.T) string { return filepath.Join(t.TempDir(), "log") }

// dialTest dials path with the test clock, at testTime.
func dialTest(t *testing.T, network, path string, facility int) (*Syslog, *testClock) {
	t.Helper()
	clk := &testClock{t: testTime}
	s, err := dialSyslog(network, path, facility, "imserious", clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, clk
}

// msg is the datagram expected for a text: testTime is 13:26:42 UTC on
// 25 November.
func msg(pri int, text string) string {
	return fmt.Sprintf("<%d>Nov 25 13:26:42 imserious[%d]: %s", pri, os.Getpid(), text)
}

// msgAt is msg at another time.
func msgAt(tm time.Time, pri int, text string) string {
	return fmt.Sprintf("<%d>%s imserious[%d]: %s", pri, tm.Format(time.Stamp), os.Getpid(), text)
}

const facDaemon = 3

func write(t *testing.T, w io.Writer, s string) {
	t.Helper()
	if n, err := io.WriteString(w, s); err != nil || n != len(s) {
		t.Fatalf("Write(%q) = %d, %v", s, n, err)
	}
}

func (s *Syslog) stats() (lost uint64, dials int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lost, s.dials
}

func TestSyslogInterleavedPartialWrites(t *testing.T) {
	path := sockPath(t)
	srv := listenDgram(t, path)
	s, _ := dialTest(t, "unixgram", path, facDaemon)
	a, b := s.Stream(SeverityInfo), s.Stream(SeverityErr)
	write(t, a, "hel")
	write(t, b, "<4>wa")
	write(t, a, "lo\nsec")
	write(t, b, "rn\nerr")
	write(t, a, "ond\nthird\nfou")
	write(t, b, "or\n")
	write(t, a, "rth\n")
	for _, want := range []string{
		msg(30, "hello"), msg(28, "warn"), msg(30, "second"), msg(30, "third"), msg(27, "error"), msg(30, "fourth"),
	} {
		if got := srv.next(); got != want {
			t.Errorf("got  %q\nwant %q", got, want)
		}
	}
	srv.none()
}

func TestSyslogConcurrentStreams(t *testing.T) {
	path := sockPath(t)
	srv := listenDgram(t, path)
	s, _ := dialTest(t, "", path, facDaemon)
	s.mu.Lock()
	s.timeout = time.Minute // the reader may be slow under -race: nothing is to be dropped
	s.mu.Unlock()

	const streams, lines = 4, 300
	got := make(chan []string)
	go func() {
		var all []string
		for range streams * lines {
			m, err := srv.read()
			if err != nil {
				t.Error(err)
				srv.conn.Close() // the writers' sends fail fast from now on
				break
			}
			all = append(all, m)
		}
		got <- all
	}()
	var wg sync.WaitGroup
	for k := range streams {
		w := s.Stream(SeverityInfo)
		wg.Go(func() {
			var text strings.Builder
			for i := range lines {
				fmt.Fprintf(&text, "<%d>stream %d line %d %s\n", k, k, i, strings.Repeat("x", i%13))
			}
			// Writes of 1 to 17 bytes, so that lines are cut anywhere.
			p := []byte(text.String())
			for i := 0; len(p) > 0; i++ {
				n := min(len(p), 1+(i*7+k)%17)
				if _, err := w.Write(p[:n]); err != nil {
					t.Error(err)
					return
				}
				p = p[n:]
			}
		})
	}
	wg.Wait()
	all := <-got
	if len(all) != streams*lines {
		t.Fatalf("%d datagrams, want %d", len(all), streams*lines)
	}
	next := make([]int, streams)
	for _, m := range all {
		var k int
		if _, err := fmt.Sscanf(m[strings.Index(m, "]: ")+3:], "stream %d", &k); err != nil || k < 0 || k >= streams {
			t.Fatalf("datagram %q: %v", m, err)
		}
		i := next[k]
		next[k]++
		want := msg(24+k, fmt.Sprintf("stream %d line %d %s", k, i, strings.Repeat("x", i%13)))
		if m != want {
			t.Fatalf("got  %q\nwant %q", m, want)
		}
	}
	if lost, _ := s.stats(); lost != 0 {
		t.Errorf("%d lines lost", lost)
	}
}

func TestSyslogSeverityFromLine(t *testing.T) {
	path := sockPath(t)
	srv := listenDgram(t, path)
	const local0 = 16
	s, _ := dialTest(t, "unixgram", path, local0)
	w := s.Stream(SeverityNotice)
	tests := []struct {
		line string
		sev  int
		text string // "": nothing sent
	}{
		{"<0>emerg", 0, "emerg"},
		{"<3>boom", 3, "boom"},
		{"<4>careful", 4, "careful"},
		{"<7>details", 7, "details"},
		{"no prefix", SeverityNotice, "no prefix"},
		// A prefix out of range stays, with the default severity; a
		// line never chooses the facility.
		{"<8>eight", SeverityNotice, "<8>eight"},
		{"<27>daemon.err", SeverityNotice, "<27>daemon.err"},
		{"<191>local7.debug", SeverityNotice, "<191>local7.debug"},
		{"<03>x", SeverityNotice, "<03>x"},
		{"<3", SeverityNotice, "<3"},
		{"<>x", SeverityNotice, "<>x"},
		{"<-1>x", SeverityNotice, "<-1>x"},
		{" <3>x", SeverityNotice, " <3>x"},
		{"<3><0>only the first", 3, "<0>only the first"},
		{"<3>", 0, ""},
		{"", 0, ""},
	}
	for _, tt := range tests {
		write(t, w, tt.line+"\n")
		if tt.text == "" {
			srv.none()
			continue
		}
		if got, want := srv.next(), msg(local0*8+tt.sev, tt.text); got != want {
			t.Errorf("line %q: got %q, want %q", tt.line, got, want)
		}
	}
}

// TestSyslogContinuationLines: a line starting with a tab or four spaces
// keeps the severity of the line before it in its stream.
func TestSyslogContinuationLines(t *testing.T) {
	path := sockPath(t)
	srv := listenDgram(t, path)
	s, _ := dialTest(t, "unixgram", path, facDaemon)
	w, other := s.Stream(SeverityInfo), s.Stream(SeverityInfo)
	write(t, w, "    first line of the stream\n<3>head\n")
	write(t, other, "<7>another stream\n")
	write(t, w, "    key: value\n\n\tat main.go:1\n<4>    own prefix\n  two spaces\nnext\n")
	for _, want := range []string{
		msg(30, "    first line of the stream"),
		msg(27, "head"),
		msg(31, "another stream"),
		msg(27, "    key: value"),
		msg(27, "\tat main.go:1"),
		msg(28, "    own prefix"),
		msg(30, "  two spaces"),
		msg(30, "next"),
	} {
		if got := srv.next(); got != want {
			t.Errorf("got  %q\nwant %q", got, want)
		}
	}
}

func TestSyslogEscapes(t *testing.T) {
	path := sockPath(t)
	srv := listenDgram(t, path)
	s, _ := dialTest(t, "unixgram", path, facDaemon)
	w := s.Stream(SeverityInfo)
	line := "a\x1b[31mred\x07\rb\x00c\td\x7fe\xff\xc3 é ✓ 😀 \u009b[2J \u202eevil\u2028 \U000e0001 back\\slash \\x1b"
	want := `a\x1b[31mred\x07\x0db\x00c` + "\t" + `d\x7fe\xff\xc3 é ✓ 😀 \u009b[2J \u202eevil\u2028 \U000e0001 back\slash \x1b`
	write(t, w, line+"\n")
	got := srv.next()
	if got != msg(30, want) {
		t.Errorf("got  %q\nwant %q", got, msg(30, want))
	}
	for i := 0; i < len(got); i++ {
		if c := got[i]; (c < ' ' && c != '\t') || c == 0x7f {
			t.Errorf("control character %#x reached the logger", c)
		}
	}
}

// sendAll writes s to w in one Write, or one byte at a time.
func sendAll(t *testing.T, w io.Writer, s string, bytewise bool) {
	t.Helper()
	if !bytewise {
		write(t, w, s)
		return
	}
	for i := range len(s) {
		write(t, w, s[i:i+1])
	}
}

func TestSyslogLongLines(t *testing.T) {
	a := strings.Repeat
	tests := []struct {
		name string
		line string
		want []string
	}{
		{"ascii", "<3>" + a("a", 20000),
			[]string{msg(27, a("a", 7997)+"…"), msg(27, a("a", 7997)+"…"), msg(27, a("a", 4006))}},
		{"fits exactly", a("b", 8000), []string{msg(30, a("b", 8000))}},
		{"escaped", a("\x01", 5000),
			[]string{msg(30, a(`\x01`, 1999)+"…"), msg(30, a(`\x01`, 1999)+"…"), msg(30, a(`\x01`, 1002))}},
		{"multibyte at the end fits", a("c", 7996) + "é" + "zz", []string{msg(30, a("c", 7996)+"ézz")}},
		{"multibyte at the cut", a("c", 7996) + "é" + "zzz", []string{msg(30, a("c", 7996)+"…"), msg(30, "ézzz")}},
	}
	for _, bytewise := range []bool{false, true} {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%s/bytewise=%v", tt.name, bytewise), func(t *testing.T) {
				path := sockPath(t)
				srv := listenDgram(t, path)
				s, _ := dialTest(t, "unixgram", path, facDaemon)
				w := s.Stream(SeverityInfo)
				sendAll(t, w, tt.line+"\n", bytewise)
				for _, want := range tt.want {
					if got := srv.next(); got != want {
						t.Errorf("got  %.60q...(%d bytes)\nwant %.60q...(%d bytes)", got, len(got), want, len(want))
					}
				}
				srv.none()
			})
		}
	}
}

// TestSyslogUnterminatedLine: a line without end is sent in pieces as they
// fill, not held without bound; Close sends the rest.
func TestSyslogUnterminatedLine(t *testing.T) {
	path := sockPath(t)
	srv := listenDgram(t, path)
	s, _ := dialTest(t, "unixgram", path, facDaemon)
	w := s.Stream(SeverityInfo)
	write(t, w, "<4>"+strings.Repeat("b", 20000))
	for range 2 {
		if got, want := srv.next(), msg(28, strings.Repeat("b", 7997)+"…"); got != want {
			t.Errorf("got %.60q, want %.60q", got, want)
		}
	}
	srv.none()
	st := w.(*syslogStream)
	if n := len(st.pending); n != 20003-3-2*7997 {
		t.Errorf("%d bytes held, want %d", n, 20003-3-2*7997)
	}

	// A megabyte more without a newline, read as it comes: the pieces go
	// out as they fill, at most streamHold bytes are held.
	s.mu.Lock()
	s.timeout = time.Minute // nothing is to be dropped
	s.mu.Unlock()
	got := make(chan []string)
	go func() {
		var all []string
		for {
			m, err := srv.read()
			if err != nil {
				t.Error(err)
				srv.conn.Close() // the writers' sends fail fast from now on
				break
			}
			if strings.HasSuffix(m, "]: END") {
				break
			}
			all = append(all, m)
		}
		got <- all
	}()
	write(t, w, strings.Repeat("c", 1<<20))
	if n := len(st.pending); n >= streamHold {
		t.Errorf("%d bytes held", n)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(st.pending); n != 0 {
		t.Errorf("%d bytes held after Close", n)
	}
	write(t, s.Stream(SeverityDebug), "END\n")
	all := <-got
	var text strings.Builder
	text.WriteString(strings.Repeat("b", 20000-2*7997))
	text.WriteString(strings.Repeat("c", 1<<20))
	var joined strings.Builder
	prefix := msg(28, "")
	for i, m := range all {
		body, ok := strings.CutPrefix(m, prefix)
		if !ok || len(body) > syslogMaxText {
			t.Fatalf("piece %d: %.80q (%d bytes)", i, m, len(m))
		}
		cut, more := strings.CutSuffix(body, "…")
		if more != (i < len(all)-1) {
			t.Errorf("piece %d of %d: ends in …: %v", i, len(all), more)
		}
		joined.WriteString(cut)
	}
	if joined.String() != text.String() {
		t.Errorf("pieces do not add up to the line: %d bytes, want %d", joined.Len(), text.Len())
	}
	srv.none()
	if _, err := w.Write([]byte("late\n")); err == nil {
		t.Error("Write after Close did not fail")
	}
	srv.none()
}

func TestSyslogStreamSocket(t *testing.T) {
	path := sockPath(t)
	listen := func() *net.UnixListener {
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		return ln
	}
	accept := func(ln *net.UnixListener) (*net.UnixConn, *bufio.Reader) {
		ln.SetDeadline(time.Now().Add(10 * time.Second)) // fail rather than hang
		c, err := ln.AcceptUnix()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		return c, bufio.NewReader(c)
	}
	ln := listen()

	if _, err := DialSyslog("unixgram", path, facDaemon, "imserious"); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("unixgram to a stream socket: %v", err)
	}
	s, _ := dialTest(t, "", path, facDaemon) // falls back to a stream
	if !s.stream {
		t.Fatal("not a stream connection")
	}
	c, r := accept(ln)
	w := s.Stream(SeverityInfo)
	write(t, w, "<3>one\ntw")
	write(t, w, "o\n")
	for _, want := range []string{msg(27, "one"), msg(30, "two")} {
		got, err := r.ReadString('\n')
		if err != nil || got != want+"\n" {
			t.Errorf("got %q, %v; want %q", got, err, want+"\n")
		}
	}

	// Restart: the logger goes, a new one listens at the path. The first
	// write after that fails (EPIPE), and is retried on a new connection.
	ln.Close() // removes the file
	c.Close()
	ln = listen()
	write(t, w, "three\n")
	_, r = accept(ln)
	if got, err := r.ReadString('\n'); err != nil || got != msg(30, "three")+"\n" {
		t.Errorf("after restart: got %q, %v", got, err)
	}
	if lost, dials := s.stats(); lost != 0 || dials != 2 {
		t.Errorf("lost %d, dials %d; want 0, 2", lost, dials)
	}
}

// TestSyslogRestart: syslogd restarts (its socket closed and bound again
// at the same path); lines after it arrive, with a count of those lost
// while it was away; an unreachable logger is dialled at most once a
// second, by the Syslog's clock.
func TestSyslogRestart(t *testing.T) {
	path := sockPath(t)
	srv := listenDgram(t, path)
	s, clk := dialTest(t, "", path, facDaemon)
	w := s.Stream(SeverityInfo)
	check := func(wantLost uint64, wantDials int) {
		t.Helper()
		if lost, dials := s.stats(); lost != wantLost || dials != wantDials {
			t.Errorf("lost %d, dials %d; want %d, %d", lost, dials, wantLost, wantDials)
		}
	}
	expect := func(srv *dgramServer, want ...string) {
		t.Helper()
		for _, want := range want {
			if got := srv.next(); got != want {
				t.Errorf("got  %q\nwant %q", got, want)
			}
		}
		srv.none()
	}

	write(t, w, "one\n")
	expect(srv, msg(30, "one"))
	check(0, 1)

	// A restart between two lines: the send fails, the Syslog dials
	// again at once (no time has passed) and nothing is lost.
	srv.stop()
	srv = listenDgram(t, path)
	write(t, w, "two\n")
	expect(srv, msg(30, "two"))
	check(0, 2)

	// The logger goes away: one immediate redial, which fails, then no
	// dial before a second has passed, even once it is back.
	srv.stop()
	write(t, w, "three\n")
	check(1, 3)
	write(t, w, "four\n")
	check(2, 3)
	srv = listenDgram(t, path)
	write(t, w, "five\n")
	clk.Advance(999 * time.Millisecond)
	write(t, w, "six\n")
	check(4, 3)
	srv.none()
	clk.Advance(time.Millisecond)
	write(t, w, "<3>seven\n")
	check(0, 4)
	expect(srv, msgAt(clk.Now(), 28, "imserious: 4 log lines lost while syslog was unreachable"), msgAt(clk.Now(), 27, "seven"))

	// While it stays away: one dial a second, however many lines.
	srv.stop()
	write(t, w, "eight\n")
	check(1, 5)
	for i := range 3 {
		clk.Advance(time.Second)
		write(t, w, "nine\n")
		write(t, w, "ten\n")
		check(uint64(3+2*i), 6+i)
	}
	srv = listenDgram(t, path)
	clk.Advance(time.Second)
	write(t, w, "eleven\n")
	check(0, 9)
	expect(srv, msgAt(clk.Now(), 28, "imserious: 7 log lines lost while syslog was unreachable"), msgAt(clk.Now(), 30, "eleven"))

	// The socket file replaced by something that is not a logger: a
	// connection refused.
	srv.stop()
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	write(t, w, "twelve\n")
	check(1, 10)
	os.Remove(path)
	srv = listenDgram(t, path)
	clk.Advance(time.Second)
	write(t, w, "thirteen\n")
	expect(srv, msgAt(clk.Now(), 28, "imserious: 1 log line lost while syslog was unreachable"), msgAt(clk.Now(), 30, "thirteen"))
	check(0, 11)

	// After Close, lines are dropped without a dial.
	s.Close()
	clk.Advance(time.Second)
	write(t, w, "fourteen\n")
	srv.none()
	check(0, 11)
}

// TestSyslogFull: a logger that does not read makes one send wait for
// the deadline, the following ones are dropped without waiting, and the
// first line through after that is preceded by the count.
func TestSyslogFull(t *testing.T) {
	path := sockPath(t)
	srv := listenDgram(t, path)
	s, _ := dialTest(t, "unixgram", path, facDaemon)
	s.mu.Lock()
	s.timeout = 20 * time.Millisecond
	s.mu.Unlock()
	w := s.Stream(SeverityInfo)
	delivered := 0
	for ; ; delivered++ {
		if delivered > 100000 {
			t.Fatal("the queue never filled")
		}
		write(t, w, fmt.Sprintf("line %d\n", delivered))
		if lost, _ := s.stats(); lost > 0 {
			break
		}
	}
	// Congested: no more waiting, even with a long deadline.
	s.mu.Lock()
	s.timeout = 10 * time.Second
	s.mu.Unlock()
	start := time.Now()
	for range 5 {
		write(t, w, "dropped\n")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("5 lines to a full logger took %v", d)
	}
	if lost, dials := s.stats(); lost != 6 || dials != 1 {
		t.Errorf("lost %d, dials %d; want 6, 1 (a full logger is not redialled)", lost, dials)
	}
	for i := range delivered {
		if got, want := srv.next(), msg(30, fmt.Sprintf("line %d", i)); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
	srv.none()
	write(t, w, "after\n")
	if got, want := srv.next(), msg(28, "imserious: 6 log lines lost while syslog was unreachable"); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got, want := srv.next(), msg(30, "after"); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	s.mu.Lock()
	congested := s.congested
	s.mu.Unlock()
	if congested {
		t.Error("still congested after a line went through")
	}
}

func TestDialSyslogErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing")
	path := filepath.Join(dir, "log")
	listenDgram(t, path)
	tests := []struct {
		network, path string
		facility      int
		ident         string
		want          string
	}{
		{"", missing, facDaemon, "imserious", "cannot connect to " + missing + ": dial unixgram " + missing},
		{"unix", missing, facDaemon, "imserious", "cannot connect to " + missing + ": dial unix " + missing},
		{"unix", path, facDaemon, "imserious", "cannot connect to " + path + ": dial unix " + path + ": connect: protocol wrong type"},
		{"udp", path, facDaemon, "imserious", `network "udp"`},
		{"", path, -1, "imserious", "facility -1"},
		{"", path, 12, "imserious", "facility 12"},
		{"", path, 24, "imserious", "facility 24"},
		{"", path, facDaemon, "", "ident"},
		{"", path, facDaemon, "ims erious", "ident"},
		{"", path, facDaemon, "ims[1]", "ident"},
		{"", path, facDaemon, "ims:", "ident"},
		{"", path, facDaemon, strings.Repeat("i", 65), "ident"},
	}
	for _, tt := range tests {
		s, err := DialSyslog(tt.network, tt.path, tt.facility, tt.ident)
		if err == nil {
			s.Close()
			t.Errorf("DialSyslog(%q, %q, %d, %q) did not fail", tt.network, tt.path, tt.facility, tt.ident)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("DialSyslog(%q, %q, %d, %q): %v; want %q in it", tt.network, tt.path, tt.facility, tt.ident, err, tt.want)
		}
	}

	// No path: the first of SyslogPaths that answers.
	old := SyslogPaths
	t.Cleanup(func() { SyslogPaths = old })
	SyslogPaths = []string{missing, path}
	s, err := DialSyslog("", "", facDaemon, "imserious")
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	SyslogPaths = []string{missing, missing + "2"}
	if _, err := DialSyslog("", "", facDaemon, "imserious"); err == nil || !strings.Contains(err.Error(), missing+", "+missing+"2") {
		t.Errorf("no logger: %v", err)
	}
}

// TestSyslogFromHandler: a child's logger with Priority, through a Stream:
// every record arrives with its level's severity and its text, for every
// format, the attribute lines of a pretty record included.
func TestSyslogFromHandler(t *testing.T) {
	path := sockPath(t)
	srv := listenDgram(t, path)
	s, _ := dialTest(t, "unixgram", path, facDaemon)
	levels := []struct {
		level slog.Level
		sev   int
	}{
		{LevelTrace, 7}, {slog.LevelDebug, 7}, {slog.LevelInfo, 6}, {slog.LevelWarn, 4}, {slog.LevelError, 3}, {slog.LevelError + 4, 3},
	}
	for _, f := range Formats {
		o := Options{Format: f, Level: LevelTrace, Timestamp: true, ShowLevel: true, Target: true, Now: fixedNow}
		var plain bytes.Buffer
		want := New(&plain, o, "net")
		o.Priority = true
		// The default severity (notice) is one no level has.
		l := New(s.Stream(SeverityNotice), o, "net").With(ComponentKey, "http")
		want = want.With(ComponentKey, "http")
		for _, lv := range levels {
			plain.Reset()
			want.Log(context.Background(), lv.level, "request done", "status", 200, "user", "al\x1bice")
			l.Log(context.Background(), lv.level, "request done", "status", 200, "user", "al\x1bice")
			lines := strings.Split(strings.TrimSuffix(plain.String(), "\n"), "\n")
			if f == "pretty" && len(lines) != 3 {
				t.Fatalf("pretty: %q", plain.String())
			}
			for _, line := range lines {
				if got, want := srv.next(), msg(facDaemon*8+lv.sev, line); got != want {
					t.Errorf("%s %v: got  %q\nwant %q", f, lv.level, got, want)
				}
			}
		}
	}
	srv.none()
}
