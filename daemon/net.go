package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/imserious/imserious/config"
	"github.com/imserious/imserious/event"
	"github.com/imserious/imserious/listener"
	"github.com/imserious/imserious/logging"
	"github.com/imserious/imserious/privsep"
	"github.com/imserious/imserious/sandbox"
	"github.com/imserious/imserious/tlsreload"
)

// ctlTimeout bounds a child's sends to the parent and the network
// process's recovery messages to an exec process.
const ctlTimeout = 2 * time.Second

func newLogger(w io.Writer, o logOptions, proc string) *slog.Logger {
	return logging.New(w, logging.Options{Level: slog.Level(o.Level), Format: o.Format,
		ANSI: o.ANSI, Timestamp: o.Timestamp, Target: o.Target, ShowLevel: o.ShowLevel, Priority: o.Priority}, proc)
}

// execChan is the network process's side of one exec process.
//
// An event is queued on the channel and answered; the channel's flusher
// sends what gathered in one msgEvents message, so that under load the
// exec process wakes once for many events and no request waits for a
// send. The queue holds at most maxBatches messages.
//
// Isolation between accounts: events are handed over with a send that
// never waits (privsep.Conn.TrySend), so a stopped, slow or dead exec
// process delays nobody, not even its own account's requests. An event
// that cannot be handed over (its queue full, its channel down, or the
// send of its batch refused) is still accepted: the channel then owes the
// exec process a msgRecover, which makes it run each of its handlers once,
// and tells the parent, so that a network process that dies owing one is
// replaced by one that sends it. A network process that dies with events
// queued is covered the same way: the parent then owes every exec process
// a recovery (supervisor.exited).
type execChan struct {
	target int
	owner  *netProc
	// account is set for an exec process started on demand, which the
	// events of wildcard run_as handlers for it reach through Route.
	account string

	mu   sync.Mutex
	conn *privsep.Conn // nil while the exec process is down
	owed bool          // a msgRecover is due
	poll time.Duration // the recoverer's current wait for a full channel
	gone bool          // the target was removed: the recoverer ends
	kick chan struct{} // wakes the recoverer
	// queue are the msgEvents frames not yet sent, oldest first, the
	// last one filling; flush wakes the flusher once it is not empty,
	// flushing is set while the flusher sends what it took of it, and
	// idle is signalled when that ends. spare is a sent frame's buffer,
	// for the next.
	queue    [][]byte
	spare    []byte
	flush    chan struct{}
	flushing bool
	idle     sync.Cond
	// waiting are the frames the flusher holds while it waits for room
	// in waitingOn, a full socket; they count against maxBatches.
	// dropping is set once flushLocked runs: the flusher no longer waits.
	waiting   int
	waitingOn *privsep.Conn
	dropping  bool
	// owedUsers are the users of the events that could not be handed
	// over while a recovery is owed (at most maxOwedUsers), and sending
	// what the recovery being sent has left to say: a recovery of
	// wildcard handlers runs them for each of these users, in messages
	// of maxRecoverUsers.
	owedUsers map[string]struct{}
	sending   []string
	// recent are the last users whose events reached this channel through
	// Route, at most maxRecoverUsers: a recovery makes the wildcard
	// handlers run for them too (their state died with the process).
	recent []string
}

type netProc struct {
	ctl *privsep.Conn
	log *slog.Logger

	mu    sync.RWMutex
	chans map[int]*execChan
	// byAccount finds the channel of an account for Route: those of the
	// configuration's exec processes (static, by target) and of those
	// started on demand.
	byAccount map[string]*execChan
	static    map[int]string // the configuration's targets
	// waiting holds the events for accounts whose exec process the
	// parent was asked for, in arrival order, until it comes (or the
	// account is refused); waitBytes is their size.
	waiting   map[string]*waitQ
	waitBytes int
	// refused are accounts the parent refused, until when their events
	// are accepted and dropped without asking again, and how many were.
	refused map[string]*refusal
	// wants feeds the goroutine that asks the parent: Route never waits.
	wants chan wireExecWant
}

type refusal struct {
	until   time.Time
	dropped int
}

// waitQ is the queue of one account whose exec process is awaited.
type waitQ struct {
	frames [][]byte
	users  []string // frames[i] is an event of users[i]
}

