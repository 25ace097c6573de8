package config

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/BurntSushi/toml"
	"github.com/google/shlex"

	"github.com/imserious/imserious/event"
	"github.com/imserious/imserious/internal/prefix"
)

// Defaults of spec §2.
const (
	DefaultListen         = "127.0.0.1:12525"
	DefaultEndpoint       = "/notify"
	DefaultMaxConnections = 8
	DefaultTimeout        = 5 * time.Second
	DefaultMaxLevel       = "info"
	DefaultFormat         = "full"
	DefaultOutput         = "stdout"
	DefaultFacility       = "daemon"
	DefaultPrivsepUser    = "_imserious"
	DefaultChroot         = "/var/empty"
	DefaultEvent          = "MessageNew"
	DefaultLimitPeriod    = 30 * time.Second
	DefaultLimitBurst     = 1
	DefaultCommandTimeout = 10 * time.Minute
	DefaultRetryBackoff   = 10 * time.Second

	// MaxRetries bounds retries: with the back-off doubling up to ten
	// minutes, 100 retries already keep a failing command going for
	// more than 16 hours; a larger number is a typo, not a policy.
	MaxRetries = 100

	DefaultMaxOpenConnections = 1000
	DefaultMaxOpenPerIP       = 100

	// MaxOpenLimit bounds max_open_connections and max_open_per_ip: each
	// open connection is a descriptor, and no system gives a process more
	// than about a million, so a larger value is a typo, not a policy.
	MaxOpenLimit = 1 << 20

	// MaxConnectionsLimit bounds max_connections: each slot may hold a
	// 64 KiB body and a goroutine, and a mail server's push traffic never
	// needs thousands at once.
	MaxConnectionsLimit = 4096

	// MaxExecLimit bounds [privsep] max_exec: each exec process is a few
	// megabytes and a process slot, so a larger value is a typo, not a
	// policy.
	MaxExecLimit = 100_000

	// MaxMinUID bounds a handler's min_uid: no system gives out uids
	// beyond 2^31-1 to people (and uid_t is 32 bits wide), so a larger
	// value could only refuse every account.
	MaxMinUID = 1<<31 - 1
)

// LogLevels, LogFormats and LogOutputs are the accepted [log] values.
var (
	LogLevels  = []string{"error", "warn", "info", "debug", "trace"}
	LogFormats = []string{"full", "compact", "pretty", "json"}
	LogOutputs = []string{"stdout", "syslog"}
)

// SyslogFacilities maps the facility names [log] facility accepts to
// their syslog numbers (RFC 5424 and <syslog.h>: LOG_DAEMON is 3<<3, the
// number here is the 3).
var SyslogFacilities = map[string]int{
	"kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5,
	"lpr": 6, "news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11,
	"local0": 16, "local1": 17, "local2": 18, "local3": 19,
	"local4": 20, "local5": 21, "local6": 22, "local7": 23,
}

// facilityNames are the keys of SyslogFacilities in the order of their
// numbers, for messages.
var facilityNames = func() []string {
	names := make([]string, 0, len(SyslogFacilities))
	for k := range SyslogFacilities {
		names = append(names, k)
	}
	slices.SortFunc(names, func(a, b string) int { return SyslogFacilities[a] - SyslogFacilities[b] })
	return names
}()

// tableSpec lists the keys of one table, canonical spelling first, and the
// aliases accepted for them.
type tableSpec struct {
	name    string // as shown in hints: "the top level", "[log]", "[[handler]]"
	keys    []string
	aliases map[string]string // alias -> canonical
}

var (
	topSpec = tableSpec{"the top level",
		[]string{"listen", "allow", "endpoint", "max_connections", "max_open_connections", "max_open_per_ip", "timeout", "insecure_plaintext", "auth", "tls", "log", "privsep", "control", "handler"},
		map[string]string{"maxconnections": "max_connections", "maxopenconnections": "max_open_connections", "maxopenperip": "max_open_per_ip", "insecureplaintext": "insecure_plaintext"}}
	authSpec    = tableSpec{"[auth]", []string{"user", "pass"}, nil}
	tlsSpec     = tableSpec{"[tls]", []string{"cert", "key", "periodic_reload"}, map[string]string{"periodicreload": "periodic_reload"}}
	logSpec     = tableSpec{"[log]", []string{"max_level", "format", "ansi", "timestamp", "target", "level", "output", "facility", "syslog_socket"}, map[string]string{"maxlevel": "max_level"}}
	privsepSpec = tableSpec{"[privsep]", []string{"user", "chroot", "exec_idle", "max_exec"}, nil}
	controlSpec = tableSpec{"[control]", []string{"socket"}, nil}
	handlerSpec = tableSpec{"[[handler]]",
		[]string{"user", "event", "command", "delay", "limit_period", "limit_burst", "periodic", "run_as", "env", "pass_env", "command_timeout", "ip",
			"run_at_start", "retries", "retry_backoff", "min_uid"},
		map[string]string{"limitperiod": "limit_period", "limitburst": "limit_burst", "commandtimeout": "command_timeout", "runas": "run_as", "passenv": "pass_env",
			"runatstart": "run_at_start", "retrybackoff": "retry_backoff", "minuid": "min_uid"}}
	allSpecs = []*tableSpec{&topSpec, &authSpec, &tlsSpec, &logSpec, &privsepSpec, &controlSpec, &handlerSpec}
)

