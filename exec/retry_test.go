package exec

import (
	"slices"
	"testing"
	"time"

	"github.com/imserious/imserious/config"
)

var failed = Result{ExitStatus: 1}

// noRun checks that no run reached the runner.
func (h *harness) noRun() {
	h.t.Helper()
	select {
	case r := <-h.runner.started:
		h.t.Fatalf("unexpected %s run (attempt %d) at +%v", r.Trigger, r.Attempt, h.elapsed())
	default:
	}
}

// status returns the status of handler i.
func (h *harness) status(i int) HandlerStatus {
	h.t.Helper()
	st := h.x.Status()
	if i >= len(st) {
		h.t.Fatalf("Status has %d handlers, want more than %d", len(st), i)
	}
	return st[i]
}

// TestRetryTwiceThenSucceed is the case: a command failing twice
// then succeeding with retries = 3 runs three times, the retries 10s and
// then 20s after the failed run ended, spending no tokens.
func TestRetryTwiceThenSucceed(t *testing.T) {
	hc := testHandler("alice") // burst 1, one token per 30s
	hc.Retries = 3
	hc.RetryBackoff = config.DefaultRetryBackoff
	h := newHarness(t, hc)

	h.x.Deliver(newEvent("alice", "mail"), peer)
	r1 := h.next()
	if r1.Trigger != TriggerEvent || r1.Attempt != 1 {
		t.Fatalf("first run: trigger %q attempt %d", r1.Trigger, r1.Attempt)
	}
	wantEnv(t, r1.Job, map[string]string{"IMSE_ATTEMPT": "<absent>", "IMSE_TRIGGER": "event"})
	h.clock.Advance(2 * time.Second) // the run takes 2s: the back-off counts from its end
	h.finishWith(r1, failed)

	rec := h.logs.waitFor(t, "run failed, retrying")
	if len(rec) != 1 || rec[0]["level"] != "INFO" || rec[0]["attempt"] != 2.0 || rec[0]["after"] != "10s" ||
		rec[0]["due"] != epoch.Add(12*time.Second).Format(time.RFC3339) || rec[0]["trigger"] != "event" {
		t.Errorf("retry record %v", rec)
	}
	st := h.status(0)
	if st.State != StateRetrying || !st.Due.Equal(epoch.Add(12*time.Second)) || st.Pending != 0 || st.Runs != 1 || st.Failures != 1 {
		t.Errorf("status during the back-off: %+v", st)
	}
	if st.LastRun == nil || st.LastRun.ExitStatus == nil || *st.LastRun.ExitStatus != 1 || st.LastRun.Duration != 2*time.Second {
		t.Errorf("last run %+v", st.LastRun)
	}

	h.clock.Advance(10*time.Second - time.Nanosecond)
	h.wantRuns(0, 1)
	h.clock.Advance(time.Nanosecond) // +12s: 10s after the failed run ended
	h.wantRuns(0, 2)
	r2 := h.next()
	if r2.Trigger != TriggerRetry || r2.Attempt != 2 || r2.Count != 1 {
		t.Fatalf("second run: trigger %q attempt %d count %d, want retry 2 1", r2.Trigger, r2.Attempt, r2.Count)
	}
	// The failed run's environment, the event's fields included.
	wantEnv(t, r2.Job, map[string]string{
		"IMSE_TRIGGER": "retry", "IMSE_ATTEMPT": "2", "IMSE_SUBJECT": "mail", "IMSE_COUNT": "1",
		"IMSE_REMOTE_IP": "127.0.0.1", "IMSE_USER": "alice", "HOME": "/home/alice",
	})
	if st := h.status(0); st.State != StateRunning || st.Due != (time.Time{}) || st.Runs != 2 {
		t.Errorf("status of the running retry: %+v", st)
	}
	h.finishWith(r2, Result{ExitStatus: -1, Signal: "SIGKILL"})

	h.clock.Advance(20*time.Second - time.Nanosecond) // doubled
	h.wantRuns(0, 2)
	h.clock.Advance(time.Nanosecond) // +32s
	h.wantRuns(0, 3)
	r3 := h.next()
	wantEnv(t, r3.Job, map[string]string{"IMSE_TRIGGER": "retry", "IMSE_ATTEMPT": "3", "IMSE_SUBJECT": "mail"})
	h.finish(r3)

	h.clock.Advance(time.Hour)
	h.wantRuns(0, 3)
	st = h.status(0)
	if st.State != StateIdle || st.Runs != 3 || st.Failures != 2 || st.LastRun.Trigger != TriggerRetry || *st.LastRun.ExitStatus != 0 {
		t.Errorf("status after the success: %+v, last run %+v", st, st.LastRun)
	}
	if n := len(h.logs.find(t, "run failed, retrying")); n != 2 {
		t.Errorf("%d retry records, want 2", n)
	}
	if n := len(h.logs.find(t, "run failed, retries exhausted")); n != 0 {
		t.Errorf("%d exhausted records, want 0", n)
	}
}

