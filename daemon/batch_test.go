package daemon

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/imserious/imserious/event"
	"github.com/imserious/imserious/internal/dovecotsamples"
	"github.com/imserious/imserious/privsep"
)

// batchOf is the payload of a msgEvents message holding these events.
func batchOf(t testing.TB, remote netip.AddrPort, bodies ...[]byte) []byte {
	t.Helper()
	f := privsep.StartFrame(nil)
	for _, b := range bodies {
		f = appendBatchEvent(f, remote.AppendTo(nil), b)
	}
	if err := privsep.SealFrame(f, msgEvents); err != nil {
		t.Fatal(err)
	}
	return f[privsep.HeaderLen:]
}

// The events of a batch come out as they went in, in order, with their
// peers; each entry is what encodeEvent makes of its event.
func TestBatchRoundTrip(t *testing.T) {
	peers := []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:40000"), netip.MustParseAddrPort("[::1]:1"), netip.MustParseAddrPort("[::ffff:10.1.2.3]:65535")}
	var bodies [][]byte
	for _, s := range dovecotsamples.Load(t) {
		bodies = append(bodies, s.Body)
	}
	bodies = append(bodies, nil) // an empty body is still an entry
	f := privsep.StartFrame(nil)
	for i, b := range bodies {
		f = appendBatchEvent(f, peers[i%len(peers)].AppendTo(nil), b)
	}
	if err := privsep.SealFrame(f, msgEvents); err != nil {
		t.Fatal(err)
	}
	i := 0
	err := decodeEvents(f[privsep.HeaderLen:], func(remote netip.AddrPort, body []byte) error {
		if remote != peers[i%len(peers)] || !bytes.Equal(body, bodies[i]) {
			t.Errorf("event %d: %v %q, want %v %q", i, remote, body, peers[i%len(peers)], bodies[i])
		}
		i++
		return nil
	})
	if err != nil || i != len(bodies) {
		t.Fatalf("decoded %d of %d events: %v", i, len(bodies), err)
	}
	// An error of the callee stops the batch there.
	stop := errors.New("stop")
	n := 0
	if err := decodeEvents(f[privsep.HeaderLen:], func(netip.AddrPort, []byte) error { n++; return stop }); err != stop || n != 1 {
		t.Errorf("callee's error: %v after %d events, want stop after 1", err, n)
	}
}

// A compromised network process's batches: whatever is malformed is a
// protocol violation, found at the entry it is in; the events before it
// are delivered, as they would have been in messages of their own, and
// nothing after it.
func TestDecodeEventsHostile(t *testing.T) {
	peer := netip.MustParseAddrPort("127.0.0.1:1")
	good := batchOf(t, peer, []byte(body("alice", "")))
	length := func(n uint32) []byte { return binary.BigEndian.AppendUint32(nil, n) }
	for _, tc := range []struct {
		name    string
		payload []byte
		before  int // events delivered before the violation
	}{
		{"empty", nil, 0},
		{"a length cut short", good[:2], 0},
		{"a length past the end", append(length(uint32(len(good))), good...), 0},
		{"the largest length", append(length(0xffffffff), good...), 0},
		{"an empty entry", length(0), 0},
		{"an entry without a peer", append(length(5), "hello"...), 0},
		{"a peer not canonical", append(length(12), "127.000.0.1:1\n"[:12]...), 0},
		{"a second entry cut short", append(bytes.Clone(good), 0, 0), 1},
		{"a second entry past the end", append(append(bytes.Clone(good), length(100)...), "x"...), 1},
		{"a second entry's peer bad", append(bytes.Clone(good), append(length(6), "nope\n{"...)...), 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := 0
			err := decodeEvents(tc.payload, func(netip.AddrPort, []byte) error { n++; return nil })
			if !errors.Is(err, errProtocol) {
				t.Fatalf("decodeEvents = %v, want a protocol violation", err)
			}
			if n != tc.before {
				t.Errorf("%d events delivered before the violation, want %d", n, tc.before)
			}
		})
	}
}

