package tlsreload

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/imserious/imserious/clock"
)

// DefaultDebounce is how long the files must stay quiet after a change
// before they are read: certbot, acme-client and cp write the certificate
// and the key one after the other, and each write is several events.
const DefaultDebounce = 250 * time.Millisecond

// Options configure a Reloader.
type Options struct {
	Cert, Key string        // absolute paths
	Periodic  time.Duration // also reload this often; 0: never
	Debounce  time.Duration // quiet time after a change; 0: DefaultDebounce
	Log       *slog.Logger  // nil: discard
	Clock     clock.Clock   // drives the debounce and periodic timers; nil: clock.System
}

// Reloader is the parent's side: it holds the pair being served and reads
// the files again when either changes (seen by watching the directories
// of the files and of every symbolic link leading to them), every
// Options.Periodic, and when Reload is called. A pair that does not load
// is logged and the previous one kept; a pair identical to the current
// one is not sent.
type Reloader struct {
	o     Options
	log   *slog.Logger
	clock clock.Clock
	w     *fsnotify.Watcher // nil when not watching (tests)
	cur   atomic.Pointer[Pair]
	kick  chan string // Reload requests; one pending is enough
	close sync.Once

	// Owned by New, then by Run's goroutine.
	deps     map[string]bool   // paths whose change matters
	dirs     map[string]fileID // directories watched, and what they were
	lastWarn time.Time         // last expiry warning, for unchanged pairs

	// Test hooks, called on Run's goroutine.
	onEvent  func(fsnotify.Event)
	onReload func(reason string, sent bool, err error)
}

// fileID identifies a directory independently of its name: a watch
// follows the directory, not the name, so a name that now means another
// directory must be watched again.
type fileID struct{ dev, ino uint64 }

// New loads the pair, failing if it does not load (a start-up failure is
// fatal), and starts watching the files. Call Run to act on changes, or
// Close to give up.
func New(o Options) (*Reloader, error) {
	return newReloader(o, true)
}

func newReloader(o Options, watch bool) (*Reloader, error) {
	if o.Debounce <= 0 {
		o.Debounce = DefaultDebounce
	}
	r := &Reloader{o: o, log: o.Log, clock: o.Clock, kick: make(chan string, 1), dirs: map[string]fileID{}}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.clock == nil {
		r.clock = clock.System
	}
	if watch {
		w, err := fsnotify.NewWatcher()
		if err != nil {
			return nil, fmt.Errorf("watch %s and %s: %w", o.Cert, o.Key, err)
		}
		r.w = w
	}
	// Watch first, then read: a change in between is then not missed.
	r.rewatch()
	p, err := Load(o.Cert, o.Key)
	if err != nil {
		r.Close()
		return nil, err
	}
	r.cur.Store(p)
	r.log.Info("TLS certificate loaded", p.LogAttrs()...)
	r.checkExpiry(p, true)
	return r, nil
}

// Current returns the pair being served.
func (r *Reloader) Current() *Pair { return r.cur.Load() }

// Reload asks Run to read the files now, without debounce; reason is
// logged. It does not wait, and requests made while one is pending are
// merged into it.
func (r *Reloader) Reload(reason string) {
	select {
	case r.kick <- reason:
	default:
	}
}

// Close stops watching. Run calls it when it returns.
func (r *Reloader) Close() error {
	var err error
	r.close.Do(func() {
		if r.w != nil {
			err = r.w.Close()
		}
	})
	return err
}

// Run acts on changes until ctx ends: each new pair is passed to send,
// which hands it to the network process; if send fails the pair does not
// become current, so the next trigger tries again.
func (r *Reloader) Run(ctx context.Context, send func(*Pair) error) error {
	defer r.Close()
	var (
		events <-chan fsnotify.Event
		errs   <-chan error
	)
	if r.w != nil {
		events, errs = r.w.Events, r.w.Errors
	}
	// Timer callbacks run on their own goroutines and hand over here. A
	// debounce callback carries its generation: one that lost a race
	// with Stop is recognised as stale and ignored.
	debounced := make(chan uint64)
	periodic := make(chan struct{})
	var (
		debounce clock.Timer
		gen      uint64
		tick     clock.Timer
	)
	defer func() {
		if debounce != nil {
			debounce.Stop()
		}
		if tick != nil {
			tick.Stop()
		}
	}()
	armPeriodic := func() {
		if r.o.Periodic > 0 {
			tick = r.clock.AfterFunc(r.o.Periodic, func() {
				select {
				case periodic <- struct{}{}:
				case <-ctx.Done():
				}
			})
		}
	}
	armDebounce := func() {
		if debounce != nil {
			debounce.Stop()
		}
		gen++
		g := gen
		debounce = r.clock.AfterFunc(r.o.Debounce, func() {
			select {
			case debounced <- g:
			case <-ctx.Done():
			}
		})
	}
	armPeriodic()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
			if !ok {
				events = nil
				r.log.Error("file watcher stopped; TLS files are now reloaded only periodically and on SIGHUP")
				continue
			}
			if r.onEvent != nil {
				r.onEvent(ev)
			}
			if r.relevant(ev.Name) {
				r.log.Debug("TLS file changed", "path", ev.Name, "op", ev.Op.String())
				armDebounce()
			}
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				// Events were lost, maybe ours: read the files to be sure.
				r.log.Warn("file watcher overflowed, reading the TLS files again", "err", err)
				armDebounce()
				continue
			}
			r.log.Warn("file watcher error", "err", err)
		case g := <-debounced:
			if g == gen {
				debounce = nil
				r.reload("file change", send)
			}
		case reason := <-r.kick:
			r.reload(reason, send)
		case <-periodic:
			r.reload("periodic", send)
			armPeriodic()
		}
	}
}

