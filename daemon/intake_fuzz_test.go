package daemon

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/imserious/imserious/config"
	"github.com/imserious/imserious/control"
	"github.com/imserious/imserious/event"
	"github.com/imserious/imserious/exec"
	"github.com/imserious/imserious/internal/dovecotsamples"
	"github.com/imserious/imserious/logging"
	"github.com/imserious/imserious/privsep"
)

// The fuzz targets of this file feed each process's intake what a less
// privileged process could send it, whole messages through the same code
// the roles run: the exec process reading its channel from the network
// process, and the root parent reading its children's channels.

// recordingRunner is an exec.Runner that runs nothing and keeps the
// users of the jobs it was given.
type recordingRunner struct {
	mu    sync.Mutex
	users []string
}

func (r *recordingRunner) Run(_ context.Context, j exec.Job) exec.Result {
	r.mu.Lock()
	r.users = append(r.users, j.User)
	r.mu.Unlock()
	return exec.Result{Start: time.Now()}
}

// fuzzHandlers are the handlers of the exec process under fuzzing: a
// plain user, an address, and one restricted to a network.
func fuzzHandlers() []config.Handler {
	acct := privsep.Account{Name: "a", UID: 1000, GID: 1000, Home: "/"}
	var hs []config.Handler
	for i, u := range []string{"alice", "alice@example.org", "bob"} {
		h := config.Handler{Line: i + 1, Number: i + 1, User: u, Event: "MessageNew", Command: []string{"/bin/true"},
			Path: "/bin/true", LimitPeriod: time.Nanosecond, LimitBurst: 1, Env: map[string]string{}, Account: acct}
		if u == "bob" {
			h.IP = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
		}
		hs = append(hs, h)
	}
	return hs
}

// FuzzExecIntake: any message on the exec process's channel from the
// network process is handled or refused as a protocol violation, never a
// panic; an event accepted is exactly what encodeEvent makes of a peer
// and a body event.Decode accepts, and it runs only the handlers of its
// own user.
func FuzzExecIntake(f *testing.F) {
	peer := netip.MustParseAddrPort("127.0.0.1:40000")
	for _, s := range dovecotsamples.Load(f) {
		f.Add(uint8(msgEvent), encodeEvent(peer, s.Body))
	}
	for _, s := range []string{`{"user":"bob","event":"MessageNew"}`, `{"user":"alice@example.org","event":"messagenew","imap-uid":[1,2]}`, `{}`, ``} {
		f.Add(uint8(msgEvent), encodeEvent(netip.MustParseAddrPort("[::ffff:10.1.2.3]:1"), []byte(s)))
	}
	f.Add(uint8(msgEvent), []byte("10.0.0.1:1\n"))
	f.Add(uint8(msgEvents), batchOf(f, peer, []byte(`{"user":"alice","event":"MessageNew"}`), []byte(`{"user":"bob","event":"MessageNew"}`)))
	f.Add(uint8(msgEvents), batchOf(f, peer, []byte(`{"user":"alice","event":"MessageNew"}`), []byte(`{}`)))
	f.Add(uint8(msgRecover), []byte(nil))
	f.Add(uint8(msgRecover), []byte("x"))
	f.Add(uint8(msgRecover), []byte(`{"users":["alice","carol@example.org"]}`))
	f.Add(uint8(msgStatusReq), []byte(`{"id":1}`))
	f.Add(uint8(0), []byte(nil))
	f.Fuzz(func(t *testing.T, typ uint8, payload []byte) {
		runner := &recordingRunner{}
		log := slog.New(slog.DiscardHandler)
		e := &execProc{name: "a", log: log, unmatched: logging.NewLimiter(time.Minute, 1, nil),
			x: exec.New(exec.Options{Handlers: fuzzHandlers(), Log: log, Runner: runner})}
		m := privsep.Msg{Type: uint32(typ), Payload: bytes.Clone(payload)}
		err := e.netMsg(m)
		e.x.Shutdown(time.Second) // every run started has ended
		if err != nil {
			if !errors.Is(err, errProtocol) {
				t.Fatalf("%v is no protocol violation", err)
			}
			return
		}
		switch m.Type {
		case msgEvent:
			remote, body, err := decodeEvent(payload)
			if err != nil {
				t.Fatalf("accepted an event decodeEvent refuses: %v", err)
			}
			if !bytes.Equal(encodeEvent(remote, body), payload) {
				t.Fatalf("accepted %q, which is not what encodeEvent makes", payload)
			}
			ev, err := event.Decode(body)
			if err != nil {
				t.Fatalf("accepted a body event.Decode refuses: %v", err)
			}
			for _, u := range runner.users {
				if u != ev.User {
					t.Fatalf("an event for %q ran the handler of %q", ev.User, u)
				}
			}
		case msgEvents:
			// Every event of the batch decodes and re-encodes to it, and
			// runs only the handlers of its own user.
			users := map[string]bool{}
			again := privsep.StartFrame(nil)
			if err := decodeEvents(payload, func(remote netip.AddrPort, body []byte) error {
				ev, err := event.Decode(body)
				if err != nil {
					t.Fatalf("accepted a batch with a body event.Decode refuses: %v", err)
				}
				users[ev.User] = true
				again = appendBatchEvent(again, remote.AppendTo(nil), body)
				return nil
			}); err != nil {
				t.Fatalf("accepted a batch decodeEvents refuses: %v", err)
			}
			if !bytes.Equal(again[privsep.HeaderLen:], payload) {
				t.Fatalf("accepted %q, which is not what appendBatchEvent makes", payload)
			}
			for _, u := range runner.users {
				if !users[u] {
					t.Fatalf("a batch for %v ran the handler of %q", users, u)
				}
			}
		case msgRecover:
			if len(runner.users) != len(fuzzHandlers()) {
				t.Fatalf("a recovery ran %d handlers, want every one", len(runner.users))
			}
		default:
			t.Fatalf("accepted message type %d from the network process", m.Type)
		}
	})
}