// TestRetriesSpendNoTokens: the retries run although the bucket is
// empty, and leave its token to the next event.
func TestRetriesSpendNoTokens(t *testing.T) {
	hc := testHandler("alice") // burst 1, one token per 30s
	hc.Retries = 2
	hc.RetryBackoff = time.Second
	h := newHarness(t, hc)
	h.x.Deliver(newEvent("alice", "1"), peer) // the token of +0s
	h.finishWith(h.next(), failed)
	h.clock.Advance(time.Second)
	h.finishWith(h.next(), failed)
	h.clock.Advance(2 * time.Second)
	h.finish(h.next())
	h.wantRuns(0, 3)
	h.clock.Advance(27*time.Second - time.Nanosecond)
	h.x.Deliver(newEvent("alice", "2"), peer)
	h.wantRuns(0, 3) // deferred to +30s: the retries took nothing
	if st := h.status(0); st.State != StateDeferred || !st.Due.Equal(epoch.Add(30*time.Second)) || st.Pending != 1 {
		t.Errorf("status %+v", st)
	}
	h.clock.Advance(time.Nanosecond)
	h.wantRuns(0, 4)
	h.finish(h.next())
}

func TestRetriesExhausted(t *testing.T) {
	hc := testHandler("alice")
	hc.Retries = 2
	hc.RetryBackoff = time.Second
	hc.LimitBurst = 10
	h := newHarness(t, hc)
	h.x.Deliver(newEvent("alice", "1"), peer)
	h.finishWith(h.next(), failed)
	h.clock.Advance(time.Second)
	h.finishWith(h.next(), Result{ExitStatus: -1, Err: errStart})
	h.clock.Advance(2*time.Second - time.Nanosecond)
	h.wantRuns(0, 2)
	h.clock.Advance(time.Nanosecond)
	r := h.next()
	if r.Attempt != 3 {
		t.Fatalf("attempt %d, want 3", r.Attempt)
	}
	h.finishWith(r, Result{ExitStatus: 0, TimedOut: true})
	rec := h.logs.waitFor(t, "run failed, retries exhausted")
	if len(rec) != 1 || rec[0]["level"] != "WARN" || rec[0]["attempts"] != 3.0 || rec[0]["retries"] != 2.0 || rec[0]["trigger"] != "retry" {
		t.Errorf("exhausted record %v", rec)
	}
	h.clock.Advance(time.Hour)
	h.wantRuns(0, 3)
	st := h.status(0)
	if st.State != StateIdle || st.Runs != 3 || st.Failures != 3 {
		t.Errorf("status %+v", st)
	}
	// A new event starts again from the first attempt.
	h.x.Deliver(newEvent("alice", "2"), peer)
	r = h.next()
	if r.Trigger != TriggerEvent || r.Attempt != 1 {
		t.Fatalf("trigger %q attempt %d", r.Trigger, r.Attempt)
	}
	h.finishWith(r, failed)
	h.clock.Advance(time.Second)
	if r := h.next(); r.Attempt != 2 {
		t.Fatalf("attempt %d, want 2", r.Attempt)
	} else {
		h.finish(r)
	}
}

type startError struct{}

func (startError) Error() string { return "no such file" }

var errStart error = startError{}

func TestNoRetriesNoRetry(t *testing.T) {
	hc := testHandler("alice")
	hc.RetryBackoff = time.Second // retries = 0
	h := newHarness(t, hc)
	h.x.Deliver(newEvent("alice", "1"), peer)
	h.finishWith(h.next(), failed)
	h.clock.Advance(time.Hour)
	h.wantRuns(0, 1)
	if n := len(h.logs.find(t, "run failed, retrying")) + len(h.logs.find(t, "run failed, retries exhausted")); n != 0 {
		t.Errorf("%d retry records without retries", n)
	}
	if st := h.status(0); st.Failures != 1 || st.State != StateIdle {
		t.Errorf("status %+v", st)
	}
}

