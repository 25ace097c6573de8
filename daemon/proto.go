package daemon

// The protocol between the processes of imserious, in one place, as
// OpenBSD httpd keeps every imsg in httpd.h. Each message has a type
// number, the channels it may travel on, the number of descriptors it
// carries, and its own wire struct with explicit field tags; nothing of
// another package goes on the wire as is. Receivers check the channel and
// the descriptor count of every message (checkMsg), decode strictly
// (privsep.DecodeJSON) and validate what they decoded: a child never
// trusts a less privileged sender, and a malformed message from the
// parent fails loudly instead of half-configuring a child.
//
// A configuration is streamed, one item per message, between a
// msgCfgBegin and a msgCfgEnd carrying the same generation (httpd brackets
// IMSG_CFG_* between IMSG_CTL_RESET and IMSG_CFG_DONE), so no
// configuration is bounded by the frame size. The same stream serves
// start-up, a child's restart and a reload; -n builds it too (Check), so
// it never calls a configuration good that cannot be sent.
//
//	type name              channel                 fds payload
//	1    msgCfgBegin       parent -> net, exec     0   wireBegin
//	2    msgCfgEnd         parent -> net, exec     0   wireEnd
//	3    msgNetGlobal      parent -> net           0   wireNetGlobal (one per stream, first)
//	4    msgNetAllow       parent -> net           0   wirePrefix (one allow entry)
//	5    msgNetTarget      parent -> net           0   wireTarget (one exec process)
//	6    msgNetRoute       parent -> net           0   wireRoute (one handler's route)
//	7    msgExecGlobal     parent -> exec          0   wireExecGlobal (one per stream, first)
//	8    msgExecHandler    parent -> exec          0   wireHandler (one handler)
//	9    msgListener       parent -> net           1   none: the bound socket
//	10   msgTLSPair        parent -> net           0   tlsreload.EncodePair bytes
//	11   msgExecChannel    parent -> net           1   wireExecChannel: socket to an exec process
//	12   msgNetChannel     parent -> exec          1   none: socket to the net process
//	13   msgStart          parent -> net, exec     0   none: drop privileges and serve
//	14   msgShutdown       parent -> net, exec     0   wireShutdown
//	15   msgReady          net, exec -> parent     0   wireReady: a generation is in force
//	16   msgOwed           net -> parent           0   wireOwed: events an exec process may not have
//	17   msgNetFault       exec -> parent          0   wireFault: the net process broke the protocol
//	18   msgFatal          net, exec -> parent     0   wireFault: the child's last words
//	19   msgEvent          net -> exec             0   wireEvent (binary, see encodeEvent)
//	20   msgRecover        net -> exec             0   wireRecover: run every handler once (and wildcard ones for these users)
//	21   msgChroot         parent -> net           1   none: the checked chroot directory, open
//	22   msgStatusReq      parent -> exec          0   wireCtlID: report every handler's state
//	23   msgRunReq         parent -> exec          0   wireRunReq: start matching handlers (manual)
//	24   msgStatusItem     exec -> parent          0   wireStatusItem (one handler)
//	25   msgCtlDone        exec -> parent          0   wireCtlDone: the end of an answer
//	26   msgStartRuns      parent -> exec          0   none: the run_at_start runs, at daemon start only
//	27   msgExecWant       net -> parent           0   wireExecWant: an exec process for an account of a wildcard run_as
//	28   msgExecRefused    parent -> net           0   wireExecAccount: that account gets none; drop what waits for it
//	29   msgExecRetire     parent -> net           0   wireExecRetire: send nothing more to this exec process
//	30   msgExecIdle       exec -> parent          0   wireExecIdle: an on-demand exec process has nothing to do, or again has
//	31   msgDrain          parent -> exec          0   none: finish what you have, then exit, once the net channel has ended
//	32   msgEvents         net -> exec             0   one or more wireEvents, each after its length (see appendBatchEvent)

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/imserious/imserious/config"
	"github.com/imserious/imserious/event"
	"github.com/imserious/imserious/exec"
	"github.com/imserious/imserious/internal/intern"
	"github.com/imserious/imserious/listener"
	"github.com/imserious/imserious/privsep"
)

const (
	msgCfgBegin uint32 = iota + 1
	msgCfgEnd
	msgNetGlobal
	msgNetAllow
	msgNetTarget
	msgNetRoute
	msgExecGlobal
	msgExecHandler
	msgListener
	msgTLSPair
	msgExecChannel
	msgNetChannel
	msgStart
	msgShutdown
	msgReady
	msgOwed
	msgNetFault
	msgFatal
	msgEvent
	msgRecover
	msgChroot
	msgStatusReq
	msgRunReq
	msgStatusItem
	msgCtlDone
	msgStartRuns
	msgExecWant
	msgExecRefused
	msgExecRetire
	msgExecIdle
	msgDrain
	msgEvents
	msgMax
)

// channel names one direction of one kind of socketpair.
type channel uint8

const (
	parentToNet channel = 1 << iota
	parentToExec
	netToParent
	execToParent
	netToExec
)

func (c channel) String() string {
	switch c {
	case parentToNet:
		return "parent->net"
	case parentToExec:
		return "parent->exec"
	case netToParent:
		return "net->parent"
	case execToParent:
		return "exec->parent"
	case netToExec:
		return "net->exec"
	}
	return "channel " + strconv.Itoa(int(c))
}

type msgSpec struct {
	name string
	on   channel // the channels it may travel on
	fds  int     // exactly this many descriptors
}

