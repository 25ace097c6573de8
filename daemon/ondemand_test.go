package daemon

import (
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imserious/imserious/config"
	"github.com/imserious/imserious/logging"
	"github.com/imserious/imserious/privsep"
)

// onDemandSupervisor is a supervisor with one wildcard run_as handler
// and a network process whose channel the test reads.
func onDemandSupervisor(t *testing.T) (*supervisor, *privsep.Conn, *logBuf) {
	t.Helper()
	toNet, netEnd := pair(t)
	lb := &logBuf{}
	cfg := &config.Config{Privsep: config.Privsep{User: "_imserious", MaxExec: 4, ExecIdle: time.Minute},
		Handlers: []config.Handler{{Number: 1, Line: 3, User: "*@example.org", Event: "MessageNew", RunAs: "%n",
			Pattern: true, Dynamic: true, MinUID: 1000, Command: []string{"~/hook"}, Path: "~/hook"}}}
	s := &supervisor{p: &Parent{}, cfg: cfg, log: slog.New(slog.NewTextHandler(lb, nil)), execs: map[string]*proc{},
		live: map[int]*proc{}, owed: map[int]bool{}, dynAccts: map[string]privsep.Account{}, dynTarget: map[string]int{},
		nextDyn: dynTargetBase, refusals: logging.NewLimiterTotal(time.Minute, 1, maxRefusalLines, nil),
		streams: &streams{targets: map[string]int{}}}
	s.net = &proc{name: "net", child: &privsep.Child{Conn: toNet}}
	return s, netEnd, lb
}

// A compromised network process can ask for any account: the parent
// starts nothing the configuration does not allow, and tells the network
// process to drop what waits for it.
func TestForgedWantRefused(t *testing.T) {
	s, netEnd, lb := onDemandSupervisor(t)
	for _, w := range []wireExecWant{
		{Account: "root", Handler: 1, User: "root@example.org"},           // uid 0
		{Account: "root", Handler: 1, User: "nobody@example.org"},         // another user's account
		{Account: "nobody", Handler: 1, User: "nobody@elsewhere.example"}, // the glob does not match
		{Account: "daemon", Handler: 2, User: "daemon@example.org"},       // no such handler; handler 1's rules: uid below 1000
		{Account: "_imserious", Handler: 1, User: "_imserious@example.org"},
	} {
		s.want(w)
		if len(s.execs) != 0 || s.dynLive != 0 || len(s.wantQ) != 0 {
			t.Fatalf("%+v: an exec process was started or queued: %v %v", w, s.execs, s.wantQ)
		}
		m, err := netEnd.Recv()
		if err != nil {
			t.Fatal(err)
		}
		var a wireExecAccount
		if m.Type != msgExecRefused || decode(m, &a) != nil || a.Account != w.Account {
			t.Fatalf("%+v: the network process got %s %q", w, msgName(m.Type), m.Payload)
		}
	}
	for _, want := range []string{"uid 0", "below min_uid", "does not match"} {
		if !strings.Contains(lb.String(), want) {
			t.Errorf("no refusal saying %q in the log:\n%s", want, lb.String())
		}
	}
}

// logBuf is a log destination safe for concurrent writers.
type logBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// The network process queues the events of an account whose exec process
// it asked for, asks once, merges past the bound per user, refuses (503)
// what it cannot hold, and on a refusal drops the queue and the account's
// events for a while without asking again, counting them.
func TestNetRouteQueue(t *testing.T) {
	n := &netProc{chans: map[int]*execChan{}, byAccount: map[string]*execChan{}, waiting: map[string]*waitQ{},
		refused: map[string]*refusal{}, wants: make(chan wireExecWant, 8), log: slog.New(slog.DiscardHandler)}
	peer := netip.MustParseAddrPort("127.0.0.1:1")
	body := []byte(`{"user":"u","event":"MessageNew"}`)
	for i := range maxWaitPerAccount {
		if _, queued, err := n.Route("alice", 1, fmt.Sprintf("u%d@x", i), peer, body); err != nil || !queued {
			t.Fatalf("event %d: queued %v, %v", i, queued, err)
		}
	}
	if len(n.wants) != 1 {
		t.Fatalf("asked %d times, want once", len(n.wants))
	}
	// Full: a known user's event replaces its older one; a new user's is
	// refused.
	if _, queued, err := n.Route("alice", 1, "u7@x", peer, body); err != nil || !queued {
		t.Fatalf("merge: %v %v", queued, err)
	}
	if _, _, err := n.Route("alice", 1, "new@x", peer, body); err == nil {
		t.Fatal("a full queue took a new user's event")
	}
	if q := n.waiting["alice"]; len(q.frames) != maxWaitPerAccount || q.users[len(q.users)-1] != "u7@x" {
		t.Fatalf("queue of %d, last %q", len(q.frames), q.users[len(q.users)-1])
	}
	n.refuse("alice")
	if len(n.waiting) != 0 || n.waitBytes != 0 {
		t.Fatalf("refused queue kept: %d accounts, %d bytes", len(n.waiting), n.waitBytes)
	}
	<-n.wants
	for range 3 {
		if _, queued, err := n.Route("alice", 1, "u1@x", peer, body); err != nil || !queued {
			t.Fatalf("after the refusal: %v %v", queued, err)
		}
	}
	if len(n.wants) != 0 || len(n.waiting) != 0 || n.refused["alice"].dropped != 3 {
		t.Fatalf("after the refusal: %d asks, %d waiting, %d dropped", len(n.wants), len(n.waiting), n.refused["alice"].dropped)
	}
	// Once the refusal is over, the next event asks again and says how
	// many were dropped.
	n.refused["alice"].until = time.Now().Add(-time.Second)
	if _, queued, err := n.Route("alice", 1, "u1@x", peer, body); err != nil || !queued {
		t.Fatalf("after the refusal's end: %v %v", queued, err)
	}
	if w := <-n.wants; w.Dropped != 3 {
		t.Errorf("want %+v, want Dropped 3", w)
	}
}
