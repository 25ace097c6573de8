package daemon

import (
	"log/slog"
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