// Bounds of the events waiting for exec processes: per account, then in
// all. Past the first, an event replaces the one waiting for the same
// user (the exec process would merge them into one run anyway); past the
// second, or with no such event to replace, it is answered 503.
const (
	maxWaitPerAccount = 256
	maxWaitBytes      = 16 << 20
	maxWaitAccounts   = 4096
	refuseFor         = time.Minute
	maxRefused        = 65536
)

// Route is the listener's Accounts: it finds the exec process of an
// account of a wildcard run_as, or queues the event and asks the parent
// for one. It never waits.
func (n *netProc) Route(account string, handler int, user string, remote netip.AddrPort, body []byte) (int, bool, error) {
	n.mu.RLock()
	ch := n.byAccount[account]
	n.mu.RUnlock()
	if ch != nil {
		ch.noteUser(user)
		return ch.target, false, nil
	}
	frame, err := eventFrame(remote, body)
	if err != nil {
		return 0, false, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if ch := n.byAccount[account]; ch != nil { // came meanwhile
		ch.noteUser(user)
		return ch.target, false, nil
	}
	dropped := 0
	if r := n.refused[account]; r != nil {
		if time.Now().Before(r.until) {
			r.dropped++
			return 0, true, nil // accepted; the parent said why, once
		}
		dropped = r.dropped
		delete(n.refused, account)
	}
	q := n.waiting[account]
	if q == nil {
		if len(n.waiting) >= maxWaitAccounts {
			return 0, false, fmt.Errorf("%d accounts wait for their exec process", len(n.waiting))
		}
		q = &waitQ{}
	}
	if n.waitBytes+len(frame) > maxWaitBytes {
		return 0, false, fmt.Errorf("%d bytes of events wait for exec processes", n.waitBytes)
	}
	if len(q.frames) >= maxWaitPerAccount {
		i := slices.Index(q.users, user)
		if i < 0 {
			return 0, false, fmt.Errorf("%d events wait for the exec process of %q", len(q.frames), account)
		}
		n.waitBytes += len(frame) - len(q.frames[i])
		q.frames = append(slices.Delete(q.frames, i, i+1), frame)
		u := q.users[i]
		q.users = append(slices.Delete(q.users, i, i+1), u)
		return 0, true, nil
	}
	if n.waiting[account] == nil {
		n.waiting[account] = q
		select {
		case n.wants <- wireExecWant{Account: account, Handler: handler, User: user, Dropped: dropped}:
		default:
			delete(n.waiting, account)
			return 0, false, errors.New("too many exec processes asked for at once")
		}
	}
	q.frames = append(q.frames, frame)
	q.users = append(q.users, strings.Clone(user)) // not the body it was cut from
	n.waitBytes += len(frame)
	return 0, true, nil
}

// Note is the listener's: the users of a wildcard handler with a literal
// run_as, for a recovery of its exec process.
func (n *netProc) Note(target int, user string) {
	if ch := n.channel(target); ch != nil {
		ch.noteUser(user)
	}
}

// asker sends the parent the wants Route queued, in order.
func (n *netProc) asker() {
	for w := range n.wants {
		b, err := privsep.EncodeJSON(w)
		if err == nil {
			err = n.ctl.SendTimeout(ctlTimeout, msgExecWant, b)
		}
		if err != nil {
			n.log.Warn("cannot ask the parent for an exec process", "account", w.Account, "err", err)
		}
	}
}

// refuse drops what waits for an account the parent refused, and keeps
// its later events from asking again for a while.
func (n *netProc) refuse(account string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if q := n.waiting[account]; q != nil {
		for _, f := range q.frames {
			n.waitBytes -= len(f)
		}
		delete(n.waiting, account)
	}
	if len(n.refused) >= maxRefused {
		now := time.Now()
		maps.DeleteFunc(n.refused, func(_ string, r *refusal) bool { return now.After(r.until) })
		if len(n.refused) >= maxRefused {
			clear(n.refused)
		}
	}
	n.refused[account] = &refusal{until: time.Now().Add(refuseFor)}
}

// noteUser remembers a user whose event went to ch.
func (ch *execChan) noteUser(user string) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.recentLocked(user)
}

func (n *netProc) channel(target int) *execChan {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.chans[target]
}

