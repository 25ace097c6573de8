package daemon

import (
	"fmt"
	"testing"
	"time"

	"github.com/imserious/imserious/config"
	"github.com/imserious/imserious/control"
)

func diffHandler(user, event string, delay time.Duration) config.Handler {
	return config.Handler{User: user, Event: event, Command: []string{"/bin/true"}, Delay: delay, Path: "/bin/true"}
}

// TestDiffHandlers: what a reload reports. A handler the new file has
// the same of is unchanged, wherever it moved; one of the same user and
// event is changed; the rest are added and removed; two alike handlers
// of one user count one each.
func TestDiffHandlers(t *testing.T) {
	old := []config.Handler{
		diffHandler("alice", "MessageNew", 0),
		diffHandler("bob", "MessageNew", 0),
		diffHandler("carol", "MessageNew", 0),
		diffHandler("dave", "MessageNew", 0),
		diffHandler("dave", "MessageNew", 0),
	}
	nu := []config.Handler{
		diffHandler("carol", "MessageNew", 0),           // moved: unchanged
		diffHandler("alice", "MessageNew", time.Second), // changed
		diffHandler("bob", "MessageRead", 0),            // bob's MessageNew removed, this added
		diffHandler("dave", "MessageNew", 0),            // one of dave's two: unchanged
		diffHandler("erin", "MessageNew", 0),            // added
	}
	want := control.ReloadResult{Added: 2, Changed: 1, Removed: 2, Unchanged: 2}
	if got := diffHandlers(old, nu); got != want {
		t.Errorf("diffHandlers = %+v, want %+v", got, want)
	}
	if got := diffHandlers(nil, nu); got != (control.ReloadResult{Added: 5}) {
		t.Errorf("from nothing: %+v", got)
	}
	if got := diffHandlers(old, old); got != (control.ReloadResult{Unchanged: 5}) {
		t.Errorf("the same file: %+v", got)
	}
}

// BenchmarkDiffHandlers is the parent's count of a reload of 10,000
// handlers that all changed: about 2 ms, against 0.8 s when each new
// handler was compared with every old one.
func BenchmarkDiffHandlers(b *testing.B) {
	const n = 10000
	old, nu := make([]config.Handler, n), make([]config.Handler, n)
	for i := range n {
		old[i] = diffHandler(fmt.Sprintf("user%05d", i), "MessageNew", 0)
		nu[i] = old[i]
		nu[i].Delay = time.Second
	}
	for b.Loop() {
		if r := diffHandlers(old, nu); r.Changed != n {
			b.Fatalf("%+v", r)
		}
	}
}
