package tlsreload

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/imserious/imserious/clock/clocktest"
	"github.com/imserious/imserious/tlsreload/tlstest"
)

// lockedBuffer collects log output written from Run's goroutine.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type reloadResult struct {
	reason string
	sent   bool
	err    error
}

// harness runs a Reloader on real files with a fake clock.
type harness struct {
	t       *testing.T
	clock   *clocktest.Clock
	r       *Reloader
	log     *lockedBuffer
	sent    chan *Pair
	reloads chan reloadResult
	events  chan fsnotify.Event
	sendErr chan error // errors for send to return, one per call; empty: nil
	cancel  context.CancelFunc
	done    chan error
}

const debounce = 250 * time.Millisecond

func newHarness(t *testing.T, cert, key string, periodic time.Duration, watch bool) *harness {
	t.Helper()
	h := &harness{
		// Asynchronous, like time.AfterFunc: each due callback runs on its
		// own goroutine, as the Reloader's timers do. Real time as the
		// start: the test certificates are valid from an hour ago for 90
		// days.
		t: t, clock: clocktest.NewAsync(time.Now()), log: &lockedBuffer{},
		sent:    make(chan *Pair, 100),
		reloads: make(chan reloadResult, 1000),
		events:  make(chan fsnotify.Event, 10000),
		sendErr: make(chan error, 10),
		done:    make(chan error, 1),
	}
	log := slog.New(slog.NewTextHandler(h.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r, err := newReloader(Options{Cert: cert, Key: key, Periodic: periodic, Debounce: debounce, Log: log, Clock: h.clock}, watch)
	if err != nil {
		t.Fatal(err)
	}
	h.r = r
	r.onEvent = func(ev fsnotify.Event) { h.events <- ev }
	r.onReload = func(reason string, sent bool, err error) { h.reloads <- reloadResult{reason, sent, err} }
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() {
		h.done <- r.Run(ctx, func(p *Pair) error {
			select {
			case err := <-h.sendErr:
				return err
			default:
			}
			h.sent <- p
			return nil
		})
	}()
	t.Cleanup(func() {
		h.stop()
		if t.Failed() {
			t.Logf("reloader log:\n%s", h.log)
		}
	})
	return h
}

// stop ends Run and waits for it; nothing is sent or reloaded after.
func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	select {
	case <-h.done:
	case <-time.After(10 * time.Second):
		h.t.Fatal("Run did not return after its context ended")
	}
}

// waitSent waits for want to be sent, moving the clock past the debounce
// each time the Reloader arms it. Pairs that do not load are not sent, so
// a file caught half-replaced only costs one more round; any other pair
// sent on the way fails the test.
func (h *harness) waitSent(want *tlstest.Leaf) *Pair {
	h.t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case p := <-h.sent:
			if p.Leaf.SerialNumber.Cmp(want.Cert.SerialNumber) != 0 {
				h.t.Fatalf("sent serial %s, want %s", p.Serial(), want.Cert.SerialNumber.Text(16))
			}
			// Current is updated after send returns, before the hook.
			for r := h.waitReload(); !r.sent; r = h.waitReload() {
			}
			if cur := h.r.Current(); !cur.Equal(p) {
				h.t.Fatalf("sent pair is not Current")
			}
			return p
		case <-h.clock.Armed():
			h.clock.Advance(debounce)
		case <-deadline:
			h.t.Fatalf("serial %s not sent within 20s", want.Cert.SerialNumber.Text(16))
		}
	}
}

// waitEvent waits until the watcher reported an event for name.
func (h *harness) waitEvent(name string) {
	h.t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case ev := <-h.events:
			if ev.Name == name {
				return
			}
		case <-deadline:
			h.t.Fatalf("no event for %s within 20s", name)
		}
	}
}

func (h *harness) waitReload() reloadResult {
	h.t.Helper()
	select {
	case r := <-h.reloads:
		return r
	case <-time.After(20 * time.Second):
		h.t.Fatal("no reload within 20s")
		return reloadResult{}
	}
}

// style is one way operators and tools replace certificate files: setup
// installs the first pair and returns the paths the configuration names;
// replace installs another pair, the n-th replacement.
type style struct {
	name    string
	setup   func(t *testing.T, dir string, l *tlstest.Leaf) (cert, key string)
	replace func(t *testing.T, dir string, l *tlstest.Leaf, n int)
}

