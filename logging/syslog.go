package logging

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// Syslog severities (syslog(3), RFC 5424).
const (
	SeverityEmerg   = 0
	SeverityAlert   = 1
	SeverityCrit    = 2
	SeverityErr     = 3
	SeverityWarning = 4
	SeverityNotice  = 5
	SeverityInfo    = 6
	SeverityDebug   = 7
)

// Severity is the syslog severity of a level: error and above 3 (LOG_ERR),
// warn 4, info 6, debug and trace 7. Levels between the named ones take
// the severity of the one below them.
func Severity(l slog.Level) int {
	switch {
	case l >= slog.LevelError:
		return SeverityErr
	case l >= slog.LevelWarn:
		return SeverityWarning
	case l >= slog.LevelInfo:
		return SeverityInfo
	}
	return SeverityDebug
}

// SyslogPaths are where DialSyslog looks for the system logger when it is
// given no path: Linux and OpenBSD, macOS, FreeBSD.
var SyslogPaths = []string{"/dev/log", "/var/run/syslog", "/var/run/log"}

// Limits of what reaches the system logger.
const (
	// syslogMaxText is the most text one message carries, escapes and
	// the "…" of a cut included, so a datagram stays within the 8 KiB
	// that rsyslog and OpenBSD's syslogd take by default.
	syslogMaxText = 8000
	// syslogSmallMessage is what a message is cut to, whole, when the
	// socket refuses it as too big (EMSGSIZE: FreeBSD's
	// net.local.dgram.maxdgram may be as small as 2048): RFC 3164's size.
	syslogSmallMessage = 1024
	// syslogSendTimeout bounds how long a send waits for a full logger
	// (a journald that does not keep up). Once a send has given up,
	// the following ones do not wait at all until one goes through.
	syslogSendTimeout = 100 * time.Millisecond
	// syslogRedialEvery is how often an unreachable logger is dialled.
	syslogRedialEvery = time.Second
)

const ellipsis = "…"

// Syslog writes log lines to the local system logger over its unix
// socket, in the local format that syslog(3) uses:
//
//	<PRI>Mmm dd hh:mm:ss ident[pid]: text
//
// with PRI = facility*8 + severity, the time in time.Stamp form and the
// pid of this process, one message per datagram (on a stream socket, each
// followed by "\n"). It is the root parent's: children's lines reach it
// through Stream writers on the pipes it gave them, so no child needs a
// socket.
//
// When a send fails (the logger restarted: ECONNREFUSED, ENOTCONN, EPIPE,
// a socket file replaced), Syslog dials again at once, if the connection
// had delivered anything, and retries the line once; while the logger
// stays unreachable, lines are dropped and counted, and it is dialled at
// most once per second. The first message
// that gets through after a loss is preceded by a warning saying how many
// lines were lost. A full logger (EAGAIN, ENOBUFS) makes a send wait at
// most syslogSendTimeout, then lines are dropped and counted, without
// waiting, until one goes through again.
//
// A Syslog is safe for concurrent use.
type Syslog struct {
	networks []string // to try in turn
	paths    []string // to try in turn
	facility int
	ident    string
	pid      int
	now      func() time.Time // redial policy and timestamps; tests set it
	timeout  time.Duration

	mu        sync.Mutex
	conn      *net.UnixConn
	raw       syscall.RawConn
	stream    bool      // conn is a stream socket: messages end in "\n"
	proven    bool      // conn has delivered a message
	lastDial  time.Time // by now
	dials     int
	lost      uint64 // lines dropped since the last message delivered
	congested bool   // the last send found the logger full: do not wait
	closed    bool
	msg       []byte // scratch
}

// DialSyslog connects to the system logger at path ("": the first of
// SyslogPaths that answers) over network: "unixgram", "unix" (a stream),
// or "" for a datagram socket and, when the path is a stream socket, a
// stream. facility is a syslog facility code (0 to 23: config.SyslogFacilities) and ident the
// name every message carries, "imserious". The connection is made at
// once: an error names the path.
func DialSyslog(network, path string, facility int, ident string) (*Syslog, error) {
	return dialSyslog(network, path, facility, ident, time.Now)
}

