package listener

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
)

// accountsRec is an Accounts that knows the targets of some accounts and
// queues the events of the others, recording every call.
type accountsRec struct {
	mu      sync.Mutex
	targets map[string]int
	fail    map[string]error
	calls   []string // account/handler/user
	notes   []string // target/user
}

func (a *accountsRec) Route(account string, handler int, user string, _ netip.AddrPort, _ []byte) (int, bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, account+"/"+string(rune('0'+handler))+"/"+user)
	if err := a.fail[account]; err != nil {
		return 0, false, err
	}
	t, ok := a.targets[account]
	return t, !ok, nil
}

func (a *accountsRec) Note(target int, user string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.notes = append(a.notes, fmt.Sprintf("%d/%s", target, user))
}

func (a *accountsRec) got() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.calls...)
}

func body(user string) string { return `{"user":"` + user + `","event":"MessageNew"}` }

// TestPatternRoutes: glob users match by path.Match beside exact ones; a
// route with RunAs finds its exec process through Accounts, once per
// account and request even when several handlers name it, and shares a
// target with an exact route of the same account without a second
// delivery.
func TestPatternRoutes(t *testing.T) {
	rec := &recorder{}
	acc := &accountsRec{targets: map[string]int{"alice": 7}, fail: map[string]error{"broken": errors.New("queue full")}}
	cfg := testConfig()
	cfg.Accounts = acc
	cfg.Routes = []Route{
		{User: "alice@example.org", Event: "MessageNew", Target: 7},
		{User: "*@example.org", Event: "MessageNew", RunAs: "%n", Handler: 2},
		{User: "*", Event: "MessageNew", RunAs: "%n", Handler: 3},
		{User: "*@lists.example.org", Event: "MessageNew", Target: 9},
		{User: "*", Event: "MessageRead", Target: 5},
	}
	addr := start(t, New(cfg, rec.deliver, nil))
	c := dial(t, addr)

	if resp, _ := c.do(put(body("alice@example.org")).String()); resp.StatusCode != 200 {
		t.Fatalf("alice: %d", resp.StatusCode)
	}
	// Two wildcard handlers name alice's account: one Route call; the
	// exact handler's target is the same: one delivery.
	if got := acc.got(); !slices.Equal(got, []string{"alice/2/alice@example.org"}) {
		t.Fatalf("accounts asked %q", got)
	}
	if got := rec.get(); len(got) != 1 || got[0].target != 7 {
		t.Fatalf("deliveries %+v, want one to target 7", got)
	}

	// bob has no exec process yet: the event is queued by Accounts, not
	// delivered, and answered 200.
	if resp, _ := c.do(put(body("bob@example.org")).String()); resp.StatusCode != 200 {
		t.Fatalf("bob: %d", resp.StatusCode)
	}
	if got := acc.got(); !slices.Equal(got[1:], []string{"bob/2/bob@example.org"}) {
		t.Fatalf("accounts asked %q", got)
	}
	if got := rec.get(); len(got) != 1 {
		t.Fatalf("bob's event was delivered to a target: %+v", got)
	}

	// A glob with a static target.
	if resp, _ := c.do(put(body("x@lists.example.org")).String()); resp.StatusCode != 200 {
		t.Fatalf("lists: %d", resp.StatusCode)
	}
	if got := rec.get(); len(got) != 2 || got[1].target != 9 {
		t.Fatalf("deliveries %+v, want the second to target 9", got)
	}

	acc.mu.Lock()
	notes := acc.notes
	acc.mu.Unlock()
	if !slices.Equal(notes, []string{"9/x@lists.example.org"}) {
		t.Errorf("notes %q, want the user of the glob with a fixed target", notes)
	}

	// %n of a name that cannot be an account (a '/') asks nothing.
	n := len(acc.got())
	if resp, _ := c.do(put(body("../etc@example.org")).String()); resp.StatusCode != 200 {
		t.Fatalf("bad name: %d", resp.StatusCode)
	}
	if got := acc.got(); len(got) != n {
		t.Fatalf("asked for an impossible account: %q", got[n:])
	}

	// Accounts failing is a 503, like a broken channel.
	if resp, _ := c.do(put(body("broken@example.org")).String()); resp.StatusCode != 503 {
		t.Fatalf("broken: %d, want 503", resp.StatusCode)
	}
}
