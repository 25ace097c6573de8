//go:build linux

package bench

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"maps"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imserious/imserious/internal/daemontest"
)

// server is a process under measurement: the imserious parent (with its
// children) or the bare server.
type server struct {
	name    string
	cmd     *exec.Cmd
	addr    string
	startup time.Duration // from exec to the line saying it listens
	log     *logWatch
	exited  chan struct{}
	kids    map[int]string
	stopped bool
}

// startDaemon starts the daemon under test on conf and waits for its
// "listening" line.
func startDaemon(t *testing.T, name, conf string) *server {
	t.Helper()
	cmd := daemontest.Command(t, "-c", daemontest.WriteConfig(t, conf))
	return start(t, "imserious "+name, cmd, "parent: listening addr=")
}

// startBare starts the bare server, over TLS when certFile is set, with
// the flags in extra ("-forward").
func startBare(t *testing.T, bin, name, certFile, keyFile string, extra ...string) *server {
	t.Helper()
	args := []string{"-listen", "127.0.0.1:0"}
	if certFile != "" {
		args = append(args, "-cert", certFile, "-key", keyFile)
	}
	args = append(args, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	daemontest.DieWithParent(cmd)
	return start(t, "bare "+name, cmd, "listening ")
}

func start(t *testing.T, name string, cmd *exec.Cmd, ready string) *server {
	t.Helper()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	s := &server{name: name, cmd: cmd, exited: make(chan struct{})}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	s.log = watch(out, ready)
	go func() {
		<-s.log.eof // Wait closes the pipe: only once all of it was read
		cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(func() { s.stop(t) })
	select {
	case s.addr = <-s.log.ready:
		s.startup = time.Since(t0)
	case <-s.log.eof:
		t.Fatalf("%s exited before listening:\n%s", name, s.log.Tail())
	case <-time.After(daemontest.WaitLimit):
		t.Fatalf("%s not listening within %v:\n%s", name, daemontest.WaitLimit, s.log.Tail())
	}
	// Its children exist now: none may outlive the run.
	s.kids = daemontest.Descendants(cmd.Process.Pid)
	return s
}

// stop ends the server and everything below it.
func (s *server) stop(t *testing.T) {
	if s.stopped {
		return
	}
	s.stopped = true
	daemontest.StopTree(t, s.name, s.cmd, s.exited, s.kids, daemontest.StopLimit)
}

// pids are the server's process and its children as they were once it
// listened: for imserious its parent, network and exec processes, for
// the bare server with -forward the process it forwards to.
func (s *server) pids() []int {
	return append([]int{s.cmd.Process.Pid}, slices.Sorted(maps.Keys(s.kids))...)
}

// procs are the pids of a daemon's parent, network process and its one
// exec process (0 for the bare server's children).
type procs struct{ parent, net, exec int }

func (s *server) procs(t *testing.T) procs {
	t.Helper()
	p := procs{parent: s.cmd.Process.Pid}
	for role, c := range daemontest.Children(t, p.parent) {
		switch {
		case role == "net":
			p.net = c.Pid
		case strings.HasPrefix(role, "exec:"):
			if p.exec != 0 {
				t.Fatalf("%s: more than one exec process", s.name)
			}
			p.exec = c.Pid
		}
	}
	return p
}

func (p procs) all() []int {
	var out []int
	for _, pid := range []int{p.parent, p.net, p.exec} {
		if pid != 0 {
			out = append(out, pid)
		}
	}
	return out
}

// clockTick is the unit of the times in /proc/PID/stat: USER_HZ, 100 on
// every Linux the daemon supports.
const clockTick = 10 * time.Millisecond

// cpuTime returns the CPU time process pid has used, user and system,
// with that of its children it has waited for (for an exec process: its
// commands).
func cpuTime(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	// After the name: state is field 3, utime 14 ... cstime 17.
	var ticks int64
	for _, i := range []int{14, 15, 16, 17} {
		n, err := strconv.ParseInt(f[i-3], 10, 64)
		if err != nil {
			t.Fatalf("/proc/%d/stat: field %d: %v", pid, i, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * clockTick
}

// selfCPU is the CPU time this process (the load generator, and the
// reader of the servers' logs) has used, user and system.
func selfCPU(t *testing.T) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// perRequest is a throughput cell's CPU column: the server's and the
// client's CPU time per request, in microseconds.
func perRequest(server, client time.Duration, requests int) string {
	us := func(d time.Duration) float64 { return float64(d) / float64(requests) / 1e3 }
	return fmt.Sprintf("%.0f+%.0fµs", us(server), us(client))
}

func cpuTimes(t *testing.T, pids []int) []time.Duration {
	out := make([]time.Duration, len(pids))
	for i, pid := range pids {
		out[i] = cpuTime(t, pid)
	}
	return out
}

// rss returns the resident memory of process pid in bytes.
func rss(t *testing.T, pid int) int {
	t.Helper()
	kb, ok := daemontest.Status(pid, "VmRSS")
	if !ok {
		t.Fatalf("no VmRSS for process %d", pid)
	}
	return kb << 10
}

// mem is the memory of a process, or of processes together, in bytes:
// resident (VmRSS) and proportional (PSS: each page shared between
// processes counted for its share; see daemontest.PSS).
type mem struct{ rss, pss int }

func memOf(pid int) mem {
	r, _ := daemontest.Status(pid, "VmRSS")
	p, _ := daemontest.PSS(pid)
	return mem{r << 10, p << 10}
}

func (m mem) plus(o mem) mem { return mem{m.rss + o.rss, m.pss + o.pss} }
func (m mem) max(o mem) mem  { return mem{max(m.rss, o.rss), max(m.pss, o.pss)} }

// rssSampler keeps the largest memory of each process, and of their sum,
// while the load runs.
type rssSampler struct {
	pids []int
	stop chan struct{}
	done chan struct{}
	max  []mem
	sum  mem
}

func sampleRSS(pids []int) *rssSampler {
	r := &rssSampler{pids: pids, stop: make(chan struct{}), done: make(chan struct{}), max: make([]mem, len(pids))}
	go func() {
		defer close(r.done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			var sum mem
			for i, pid := range r.pids {
				m := memOf(pid)
				r.max[i] = r.max[i].max(m)
				sum = sum.plus(m)
			}
			r.sum = r.sum.max(sum)
			select {
			case <-r.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return r
}

func (r *rssSampler) end() {
	close(r.stop)
	<-r.done
}

// logWatch reads a server's output as it comes: it waits for the line
// saying it listens, counts the lines the measurements need, and keeps
// the last ones for a failure's message. Everything else is dropped
// unread, as a service manager's journal would take it.
type logWatch struct {
	ready chan string // the listening address, once
	eof   chan struct{}

	mu      sync.Mutex
	tail    []string
	counts  map[string]int
	changed chan struct{}  // closed and replaced when counts change
	started chan run       // every "command started", when wanted
	exited  map[string]int // "command exited" lines by user
	ran     int            // users in exited
	retried int            // "command exited" lines of recovery runs
	busiest int            // the most commands started and not exited
	last    time.Time      // when a counted line was last read
}

// run is one "command started" line: the user, and the time it shows
// it was logged at (zero unless the daemon logs with timestamp = true).
type run struct {
	user string
	at   time.Time
}

// Lines the watch counts, by the message they contain.
const (
	msgStarted  = "command started"
	msgExited   = "command exited"
	msgNotTaken = "exec process not taking events"
)

func watch(r io.Reader, ready string) *logWatch {
	w := &logWatch{ready: make(chan string, 1), eof: make(chan struct{}), counts: map[string]int{},
		changed: make(chan struct{}), started: make(chan run, 1<<16), exited: map[string]int{}}
	go func() {
		defer close(w.eof)
		br := bufio.NewReaderSize(r, 64<<10)
		sentReady := false
		for {
			line, err := br.ReadSlice('\n')
			if len(line) > 0 {
				w.line(line, ready, &sentReady)
			}
			if err == bufio.ErrBufferFull {
				continue
			}
			if err != nil {
				return
			}
		}
	}()
	return w
}

func (w *logWatch) line(line []byte, ready string, sentReady *bool) {
	var kind, user string
	switch {
	case bytes.Contains(line, []byte(msgStarted)):
		kind = msgStarted
		if u, ok := field(line, "user="); ok {
			select {
			case w.started <- run{user: u, at: loggedAt(line)}:
			default:
			}
		}
	case bytes.Contains(line, []byte(msgExited)):
		kind = msgExited
		user, _ = field(line, "user=")
	case bytes.Contains(line, []byte(msgNotTaken)):
		kind = msgNotTaken
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.tail) >= 200 {
		w.tail = w.tail[1:]
	}
	w.tail = append(w.tail, string(bytes.TrimRight(line, "\n")))
	if !*sentReady {
		if i := bytes.Index(line, []byte(ready)); i >= 0 {
			addr, _, _ := strings.Cut(strings.TrimSpace(string(line[i+len(ready):])), " ")
			w.ready <- addr
			*sentReady = true
		}
	}
	if user != "" {
		if w.exited[user] == 0 {
			w.ran++
		}
		w.exited[user]++
		if bytes.Contains(line, []byte(" trigger=recovery ")) {
			w.retried++
		}
	}
	if kind != "" {
		w.last = time.Now()
		w.counts[kind]++
		w.busiest = max(w.busiest, w.counts[msgStarted]-w.counts[msgExited])
		close(w.changed)
		w.changed = make(chan struct{})
	}
}

// stampLayout is the time a line of the full format begins with when
// [log] timestamp = true.
const stampLayout = "2006-01-02T15:04:05.000000Z"

// loggedAt is the time line shows it was logged at, or zero. The time a
// line is read would not do: the exec process may write a line up to a
// millisecond after logging it (logging.Queued paces its writes).
func loggedAt(line []byte) time.Time {
	if len(line) > len(stampLayout) {
		if at, err := time.Parse(stampLayout, string(line[:len(stampLayout)])); err == nil {
			return at
		}
	}
	return time.Time{}
}

// field returns the value of key (which ends in "=") in a line of the
// daemon's full log format.
func field(line []byte, key string) (string, bool) {
	i := bytes.Index(line, []byte(" "+key))
	if i < 0 {
		return "", false
	}
	v := line[i+1+len(key):]
	if j := bytes.IndexAny(v, " \n"); j >= 0 {
		v = v[:j]
	}
	return string(v), true
}

// Count returns how many lines of kind were read.
func (w *logWatch) Count(kind string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.counts[kind]
}

// WaitCount waits until at least n lines of kind were read.
func (w *logWatch) WaitCount(t *testing.T, name, kind string, n int) {
	t.Helper()
	deadline := time.NewTimer(daemontest.WaitLimit)
	defer deadline.Stop()
	for {
		w.mu.Lock()
		got, changed := w.counts[kind], w.changed
		w.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-changed:
		case <-w.eof:
			t.Fatalf("%s: output ended with %d %q lines, want %d", name, got, kind, n)
		case <-deadline.C:
			t.Fatalf("%s: %d %q lines within %v, want %d:\n%s", name, got, kind, daemontest.WaitLimit, n, w.Tail())
		}
	}
}

// Ran returns how many of users have had a "command exited" line (their
// command ran, whatever its status).
func (w *logWatch) Ran(users []string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, u := range users {
		if w.exited[u] > 0 {
			n++
		}
	}
	return n
}

// Users returns how many users have had a "command exited" line, how
// many of those lines were of recovery runs, and the most commands that
// were running at once (started, not yet exited).
func (w *logWatch) Users() (ran, recoveries, busiest int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ran, w.retried, w.busiest
}

// Quiet returns how long ago the last counted line was read.
func (w *logWatch) Quiet() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return time.Since(w.last)
}

// Until waits, for at most limit, until cond holds: it is evaluated
// again each time a counted line is read, and every 100 ms. cond may call
// the watch's methods; what says what is awaited, for the failure's
// message.
func (w *logWatch) Until(t *testing.T, name, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		w.mu.Lock()
		changed := w.changed
		w.mu.Unlock()
		if cond() {
			return
		}
		select {
		case <-changed:
		case <-tick.C:
		case <-w.eof:
			t.Fatalf("%s: output ended before %s", name, what)
		case <-deadline.C:
			t.Fatalf("%s: not %s within %v:\n%s", name, what, limit, w.Tail())
		}
	}
}

// WaitStarted waits for the "command started" line of user, skipping
// others, and returns the time it shows (zero if it shows none).
func (w *logWatch) WaitStarted(t *testing.T, name, user string) time.Time {
	t.Helper()
	deadline := time.NewTimer(daemontest.WaitLimit)
	defer deadline.Stop()
	for {
		select {
		case r := <-w.started:
			if r.user == user {
				return r.at
			}
		case <-w.eof:
			t.Fatalf("%s: output ended before %s's command started", name, user)
		case <-deadline.C:
			t.Fatalf("%s: %s's command not started within %v:\n%s", name, user, daemontest.WaitLimit, w.Tail())
		}
	}
}

// Tail returns the last lines read.
func (w *logWatch) Tail() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.tail, "\n")
}

// keyPair is a self-signed certificate for 127.0.0.1, in files both
// servers load, and a client configuration that trusts it.
type keyPair struct {
	name      string
	certFile  string
	keyFile   string
	clientTLS *tls.Config
}

// newKeyPair makes an ECDSA P-256 (rsa false) or RSA-2048 certificate.
func newKeyPair(t *testing.T, name string, useRSA bool) keyPair {
	t.Helper()
	var (
		pub, priv any
		err       error
	)
	if useRSA {
		var k *rsa.PrivateKey
		k, err = rsa.GenerateKey(rand.Reader, 2048)
		pub, priv = &k.PublicKey, k
	} else {
		var k *ecdsa.PrivateKey
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		pub, priv = &k.PublicKey, k
	}
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "imserious bench " + name},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(30 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	kp := keyPair{name: name, certFile: filepath.Join(dir, "cert.pem"), keyFile: filepath.Join(dir, "key.pem")}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := os.WriteFile(kp.certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kp.keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(certPEM)
	// No ClientSessionCache: every new connection is a full handshake,
	// as from a new dovecot-lda process.
	kp.clientTLS = &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	return kp
}

// buildBare returns the bare server's binary: $IMSERIOUS_BARE_BIN, or
// one built now from bench/cmd/imserious-bare (without cgo, as the
// daemon).
func buildBare(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("IMSERIOUS_BARE_BIN"); p != "" {
		abs, err := filepath.Abs(p)
		if err != nil {
			t.Fatal(err)
		}
		return abs
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("no go command to build the bare server: %v (or set IMSERIOUS_BARE_BIN)", err)
	}
	bin := filepath.Join(t.TempDir(), "imserious-bare")
	cmd := exec.Command(goBin, "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "github.com/imserious/imserious/bench/cmd/imserious-bare")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the bare server: %v\n%s", err, out)
	}
	return bin
}