// deliver is the listener's Deliver: it never waits.
func (n *netProc) deliver(target int, remote netip.AddrPort, body []byte) error {
	ch := n.channel(target)
	if ch == nil {
		return fmt.Errorf("no exec process for target %d", target)
	}
	var buf [maxPeer]byte
	peer := remote.AppendTo(buf[:0])
	size := batchEventSize(peer, body)
	if size > privsep.MaxPayload {
		return fmt.Errorf("event of %d bytes: %w", size, privsep.ErrOversize)
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.takeLocked(peer, body, size)
}

// takeLocked queues an event of size bytes (batchEventSize), or owes it
// a recovery. Must be called with mu held.
func (ch *execChan) takeLocked(peer, body []byte, size int) error {
	if ch.conn != nil && ch.enqueueLocked(peer, body, size) {
		return nil
	}
	// Off the fast path: whose event this was, for the recovery of the
	// wildcard handlers, which have no state for users they never saw.
	if ev, err := event.Decode(body); err == nil {
		ch.oweUser(ev.User)
	}
	return ch.owe()
}

// maxBatches bounds the msgEvents frames a channel queues: about what its
// socket holds (privsep's buffer is four frames of MaxPayload). Past it,
// the exec process is not keeping up and a recovery covers what follows.
const maxBatches = 4

// keepBatch is the largest buffer a channel keeps for its next frame
// once one is sent: a batch is most often a few events.
const keepBatch = 16 << 10

// enqueueLocked adds an event of size bytes (batchEventSize) to the
// queue, and reports whether there was room. Must be called with mu held.
func (ch *execChan) enqueueLocked(peer, body []byte, size int) bool {
	k := len(ch.queue)
	wasEmpty := k == 0
	if k == 0 || len(ch.queue[k-1])+size > privsep.HeaderLen+privsep.MaxPayload {
		if k+ch.waiting >= maxBatches {
			return false
		}
		ch.queue = append(ch.queue, privsep.StartFrame(ch.spare))
		ch.spare = nil
		k++
	}
	ch.queue[k-1] = appendBatchEvent(ch.queue[k-1], peer, body)
	if wasEmpty {
		// The flusher took all there was, or is idle: it looks again.
		select {
		case ch.flush <- struct{}{}:
		default:
		}
	}
	return true
}

// flusher sends what the channel queues each time flush, ch.flush, wakes
// it, until the channel is dropped. When the exec process's socket is
// full it waits up to fullWait for room before what it took is owed a
// recovery: an exec process held up for a moment under load (a busy
// machine, a collection) then costs nothing, where a recovery would run
// every one of its handlers. Requests are answered meanwhile, their
// events queued within maxBatches, the frames waiting counted in.
func (ch *execChan) flusher(flush <-chan struct{}) {
	for range flush {
		ch.mu.Lock()
		q, conn := ch.queue, ch.conn
		ch.queue = nil
		ch.flushing = true
		ch.mu.Unlock()
		// Outside mu: requests queue the next batch meanwhile.
		sent, err := sendBatches(conn, q)
		if sent < len(q) && errors.Is(err, privsep.ErrWouldBlock) {
			ch.mu.Lock()
			wait := !ch.dropping
			if wait {
				ch.waiting, ch.waitingOn = len(q)-sent, conn
			}
			ch.mu.Unlock()
			if wait {
				var more int
				more, err = sendWaiting(conn, q[sent:], fullWait)
				sent += more
			}
		}
		ch.mu.Lock()
		ch.flushing = false
		ch.waiting, ch.waitingOn = 0, nil
		ch.idle.Broadcast()
		ch.sentLocked(q, sent, conn, err)
		ch.mu.Unlock()
	}
}

// fullWait is how long the flusher waits for room in a full socket
// before it gives what it could not send to a recovery. A variable for
// the tests.
var fullWait = 250 * time.Millisecond

// sendWaiting sends the frames of q on conn in order, sealed as
// msgEvents, waiting for room for at most d in all, until one fails; it
// returns how many went. Running out of time, or being cut short by
// flushLocked, is reported as a full socket (privsep.ErrWouldBlock).
func sendWaiting(conn *privsep.Conn, q [][]byte, d time.Duration) (int, error) {
	deadline := time.Now().Add(d)
	for i, f := range q {
		if err := privsep.SealFrame(f, msgEvents); err != nil {
			return i, err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return i, privsep.ErrWouldBlock
		}
		if err := conn.SendFrameTimeout(left, f); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return i, fmt.Errorf("%w: %w", privsep.ErrWouldBlock, err)
			}
			return i, err
		}
	}
	return len(q), nil
}

