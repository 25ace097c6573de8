// Package logging owns the daemon's log output: a log/slog handler that
// writes one whole line per record (every process shares one stdout), names
// the process that wrote it, and escapes untrusted values so that a log
// line can be neither split nor forged; the choice of level from the
// configuration, -d and IMSERIOUS_LOG; and the Limiter that keeps repeated
// lines from flooding the log.
package logging

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"strings"
)

// LevelTrace is below slog.LevelDebug, for what the original logged at
// tracing's TRACE level.
const LevelTrace = slog.Level(-8)

// LevelOff is above every level: nothing is logged. It is what "off" (a
// tracing LevelFilter spelling the original accepted) parses to.
const LevelOff = slog.Level(math.MaxInt32)

// ErrLevel is wrapped by the errors of ParseLevel and EffectiveLevel.
var ErrLevel = errors.New("unknown log level")

// ParseLevel parses a level name case-insensitively: error, warn, info,
// debug, trace, and off.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "error":
		return slog.LevelError, nil
	case "warn":
		return slog.LevelWarn, nil
	case "info":
		return slog.LevelInfo, nil
	case "debug":
		return slog.LevelDebug, nil
	case "trace":
		return LevelTrace, nil
	case "off":
		return LevelOff, nil
	}
	return 0, fmt.Errorf("%w %q (want error, warn, info, debug, trace or off)", ErrLevel, s)
}

// EnvVars are the environment variables that override the configured
// level, in order of precedence: the canonical name, then the alias.
var EnvVars = []string{"IMSERIOUS_LOG", "IMSERIOUSLOG"}

// EffectiveLevel decides the level of the whole daemon. IMSERIOUS_LOG
// overrides everything (then its alias IMSERIOUSLOG); else -d gives debug
// (or trace, when the configuration already asks for it: -d never makes
// the log quieter); else the configuration's max_level, "" meaning info.
// getenv is os.Getenv when nil.
//
// The variable accepts a level name, or, for compatibility with the
// original's tracing EnvFilter, comma-separated directives such as
// "warn,imserious=debug": a directive for the "imserious" target (or one of
// its modules, "imserious::handler") wins over a bare level, and
// directives for other targets (hyper, tower_http, ...) are ignored since
// those libraries are not part of this daemon. A value with no directive
// that applies is an error.
func EffectiveLevel(configured string, debugFlag bool, getenv func(string) string) (slog.Level, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	for _, name := range EnvVars {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			l, err := parseFilter(v)
			if err != nil {
				return 0, fmt.Errorf("logging: %s=%q: %w", name, v, err)
			}
			return l, nil
		}
	}
	l := slog.LevelInfo
	if configured != "" {
		var err error
		if l, err = ParseLevel(configured); err != nil {
			return 0, fmt.Errorf("logging: max_level: %w", err)
		}
	}
	if debugFlag && l > slog.LevelDebug {
		l = slog.LevelDebug
	}
	return l, nil
}

// parseFilter reads the subset of tracing-subscriber's EnvFilter syntax
// that means something here; see EffectiveLevel.
func parseFilter(v string) (slog.Level, error) {
	var (
		bare, targeted       slog.Level
		haveBare, haveTarget bool
	)
	for d := range strings.SplitSeq(v, ",") {
		d = strings.TrimSpace(d)
		if d == "" {
			continue
		}
		target, lvl, hasEq := cutLast(d, '=')
		if !hasEq {
			// A bare word is a level, or else a target enabled at trace.
			if l, err := filterLevel(d); err == nil {
				bare, haveBare = l, true
				continue
			}
			target, lvl = d, "trace"
		}
		if i := strings.IndexAny(target, "[{"); i >= 0 {
			target = target[:i] // span and field filters: not supported, apply to all
		}
		if target != "imserious" && !strings.HasPrefix(target, "imserious::") {
			continue
		}
		l, err := filterLevel(lvl)
		if err != nil {
			return 0, err
		}
		// Several directives for our modules: the most verbose wins, so
		// nothing the operator asked to see is hidden.
		if !haveTarget || l < targeted {
			targeted = l
		}
		haveTarget = true
	}
	switch {
	case haveTarget:
		return targeted, nil
	case haveBare:
		return bare, nil
	}
	return 0, fmt.Errorf("%w: no directive for imserious (want a level: error, warn, info, debug, trace or off)", ErrLevel)
}

// filterLevel is ParseLevel plus tracing's numeric spellings (0 off,
// 1 error ... 5 trace).
func filterLevel(s string) (slog.Level, error) {
	switch strings.TrimSpace(s) {
	case "0":
		return LevelOff, nil
	case "1":
		return slog.LevelError, nil
	case "2":
		return slog.LevelWarn, nil
	case "3":
		return slog.LevelInfo, nil
	case "4":
		return slog.LevelDebug, nil
	case "5":
		return LevelTrace, nil
	}
	return ParseLevel(s)
}

func cutLast(s string, sep byte) (before, after string, found bool) {
	if i := strings.LastIndexByte(s, sep); i >= 0 {
		return s[:i], s[i+1:], true
	}
	return s, "", false
}

// levelName is the word a record's level is shown as: TRACE below DEBUG,
// with an offset for levels between the named ones ("DEBUG+1").
func levelName(l slog.Level) string {
	if l < slog.LevelDebug {
		if l == LevelTrace {
			return "TRACE"
		}
		return fmt.Sprintf("TRACE%+d", int(l-LevelTrace))
	}
	return l.String()
}
