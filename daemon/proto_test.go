package daemon

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/imserious/imserious/config"
	"github.com/imserious/imserious/listener"
	"github.com/imserious/imserious/privsep"
)

func routeTo(target int) listener.Route {
	return listener.Route{User: "a", Event: "MessageNew", Target: target}
}

func TestEventMessageRoundTrip(t *testing.T) {
	for _, ap := range []string{"127.0.0.1:12525", "[::1]:1", "[2001:db8::7]:65535", "[fe80::1%eth0]:80"} {
		remote := netip.MustParseAddrPort(ap)
		body := []byte(`{"user":"alice","event":"MessageNew"}` + "\n" + `trailing`)
		got, gotBody, err := decodeEvent(encodeEvent(remote, body))
		if err != nil || got != remote || !bytes.Equal(gotBody, body) {
			t.Errorf("%s: got %v %q %v", ap, got, gotBody, err)
		}
	}
}

func TestEventMessageRejects(t *testing.T) {
	for _, p := range []string{
		"",
		"no newline at all",
		"\n{}",
		"127.0.0.1\n{}",       // no port
		"localhost:80\n{}",    // a name, not an address
		"127.0.0.1:99999\n{}", // port out of range
		string(bytes.Repeat([]byte("1"), 100)) + "\n{}",
		"127.0.0.1:1\n" + strings.Repeat(" ", 64<<10+1), // over the body limit
		"[::0]:1\n{}", // not as encodeEvent spells it
	} {
		if _, _, err := decodeEvent([]byte(p)); !errors.Is(err, errProtocol) {
			t.Errorf("%.40q: %v", p, err)
		}
	}
}