// FuzzDecodeEvents: any payload is decoded or refused as a violation,
// never a panic; whatever is accepted is exactly what appendBatchEvent
// makes of the events decoded, so one batch has one spelling.
func FuzzDecodeEvents(f *testing.F) {
	peer := netip.MustParseAddrPort("127.0.0.1:40000")
	var all [][]byte
	for _, s := range dovecotsamples.Load(f) {
		f.Add(batchOf(f, peer, s.Body))
		all = append(all, s.Body)
	}
	f.Add(batchOf(f, netip.MustParseAddrPort("[::1]:2"), all...))
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte(nil))
	f.Fuzz(func(t *testing.T, p []byte) {
		again := privsep.StartFrame(nil)
		err := decodeEvents(p, func(remote netip.AddrPort, body []byte) error {
			again = appendBatchEvent(again, remote.AppendTo(nil), body)
			return nil
		})
		if err != nil {
			if !errors.Is(err, errProtocol) {
				t.Fatalf("%v is no protocol violation", err)
			}
			return
		}
		if !bytes.Equal(again[privsep.HeaderLen:], p) {
			t.Fatalf("%q re-encodes as %q", p, again[privsep.HeaderLen:])
		}
	})
}

// netWithChannel is a network process's channel to one exec process,
// target 1, without the HTTP side: the test holds the exec process's end
// and the parent's end of the control channel.
func netWithChannel(t *testing.T) (n *netProc, execEnd, parentEnd *privsep.Conn) {
	t.Helper()
	ctl, parentEnd := pair(t)
	n = &netProc{ctl: ctl, chans: map[int]*execChan{}, log: slog.New(slog.DiscardHandler),
		byAccount: map[string]*execChan{}, waiting: map[string]*waitQ{}, refused: map[string]*refusal{},
		static: map[int]string{1: "acct_a"}, wants: make(chan wireExecWant, 1)}
	ours, theirs, err := privsep.Socketpair()
	if err != nil {
		t.Fatal(err)
	}
	execEnd, err = privsep.NewConn(theirs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { execEnd.Close() })
	if err := n.setChannel(1, "", ours, false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.closeAll)
	return n, execEnd, parentEnd
}

// Events that arrive while the flusher is busy go in one message, in the
// order they were accepted: under load the exec process wakes once for
// many.
func TestNetBatchesWhatGathers(t *testing.T) {
	n, execEnd, _ := netWithChannel(t)
	ch := n.chans[1]
	peer := netip.MustParseAddrPort("127.0.0.1:2")
	// The flusher needs mu to take the queue: these gather meanwhile.
	ch.mu.Lock()
	for i := range 50 {
		b := []byte(body("alice", fmt.Sprintf(`,"imap-uid":%d`, i)))
		if !ch.enqueueLocked(peer.AppendTo(nil), b, batchEventSize(peer.AppendTo(nil), b)) {
			t.Fatalf("event %d: no room", i)
		}
	}
	ch.mu.Unlock()
	bodies := recvEvents(t, execEnd)
	if len(bodies) != 50 {
		t.Fatalf("one message of %d events, want all 50", len(bodies))
	}
	for i, b := range bodies {
		ev, err := event.Decode(b)
		if err != nil || len(ev.UID) != 1 || ev.UID[0] != uint32(i) {
			t.Fatalf("event %d is %q (%v)", i, b, err)
		}
	}
	// And the next event, alone, goes at once.
	if err := n.deliver(1, peer, []byte(body("alice", ""))); err != nil {
		t.Fatal(err)
	}
	if got := recvEvents(t, execEnd); len(got) != 1 {
		t.Fatalf("%d events, want 1", len(got))
	}
}