func dialSyslog(network, path string, facility int, ident string, now func() time.Time) (*Syslog, error) {
	s := &Syslog{facility: facility, ident: ident, pid: os.Getpid(), now: now, timeout: syslogSendTimeout}
	switch network {
	case "":
		s.networks = []string{"unixgram", "unix"}
	case "unixgram", "unix":
		s.networks = []string{network}
	default:
		return nil, fmt.Errorf("logging: syslog: network %q (want unixgram, unix or \"\")", network)
	}
	s.paths = []string{path}
	if path == "" {
		s.paths = SyslogPaths
	}
	// 12 to 15 (ntp, security, console, solaris-cron) exist on some
	// systems only; the configuration offers none of them.
	if facility < 0 || facility > 23 || facility >= 12 && facility <= 15 {
		return nil, fmt.Errorf("logging: syslog: facility %d is not a syslog facility", facility)
	}
	if err := checkIdent(ident); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.dial(); err != nil {
		return nil, err
	}
	return s, nil
}

func checkIdent(ident string) error {
	if ident == "" || len(ident) > 64 {
		return fmt.Errorf("logging: syslog: ident %q: want 1 to 64 characters", ident)
	}
	for i := 0; i < len(ident); i++ {
		if c := ident[i]; c <= ' ' || c >= 0x7f || c == ':' || c == '[' || c == ']' {
			return fmt.Errorf("logging: syslog: ident %q: only printable ASCII, without spaces, ':', '[' or ']'", ident)
		}
	}
	return nil
}

// dial replaces the connection by a new one. s.mu is held.
func (s *Syslog) dial() error {
	s.closeConn()
	s.lastDial, s.proven, s.congested = s.now(), false, false
	s.dials++
	var first error
	for _, path := range s.paths {
		for _, network := range s.networks {
			c, err := net.DialUnix(network, nil, &net.UnixAddr{Name: path, Net: network})
			if err == nil {
				raw, err := c.SyscallConn()
				if err != nil {
					c.Close()
					return fmt.Errorf("logging: syslog: %s: %w", path, err)
				}
				s.conn, s.raw, s.stream, s.proven = c, raw, network == "unix", false
				return nil
			}
			// The datagram attempt's error is the one to show, unless
			// the path is a socket of the other type.
			if first == nil || errors.Is(first, syscall.EPROTOTYPE) {
				first = err
			}
		}
	}
	if len(s.paths) > 1 {
		return fmt.Errorf("logging: syslog: no system logger at %s: %w", strings.Join(s.paths, ", "), first)
	}
	return fmt.Errorf("logging: syslog: cannot connect to %s: %w", s.paths[0], first)
}

func (s *Syslog) closeConn() {
	if s.conn != nil {
		s.conn.Close()
		s.conn, s.raw = nil, nil
	}
}

// Close closes the connection. Lines written afterwards are dropped.
func (s *Syslog) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var err error
	if s.conn != nil {
		err = s.conn.Close()
		s.conn, s.raw = nil, nil
	}
	return err
}

type sendResult int

const (
	sent     sendResult = iota
	full                // the logger's queue is full: drop, keep the connection
	tooBig              // EMSGSIZE
	broken              // the connection is gone (and closed)
	noServer            // no connection, and no dial allowed or possible
)

// log sends one line, text already escaped and cut. It blocks for a few
// times s.timeout at most (the notice, the line, a retry).
func (s *Syslog) log(severity int, text []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	// One immediate retry on a new connection when the old one broke.
	for attempt := 0; attempt < 2; attempt++ {
		switch s.tryLog(severity, text) {
		case sent:
			return
		case broken:
			continue
		}
		break
	}
	s.lost++
}

// tryLog sends the lost-lines notice when one is owed, then the line.
func (s *Syslog) tryLog(severity int, text []byte) sendResult {
	if s.conn == nil {
		// A connection that delivered something earns an immediate
		// redial when it breaks; otherwise, once a second.
		if !s.proven && s.now().Sub(s.lastDial) < syslogRedialEvery {
			return noServer
		}
		if s.dial() != nil {
			return noServer
		}
	}
	if s.lost > 0 {
		word := "lines"
		if s.lost == 1 {
			word = "line"
		}
		notice := fmt.Appendf(nil, "imserious: %d log %s lost while syslog was unreachable", s.lost, word)
		if r := s.send(SeverityWarning, notice); r != sent {
			return r
		}
		s.lost = 0
	}
	r := s.send(severity, text)
	if r == tooBig && len(text) > 0 {
		// Cut to what any logger takes, and try once more.
		room := syslogSmallMessage - (len(s.msg) - len(text))
		if room > len(ellipsis) && room < len(text) {
			cut := room - len(ellipsis)
			for cut > 0 && !utf8.RuneStart(text[cut]) {
				cut--
			}
			r = s.send(severity, append(text[:cut:cut], ellipsis...))
		}
	}
	return r
}

