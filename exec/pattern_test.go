package exec

import (
	"maps"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/imserious/imserious/config"
	"github.com/imserious/imserious/event"
	"github.com/imserious/imserious/logging"
	"github.com/imserious/imserious/privsep"
)

// patternHandler is a wildcard handler for pattern, as config gives it,
// run as one account for everyone (virtual users).
func patternHandler(pattern string) config.Handler {
	h := testHandler(pattern)
	h.Pattern = true
	h.RunAs = "vmail"
	h.Account = privsep.Account{Name: "vmail", UID: hookUID, GID: hookUID, Home: "/home/vmail", Shell: "/bin/sh"}
	return h
}

// users lists the users handler i keeps state for.
func (h *harness) users(i int) []string {
	hd := h.x.handlers[i]
	hd.mu.Lock()
	defer hd.mu.Unlock()
	var out []string
	for u := range hd.users {
		out = append(out, u)
	}
	slices.Sort(out)
	return out
}

func (h *harness) wantUsers(i int, want ...string) {
	h.t.Helper()
	if got := h.users(i); !slices.Equal(got, want) {
		h.t.Fatalf("handler %d at +%v keeps state for %q, want %q", i, h.elapsed(), got, want)
	}
}

// userStatus is the per-user entry of user in Status.
func (h *harness) userStatus(user string) HandlerStatus {
	h.t.Helper()
	for _, s := range h.x.Status() {
		if s.PerUser && s.User == user {
			return s
		}
	}
	h.t.Fatalf("no status entry for %q in %+v", user, h.x.Status())
	return HandlerStatus{}
}

// waitEnd waits until a run's end (or its skipping) has been processed.
func (h *harness) waitEnd() {
	h.t.Helper()
	select {
	case <-h.ended:
	case <-time.After(safety):
		h.t.Fatalf("no run ended; log:\n%s", h.logs.String())
	}
}

func TestPatternMatches(t *testing.T) {
	exact := testHandler("alice@example.org")
	exact.Delay = time.Minute
	domain := patternHandler("*@example.org")
	domain.Delay = time.Minute
	read := patternHandler("*")
	read.Event = "MessageRead"
	read.Delay = time.Minute
	fromNet := patternHandler("b*")
	fromNet.IP = mustPrefixes("192.0.2.0/24")
	fromNet.Delay = time.Minute
	h := newHarness(t, exact, domain, read, fromNet)

	cases := []struct {
		user, ev, remote string
		want             int
	}{
		{"alice@example.org", "MessageNew", "127.0.0.1:1", 2}, // exact and *@example.org
		{"bob@example.org", "MessageNew", "127.0.0.1:1", 1},   // b* wants 192.0.2.0/24
		{"bob@other.org", "MessageNew", "192.0.2.7:1", 1},     // b* only
		{"carol@other.org", "MessageNew", "192.0.2.7:1", 0},
		{"carol@other.org", "MessageRead", "127.0.0.1:1", 1},  // * for MessageRead
		{"Alice@EXAMPLE.ORG", "MessageNew", "127.0.0.1:1", 0}, // no case folding
		{"bob@example.org", "MessageNew", "127.0.0.1:1", 1},   // coalesced
	}
	for i, c := range cases {
		ev := event.Event{User: c.user, Event: c.ev}
		if n := h.x.Deliver(ev, netip.MustParseAddrPort(c.remote)); n != c.want {
			t.Errorf("case %d: Deliver(%s %s) = %d, want %d", i, c.user, c.ev, n, c.want)
		}
	}
	h.wantUsers(1, "alice@example.org", "bob@example.org")
	h.wantUsers(2, "carol@other.org")
	h.wantUsers(3, "bob@other.org")
	if s := h.userStatus("bob@example.org"); s.Pending != 2 || s.State != StateDelayed {
		t.Errorf("bob@example.org: %+v", s)
	}
	if got := len(h.logs.find(t, "no handler matches event")); got != 2 {
		t.Errorf("%d unmatched lines, want 2", got)
	}
}