// FuzzParentIntake: any message from an exec process or the network
// process is handled by the root parent, or ends in the child being
// killed; never a panic, and nothing a child says enters the parent's
// books beyond what its configuration allows: recovery debts only for
// exec processes it has, status only of the reporting process's own
// handlers, a run count no higher than its handlers.
func FuzzParentIntake(f *testing.F) {
	f.Add(false, uint8(msgReady), []byte(`{"gen":1}`))
	f.Add(true, uint8(msgReady), []byte(`{"gen":2}`))
	f.Add(true, uint8(msgOwed), []byte(`{"target":3,"owed":true}`))
	f.Add(true, uint8(msgOwed), []byte(`{"target":99,"owed":true}`))
	f.Add(false, uint8(msgNetFault), []byte(`{"reason":"bad frame"}`))
	f.Add(false, uint8(msgStatusItem), []byte(`{"id":7,"number":1,"state":"running","pid":12,"runs":3,"last_run":{"start":"2026-01-01T00:00:00Z","duration_ns":5,"exit_status":0,"trigger":"event"}}`))
	f.Add(false, uint8(msgStatusItem), []byte(`{"id":7,"number":2,"state":"idle"}`))
	f.Add(false, uint8(msgCtlDone), []byte(`{"id":7,"items":1,"matched":1000}`))
	f.Add(true, uint8(msgCtlDone), []byte(`{"id":7,"matched":1}`))
	f.Add(false, uint8(msgEvent), []byte("127.0.0.1:1\n{}"))
	f.Add(true, uint8(msgExecWant), []byte(`{"account":"nobody","handler":3,"user":"nobody@fuzz.invalid"}`))
	f.Add(true, uint8(msgExecWant), []byte(`{"account":"root","handler":3,"user":"root@fuzz.invalid","dropped":5}`))
	f.Add(true, uint8(msgExecWant), []byte(`{"account":"alice","handler":1,"user":"alice"}`))
	f.Add(false, uint8(msgExecIdle), []byte(`{"idle":true}`))
	f.Fuzz(func(t *testing.T, fromNet bool, typ uint8, payload []byte) {
		s, alice, netp, op := parentUnderFuzz()
		toNet, netEnd, err := privsep.Socketpair()
		if err != nil {
			t.Fatal(err)
		}
		defer netEnd.Close()
		c, err := privsep.NewConn(toNet)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		netp.child = &privsep.Child{Conn: c}
		pr := alice
		if fromNet {
			pr = netp
		}
		if err := s.handle(procEvent{pr: pr, msg: privsep.Msg{Type: uint32(typ), Payload: bytes.Clone(payload)}}); err != nil {
			t.Fatalf("a child's message stops the daemon: %v", err)
		}
		for target := range s.owed {
			if target != 3 {
				t.Fatalf("owed a recovery to target %d, which is no exec process", target)
			}
		}
		for acct, items := range op.items {
			if acct != "alice" {
				t.Fatalf("status items of %q taken", acct)
			}
			for n := range items {
				if n != 1 {
					t.Fatalf("status of handler %d taken from exec[alice], which has only handler 1", n)
				}
			}
		}
		if len(s.execs) != 2 || s.dynLive != 0 || len(s.wantQ) != 0 {
			t.Fatalf("a child's message started or queued an exec process: %v, %d live, %v", s.execs, s.dynLive, s.wantQ)
		}
		if op.matched > 1 {
			t.Fatalf("exec[alice] with one handler counted as starting %d", op.matched)
		}
		select {
		case resp := <-op.reply:
			if resp.Run == nil || resp.Run.Handlers > 1 {
				t.Fatalf("answer %+v", resp)
			}
		default:
		}
	})
}