// flushLocked sends the queue at once, for a channel being dropped. It
// waits for the flusher to finish what it took, cutting short a wait for
// room (n.mu is held, and requests for every account wait for it): what
// the flusher could not send is then owed, as with no wait. Must be
// called with mu held.
func (ch *execChan) flushLocked() {
	// Under mu, as the flusher decides to wait: either it waits already
	// and is cut short here, or it sees dropping and does not wait. The
	// deadline stays on a socket about to be closed.
	ch.dropping = true
	if ch.waitingOn != nil {
		ch.waitingOn.SetDeadline(time.Now())
	}
	for ch.flushing {
		ch.idle.Wait()
	}
	q := ch.queue
	ch.queue = nil
	sent, err := sendBatches(ch.conn, q)
	ch.sentLocked(q, sent, ch.conn, err)
}

// sendBatches sends the frames of q on conn in order, sealed as
// msgEvents, until one fails; it returns how many went. conn nil sends
// none.
func sendBatches(conn *privsep.Conn, q [][]byte) (int, error) {
	if conn == nil {
		return 0, nil
	}
	for i, f := range q {
		if err := privsep.SealFrame(f, msgEvents); err != nil {
			return i, err
		}
		if err := conn.TrySendFrame(f); err != nil {
			return i, err
		}
	}
	return len(q), nil
}

// sentLocked settles a flush of q on conn, of which sent frames went: the
// events of the others are owed a recovery, and a channel whose send
// failed for another reason than a full buffer is down. Must be called
// with mu held.
func (ch *execChan) sentLocked(q [][]byte, sent int, conn *privsep.Conn, err error) {
	if sent < len(q) {
		if err != nil && !errors.Is(err, privsep.ErrWouldBlock) && conn != nil && ch.conn == conn {
			ch.owner.log.Warn("exec process channel lost", "target", ch.target, "err", err)
			ch.conn.Close()
			ch.conn = nil
		}
		for _, f := range q[sent:] {
			// Whose events these were, for the recovery of the wildcard
			// handlers. The frame is ours: it decodes.
			decodeEvents(f[privsep.HeaderLen:], func(_ netip.AddrPort, body []byte) error {
				if ev, err := event.Decode(body); err == nil {
					ch.oweUser(ev.User)
				}
				return nil
			})
		}
		if err := ch.owe(); err != nil {
			ch.owner.log.Warn("cannot record a recovery", "target", ch.target, "err", err)
		}
	}
	if ch.spare == nil {
		for _, f := range q {
			if cap(f) <= keepBatch {
				ch.spare = f
				break
			}
		}
	}
}

// maxOwedUsers bounds the users a channel's recovery names; past it the
// wildcard handlers of the users beyond are not recovered (logged).
const maxOwedUsers = 1 << 16

// oweUser records the user of an event that could not be handed over.
// Must be called with mu held.
func (ch *execChan) oweUser(user string) {
	if ch.owedUsers == nil {
		ch.owedUsers = map[string]struct{}{}
	}
	if _, ok := ch.owedUsers[user]; ok {
		return
	}
	if len(ch.owedUsers) >= maxOwedUsers {
		if len(ch.owedUsers) == maxOwedUsers {
			ch.owner.log.Error("more users' events could not be handed over than a recovery names: wildcard handlers may miss runs for some", "target", ch.target, "users", maxOwedUsers)
		}
		return
	}
	ch.owedUsers[strings.Clone(user)] = struct{}{}
}

// recoverList is what a recovery names: the users owed, then the recent
// ones; owedUsers is emptied. Must be called with mu held.
func (ch *execChan) recoverList() []string {
	if ch.owedUsers == nil {
		ch.owedUsers = map[string]struct{}{}
	}
	out := make([]string, 0, len(ch.owedUsers)+len(ch.recent))
	for u := range ch.owedUsers {
		out = append(out, u)
	}
	for _, u := range ch.recent {
		if _, dup := ch.owedUsers[u]; !dup {
			out = append(out, u)
		}
	}
	clear(ch.owedUsers)
	return out
}

