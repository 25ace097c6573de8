package exec

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/imserious/imserious/config"
	"github.com/imserious/imserious/event"
)

// imsePrefix is the namespace of the variables the daemon sets itself.
const imsePrefix = "IMSE_"

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
// IMSE_* variables.
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
		vars[k] = sanitizeValue(v)
	}
	vars[imsePrefix+"TRIGGER"] = trigger
	return sortedEnv(vars)
}

// eventEnv is the environment of an event run.
func eventEnv(base []string, ev *event.Event, count int, remote netip.AddrPort) []string {
	return jobEnv(base, ev.Env(count, remote), TriggerEvent)
}

// periodicEnv is the environment of a periodic run.
func periodicEnv(base []string, h *config.Handler) []string {
	return jobEnv(base, event.PeriodicEnv(h.User, h.Event), TriggerPeriodic)
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