var styles = []style{
	{
		name: "overwrite in place (cp)",
		setup: func(t *testing.T, dir string, l *tlstest.Leaf) (string, string) {
			c, k := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
			l.Write(t, c, k)
			return c, k
		},
		replace: func(t *testing.T, dir string, l *tlstest.Leaf, n int) {
			l.Write(t, filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
		},
	},
	{
		name: "editor save by rename",
		setup: func(t *testing.T, dir string, l *tlstest.Leaf) (string, string) {
			c, k := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
			l.Write(t, c, k)
			return c, k
		},
		replace: func(t *testing.T, dir string, l *tlstest.Leaf, n int) {
			tlstest.WriteAtomic(t, filepath.Join(dir, "cert.pem"), l.CertPEM, 0o644)
			tlstest.WriteAtomic(t, filepath.Join(dir, "key.pem"), l.KeyPEM, 0o600)
		},
	},
	{
		name: "editor backup then new file (vim)",
		setup: func(t *testing.T, dir string, l *tlstest.Leaf) (string, string) {
			c, k := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
			l.Write(t, c, k)
			return c, k
		},
		replace: func(t *testing.T, dir string, l *tlstest.Leaf, n int) {
			for _, f := range []struct {
				name string
				data []byte
				mode os.FileMode
			}{{"cert.pem", l.CertPEM, 0o644}, {"key.pem", l.KeyPEM, 0o600}} {
				p := filepath.Join(dir, f.name)
				tlstest.Rename(t, p, p+"~")
				tlstest.WriteFile(t, p, f.data, f.mode)
				if err := os.Remove(p + "~"); err != nil {
					t.Fatal(err)
				}
			}
		},
	},
	{
		name: "mv over from another directory",
		setup: func(t *testing.T, dir string, l *tlstest.Leaf) (string, string) {
			c, k := filepath.Join(dir, "etc", "cert.pem"), filepath.Join(dir, "etc", "key.pem")
			l.Write(t, c, k)
			return c, k
		},
		replace: func(t *testing.T, dir string, l *tlstest.Leaf, n int) {
			stage := filepath.Join(dir, fmt.Sprintf("stage%d", n))
			l.Write(t, filepath.Join(stage, "cert.pem"), filepath.Join(stage, "key.pem"))
			for _, f := range []string{"cert.pem", "key.pem"} {
				tlstest.Rename(t, filepath.Join(stage, f), filepath.Join(dir, "etc", f))
			}
		},
	},
	{
		// certbot: live/NAME/*.pem are relative links into
		// archive/NAME/*N.pem; a renewal writes the next N and repoints
		// the links one by one.
		name: "certbot live links into archive",
		setup: func(t *testing.T, dir string, l *tlstest.Leaf) (string, string) {
			arch, live := filepath.Join(dir, "archive", "example.org"), filepath.Join(dir, "live", "example.org")
			l.Write(t, filepath.Join(arch, "fullchain1.pem"), filepath.Join(arch, "privkey1.pem"))
			if err := os.MkdirAll(live, 0o755); err != nil {
				t.Fatal(err)
			}
			tlstest.Symlink(t, "../../archive/example.org/fullchain1.pem", filepath.Join(live, "fullchain.pem"))
			tlstest.Symlink(t, "../../archive/example.org/privkey1.pem", filepath.Join(live, "privkey.pem"))
			return filepath.Join(live, "fullchain.pem"), filepath.Join(live, "privkey.pem")
		},
		replace: func(t *testing.T, dir string, l *tlstest.Leaf, n int) {
			arch, live := filepath.Join(dir, "archive", "example.org"), filepath.Join(dir, "live", "example.org")
			c, k := fmt.Sprintf("fullchain%d.pem", n+1), fmt.Sprintf("privkey%d.pem", n+1)
			l.Write(t, filepath.Join(arch, c), filepath.Join(arch, k))
			tlstest.ReplaceLink(t, "../../archive/example.org/"+c, filepath.Join(live, "fullchain.pem"))
			// Older certbot: unlink, then link.
			if err := os.Remove(filepath.Join(live, "privkey.pem")); err != nil {
				t.Fatal(err)
			}
			tlstest.Symlink(t, "../../archive/example.org/"+k, filepath.Join(live, "privkey.pem"))
		},
	},
	{
		// Kubernetes secret volume: tls.crt -> ..data/tls.crt, ..data ->
		// ..TIMESTAMP; an update writes a new timestamped directory, swaps
		// ..data by rename and removes the old directory.
		name: "kubernetes ..data swap",
		setup: func(t *testing.T, dir string, l *tlstest.Leaf) (string, string) {
			l.Write(t, filepath.Join(dir, "..ts0", "tls.crt"), filepath.Join(dir, "..ts0", "tls.key"))
			tlstest.Symlink(t, "..ts0", filepath.Join(dir, "..data"))
			tlstest.Symlink(t, "..data/tls.crt", filepath.Join(dir, "tls.crt"))
			tlstest.Symlink(t, "..data/tls.key", filepath.Join(dir, "tls.key"))
			return filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
		},
		replace: func(t *testing.T, dir string, l *tlstest.Leaf, n int) {
			ts := fmt.Sprintf("..ts%d", n)
			l.Write(t, filepath.Join(dir, ts, "tls.crt"), filepath.Join(dir, ts, "tls.key"))
			tlstest.ReplaceLink(t, ts, filepath.Join(dir, "..data"))
			if err := os.RemoveAll(filepath.Join(dir, fmt.Sprintf("..ts%d", n-1))); err != nil {
				t.Fatal(err)
			}
		},
	},
	{
		// The whole directory replaced by a rename: the watched directory
		// itself moves away.
		name: "directory renamed over",
		setup: func(t *testing.T, dir string, l *tlstest.Leaf) (string, string) {
			c, k := filepath.Join(dir, "tls", "cert.pem"), filepath.Join(dir, "tls", "key.pem")
			l.Write(t, c, k)
			return c, k
		},
		replace: func(t *testing.T, dir string, l *tlstest.Leaf, n int) {
			next := filepath.Join(dir, fmt.Sprintf("tls.%d", n))
			l.Write(t, filepath.Join(next, "cert.pem"), filepath.Join(next, "key.pem"))
			tlstest.Rename(t, filepath.Join(dir, "tls"), filepath.Join(dir, fmt.Sprintf("tls.old%d", n)))
			tlstest.Rename(t, next, filepath.Join(dir, "tls"))
		},
	},
}

// TestWatchStyles replaces the files twice in each style: the watcher
// alone (no periodic reload, no request) must pick up each new pair, and
// only new pairs are sent.
func TestWatchStyles(t *testing.T) {
	ca := tlstest.NewCA(t)
	for _, s := range styles {
		t.Run(s.name, func(t *testing.T) {
			dir := t.TempDir()
			a, b, c := ca.Issue(t, tlstest.Options{}), ca.Issue(t, tlstest.Options{}), ca.Issue(t, tlstest.Options{})
			cert, key := s.setup(t, dir, a)
			h := newHarness(t, cert, key, 0, true)
			if h.r.Current().Leaf.SerialNumber.Cmp(a.Cert.SerialNumber) != 0 {
				t.Fatalf("initial pair is not A")
			}
			s.replace(t, dir, b, 1)
			h.waitSent(b)
			// Again: the watches must follow the new links and directories.
			s.replace(t, dir, c, 2)
			h.waitSent(c)
			h.stop()
			if len(h.sent) != 0 {
				t.Errorf("%d more pairs sent after the last replacement", len(h.sent))
			}
			for len(h.reloads) > 0 {
				if r := <-h.reloads; r.reason != "file change" {
					t.Errorf("reload for %q: the watcher alone should have acted", r.reason)
				}
			}
		})
	}
}

// TestDebounceLoadsOnce: a certificate and key written one after the
// other, each several events, are read once, after the debounce.
func TestDebounceLoadsOnce(t *testing.T) {
	ca := tlstest.NewCA(t)
	a, b := ca.Issue(t, tlstest.Options{}), ca.Issue(t, tlstest.Options{})
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	a.Write(t, cert, key)
	h := newHarness(t, cert, key, 0, true)

	b.Write(t, cert, key)
	// A file nobody cares about, written last: one inotify queue delivers
	// events in order, so once its event is in, so are all the pair's.
	sentinel := filepath.Join(dir, "sentinel")
	tlstest.WriteFile(t, sentinel, nil, 0o644)
	h.waitEvent(sentinel)
	if len(h.reloads) != 0 {
		t.Fatalf("reloaded before the debounce elapsed: %+v", <-h.reloads)
	}
	h.clock.Advance(debounce - time.Millisecond)
	h.clock.Advance(time.Millisecond)
	if r := h.waitReload(); !r.sent || r.err != nil || r.reason != "file change" {
		t.Fatalf("reload: %+v", r)
	}
	p := <-h.sent
	if p.Leaf.SerialNumber.Cmp(b.Cert.SerialNumber) != 0 {
		t.Errorf("sent serial %s, want B", p.Serial())
	}
	h.stop()
	if n := len(h.reloads); n != 0 {
		t.Errorf("%d more reloads: the writes were not debounced into one", n)
	}
}

// TestNoChangeNoSend: reloads that find the same bytes send nothing.
func TestNoChangeNoSend(t *testing.T) {
	a := tlstest.NewCA(t).Issue(t, tlstest.Options{})
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	a.Write(t, cert, key)
	h := newHarness(t, cert, key, time.Hour, true)

	h.r.Reload("SIGHUP")
	if r := h.waitReload(); r.sent || r.err != nil || r.reason != "SIGHUP" {
		t.Errorf("SIGHUP reload of unchanged files: %+v", r)
	}
	// The same bytes written again: events, one reload, nothing sent. The
	// sentinel's event comes after all of the pair's.
	a.Write(t, cert, key)
	sentinel := filepath.Join(dir, "sentinel")
	tlstest.WriteFile(t, sentinel, nil, 0o644)
	h.waitEvent(sentinel)
	h.clock.Advance(debounce)
	if r := h.waitReload(); r.sent || r.err != nil || r.reason != "file change" {
		t.Errorf("reload after rewriting the same bytes: %+v", r)
	}
	h.clock.Advance(time.Hour)
	if r := h.waitReload(); r.sent || r.err != nil || r.reason != "periodic" {
		t.Errorf("periodic reload of unchanged files: %+v", r)
	}
	h.stop()
	if len(h.sent) != 0 {
		t.Errorf("unchanged files were sent %d times", len(h.sent))
	}
	if !strings.Contains(h.log.String(), "TLS files unchanged") {
		t.Errorf("unchanged reloads not logged")
	}
}

// TestPeriodicOnly: with no watcher at all, periodic_reload alone picks up
// a change, and keeps doing so.
func TestPeriodicOnly(t *testing.T) {
	ca := tlstest.NewCA(t)
	a, b, c := ca.Issue(t, tlstest.Options{}), ca.Issue(t, tlstest.Options{}), ca.Issue(t, tlstest.Options{})
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	a.Write(t, cert, key)
	h := newHarness(t, cert, key, time.Hour, false)
	<-h.clock.Armed() // the periodic timer

	b.Write(t, cert, key)
	h.clock.Advance(time.Hour - time.Second)
	h.r.Reload("probe") // a request is handled in order: no periodic run came first
	if r := h.waitReload(); r.reason != "probe" {
		t.Fatalf("reload %+v before the period elapsed", r)
	}
	if p := <-h.sent; p.Leaf.SerialNumber.Cmp(b.Cert.SerialNumber) != 0 {
		t.Fatalf("probe sent %s", p.Serial())
	}
	c.Write(t, cert, key)
	h.clock.Advance(time.Second)
	if r := h.waitReload(); !r.sent || r.reason != "periodic" {
		t.Fatalf("periodic reload: %+v", r)
	}
	if p := <-h.sent; p.Leaf.SerialNumber.Cmp(c.Cert.SerialNumber) != 0 {
		t.Fatalf("periodic reload sent %s, want C", p.Serial())
	}
	// The next period is armed again.
	a.Write(t, cert, key)
	<-h.clock.Armed()
	h.clock.Advance(time.Hour)
	if r := h.waitReload(); !r.sent || r.reason != "periodic" {
		t.Fatalf("second periodic reload: %+v", r)
	}
}

// TestBadPairKeepsCurrent: what does not load is logged with the reason
// and nothing is sent; the next good pair is picked up.
func TestBadPairKeepsCurrent(t *testing.T) {
	ca := tlstest.NewCA(t)
	a, b, c := ca.Issue(t, tlstest.Options{}), ca.Issue(t, tlstest.Options{}), ca.Issue(t, tlstest.Options{})
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	a.Write(t, cert, key)
	h := newHarness(t, cert, key, 0, false)

	for _, bad := range []struct {
		name  string
		write func()
		msg   string
	}{
		{"garbage key", func() { tlstest.WriteFile(t, key, []byte("garbage"), 0o600) }, "key " + key + ": no PRIVATE KEY block"},
		{"mismatched key", func() { tlstest.WriteFile(t, key, b.KeyPEM, 0o600) }, "does not match the certificate " + cert},
		{"half-written cert", func() { tlstest.WriteFile(t, cert, b.CertPEM[:len(b.CertPEM)/2], 0o644) }, "incomplete or damaged"},
		{"missing cert", func() { os.Remove(cert) }, "no such file or directory"},
		{"directory as cert", func() { os.Remove(cert); os.Mkdir(cert, 0o755) }, "not a regular file"},
	} {
		bad.write()
		h.r.Reload(bad.name)
		r := h.waitReload()
		if r.sent || r.err == nil || !strings.Contains(r.err.Error(), bad.msg) {
			t.Errorf("%s: reload %+v, want an error with %q", bad.name, r, bad.msg)
		}
		if h.r.Current().Leaf.SerialNumber.Cmp(a.Cert.SerialNumber) != 0 {
			t.Errorf("%s: current pair changed", bad.name)
		}
		if !strings.Contains(h.log.String(), bad.msg) {
			t.Errorf("%s: reason %q not logged", bad.name, bad.msg)
		}
		os.Remove(cert)
		a.Write(t, cert, key)
	}
	c.Write(t, cert, key)
	h.r.Reload("fixed")
	if r := h.waitReload(); !r.sent || r.err != nil {
		t.Fatalf("good pair after bad ones: %+v", r)
	}
	if p := <-h.sent; p.Leaf.SerialNumber.Cmp(c.Cert.SerialNumber) != 0 {
		t.Errorf("sent %s, want C", p.Serial())
	}
	if !strings.Contains(h.log.String(), "still serving the previous certificate") {
		t.Errorf("failures not logged as keeping the old pair:\n%s", h.log)
	}
}

// TestSendFailure: a pair the network process did not get is not current,
// so the next reload sends it again.
func TestSendFailure(t *testing.T) {
	ca := tlstest.NewCA(t)
	a, b := ca.Issue(t, tlstest.Options{}), ca.Issue(t, tlstest.Options{})
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	a.Write(t, cert, key)
	h := newHarness(t, cert, key, 0, false)
	b.Write(t, cert, key)
	h.sendErr <- errors.New("channel closed")
	h.r.Reload("first")
	if r := h.waitReload(); r.sent || r.err == nil || !strings.Contains(r.err.Error(), "channel closed") {
		t.Fatalf("failed send: %+v", r)
	}
	if h.r.Current().Leaf.SerialNumber.Cmp(a.Cert.SerialNumber) != 0 {
		t.Fatalf("a pair that was not sent became current")
	}
	h.r.Reload("second")
	if r := h.waitReload(); !r.sent {
		t.Fatalf("retry: %+v", r)
	}
	if p := <-h.sent; p.Leaf.SerialNumber.Cmp(b.Cert.SerialNumber) != 0 {
		t.Errorf("retry sent %s", p.Serial())
	}
}

func TestNewFailsOnBadPair(t *testing.T) {
	ca := tlstest.NewCA(t)
	a, b := ca.Issue(t, tlstest.Options{}), ca.Issue(t, tlstest.Options{})
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if _, err := New(Options{Cert: cert, Key: key}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("New with no files: %v", err)
	}
	tlstest.WriteFile(t, cert, a.CertPEM, 0o644)
	tlstest.WriteFile(t, key, b.KeyPEM, 0o600)
	var me *MismatchError
	if _, err := New(Options{Cert: cert, Key: key}); !errors.As(err, &me) {
		t.Errorf("New with a mismatched pair: %v", err)
	}
}

// TestExpiryWarnings: a certificate within WarnBefore of its end is warned
// about when loaded and at every reload; an unchanged one on the watcher's
// or the period's account at most once a day.
func TestExpiryWarnings(t *testing.T) {
	ca := tlstest.NewCA(t)
	soon := ca.Issue(t, tlstest.Options{NotAfter: time.Now().Add(5 * 24 * time.Hour)})
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	soon.Write(t, cert, key)
	h := newHarness(t, cert, key, time.Hour, false)
	count := func() int { return strings.Count(h.log.String(), "TLS certificate expires soon") }
	if count() != 1 || !strings.Contains(h.log.String(), "left=\"4 days 23 hours\"") {
		t.Fatalf("no expiry warning at start:\n%s", h.log)
	}
	h.r.Reload("SIGHUP")
	h.waitReload()
	if count() != 2 {
		t.Errorf("no expiry warning at a requested reload")
	}
	<-h.clock.Armed()
	h.clock.Advance(time.Hour)
	h.waitReload()
	if count() != 2 {
		t.Errorf("periodic reload of the same pair warned again within a day")
	}
	for range 23 { // a day since the last warning
		<-h.clock.Armed()
		h.clock.Advance(time.Hour)
		h.waitReload()
	}
	if count() != 3 {
		t.Errorf("%d warnings, want a third a day later", count())
	}

	// Expired, and loaded fresh: an error.
	old := ca.Issue(t, tlstest.Options{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	old.Write(t, cert, key)
	h.r.Reload("SIGHUP")
	if r := h.waitReload(); !r.sent {
		t.Fatalf("an expired certificate is still served rather than nothing: %+v", r)
	}
	if !strings.Contains(h.log.String(), "level=ERROR msg=\"TLS certificate has expired\"") {
		t.Errorf("expired certificate not logged as an error:\n%s", h.log)
	}
}

func TestResolve(t *testing.T) {
	dir := t.TempDir()
	tlstest.WriteFile(t, filepath.Join(dir, "real", "f"), nil, 0o644)
	tlstest.Symlink(t, "real", filepath.Join(dir, "dirlink"))
	tlstest.Symlink(t, "dirlink/f", filepath.Join(dir, "flink"))
	tlstest.Symlink(t, filepath.Join(dir, "flink"), filepath.Join(dir, "abslink"))
	tlstest.Symlink(t, "loop2", filepath.Join(dir, "loop1"))
	tlstest.Symlink(t, "loop1", filepath.Join(dir, "loop2"))
	real := filepath.Join(dir, "real", "f")
	for _, c := range []struct {
		name  string
		final string
		deps  []string
		err   string
	}{
		{"real/f", real, []string{real}, ""},
		{"real/../real/./f", real, []string{real}, ""},
		{"abslink", real, []string{filepath.Join(dir, "abslink"), filepath.Join(dir, "flink"), filepath.Join(dir, "dirlink"), real}, ""},
		{"dirlink/f", real, []string{filepath.Join(dir, "dirlink"), real}, ""},
		{"dirlink/missing", "", []string{filepath.Join(dir, "dirlink"), filepath.Join(dir, "real", "missing")}, "no such file"},
		{"loop1", "", nil, "symbolic links"},
	} {
		final, deps, err := resolve(filepath.Join(dir, c.name))
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: error %v, want %q", c.name, err, c.err)
			}
			if c.deps != nil && !slices.Equal(deps, c.deps) {
				t.Errorf("%s: deps %q, want %q", c.name, deps, c.deps)
			}
			continue
		}
		if err != nil || final != c.final || !slices.Equal(deps, c.deps) {
			t.Errorf("%s: %q %q %v, want %q %q", c.name, final, deps, err, c.final, c.deps)
		}
	}
	if _, _, err := resolve("relative/path"); err == nil {
		t.Errorf("resolve accepted a relative path")
	}
}

// TestRewatchAfterUnseenChange: a directory above the watched one is
// replaced, which no watch reports; after a requested reload the new
// directory is the one watched, so the next change is seen.
func TestRewatchAfterUnseenChange(t *testing.T) {
	ca := tlstest.NewCA(t)
	a, b, c := ca.Issue(t, tlstest.Options{}), ca.Issue(t, tlstest.Options{}), ca.Issue(t, tlstest.Options{})
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "base", "tls", "cert.pem"), filepath.Join(dir, "base", "tls", "key.pem")
	a.Write(t, cert, key)
	h := newHarness(t, cert, key, 0, true)

	b.Write(t, filepath.Join(dir, "next", "tls", "cert.pem"), filepath.Join(dir, "next", "tls", "key.pem"))
	tlstest.Rename(t, filepath.Join(dir, "base"), filepath.Join(dir, "old"))
	tlstest.Rename(t, filepath.Join(dir, "next"), filepath.Join(dir, "base"))
	h.r.Reload("SIGHUP")
	if r := h.waitReload(); !r.sent || r.reason != "SIGHUP" {
		t.Fatalf("reload: %+v", r)
	}
	<-h.sent
	c.Write(t, cert, key)
	h.waitSent(c)
}