// owe records that an event was accepted without reaching the exec
// process. Must be called with mu held.
func (ch *execChan) owe() error {
	if ch.gone {
		// Routed during a reload that removed the account: there is no
		// handler left to run for it.
		return nil
	}
	if !ch.owed {
		// Before the 200: once the parent knows, a recovery follows even
		// if this process dies now.
		if err := ch.owner.tellOwed(ch.target, true); err != nil {
			return err
		}
		ch.owed = true
		ch.owner.log.Warn("exec process not taking events; they are accepted and a recovery run will follow", "target", ch.target)
	}
	select {
	case ch.kick <- struct{}{}:
	default:
	}
	return nil
}

func (n *netProc) tellOwed(target int, owed bool) error {
	b, err := privsep.EncodeJSON(wireOwed{Target: target, Owed: owed})
	if err != nil {
		return err
	}
	return n.ctl.SendTimeout(ctlTimeout, msgOwed, b)
}

// recoverer sends the msgRecover a channel owes, as soon as the exec
// process reads again (or is replaced). The send is a TrySend under mu,
// like the events', so whatever was lost was lost before it and the debt
// is paid exactly; while the socket stays full it tries again, less and
// less often, up to recoverPoll.
func (ch *execChan) recoverer() {
	wait := time.Duration(0)
	timer := time.NewTimer(0)
	<-timer.C
	for {
		if wait > 0 {
			timer.Reset(wait)
		}
		select {
		case _, ok := <-ch.kick:
			if !ok {
				timer.Stop()
				return
			}
			if wait > 0 && !timer.Stop() {
				<-timer.C
			}
		case <-timer.C:
		}
		ch.mu.Lock()
		if ch.gone {
			ch.mu.Unlock()
			return
		}
		wait = 0
		for ch.owed && ch.conn != nil {
			if ch.sending == nil {
				ch.sending = ch.recoverList()
			}
			chunk := ch.sending[:min(len(ch.sending), maxRecoverUsers)]
			b, _ := privsep.EncodeJSON(wireRecover{Users: chunk})
			err := ch.conn.TrySend(msgRecover, b)
			if err == nil {
				ch.sending = ch.sending[len(chunk):]
				if len(ch.sending) > 0 {
					continue
				}
				ch.sending = nil
				if len(ch.owedUsers) > 0 {
					continue // owed while this one was being sent
				}
				ch.owed = false
				if err := ch.owner.tellOwed(ch.target, false); err != nil {
					ch.owner.log.Warn("cannot tell the parent a recovery was sent", "target", ch.target, "err", err)
				}
				ch.owner.log.Info("exec process taking events again; recovery run requested", "target", ch.target)
				break
			}
			// What was not sent goes back to the users owed, so that the
			// next try names each once, and names again only those whose
			// events failed after their message went.
			for _, u := range ch.sending {
				ch.owedUsers[u] = struct{}{}
			}
			ch.sending = nil
			if errors.Is(err, privsep.ErrWouldBlock) {
				ch.poll = min(max(2*ch.poll, recoverPollMin), recoverPoll)
				wait = ch.poll
			} else {
				ch.conn.Close()
				ch.conn = nil
			}
			break
		}
		if !ch.owed {
			ch.poll = 0
		}
		ch.mu.Unlock()
	}
}

// How often a full channel is tried again for a recovery message.
const (
	recoverPollMin = 5 * time.Millisecond
	recoverPoll    = 250 * time.Millisecond
)