// relevant says whether a change to name can change the pair: a link or
// file on the way to either file, or a watched directory itself (renamed
// or removed, which ends its watch).
func (r *Reloader) relevant(name string) bool {
	name = filepath.Clean(name)
	_, dir := r.dirs[name]
	return dir || r.deps[name]
}

func (r *Reloader) reload(reason string, send func(*Pair) error) {
	// Links may point elsewhere now: watch where they lead before reading,
	// so a change made while reading is seen.
	r.rewatch()
	p, err := Load(r.o.Cert, r.o.Key)
	if err != nil {
		r.log.Warn("TLS reload failed, still serving the previous certificate", "reason", reason, "err", err)
		r.hook(reason, false, err)
		return
	}
	if p.Equal(r.cur.Load()) {
		r.log.Debug("TLS files unchanged", "reason", reason)
		// Repeated reloads of the same certificate (a short
		// periodic_reload) warn about its expiry once a day only.
		r.checkExpiry(p, reason != "periodic" && reason != "file change")
		r.hook(reason, false, nil)
		return
	}
	if err := send(p); err != nil {
		err = fmt.Errorf("send to the network process: %w", err)
		r.log.Error("TLS reload failed, still serving the previous certificate", "reason", reason, "err", err)
		r.hook(reason, false, err)
		return
	}
	r.cur.Store(p)
	r.log.Info("TLS certificate reloaded", append([]any{"reason", reason}, p.LogAttrs()...)...)
	r.checkExpiry(p, true)
	r.hook(reason, true, nil)
}

func (r *Reloader) hook(reason string, sent bool, err error) {
	if r.onReload != nil {
		r.onReload(reason, sent, err)
	}
}

// checkExpiry warns about a certificate that expires within WarnBefore or
// has expired. Unless always, it stays silent if it warned in the last day.
func (r *Reloader) checkExpiry(p *Pair, always bool) {
	now := r.clock.Now()
	left := p.Remaining(now)
	if left > WarnBefore {
		return
	}
	if !always && !r.lastWarn.IsZero() && now.Sub(r.lastWarn) < 24*time.Hour {
		return
	}
	r.lastWarn = now
	attrs := []any{"not_after", p.Leaf.NotAfter.UTC(), "subject", p.Leaf.Subject.String(), "cert", p.CertFile}
	if left <= 0 {
		r.log.Error("TLS certificate has expired", append(attrs, "expired", Approx(-left)+" ago")...)
		return
	}
	r.log.Warn("TLS certificate expires soon", append(attrs, "left", Approx(left))...)
}

// rewatch resolves both paths again and watches the directories that
// matter now: the directory of each file and of each link on the way to
// it. A directory whose name now means another directory (it was renamed
// or replaced) is watched afresh.
func (r *Reloader) rewatch() {
	deps := map[string]bool{}
	want := map[string]bool{}
	for _, f := range []string{r.o.Cert, r.o.Key} {
		_, ds, _ := resolve(f) // a missing file is Load's to report
		for _, d := range ds {
			deps[d] = true
			want[filepath.Dir(d)] = true
		}
	}
	r.deps = deps
	if r.w == nil {
		return
	}
	watched := r.w.WatchList()
	for dir := range r.dirs {
		if !want[dir] {
			r.unwatch(dir, watched)
		}
	}
	for _, dir := range slices.Sorted(maps.Keys(want)) {
		id, err := dirID(dir)
		if err != nil {
			// Gone for now; its parent is watched if it was a link's
			// target, and the next reload looks again.
			r.unwatch(dir, watched)
			r.log.Debug("cannot watch directory", "dir", dir, "err", err)
			continue
		}
		if old, ok := r.dirs[dir]; ok && old == id && slices.Contains(watched, dir) {
			continue
		}
		r.unwatch(dir, watched)
		if err := r.w.Add(dir); err != nil {
			r.log.Warn("cannot watch directory; changes there are seen only by periodic reloads and SIGHUP", "dir", dir, "err", err)
			continue
		}
		r.dirs[dir] = id
		r.log.Debug("watching directory", "dir", dir)
	}
}

func (r *Reloader) unwatch(dir string, watched []string) {
	delete(r.dirs, dir)
	if slices.Contains(watched, dir) {
		_ = r.w.Remove(dir) // may be gone already, with its watch
	}
}

func dirID(dir string) (fileID, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return fileID{}, err
	}
	if !fi.IsDir() {
		return fileID{}, fmt.Errorf("%s: not a directory", dir)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, fmt.Errorf("%s: no inode information", dir)
	}
	return fileID{uint64(st.Dev), uint64(st.Ino)}, nil
}