func TestRetryBackoff(t *testing.T) {
	s := time.Second
	var got []time.Duration
	for a := 1; a <= 8; a++ {
		got = append(got, retryBackoff(10*s, a))
	}
	if want := []time.Duration{10 * s, 20 * s, 40 * s, 80 * s, 160 * s, 320 * s, 600 * s, 600 * s}; !slices.Equal(got, want) {
		t.Errorf("10s back-offs %v, want %v", got, want)
	}
	for _, c := range []struct {
		base    time.Duration
		attempt int
		want    time.Duration
	}{
		{7 * time.Minute, 1, 7 * time.Minute},
		{7 * time.Minute, 2, 10 * time.Minute},
		{time.Hour, 1, time.Hour}, // above the cap: as it is
		{time.Hour, 50, time.Hour},
		{time.Nanosecond, 100, 10 * time.Minute},
		{0, 1, config.DefaultRetryBackoff},
		{10 * s, 1000, 10 * time.Minute},
	} {
		if got := retryBackoff(c.base, c.attempt); got != c.want {
			t.Errorf("retryBackoff(%v, %d) = %v, want %v", c.base, c.attempt, got, c.want)
		}
	}
}

// TestEventDuringBackoff: a new event during the back-off starts a normal
// run (delay, token) that covers the retry; its attempts start again.
func TestEventDuringBackoff(t *testing.T) {
	hc := testHandler("alice")
	hc.Retries = 3
	hc.RetryBackoff = 10 * time.Second
	hc.Delay = 2 * time.Second
	hc.LimitBurst = 10
	h := newHarness(t, hc)
	h.x.Deliver(newEvent("alice", "1"), peer)
	h.clock.Advance(2 * time.Second)
	h.finishWith(h.next(), failed) // retry due at +12s
	h.clock.Advance(3 * time.Second)
	h.x.Deliver(newEvent("alice", "2"), peer) // +5s: the burst's delay
	if st := h.status(0); st.State != StateDelayed || !st.Due.Equal(epoch.Add(7*time.Second)) || st.Pending != 1 {
		t.Errorf("status %+v, want delayed until +7s with 1 pending", st)
	}
	h.clock.Advance(2*time.Second - time.Nanosecond)
	h.wantRuns(0, 1)
	h.clock.Advance(time.Nanosecond)
	r := h.next()
	if r.Trigger != TriggerEvent || r.Attempt != 1 || r.Count != 1 {
		t.Fatalf("trigger %q attempt %d count %d, want event 1 1", r.Trigger, r.Attempt, r.Count)
	}
	wantEnv(t, r.Job, map[string]string{"IMSE_SUBJECT": "2", "IMSE_ATTEMPT": "<absent>"})
	h.clock.Advance(10 * time.Second) // past +12s: the retry was dropped
	h.wantRuns(0, 2)
	h.finishWith(r, failed) // +17s; the next retry is a first one again
	h.clock.Advance(10*time.Second - time.Nanosecond)
	h.wantRuns(0, 2)
	h.clock.Advance(time.Nanosecond)
	r = h.next()
	wantEnv(t, r.Job, map[string]string{"IMSE_TRIGGER": "retry", "IMSE_ATTEMPT": "2", "IMSE_SUBJECT": "2"})
	h.finish(r)
	h.clock.Advance(time.Hour)
	h.wantRuns(0, 3)
	h.noRun()
}

// TestPendingRunCoversRetry: a run failing with another pending behind it
// is not retried: the pending run covers it.
func TestPendingRunCoversRetry(t *testing.T) {
	hc := testHandler("alice")
	hc.Retries = 3
	hc.LimitBurst = 10
	h := newHarness(t, hc)
	h.x.Deliver(newEvent("alice", "1"), peer)
	r := h.next()
	h.x.Deliver(newEvent("alice", "2"), peer)
	h.finishWith(r, failed)
	r = h.next()
	if r.Trigger != TriggerEvent || r.Attempt != 1 {
		t.Fatalf("trigger %q attempt %d", r.Trigger, r.Attempt)
	}
	h.finish(r)
	h.clock.Advance(time.Hour)
	h.wantRuns(0, 2)
	if n := len(h.logs.find(t, "run failed, retrying")); n != 0 {
		t.Errorf("%d retries scheduled", n)
	}
	if st := h.status(0); st.Runs != 2 || st.Failures != 1 {
		t.Errorf("status %+v", st)
	}
}