// setChannel installs the socket to the exec process of target, replacing
// any previous one. account is set for one started on demand: the events
// waiting for it go first.
func (n *netProc) setChannel(target int, account string, f *os.File, recover bool) error {
	c, err := privsep.NewConn(f)
	if err != nil {
		return err
	}
	// n.mu then ch.mu, as keepTargets: the channel cannot be removed
	// (and its kick closed) while it is being replaced.
	n.mu.Lock()
	defer n.mu.Unlock()
	ch := n.chans[target]
	if ch != nil && ch.account != account {
		c.Close()
		return fmt.Errorf("target %d is not the exec process of %q: %w", target, account, errProtocol)
	}
	if ch == nil {
		if account != "" && n.byAccount[account] != nil {
			c.Close()
			return fmt.Errorf("a second exec process for %q: %w", account, errProtocol)
		}
		ch = &execChan{target: target, account: account, owner: n, kick: make(chan struct{}, 1), flush: make(chan struct{}, 1)}
		ch.idle.L = &ch.mu
		n.chans[target] = ch
		if account != "" {
			n.byAccount[account] = ch
		} else if a := n.static[target]; a != "" {
			n.byAccount[a] = ch
		}
		go ch.recoverer()
		go ch.flusher(ch.flush)
	}
	ch.mu.Lock()
	old := ch.conn
	ch.conn = c
	if recover {
		ch.owed = true
		select {
		case ch.kick <- struct{}{}:
		default:
		}
	}
	if q := n.waiting[account]; account != "" && q != nil {
		delete(n.waiting, account)
		for i, f := range q.frames {
			n.waitBytes -= len(f)
			ch.recentLocked(q.users[i])
			if ch.owed || ch.conn == nil {
				ch.oweUser(q.users[i])
				continue // the recovery covers it
			}
			if err := ch.conn.TrySendFrame(f); err != nil {
				// Accepted long ago: a recovery run covers what the
				// fresh channel cannot take at once.
				ch.oweUser(q.users[i])
				if err := ch.owe(); err != nil {
					n.log.Warn("cannot record a recovery", "account", account, "err", err)
				}
			}
		}
	}
	ch.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

// recentLocked moves user to the end of ch.recent, the most recent,
// dropping the oldest past maxRecoverUsers. Must be called with mu held.
func (ch *execChan) recentLocked(user string) {
	if i := slices.Index(ch.recent, user); i >= 0 {
		if i < len(ch.recent)-1 {
			u := ch.recent[i]
			ch.recent = append(slices.Delete(ch.recent, i, i+1), u)
		}
		return
	}
	if len(ch.recent) >= maxRecoverUsers {
		ch.recent = slices.Delete(ch.recent, 0, 1)
	}
	// A copy: the user is cut from the request's body, which must not be
	// kept alive with it.
	ch.recent = append(ch.recent, strings.Clone(user))
}

// keepTargets drops the channels of exec processes no longer configured,
// but those started on demand, which the parent retires itself.
func (n *netProc) keepTargets(targets map[int]string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.static = targets
	for t, ch := range n.chans {
		if _, ok := targets[t]; ok || ch.account != "" {
			continue
		}
		n.dropLocked(t, ch)
	}
	// The configuration's accounts are found by name too, for the
	// wildcard handlers whose run_as names one of them.
	for a, ch := range n.byAccount {
		if ch.account == "" {
			delete(n.byAccount, a)
		}
	}
	for t, a := range targets {
		if ch := n.chans[t]; ch != nil && n.byAccount[a] == nil {
			n.byAccount[a] = ch
		}
	}
}

// retire drops the channel of an exec process started on demand that
// the parent stops: nothing more is sent to it, and the events of its
// account wait for the next one.
func (n *netProc) retire(target int) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	ch := n.chans[target]
	if ch == nil || ch.account == "" {
		return fmt.Errorf("retire target %d, no exec process started on demand: %w", target, errProtocol)
	}
	n.dropLocked(target, ch)
	return nil
}

// dropLocked forgets a channel, once what it queued is sent. n.mu must
// be held.
func (n *netProc) dropLocked(t int, ch *execChan) {
	delete(n.chans, t)
	for a, c := range n.byAccount {
		if c == ch {
			delete(n.byAccount, a)
		}
	}
	ch.mu.Lock()
	// The events accepted before the drop go as they would have without
	// it; what cannot go is owed while the channel is not yet gone (for
	// closeAll: the parent has the recovery sent to the exec process,
	// which lives on).
	ch.flushLocked()
	ch.gone = true
	if ch.conn != nil {
		ch.conn.Close()
		ch.conn = nil
	}
	// Under mu: owe and setChannel kick, and deliver queues, only while
	// the channel has a conn and is not gone.
	close(ch.kick)
	close(ch.flush)
	ch.mu.Unlock()
}

func (n *netProc) closeAll() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for t, ch := range n.chans {
		n.dropLocked(t, ch)
	}
}