// TestDynamicOtherAccount: a handler whose run_as has %-variables runs,
// in this process, only the users it names this process's account for;
// events for others are not matched, and the warn line saying so is
// limited to one a minute, with the count held back.
func TestDynamicOtherAccount(t *testing.T) {
	hc := patternHandler("*")
	hc.RunAs, hc.Dynamic = "%n", true
	hc.Account.Name = "alice"
	hc.Delay = time.Minute
	h := newHarness(t, hc)
	const msg = "event for another account not run: run_as names another account for its user"

	if n := h.x.Deliver(newEvent("alice@example.org", "s"), peer); n != 1 {
		t.Fatalf("alice@example.org matched %d", n)
	}
	if n := h.x.Deliver(newEvent("alice", "s"), peer); n != 1 {
		t.Fatalf("alice matched %d", n)
	}
	for _, u := range []string{"bob@example.org", "carol@example.org", "root"} {
		if n := h.x.Deliver(newEvent(u, "s"), peer); n != 0 {
			t.Fatalf("%s matched %d", u, n)
		}
	}
	recs := h.logs.find(t, msg)
	if len(recs) != 1 || recs[0]["level"] != "WARN" || recs[0]["user"] != "bob@example.org" ||
		recs[0]["run_as"] != "bob" || recs[0]["account"] != "alice" {
		t.Fatalf("warn lines %v", recs)
	}
	h.clock.Advance(unmatchedEvery)
	h.x.Deliver(newEvent("dave@example.org", "s"), peer)
	recs = h.logs.find(t, msg)
	if len(recs) != 2 || recs[1]["user"] != "dave@example.org" || recs[1][logging.SuppressedKey] != 2.0 {
		t.Fatalf("warn lines %v", recs)
	}
	h.wantUsers(0, "alice", "alice@example.org")
	if n := h.x.Run("bob@example.org", ""); n != 0 {
		t.Errorf("manual run for another account matched %d", n)
	}
	h.wantUsers(0, "alice", "alice@example.org")
}

// TestPerUserScheduling: each user of a wildcard handler has its own
// token bucket, coalescing and one run at a time, its runs say whose
// they are, and its state lives until its bucket is full again (so the
// rate limit is not reset by the end of a run), then is freed.
func TestPerUserScheduling(t *testing.T) {
	h := newHarness(t, patternHandler("*"))
	h.x.Deliver(newEvent("u1", "first"), peer)
	r1 := h.next()
	wantEnv(t, r1.Job, map[string]string{"IMSE_USER": "u1", "IMSE_SUBJECT": "first", "USER": "vmail", "HOME": "/home/vmail"})
	if r1.User != "u1" {
		t.Errorf("job user %q", r1.User)
	}
	// Another user is not held by u1's bucket or running command.
	h.x.Deliver(newEvent("u2", "other"), peer)
	r2 := h.next()
	wantEnv(t, r2.Job, map[string]string{"IMSE_USER": "u2", "IMSE_SUBJECT": "other"})
	// u1's events during its run make one follow-up, after a token.
	h.x.Deliver(newEvent("u1", "second"), peer)
	h.x.Deliver(newEvent("u1", "third"), peer)
	if s := h.userStatus("u1"); s.State != StateRunning || s.Pending != 2 || s.PID == 0 {
		t.Errorf("u1 %+v", s)
	}
	h.finish(r1)
	if s := h.userStatus("u1"); s.State != StateDeferred || !s.Due.Equal(epoch.Add(30*time.Second)) {
		t.Errorf("u1 after its run: %+v", s)
	}
	h.finish(r2)
	// u2 ran at 0: an event at 10s waits for the token due at 30s.
	h.clock.Advance(10 * time.Second)
	h.wantUsers(0, "u1", "u2")
	h.x.Deliver(newEvent("u2", "later"), peer)
	if s := h.userStatus("u2"); s.State != StateDeferred || !s.Due.Equal(epoch.Add(30*time.Second)) {
		t.Errorf("u2: %+v", s)
	}
	h.clock.Advance(20 * time.Second)
	a, b := h.next(), h.next()
	if a.User == "u2" {
		a, b = b, a
	}
	wantEnv(t, a.Job, map[string]string{"IMSE_USER": "u1", "IMSE_SUBJECT": "third", "IMSE_COUNT": "2"})
	wantEnv(t, b.Job, map[string]string{"IMSE_USER": "u2", "IMSE_SUBJECT": "later", "IMSE_COUNT": "1"})
	h.finish(a)
	h.finish(b)
	h.wantUsers(0, "u1", "u2")
	if !h.x.Idle() {
		t.Error("busy while the buckets only refill")
	}
	h.clock.Advance(30*time.Second - time.Millisecond)
	h.wantUsers(0, "u1", "u2")
	h.clock.Advance(time.Millisecond)
	h.wantUsers(0)
	if !h.x.Idle() || h.clock.Pending() != 0 {
		t.Errorf("idle %v, %d timers armed", h.x.Idle(), h.clock.Pending())
	}
	h.wantRuns(0, 4)
	st := h.x.Status()
	if len(st) != 1 || st[0].Runs != 4 || st[0].LastRun == nil || st[0].PerUser {
		t.Errorf("status %+v", st)
	}
	// A user that comes back starts afresh, with a full bucket.
	h.x.Deliver(newEvent("u1", "again"), peer)
	h.finish(h.next())
}

