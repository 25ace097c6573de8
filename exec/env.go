package exec

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/imserious/imserious/config"
	"github.com/imserious/imserious/event"
)

// imsePrefix is the namespace of the variables the daemon sets itself.
const imsePrefix = "IMSE_"

// Bounds of a run's environment. Each IMSE_* value is capped at
// event.MaxValue; MaxIMSEEnv bounds the IMSE_* part as a whole, and
// MaxEnv, with maxArgStrlen, what may reach execve at all.
//
// The IMSE_* part comes from mail and is cut to fit: with the variables
// of spec §4 at 4 KiB each it stays under 64 KiB, so the cut of the whole
// part is a backstop for variables added later. The rest is the
// operator's env table: a run whose environment is over MaxEnv in all, or
// has one entry over maxArgStrlen, is not started and says why (an error
// line), instead of failing in execve with E2BIG or being cut in ways
// the operator did not write. Linux allows a quarter of the stack limit
// (2 MiB by default) for arguments and environment together; 1 MiB leaves
// room for the arguments.
const (
	MaxIMSEEnv = 64 << 10
	MaxEnv     = 1 << 20
	// maxArgStrlen is Linux's MAX_ARG_STRLEN (32 pages of 4 KiB), the
	// limit of one string, its NUL included.
	maxArgStrlen = 128 << 10
)

// BaseEnv is the environment every run of h starts from: PATH, HOME, USER,
// LOGNAME and SHELL of the handler's account, then the handler's env table,
// which may override any of them. Nothing comes from the daemon's own
// environment. The result is sorted by name and each name appears once.
func BaseEnv(h *config.Handler) []string {
	vars := map[string]string{
		"PATH":    config.CommandPath,
		"HOME":    h.Account.Home,
		"USER":    h.Account.Name,
		"LOGNAME": h.Account.Name,
		"SHELL":   h.Account.Shell,
	}
	// Empty passwd fields mean "/" and "/bin/sh" to login(1); a command
	// should not see an empty HOME or SHELL.
	if vars["HOME"] == "" {
		vars["HOME"] = "/"
	}
	if vars["SHELL"] == "" {
		vars["SHELL"] = "/bin/sh"
	}
	for k, v := range h.Env {
		if !validName(k) {
			continue // config rejects these; never hand execve a malformed entry
		}
		vars[k] = sanitizeValue(v)
	}
	return sortedEnv(vars)
}

// jobEnv builds the full environment of one run: BaseEnv without any IMSE_*
// name the operator set (those belong to the daemon: a script testing
// IMSE_FOLDER must not be fooled by a static value), then the run's own
// IMSE_* variables, each capped at event.MaxValue and all together at
// MaxIMSEEnv (fitIMSE).
func jobEnv(base, imse []string, trigger string) []string {
	vars := make(map[string]string, len(base)+len(imse)+1)
	for _, kv := range base {
		k, v, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, imsePrefix) {
			continue
		}
		vars[k] = v
	}
	for _, kv := range imse {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !validName(k) {
			continue
		}
		vars[k] = event.CapValue(sanitizeValue(v))
	}
	vars[imsePrefix+"TRIGGER"] = trigger
	fitIMSE(vars)
	return sortedEnv(vars)
}

// fitIMSE shortens IMSE_* values until the IMSE_* entries take at most
// MaxIMSEEnv bytes (each counted as execve does: "NAME=value" and a NUL),
// always cutting the longest value (ties: the last name), at a character
// boundary.
func fitIMSE(vars map[string]string) {
	var names []string
	total := 0
	for k, v := range vars {
		if strings.HasPrefix(k, imsePrefix) {
			names = append(names, k)
			total += len(k) + len(v) + 2
		}
	}
	slices.Sort(names)
	for total > MaxIMSEEnv {
		longest := ""
		for _, k := range names {
			if longest == "" || len(vars[k]) >= len(vars[longest]) {
				longest = k
			}
		}
		v := vars[longest]
		if v == "" {
			return // names alone over the bound: cannot happen with ours
		}
		cut := cutString(v, max(0, len(v)-(total-MaxIMSEEnv)))
		total -= len(v) - len(cut)
		vars[longest] = cut
	}
}

// cutString returns the longest prefix of s of at most n bytes that does
// not end inside a UTF-8 sequence.
func cutString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// envFits reports whether env can reach execve: at most MaxEnv bytes in
// all and no entry over maxArgStrlen, NULs included.
func envFits(env []string) error {
	total := 0
	for _, kv := range env {
		if len(kv)+1 > maxArgStrlen {
			k, _, _ := strings.Cut(kv, "=")
			return fmt.Errorf("variable %s is %d bytes, over the %d the kernel allows for one", k, len(kv)+1, maxArgStrlen)
		}
		total += len(kv) + 1
	}
	if total > MaxEnv {
		return fmt.Errorf("environment is %d bytes, over %d", total, MaxEnv)
	}
	return nil
}

// eventEnv is the environment of an event run.
func eventEnv(base []string, ev *event.Event, count int, remote netip.AddrPort) []string {
	return jobEnv(base, ev.Env(count, remote), TriggerEvent)
}

// periodicEnv is the environment of a periodic run: IMSE_USER is the
// handler's user (user), IMSE_EVENT its event, and no event fields.
func periodicEnv(base []string, user, ev string) []string {
	return jobEnv(base, event.PeriodicEnv(user, ev), TriggerPeriodic)
}

// recoveryEnv is the environment of a recovery run: like a periodic run,
// for user (the handler's, or the event user of a wildcard handler's
// per-user state) and no event fields.
func recoveryEnv(base []string, user, ev string) []string {
	return jobEnv(base, event.PeriodicEnv(user, ev), TriggerRecovery)
}

// requestEnv is the environment of a manual or start run (trigger): like
// a recovery run.
func requestEnv(base []string, user, ev, trigger string) []string {
	return jobEnv(base, event.PeriodicEnv(user, ev), trigger)
}

func sortedEnv(vars map[string]string) []string {
	env := make([]string, 0, len(vars))
	for k, v := range vars {
		env = append(env, k+"="+v)
	}
	slices.Sort(env)
	return env
}

// validName reports whether k can be the name of an environment variable:
// execve takes "k=v" strings, so '=' or NUL in a name would corrupt them.
func validName(k string) bool {
	return k != "" && !strings.ContainsAny(k, "=\x00")
}

// sanitizeValue drops NUL, which cannot be passed to execve. The event
// package and config already refuse or clean such values; this only keeps
// one that slipped through from making every run fail to start.
func sanitizeValue(v string) string {
	return strings.ReplaceAll(v, "\x00", "")
}