// source remembers where keys were written, for messages produced after
// parsing (Resolve).
type source struct {
	file    string
	loc     *locator
	written map[string][]string // pathKey of a canonical path -> the path as written (aliases)
}

// where returns the line and the key path to show for a canonical path.
func (s *source) where(path []string) (int, string) {
	if s == nil {
		return 0, render(path)
	}
	if w, ok := s.written[pathKey(path)]; ok {
		path = w
	}
	return s.loc.line(path), render(path)
}

// render shows a key path as an operator would search for it:
// handler[2].env.DISPLAY, allow[1], handler[1].env."A B".
func render(path []string) string {
	var b strings.Builder
	for i, p := range path {
		if n, ok := strings.CutPrefix(p, "\x00#"); ok {
			if k, err := strconv.Atoi(n); err == nil {
				b.WriteString("[" + strconv.Itoa(k+1) + "]")
				continue
			}
		}
		if i > 0 {
			b.WriteByte('.')
		}
		bare := p != ""
		for j := 0; j < len(p); j++ {
			bare = bare && isBare(p[j])
		}
		if bare {
			b.WriteString(p)
		} else {
			b.WriteString(strconv.Quote(p))
		}
	}
	return b.String()
}

type parser struct {
	file  string
	dir   string // the config file's directory, for relative TLS paths
	src   *source
	errs  Errors
	warns Errors

	// splits remembers each command line split, as a site with thousands
	// of handlers repeats one line thousands of times and shlex costs a
	// 4 KiB buffer per call.
	splits map[string][]string
}

func (p *parser) errorf(path []string, format string, args ...any) {
	line, key := p.src.where(path)
	p.errs = append(p.errs, &Error{File: p.file, Line: line, Key: key, Msg: fmt.Sprintf(format, args...)})
}

// warnf records what works but is likely not what the operator meant;
// Warnings returns it.
func (p *parser) warnf(path []string, format string, args ...any) {
	line, key := p.src.where(path)
	p.warns = append(p.warns, &Error{File: p.file, Line: line, Key: key, Msg: fmt.Sprintf(format, args...)})
}

// entry is one key's value with the path it was written at.
type entry struct {
	val  any
	path []string
}

// MaxSize bounds a configuration file. Real ones are a few kilobytes; the
// bound keeps a wrong path (a log, a core file) from being decoded at
// length.
const MaxSize = 16 << 20

// Parse decodes a configuration, applies defaults and aliases, and checks
// everything that can be checked without looking at the system. path
// names the file in messages and anchors relative TLS paths. On failure it
// returns Errors holding every problem found, in file order.
func Parse(path string, data []byte) (*Config, error) {
	if len(data) > MaxSize {
		return nil, Errors{{File: path, Msg: fmt.Sprintf("configuration is %d bytes, more than the %d allowed", len(data), MaxSize)}}
	}
	var raw map[string]any
	if _, err := toml.Decode(string(data), &raw); err != nil {
		return nil, Errors{syntaxError(path, string(data), err)}
	}
	src := &source{file: path, loc: locate(string(data)), written: map[string][]string{}}
	p := &parser{file: path, dir: filepath.Dir(path), src: src, splits: map[string][]string{}}
	if path == "" {
		p.dir = "."
	}
	c := p.config(raw)
	if len(p.errs) > 0 {
		sortErrors(p.errs)
		return nil, p.errs
	}
	c.src = src
	sortErrors(p.warns)
	c.parseWarnings = p.warns
	c.warnings = slices.Clone(p.warns)
	return c, nil
}

func syntaxError(file, src string, err error) *Error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		if e, ok := duplicateError(file, src, pe, err); ok {
			return e
		}
		msg := "invalid TOML: " + pe.Message
		if pe.LastKey != "" {
			msg += fmt.Sprintf(" (after key %q)", pe.LastKey)
		}
		return &Error{File: file, Line: pe.Position.Line, Msg: msg, err: err}
	}
	return &Error{File: file, Msg: "invalid TOML: " + err.Error(), err: err}
}

