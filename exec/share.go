package exec

import (
	"hash/maphash"
	"net/netip"

	"github.com/imserious/imserious/config"
	"github.com/imserious/imserious/internal/prefix"
)

// spec is a handler's configuration and what is made of it once, shared
// by the handlers that differ only in their user.
//
// A multi-user server's handlers are mostly one [[handler]] written out
// for each user: 10,000 handlers of one account, the same command,
// delay and limits. Each kept a copy of its config.Handler (320 bytes)
// and its base environment, a third of the exec process's heap. Now a
// handler keeps its own user, number and line, and points to a spec it
// shares with every handler that is the same but for those
// (config.Handler.Same, the user aside). The shared configuration has no
// User, Number or Line: nothing reads them there, and a read that did
// would find them empty, not another handler's.
type spec struct {
	cfg  config.Handler
	ip   []netip.Prefix // cfg.IP as prefix.Contains wants them
	base []string       // BaseEnv(cfg)
	// hook is set for a program in the account's home ("~/rel",
	// config.HomeRelative), looked up at each launch (lookupHook); unset
	// for a program resolved by config.
	hook bool
}

// share returns the spec of cfg: an earlier handler's when one is the
// same but for its user, number and line, else a new one. cfg itself is
// not kept. x.mu must be held for writing, or x not yet shared.
func (x *Exec) share(cfg *config.Handler) *spec {
	k := x.specHash(cfg)
	for _, sp := range x.specs[k] {
		if sameSpec(&sp.cfg, cfg) {
			return sp
		}
	}
	sp := &spec{cfg: *cfg, ip: prefix.Normalize(cfg.IP), base: x.baseEnv(cfg)}
	sp.cfg.User, sp.cfg.Number, sp.cfg.Line = "", 0, 0
	_, sp.hook = config.HomeRelative(cfg.Path)
	x.addSpec(k, sp)
	return sp
}

// keepSpec makes sp, of a handler kept across Update, one that share may
// return again.
func (x *Exec) keepSpec(sp *spec) {
	k := x.specHash(&sp.cfg)
	for _, o := range x.specs[k] {
		if o == sp {
			return
		}
	}
	x.addSpec(k, sp)
}

func (x *Exec) addSpec(k uint64, sp *spec) {
	if x.specs == nil {
		x.specs = map[uint64][]*spec{}
	}
	x.specs[k] = append(x.specs[k], sp)
}

// same reports whether o is h's configuration: its user and the rest
// (config.Handler.Same).
func (h *handler) same(o *config.Handler) bool {
	return h.user == o.User && sameSpec(&h.cfg, o)
}

// sameSpec reports whether a and b are the same but for their user
// (and number and line, which config.Handler.Same leaves out too).
func sameSpec(a, b *config.Handler) bool {
	c := *b
	c.User = a.User
	return a.Same(&c)
}

// specHash is a hash of the fields that tell handlers' configurations
// apart, the user, number and line left out; sameSpec decides. It covers
// the command line and the env table, so that handlers that name their
// user there (fdm -a alice) do not all fall in one bucket.
func (x *Exec) specHash(c *config.Handler) uint64 {
	var h maphash.Hash
	h.SetSeed(x.specsSeed)
	for _, s := range [...]string{c.Event, c.Path, c.RunAs, c.Account.Name} {
		h.WriteString(s)
		h.WriteByte(0)
	}
	for _, a := range c.Command {
		h.WriteString(a)
		h.WriteByte(0)
	}
	var env uint64 // of the entries in any order
	for k, v := range c.Env {
		env += maphash.String(x.specsSeed, k) ^ 31*maphash.String(x.specsSeed, v)
	}
	n := [...]uint64{env, uint64(len(c.Command)), uint64(c.Delay), uint64(c.LimitPeriod), uint64(c.Periodic),
		uint64(c.CommandTimeout), uint64(c.LimitBurst), uint64(c.Retries), uint64(len(c.IP))}
	for _, v := range n {
		maphash.WriteComparable(&h, v)
	}
	return h.Sum64()
}