// TestPeriodicCoversRetry: a periodic run due during the back-off runs
// and drops the retry; periodic runs are retried too.
func TestPeriodicCoversRetry(t *testing.T) {
	hc := testHandler("alice")
	hc.Periodic = 15 * time.Second
	hc.Retries = 1
	hc.RetryBackoff = time.Minute
	h := newHarness(t, hc)
	h.x.Start()
	h.x.Deliver(newEvent("alice", "1"), peer)
	h.finishWith(h.next(), failed)
	if st := h.status(0); st.State != StateRetrying || !st.NextPeriodic.Equal(epoch.Add(15*time.Second)) {
		t.Errorf("status %+v", st)
	}
	h.clock.Advance(15 * time.Second)
	r := h.next()
	if r.Trigger != TriggerPeriodic || r.Attempt != 1 {
		t.Fatalf("trigger %q attempt %d, want periodic 1", r.Trigger, r.Attempt)
	}
	h.finishWith(r, failed) // +15s: retried at +75s, periodic due at +30s
	h.clock.Advance(15 * time.Second)
	r = h.next()
	if r.Trigger != TriggerPeriodic {
		t.Fatalf("trigger %q, want periodic", r.Trigger)
	}
	h.finish(r)
	for range 4 { // past +75s: periodic runs only, the retry was dropped
		h.clock.Advance(15 * time.Second)
		r := h.next()
		if r.Trigger != TriggerPeriodic {
			t.Fatalf("trigger %q at +%v, want periodic", r.Trigger, h.elapsed())
		}
		h.finish(r)
	}
	h.noRun()
	if st := h.status(0); st.Runs != 7 || st.Failures != 2 {
		t.Errorf("status %+v", st)
	}
}

// TestRecoveryDuringBackoff: the pending retry covers a recovery.
func TestRecoveryDuringBackoff(t *testing.T) {
	hc := testHandler("alice")
	hc.Retries = 1
	hc.RetryBackoff = 5 * time.Second
	h := newHarness(t, hc)
	h.x.Deliver(newEvent("alice", "1"), peer)
	h.finishWith(h.next(), failed)
	h.x.Recover()
	if st := h.status(0); st.State != StateRetrying {
		t.Errorf("status %+v", st)
	}
	h.clock.Advance(5 * time.Second)
	r := h.next()
	if r.Trigger != TriggerRetry {
		t.Fatalf("trigger %q, want retry", r.Trigger)
	}
	h.finish(r)
	h.clock.Advance(time.Hour)
	h.wantRuns(0, 2)
}

// TestShutdownDropsRetry: a retry waiting for its back-off is a pending
// run that will not happen.
func TestShutdownDropsRetry(t *testing.T) {
	hc := testHandler("alice")
	hc.Retries = 2
	h := newHarness(t, hc)
	h.x.Deliver(newEvent("alice", "1"), peer)
	h.finishWith(h.next(), failed)
	h.x.Shutdown(0)
	h.clock.Advance(time.Hour)
	h.wantRuns(0, 1)
	rec := h.logs.find(t, "pending run dropped at shutdown")
	if len(rec) != 1 || rec[0]["trigger"] != "retry" || rec[0]["attempt"] != 2.0 {
		t.Errorf("dropped records %v", rec)
	}
	if n := h.clock.Pending(); n != 0 {
		t.Errorf("%d timers armed after Shutdown", n)
	}
}

// TestNoRetryAfterShutdown: a run that fails because Shutdown stopped it
// is not retried.
func TestNoRetryAfterShutdown(t *testing.T) {
	hc := testHandler("alice")
	hc.Retries = 2
	h := newHarness(t, hc)
	h.x.Deliver(newEvent("alice", "1"), peer)
	r := h.next()
	h.x.Shutdown(0)
	<-r.killed
	if n := len(h.logs.find(t, "run failed, retrying")); n != 0 {
		t.Errorf("%d retries after Shutdown", n)
	}
	if n := h.clock.Pending(); n != 0 {
		t.Errorf("%d timers armed", n)
	}
}

// TestUpdateKeepsRetry: a reload that keeps the handler keeps its retry;
// one that changes it drops it.
func TestUpdateKeepsRetry(t *testing.T) {
	hc := testHandler("alice")
	hc.Retries = 1
	hc.RetryBackoff = 5 * time.Second
	hc.Line = 3
	h := newHarness(t, hc)
	h.x.Deliver(newEvent("alice", "1"), peer)
	h.finishWith(h.next(), failed)
	moved := hc
	moved.Line = 9
	b := testHandler("bob")
	h.x.Update([]config.Handler{b, moved})
	if st := h.status(1); st.State != StateRetrying || st.Line != 9 || st.Failures != 1 {
		t.Errorf("kept handler's status %+v", st)
	}
	h.clock.Advance(5 * time.Second)
	r := h.next()
	if r.Index != 1 || r.Trigger != TriggerRetry {
		t.Fatalf("index %d trigger %q, want 1 retry", r.Index, r.Trigger)
	}
	h.finishWith(r, failed)
	changed := moved
	changed.Retries = 2
	h.x.Update([]config.Handler{changed})
	if st := h.status(0); st.State != StateIdle || st.Runs != 0 {
		t.Errorf("changed handler's status %+v", st)
	}
	h.clock.Advance(time.Hour)
	h.noRun()
}