// send writes one message on the connection. s.mu is held, s.conn set.
func (s *Syslog) send(severity int, text []byte) sendResult {
	m := s.msg[:0]
	m = append(m, '<')
	m = strconv.AppendInt(m, int64(s.facility*8+severity), 10)
	m = append(m, '>')
	m = s.now().AppendFormat(m, time.Stamp)
	m = append(m, ' ')
	m = append(m, s.ident...)
	m = append(m, '[')
	m = strconv.AppendInt(m, int64(s.pid), 10)
	m = append(m, ']', ':', ' ')
	m = append(m, text...)
	if s.stream {
		m = append(m, '\n')
	}
	s.msg = m

	if err := s.conn.SetWriteDeadline(time.Now().Add(s.timeout)); err != nil {
		s.closeConn()
		return broken
	}
	wait := !s.congested
	done := 0
	var werr error
	err := s.raw.Write(func(fd uintptr) bool {
		for {
			n, err := unix.Write(int(fd), m[done:])
			if n > 0 {
				done += n
			}
			switch {
			case err == unix.EINTR:
				continue
			case err == unix.EAGAIN:
				// Wait for room (up to the deadline), unless the logger
				// is known to be congested; but never leave half a
				// message on a stream.
				if wait || done > 0 {
					return false
				}
				werr = err
			case err != nil:
				werr = err
			case done < len(m):
				continue
			}
			return true
		}
	})
	if err == nil {
		err = werr
	}
	switch {
	case err == nil:
		s.proven, s.congested = true, false
		return sent
	case done > 0:
		// Part of a message on a stream: the next one would be glued
		// to it. Start afresh.
		s.closeConn()
		return broken
	case errors.Is(err, os.ErrDeadlineExceeded), err == unix.EAGAIN, err == unix.ENOBUFS:
		s.congested = true
		return full
	case err == unix.EMSGSIZE:
		return tooBig
	}
	s.closeConn()
	return broken
}

// Stream returns a writer for one stream of lines: a child's stdout or
// stderr, or the parent's own logger (New(stream, Options{Priority:
// true, ...}, "parent")). It cuts what is written into lines, and sends
// each one with the severity of its "<N>" prefix (N 0 to 7, removed from
// the text), or else defaultSeverity (a line that starts with a tab or
// four spaces takes the severity of the line before it, as the
// attribute lines of a pretty record or a panic's stack trace do). A
// prefix out of range ("<8>", "<27>") stays in the text: a line chooses
// its severity, never the facility.
//
// The text is untrusted, since a compromised child writes what it wants:
// control characters other than tab, invalid UTF-8 and other
// unprintable characters are escaped (\x1b, \u202e; a backslash is not,
// so that the handler's own escapes read as they are), and a line longer
// than 8000 bytes (as escaped) is sent in several messages, each but the
// last ending in "…", as soon as a piece is complete: a line without end
// is never held without bound, and how the line was cut into Writes does
// not change what is sent. Empty lines are skipped.
//
// Write never fails while the stream is open (lines the logger does not
// take are counted as lost), so a child's pipe is always drained. Close
// sends an unterminated last line. Each stream has its own buffer;
// streams are independent of one another.
func (s *Syslog) Stream(defaultSeverity int) io.WriteCloser {
	if defaultSeverity < SeverityEmerg || defaultSeverity > SeverityDebug {
		defaultSeverity = SeverityInfo
	}
	return &syslogStream{s: s, def: defaultSeverity, prev: -1}
}

// streamHold is how much of an unterminated line a stream keeps: once it
// has this much, a piece is certainly complete (escaping never shrinks a
// character, and the character at the cut is decoded whole).
const streamHold = syslogMaxText + utf8.UTFMax

