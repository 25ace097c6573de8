package config

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/imserious/imserious/privsep"
)

// TestSame changes one field at a time. Every field of Handler and of its
// Account must have a change listed here, so a field added later cannot be
// forgotten by Same without this test failing.
func TestSame(t *testing.T) {
	base := func() Handler {
		return Handler{
			Line: 7, User: "alice", Event: "MessageNew", Command: []string{"fdm", "-a", "acct", "fetch"},
			Delay: time.Second, LimitPeriod: 30 * time.Second, LimitBurst: 1, Periodic: time.Hour,
			RunAs: "alice", Env: map[string]string{"A": "1"}, CommandTimeout: 10 * time.Minute,
			IP:      []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
			PassEnv: []string{"DISPLAY"}, Number: 3, Retries: 2, RetryBackoff: 10 * time.Second,
			MinUID:  DefaultMinUID,
			Account: privsep.Account{Name: "alice", UID: 1001, GID: 1001, Groups: []int{1001, 100}, Home: "/home/alice", Shell: "/bin/sh"},
			Path:    "/usr/bin/fdm",
		}
	}
	handlerChanges := map[string]func(*Handler){
		"User":           func(h *Handler) { h.User = "bob" },
		"Event":          func(h *Handler) { h.Event = "MessageRead" },
		"Command":        func(h *Handler) { h.Command[3] = "poll" },
		"Delay":          func(h *Handler) { h.Delay = 2 * time.Second },
		"LimitPeriod":    func(h *Handler) { h.LimitPeriod = time.Minute },
		"LimitBurst":     func(h *Handler) { h.LimitBurst = 2 },
		"Periodic":       func(h *Handler) { h.Periodic = 0 },
		"RunAs":          func(h *Handler) { h.RunAs = "" },
		"Env":            func(h *Handler) { h.Env["A"] = "2" },
		"CommandTimeout": func(h *Handler) { h.CommandTimeout = time.Minute },
		"IP":             func(h *Handler) { h.IP = append(h.IP, netip.MustParsePrefix("::1/128")) },
		"Path":           func(h *Handler) { h.Path = "/usr/local/bin/fdm" },
		"PassEnv":        func(h *Handler) { h.PassEnv = append(h.PassEnv, "WAYLAND_DISPLAY") },
		"RunAtStart":     func(h *Handler) { h.RunAtStart = !h.RunAtStart },
		"Retries":        func(h *Handler) { h.Retries = 3 },
		"RetryBackoff":   func(h *Handler) { h.RetryBackoff = time.Minute },
		"Pattern":        func(h *Handler) { h.Pattern = !h.Pattern },
		"MinUID":         func(h *Handler) { h.MinUID = 500 },
		"Dynamic":        func(h *Handler) { h.Dynamic = !h.Dynamic },
	}
	accountChanges := map[string]func(*privsep.Account){
		"Name":   func(a *privsep.Account) { a.Name = "alice2" },
		"UID":    func(a *privsep.Account) { a.UID = 1002 },
		"GID":    func(a *privsep.Account) { a.GID = 100 },
		"Groups": func(a *privsep.Account) { a.Groups = a.Groups[:1] },
		"Home":   func(a *privsep.Account) { a.Home = "/var/alice" },
		"Shell":  func(a *privsep.Account) { a.Shell = "/bin/ksh" },
	}
	ignored := map[string]bool{"Line": true, "Number": true, "Account": true} // Account: field by field below

	for f := range reflect.TypeFor[Handler]().Fields() {
		if _, ok := handlerChanges[f.Name]; !ok && !ignored[f.Name] {
			t.Errorf("Handler.%s has no change in this test: teach Same and TestSame about it", f.Name)
		}
	}
	for f := range reflect.TypeFor[privsep.Account]().Fields() {
		if _, ok := accountChanges[f.Name]; !ok {
			t.Errorf("privsep.Account.%s has no change in this test: teach sameAccount and TestSame about it", f.Name)
		}
	}

	a, b := base(), base()
	if !a.Same(&b) {
		t.Fatalf("equal handlers are not Same")
	}
	b.Line = 900
	if !a.Same(&b) || !b.Same(&a) {
		t.Errorf("a handler moved to another line is not Same")
	}
	b.Number = 12
	if !a.Same(&b) || !b.Same(&a) {
		t.Errorf("a handler moved to another position in the file is not Same")
	}
	for name, change := range handlerChanges {
		b := base()
		change(&b)
		if a.Same(&b) || b.Same(&a) {
			t.Errorf("a change of %s is Same", name)
		}
	}
	for name, change := range accountChanges {
		b := base()
		change(&b.Account)
		if a.Same(&b) || b.Same(&a) {
			t.Errorf("a change of Account.%s is Same", name)
		}
	}
	var empty, nilled Handler
	empty.Env, empty.IP, empty.Command, empty.PassEnv = map[string]string{}, []netip.Prefix{}, []string{}, []string{}
	if !empty.Same(&nilled) {
		t.Errorf("empty lists and maps differ from nil ones")
	}
	if a.Same(nil) || !(*Handler)(nil).Same(nil) {
		t.Errorf("Same with nil")
	}
}