// TestPatternBurst: limit_burst runs back to back per user.
func TestPatternBurst(t *testing.T) {
	hc := patternHandler("*")
	hc.LimitBurst = 2
	h := newHarness(t, hc)
	for range 2 {
		h.x.Deliver(newEvent("u1", "s"), peer)
		h.finish(h.next())
	}
	h.x.Deliver(newEvent("u1", "s"), peer)
	if s := h.userStatus("u1"); s.State != StateDeferred {
		t.Fatalf("third run: %+v", s)
	}
	h.clock.Advance(30 * time.Second)
	h.finish(h.next())
	// Two tokens short: freed once both are back.
	h.clock.Advance(59 * time.Second)
	h.wantUsers(0, "u1")
	h.clock.Advance(time.Second)
	h.wantUsers(0)
}

func TestPatternManualRun(t *testing.T) {
	exact := testHandler("*")
	exact.Command = []string{"exact"}
	h := newHarness(t, patternHandler("*@example.org"), exact)
	if n := h.x.Run("dave@example.org", ""); n != 1 {
		t.Fatalf("manual run matched %d", n)
	}
	r := h.next()
	if r.Trigger != TriggerManual || r.User != "dave@example.org" {
		t.Errorf("job %+v", r.Job)
	}
	wantEnv(t, r.Job, map[string]string{"IMSE_USER": "dave@example.org", "IMSE_TRIGGER": "manual", "IMSE_EVENT": "MessageNew"})
	h.finish(r)
	if n := h.x.Run("dave@example.org", "MessageRead"); n != 0 {
		t.Errorf("manual run for another event matched %d", n)
	}
	if n := h.x.Run("dave@other.org", ""); n != 0 {
		t.Errorf("manual run for another domain matched %d", n)
	}
	// A glob names no user: only the exact handler written for "*".
	if n := h.x.Run("*", ""); n != 1 {
		t.Errorf("manual run for * matched %d", n)
	}
	if r := h.next(); r.Handler.Command[0] != "exact" {
		t.Errorf("manual run for * ran %v", r.Handler.Command)
	} else {
		h.finish(r)
	}
	h.wantUsers(0) // its bucket is full, as manual runs spend no token: freed at once
}

// TestRecoverUsers: exact handlers run once; a wildcard handler once per
// user it keeps state for, and once for each user given that it matches.
func TestRecoverUsers(t *testing.T) {
	exact := testHandler("alice")
	exact.Delay = time.Minute
	pat := patternHandler("u*")
	pat.Delay = time.Minute
	h := newHarness(t, exact, pat)
	h.x.Deliver(newEvent("u1", "pending"), peer)
	h.x.Recover("u2", "u3", "x9", "u1")
	h.wantUsers(1, "u1", "u2", "u3")
	h.clock.Advance(time.Minute)
	got := map[string]string{}
	for range 4 {
		r := h.next()
		env := envOf(r.Job)
		got[env["IMSE_USER"]] = env["IMSE_TRIGGER"]
		h.finish(r)
	}
	want := map[string]string{"alice": "recovery", "u1": "event", "u2": "recovery", "u3": "recovery"}
	if !maps.Equal(got, want) {
		t.Errorf("runs %v, want %v", got, want)
	}
	// With no users given, the exact handler and the users with state
	// (waiting for their buckets to refill) run once more.
	if s := h.x.Status(); len(s) != 5 {
		t.Errorf("status %+v", s)
	}
	h.x.Recover()
	h.clock.Advance(time.Minute)
	clear(got)
	for range 4 {
		r := h.next()
		env := envOf(r.Job)
		got[env["IMSE_USER"]] = env["IMSE_TRIGGER"]
		h.finish(r)
	}
	want["u1"] = "recovery"
	if !maps.Equal(got, want) {
		t.Errorf("runs %v, want %v", got, want)
	}
	h.noRun()
}