// table checks the keys of one table against its spec and returns the
// values under their canonical names. Unknown keys, and a key given under
// both its spellings, are reported.
func (p *parser) table(spec *tableSpec, base []string, m map[string]any) map[string]entry {
	out := map[string]entry{}
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	slices.Sort(names) // messages must not depend on map order
	for _, k := range names {
		path := append(slices.Clip(base), k)
		canon := k
		if !slices.Contains(spec.keys, k) {
			a, ok := spec.aliases[k]
			if !ok {
				p.unknown(spec, path, m[k])
				continue
			}
			canon = a
			if _, both := m[a]; both {
				p.errorf(path, "%q is an alias of %q, which is also set; keep only %q", k, a, a)
				continue
			}
			p.src.written[pathKey(append(slices.Clip(base), a))] = path
		}
		out[canon] = entry{val: m[k], path: path}
	}
	return out
}

func (p *parser) unknown(spec *tableSpec, path []string, v any) {
	k := path[len(path)-1]
	what := "key"
	if _, ok := v.(map[string]any); ok {
		what = "table"
	}
	if s := suggest(k, spec.keys); s != "" {
		p.errorf(path, "unknown %s (did you mean %q?)", what, s)
		return
	}
	// A known key in the wrong table is usually a key written after a
	// [table] header that was meant for the top level, or the reverse.
	var homes []string
	for _, o := range allSpecs {
		if o != spec && (slices.Contains(o.keys, k) || o.aliases[k] != "") {
			homes = append(homes, o.name)
		}
	}
	if len(homes) == 1 {
		hint := "belongs in " + homes[0]
		if homes[0] == topSpec.name {
			hint = "belongs at the top level, before the first [table] header"
		}
		p.errorf(path, "unknown %s (%q %s)", what, k, hint)
		return
	}
	p.errorf(path, "unknown %s", what)
}

// typeName names a decoded TOML value's type for messages.
func typeName(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case map[string]any:
		return "a table"
	case []any:
		return "an array"
	case []map[string]any:
		return "an array of tables"
	default:
		if _, ok := v.(fmt.Stringer); ok {
			return "a date/time"
		}
		return fmt.Sprintf("a %T", v)
	}
}

func (p *parser) str(e entry) (string, bool) {
	s, ok := e.val.(string)
	if !ok {
		p.errorf(e.path, "expected a string, found %s", typeName(e.val))
		return "", false
	}
	if strings.IndexByte(s, 0) >= 0 {
		p.errorf(e.path, "must not contain NUL")
		return "", false
	}
	return s, true
}

// nonEmpty is str for values that must say something.
func (p *parser) nonEmpty(e entry) (string, bool) {
	s, ok := p.str(e)
	if ok && s == "" {
		p.errorf(e.path, "must not be empty")
		return "", false
	}
	return s, ok
}

func (p *parser) boolean(e entry) (bool, bool) {
	b, ok := e.val.(bool)
	if !ok {
		p.errorf(e.path, "expected true or false, found %s", typeName(e.val))
	}
	return b, ok
}

func (p *parser) integer(e entry, lo, hi int64) (int, bool) {
	n, ok := e.val.(int64)
	if !ok {
		p.errorf(e.path, "expected an integer, found %s", typeName(e.val))
		return 0, false
	}
	if n < lo || n > hi {
		p.errorf(e.path, "%d is out of range (%d to %d)", n, lo, hi)
		return 0, false
	}
	return int(n), true
}

func (p *parser) duration(e entry) (time.Duration, bool) {
	s, ok := e.val.(string)
	if !ok {
		p.errorf(e.path, `expected a duration string such as "30s" or "1h 30m", found %s`, typeName(e.val))
		return 0, false
	}
	d, err := ParseDuration(s)
	if err != nil {
		p.errorf(e.path, "%v", err)
		return 0, false
	}
	return d, true
}

func (p *parser) subtable(e entry) (map[string]any, bool) {
	m, ok := e.val.(map[string]any)
	if !ok {
		p.errorf(e.path, "expected a table, found %s", typeName(e.val))
	}
	return m, ok
}

// array returns the elements of an array with their paths.
func (p *parser) array(e entry) ([]entry, bool) {
	a, ok := e.val.([]any)
	if !ok {
		p.errorf(e.path, "expected an array, found %s", typeName(e.val))
		return nil, false
	}
	out := make([]entry, len(a))
	for i, v := range a {
		out[i] = entry{val: v, path: append(slices.Clip(e.path), indexKey(i))}
	}
	return out, true
}

// prefixes reads an array of CIDRs or bare IPs (allow, ip).
func (p *parser) prefixes(e entry) []netip.Prefix {
	elems, ok := p.array(e)
	if !ok {
		return nil
	}
	var out []netip.Prefix
	for _, el := range elems {
		s, ok := p.str(el)
		if !ok {
			continue
		}
		pfx, err := parsePrefix(s)
		if err != nil {
			p.errorf(el.path, "%v", err)
			continue
		}
		out = append(out, pfx)
	}
	return out
}

