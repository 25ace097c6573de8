package exec

import (
	"sync"
	"testing"
	"time"

	"github.com/imserious/imserious/config"
	"github.com/imserious/imserious/event"
)

// TestManualRun: through the delay, no token, a periodic run's
// environment with IMSE_TRIGGER=manual.
func TestManualRun(t *testing.T) {
	hc := testHandler("alice") // burst 1, one token per 30s
	hc.Delay = 5 * time.Second
	h := newHarness(t, hc)
	h.x.Deliver(newEvent("alice", "1"), peer) // takes the only token
	h.clock.Advance(5 * time.Second)
	h.finish(h.next())

	if n := h.x.Run("alice", ""); n != 1 {
		t.Fatalf("Run matched %d, want 1", n)
	}
	st := h.status(0)
	if st.State != StateDelayed || !st.Due.Equal(epoch.Add(10*time.Second)) || st.Pending != 0 {
		t.Errorf("status %+v, want delayed until +10s, nothing pending", st)
	}
	h.clock.Advance(5*time.Second - time.Nanosecond)
	h.wantRuns(0, 1)
	h.clock.Advance(time.Nanosecond) // the bucket is empty until +30s
	h.wantRuns(0, 2)
	r := h.next()
	if r.Trigger != TriggerManual || r.Count != 0 || r.Attempt != 1 {
		t.Fatalf("trigger %q count %d attempt %d, want manual 0 1", r.Trigger, r.Count, r.Attempt)
	}
	wantEnv(t, r.Job, map[string]string{
		"IMSE_TRIGGER": "manual", "IMSE_USER": "alice", "IMSE_EVENT": "MessageNew",
		"IMSE_COUNT": "<absent>", "IMSE_SUBJECT": "<absent>", "IMSE_ATTEMPT": "<absent>", "HOME": "/home/alice",
	})
	h.finish(r)
	// It spent no token: the one of +30s is still there for an event.
	h.clock.Advance(20 * time.Second)
	h.x.Deliver(newEvent("alice", "2"), peer)
	h.clock.Advance(5 * time.Second)
	h.wantRuns(0, 3)
	h.finish(h.next())
	if rec := h.logs.find(t, "run requested"); len(rec) != 1 || rec[0]["trigger"] != "manual" || rec[0]["level"] != "INFO" {
		t.Errorf("request records %v", rec)
	}
}

// TestManualTwiceIsOneRun: two quick requests make one run, whether the
// first is still in its delay or already running.
func TestManualTwiceIsOneRun(t *testing.T) {
	t.Run("in the delay", func(t *testing.T) {
		hc := testHandler("alice")
		hc.Delay = 5 * time.Second
		h := newHarness(t, hc)
		h.x.Run("alice", "")
		h.clock.Advance(time.Second)
		h.x.Run("alice", "MessageNew")
		h.clock.Advance(4 * time.Second) // the first request's delay, not extended
		h.wantRuns(0, 1)
		h.finish(h.next())
		h.clock.Advance(time.Hour)
		h.wantRuns(0, 1)
	})
	t.Run("running", func(t *testing.T) {
		h := newHarness(t, testHandler("alice"))
		h.x.Run("alice", "")
		r := h.next()
		h.x.Run("alice", "")
		if st := h.status(0); st.State != StateRunning || st.PID != 1001 || !st.Since.Equal(epoch) {
			t.Errorf("status %+v", st)
		}
		h.finish(r)
		h.clock.Advance(time.Hour)
		h.wantRuns(0, 1)
		h.noRun()
	})
}