var protocol = [msgMax]msgSpec{
	msgCfgBegin:    {"cfg-begin", parentToNet | parentToExec, 0},
	msgCfgEnd:      {"cfg-end", parentToNet | parentToExec, 0},
	msgNetGlobal:   {"net-global", parentToNet, 0},
	msgNetAllow:    {"net-allow", parentToNet, 0},
	msgNetTarget:   {"net-target", parentToNet, 0},
	msgNetRoute:    {"net-route", parentToNet, 0},
	msgExecGlobal:  {"exec-global", parentToExec, 0},
	msgExecHandler: {"exec-handler", parentToExec, 0},
	msgListener:    {"listener", parentToNet, 1},
	msgTLSPair:     {"tls-pair", parentToNet, 0},
	msgExecChannel: {"exec-channel", parentToNet, 1},
	msgNetChannel:  {"net-channel", parentToExec, 1},
	msgStart:       {"start", parentToNet | parentToExec, 0},
	msgShutdown:    {"shutdown", parentToNet | parentToExec, 0},
	msgReady:       {"ready", netToParent | execToParent, 0},
	msgOwed:        {"owed", netToParent, 0},
	msgNetFault:    {"net-fault", execToParent, 0},
	msgFatal:       {"fatal", netToParent | execToParent, 0},
	msgEvent:       {"event", netToExec, 0},
	msgRecover:     {"recover", netToExec, 0},
	msgChroot:      {"chroot", parentToNet, 1},
	msgStatusReq:   {"status-req", parentToExec, 0},
	msgRunReq:      {"run-req", parentToExec, 0},
	msgStatusItem:  {"status-item", execToParent, 0},
	msgCtlDone:     {"ctl-done", execToParent, 0},
	msgStartRuns:   {"start-runs", parentToExec, 0},
	msgExecWant:    {"exec-want", netToParent, 0},
	msgExecRefused: {"exec-refused", parentToNet, 0},
	msgExecRetire:  {"exec-retire", parentToNet, 0},
	msgExecIdle:    {"exec-idle", execToParent, 0},
	msgDrain:       {"drain", parentToExec, 0},
	msgEvents:      {"events", netToExec, 0},
}

// errProtocol is wrapped by every rejection of checkMsg and of the
// decoders below.
var errProtocol = errors.New("protocol violation")

func msgName(typ uint32) string {
	if typ > 0 && typ < msgMax {
		return protocol[typ].name
	}
	return "type " + strconv.FormatUint(uint64(typ), 10)
}

// checkMsg accepts m only if its type may travel on ch with exactly the
// descriptors it declares. On error every descriptor of m is closed.
func checkMsg(ch channel, m privsep.Msg) error {
	var err error
	switch {
	case m.Type == 0 || m.Type >= msgMax:
		err = fmt.Errorf("%s: unknown message type %d: %w", ch, m.Type, errProtocol)
	case protocol[m.Type].on&ch == 0:
		err = fmt.Errorf("%s: message %s does not belong on this channel: %w", ch, msgName(m.Type), errProtocol)
	case len(m.Files) != protocol[m.Type].fds:
		err = fmt.Errorf("%s: message %s with %d descriptors, want %d: %w", ch, msgName(m.Type), len(m.Files), protocol[m.Type].fds, errProtocol)
	}
	if err != nil {
		closeFiles(m)
	}
	return err
}

func closeFiles(m privsep.Msg) {
	for _, f := range m.Files {
		f.Close()
	}
}

// receive reads a child's control channel in a goroutine of its own, so
// that the child's loop can wait on it and on its own events at once:
// each message comes on the first channel, and the error that ends the
// channel on the second.
func receive(ctl *privsep.Conn) (<-chan privsep.Msg, <-chan error) {
	recv := make(chan privsep.Msg)
	recvErr := make(chan error, 1)
	go func() {
		for {
			m, err := ctl.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			recv <- m
		}
	}()
	return recv, recvErr
}

// decode strictly decodes a message's JSON payload, naming the message in
// the error.
func decode(m privsep.Msg, v any) error {
	if err := privsep.DecodeJSON(m.Payload, v); err != nil {
		return fmt.Errorf("message %s: %w: %w", msgName(m.Type), errProtocol, err)
	}
	return nil
}

// noPayload rejects a payload on a message that has none.
func noPayload(m privsep.Msg) error {
	if len(m.Payload) != 0 {
		return fmt.Errorf("message %s: %d bytes of payload, want none: %w", msgName(m.Type), len(m.Payload), errProtocol)
	}
	return nil
}

// outMsg is one message to send.
type outMsg struct {
	typ     uint32
	payload []byte
	file    *os.File // nil: none
}

func jsonMsg(typ uint32, v any) (outMsg, error) {
	b, err := privsep.EncodeJSON(v)
	if err != nil {
		return outMsg{}, fmt.Errorf("message %s: %w", msgName(typ), err)
	}
	return outMsg{typ: typ, payload: b}, nil
}

// ---- the stream brackets ----

type wireBegin struct {
	Gen uint64 `json:"gen"`
}

type wireEnd struct {
	Gen   uint64 `json:"gen"`
	Items int    `json:"items"` // messages between begin and end
}

// maxItems bounds one stream, so that a confused parent cannot make a
// child grow without end: 16 MiB of configuration gives far fewer.
const maxItems = 1 << 20

// stream is the receiving side of the brackets: generations only grow,
// items come only inside a bracket, and the end must count them.
type stream struct {
	last  uint64 // the generation last completed; 0 before the first
	open  bool
	gen   uint64
	items int
}

func (s *stream) begin(m privsep.Msg) error {
	var b wireBegin
	if err := decode(m, &b); err != nil {
		return err
	}
	switch {
	case s.open:
		return fmt.Errorf("configuration %d begins inside configuration %d: %w", b.Gen, s.gen, errProtocol)
	case b.Gen <= s.last:
		return fmt.Errorf("configuration generation %d after %d: %w", b.Gen, s.last, errProtocol)
	}
	s.open, s.gen, s.items = true, b.Gen, 0
	return nil
}

func (s *stream) item(m privsep.Msg) error {
	if !s.open {
		return fmt.Errorf("message %s outside a configuration: %w", msgName(m.Type), errProtocol)
	}
	if s.items++; s.items > maxItems {
		return fmt.Errorf("configuration %d: over %d items: %w", s.gen, maxItems, errProtocol)
	}
	return nil
}