// parsePrefix reads a CIDR or a bare IP (one host), normalized by
// prefix.Normalize as the listener and exec processes compare them:
// IPv4-mapped IPv6 forms become IPv4 (peers are compared unmapped, so a
// mapped entry left as IPv6 would never match anything), and host bits are
// cleared, so "10.1.2.3/8" means 10.0.0.0/8, as written. What Normalize
// would take silently but cannot mean what the operator wrote (a mapped
// prefix shorter than /96, a zone) is an error here.
func parsePrefix(s string) (netip.Prefix, error) {
	var pfx netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if pfx, err = netip.ParsePrefix(s); err != nil {
			return netip.Prefix{}, fmt.Errorf("invalid CIDR %q: %w", s, err)
		}
		if pfx.Addr().Is4In6() && pfx.Bits() < 96 {
			return netip.Prefix{}, fmt.Errorf("invalid CIDR %q: an IPv4-mapped prefix must be /96 or longer", s)
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("invalid IP address or CIDR %q", s)
		}
		if a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("invalid IP address %q: zones cannot be matched", s)
		}
		pfx = netip.PrefixFrom(a, a.BitLen())
	}
	return prefix.Normalize([]netip.Prefix{pfx})[0], nil
}

func (p *parser) config(raw map[string]any) *Config {
	c := &Config{
		File:           p.file,
		Listen:         DefaultListen,
		Endpoint:       DefaultEndpoint,
		MaxConnections: DefaultMaxConnections,
		Timeout:        DefaultTimeout,
		Log:            defaultLog(),
		Privsep:        Privsep{User: DefaultPrivsepUser, Chroot: DefaultChroot, ExecIdle: DefaultExecIdle, MaxExec: DefaultMaxExec},

		MaxOpenConnections: DefaultMaxOpenConnections,
		MaxOpenPerIP:       DefaultMaxOpenPerIP,
	}
	top := p.table(&topSpec, nil, raw)

	var listen netip.AddrPort
	if e, ok := top["listen"]; ok {
		if s, ok := p.str(e); ok {
			ap, err := netip.ParseAddrPort(s)
			if err != nil {
				p.errorf(e.path, "invalid address %q: want IP:port or [IPv6]:port (a literal address, not a host name)", s)
			} else {
				listen = ap
				c.Listen = ap.String()
			}
		}
	} else {
		listen = netip.MustParseAddrPort(DefaultListen)
	}
	if e, ok := top["allow"]; ok {
		c.Allow = p.prefixes(e)
	}
	if e, ok := top["endpoint"]; ok {
		if s, ok := p.str(e); ok {
			if err := checkEndpoint(s); err != nil {
				p.errorf(e.path, "%v", err)
			} else {
				c.Endpoint = s
			}
		}
	}
	if e, ok := top["max_connections"]; ok {
		if n, ok := p.integer(e, 1, MaxConnectionsLimit); ok {
			c.MaxConnections = n
		}
	}
	p.openLimits(top, c)
	if e, ok := top["timeout"]; ok {
		if d, ok := p.duration(e); ok {
			c.Timeout = d
		}
	}
	if e, ok := top["insecure_plaintext"]; ok {
		c.InsecurePlaintext, _ = p.boolean(e)
	}
	if e, ok := top["auth"]; ok {
		c.Auth = p.auth(e)
	}
	tlsSet := false
	if e, ok := top["tls"]; ok {
		tlsSet = true
		c.TLS = p.tls(e)
	}
	if e, ok := top["log"]; ok {
		p.log(e, &c.Log)
	}
	if e, ok := top["privsep"]; ok {
		p.privsep(e, &c.Privsep)
	}
	if e, ok := top["control"]; ok {
		p.control(e, &c.Control)
	}
	if e, ok := top["handler"]; ok {
		c.Handlers = p.handlers(e)
	}
	if len(c.Handlers) == 0 {
		var path []string // no key: the whole file has none
		if e, ok := top["handler"]; ok {
			path = e.path // handler = []
		}
		p.warnf(path, "no [[handler]]: notifications will be accepted, but no command runs")
	}

	// Security: credentials and events must not cross a network in clear
	// unless the operator said so in as many words.
	if listen.IsValid() && !listen.Addr().Unmap().IsLoopback() && !tlsSet && !c.InsecurePlaintext {
		path := []string{"listen"}
		if e, ok := top["listen"]; ok {
			path = e.path
		}
		p.errorf(path, "%s is not a loopback address and there is no [tls]: add a [tls] table with cert and key, or set insecure_plaintext = true to serve plain HTTP on the network", c.Listen)
	}
	return c
}

func defaultLog() Log {
	return Log{MaxLevel: DefaultMaxLevel, Format: DefaultFormat, Output: DefaultOutput,
		Facility: DefaultFacility, FacilityCode: SyslogFacilities[DefaultFacility], SyslogSocket: DefaultSyslogSocket}
}