// TestManualMergesIntoPending: a pending event run covers a manual
// request and keeps its trigger and events, but then needs no token: in
// the delay it starts at the delay's end, waiting for its token it
// starts at once and gives the token back.
func TestManualMergesIntoPending(t *testing.T) {
	t.Run("delayed", func(t *testing.T) {
		hc := testHandler("alice")
		hc.Delay = 5 * time.Second
		h := newHarness(t, hc)
		h.x.Deliver(newEvent("alice", "1"), peer)
		h.clock.Advance(5 * time.Second)
		h.finish(h.next()) // the bucket is empty until +30s
		h.x.Deliver(newEvent("alice", "2"), peer)
		h.x.Run("alice", "")
		h.x.Deliver(newEvent("alice", "3"), peer)
		h.clock.Advance(5 * time.Second)
		h.wantRuns(0, 2)
		r := h.next()
		if r.Trigger != TriggerEvent || r.Count != 2 {
			t.Fatalf("trigger %q count %d, want event 2", r.Trigger, r.Count)
		}
		wantEnv(t, r.Job, map[string]string{"IMSE_TRIGGER": "event", "IMSE_SUBJECT": "3", "IMSE_COUNT": "2"})
		h.finish(r)
	})
	t.Run("deferred", func(t *testing.T) {
		h := newHarness(t, testHandler("alice")) // burst 1, one per 30s
		h.x.Deliver(newEvent("alice", "1"), peer)
		h.finish(h.next())
		h.clock.Advance(time.Second)
		h.x.Deliver(newEvent("alice", "2"), peer)
		if st := h.status(0); st.State != StateDeferred || !st.Due.Equal(epoch.Add(30*time.Second)) || st.Pending != 1 {
			t.Fatalf("status %+v, want deferred until +30s", st)
		}
		h.x.Run("alice", "")
		h.wantRuns(0, 2)
		r := h.next()
		if r.Trigger != TriggerEvent || r.Count != 1 {
			t.Fatalf("trigger %q count %d, want event 1", r.Trigger, r.Count)
		}
		h.finish(r)
		// The token reserved for +30s was given back: the next event
		// waits for it, not for the one after.
		h.x.Deliver(newEvent("alice", "3"), peer)
		if st := h.status(0); st.State != StateDeferred || !st.Due.Equal(epoch.Add(30*time.Second)) {
			t.Errorf("status %+v, want deferred until +30s", st)
		}
		h.clock.Advance(29 * time.Second)
		h.wantRuns(0, 3)
		h.finish(h.next())
	})
	t.Run("behind a running command", func(t *testing.T) {
		h := newHarness(t, testHandler("alice"))
		h.x.Deliver(newEvent("alice", "1"), peer)
		r := h.next()
		h.x.Deliver(newEvent("alice", "2"), peer) // needs the token of +30s
		h.x.Run("alice", "")
		if st := h.status(0); st.State != StateRunning || st.Pending != 1 || st.Due != (time.Time{}) {
			t.Errorf("status %+v, want running with 1 pending", st)
		}
		h.finish(r)
		h.wantRuns(0, 2) // right away: no token needed
		r = h.next()
		if r.Trigger != TriggerEvent || r.Count != 1 {
			t.Fatalf("trigger %q count %d", r.Trigger, r.Count)
		}
		h.finish(r)
	})
	t.Run("recovery", func(t *testing.T) {
		hc := testHandler("alice")
		hc.Delay = 5 * time.Second
		h := newHarness(t, hc)
		h.x.Recover()
		h.x.Run("alice", "")
		h.x.Recover()
		h.clock.Advance(5 * time.Second)
		r := h.next()
		if r.Trigger != TriggerManual {
			t.Fatalf("trigger %q, want manual", r.Trigger)
		}
		wantEnv(t, r.Job, map[string]string{"IMSE_TRIGGER": "manual"})
		h.finish(r)
		h.clock.Advance(time.Hour)
		h.wantRuns(0, 1)
	})
}

// TestManualDuringBackoff: a manual request replaces a retry waiting for
// its back-off.
func TestManualDuringBackoff(t *testing.T) {
	hc := testHandler("alice")
	hc.Retries = 2
	hc.RetryBackoff = time.Minute
	h := newHarness(t, hc)
	h.x.Deliver(newEvent("alice", "1"), peer)
	h.finishWith(h.next(), failed)
	h.x.Run("alice", "")
	r := h.next()
	if r.Trigger != TriggerManual || r.Attempt != 1 {
		t.Fatalf("trigger %q attempt %d, want manual 1", r.Trigger, r.Attempt)
	}
	h.finish(r)
	h.clock.Advance(time.Hour)
	h.wantRuns(0, 2)
}

func TestManualMatches(t *testing.T) {
	newMail := testHandler("alice")
	newMail.Delay = time.Hour // keep them pending: the state says who got it
	read := newMail
	read.Event = "MessageRead"
	bob := newMail
	bob.User = "bob"
	h := newHarness(t, newMail, read, bob)
	for _, c := range []struct {
		user, event string
		want        int
	}{
		{"alice", "", 2},
		{"alice", "messageread", 1},
		{"alice", "MESSAGENEW", 1},
		{"alice", "FlagsSet", 0},
		{"alice", "Nope", 0},
		{"Alice", "", 0},
		{"carol", "", 0},
		{"bob", "", 1},
	} {
		if n := h.x.Run(c.user, c.event); n != c.want {
			t.Errorf("Run(%q, %q) = %d, want %d", c.user, c.event, n, c.want)
		}
	}
	for i, st := range h.x.Status() {
		if st.State != StateDelayed {
			t.Errorf("handler %d: state %q, want delayed", i, st.State)
		}
	}
	h.clock.Advance(time.Hour)
	for i := range 3 {
		h.wantRuns(i, 1)
		h.finish(h.next())
	}
	if rec := h.logs.find(t, "manual run for an unknown event matches no handler"); len(rec) != 1 || rec[0]["event"] != "Nope" {
		t.Errorf("records %v", rec)
	}
}