// The queue holds maxBatches messages; an event past that is accepted and
// owed a recovery, and the parent hears of it before the event is
// answered.
func TestNetQueueBound(t *testing.T) {
	n, _, parentEnd := netWithChannel(t)
	ch := n.chans[1]
	peer := netip.MustParseAddrPort("127.0.0.1:2").AppendTo(nil)
	big := []byte(body("carol", `,"snippet":"`+strings.Repeat("x", 40<<10)+`"`))
	size := batchEventSize(peer, big)
	// mu held throughout: the flusher cannot take any of it.
	ch.mu.Lock()
	queued := 0
	for ch.enqueueLocked(peer, big, size) {
		queued++
	}
	if queued != 3*maxBatches || len(ch.queue) != maxBatches { // three 40 KiB events fill a frame
		ch.mu.Unlock()
		t.Fatalf("%d events in %d frames queued, want %d in %d", queued, len(ch.queue), 3*maxBatches, maxBatches)
	}
	err := ch.takeLocked(peer, big, size)
	_, named := ch.owedUsers["carol"]
	owed := ch.owed
	ch.mu.Unlock()
	if err != nil || !owed || !named {
		t.Fatalf("an event past the bound: err %v, owed %v, user named %v; want a recovery owed for carol", err, owed, named)
	}
	// Sent before takeLocked returned: the deadline only bounds a failure.
	expectOwed(t, parentEnd, time.Second, 1, true)
}

// A channel dropped, as at the network process's end, sends what it has
// queued first: what was accepted reaches the exec process, though no
// flusher ran.
func TestNetDropSendsQueue(t *testing.T) {
	n, execEnd, _ := netWithChannel(t)
	ch := n.chans[1]
	// Take the flusher away: only the drop can send now.
	ch.mu.Lock()
	close(ch.flush)
	ch.flush = make(chan struct{}, 1)
	ch.mu.Unlock()
	peer := netip.MustParseAddrPort("127.0.0.1:2")
	for i := range 3 {
		if err := n.deliver(1, peer, []byte(body("alice", fmt.Sprintf(`,"imap-uid":%d`, i)))); err != nil {
			t.Fatal(err)
		}
	}
	n.closeAll()
	if got := recvEvents(t, execEnd); len(got) != 3 {
		t.Fatalf("%d events sent at the drop, want 3", len(got))
	}
	expectEOF(t, execEnd)
}

// fillType marks the messages fillChannel puts in a channel's socket.
const fillType = 1 << 20