type syslogStream struct {
	s   *Syslog
	def int

	mu      sync.Mutex
	pending []byte // the current line, not yet sent
	inLine  bool   // pieces of the current line were sent
	sev     int    // the current line's severity, once inLine
	prev    int    // the severity of the last line; -1: none yet
	closed  bool
	text    []byte // scratch
}

func (st *syslogStream) Write(p []byte) (int, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		return 0, os.ErrClosed
	}
	n := len(p)
	for len(p) > 0 {
		chunk := p
		if room := streamHold - len(st.pending); len(chunk) > room {
			chunk = chunk[:room]
		}
		if i := bytes.IndexByte(chunk, '\n'); i >= 0 {
			line := chunk[:i]
			if len(st.pending) > 0 {
				st.pending = append(st.pending, line...)
				line = st.pending
			}
			st.endLine(line)
			st.pending = st.pending[:0]
			p = p[i+1:]
			continue
		}
		st.pending = append(st.pending, chunk...)
		p = p[len(chunk):]
		for len(st.pending) >= streamHold {
			used := st.piece(st.pending, false)
			st.pending = st.pending[:copy(st.pending, st.pending[used:])]
		}
	}
	return n, nil
}

// Close sends what is left of an unterminated line. Writes after it fail.
func (st *syslogStream) Close() error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		return nil
	}
	st.closed = true
	if len(st.pending) > 0 {
		st.endLine(st.pending)
		st.pending = nil
	}
	return nil
}

// endLine sends the end of the current line, in pieces if need be.
func (st *syslogStream) endLine(line []byte) {
	if !st.inLine && len(line) == 0 {
		return // an empty line: nothing to send, and no severity to remember
	}
	for {
		used := st.piece(line, true)
		line = line[used:]
		if len(line) == 0 {
			break
		}
	}
	st.inLine = false
}

// piece sends the first piece of line (the rest of the current line when
// last) and returns how many bytes of it it used.
func (st *syslogStream) piece(line []byte, last bool) int {
	used := 0
	if !st.inLine {
		st.sev = -1
		if len(line) >= 3 && line[0] == '<' && line[1] >= '0' && line[1] <= '7' && line[2] == '>' {
			st.sev = int(line[1] - '0')
			used = 3
		} else if st.prev >= 0 && (bytes.HasPrefix(line, []byte("\t")) || bytes.HasPrefix(line, []byte("    "))) {
			st.sev = st.prev
		}
		if st.sev < 0 {
			st.sev = st.def
		}
		st.prev = st.sev
		st.inLine = true
	}
	text, n := appendSyslogText(st.text[:0], line[used:], syslogMaxText)
	st.text = text
	used += n
	if len(text) > 0 {
		st.s.log(st.sev, text)
	}
	if last && used == len(line) {
		st.inLine = false
	}
	return used
}

// appendSyslogText appends b escaped (see Stream), at most limit bytes of
// it: when b does not fit, as much as fits with "…", and reports how many
// bytes of b were used.
func appendSyslogText(dst, b []byte, limit int) ([]byte, int) {
	start := len(dst)
	cutAt, cutUsed := start, 0
	for i := 0; i < len(b); {
		if len(dst)-start <= limit-len(ellipsis) {
			cutAt, cutUsed = len(dst), i
		}
		r, size := utf8.DecodeRune(b[i:])
		switch {
		case r == utf8.RuneError && size == 1, r < utf8.RuneSelf && (r < ' ' && r != '\t' || r == 0x7f):
			dst = append(dst, '\\', 'x', hexDigits[b[i]>>4], hexDigits[b[i]&0xf])
		case r < utf8.RuneSelf || unicode.IsPrint(r):
			dst = append(dst, b[i:i+size]...)
		case r <= 0xffff:
			dst = appendU4(dst, r)
		default:
			dst = append(dst, '\\', 'U', '0', '0',
				hexDigits[r>>20&0xf], hexDigits[r>>16&0xf], hexDigits[r>>12&0xf],
				hexDigits[r>>8&0xf], hexDigits[r>>4&0xf], hexDigits[r&0xf])
		}
		if len(dst)-start > limit {
			return append(dst[:cutAt], ellipsis...), cutUsed
		}
		i += size
	}
	return dst, len(b)
}