// RunNet is the network process: it collects its configuration from the
// parent, drops to the privsep account inside the chroot, serves HTTP and
// forwards valid notifications to the exec processes. It returns nil
// after a shutdown the parent asked for.
func RunNet(ctl *privsep.Conn, stdout io.Writer) error {
	// A request's info line waits for no write: see logging.Queued.
	out := logging.NewQueued(stdout)
	defer out.Flush()
	n := &netProc{ctl: ctl, chans: map[int]*execChan{}, log: slog.New(slog.DiscardHandler),
		byAccount: map[string]*execChan{}, waiting: map[string]*waitQ{}, refused: map[string]*refusal{},
		wants: make(chan wireExecWant, maxWaitAccounts)}
	defer n.closeAll()
	// n.wants is never closed: a request still being handled at the
	// end must not send on a closed channel; the process exits.
	go n.asker()
	var (
		st      stream
		pending *netConfig // the stream being received
		cfg     *netConfig // the configuration in force
		lnFile  *os.File
		rootDir *os.File // the chroot, entered by descriptor
		certs   tlsreload.Store
		srv     *listener.Server
		log     *slog.Logger
		tlsLog  *slog.Logger
	)
	defer func() {
		if lnFile != nil {
			lnFile.Close()
		}
		if rootDir != nil {
			rootDir.Close()
		}
	}()
	served := make(chan error, 1)

	// serving is what the HTTP server serves for a configuration.
	serving := func(c *netConfig) listener.Config {
		lc := c.listenerConfig()
		lc.Accounts = n
		if c.global.TLS {
			lc.TLS = certs.TLSConfig()
		}
		return lc
	}
	// start drops privileges and serves, once the first configuration,
	// the socket and (with TLS) a certificate are in.
	start := func() error {
		if cfg == nil || lnFile == nil {
			return errors.New("started without configuration or socket")
		}
		g := cfg.global
		// Security: with [tls] nothing is served in clear, so no
		// certificate means no start; without it, a certificate is a
		// confused parent.
		switch have := certs.Current() != nil; {
		case g.TLS && !have:
			return errors.New("tls configured but no certificate received")
		case !g.TLS && have:
			return errors.New("certificate received without tls configured")
		}
		ln, err := net.FileListener(lnFile)
		lnFile.Close()
		lnFile = nil
		if err != nil {
			return fmt.Errorf("listener: %w", err)
		}
		switch {
		case g.Drop != nil && rootDir == nil:
			ln.Close()
			return errors.New("privilege separation without a chroot directory")
		case g.Drop == nil && rootDir != nil:
			ln.Close()
			return errors.New("a chroot directory without privilege separation")
		case g.Drop != nil:
			// Load the local time zone while /etc is still reachable.
			_, _ = time.Now().Zone()
			a := g.Drop.Account.account()
			err := privsep.DropInto(a, rootDir)
			rootDir.Close()
			rootDir = nil
			if err != nil {
				ln.Close()
				return fmt.Errorf("drop privileges: %w", err)
			}
			log.Debug("dropped privileges", "user", a.Name, "uid", a.UID, "chroot", g.Drop.Chroot)
		}
		// From here the process needs nothing from the system but the
		// descriptors it holds or is sent.
		rep, err := confine.net()
		if err != nil {
			ln.Close()
			return fmt.Errorf("sandbox: %w", err)
		}
		logSandbox(log, rep)
		if g.TLS {
			logInstalled(tlsLog, certs.Current())
		}
		srv = listener.New(serving(cfg), n.deliver, log)
		go func() { served <- srv.Serve(ln) }()
		return nil
	}
	shutdown := func(d time.Duration) {
		if srv == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			log.Warn("requests still in flight at shutdown", "err", err)
		}
	}

	recv, recvErr := receive(ctl)
	for {
		var m privsep.Msg
		select {
		case err := <-recvErr:
			// The parent is gone: stop at once.
			shutdown(0)
			return fmt.Errorf("net: control channel: %w", err)
		case err := <-served:
			return fmt.Errorf("net: serve: %w", err)
		case m = <-recv:
		}
		if err := checkMsg(parentToNet, m); err != nil {
			shutdown(0)
			return fmt.Errorf("net: %w", err)
		}
		var err error
		switch m.Type {
		case msgCfgBegin:
			if err = st.begin(m); err == nil {
				pending = &netConfig{}
			}
		case msgNetGlobal, msgNetAllow, msgNetTarget, msgNetRoute:
			if err = st.item(m); err == nil {
				err = pending.add(m)
			}
		case msgCfgEnd:
			if err = st.end(m); err != nil {
				break
			}
			if err = pending.validate(); err != nil {
				break
			}
			if cfg == nil {
				log = newLogger(out, pending.global.Log, "net")
				n.log = log
				tlsLog = log.With(logging.ComponentKey, "tls")
			} else if srv != nil {
				if pending.global.TLS != cfg.global.TLS || (pending.global.Drop == nil) != (cfg.global.Drop == nil) {
					err = fmt.Errorf("a reload cannot change tls or privilege separation: %w", errProtocol)
					break
				}
				if err = srv.Update(serving(pending)); err != nil {
					err = fmt.Errorf("reload: %w", err)
					break
				}
			}
			cfg, pending = pending, nil
			n.keepTargets(cfg.targets)
			if srv != nil {
				releaseMemory(cfg.dropRoutes())
				err = n.ready(st.last)
			}
		case msgListener:
			err = takeOnce(m, &lnFile, srv != nil)
		case msgChroot:
			err = takeOnce(m, &rootDir, srv != nil)
		case msgExecChannel:
			var w wireExecChannel
			if err = decode(m, &w); err != nil || w.Target < 0 {
				closeFiles(m)
				err = cmpErr(err, fmt.Errorf("bad target %d: %w", w.Target, errProtocol))
				break
			}
			if w.Account != "" && !config.ValidAccountName(w.Account) {
				closeFiles(m)
				err = fmt.Errorf("bad account %q: %w", w.Account, errProtocol)
				break
			}
			err = n.setChannel(w.Target, w.Account, m.Files[0], w.Recover)
		case msgExecRetire:
			var w wireExecRetire
			if err = decode(m, &w); err == nil {
				err = n.retire(w.Target)
			}
		case msgExecRefused:
			var w wireExecAccount
			if err = decode(m, &w); err == nil {
				n.refuse(w.Account)
			}
		case msgTLSPair:
			// The parent checked the pair; one that fails here is a
			// malformed message, which ends the channel like any other.
			if cfg == nil || !cfg.global.TLS {
				err = fmt.Errorf("tls pair: certificate received without tls configured: %w", errProtocol)
				break
			}
			var c *tls.Certificate
			if c, err = certs.Set(m.Payload); err != nil {
				err = fmt.Errorf("tls pair: %w", err)
			} else if srv != nil {
				logInstalled(tlsLog, c)
			}
		case msgStart:
			if srv != nil {
				err = fmt.Errorf("second %s: %w", msgName(m.Type), errProtocol)
				break
			}
			if err = start(); err == nil {
				releaseMemory(cfg.dropRoutes())
				err = n.ready(st.last)
			}
		case msgShutdown:
			var s wireShutdown
			if err = decode(m, &s); err != nil {
				break
			}
			timeout := time.Second
			if cfg != nil {
				timeout += cfg.global.Timeout
			}
			shutdown(timeout)
			if log != nil {
				log.Debug("stopped")
			}
			return nil
		}
		if err != nil {
			shutdown(0)
			return fmt.Errorf("net: %w", err)
		}
	}
}