// openLimits reads max_open_connections and max_open_per_ip. A per-address
// limit above the total could never be reached, which says the operator
// meant something else; so it is an error when written, and the default
// of 100 shrinks to fit a total written below it rather than turning a
// small max_open_connections alone into an error.
func (p *parser) openLimits(top map[string]entry, c *Config) {
	total, totalSet := top["max_open_connections"]
	if totalSet {
		n, ok := p.integer(total, 1, MaxOpenLimit)
		if !ok {
			return // reported; comparing with it would only add noise
		}
		c.MaxOpenConnections = n
	}
	perIP, ok := top["max_open_per_ip"]
	if !ok {
		c.MaxOpenPerIP = min(c.MaxOpenPerIP, c.MaxOpenConnections)
		return
	}
	n, ok := p.integer(perIP, 1, MaxOpenLimit)
	if !ok || n <= c.MaxOpenConnections {
		c.MaxOpenPerIP = n
		return
	}
	what := fmt.Sprintf("max_open_connections (%d, the default)", c.MaxOpenConnections)
	if totalSet {
		line, key := p.src.where(total.path)
		what = fmt.Sprintf("%s (%d, line %d)", key, c.MaxOpenConnections, line)
	}
	p.errorf(perIP.path, "%d is more than %s: one address could never open that many; lower it or raise max_open_connections", n, what)
}

func checkEndpoint(s string) error {
	if !strings.HasPrefix(s, "/") {
		return fmt.Errorf("invalid endpoint %q: must start with /", s)
	}
	if strings.ContainsAny(s, "?#") {
		return fmt.Errorf("invalid endpoint %q: must be a path, without ? or #", s)
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f {
			return fmt.Errorf("invalid endpoint %q: must not contain spaces or control characters", s)
		}
	}
	return nil
}

func (p *parser) auth(e entry) *Auth {
	m, ok := p.subtable(e)
	if !ok {
		return nil
	}
	t := p.table(&authSpec, e.path, m)
	a := &Auth{}
	if u, ok := t["user"]; ok {
		if s, ok := p.nonEmpty(u); ok {
			if strings.Contains(s, ":") {
				p.errorf(u.path, "must not contain ':' (HTTP Basic separates user and password with it)")
			}
			a.User = s
		}
	} else {
		p.errorf(append(slices.Clip(e.path), "user"), "missing: [auth] needs both user and pass")
	}
	if pw, ok := t["pass"]; ok {
		a.Pass, _ = p.nonEmpty(pw)
	} else {
		p.errorf(append(slices.Clip(e.path), "pass"), "missing: [auth] needs both user and pass")
	}
	return a
}

func (p *parser) tls(e entry) *TLS {
	m, ok := p.subtable(e)
	if !ok {
		return nil
	}
	t := p.table(&tlsSpec, e.path, m)
	out := &TLS{}
	for _, k := range []string{"cert", "key"} {
		f, ok := t[k]
		if !ok {
			p.errorf(append(slices.Clip(e.path), k), "missing: [tls] needs both cert and key")
			continue
		}
		s, ok := p.nonEmpty(f)
		if !ok {
			continue
		}
		// Relative paths are taken from the configuration's directory, not
		// the daemon's working directory, which rc scripts do not fix.
		if !filepath.IsAbs(s) {
			s = filepath.Join(p.dir, s)
			if abs, err := filepath.Abs(s); err == nil {
				s = abs
			}
		}
		if k == "cert" {
			out.Cert = s
		} else {
			out.Key = s
		}
	}
	if f, ok := t["periodic_reload"]; ok {
		out.PeriodicReload, _ = p.duration(f)
	}
	return out
}

