// Package config owns the TOML configuration: decoding, defaults, aliases,
// validation with file, line and key in every error, and the deep check
// behind -n (accounts, commands, the TLS pair).
//
// Wildcard handlers (issue 10) are written here too: a handler's user may
// be a glob (Handler.Pattern, MatchUser), its run_as may name the account
// through %u, %n and %d (ExpandRunAs), and its program may be in the
// account's home ("~/rel", HomeRelative). A wildcard handler whose run_as
// has %-variables is Dynamic: Resolve gives it no account, as that depends
// on the event's user, and the parent asks DynamicAccount for each user
// before it starts an exec process for one, which then stops after
// exec_idle in the privsep table (at most max_exec of them at once). pattern.go holds
// the rules every process applies; Parse and Resolve apply them at load.
package config

import (
	"fmt"
	"io"
	"maps"
	"net/netip"
	"os"
	"slices"
	"time"

	"github.com/imserious/imserious/privsep"
	"github.com/imserious/imserious/tlsreload"
)

// DefaultPath is the configuration read when none is named; the Makefile
// may override it with -ldflags "-X ...config.DefaultPath=...".
var DefaultPath = "/usr/local/etc/imserious.toml"

// CommandPath is the PATH every command gets, and where Resolve looks for a
// command given by bare name. It is fixed, not inherited from the daemon's
// environment, so what runs does not depend on how the daemon was started.
var CommandPath = "/usr/bin:/bin:/usr/sbin:/sbin:/usr/local/bin:/usr/local/sbin"

// Config is a loaded, validated configuration.
type Config struct {
	File               string
	Listen             string         // "IP:port" or "[IPv6]:port", validated
	Allow              []netip.Prefix // empty: everyone; bare IPs become /32 or /128, IPv4-mapped ones IPv4
	Endpoint           string         // default "/notify"
	MaxConnections     int            // default 8
	MaxOpenConnections int            // default 1000; beyond it the longest-idle connections are closed
	MaxOpenPerIP       int            // default 100 (MaxOpenConnections if lower); never above MaxOpenConnections
	Timeout            time.Duration  // default 5s
	InsecurePlaintext  bool
	Auth               *Auth // nil when no [auth]
	TLS                *TLS  // nil when no [tls]
	Log                Log
	Privsep            Privsep
	Control            Control
	Handlers           []Handler

	src           *source // where each key was written, for Resolve's messages
	parseWarnings Errors  // found by Parse; Resolve starts from them
	warnings      Errors  // parseWarnings, then what Resolve found
}

// Auth holds HTTP Basic credentials.
type Auth struct {
	User string
	Pass string
}

// TLS names the certificate chain and key files.
type TLS struct {
	Cert           string        // absolute: relative paths are taken from the config file's directory
	Key            string        // absolute, likewise
	PeriodicReload time.Duration // 0: none

	// Pair is the pair as Resolve loaded it, for -n's report. The daemon
	// reads the files again once it watches them, so no change between
	// the two reads goes unseen.
	Pair *tlsreload.Pair
}

// Log is the [log] table.
type Log struct {
	MaxLevel  string // error, warn, info, debug, trace; default "info"
	Format    string // full, compact, pretty, json; default "full"
	ANSI      bool
	Timestamp bool
	Target    bool
	Level     bool

	// Output is where lines go: "stdout" (the default) or "syslog".
	Output string
	// Facility is the syslog facility's canonical name (a key of
	// SyslogFacilities), default "daemon", and FacilityCode its number
	// (daemon is 3). Both are filled whatever Output says.
	Facility     string
	FacilityCode int
	// SyslogSocket is the local syslog socket, absolute and clean; by
	// default DefaultSyslogSocket (/dev/log, /var/run/log on FreeBSD).
	SyslogSocket string
}

// Privsep is the [privsep] table.
type Privsep struct {
	User   string // default "_imserious"
	Chroot string // default "/var/empty"; absolute and clean
	// ExecIdle is how long an exec process started on demand (for an
	// account of a Dynamic handler) stays with nothing pending, running
	// or scheduled before it is stopped (exec_idle, default
	// DefaultExecIdle); MaxExec how many such processes may exist at once
	// (max_exec, default DefaultMaxExec).
	ExecIdle time.Duration
	MaxExec  int
}

// Defaults of [privsep] exec_idle and max_exec, and of a handler's min_uid.
const (
	DefaultExecIdle = 10 * time.Minute
	DefaultMaxExec  = 64
	DefaultMinUID   = 1000
)

// Control is the [control] table: the parent's control socket for
// imseriousctl.
type Control struct {
	// Socket is the path of the control socket, absolute and clean, or ""
	// for none. Parse sets it only when the key is written (socket = ""
	// turns the socket off); Resolve, or ResolveControl alone, fills in
	// DefaultControlSocket when it is not.
	Socket string
	// Explicit is true when socket was written in the file: the daemon
	// treats a failure to bind an explicit path as fatal and one to bind
	// the default as a warning.
	Explicit bool
}