func (s *stream) end(m privsep.Msg) error {
	var e wireEnd
	if err := decode(m, &e); err != nil {
		return err
	}
	switch {
	case !s.open:
		return fmt.Errorf("configuration %d ends without a beginning: %w", e.Gen, errProtocol)
	case e.Gen != s.gen:
		return fmt.Errorf("configuration %d ends as generation %d: %w", s.gen, e.Gen, errProtocol)
	case e.Items != s.items:
		return fmt.Errorf("configuration %d: %d items received, %d sent: %w", s.gen, s.items, e.Items, errProtocol)
	}
	s.open, s.last = false, s.gen
	return nil
}

// bracket wraps items between a begin and an end of generation gen.
func bracket(gen uint64, items []outMsg) ([]outMsg, error) {
	b, err := jsonMsg(msgCfgBegin, wireBegin{Gen: gen})
	if err != nil {
		return nil, err
	}
	e, err := jsonMsg(msgCfgEnd, wireEnd{Gen: gen, Items: len(items)})
	if err != nil {
		return nil, err
	}
	out := make([]outMsg, 0, len(items)+2)
	out = append(out, b)
	out = append(out, items...)
	return append(out, e), nil
}

// ---- shared pieces ----

// logOptions travel to the children so every process logs alike.
type logOptions struct {
	Level     int    `json:"level"`
	Format    string `json:"format"`
	ANSI      bool   `json:"ansi"`
	Timestamp bool   `json:"timestamp"`
	Target    bool   `json:"target"`
	ShowLevel bool   `json:"show_level"`
	// Priority prefixes each line with its syslog severity (<6>), which
	// the parent reads to send it on to syslog.
	Priority bool `json:"priority"`
}

func (o logOptions) validate() error {
	switch o.Format {
	case "full", "compact", "pretty", "json":
		return nil
	}
	return fmt.Errorf("log format %q: %w", o.Format, errProtocol)
}

type wireAccount struct {
	Name   string `json:"name"`
	UID    int    `json:"uid"`
	GID    int    `json:"gid"`
	Groups []int  `json:"groups"`
	Home   string `json:"home"`
	Shell  string `json:"shell"`
}

func toWireAccount(a privsep.Account) wireAccount {
	return wireAccount{Name: a.Name, UID: a.UID, GID: a.GID, Groups: a.Groups, Home: a.Home, Shell: a.Shell}
}

func (w wireAccount) account() privsep.Account {
	return privsep.Account{Name: w.Name, UID: w.UID, GID: w.GID, Groups: w.Groups, Home: w.Home, Shell: w.Shell}
}

// validate checks an account a child will drop to (drop) or only run as.
//
// Security: uid 0 and primary gid 0 are refused whatever the parent says,
// so no bug upstream can make a child run commands or serve as root.
func (w wireAccount) validate(drop bool) error {
	if w.Name == "" {
		return fmt.Errorf("account without a name: %w", errProtocol)
	}
	if drop && (w.UID <= 0 || w.GID <= 0) {
		return fmt.Errorf("account %q: refusing uid %d gid %d: %w", w.Name, w.UID, w.GID, errProtocol)
	}
	return nil
}

func prefixStrings(ps []netip.Prefix) []string {
	if len(ps) == 0 {
		return nil
	}
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

func parsePrefixes(ss []string) ([]netip.Prefix, error) {
	if len(ss) == 0 {
		return nil, nil
	}
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("prefix %q: %w: %w", s, errProtocol, err)
		}
		out[i] = p
	}
	return out, nil
}

// ---- parent -> net ----

type wireDrop struct {
	Account wireAccount `json:"account"`
	Chroot  string      `json:"chroot"`
}

// wireAuth carries the Basic credentials as SHA-256 digests: the network
// process compares digests, so it never holds the password itself.
type wireAuth struct {
	UserSHA256 []byte `json:"user_sha256"`
	PassSHA256 []byte `json:"pass_sha256"`
}

type wireNetGlobal struct {
	Log            logOptions    `json:"log"`
	Drop           *wireDrop     `json:"drop"` // nil: not started as root
	Endpoint       string        `json:"endpoint"`
	MaxConnections int           `json:"max_connections"`
	MaxOpen        int           `json:"max_open"`
	MaxOpenPerIP   int           `json:"max_open_per_ip"`
	Timeout        time.Duration `json:"timeout_ns"`
	Auth           *wireAuth     `json:"auth"`
	TLS            bool          `json:"tls"` // serve HTTPS only, with the pairs msgTLSPair brings
}

type wirePrefix struct {
	Prefix string `json:"prefix"`
}

type wireTarget struct {
	Target  int    `json:"target"`
	Account string `json:"account"`
}

type wireRoute struct {
	User   string   `json:"user"`
	Event  string   `json:"event"`
	IP     []string `json:"ip"`
	Target int      `json:"target"`
	// RunAs and Handler: a handler whose account comes from the event's
	// user (config.Handler.Dynamic); Target is then unused.
	RunAs   string `json:"run_as"`
	Handler int    `json:"handler"`
}

type wireExecChannel struct {
	Target int `json:"target"`
	// Account is set for an exec process started on demand: the network
	// process routes the events of wildcard run_as handlers for this
	// account to it, and keeps it across reloads until told to retire it.
	Account string `json:"account"`
	// Recover: the exec process at the other end may have lost events
	// (it was restarted, or the previous network process could not hand
	// them over): send msgRecover on the channel.
	Recover bool `json:"recover"`
}

// netConfig is what a network process assembles from one stream.
type netConfig struct {
	global  *wireNetGlobal
	allow   []netip.Prefix
	targets map[int]string   // target -> account
	routes  []listener.Route // until the listener has them: see dropRoutes
}