func (p *parser) log(e entry, l *Log) {
	m, ok := p.subtable(e)
	if !ok {
		return
	}
	t := p.table(&logSpec, e.path, m)
	if f, ok := t["max_level"]; ok {
		if s, ok := p.str(f); ok {
			if v := strings.ToLower(s); slices.Contains(LogLevels, v) {
				l.MaxLevel = v
			} else {
				p.errorf(f.path, "invalid level %q: want one of %s", s, strings.Join(LogLevels, ", "))
			}
		}
	}
	if f, ok := t["format"]; ok {
		if s, ok := p.str(f); ok {
			if v := strings.ToLower(s); slices.Contains(LogFormats, v) {
				l.Format = v
			} else {
				p.errorf(f.path, "invalid format %q: want one of %s", s, strings.Join(LogFormats, ", "))
			}
		}
	}
	for k, dst := range map[string]*bool{"ansi": &l.ANSI, "timestamp": &l.Timestamp, "target": &l.Target, "level": &l.Level} {
		if f, ok := t[k]; ok {
			*dst, _ = p.boolean(f)
		}
	}
	outputOK := true
	if f, ok := t["output"]; ok {
		outputOK = false
		if s, ok := p.str(f); ok {
			v := strings.ToLower(s)
			switch {
			case slices.Contains(LogOutputs, v):
				l.Output, outputOK = v, true
			case suggest(s, LogOutputs) != "":
				p.errorf(f.path, "invalid output %q (did you mean %q?)", s, suggest(s, LogOutputs))
			default:
				p.errorf(f.path, "invalid output %q: want %s", s, strings.Join(LogOutputs, " or "))
			}
		}
	}
	if f, ok := t["facility"]; ok {
		if s, ok := p.str(f); ok {
			v := strings.ToLower(s)
			code, known := SyslogFacilities[v]
			bare, cut := strings.CutPrefix(v, "log_") // <syslog.h>'s LOG_DAEMON
			_, bareKnown := SyslogFacilities[bare]
			switch {
			case known:
				l.Facility, l.FacilityCode = v, code
			case cut && bareKnown:
				p.errorf(f.path, "invalid facility %q (did you mean %q?)", s, bare)
			case strings.HasPrefix(v, "local"):
				p.errorf(f.path, "invalid facility %q: the local facilities are local0 to local7", s)
			case suggest(s, facilityNames) != "":
				p.errorf(f.path, "invalid facility %q (did you mean %q?)", s, suggest(s, facilityNames))
			default:
				p.errorf(f.path, "invalid facility %q: want one of %s", s, strings.Join(facilityNames, ", "))
			}
		}
	}
	if f, ok := t["syslog_socket"]; ok {
		if s, ok := p.nonEmpty(f); ok {
			if filepath.IsAbs(s) {
				l.SyslogSocket = filepath.Clean(s)
			} else {
				p.errorf(f.path, "%q is not an absolute path", s)
			}
		}
	}
	// Set for syslog but sent to stdout: the operator expects lines in
	// syslog that will not be there. Not an error, as the keys are valid
	// and switching output is one line away.
	if outputOK && l.Output != "syslog" {
		for _, k := range []string{"facility", "syslog_socket"} {
			if f, ok := t[k]; ok {
				p.warnf(f.path, "has no effect: output is %q; set output = \"syslog\" to log to syslog", l.Output)
			}
		}
	}
}

func (p *parser) privsep(e entry, ps *Privsep) {
	m, ok := p.subtable(e)
	if !ok {
		return
	}
	t := p.table(&privsepSpec, e.path, m)
	if f, ok := t["user"]; ok {
		if s, ok := p.nonEmpty(f); ok {
			if strings.ContainsAny(s, ":\n") {
				p.errorf(f.path, "%q is not a valid account name", s)
			} else {
				ps.User = s
			}
		}
	}
	if f, ok := t["chroot"]; ok {
		if s, ok := p.nonEmpty(f); ok {
			if filepath.IsAbs(s) {
				ps.Chroot = filepath.Clean(s)
			} else {
				p.errorf(f.path, "%q is not an absolute path", s)
			}
		}
	}
	if f, ok := t["exec_idle"]; ok {
		if d, ok := p.duration(f); ok {
			ps.ExecIdle = d
		}
	}
	if f, ok := t["max_exec"]; ok {
		if n, ok := p.integer(f, 1, MaxExecLimit); ok {
			ps.MaxExec = n
		}
	}
}

func (p *parser) handlers(e entry) []Handler {
	var tables []map[string]any
	switch v := e.val.(type) {
	case []map[string]any: // [[handler]]
		tables = v
	case []any: // handler = [{...}, {...}]
		for i, el := range v {
			m, ok := el.(map[string]any)
			if !ok {
				p.errorf(append(slices.Clip(e.path), indexKey(i)), "expected a table, found %s", typeName(el))
				continue
			}
			tables = append(tables, m)
		}
		if len(tables) != len(v) {
			return nil
		}
	default:
		p.errorf(e.path, "expected an array of tables ([[handler]]), found %s", typeName(e.val))
		return nil
	}
	out := make([]Handler, 0, len(tables))
	for i, m := range tables {
		h := p.handler(append(slices.Clip(e.path), indexKey(i)), m)
		h.Number = i + 1
		out = append(out, h)
	}
	return out
}