func TestCheckMsg(t *testing.T) {
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dup := func() *os.File {
		g, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	for _, c := range []struct {
		name string
		ch   channel
		m    privsep.Msg
		ok   bool
	}{
		{"event from net", netToExec, privsep.Msg{Type: msgEvent}, true},
		{"unknown type", netToExec, privsep.Msg{Type: 99}, false},
		{"type 0", netToExec, privsep.Msg{Type: 0}, false},
		{"control type on the event channel", netToExec, privsep.Msg{Type: msgShutdown}, false},
		{"parent's message from a child", execToParent, privsep.Msg{Type: msgStart}, false},
		{"owed from an exec process", execToParent, privsep.Msg{Type: msgOwed}, false},
		{"extra descriptor", netToExec, privsep.Msg{Type: msgEvent, Files: []*os.File{dup()}}, false},
		{"missing descriptor", parentToNet, privsep.Msg{Type: msgListener}, false},
		{"two descriptors", parentToExec, privsep.Msg{Type: msgNetChannel, Files: []*os.File{dup(), dup()}}, false},
		{"listener with its socket", parentToNet, privsep.Msg{Type: msgListener, Files: []*os.File{f}}, true},
		{"status item from an exec process", execToParent, privsep.Msg{Type: msgStatusItem}, true},
		// The network process has no say in the operator's requests.
		{"status item from the network process", netToParent, privsep.Msg{Type: msgStatusItem}, false},
		{"ctl answer from the network process", netToParent, privsep.Msg{Type: msgCtlDone}, false},
		{"run request to the network process", parentToNet, privsep.Msg{Type: msgRunReq}, false},
		{"start runs from the network process", netToExec, privsep.Msg{Type: msgStartRuns}, false},
	} {
		err := checkMsg(c.ch, c.m)
		if c.ok != (err == nil) || (err != nil && !errors.Is(err, errProtocol)) {
			t.Errorf("%s: %v", c.name, err)
		}
		if err != nil {
			// Rejected messages have their descriptors closed.
			for _, f := range c.m.Files {
				if _, err := f.Stat(); err == nil {
					t.Errorf("%s: descriptor left open", c.name)
				}
			}
		}
	}
}

func msgOf(t *testing.T, typ uint32, v any) privsep.Msg {
	t.Helper()
	m := mustJSON(t, typ, v)
	return privsep.Msg{Type: m.typ, Payload: m.payload}
}

func TestStreamBrackets(t *testing.T) {
	begin := func(g uint64) privsep.Msg { return msgOf(t, msgCfgBegin, wireBegin{Gen: g}) }
	end := func(g uint64, n int) privsep.Msg { return msgOf(t, msgCfgEnd, wireEnd{Gen: g, Items: n}) }
	item := privsep.Msg{Type: msgNetAllow}
	type step struct {
		m    privsep.Msg
		item bool
	}
	for _, c := range []struct {
		name  string
		steps []step
		bad   int // index of the step that must fail; -1: none
	}{
		{"good", []step{{begin(1), false}, {item, true}, {end(1, 1), false}, {begin(2), false}, {end(2, 0), false}}, -1},
		{"item outside", []step{{item, true}}, 0},
		{"end without begin", []step{{end(1, 0), false}}, 0},
		{"begin inside", []step{{begin(1), false}, {begin(2), false}}, 1},
		{"wrong generation at the end", []step{{begin(1), false}, {end(2, 0), false}}, 1},
		{"generation not growing", []step{{begin(2), false}, {end(2, 0), false}, {begin(2), false}}, 2},
		{"generation going back", []step{{begin(2), false}, {end(2, 0), false}, {begin(1), false}}, 2},
		{"item count short", []step{{begin(1), false}, {item, true}, {end(1, 2), false}}, 2},
		{"item count long", []step{{begin(1), false}, {item, true}, {item, true}, {end(1, 1), false}}, 3},
		{"unknown field", []step{{privsep.Msg{Type: msgCfgBegin, Payload: []byte(`{"gen":1,"x":1}`)}, false}}, 0},
		{"trailing data", []step{{privsep.Msg{Type: msgCfgBegin, Payload: []byte(`{"gen":1} {}`)}, false}}, 0},
		{"truncated", []step{{privsep.Msg{Type: msgCfgBegin, Payload: []byte(`{"gen":1`)}, false}}, 0},
	} {
		var s stream
		for i, st := range c.steps {
			var err error
			switch {
			case st.item:
				err = s.item(st.m)
			case st.m.Type == msgCfgBegin:
				err = s.begin(st.m)
			default:
				err = s.end(st.m)
			}
			if (err != nil) != (i == c.bad) {
				t.Errorf("%s: step %d: %v", c.name, i, err)
				break
			}
			if err != nil {
				if !errors.Is(err, errProtocol) {
					t.Errorf("%s: %v is no protocol violation", c.name, err)
				}
				break
			}
		}
	}
}

func TestNetConfigRejects(t *testing.T) {
	good := func() *netConfig {
		return &netConfig{global: &wireNetGlobal{Log: testLog, Endpoint: "/notify", MaxConnections: 1, MaxOpen: 1, MaxOpenPerIP: 1, Timeout: 1},
			targets: map[int]string{0: "a"}}
	}
	if err := good().validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		m    privsep.Msg
	}{
		{"bad prefix", msgOf(t, msgNetAllow, wirePrefix{Prefix: "10.0.0.0/33"})},
		{"unknown event", msgOf(t, msgNetRoute, wireRoute{User: "a", Event: "Nope"})},
		{"control character in a user", msgOf(t, msgNetRoute, wireRoute{User: "a\n", Event: "MessageNew"})},
		{"bad route ip", msgOf(t, msgNetRoute, wireRoute{User: "a", Event: "MessageNew", IP: []string{"x"}})},
		{"repeated target", msgOf(t, msgNetTarget, wireTarget{Target: 0, Account: "b"})},
		{"negative target", msgOf(t, msgNetTarget, wireTarget{Target: -1, Account: "b"})},
		{"second global", msgOf(t, msgNetGlobal, wireNetGlobal{})},
		{"exec message", msgOf(t, msgExecHandler, wireHandler{})},
		{"unknown field", privsep.Msg{Type: msgNetAllow, Payload: []byte(`{"prefix":"10.0.0.0/8","x":1}`)}},
	} {
		if err := good().add(c.m); !errors.Is(err, errProtocol) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	for i, mod := range []func(c *netConfig){
		func(c *netConfig) { c.global = nil },
		func(c *netConfig) { c.global.Endpoint = "notify" },
		func(c *netConfig) { c.global.MaxConnections = 0 },
		func(c *netConfig) { c.global.Timeout = 0 },
		func(c *netConfig) { c.global.MaxOpen = 0 },
		func(c *netConfig) { c.global.Auth = &wireAuth{UserSHA256: []byte{1}, PassSHA256: make([]byte, 32)} },
		func(c *netConfig) { c.global.MaxOpenPerIP = 0 },
		func(c *netConfig) { c.global.Log.Format = "xml" },
		func(c *netConfig) { c.global.Drop = &wireDrop{Chroot: "/var/empty"} }, // uid 0
		func(c *netConfig) {
			c.global.Drop = &wireDrop{Account: wireAccount{Name: "n", UID: 5, GID: 5}, Chroot: "empty"}
		},
		func(c *netConfig) { c.routes = append(c.routes, routeTo(1)) },
	} {
		c := good()
		mod(c)
		if err := c.validate(); !errors.Is(err, errProtocol) {
			t.Errorf("case %d: %v", i, err)
		}
	}
}

func TestExecConfigRejects(t *testing.T) {
	good := wireHandler{User: "a", Event: "MessageNew", Command: []string{"true"}, Path: "/bin/true", LimitBurst: 1}
	acct := wireAccount{Name: "a", UID: 1000, GID: 1000}
	build := func(g wireExecGlobal, hs ...wireHandler) error {
		c := &execConfig{global: &g, handlers: hs}
		_, err := c.build("a")
		return err
	}
	if err := build(wireExecGlobal{Log: testLog, Account: acct, Drop: true}, good); err != nil {
		t.Fatal(err)
	}
	root := acct
	root.UID = 0
	gid0 := acct
	gid0.GID = 0
	other := acct
	other.Name = "b"
	for _, c := range []struct {
		name string
		g    wireExecGlobal
		h    func(h *wireHandler)
	}{
		{"uid 0", wireExecGlobal{Log: testLog, Account: root, Drop: true}, nil},
		{"gid 0", wireExecGlobal{Log: testLog, Account: gid0, Drop: true}, nil},
		{"another account", wireExecGlobal{Log: testLog, Account: other, Drop: true}, nil},
		{"no path", wireExecGlobal{Log: testLog, Account: acct}, func(h *wireHandler) { h.Path = "" }},
		{"relative path", wireExecGlobal{Log: testLog, Account: acct}, func(h *wireHandler) { h.Path = "bin/true" }},
		{"no command", wireExecGlobal{Log: testLog, Account: acct}, func(h *wireHandler) { h.Command = nil }},
		{"unknown event", wireExecGlobal{Log: testLog, Account: acct}, func(h *wireHandler) { h.Event = "x" }},
		{"burst 0", wireExecGlobal{Log: testLog, Account: acct}, func(h *wireHandler) { h.LimitBurst = 0 }},
		{"negative delay", wireExecGlobal{Log: testLog, Account: acct}, func(h *wireHandler) { h.Delay = -1 }},
		{"bad ip", wireExecGlobal{Log: testLog, Account: acct}, func(h *wireHandler) { h.IP = []string{"x"} }},
	} {
		h := good
		if c.h != nil {
			c.h(&h)
		}
		if err := build(c.g, h); !errors.Is(err, errProtocol) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	c := &execConfig{}
	if err := c.add(msgOf(t, msgNetRoute, wireRoute{})); !errors.Is(err, errProtocol) {
		t.Errorf("net message in an exec stream: %v", err)
	}
	if _, err := c.build("a"); !errors.Is(err, errProtocol) {
		t.Errorf("no global: %v", err)
	}
}

// manyHandlers is a configuration of n handlers for n users, over the
// given number of accounts (user=account pairs for testConfig).
func manyHandlers(n, accounts int) (string, []string) {
	var b strings.Builder
	var accts []string
	for i := range n {
		fmt.Fprintf(&b, "[[handler]]\nuser = \"user%05d@example.org\"\ncommand = \"/bin/true --account user%05d fetch\"\ndelay = \"2s\"\nip = [\"10.0.0.0/8\", \"2001:db8::/32\"]\nenv = { MAILDIR = \"/var/mail/user%05d\" }\n\n", i, i, i)
		accts = append(accts, fmt.Sprintf("user%05d@example.org=acct%03d", i, i%accounts))
	}
	return b.String(), accts
}

// Real-size configurations go through the stream whole: each process
// assembles exactly what the parent has, however large.
func TestStreamsCarryLargeConfigurations(t *testing.T) {
	for _, c := range []struct{ handlers, accounts int }{{10000, 1}, {1000, 100}} {
		t.Run(fmt.Sprintf("%d handlers over %d accounts", c.handlers, c.accounts), func(t *testing.T) {
			text, accts := manyHandlers(c.handlers, c.accounts)
			cfg := testConfig(t, text, accts...)
			st, err := streamsFor(cfg, false, testLog, nil, 7, nil)
			if err != nil {
				t.Fatal(err)
			}
			nc := &netConfig{}
			feed(t, st.net, nc.add)
			if err := nc.validate(); err != nil {
				t.Fatal(err)
			}
			if len(nc.routes) != c.handlers || len(nc.targets) != c.accounts {
				t.Fatalf("%d routes, %d targets", len(nc.routes), len(nc.targets))
			}
			got := 0
			for _, a := range cfg.Accounts() {
				ec := &execConfig{}
				feed(t, st.exec[a.Name], ec.add)
				hs, err := ec.build(a.Name)
				if err != nil {
					t.Fatal(err)
				}
				for i := range hs {
					h := &hs[i]
					orig := findHandler(cfg.Handlers, h.Line)
					if orig == nil || !h.Same(orig) {
						t.Fatalf("handler at line %d arrived as %+v", h.Line, h)
					}
				}
				got += len(hs)
			}
			if got != c.handlers {
				t.Fatalf("%d handlers arrived, want %d", got, c.handlers)
			}
		})
	}
}

// feed receives a stream as a child does, handing each item to add.
func feed(t *testing.T, msgs []outMsg, add func(privsep.Msg) error) {
	t.Helper()
	var s stream
	for _, m := range msgs {
		pm := privsep.Msg{Type: m.typ, Payload: m.payload}
		var err error
		switch m.typ {
		case msgCfgBegin:
			err = s.begin(pm)
		case msgCfgEnd:
			err = s.end(pm)
		default:
			if err = s.item(pm); err == nil {
				err = add(pm)
			}
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if s.open || s.last == 0 {
		t.Fatal("the stream did not end")
	}
}

func findHandler(hs []config.Handler, line int) *config.Handler {
	for i := range hs {
		if hs[i].Line == line {
			return &hs[i]
		}
	}
	return nil
}

// What cannot be sent is a configuration error, which -n reports.
func TestCheckRefusesWhatCannotBeSent(t *testing.T) {
	var ips []string
	for i := range 8000 {
		ips = append(ips, fmt.Sprintf("%q", fmt.Sprintf("2001:db8:%x::/48", i)))
	}
	cfg := testConfig(t, "[[handler]]\nuser = \"alice\"\ncommand = \"/bin/true\"\nip = ["+strings.Join(ips, ",")+"]\n")
	err := Check(cfg, false, testLog)
	if err == nil || !strings.Contains(err.Error(), "line 1") || !errors.Is(err, privsep.ErrOversize) {
		t.Errorf("Check: %v", err)
	}
}

func FuzzDecodeEvent(f *testing.F) {
	f.Add([]byte("127.0.0.1:1\n{}"))
	f.Add([]byte("[::1]:2\n"))
	f.Fuzz(func(t *testing.T, p []byte) {
		remote, body, err := decodeEvent(p)
		if err != nil {
			return
		}
		// Whatever is accepted re-encodes to the same bytes.
		if again := encodeEvent(remote, body); !bytes.Equal(again, p) {
			t.Fatalf("%q re-encodes as %q", p, again)
		}
	})
}

// FuzzNetConfig feeds any payload to every item of a net stream: no
// panic, and anything accepted validates or is refused as a violation.
func FuzzNetConfig(f *testing.F) {
	f.Add(uint8(msgNetGlobal), []byte(`{"log":{"level":0,"format":"json"},"endpoint":"/notify","max_connections":1,"max_open":1,"max_open_per_ip":1,"timeout_ns":1}`))
	f.Add(uint8(msgNetRoute), []byte(`{"user":"a","event":"messagenew","ip":["::1/128"],"target":0}`))
	f.Add(uint8(msgNetAllow), []byte(`{"prefix":"10.0.0.0/8"}`))
	f.Add(uint8(msgNetTarget), []byte(`{"target":0,"account":"a"}`))
	f.Fuzz(func(t *testing.T, typ uint8, p []byte) {
		c := &netConfig{}
		err := c.add(privsep.Msg{Type: uint32(typ), Payload: p})
		if err != nil && !errors.Is(err, errProtocol) {
			t.Fatalf("%v is no protocol violation", err)
		}
		if err := c.validate(); err != nil && !errors.Is(err, errProtocol) {
			t.Fatalf("%v is no protocol violation", err)
		}
	})
}

// FuzzExecConfig does the same for an exec stream.
func FuzzExecConfig(f *testing.F) {
	f.Add(uint8(msgExecGlobal), []byte(`{"log":{"level":0,"format":"json"},"account":{"name":"a","uid":1,"gid":1,"groups":[1],"home":"/","shell":"/bin/sh"},"drop":true}`))
	f.Add(uint8(msgExecHandler), []byte(`{"line":1,"user":"a","event":"MessageNew","command":["true"],"path":"/bin/true","limit_burst":1,"env":{"A":"b"},"ip":["10.0.0.0/8"]}`))
	f.Fuzz(func(t *testing.T, typ uint8, p []byte) {
		c := &execConfig{global: &wireExecGlobal{Log: testLog, Account: wireAccount{Name: "a", UID: 1, GID: 1}, Drop: true}}
		if typ == uint8(msgExecGlobal) {
			c.global = nil
		}
		err := c.add(privsep.Msg{Type: uint32(typ), Payload: p})
		if err != nil && !errors.Is(err, errProtocol) {
			t.Fatalf("%v is no protocol violation", err)
		}
		hs, err := c.build("a")
		if err != nil && !errors.Is(err, errProtocol) {
			t.Fatalf("%v is no protocol violation", err)
		}
		for _, h := range hs {
			if h.Account.UID == 0 || h.Path == "" || h.LimitBurst < 1 {
				t.Fatalf("accepted %+v", h)
			}
		}
	})
}

// FuzzStream feeds any sequence of brackets to a stream.
func FuzzStream(f *testing.F) {
	f.Add([]byte{1, 0, 2}, uint64(1))
	f.Fuzz(func(t *testing.T, ops []byte, gen uint64) {
		var s stream
		for _, op := range ops {
			g := gen + uint64(op>>2)
			var err error
			switch op & 3 {
			case 0:
				err = s.item(privsep.Msg{Type: msgNetAllow})
			case 1:
				err = s.begin(msgOf(t, msgCfgBegin, wireBegin{Gen: g}))
			case 2:
				err = s.end(msgOf(t, msgCfgEnd, wireEnd{Gen: g, Items: s.items}))
			default:
				err = s.end(msgOf(t, msgCfgEnd, wireEnd{Gen: g, Items: s.items + 1}))
			}
			if err != nil && !errors.Is(err, errProtocol) {
				t.Fatalf("%v is no protocol violation", err)
			}
			if s.open && s.gen <= s.last {
				t.Fatalf("open generation %d not above %d", s.gen, s.last)
			}
		}
	})
}

// Every control message survives its encoding and is refused with an
// unknown field, a second value or a truncation.
func TestControlMessages(t *testing.T) {
	for _, c := range []struct {
		typ  uint32
		v    any
		into func() any
	}{
		{msgShutdown, wireShutdown{Grace: 3e9}, func() any { return &wireShutdown{} }},
		{msgReady, wireReady{Gen: 42}, func() any { return &wireReady{} }},
		{msgOwed, wireOwed{Target: 3, Owed: true}, func() any { return &wireOwed{} }},
		{msgNetFault, wireFault{Reason: "bad"}, func() any { return &wireFault{} }},
		{msgFatal, wireFault{Reason: "drop privileges: x"}, func() any { return &wireFault{} }},
		{msgExecChannel, wireExecChannel{Target: 2, Recover: true}, func() any { return &wireExecChannel{} }},
		{msgCfgBegin, wireBegin{Gen: 9}, func() any { return &wireBegin{} }},
		{msgCfgEnd, wireEnd{Gen: 9, Items: 3}, func() any { return &wireEnd{} }},
		{msgNetTarget, wireTarget{Target: 1, Account: "alice"}, func() any { return &wireTarget{} }},
		{msgNetAllow, wirePrefix{Prefix: "10.0.0.0/8"}, func() any { return &wirePrefix{} }},
	} {
		m := msgOf(t, c.typ, c.v)
		got := c.into()
		if err := decode(m, got); err != nil {
			t.Errorf("%s: %v", msgName(c.typ), err)
			continue
		}
		if want := fmt.Sprintf("%+v", c.v); fmt.Sprintf("%+v", reflectElem(got)) != want {
			t.Errorf("%s: got %+v, want %s", msgName(c.typ), got, want)
		}
		p := m.Payload
		for name, bad := range map[string][]byte{
			"unknown field": append(append([]byte{}, p[:len(p)-1]...), []byte(`,"extra":1}`)...),
			"second value":  append(append([]byte{}, p...), []byte(` {}`)...),
			"truncated":     p[:len(p)-1],
			"empty":         nil,
		} {
			if err := decode(privsep.Msg{Type: c.typ, Payload: bad}, c.into()); !errors.Is(err, errProtocol) {
				t.Errorf("%s %s: %v", msgName(c.typ), name, err)
			}
		}
	}
	if err := (wireFault{Reason: strings.Repeat("x", maxReason+1)}).validate(); !errors.Is(err, errProtocol) {
		t.Errorf("an oversized fault reason: %v", err)
	}
}

func reflectElem(v any) any {
	switch p := v.(type) {
	case *wireShutdown:
		return *p
	case *wireReady:
		return *p
	case *wireOwed:
		return *p
	case *wireFault:
		return *p
	case *wireExecChannel:
		return *p
	case *wireBegin:
		return *p
	case *wireEnd:
		return *p
	case *wireTarget:
		return *p
	case *wirePrefix:
		return *p
	}
	return v
}

// FuzzControl feeds any payload to the decoders of the messages children
// send the parent.
func FuzzControl(f *testing.F) {
	f.Add(uint8(msgReady), []byte(`{"gen":1}`))
	f.Add(uint8(msgOwed), []byte(`{"target":1,"owed":true}`))
	f.Add(uint8(msgFatal), []byte(`{"reason":"x"}`))
	f.Fuzz(func(t *testing.T, typ uint8, p []byte) {
		m := privsep.Msg{Type: uint32(typ), Payload: p}
		var err error
		switch m.Type {
		case msgReady:
			err = decode(m, &wireReady{})
		case msgOwed:
			err = decode(m, &wireOwed{})
		default:
			var f wireFault
			if err = decode(m, &f); err == nil {
				err = f.validate()
				if err == nil && len(f.Reason) > maxReason {
					t.Fatalf("a reason of %d bytes passed", len(f.Reason))
				}
			}
		}
		if err != nil && !errors.Is(err, errProtocol) {
			t.Fatalf("%v is no protocol violation", err)
		}
	})
}

// A compromised network process cannot make the root parent's books grow
// with reports about exec processes that do not exist.
func TestOwedReportOnlyKnownTargets(t *testing.T) {
	n := &proc{name: "net"}
	s := &supervisor{streams: &streams{targets: map[string]int{"alice": 3}}, owed: map[int]bool{},
		execs: map[string]*proc{}, net: n, log: slog.New(slog.DiscardHandler)}
	for i := range 1000 {
		s.owedReport(n, wireOwed{Target: 100 + i, Owed: true})
	}
	s.owedReport(n, wireOwed{Target: 3, Owed: true})
	if len(s.owed) != 1 || !s.owed[3] {
		t.Errorf("owed %v, want only target 3", s.owed)
	}
}

// Network processes killed on an exec process's report are restarted but
// not counted: one account's process reporting six times must not stop
// the daemon for everyone. Real crashes are counted.
func TestReportedKillsNotCounted(t *testing.T) {
	s := &supervisor{streams: &streams{targets: map[string]int{}}, owed: map[int]bool{}, execs: map[string]*proc{},
		live: map[int]*proc{}, crashedChild: map[time.Time]string{}, restart: make(chan string, 64),
		quit: make(chan struct{}), started: true, log: slog.New(slog.DiscardHandler)}
	defer close(s.quit)
	lose := func(reported bool) error {
		c, _ := pair(t)
		pr := &proc{name: "net", reported: reported, child: &privsep.Child{Conn: c}, readDone: make(chan struct{})}
		close(pr.readDone)
		s.net = pr
		return s.exited(pr)
	}
	for i := range 10 {
		if err := lose(true); err != nil {
			t.Fatalf("reported kill %d: %v", i, err)
		}
	}
	for i := range maxCrashes {
		if err := lose(false); err != nil {
			t.Fatalf("crash %d: %v", i, err)
		}
	}
	if err := lose(false); err == nil || !strings.Contains(err.Error(), "more than 5 crashes") {
		t.Errorf("crash %d: %v", maxCrashes+1, err)
	}
}

// An exec process runs as its account, which can kill it at will: its
// deaths are restarted, never counted against the daemon's budget, or
// one account could stop the daemon for everyone.
func TestExecCrashesNotCounted(t *testing.T) {
	s := &supervisor{streams: &streams{targets: map[string]int{"alice": 0}}, owed: map[int]bool{}, execs: map[string]*proc{},
		live: map[int]*proc{}, crashedChild: map[time.Time]string{}, restart: make(chan string, 64),
		quit: make(chan struct{}), started: true, log: slog.New(slog.DiscardHandler)}
	defer close(s.quit)
	for i := range 3 * maxCrashes {
		c, _ := pair(t)
		pr := &proc{name: "exec[alice]", account: "alice", child: &privsep.Child{Conn: c}, readDone: make(chan struct{})}
		close(pr.readDone)
		s.execs["alice"] = pr
		if err := s.exited(pr); err != nil {
			t.Fatalf("kill %d of alice's exec process: %v", i+1, err)
		}
	}
	if len(s.crashes) != 0 {
		t.Errorf("exec deaths counted: %v", s.crashes)
	}
}

// A hostile account's exec process can report only on its own handlers,
// once each, while asked; what it says of anything else is dropped.
func TestStatusItemOnlyOwnHandlers(t *testing.T) {
	s := &supervisor{log: slog.New(slog.DiscardHandler), execs: map[string]*proc{},
		cfg: &config.Config{Handlers: []config.Handler{
			{Number: 1, User: "alice", Account: privsep.Account{Name: "alice"}},
			{Number: 2, User: "bob", Account: privsep.Account{Name: "bob"}},
		}}}
	alice := &proc{name: "exec[alice]", account: "alice"}
	s.execs["alice"] = alice
	op := &ctlOp{id: 7, waiting: map[string]bool{"alice": true}, items: map[string]map[int]*wireStatusItem{},
		owner: map[int]string{1: "alice", 2: "bob"}, handlers: map[string]int{"alice": 1, "bob": 1}}
	s.ctlOps = map[uint64]*ctlOp{7: op}
	s.statusItem(alice, &wireStatusItem{ID: 7, Number: 2, State: "running", PID: 1}) // bob's handler
	s.statusItem(alice, &wireStatusItem{ID: 8, Number: 1, State: "running", PID: 1}) // not asked
	s.statusItem(alice, &wireStatusItem{ID: 7, Number: 1, State: "idle", Runs: 3})   // its own
	if len(op.items["alice"]) != 1 || op.items["alice"][1].Runs != 3 || op.items["bob"] != nil {
		t.Errorf("items %+v", op.items)
	}
	for _, ok := range []wireStatusItem{{Number: 1, State: "running"},
		{Number: 1, State: "idle", LastRun: &wireLastRun{Signal: "SIGKILL", Trigger: "retry"}},
		{Number: 1, State: "idle", LastRun: &wireLastRun{Signal: "signal 34", Trigger: "manual"}}} {
		if err := ok.validate(); err != nil {
			t.Errorf("%+v: %v", ok, err)
		}
	}
	for _, w := range []wireStatusItem{{Number: 1, State: "hacked"}, {Number: 0, State: "idle"}, {Number: 1, State: "idle", Runs: -1},
		{Number: 1, State: "idle", LastRun: &wireLastRun{Signal: strings.Repeat("x", 100), Trigger: "event"}},
		// What imseriousctl prints on root's terminal is never the account's bytes.
		{Number: 1, State: "idle", LastRun: &wireLastRun{Signal: "SIG\x1b]0;pwned\a", Trigger: "event"}},
		{Number: 1, State: "idle", LastRun: &wireLastRun{Trigger: "event\x1b[2J"}},
		{Number: 1, State: "idle", LastRun: &wireLastRun{Trigger: "whatever"}}} {
		if err := w.validate(); !errors.Is(err, errProtocol) {
			t.Errorf("%+v: %v", w, err)
		}
	}
}

// Once a configuration is in force its encoded streams are dropped; a
// child started later (a restart) is sent one built again, the same.
func TestStreamsRebuiltAfterForget(t *testing.T) {
	cfg := testConfig(t, twoAccounts, "alice=acct_a", "bob=acct_b")
	st, err := streamsFor(cfg, false, testLog, nil, 3, nil)
	if err != nil {
		t.Fatal(err)
	}
	want, err := streamsFor(cfg, false, testLog, nil, 3, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := &supervisor{p: &Parent{LogOpt: testLog}, cfg: cfg, gen: 3, streams: st}
	s.forgetStreams()
	if s.streams.net != nil || s.streams.exec != nil {
		t.Fatal("streams kept")
	}
	same := func(name string, got, want []outMsg) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: %d messages, want %d", name, len(got), len(want))
		}
		for i := range got {
			if got[i].typ != want[i].typ || !bytes.Equal(got[i].payload, want[i].payload) {
				t.Fatalf("%s: message %d is %s %q, want %s %q", name, i, msgName(got[i].typ), got[i].payload, msgName(want[i].typ), want[i].payload)
			}
		}
	}
	for acct, w := range want.exec {
		got, ok, err := s.execStream(acct)
		if err != nil || !ok {
			t.Fatalf("%s: %v, %v", acct, ok, err)
		}
		same(acct, got, w)
	}
	if _, ok, err := s.execStream("nobody"); ok || err != nil {
		t.Errorf("a stream for an account the configuration has not: %v, %v", ok, err)
	}
	got, err := s.netStream()
	if err != nil {
		t.Fatal(err)
	}
	same("net", got, want.net)
}

// An exec process keeps one copy of what its handlers have in common:
// the same command line is one slice, the same program and run_as one
// string; what differs stays apart, and every handler arrives the same.
func TestExecConfigShares(t *testing.T) {
	cfg := testConfig(t, `
[[handler]]
user = "a"
command = "/bin/true --fetch a"
[[handler]]
user = "b"
command = "/bin/true --fetch a"
[[handler]]
user = "c"
command = "/bin/echo --fetch c"
`)
	a := cfg.Handlers[0].Account
	items, err := execItems(cfg, testLog, a, false)
	if err != nil {
		t.Fatal(err)
	}
	ec := &execConfig{}
	for _, m := range items {
		if err := ec.add(privsep.Msg{Type: m.typ, Payload: m.payload}); err != nil {
			t.Fatal(err)
		}
	}
	hs, err := ec.build(a.Name)
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != 3 {
		t.Fatalf("%d handlers", len(hs))
	}
	for i := range hs {
		if !hs[i].Same(&cfg.Handlers[i]) {
			t.Errorf("handler %d arrived as %+v, want %+v", i, hs[i], cfg.Handlers[i])
		}
	}
	if &hs[0].Command[0] != &hs[1].Command[0] {
		t.Error("the same command line is two slices")
	}
	if unsafe.StringData(hs[0].Path) != unsafe.StringData(hs[1].Path) ||
		unsafe.StringData(hs[0].Command[1]) != unsafe.StringData(hs[2].Command[1]) {
		t.Error("equal strings are not one copy")
	}
	if &hs[0].Command[0] == &hs[2].Command[0] || hs[2].Command[2] != "c" || hs[0].Command[2] != "a" {
		t.Errorf("different command lines mixed: %q, %q", hs[0].Command, hs[2].Command)
	}
	if cap(hs[0].Command) != len(hs[0].Command) {
		t.Error("a shared command line has room to append into")
	}
}
