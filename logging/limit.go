package logging

import (
	"container/list"
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/imserious/imserious/clock"
)

// Bounds of every Limiter.
const (
	// LimitKeys is how many keys a Limiter remembers; the least recently
	// seen is forgotten first.
	LimitKeys = 4096
	// LimitTotal is how many times burst lines all keys of a Limiter may
	// log together per window: distinct keys are what a flood forges.
	LimitTotal = 10
	// SuppressedKey is the attribute Limiter.Log adds to a line allowed
	// after others were held back: how many.
	SuppressedKey = "suppressed"

	// maxKeyLen bounds what a key costs, as keys come from untrusted
	// input (a user name in a forged event). Longer keys are cut, so keys
	// sharing their first maxKeyLen bytes share their limit.
	maxKeyLen = 256
)

// Limiter bounds repeated log lines (spec §8): a client, or a compromised
// network process sending 100,000 forged events, must not be able to make
// the log grow without bound, nor the memory that limits it.
//
// Each key may log burst lines per window of every, a window starting
// with the first line after the previous one ended; all keys together may
// log LimitTotal×burst lines per window; at most LimitKeys keys are
// remembered. The zero Limiter is not usable: make one with NewLimiter.
// It is safe for concurrent use.
//
// Security: this is what keeps the log bounded against whoever can cause
// the lines it limits; the per-key limit alone would let every forged
// key log once.
type Limiter struct {
	every        time.Duration
	burst, total int
	maxKeys      int
	clk          clock.Clock

	mu   sync.Mutex
	keys map[string]*list.Element // value: *limitKey
	lru  list.List                // front: most recently seen
	all  window                   // every key together
	lost int                      // lines held back for keys since forgotten
}

// window counts the lines allowed since start.
type window struct {
	start time.Time
	n     int
}

// room opens a new window when the last one has ended (or none began)
// and reports whether it has room for another line.
func (w *window) room(now time.Time, every time.Duration, limit int) bool {
	if w.start.IsZero() || now.Sub(w.start) >= every || now.Before(w.start) {
		w.start, w.n = now, 0
	}
	return w.n < limit
}

type limitKey struct {
	key        string
	w          window
	suppressed int // lines held back since the last one allowed
}

// NewLimiter returns a Limiter letting each key log burst lines per every.
// clk is clock.System when nil. It panics when every is not positive or
// burst is below 1, which are mistakes in the calling code.
func NewLimiter(every time.Duration, burst int, clk clock.Clock) *Limiter {
	return newLimiter(every, burst, LimitTotal*burst, LimitKeys, clk)
}

// NewLimiterTotal is NewLimiter with the cap on all keys together set to
// total lines per every instead of LimitTotal×burst, for lines an operator
// wants to see for many keys (one per user), still bounded.
func NewLimiterTotal(every time.Duration, burst, total int, clk clock.Clock) *Limiter {
	return newLimiter(every, burst, total, LimitKeys, clk)
}

func newLimiter(every time.Duration, burst, total, maxKeys int, clk clock.Clock) *Limiter {
	if every <= 0 || burst < 1 || total < 1 || maxKeys < 1 {
		panic("logging: NewLimiter: every must be positive and burst at least 1")
	}
	if clk == nil {
		clk = clock.System
	}
	return &Limiter{every: every, burst: burst, total: total, maxKeys: maxKeys, clk: clk,
		keys: make(map[string]*list.Element)}
}

// Allow reports whether a line for key may be logged now. When it may and
// lines were held back before it, suppressed says how many: those of this
// key since its last allowed line, plus those of keys forgotten since, as
// under a flood of distinct keys their count would otherwise vanish from
// the log. When ok is false, suppressed is 0.
func (l *Limiter) Allow(key string) (ok bool, suppressed int) {
	now := l.clk.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	k := l.entry(key)
	// Both limits are checked before either is spent, so a line refused
	// by one does not use up the other.
	if !k.w.room(now, l.every, l.burst) || !l.all.room(now, l.every, l.total) {
		k.suppressed++
		return false, 0
	}
	k.w.n++
	l.all.n++
	suppressed = k.suppressed + l.lost
	k.suppressed, l.lost = 0, 0
	return true, suppressed
}

// entry finds or makes key's state, marking it the most recently seen and
// forgetting the least recently seen one when there are too many. l.mu
// must be held.
func (l *Limiter) entry(key string) *limitKey {
	if len(key) > maxKeyLen {
		key = key[:maxKeyLen]
	}
	if e, ok := l.keys[key]; ok {
		l.lru.MoveToFront(e)
		return e.Value.(*limitKey)
	}
	if l.lru.Len() >= l.maxKeys {
		old := l.lru.Back()
		gone := l.lru.Remove(old).(*limitKey)
		delete(l.keys, gone.key)
		l.lost += gone.suppressed
	}
	// A copy: a key cut from a large string must not keep it alive.
	k := &limitKey{key: strings.Clone(key)}
	l.keys[k.key] = l.lru.PushFront(k)
	return k
}

// Log writes a record to log when the level is enabled and Allow(key)
// lets it, adding SuppressedKey when lines were held back before it, and
// reports whether it wrote. args are slog's key-value pairs.
func (l *Limiter) Log(ctx context.Context, log *slog.Logger, level slog.Level, key, msg string, args ...any) bool {
	if !log.Enabled(ctx, level) {
		return false
	}
	ok, n := l.Allow(key)
	if !ok {
		return false
	}
	if n > 0 {
		args = append(args[:len(args):len(args)], SuppressedKey, n)
	}
	log.Log(ctx, level, msg, args...)
	return true
}
