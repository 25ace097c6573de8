package config

import (
	"errors"
	"path"
	"strings"
)

// Wildcard handlers (spec §2, §4): a handler's user may be a glob, and its
// run_as may name the account through Dovecot's own variables. These are
// the rules every process applies, written once: the parent to decide
// whether an account may get an exec process, the network process to
// route, the exec process to check what it is sent.

// IsUserPattern reports whether a handler's user is a glob rather than a
// name matched exactly: it has one of path.Match's metacharacters.
func IsUserPattern(user string) bool {
	return strings.ContainsAny(user, `*?[\`)
}

// ValidUserPattern reports whether pattern is a glob path.Match accepts.
func ValidUserPattern(pattern string) bool {
	// path.Match checks the syntax of the rest of the pattern once the
	// name is consumed, so matching against "" validates all of it.
	_, err := path.Match(pattern, "")
	return err == nil
}

// MatchUser reports whether an event's user is for a handler written for
// pattern: equal when pattern is a plain name, by path.Match otherwise
// (no case folding either way). A '*' does not cross a '/', which no
// Dovecot user name holds in practice. A malformed pattern matches
// nothing; Parse refuses one.
func MatchUser(pattern, user string) bool {
	if !IsUserPattern(pattern) {
		return pattern == user
	}
	ok, err := path.Match(pattern, user)
	return ok && err == nil
}

// HasRunAsVars reports whether run_as uses %-variables.
func HasRunAsVars(runAs string) bool {
	return strings.Contains(runAs, "%")
}

// ErrRunAsVar is wrapped by ExpandRunAs for a '%' that is not one of
// %u, %n, %d or %%.
var ErrRunAsVar = errors.New("unknown variable: run_as knows %u (the Dovecot user), %n (the part before @), %d (the domain) and %% (a %)")

// ExpandRunAs replaces the variables of run_as for an event's user, as
// Dovecot expands its own: %u the user, %n the part before the first '@'
// (the whole user when there is none), %d the part after it ("" when
// there is none), %% a '%'. Nothing is case-folded.
func ExpandRunAs(runAs, user string) (string, error) {
	if !HasRunAsVars(runAs) {
		return runAs, nil
	}
	n, d, _ := strings.Cut(user, "@")
	var b strings.Builder
	b.Grow(len(runAs) + len(user))
	for i := 0; i < len(runAs); i++ {
		c := runAs[i]
		if c != '%' {
			b.WriteByte(c)
			continue
		}
		if i+1 == len(runAs) {
			return "", ErrRunAsVar
		}
		i++
		switch runAs[i] {
		case 'u':
			b.WriteString(user)
		case 'n':
			b.WriteString(n)
		case 'd':
			b.WriteString(d)
		case '%':
			b.WriteByte('%')
		default:
			return "", ErrRunAsVar
		}
	}
	return b.String(), nil
}

// ValidAccountName reports whether an expanded run_as can name a system
// account at all: not empty, no '/', ':' or control character, not "."
// or "..", at most 256 bytes. A user's name comes from whoever sent the
// mail; it must not make the daemon look up, or log, anything strange.
func ValidAccountName(name string) bool {
	if name == "" || len(name) > 256 || name == "." || name == ".." {
		return false
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f || r == '/' || r == ':' || r == '%' {
			return false
		}
	}
	return true
}

// HomeCommandPrefix starts a command that is a program in the account's
// home: "~/.config/imserious/new-mail".
const HomeCommandPrefix = "~/"

// HomeRelative returns the path below the account's home of a command
// written "~/rel", and whether it is one. rel is clean, relative and
// never leaves the home ("~/../x" is not one: Parse refuses it).
func HomeRelative(program string) (rel string, ok bool) {
	rest, found := strings.CutPrefix(program, HomeCommandPrefix)
	if !found || rest == "" {
		return "", false
	}
	c := path.Clean(rest)
	if c != rest || c == "." || c == ".." || strings.HasPrefix(c, "../") || strings.HasPrefix(c, "/") {
		return "", false
	}
	return c, true
}