func TestPatternStatus(t *testing.T) {
	exact := testHandler("alice")
	pat := patternHandler("*")
	pat.Delay = time.Minute
	pat.Number, pat.Line = 2, 9
	h := newHarness(t, exact, pat)
	for _, u := range []string{"b", "a", "c", "a"} {
		h.x.Deliver(newEvent(u, "s"), peer)
	}
	st := h.x.Status()
	if len(st) != 5 {
		t.Fatalf("status %+v", st)
	}
	if st[0].User != "alice" || st[0].Pattern != "" || st[0].PerUser {
		t.Errorf("exact entry %+v", st[0])
	}
	sum := st[1]
	if sum.User != "*" || sum.Pattern != "*" || sum.PerUser || sum.State != StateIdle || sum.Number != 2 || sum.Line != 9 || sum.RunAs != "vmail" {
		t.Errorf("summary %+v", sum)
	}
	for i, u := range []string{"a", "b", "c"} {
		s := st[2+i]
		pending := 1
		if u == "a" {
			pending = 2
		}
		if s.User != u || s.Pattern != "*" || !s.PerUser || s.State != StateDelayed || s.Pending != pending ||
			!s.Due.Equal(epoch.Add(time.Minute)) || s.Number != 2 || s.Event != "MessageNew" {
			t.Errorf("entry %d: %+v", i, s)
		}
	}
	h.clock.Advance(time.Minute)
	for range 3 {
		r := h.next()
		if r.User == "b" {
			h.finishWith(r, Result{ExitStatus: 3})
		} else {
			h.finish(r)
		}
	}
	if s := h.userStatus("b"); s.Runs != 1 || s.Failures != 1 || s.LastRun == nil || *s.LastRun.ExitStatus != 3 {
		t.Errorf("b %+v", s)
	}
	h.clock.Advance(30 * time.Second)
	st = h.x.Status()
	if len(st) != 2 || st[1].Runs != 3 || st[1].Failures != 1 || st[1].LastRun == nil {
		t.Errorf("after the users were freed: %+v", st)
	}
}

func TestUpdateKeepsUsers(t *testing.T) {
	pat := patternHandler("*")
	pat.Delay = time.Minute
	h := newHarness(t, pat)
	h.x.Deliver(newEvent("u1", "s"), peer)
	h.x.Deliver(newEvent("u2", "s"), peer)
	moved := pat
	moved.Line = 40
	if added, removed, kept := h.x.Update([]config.Handler{testHandler("alice"), moved}); added != 1 || removed != 0 || kept != 1 {
		t.Fatalf("update: %d %d %d", added, removed, kept)
	}
	h.wantUsers(1, "u1", "u2")
	changed := moved
	changed.Delay = 2 * time.Minute
	if _, removed, _ := h.x.Update([]config.Handler{changed}); removed != 2 {
		t.Fatalf("removed %d", removed)
	}
	h.wantUsers(0)
	if n := len(h.logs.find(t, "pending run dropped at reload")); n != 2 {
		t.Errorf("%d dropped lines", n)
	}
	if !h.x.Idle() {
		t.Error("not idle after the handler went")
	}
	h.clock.Advance(time.Hour)
	h.noRun()
}

// TestUpdateRemovedUserRunning: a removed wildcard handler's running
// command finishes, and its state is freed then.
func TestUpdateRemovedUserRunning(t *testing.T) {
	h := newHarness(t, patternHandler("*"))
	h.x.Deliver(newEvent("u1", "s"), peer)
	r := h.next()
	h.x.Update(nil)
	if h.x.Idle() {
		t.Error("idle while a command runs")
	}
	h.finish(r)
	if !h.x.Idle() || h.clock.Pending() != 0 {
		t.Errorf("idle %v, %d timers", h.x.Idle(), h.clock.Pending())
	}
}

// TestShutdownDropsUsers: pending runs of many users are logged one by
// one up to maxDroppedLines, then counted.
func TestShutdownDropsUsers(t *testing.T) {
	pat := patternHandler("*")
	pat.Delay = time.Minute
	h := newHarness(t, pat)
	for i := range maxDroppedLines + 5 {
		h.x.Deliver(newEvent("u"+string(rune('a'+i)), "s"), peer)
	}
	h.x.Shutdown(0)
	if n := len(h.logs.find(t, "pending run dropped at shutdown")); n != maxDroppedLines {
		t.Errorf("%d lines", n)
	}
	if rec := h.logs.find(t, "pending runs dropped at shutdown"); len(rec) != 1 || rec[0]["users"] != 5.0 {
		t.Errorf("summary %v", rec)
	}
	if !h.x.Idle() {
		t.Error("not idle after shutdown")
	}
	if n := h.x.Deliver(newEvent("ua", "s"), peer); n != 1 {
		t.Errorf("Deliver after shutdown = %d", n)
	}
	h.wantUsers(0)
}