// add takes one item of a net stream.
func (c *netConfig) add(m privsep.Msg) error {
	switch m.Type {
	case msgNetGlobal:
		if c.global != nil {
			return fmt.Errorf("second %s: %w", msgName(m.Type), errProtocol)
		}
		var g wireNetGlobal
		if err := decode(m, &g); err != nil {
			return err
		}
		c.global = &g
	case msgNetAllow:
		var w wirePrefix
		if err := decode(m, &w); err != nil {
			return err
		}
		ps, err := parsePrefixes([]string{w.Prefix})
		if err != nil {
			return err
		}
		c.allow = append(c.allow, ps...)
	case msgNetTarget:
		var w wireTarget
		if err := decode(m, &w); err != nil {
			return err
		}
		if w.Target < 0 || w.Account == "" || c.targets[w.Target] != "" {
			return fmt.Errorf("bad or repeated target %d (%q): %w", w.Target, w.Account, errProtocol)
		}
		if c.targets == nil {
			c.targets = map[int]string{}
		}
		c.targets[w.Target] = w.Account
	case msgNetRoute:
		var w wireRoute
		if err := decode(m, &w); err != nil {
			return err
		}
		ev, ok := event.Canonical(w.Event)
		if !ok || !event.ValidUser(w.User) || (config.IsUserPattern(w.User) && !config.ValidUserPattern(w.User)) {
			return fmt.Errorf("route for %q %q: %w", w.User, w.Event, errProtocol)
		}
		if w.RunAs != "" {
			if _, err := config.ExpandRunAs(w.RunAs, "u@d"); err != nil || !config.IsUserPattern(w.User) || w.Handler < 1 {
				return fmt.Errorf("route for %q: bad run_as %q: %w", w.User, w.RunAs, errProtocol)
			}
		}
		ip, err := parsePrefixes(w.IP)
		if err != nil {
			return err
		}
		c.routes = append(c.routes, listener.Route{User: w.User, Event: ev, IP: ip, Target: w.Target, RunAs: w.RunAs, Handler: w.Handler})
	default:
		return fmt.Errorf("message %s in a net configuration: %w", msgName(m.Type), errProtocol)
	}
	return nil
}

// validate re-checks a complete net configuration.
func (c *netConfig) validate() error {
	g := c.global
	switch {
	case g == nil:
		return fmt.Errorf("net configuration without %s: %w", msgName(msgNetGlobal), errProtocol)
	case g.Endpoint == "" || g.Endpoint[0] != '/':
		return fmt.Errorf("net configuration: bad endpoint %q: %w", g.Endpoint, errProtocol)
	case g.MaxConnections < 1 || g.Timeout <= 0 || g.MaxOpen < 1 || g.MaxOpenPerIP < 1:
		return fmt.Errorf("net configuration: bad limits: %w", errProtocol)
	}
	if err := g.Log.validate(); err != nil {
		return err
	}
	if a := g.Auth; a != nil && (len(a.UserSHA256) != sha256.Size || len(a.PassSHA256) != sha256.Size) {
		return fmt.Errorf("net configuration: credential digests of %d and %d bytes: %w", len(a.UserSHA256), len(a.PassSHA256), errProtocol)
	}
	if g.Drop != nil {
		if err := g.Drop.Account.validate(true); err != nil {
			return fmt.Errorf("net configuration: %w", err)
		}
		if g.Drop.Chroot == "" || g.Drop.Chroot[0] != '/' {
			return fmt.Errorf("net configuration: bad chroot %q: %w", g.Drop.Chroot, errProtocol)
		}
	}
	for _, r := range c.routes {
		if _, ok := c.targets[r.Target]; !ok && r.RunAs == "" {
			return fmt.Errorf("net configuration: route target %d is no exec process: %w", r.Target, errProtocol)
		}
	}
	return nil
}

// dropRoutes lets go of the routes once the listener has its own index
// of them (listener.New or Update: it keeps nothing of the Config), and
// returns how many there were. With 10,000 handlers the copy kept here
// was most of a megabyte the process never read again.
func (c *netConfig) dropRoutes() int {
	n := len(c.routes)
	c.routes = nil
	return n
}

// listenerConfig is the policy the HTTP server serves.
func (c *netConfig) listenerConfig() listener.Config {
	g := c.global
	lc := listener.Config{Allow: c.allow, Endpoint: g.Endpoint, MaxConnections: g.MaxConnections,
		MaxOpen: g.MaxOpen, MaxOpenPerIP: g.MaxOpenPerIP, Timeout: g.Timeout, Routes: c.routes}
	if g.Auth != nil {
		lc.Auth = &listener.Auth{}
		copy(lc.Auth.UserSHA256[:], g.Auth.UserSHA256)
		copy(lc.Auth.PassSHA256[:], g.Auth.PassSHA256)
	}
	return lc
}

// netItems is the body of a net stream for cfg; targets maps each
// account to its exec process's target number.
func netItems(cfg *config.Config, log logOptions, drop *wireDrop, targets map[string]int) ([]outMsg, error) {
	g := wireNetGlobal{Log: log, Drop: drop, Endpoint: cfg.Endpoint, MaxConnections: cfg.MaxConnections,
		MaxOpen: cfg.MaxOpenConnections, MaxOpenPerIP: cfg.MaxOpenPerIP, Timeout: cfg.Timeout, TLS: cfg.TLS != nil}
	if cfg.Auth != nil {
		d := listener.AuthDigests(cfg.Auth.User, cfg.Auth.Pass)
		g.Auth = &wireAuth{UserSHA256: d.UserSHA256[:], PassSHA256: d.PassSHA256[:]}
	}
	var out []outMsg
	add := func(typ uint32, v any) error {
		m, err := jsonMsg(typ, v)
		if err == nil {
			out = append(out, m)
		}
		return err
	}
	if err := add(msgNetGlobal, g); err != nil {
		return nil, err
	}
	for _, p := range cfg.Allow {
		if err := add(msgNetAllow, wirePrefix{Prefix: p.String()}); err != nil {
			return nil, err
		}
	}
	for _, a := range cfg.Accounts() {
		if err := add(msgNetTarget, wireTarget{Target: targets[a.Name], Account: a.Name}); err != nil {
			return nil, err
		}
	}
	for i := range cfg.Handlers {
		h := &cfg.Handlers[i]
		if h.Dynamic {
			if err := add(msgNetRoute, wireRoute{User: h.User, Event: h.Event, IP: prefixStrings(h.IP), RunAs: h.RunAs, Handler: h.Number}); err != nil {
				return nil, fmt.Errorf("handler at line %d: %w", h.Line, err)
			}
			continue
		}
		t, ok := targets[h.Account.Name]
		if !ok {
			return nil, fmt.Errorf("handler at line %d: no exec process for account %q", h.Line, h.Account.Name)
		}
		if err := add(msgNetRoute, wireRoute{User: h.User, Event: h.Event, IP: prefixStrings(h.IP), Target: t}); err != nil {
			return nil, fmt.Errorf("handler at line %d: %w", h.Line, err)
		}
	}
	return out, nil
}