// takeOnce keeps the one descriptor of a message that may come once,
// before serving, and carries no payload.
func takeOnce(m privsep.Msg, dst **os.File, serving bool) error {
	if *dst != nil || serving {
		closeFiles(m)
		return fmt.Errorf("second %s: %w", msgName(m.Type), errProtocol)
	}
	if err := noPayload(m); err != nil {
		closeFiles(m)
		return err
	}
	*dst = m.Files[0]
	return nil
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func (n *netProc) ready(gen uint64) error {
	b, err := privsep.EncodeJSON(wireReady{Gen: gen})
	if err != nil {
		return err
	}
	return n.ctl.SendTimeout(ctlTimeout, msgReady, b)
}

// logInstalled records a certificate new handshakes now get; tests and
// operators can match its serial with the parent's "reloaded" line.
func logInstalled(log *slog.Logger, c *tls.Certificate) {
	log.Info("TLS certificate installed", "subject", c.Leaf.Subject.String(),
		"serial", tlsreload.SerialHex(c.Leaf), "not_after", c.Leaf.NotAfter.UTC())
}

// confine applies the OS sandboxes. A variable because the role tests run
// the roles inside the test binary, which must not confine itself; the
// end-to-end tests check the sandbox of the real processes.
var confine = struct {
	net  func() (sandbox.Report, error)
	exec func(commands []string, home string) (sandbox.Report, error)
}{sandbox.Net, sandbox.Exec}

// logSandbox says once what confines a process, and at debug what the
// system does not offer.
func logSandbox(log *slog.Logger, rep sandbox.Report) {
	log.Info("sandboxed", "applied", strings.Join(rep.Applied, "; "))
	if len(rep.Missing) > 0 {
		log.Debug("sandbox not available", "missing", strings.Join(rep.Missing, "; "))
	}
}