func TestManualAfterShutdown(t *testing.T) {
	h := newHarness(t, testHandler("alice"))
	h.x.Shutdown(0)
	if n := h.x.Run("alice", ""); n != 1 {
		t.Errorf("Run after Shutdown matched %d, want 1", n)
	}
	if n := h.x.RunAtStart(); n != 0 {
		t.Errorf("RunAtStart without run_at_start = %d", n)
	}
	h.clock.Advance(time.Hour)
	h.wantRuns(0, 0)
	if n := len(h.logs.find(t, "manual run after shutdown dropped")); n != 1 {
		t.Errorf("%d dropped records, want 1", n)
	}
}

// TestRunAtStart: the handlers with run_at_start run once, through the
// delay and without a token, IMSE_TRIGGER=start; an event in the delay
// makes it an event run.
func TestRunAtStart(t *testing.T) {
	a := testHandler("alice")
	a.RunAtStart = true
	a.Delay = 5 * time.Second
	b := testHandler("bob")
	c := testHandler("carol")
	c.RunAtStart = true
	h := newHarness(t, a, b, c)
	h.x.Start()
	if n := h.x.RunAtStart(); n != 2 {
		t.Fatalf("RunAtStart = %d, want 2", n)
	}
	h.wantRuns(2, 1) // no delay: at once
	r := h.next()
	if r.Trigger != TriggerStart || r.Index != 2 {
		t.Fatalf("trigger %q index %d, want start 2", r.Trigger, r.Index)
	}
	wantEnv(t, r.Job, map[string]string{"IMSE_TRIGGER": "start", "IMSE_USER": "carol", "IMSE_COUNT": "<absent>"})
	h.finish(r)
	h.x.Deliver(newEvent("carol", "x"), peer) // the token is still there
	h.wantRuns(2, 2)
	h.finish(h.next())

	h.clock.Advance(5*time.Second - time.Nanosecond)
	h.wantRuns(0, 0)
	h.clock.Advance(time.Nanosecond)
	r = h.next()
	if r.Trigger != TriggerStart || r.Index != 0 {
		t.Fatalf("trigger %q index %d, want start 0", r.Trigger, r.Index)
	}
	h.finish(r)
	h.clock.Advance(time.Hour)
	h.wantRuns(1, 0)
	h.wantRuns(0, 1)

	// Merged like a manual run: an event in the delay turns it into an
	// event run, one run.
	h2 := newHarness(t, a)
	h2.x.RunAtStart()
	h2.clock.Advance(time.Second)
	h2.x.Deliver(newEvent("alice", "while starting"), peer)
	h2.clock.Advance(4 * time.Second)
	r = h2.next()
	if r.Trigger != TriggerEvent || r.Count != 1 {
		t.Fatalf("trigger %q count %d, want event 1", r.Trigger, r.Count)
	}
	h2.finish(r)
	h2.clock.Advance(time.Hour)
	h2.wantRuns(0, 1)
}

