package exec

import (
	"testing"
	"time"

	"github.com/imserious/imserious/config"
	"github.com/imserious/imserious/privsep"
)

// sameAccountHandler is testHandler(user) run as one account, vmail, as
// the handlers of a multi-user server are.
func sameAccountHandler(user string) config.Handler {
	h := testHandler(user)
	h.Account = privsep.Account{Name: "vmail", Home: "/home/vmail", Shell: "/bin/sh"}
	return h
}

// TestShareSpec: handlers that differ only in their user, number and line
// share one configuration, any other difference gets its own, and each
// handler still matches, runs and reports as itself.
func TestShareSpec(t *testing.T) {
	alice, bob := sameAccountHandler("alice"), sameAccountHandler("bob")
	alice.Number, alice.Line = 1, 3
	bob.Number, bob.Line = 2, 9
	carol := sameAccountHandler("carol")
	carol.Command = []string{"true", "carol"} // her user in the command line
	dave := sameAccountHandler("dave")
	dave.Env = map[string]string{"MAILDIR": "/srv/dave"}
	erin := sameAccountHandler("erin")
	erin.Delay = time.Second
	glob := sameAccountHandler("list-*")
	glob.Pattern = true
	h := newHarness(t, alice, bob, carol, dave, erin, glob)

	hs := h.x.handlers
	if hs[0].spec != hs[1].spec {
		t.Error("alice and bob, the same but for user, number and line, do not share a configuration")
	}
	for i := 2; i < len(hs); i++ {
		for j := range i {
			if hs[i].spec == hs[j].spec {
				t.Errorf("handlers %d and %d share a configuration, but differ", j, i)
			}
		}
	}
	for i, want := range []string{"alice", "bob", "carol", "dave", "erin", "list-*"} {
		if hs[i].user != want {
			t.Errorf("handler %d user %q, want %q", i, hs[i].user, want)
		}
		if c := hs[i].cfg; c.User != "" || c.Number != 0 || c.Line != 0 {
			t.Errorf("handler %d: shared configuration has user %q, number %d, line %d; want none", i, c.User, c.Number, c.Line)
		}
	}

	st := h.x.Status()
	if st[0].User != "alice" || st[0].Number != 1 || st[0].Line != 3 || st[1].User != "bob" || st[1].Number != 2 || st[1].Line != 9 {
		t.Errorf("status %+v %+v, want alice handler 1 line 3, bob handler 2 line 9", st[0], st[1])
	}
	h.x.Deliver(newEvent("bob", "for bob"), peer)
	r := h.next()
	if r.Index != 1 || r.User != "bob" || r.Handler.Command[0] != "true" {
		t.Fatalf("job %+v, want bob's handler 1", r.Job)
	}
	wantEnv(t, r.Job, map[string]string{"IMSE_USER": "bob", "IMSE_SUBJECT": "for bob", "USER": "vmail"})
	// Logs name the handler by its own user, number and line.
	h.x.Deliver(newEvent("bob", "while running"), peer)
	recs := h.logs.find(t, "run pending until the running command ends")
	if len(recs) != 1 || recs[0]["user"] != "bob" || recs[0]["handler"] != 2.0 || recs[0]["line"] != 9.0 {
		t.Errorf("records %v, want one of bob's handler 2, line 9", recs)
	}
	h.finish(r)
	h.clock.Advance(30 * time.Second) // the follow-up's token
	r = h.next()
	if r.User != "bob" {
		t.Fatalf("follow-up job %+v, want bob's", r.Job)
	}
	h.finish(r)
	h.wantRuns(0, 0)
	h.x.Deliver(newEvent("list-x", "for the list"), peer)
	r = h.next()
	if r.Index != 5 || r.User != "list-x" {
		t.Fatalf("job %+v, want the wildcard handler 5 for list-x", r.Job)
	}
	h.finish(r)
}

// TestShareSpecUpdate: across a reload a kept handler keeps its state, a
// handler changed only in its user is another handler, and a new
// handler shares a kept one's configuration but none of a removed one.
func TestShareSpecUpdate(t *testing.T) {
	alice, bob := sameAccountHandler("alice"), sameAccountHandler("bob")
	alice.Delay, bob.Delay = time.Minute, time.Minute
	h := newHarness(t, alice, bob)
	h.x.Deliver(newEvent("alice", "kept"), peer)
	oldSpec := h.x.handlers[0].spec

	carol := alice
	carol.User = "carol"
	slow := bob
	slow.Delay = time.Hour
	if added, removed, kept := h.x.Update([]config.Handler{alice, carol}); added != 1 || removed != 1 || kept != 1 {
		t.Fatalf("Update = %d added, %d removed, %d kept; want 1, 1, 1", added, removed, kept)
	}
	hs := h.x.handlers
	if hs[0].spec != oldSpec || hs[1].spec != oldSpec || hs[1].user != "carol" {
		t.Error("carol, alice's configuration but for the user, does not share the kept one")
	}
	if _, _, kept := h.x.Update([]config.Handler{alice, slow}); kept != 1 {
		t.Fatalf("second Update kept %d, want alice", kept)
	}
	if h.x.handlers[1].spec == oldSpec || h.x.handlers[1].cfg.Delay != time.Hour {
		t.Error("a changed handler got the old configuration")
	}
	for _, sps := range h.x.specs {
		for _, sp := range sps {
			if sp != oldSpec && sp != h.x.handlers[1].spec {
				t.Errorf("a removed handler's configuration is still shared: %+v", sp.cfg)
			}
		}
	}
	h.clock.Advance(time.Minute)
	r := h.next()
	if r.User != "alice" || r.Count != 1 {
		t.Fatalf("job %+v, want alice's pending event, kept across both reloads", r.Job)
	}
	wantEnv(t, r.Job, map[string]string{"IMSE_SUBJECT": "kept"})
	h.finish(r)
}

// TestShareSpecHash: the hash buckets tell apart handlers that name their
// user in the command line, so that 10,000 of them are not compared with
// each other; and it is the same for the same configuration.
func TestShareSpecHash(t *testing.T) {
	x := New(Options{})
	defer x.Shutdown(0)
	a, b := sameAccountHandler("alice"), sameAccountHandler("alice")
	b.User, b.Number, b.Line = "bob", 7, 70
	if x.specHash(&a) != x.specHash(&b) {
		t.Error("the hash depends on the user, number or line")
	}
	b.Env = map[string]string{"A": "1", "B": "2"}
	a.Env = map[string]string{"B": "2", "A": "1"}
	if x.specHash(&a) != x.specHash(&b) {
		t.Error("the hash depends on the order of the env table")
	}
	seen := map[uint64]bool{}
	for _, u := range []string{"alice", "bob", "carol", "dave"} {
		c := sameAccountHandler(u)
		c.Command = []string{"fdm", "-a", u, "fetch"}
		seen[x.specHash(&c)] = true
	}
	if len(seen) != 4 {
		t.Errorf("%d buckets for four command lines", len(seen))
	}
}