// TestSameAcrossReload is what the daemon does on SIGHUP: the handler
// moved down the file by a new one before it is Same as it was; the one
// whose delay changed is not.
func TestSameAcrossReload(t *testing.T) {
	bin, _ := testBin(t)
	old := mustParse(t, `
[[handler]]
user = "alice"
command = "mycmd fetch"
env = { DISPLAY = ":0" }
ip = ["10.0.0.0/8"]

[[handler]]
user = "bob"
command = "mycmd"
delay = "5s"
`)
	cur := mustParse(t, `# a comment moves everything down
[[handler]]
user = "carol"
command = "second"

[[handler]]
user = "alice"
command = "mycmd   fetch"
ip = ["10.1.2.3/8"]
env = { DISPLAY = ":0" }

[[handler]]
user = "bob"
command = "mycmd"
delay = "6s"
`)
	for _, c := range []*Config{old, cur} {
		if err := c.Resolve(false); err != nil {
			t.Fatal(err)
		}
	}
	if old.Handlers[0].Path != filepath.Join(bin, "mycmd") || old.Handlers[0].Account.Name == "" {
		t.Fatalf("not resolved: %+v", old.Handlers[0])
	}
	if old.Handlers[0].Line == cur.Handlers[1].Line || !old.Handlers[0].Same(&cur.Handlers[1]) {
		t.Errorf("moved handler: Same is false\nold %+v\nnew %+v", old.Handlers[0], cur.Handlers[1])
	}
	if old.Handlers[1].Same(&cur.Handlers[2]) {
		t.Errorf("handler whose delay changed is Same")
	}
	if old.Handlers[0].Same(&cur.Handlers[0]) {
		t.Errorf("different handlers are Same")
	}
}

// TestLoadTooLarge: a file over MaxSize is refused by Load, which reads no
// more of it than it needs to say so (the file is sparse: no disk used).
func TestLoadTooLarge(t *testing.T) {
	p := filepath.Join(t.TempDir(), "big.toml")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(MaxSize + 1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	_, err = Load(p)
	var es Errors
	if !errors.As(err, &es) || len(es) != 1 || es[0].File != p ||
		!strings.Contains(es[0].Msg, fmt.Sprintf("more than the %d bytes allowed", MaxSize)) {
		t.Errorf("Load of %d bytes: %v", MaxSize+1, err)
	}
	// At the limit it is read and parsed: NULs are not TOML.
	if err := os.Truncate(p, MaxSize); err != nil {
		t.Fatal(err)
	}
	if _, err = Load(p); !errors.As(err, &es) || !strings.Contains(es[0].Msg, "invalid TOML") {
		t.Errorf("Load of %d bytes: %v", MaxSize, err)
	}
}
