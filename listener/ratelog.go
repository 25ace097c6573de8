package listener

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"time"
)

// Limits of the warn lines about clients (refused connections, rejected
// requests): a hostile client decides how many such events there are, so
// without a limit it decides how much the daemon logs.
const (
	logEvery     = time.Minute // per key: at most one line this often
	logPerSecond = 10          // in all: at most this many lines a second
	// logKeys bounds the limiter's memory: more keys than logPerSecond
	// times logEvery are never needed, as only logged lines are kept.
	logKeys = 2 * logPerSecond * int(logEvery/time.Second)
)

// logKey is what makes two lines "the same" for the limiter: the message,
// a reason from a fixed set (never client bytes, which would make the
// keys the client's to choose) and the peer's address without its port,
// as a client has as many ports as it likes.
type logKey struct {
	msg, reason string
	addr        netip.Addr
}

// rateLog limits warn lines: one per key per logEvery, and logPerSecond
// in all. A line that is let through says how many were suppressed since
// the previous one of its key ("suppressed"), and how many lines of keys
// it kept no record of were dropped by the global cap ("suppressed_other"),
// so nothing is lost without a count.
type rateLog struct {
	log *slog.Logger
	now func() time.Time // time.Now; a fake clock in tests

	mu     sync.Mutex
	keys   map[logKey]*logEntry
	second time.Time // start of the current one-second window
	lines  int       // lines logged in that window
	other  int       // suppressed lines of keys not in keys
}

type logEntry struct {
	last       time.Time // when a line of this key was last logged
	suppressed int       // lines of this key suppressed since then
}

func newRateLog(log *slog.Logger, now func() time.Time) *rateLog {
	return &rateLog{log: log, now: now, keys: make(map[logKey]*logEntry)}
}

// warn logs msg with attrs at warn level, unless the limits suppress it.
// Only the limiter's state is locked, never the logging.
func (l *rateLog) warn(ctx context.Context, k logKey, attrs ...slog.Attr) {
	if !l.log.Enabled(ctx, slog.LevelWarn) {
		return
	}
	suppressed, other, ok := l.allow(k)
	if !ok {
		return
	}
	if suppressed > 0 {
		attrs = append(attrs, slog.Int("suppressed", suppressed))
	}
	if other > 0 {
		attrs = append(attrs, slog.Int("suppressed_other", other))
	}
	l.log.LogAttrs(ctx, slog.LevelWarn, k.msg, attrs...)
}

// allow reports whether a line of key k may be logged now and, if so, the
// counts it must carry.
func (l *rateLog) allow(k logKey) (suppressed, other int, ok bool) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.keys[k]
	if e != nil && now.Sub(e.last) < logEvery {
		e.suppressed++
		return 0, 0, false
	}
	if now.Sub(l.second) >= time.Second {
		l.second, l.lines = now, 0
	}
	if l.lines >= logPerSecond {
		if e != nil {
			e.suppressed++
		} else {
			l.other++
		}
		return 0, 0, false
	}
	l.lines++
	if e == nil {
		if len(l.keys) >= logKeys {
			l.prune(now)
		}
		e = &logEntry{}
		if len(l.keys) < logKeys {
			l.keys[k] = e
		}
		// Otherwise the line is logged unrecorded: the global cap still
		// bounds the rate, and a full map of fresh keys cannot happen at
		// logPerSecond (see logKeys).
	}
	suppressed, other = e.suppressed, l.other
	e.last, e.suppressed, l.other = now, 0, 0
	return suppressed, other, true
}

// prune forgets the keys whose last line is logEvery old: their next line
// is let through anyway. Their suppressed counts move to other so the next
// line logged still reports them.
func (l *rateLog) prune(now time.Time) {
	for k, e := range l.keys {
		if now.Sub(e.last) >= logEvery {
			l.other += e.suppressed
			delete(l.keys, k)
		}
	}
}