func (p *parser) handler(base []string, m map[string]any) Handler {
	h := Handler{
		Line:           p.src.loc.line(base),
		Event:          DefaultEvent,
		LimitPeriod:    DefaultLimitPeriod,
		LimitBurst:     DefaultLimitBurst,
		CommandTimeout: DefaultCommandTimeout,
		RetryBackoff:   DefaultRetryBackoff,
		MinUID:         DefaultMinUID,
	}
	t := p.table(&handlerSpec, base, m)
	if f, ok := t["user"]; ok {
		h.User, _ = p.nonEmpty(f)
		if IsUserPattern(h.User) {
			h.Pattern = true
			if !ValidUserPattern(h.User) {
				p.errorf(f.path, "not a valid glob: %q has a syntax error (the rules are path.Match's: * is any run of characters but /, ? one character, [a-z] one of a class, [^a-z] one not in it, \\ quotes the next)", h.User)
			}
		}
	} else {
		p.errorf(append(slices.Clip(base), "user"), "missing: every [[handler]] needs the Dovecot user it serves")
	}
	if f, ok := t["event"]; ok {
		if s, ok := p.str(f); ok {
			if name, ok := canonicalEvent(s); ok {
				h.Event = name
			} else if guess := suggest(s, event.Names[:]); guess != "" {
				p.errorf(f.path, "unknown event %q (did you mean %q?)", s, guess)
			} else {
				p.errorf(f.path, "unknown event %q: want one of %s", s, strings.Join(event.Names[:], ", "))
			}
		}
	}
	if f, ok := t["command"]; ok {
		h.Command = p.command(f)
	} else {
		p.errorf(append(slices.Clip(base), "command"), "missing: every [[handler]] needs a command")
	}
	for k, dst := range map[string]*time.Duration{
		"delay": &h.Delay, "periodic": &h.Periodic,
		"limit_period": &h.LimitPeriod, "command_timeout": &h.CommandTimeout,
	} {
		if f, ok := t[k]; ok {
			if d, ok := p.duration(f); ok {
				*dst = d
			}
		}
	}
	if f, ok := t["limit_burst"]; ok {
		if n, ok := p.integer(f, 1, 1<<20); ok {
			h.LimitBurst = n
		}
	}
	if f, ok := t["run_as"]; ok {
		if s, ok := p.nonEmpty(f); ok {
			if strings.ContainsAny(s, ":\n") {
				p.errorf(f.path, "%q is not a valid account name", s)
			} else if why := checkRunAsVars(s); why != "" {
				p.errorf(f.path, "%s", why)
			} else {
				h.RunAs = s
			}
		}
	}
	h.Dynamic = h.Pattern && HasRunAsVars(h.RunAs)
	if f, ok := t["min_uid"]; ok {
		if n, ok := p.integer(f, 1, MaxMinUID); ok {
			h.MinUID = n
			if !HasRunAsVars(h.RunAs) {
				p.warnf(f.path, "has no effect: min_uid applies only to a run_as with %%-variables (run_as = \"%%n\"); an account named outright is not subject to it")
			}
		}
	}
	if h.Pattern {
		// Security and sense: a wildcard handler has no list of users,
		// only a rule for the users that mail arrives for; a run not
		// caused by an event would have no user to run for.
		if f, ok := t["periodic"]; ok {
			p.errorf(f.path, "not allowed on a wildcard handler (user = %q): there is no list of users to run it for; write a handler for each user that needs it", h.User)
		}
		if f, ok := t["run_at_start"]; ok {
			if b, ok := f.val.(bool); ok && b {
				p.errorf(f.path, "not allowed on a wildcard handler (user = %q): there is no list of users to run it for; write a handler for each user that needs it", h.User)
			}
		}
	}
	envPath := append(slices.Clip(base), "env")
	if f, ok := t["env"]; ok {
		h.Env = map[string]string{}
		p.env(f, h.Env)
		if len(h.Env) == 0 {
			h.Env = nil
		}
		envPath = f.path
	}
	if f, ok := t["pass_env"]; ok {
		h.PassEnv = p.passEnv(f, h.Env, envPath)
	}
	if f, ok := t["ip"]; ok {
		h.IP = p.prefixes(f)
	}
	if f, ok := t["run_at_start"]; ok {
		h.RunAtStart, _ = p.boolean(f)
	}
	retriesOK := true
	if f, ok := t["retries"]; ok {
		var n int
		if n, retriesOK = p.integer(f, 0, MaxRetries); retriesOK {
			h.Retries = n
		}
	}
	if f, ok := t["retry_backoff"]; ok {
		if d, ok := p.duration(f); ok {
			h.RetryBackoff = d
			// Valid but idle: the operator expects retries that will not
			// happen. A warning, as with the syslog keys: the fix is one
			// line away and the handler works as written.
			if retriesOK && h.Retries == 0 {
				p.warnf(f.path, "has no effect: retries is 0; set retries to the number of times a failed run is tried again")
			}
		}
	}
	return h
}

func canonicalEvent(s string) (string, bool) {
	for _, n := range event.Names {
		if strings.EqualFold(n, s) {
			return n, true
		}
	}
	return "", false
}