// ---- parent -> exec ----

type wireExecGlobal struct {
	Log     logOptions  `json:"log"`
	Account wireAccount `json:"account"`
	Drop    bool        `json:"drop"` // started as root: drop to Account
	// OnDemand: started for an account of a wildcard run_as; it reports
	// when it is idle (msgExecIdle) and may be drained.
	OnDemand bool `json:"on_demand"`
}

type wireHandler struct {
	Line           int               `json:"line"`
	Number         int               `json:"number"`
	User           string            `json:"user"`
	Event          string            `json:"event"`
	Command        []string          `json:"command"`
	Path           string            `json:"path"`
	Delay          time.Duration     `json:"delay_ns"`
	LimitPeriod    time.Duration     `json:"limit_period_ns"`
	LimitBurst     int               `json:"limit_burst"`
	Periodic       time.Duration     `json:"periodic_ns"`
	RunAs          string            `json:"run_as"`
	Env            map[string]string `json:"env"`
	CommandTimeout time.Duration     `json:"command_timeout_ns"`
	IP             []string          `json:"ip"`
	RunAtStart     bool              `json:"run_at_start"`
	Retries        int               `json:"retries"`
	RetryBackoff   time.Duration     `json:"retry_backoff_ns"`
	Pattern        bool              `json:"pattern"`
	MinUID         int               `json:"min_uid"`
	Dynamic        bool              `json:"dynamic"`
}

func toWireHandler(h *config.Handler) wireHandler {
	return wireHandler{Line: h.Line, Number: h.Number, User: h.User, Event: h.Event, Command: h.Command, Path: h.Path,
		Delay: h.Delay, LimitPeriod: h.LimitPeriod, LimitBurst: h.LimitBurst, Periodic: h.Periodic,
		RunAs: h.RunAs, Env: h.Env, CommandTimeout: h.CommandTimeout, IP: prefixStrings(h.IP),
		RunAtStart: h.RunAtStart, Retries: h.Retries, RetryBackoff: h.RetryBackoff,
		Pattern: h.Pattern, MinUID: h.MinUID, Dynamic: h.Dynamic}
}

// handler validates a received handler and rebuilds it for the exec
// package, with the process's own account.
func (w wireHandler) handler(acct privsep.Account) (config.Handler, error) {
	fail := func(why string) (config.Handler, error) {
		return config.Handler{}, fmt.Errorf("handler at line %d: %s: %w", w.Line, why, errProtocol)
	}
	ev, ok := event.Canonical(w.Event)
	switch {
	case !ok:
		return fail("unknown event " + strconv.Quote(w.Event))
	case !event.ValidUser(w.User):
		return fail("bad user")
	case len(w.Command) == 0 || w.Path == "" || (w.Path[0] != '/' && !homeProgram(w.Path)):
		return fail("no resolved command")
	case w.Pattern != config.IsUserPattern(w.User) || (w.Pattern && !config.ValidUserPattern(w.User)):
		return fail("bad user pattern")
	case w.Dynamic && (!w.Pattern || !config.HasRunAsVars(w.RunAs)):
		return fail("bad wildcard run_as")
	case w.Dynamic && (w.MinUID < 1 || acct.UID < w.MinUID):
		// Security: the parent streams a wildcard handler only to
		// accounts at or above its min_uid; anything else is a parent
		// gone wrong, and must not run.
		return fail("account below min_uid")
	case w.Delay < 0 || w.LimitPeriod < 0 || w.Periodic < 0 || w.CommandTimeout < 0 || w.LimitBurst < 1:
		return fail("bad timing")
	case w.Line < 0 || w.Number < 0:
		return fail("bad position")
	case w.Retries < 0 || w.Retries > config.MaxRetries || w.RetryBackoff < 0:
		return fail("bad retries")
	}
	ip, err := parsePrefixes(w.IP)
	if err != nil {
		return config.Handler{}, fmt.Errorf("handler at line %d: %w", w.Line, err)
	}
	env := w.Env
	if len(env) == 0 {
		env = nil // as config has it
	}
	return config.Handler{Line: w.Line, Number: w.Number, User: w.User, Event: ev, Command: w.Command, Path: w.Path,
		Delay: w.Delay, LimitPeriod: w.LimitPeriod, LimitBurst: w.LimitBurst, Periodic: w.Periodic,
		RunAs: w.RunAs, Env: env, CommandTimeout: w.CommandTimeout, IP: ip, Account: acct,
		RunAtStart: w.RunAtStart, Retries: w.Retries, RetryBackoff: w.RetryBackoff,
		Pattern: w.Pattern, MinUID: w.MinUID, Dynamic: w.Dynamic}, nil
}

// homeProgram reports whether a handler's Path is a program in the
// account's home, looked up when it runs.
func homeProgram(path string) bool {
	_, ok := config.HomeRelative(path)
	return ok
}