// fillChannel fills the socket of ch's exec process with small messages
// of fillType until it refuses one, and returns how many it took.
func fillChannel(t *testing.T, ch *execChan) int {
	t.Helper()
	ch.mu.Lock()
	defer ch.mu.Unlock()
	for n := 0; ; n++ {
		err := ch.conn.TrySend(fillType, []byte("fill"))
		if errors.Is(err, privsep.ErrWouldBlock) {
			return n
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// waitWaiting returns once ch's flusher waits for room with frames
// frames (it takes the queue, finds the socket full and waits).
func waitWaiting(t *testing.T, ch *execChan, frames int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ch.mu.Lock()
		w := ch.waiting
		ch.mu.Unlock()
		if w == frames {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the flusher waits with %d frames after 10 s, want %d", w, frames)
		}
		runtime.Gosched()
	}
}

// setFullWait sets how long a flusher waits for room, for one test.
func setFullWait(t *testing.T, d time.Duration) {
	old := fullWait
	fullWait = d
	t.Cleanup(func() { fullWait = old })
}

// An exec process that stops reading for a moment (its socket full)
// costs no recovery: the flusher waits for room, the requests meanwhile
// are answered and their events queued, and every event arrives in
// order once it reads again.
func TestNetWaitsForRoom(t *testing.T) {
	setFullWait(t, time.Hour) // what matters is that it waits, not how long
	n, execEnd, _ := netWithChannel(t)
	ch := n.chans[1]
	fill := fillChannel(t, ch)
	peer := netip.MustParseAddrPort("127.0.0.1:2")
	p := peer.AppendTo(nil)
	mk := func(i int) []byte {
		extra := ""
		if i < 4 { // three 40 KiB events fill a frame: the fourth starts one
			extra = `,"snippet":"` + strings.Repeat("x", 40<<10) + `"`
		}
		return []byte(body("alice", fmt.Sprintf(`,"imap-uid":%d`, i)+extra))
	}
	// Two frames for the flusher to take at once, the second sealed only
	// when it goes; then more, queued while it waits.
	ch.mu.Lock()
	for i := range 5 {
		if b := mk(i); !ch.enqueueLocked(p, b, batchEventSize(p, b)) {
			t.Fatalf("event %d: no room", i)
		}
	}
	ch.mu.Unlock()
	waitWaiting(t, ch, 2)
	const events = 10
	for i := 5; i < events; i++ {
		if err := n.deliver(1, peer, mk(i)); err != nil {
			t.Fatal(err)
		}
	}
	ch.mu.Lock()
	owed := ch.owed
	ch.mu.Unlock()
	if owed {
		t.Fatal("a recovery owed while the flusher waits for room")
	}
	execEnd.SetDeadline(time.Now().Add(30 * time.Second))
	for i := range fill {
		m, err := execEnd.Recv()
		if err != nil || m.Type != fillType {
			t.Fatalf("message %d: type %d, %v; want the filling first", i, m.Type, err)
		}
	}
	next := 0
	for next < events {
		for _, b := range recvEvents(t, execEnd) {
			ev, err := event.Decode(b)
			if err != nil || len(ev.UID) != 1 || ev.UID[0] != uint32(next) {
				t.Fatalf("event %d is %q (%v)", next, b, err)
			}
			next++
		}
	}
	ch.mu.Lock()
	owed = ch.owed
	ch.mu.Unlock()
	if owed {
		t.Error("a recovery owed after every event arrived")
	}
}

// The frames a waiting flusher holds count against maxBatches: a socket
// that stays full holds at most that much in the network process.
func TestNetWaitingCountsAgainstBound(t *testing.T) {
	setFullWait(t, time.Hour)
	n, _, _ := netWithChannel(t)
	ch := n.chans[1]
	fillChannel(t, ch)
	peer := netip.MustParseAddrPort("127.0.0.1:2")
	if err := n.deliver(1, peer, []byte(body("alice", ""))); err != nil {
		t.Fatal(err)
	}
	waitWaiting(t, ch, 1)
	big := []byte(body("carol", `,"snippet":"`+strings.Repeat("x", 40<<10)+`"`))
	p := peer.AppendTo(nil)
	ch.mu.Lock()
	queued := 0
	for ch.enqueueLocked(p, big, batchEventSize(p, big)) {
		queued++
	}
	ch.mu.Unlock()
	if want := 3 * (maxBatches - 1); queued != want { // three 40 KiB events fill a frame
		t.Fatalf("%d events queued beside the waiting frame, want %d", queued, want)
	}
}

// Dropping a channel cuts its flusher's wait for room short: the drop
// holds the lock every account's requests need, so it must not wait for
// an exec process that does not read. What could not be sent is owed a
// recovery, as without the wait.
func TestNetDropCutsWait(t *testing.T) {
	setFullWait(t, time.Hour)
	n, execEnd, parentEnd := netWithChannel(t)
	ch := n.chans[1]
	fillChannel(t, ch)
	if err := n.deliver(1, netip.MustParseAddrPort("127.0.0.1:2"), []byte(body("alice", ""))); err != nil {
		t.Fatal(err)
	}
	waitWaiting(t, ch, 1)
	dropped := make(chan struct{})
	go func() {
		n.closeAll()
		close(dropped)
	}()
	select {
	case <-dropped:
	case <-time.After(10 * time.Second):
		// Read, so that the drop ends and the test with it.
		go func() {
			for {
				if _, err := execEnd.Recv(); err != nil {
					return
				}
			}
		}()
		<-dropped
		t.Fatal("the drop still waited for the flusher after 10 s")
	}
	expectOwed(t, parentEnd, 10*time.Second, 1, true)
}