// Handler is one [[handler]] table.
type Handler struct {
	Line int // line of the [[handler]] header, for messages
	// Number is the handler's 1-based position in the file, the N of
	// handler[N] in messages. Like Line it says only where the handler was
	// written: Same ignores it.
	Number int
	// User is as written: a Dovecot user matched exactly, or a glob
	// (Pattern) matched by MatchUser.
	User           string
	Event          string   // canonical CamelCase, e.g. "MessageNew"
	Command        []string // argv as split at load time; never empty
	Delay          time.Duration
	LimitPeriod    time.Duration     // default 30s
	LimitBurst     int               // default 1
	Periodic       time.Duration     // 0: none
	RunAs          string            // as written, %-variables unexpanded; "" means the default of spec §5
	Env            map[string]string // nil when empty (a map each would be 0.5 MB of 10,000 handlers); after Resolve, also the pass_env variables that are set
	CommandTimeout time.Duration     // default 10m
	IP             []netip.Prefix    // empty: any peer allowed by Config.Allow
	// PassEnv names variables of the daemon's own environment copied to
	// the command, as written (pass_env). Resolve copies the value of each
	// one that is set, even to "", into Env, which is how it reaches the
	// exec process; one that is unset is left out.
	PassEnv []string
	// Retries is how many times a failed run is tried again (retries,
	// 0 to MaxRetries, default 0), RetryBackoff after the failed run ended
	// (retry_backoff, default DefaultRetryBackoff), doubling each time.
	Retries      int
	RetryBackoff time.Duration
	// MinUID is the lowest uid an account named through run_as's
	// %-variables may have (min_uid, default DefaultMinUID).
	MinUID int
	// The flags are side by side: each alone between wider fields would
	// take a word, and 10,000 handlers are kept in every process.
	//
	// RunAtStart makes the handler run once when the daemon starts
	// (run_at_start), for mail that arrived while it was down.
	RunAtStart bool
	// Pattern is set when User is a glob (IsUserPattern): the handler
	// matches every user MatchUser says, and keeps its scheduling state
	// per user.
	Pattern bool
	// Dynamic is set for a Pattern handler whose run_as has %-variables:
	// its account depends on the event's user, so Resolve leaves Account
	// zero and the parent resolves and checks it per user (DynamicAccount)
	// when an exec process is wanted for it.
	Dynamic bool

	// Filled by Resolve.
	Account privsep.Account // the account the command runs as
	// Path is Command[0] resolved to an absolute executable path, or, for
	// a program in the account's home, as written ("~/rel", see
	// HomeRelative): that one is looked up when it runs.
	Path string
}

// Same reports whether h and o describe the same handler: every field is
// equal but Line and Number, which only say where it was written, so a
// handler moved within the file, or to another file, is the same. Account and Path are
// compared too, so after Resolve a handler whose account or program now
// resolves differently is not the same. The daemon keeps the timers and
// pending events of a handler that is the same across a reload. Lists are
// compared in order (a reordered ip list is a change, which costs only the
// handler's timers); a nil list or map equals an empty one.
func (h *Handler) Same(o *Handler) bool {
	if h == nil || o == nil {
		return h == o
	}
	return h.User == o.User &&
		h.Event == o.Event &&
		slices.Equal(h.Command, o.Command) &&
		h.Delay == o.Delay &&
		h.LimitPeriod == o.LimitPeriod &&
		h.LimitBurst == o.LimitBurst &&
		h.Periodic == o.Periodic &&
		h.RunAs == o.RunAs &&
		maps.Equal(h.Env, o.Env) &&
		slices.Equal(h.PassEnv, o.PassEnv) &&
		h.CommandTimeout == o.CommandTimeout &&
		slices.Equal(h.IP, o.IP) &&
		h.RunAtStart == o.RunAtStart &&
		h.Retries == o.Retries &&
		h.RetryBackoff == o.RetryBackoff &&
		h.Pattern == o.Pattern &&
		h.MinUID == o.MinUID &&
		h.Dynamic == o.Dynamic &&
		sameAccount(&h.Account, &o.Account) &&
		h.Path == o.Path
}

func sameAccount(a, b *privsep.Account) bool {
	return a.Name == b.Name &&
		a.UID == b.UID &&
		a.GID == b.GID &&
		slices.Equal(a.Groups, b.Groups) &&
		a.Home == b.Home &&
		a.Shell == b.Shell
}

// Load reads the file at path and parses it. A file that cannot be read is
// reported as an Errors of one, wrapping the cause (errors.Is(err,
// fs.ErrNotExist) works).
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, Errors{{File: path, Msg: fmt.Sprintf("cannot read configuration: %v", err), err: err}}
	}
	defer f.Close()
	// One byte past MaxSize is enough to know the file is too large: a
	// wrong path (a log, a device) is not read to its end.
	data, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, Errors{{File: path, Msg: fmt.Sprintf("cannot read configuration: %v", err), err: err}}
	}
	if len(data) > MaxSize {
		return nil, Errors{{File: path, Msg: fmt.Sprintf("configuration is more than the %d bytes allowed", MaxSize)}}
	}
	return Parse(path, data)
}

// Accounts returns the distinct accounts commands run as, in the order the
// handlers first name them: one exec process each. It is meaningful only
// after a successful Resolve.
func (c *Config) Accounts() []privsep.Account {
	var out []privsep.Account
	seen := map[string]bool{}
	for _, h := range c.Handlers {
		if h.Account.Name == "" || seen[h.Account.Name] {
			continue
		}
		seen[h.Account.Name] = true
		out = append(out, h.Account)
	}
	return out
}