// execConfig is what an exec process assembles from one stream.
type execConfig struct {
	global   *wireExecGlobal
	handlers []wireHandler
}

func (c *execConfig) add(m privsep.Msg) error {
	switch m.Type {
	case msgExecGlobal:
		if c.global != nil {
			return fmt.Errorf("second %s: %w", msgName(m.Type), errProtocol)
		}
		var g wireExecGlobal
		if err := decode(m, &g); err != nil {
			return err
		}
		c.global = &g
	case msgExecHandler:
		var w wireHandler
		if err := decode(m, &w); err != nil {
			return err
		}
		c.handlers = append(c.handlers, w)
	default:
		return fmt.Errorf("message %s in an exec configuration: %w", msgName(m.Type), errProtocol)
	}
	return nil
}

// build validates the configuration for the exec process of account name
// and returns its handlers.
func (c *execConfig) build(name string) ([]config.Handler, error) {
	g := c.global
	if g == nil {
		return nil, fmt.Errorf("exec configuration without %s: %w", msgName(msgExecGlobal), errProtocol)
	}
	if err := g.Log.validate(); err != nil {
		return nil, err
	}
	if err := g.Account.validate(g.Drop); err != nil {
		return nil, err
	}
	if g.Account.Name != name {
		return nil, fmt.Errorf("exec process of %q configured for account %q: %w", name, g.Account.Name, errProtocol)
	}
	acct := g.Account.account()
	hs := make([]config.Handler, 0, len(c.handlers))
	// Most handlers of an account run the same program as the same
	// run_as, and each message decoded has its own copies: with 10,000
	// handlers, over half a megabyte. The exec package only reads them (its
	// runner copies the arguments it passes on).
	var in intern.Table
	for _, w := range c.handlers {
		h, err := w.handler(acct)
		if err != nil {
			return nil, err
		}
		h.Path, h.RunAs, h.Command = in.Str(h.Path), in.Str(h.RunAs), in.Argv(h.Command)
		hs = append(hs, h)
	}
	return hs, nil
}

// execItems is the body of the stream for the exec process of acct.
func execItems(cfg *config.Config, log logOptions, acct privsep.Account, drop bool) ([]outMsg, error) {
	g, err := jsonMsg(msgExecGlobal, wireExecGlobal{Log: log, Account: toWireAccount(acct), Drop: drop})
	if err != nil {
		return nil, err
	}
	out := []outMsg{g}
	for i := range cfg.Handlers {
		h := &cfg.Handlers[i]
		// Every exec process gets the wildcard run_as handlers its
		// account may run: an event of one of their users whose run_as
		// names this account comes to it, whether it exists for other
		// handlers or was started on demand.
		if h.Account.Name != acct.Name && !(h.Dynamic && dynamicAllows(cfg, h, acct)) {
			continue
		}
		m, err := jsonMsg(msgExecHandler, toWireHandler(h))
		if err != nil {
			return nil, fmt.Errorf("handler at line %d: %w", h.Line, err)
		}
		out = append(out, m)
	}
	return out, nil
}

// dynamicAllows reports whether a wildcard run_as handler may run as an
// account already known (config.CheckDynamicAccount, the rules
// DynamicAccount applies).
func dynamicAllows(cfg *config.Config, h *config.Handler, acct privsep.Account) bool {
	return cfg.CheckDynamicAccount(h, acct) == nil
}

// ---- exec processes on demand ----

type wireExecWant struct {
	Account string `json:"account"`
	Handler int    `json:"handler"` // the number of a handler whose run_as names Account for User
	User    string `json:"user"`
	// Dropped counts the events of Account accepted and dropped since the
	// parent last refused it, for the refusal's next line.
	Dropped int `json:"dropped"`
}

func (w wireExecWant) validate() error {
	if !config.ValidAccountName(w.Account) || !event.ValidUser(w.User) || w.Handler < 1 || len(w.User) > maxUser || w.Dropped < 0 {
		return fmt.Errorf("exec want: bad account, user or handler: %w", errProtocol)
	}
	return nil
}

// maxUser bounds a user name in the messages of exec processes on demand
// and recovery lists; Dovecot's are far shorter.
const maxUser = 1024

type wireExecAccount struct {
	Account string `json:"account"`
}

type wireExecRetire struct {
	Target int `json:"target"`
}

type wireExecIdle struct {
	Idle bool `json:"idle"`
}

// wireRecover lists users whose events an exec process may have lost:
// its wildcard handlers run once for each of them too.
type wireRecover struct {
	Users []string `json:"users"`
}

// maxRecoverUsers bounds wireRecover.Users, as the network process keeps
// at most that many per exec process.
const maxRecoverUsers = 256

func (w wireRecover) validate() error {
	if len(w.Users) > maxRecoverUsers {
		return fmt.Errorf("recover: %d users: %w", len(w.Users), errProtocol)
	}
	for _, u := range w.Users {
		if !event.ValidUser(u) || len(u) > maxUser {
			return fmt.Errorf("recover: bad user: %w", errProtocol)
		}
	}
	return nil
}

// ---- control messages ----

type wireShutdown struct {
	Grace time.Duration `json:"grace_ns"` // how long running commands may go on
}

type wireReady struct {
	Gen uint64 `json:"gen"`
}

type wireOwed struct {
	Target int  `json:"target"`
	Owed   bool `json:"owed"` // true: a recovery is due; false: it was sent
}

type wireFault struct {
	Reason string `json:"reason"`
}

// maxReason caps what a child may make the parent log.
const maxReason = 2 << 10

func (f wireFault) validate() error {
	if len(f.Reason) > maxReason {
		return fmt.Errorf("fault reason of %d bytes: %w", len(f.Reason), errProtocol)
	}
	return nil
}

// ---- the operator's requests (imseriousctl, through the parent) ----