// command reads a command line, split like a POSIX shell would split it
// but never given to one, or an argv array taken as is.
func (p *parser) command(f entry) []string {
	var argv []string
	switch v := f.val.(type) {
	case string:
		s, ok := p.str(f)
		if !ok {
			return nil
		}
		args, ok := p.splits[s]
		if !ok {
			var err error
			if args, err = shlex.Split(s); err != nil {
				why := err.Error()
				switch {
				case strings.Contains(why, "closing quote"):
					why = "unbalanced quote"
				case strings.Contains(why, "escape"):
					why = "ends with a backslash"
				}
				p.errorf(f.path, "cannot split %q: %s", s, why)
				return nil
			}
			p.splits[s] = args
		}
		argv = slices.Clone(args) // each handler owns its argv
	case []any:
		elems, _ := p.array(f)
		for _, el := range elems {
			s, ok := p.str(el)
			if !ok {
				return nil
			}
			argv = append(argv, s)
		}
	default:
		p.errorf(f.path, "expected a string or an array of strings, found %s", typeName(v))
		return nil
	}
	if len(argv) == 0 {
		p.errorf(f.path, "empty command")
		return nil
	}
	if argv[0] == "" {
		p.errorf(f.path, "empty program name")
		return nil
	}
	if strings.HasPrefix(argv[0], HomeCommandPrefix) {
		if _, ok := HomeRelative(argv[0]); !ok {
			p.errorf(f.path, "program %q: ~/ must be followed by a clean path inside the home, such as ~/.config/imserious/new-mail (no .., no //, no trailing /)", argv[0])
			return nil
		}
	}
	return argv
}

// runAsSample is the user a run_as with %-variables is expanded for at
// load, to check what it can give.
const runAsSample = "alice@example.org"

// checkRunAsVars says what is wrong with a run_as's %-variables, or "":
// each '%' must start %u, %n, %d or %%, and what the run_as gives for a
// user must be able to name an account (no '/', no control character;
// "%%" gives a '%', which no account name has).
func checkRunAsVars(runAs string) string {
	if !HasRunAsVars(runAs) {
		return ""
	}
	name, err := ExpandRunAs(runAs, runAsSample)
	if err != nil {
		known := strings.TrimPrefix(err.Error(), "unknown variable: ")
		for i := 0; i < len(runAs); i++ {
			if runAs[i] != '%' {
				continue
			}
			if i+1 == len(runAs) {
				return fmt.Sprintf("%q ends with a lone %%, which is not a variable: %s", runAs, known)
			}
			i++
			if !strings.ContainsRune("und%", rune(runAs[i])) {
				_, size := utf8.DecodeRuneInString(runAs[i:])
				return fmt.Sprintf("%q uses %%%s, which is not a variable: %s", runAs, runAs[i:i+size], known)
			}
		}
		return fmt.Sprintf("%q: %v", runAs, err)
	}
	if !ValidAccountName(name) {
		return fmt.Sprintf("%q cannot name an account: for the user %q it gives %q, and an account name has no /, no %% and no control character", runAs, runAsSample, name)
	}
	return ""
}

func (p *parser) env(f entry, dst map[string]string) {
	m, ok := p.subtable(f)
	if !ok {
		return
	}
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		e := entry{val: m[k], path: append(slices.Clip(f.path), k)}
		switch {
		case !validEnvName(k):
			p.errorf(e.path, "invalid variable name: want letters, digits and _, not starting with a digit")
			continue
		case strings.HasPrefix(k, "IMSE_"):
			p.errorf(e.path, "names starting with IMSE_ are reserved for the event")
			continue
		}
		if s, ok := p.str(e); ok {
			dst[k] = s
		}
	}
}

// passEnv reads pass_env: names of the daemon's own variables, each once,
// none also set in the handler's env table (whose entries are at envPath).
//
// Security: PATH is fixed for every command (CommandPath), so a command
// found by bare name is the one Resolve checked; passing the daemon's
// would undo that. IMSE_* is the event's, in any case, so that a script
// cannot be fooled by a value the event did not send.
func (p *parser) passEnv(f entry, env map[string]string, envPath []string) []string {
	elems, ok := p.array(f)
	if !ok {
		return nil
	}
	out := make([]string, 0, len(elems))
	first := map[string][]string{}
	for _, el := range elems {
		s, ok := p.str(el)
		if !ok {
			continue
		}
		if prev, dup := first[s]; dup {
			line, key := p.src.where(prev)
			p.errorf(el.path, "%q is listed twice (first as %s, line %d)", s, key, line)
			continue
		}
		first[s] = el.path
		_, inEnv := env[s]
		switch {
		case !validEnvName(s):
			p.errorf(el.path, "%q is not a valid variable name: want letters, digits and _, not starting with a digit", s)
		case s == "PATH":
			p.errorf(el.path, "PATH cannot be passed: every command gets PATH=%s (set PATH in env to give it another)", CommandPath)
		case len(s) >= len("IMSE_") && strings.EqualFold(s[:len("IMSE_")], "IMSE_"):
			p.errorf(el.path, "%q cannot be passed: names starting with IMSE_ are reserved for the event", s)
		case inEnv:
			line, key := p.src.where(append(slices.Clip(envPath), s))
			p.errorf(el.path, "%q is also set in env (%s, line %d): take it from one or the other", s, key, line)
		default:
			out = append(out, s)
		}
	}
	return out
}

func validEnvName(s string) bool {
	if s == "" || s[0] >= '0' && s[0] <= '9' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}