// TestStatus follows one handler through every state.
func TestStatus(t *testing.T) {
	hc := testHandler("alice")
	hc.Delay = 5 * time.Second
	hc.Periodic = time.Hour
	hc.Number, hc.Line = 2, 17
	hc.RunAs = "%u"
	hc.Account.Name = "alice-acct"
	other := testHandler("bob")
	h := newHarness(t, hc, other)

	st := h.x.Status()
	if len(st) != 2 || st[1].User != "bob" {
		t.Fatalf("Status %+v, want two handlers in order", st)
	}
	want := HandlerStatus{Number: 2, Line: 17, User: "alice", Event: "MessageNew", RunAs: "alice-acct", State: StateIdle}
	if st[0] != want {
		t.Errorf("before Start:\n got %+v\nwant %+v", st[0], want)
	}
	h.x.Start()
	if s := h.status(0); !s.NextPeriodic.Equal(epoch.Add(time.Hour)) {
		t.Errorf("next periodic %v, want +1h", s.NextPeriodic)
	}
	if s := h.status(1); s.NextPeriodic != (time.Time{}) {
		t.Errorf("without periodic: next periodic %v", s.NextPeriodic)
	}

	h.clock.Advance(time.Minute)
	h.x.Deliver(newEvent("alice", "1"), peer)
	h.clock.Advance(time.Second)
	h.x.Deliver(newEvent("alice", "2"), peer)
	s := h.status(0)
	if s.State != StateDelayed || !s.Due.Equal(epoch.Add(time.Minute+5*time.Second)) || s.Pending != 2 || s.PID != 0 {
		t.Errorf("delayed: %+v", s)
	}
	h.clock.Advance(4 * time.Second)
	r := h.next()
	s = h.status(0)
	if s.State != StateRunning || s.PID != 1001 || !s.Since.Equal(epoch.Add(time.Minute+5*time.Second)) ||
		s.Pending != 0 || s.Due != (time.Time{}) || s.NextPeriodic != (time.Time{}) || s.Runs != 1 || s.LastRun != nil {
		t.Errorf("running: %+v", s)
	}
	h.x.Deliver(newEvent("alice", "3"), peer)
	if s := h.status(0); s.State != StateRunning || s.Pending != 1 {
		t.Errorf("running with an event behind: %+v", s)
	}
	h.clock.Advance(3 * time.Second)
	h.finishWith(r, Result{ExitStatus: -1, Signal: "SIGKILL"})
	// The follow-up waits for the token of +30s after the run.
	s = h.status(0)
	if s.State != StateDeferred || !s.Due.Equal(epoch.Add(time.Minute+35*time.Second)) || s.Pending != 1 || s.Failures != 1 {
		t.Errorf("deferred: %+v", s)
	}
	if l := s.LastRun; l == nil || l.ExitStatus != nil || l.Signal != "SIGKILL" || l.Trigger != TriggerEvent ||
		!l.Start.Equal(epoch.Add(time.Minute+5*time.Second)) || l.Duration != 3*time.Second {
		t.Errorf("last run %+v", l)
	}
	if !s.NextPeriodic.Equal(epoch.Add(time.Minute + 8*time.Second + time.Hour)) {
		t.Errorf("next periodic %v, want an hour after the run ended", s.NextPeriodic)
	}
	// Status hands out copies.
	*s.LastRun = RunInfo{}
	if l := h.status(0).LastRun; l.Signal != "SIGKILL" {
		t.Errorf("a change to a returned RunInfo reached the handler: %+v", l)
	}

	h.clock.Advance(27 * time.Second)
	r = h.next()
	if s := h.status(0); s.PID != 1002 {
		t.Errorf("second run pid %d, want 1002", s.PID)
	}
	h.finishWith(r, Result{ExitStatus: -1, Err: errStart})
	s = h.status(0)
	if s.State != StateIdle || s.Runs != 2 || s.Failures != 2 || s.LastRun.ExitStatus != nil || s.LastRun.Signal != "" || s.PID != 0 {
		t.Errorf("after a start failure: %+v, last run %+v", s, s.LastRun)
	}
	h.x.Run("alice", "")
	h.clock.Advance(5 * time.Second)
	h.finishWith(h.next(), Result{ExitStatus: 4})
	if l := h.status(0).LastRun; l.ExitStatus == nil || *l.ExitStatus != 4 || l.Trigger != TriggerManual {
		t.Errorf("last run %+v", l)
	}

	// After Update, a kept handler reports its new place.
	moved := hc
	moved.Number, moved.Line = 1, 4
	h.x.Update([]config.Handler{moved})
	if s := h.x.Status(); len(s) != 1 || s[0].Number != 1 || s[0].Line != 4 || s[0].Runs != 3 {
		t.Errorf("after Update: %+v", s)
	}
}

// TestStatusConcurrent calls Status while events, runs, timers and
// reloads go on; the race detector is the check.
func TestStatusConcurrent(t *testing.T) {
	hc := testHandler("alice")
	hc.Delay = time.Second
	hc.Periodic = 2 * time.Second
	hc.Retries = 2
	hc.RetryBackoff = time.Second
	h := newHarness(t, hc)
	h.x.Start()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			for _, s := range h.x.Status() {
				if s.LastRun != nil && s.LastRun.ExitStatus != nil {
					_ = *s.LastRun.ExitStatus
				}
			}
		}
	}()
	for i := range 20 {
		h.x.Deliver(event.Event{User: "alice", Event: "MessageNew"}, peer)
		h.x.Run("alice", "")
		h.clock.Advance(time.Second)
		res := Result{}
		if i%2 == 0 {
			res = failed
		}
		h.finishWith(h.next(), res)
		if i%5 == 0 {
			h.x.Update([]config.Handler{hc})
		}
	}
	close(stop)
	wg.Wait()
}