// wireCtlID names one request of the parent, so that a late answer to an
// earlier one is not taken for this one's.
type wireCtlID struct {
	ID uint64 `json:"id"`
}

type wireRunReq struct {
	ID    uint64 `json:"id"`
	User  string `json:"user"`
	Event string `json:"event"` // canonical, or "" for every event
}

func (r wireRunReq) validate() error {
	if !event.ValidUser(r.User) {
		return fmt.Errorf("run request: bad user: %w", errProtocol)
	}
	if _, ok := event.Canonical(r.Event); r.Event != "" && !ok {
		return fmt.Errorf("run request: unknown event %q: %w", r.Event, errProtocol)
	}
	return nil
}

// wireStatusItem is one handler's state as its exec process reports it.
// The parent trusts none of it but the numbers and times: which handler
// it is (user, event, account) comes from the parent's own configuration,
// by Number.
type wireStatusItem struct {
	ID     uint64 `json:"id"`
	Number int    `json:"number"`
	// User is set on the state of one user of a wildcard handler.
	User         string       `json:"user"`
	State        string       `json:"state"`
	Due          time.Time    `json:"due"`
	Pending      int          `json:"pending"`
	PID          int          `json:"pid"`
	Since        time.Time    `json:"since"`
	LastRun      *wireLastRun `json:"last_run"`
	NextPeriodic time.Time    `json:"next_periodic"`
	Runs         int          `json:"runs"`
	Failures     int          `json:"failures"`
}

type wireLastRun struct {
	Start      time.Time     `json:"start"`
	Duration   time.Duration `json:"duration_ns"`
	ExitStatus *int          `json:"exit_status"`
	Signal     string        `json:"signal"`
	Trigger    string        `json:"trigger"`
}

// validStates are the states a handler reports.
var validStates = []string{"idle", "delayed", "deferred", "running", "retrying"}

// maxWord bounds a signal or trigger name from an exec process.
const maxWord = 32

// validTriggers are the triggers a run reports.
var validTriggers = []string{exec.TriggerEvent, exec.TriggerPeriodic, exec.TriggerRecovery,
	exec.TriggerManual, exec.TriggerStart, exec.TriggerRetry}

// Security: the exec process runs as its account, which may be hostile,
// and imseriousctl prints these words on root's terminal: every string
// is a known word or a signal name of letters and digits, never bytes of
// the account's choosing.
func (w *wireStatusItem) validate() error {
	switch {
	case !slices.Contains(validStates, w.State):
		return fmt.Errorf("status: state %q: %w", truncate(w.State, maxWord), errProtocol)
	case w.Number < 1 || w.Pending < 0 || w.PID < 0 || w.Runs < 0 || w.Failures < 0:
		return fmt.Errorf("status: negative count: %w", errProtocol)
	case w.LastRun != nil && (!signalWord(w.LastRun.Signal) || !slices.Contains(validTriggers, w.LastRun.Trigger) || w.LastRun.Duration < 0):
		return fmt.Errorf("status: bad last run: %w", errProtocol)
	case w.User != "" && (!event.ValidUser(w.User) || len(w.User) > maxUser):
		// ValidUser refuses control characters: no escape sequence
		// reaches root's terminal through a user's name.
		return fmt.Errorf("status: bad user: %w", errProtocol)
	}
	return nil
}

// signalWord accepts "" or a signal name as the runner writes it: SIGKILL,
// SIGRTMIN+3, or "signal 34" for one without a name.
func signalWord(s string) bool {
	if len(s) > maxWord {
		return false
	}
	for _, c := range []byte(s) {
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '+' || c == '-' || c == ' ') {
			return false
		}
	}
	return true
}

// wireCtlDone ends the answer to a request: how many status items came
// before it, and for a run request how many handlers it started.
type wireCtlDone struct {
	ID      uint64 `json:"id"`
	Items   int    `json:"items"`
	Matched int    `json:"matched"`
}

// ---- net -> exec ----

// maxPeer bounds the text of the peer before the body of an event.
const maxPeer = 64

// encodeEvent is the wire form of wireEvent: the peer as ip:port, a
// newline, then the body exactly as received (binary rather than JSON so
// the body is not escaped again on the request path). The exec process
// decodes and validates the body again.
func encodeEvent(remote netip.AddrPort, body []byte) []byte {
	f, err := eventFrame(remote, body)
	if err != nil {
		return nil
	}
	return f[privsep.HeaderLen:]
}

// eventFrame is the whole frame of a msgEvent, built with one allocation
// and one copy of the body: the request path's way.
func eventFrame(remote netip.AddrPort, body []byte) ([]byte, error) {
	var buf [maxPeer]byte
	peer := remote.AppendTo(buf[:0])
	f, err := privsep.NewFrame(msgEvent, len(peer)+1+len(body))
	if err != nil {
		return nil, err
	}
	return appendEvent(f, peer, body), nil
}

// appendEvent appends what encodeEvent makes of peer (as
// netip.AddrPort.AppendTo writes it) and body.
func appendEvent(f, peer, body []byte) []byte {
	f = append(f, peer...)
	f = append(f, '\n')
	return append(f, body...)
}

// decodeEvent parses what encodeEvent made; the body aliases p.
func decodeEvent(p []byte) (netip.AddrPort, []byte, error) {
	for i, c := range p {
		if c == '\n' {
			ap, err := netip.ParseAddrPort(string(p[:i]))
			if err != nil {
				return netip.AddrPort{}, nil, fmt.Errorf("event message: bad peer: %w: %w", errProtocol, err)
			}
			// Strict: only what encodeEvent writes ("[::]:0", never
			// "[::0]:0"), so one peer has one spelling on the wire.
			var buf [maxPeer]byte
			if !bytes.Equal(ap.AppendTo(buf[:0]), p[:i]) {
				return netip.AddrPort{}, nil, fmt.Errorf("event message: peer %q not in canonical form: %w", p[:i], errProtocol)
			}
			body := p[i+1:]
			if len(body) > listener.MaxBody {
				return netip.AddrPort{}, nil, fmt.Errorf("event message: body of %d bytes over %d: %w", len(body), listener.MaxBody, errProtocol)
			}
			return ap, body, nil
		}
		if i > maxPeer {
			break
		}
	}
	return netip.AddrPort{}, nil, fmt.Errorf("event message: no peer: %w", errProtocol)
}

