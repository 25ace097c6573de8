package exec

import (
	"net/netip"

	"github.com/imserious/imserious/config"
	"github.com/imserious/imserious/event"
	"github.com/imserious/imserious/internal/prefix"
)

// What the exec process would do with one event, without running
// anything: imseriousctl check prints it. These call the code a real run
// goes through (handler.matches, eventEnv, envFits), so the preview cannot
// drift from what a command gets.

// Matches reports whether the exec process hands ev, received from
// remote, to h: the user (exactly, or by a wildcard handler's glob,
// config.MatchUser), the event name, and remote against h's ip list when
// it has one. Whether a Dynamic handler's run_as names an account that
// may run it is the parent's to say (config.Handler.Dynamic), not
// checked here.
func Matches(h *config.Handler, ev *event.Event, remote netip.AddrPort) bool {
	return (&handler{spec: &spec{cfg: *h, ip: prefix.Normalize(h.IP)}, user: h.User}).matches(ev, remote)
}

// EventEnv returns the environment of the run of h that ev starts when it
// is the only event of its burst (IMSE_TRIGGER=event, IMSE_COUNT=1), and,
// when that run would not start because its environment cannot be passed
// to execve, why; h must be resolved (config.Config.Resolve).
func EventEnv(h *config.Handler, ev *event.Event, remote netip.AddrPort) ([]string, error) {
	env := eventEnv(BaseEnv(h), ev, 1, remote)
	return env, envFits(env)
}
