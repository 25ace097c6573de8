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
	"unicode"
)

// LevelTrace is below slog.LevelDebug, for what the original logged at
// tracing's TRACE level.
const LevelTrace = slog.Level(-8)

// LevelOff is above every level: nothing is logged. It is what "off" (a
// tracing LevelFilter spelling the original accepted) parses to.
const LevelOff = slog.Level(math.MaxInt32)

// ErrLevel is wrapped by the errors of ParseLevel, EffectiveLevel and
// EffectiveLevelNote.
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

// EffectiveLevel decides the level of the whole daemon; see
// EffectiveLevelNote, which also says what of IMSERIOUS_LOG it ignored.
func EffectiveLevel(configured string, debugFlag bool, getenv func(string) string) (slog.Level, error) {
	l, _, err := EffectiveLevelNote(configured, debugFlag, getenv)
	return l, err
}

// EffectiveLevelNote decides the level of the whole daemon. IMSERIOUS_LOG
// overrides everything (or, when it is unset or blank, its alias
// IMSERIOUSLOG); else -d gives debug (or trace, when the configuration
// already asks for it: -d never makes the log quieter); else the
// configuration's max_level, "" meaning info. getenv is os.Getenv when nil.
//
// The variable accepts a level name, or, for compatibility with the
// original's tracing EnvFilter, comma-separated directives such as
// "warn,imserious=debug": a directive for the "imserious" target (or one of
// its modules, "imserious::handler") wins over a bare level, and
// directives for other targets (hyper, tower_http, ...) are ignored since
// those libraries are not part of this daemon. A value whose directives
// are all for other targets sets nothing, and the level is decided as if
// the variable were unset. Whenever directives were ignored, note is one
// line saying which, for the caller to log:
//
//	IMSERIOUS_LOG: directives for other targets ignored (hyper=debug); using max_level "info"
//
// A directive that does not parse (a bad level, a target that cannot be
// one, a bare word one letter from a level name) is an error, not
// ignored: it is a typo, and the operator would otherwise not see the
// level they asked for.
func EffectiveLevelNote(configured string, debugFlag bool, getenv func(string) string) (level slog.Level, note string, err error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	var ignored []string
	used := ""
	for _, name := range EnvVars {
		v := strings.TrimSpace(getenv(name))
		if v == "" {
			continue
		}
		l, ok, others, err := parseFilter(v)
		if err != nil {
			return 0, "", fmt.Errorf("logging: %s=%q: %w", name, v, err)
		}
		if ok {
			if len(others) > 0 {
				note = fmt.Sprintf("%s: directives for other targets ignored (%s)", name, strings.Join(others, ","))
			}
			return l, note, nil
		}
		used, ignored = name, others
		break // the first variable set is the one read, even if it says nothing for us
	}
	l := slog.LevelInfo
	if configured != "" {
		if l, err = ParseLevel(configured); err != nil {
			return 0, "", fmt.Errorf("logging: max_level: %w", err)
		}
	}
	from := fmt.Sprintf("max_level %q", strings.ToLower(strings.TrimSpace(configured)))
	if configured == "" {
		from = `max_level "info" (the default)`
	}
	if debugFlag && l > slog.LevelDebug {
		l = slog.LevelDebug
		from = "-d (debug)"
	}
	if used != "" {
		note = fmt.Sprintf("%s: directives for other targets ignored (%s); using %s", used, strings.Join(ignored, ","), from)
	}
	return l, note, nil
}

// parseFilter reads the subset of tracing-subscriber's EnvFilter syntax
// that means something here; see EffectiveLevelNote. ok is false when no
// directive applies to this daemon; others are the directives, as
// written, that were ignored for naming other targets.
func parseFilter(v string) (level slog.Level, ok bool, others []string, err error) {
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
			// A bare word is a level, or else a target enabled at trace;
			// but one a letter or two from a level name is a typo.
			if l, err := filterLevel(d); err == nil {
				bare, haveBare = l, true
				continue
			}
			if near := nearLevel(d); near != "" {
				return 0, false, nil, fmt.Errorf("%w %q (did you mean %q?)", ErrLevel, d, near)
			}
			target, lvl = d, "trace"
		}
		l, err := filterLevel(lvl)
		if err != nil {
			return 0, false, nil, err
		}
		if i := strings.IndexAny(target, "[{"); i >= 0 {
			target = target[:i] // span and field filters: not supported, apply to all
		}
		if !validTarget(target) {
			return 0, false, nil, fmt.Errorf("%w: %q is not a directive (want a level, or TARGET=LEVEL)", ErrLevel, d)
		}
		if target != "imserious" && !strings.HasPrefix(target, "imserious::") {
			others = append(others, d)
			continue
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
		return targeted, true, others, nil
	case haveBare:
		return bare, true, others, nil
	}
	return 0, false, others, nil
}

// validTarget reports whether s can be a tracing target: word characters,
// "::" and "-" (EnvFilter's [\w:-]+), or nothing before a span filter.
func validTarget(s string) bool {
	for _, r := range s {
		if !(unicode.IsLetter(r) || unicode.IsDigit(r) || r == '_' || r == ':' || r == '-') {
			return false
		}
	}
	return true
}

// nearLevel returns the level name s is a likely typo of ("debgu",
// "warning", "information"), or "": one edit from a short name, two from
// a longer one, or the name with more after it.
func nearLevel(s string) string {
	s = strings.ToLower(s)
	for _, name := range []string{"error", "warn", "info", "debug", "trace", "off"} {
		limit := 1
		if len(name) > 4 {
			limit = 2
		}
		if editDistance(s, name) <= limit || strings.HasPrefix(s, name) {
			return name
		}
	}
	return ""
}

// editDistance counts insertions, deletions, substitutions and swaps of
// adjacent bytes; s is a short word from the environment, capped anyway.
func editDistance(a, b string) int {
	if len(a) > 32 || len(b) > 32 {
		return 1 << 30
	}
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
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