// A msgEvents payload is one or more entries, each an event as
// encodeEvent makes it after its length as a big-endian uint32. The
// network process gathers the events that arrive while it sends the
// previous batch into the next, so that under load the exec process wakes
// once for many of them.
const batchEntry = 4

// batchEventSize is the room an event takes in a msgEvents payload.
func batchEventSize(peer, body []byte) int { return batchEntry + len(peer) + 1 + len(body) }

// appendBatchEvent appends the event of peer (as netip.AddrPort.AppendTo
// writes it) and body to f, a msgEvents frame begun by
// privsep.StartFrame; the caller keeps the payload within
// privsep.MaxPayload (batchEventSize).
func appendBatchEvent(f, peer, body []byte) []byte {
	f = binary.BigEndian.AppendUint32(f, uint32(len(peer)+1+len(body)))
	return appendEvent(f, peer, body)
}

// decodeEvents calls each with every event of a msgEvents payload, in
// order: one or more entries that fill it exactly, each an event
// decodeEvent accepts. It stops at the first malformed entry or error of
// each and returns it; the events before it were delivered, as they would
// have been had each come in a message of its own. remote and body alias
// p.
func decodeEvents(p []byte, each func(remote netip.AddrPort, body []byte) error) error {
	if len(p) == 0 {
		return fmt.Errorf("events message: empty: %w", errProtocol)
	}
	for i := 0; len(p) > 0; i++ {
		e, rest, err := nextBatchEvent(p, i)
		if err != nil {
			return err
		}
		remote, body, err := decodeEvent(e)
		if err != nil {
			return fmt.Errorf("events message: event %d: %w", i, err)
		}
		if err := each(remote, body); err != nil {
			return err
		}
		p = rest
	}
	return nil
}

// nextBatchEvent cuts the first entry, the i-th, off a msgEvents payload.
func nextBatchEvent(p []byte, i int) (event, rest []byte, err error) {
	if len(p) < batchEntry {
		return nil, nil, fmt.Errorf("events message: %d bytes after event %d, no length: %w", len(p), i, errProtocol)
	}
	// Compared as uint64: a huge length cannot wrap on 32-bit systems.
	n := uint64(binary.BigEndian.Uint32(p))
	if n > uint64(len(p)-batchEntry) {
		return nil, nil, fmt.Errorf("events message: event %d of %d bytes, %d left: %w", i, n, len(p)-batchEntry, errProtocol)
	}
	return p[batchEntry : batchEntry+n], p[batchEntry+n:], nil
}

// ---- -n ----

// Check builds every message that start-up would send for cfg (resolved
// for root), so that -n and a reload refuse a configuration that could
// not be sent. It sends nothing.
func Check(cfg *config.Config, root bool, log logOptions) error {
	var drop *wireDrop
	if root {
		d, err := dropFor(cfg)
		if err != nil {
			return err
		}
		drop = d
	}
	_, err := streamsFor(cfg, root, log, drop, 1, nil)
	return err
}

// streams are the configuration streams for every process.
type streams struct {
	net     []outMsg
	exec    map[string][]outMsg // by account
	targets map[string]int
}

// streamsFor builds the streams of generation gen. targets gives the
// target numbers of accounts already known (nil: number them afresh);
// new accounts get numbers above every one in use.
func streamsFor(cfg *config.Config, root bool, log logOptions, drop *wireDrop, gen uint64, targets map[string]int) (*streams, error) {
	s := &streams{exec: map[string][]outMsg{}, targets: map[string]int{}}
	next := 0
	for _, t := range targets {
		next = max(next, t+1)
	}
	for _, a := range cfg.Accounts() {
		if t, ok := targets[a.Name]; ok {
			s.targets[a.Name] = t
		} else {
			s.targets[a.Name] = next
			next++
		}
		var err error
		if s.exec[a.Name], err = execStreamFor(cfg, log, a, root, gen); err != nil {
			return nil, err
		}
	}
	var err error
	if s.net, err = netStreamFor(cfg, log, drop, s.targets, gen); err != nil {
		return nil, err
	}
	return s, nil
}

// execStreamFor is the stream of generation gen for the exec process of
// account a (streamsFor's, and the parent's when it starts one later).
func execStreamFor(cfg *config.Config, log logOptions, a privsep.Account, root bool, gen uint64) ([]outMsg, error) {
	items, err := execItems(cfg, log, a, root)
	if err != nil {
		return nil, fmt.Errorf("exec[%s]: %w", a.Name, err)
	}
	return bracket(gen, items)
}

// netStreamFor is the network process's stream of generation gen.
func netStreamFor(cfg *config.Config, log logOptions, drop *wireDrop, targets map[string]int, gen uint64) ([]outMsg, error) {
	items, err := netItems(cfg, log, drop, targets)
	if err != nil {
		return nil, fmt.Errorf("net: %w", err)
	}
	return bracket(gen, items)
}

// dropFor returns where the network process drops to when started as root.
func dropFor(cfg *config.Config) (*wireDrop, error) {
	acct, err := privsep.LookupAccount(cfg.Privsep.User)
	if err != nil {
		return nil, fmt.Errorf("privsep user: %w", err)
	}
	if acct.UID == 0 {
		return nil, fmt.Errorf("privsep user %q has uid 0", acct.Name)
	}
	acct.Groups = []int{acct.GID} // the network process gets no supplementary groups
	return &wireDrop{Account: toWireAccount(acct), Chroot: cfg.Privsep.Chroot}, nil
}
