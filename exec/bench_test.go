package exec

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/imserious/imserious/clock/clocktest"
	"github.com/imserious/imserious/config"
)

// quickRunner ends every run at once, successfully.
type quickRunner struct{}

func (quickRunner) Run(_ context.Context, j Job) Result {
	if j.Started != nil {
		j.Started(1)
	}
	return Result{}
}

// BenchmarkDeliverExact is the hot path of an exec process with 10,000
// exact handlers (the bench's set-up): an event for one user, coalesced
// into the run its handler has pending.
func BenchmarkDeliverExact(b *testing.B) {
	hs := make([]config.Handler, 10000)
	for i := range hs {
		hs[i] = testHandler(fmt.Sprintf("user%d", i))
	}
	x := New(Options{Handlers: hs, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Clock: clocktest.New(epoch), Runner: quickRunner{}})
	defer x.Shutdown(0)
	evs := make([]struct {
		u string
	}, 100)
	for i := range evs {
		evs[i].u = fmt.Sprintf("user%d", i*97)
	}
	ev := newEvent("user0", "hello")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ev.User = evs[i%len(evs)].u
		if x.Deliver(ev, peer) != 1 {
			b.Fatal("no match")
		}
	}
}

// BenchmarkDeliverPattern: events for 100 users of one wildcard handler
// beside the 10,000 exact ones, each coalesced into its user's pending
// run: the glob match and the per-user state's lookup.
func BenchmarkDeliverPattern(b *testing.B) {
	hs := make([]config.Handler, 10000, 10001)
	for i := range hs {
		hs[i] = testHandler(fmt.Sprintf("user%d", i))
	}
	hs = append(hs, patternHandler("*@example.org"))
	x := New(Options{Handlers: hs, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Clock: clocktest.New(epoch), Runner: quickRunner{}})
	defer x.Shutdown(0)
	users := make([]string, 100)
	for i := range users {
		users[i] = fmt.Sprintf("user%d@example.org", i)
	}
	ev := newEvent("user0@example.org", "hello")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ev.User = users[i%len(users)]
		if x.Deliver(ev, peer) != 1 {
			b.Fatal("no match")
		}
	}
}

// BenchmarkUpdateChanged is a reload of 10,000 handlers that all changed
// (their delay), Deliver waiting on the Exec's lock meanwhile: about
// 12 ms, against 560 ms when each new handler was compared with every
// old one.
func BenchmarkUpdateChanged(b *testing.B) {
	const n = 10000
	lists := [2][]config.Handler{make([]config.Handler, n), make([]config.Handler, n)}
	for i := range n {
		lists[0][i] = sameAccountHandler(fmt.Sprintf("user%05d", i))
		lists[1][i] = lists[0][i]
		lists[1][i].Delay = time.Second
	}
	x := New(Options{Handlers: lists[0], Log: slog.New(slog.DiscardHandler), Clock: clocktest.New(epoch), Runner: quickRunner{}})
	defer x.Shutdown(0)
	for i := 0; b.Loop(); i++ {
		if added, _, _ := x.Update(lists[(i+1)%2]); added != n {
			b.Fatalf("added %d, want %d", added, n)
		}
	}
}