// parentUnderFuzz is a supervisor in force, after start-up: exec[alice]
// (target 3, handler 1) and exec[bob] (handler 2) and a network process,
// and a run request waiting for exec[alice]'s answer. Its children are
// gone already, so that killing one does nothing.
func parentUnderFuzz() (s *supervisor, alice, netp *proc, op *ctlOp) {
	gone := make(chan struct{})
	close(gone)
	alice = &proc{name: "exec[alice]", account: "alice", target: 3, done: gone, ready: true, gen: 1}
	bob := &proc{name: "exec[bob]", account: "bob", target: 4, done: gone, ready: true, gen: 1}
	netp = &proc{name: "net", done: gone, ready: true, gen: 1}
	op = &ctlOp{id: 7, req: control.Request{Verb: control.VerbRun, User: "alice"}, reply: make(chan *control.Response, 1),
		waiting: map[string]bool{"alice": true}, items: map[string]map[int]*wireStatusItem{}}
	s = &supervisor{log: slog.New(slog.DiscardHandler),
		cfg: &config.Config{Handlers: []config.Handler{
			{Number: 1, User: "alice", Event: "MessageNew", Account: privsep.Account{Name: "alice"}},
			{Number: 2, User: "bob", Event: "MessageNew", Account: privsep.Account{Name: "bob"}},
			// A wildcard run_as handler whose rules no account passes:
			// the fuzzer must never make the parent start a process.
			{Number: 3, User: "*@fuzz.invalid", Event: "MessageNew", RunAs: "%n", Pattern: true, Dynamic: true, MinUID: config.MaxMinUID},
		}, Privsep: config.Privsep{User: "_imserious", MaxExec: 4, ExecIdle: time.Minute}},
		dynAccts: map[string]privsep.Account{}, dynTarget: map[string]int{}, nextDyn: dynTargetBase,
		refusals: logging.NewLimiterTotal(time.Minute, 1, maxRefusalLines, nil),
		streams:  &streams{targets: map[string]int{"alice": 3, "bob": 4}},
		execs:    map[string]*proc{"alice": alice, "bob": bob}, net: netp,
		owed: map[int]bool{}, live: map[int]*proc{}, crashedChild: map[time.Time]string{},
		ctlOps: map[uint64]*ctlOp{7: op}, started: true, gen: 1, inForce: 1,
		restart: make(chan string, 16), quit: make(chan struct{})}
	return s, alice, netp, op
}

// FuzzCheckMsg: every type on every channel with every descriptor count
// (nil files: checkMsg closes what it refuses): checkMsg accepts exactly
// what the protocol table declares.
func FuzzCheckMsg(f *testing.F) {
	f.Add(uint32(msgEvent), uint8(netToExec), uint8(0))
	f.Add(uint32(msgListener), uint8(parentToNet), uint8(1))
	f.Add(uint32(msgMax), uint8(parentToExec), uint8(0))
	f.Fuzz(func(t *testing.T, typ uint32, ch uint8, nfds uint8) {
		c := channel(ch)
		m := privsep.Msg{Type: typ, Files: make([]*os.File, nfds%4)}
		err := checkMsg(c, m)
		want := typ > 0 && typ < msgMax && protocol[typ].on&c != 0 && protocol[typ].fds == int(nfds%4)
		if (err == nil) != want {
			t.Fatalf("type %d (%s) on %s with %d descriptors: %v", typ, msgName(typ), c, nfds%4, err)
		}
		if err != nil && !errors.Is(err, errProtocol) {
			t.Fatalf("%v is no protocol violation", err)
		}
	})
}
