//go:build e2e && linux

package e2e

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imserious/imserious/internal/daemontest"
	"github.com/imserious/imserious/privsep"
	"github.com/imserious/imserious/tlsreload/tlstest"
)

// The mail users of the private Dovecot, and the accounts their commands
// run as: distinct accounts, so that a run proves it is run_as, not the
// mail user's name, that decides the uid. carol is stored as alice's
// account and has no handler: deliveries to her measure the cost of the
// notification alone.
const (
	alice    = "imse_e2e_alice"
	bob      = "imse_e2e_bob"
	carol    = "imse_e2e_carol"
	runAlice = "imse_e2e_runalice"
	runBob   = "imse_e2e_runbob"
)

var msgSeq atomic.Int64

// message is a mail to deliver and what its command should see.
type message struct {
	id      string // Message-ID, unique per run of the suite
	headers string // without Message-ID, each line ending in \n
	body    string
	subject string // IMSE_SUBJECT: decoded, unfolded
	subjRaw string // IMSE_SUBJECT_RAW, as Dovecot sends it once made safe (folding: a newline, now a space)
	from    string // IMSE_FROM
	fromRaw string // IMSE_FROM_RAW
	snippet string // a part of IMSE_SNIPPET: Dovecot collapses the body's whitespace
}

func newMessage(headers, body string) message {
	id := fmt.Sprintf("<%d.%d.imse-e2e@example.org>", time.Now().UnixNano(), msgSeq.Add(1))
	return message{id: id, headers: headers, body: body}
}

func (m message) text() string {
	return "Message-ID: " + m.id + "\nDate: " + time.Now().Format(time.RFC1123Z) + "\nTo: someone@example.org\n" +
		m.headers + "\n" + m.body
}

// checkRun checks one run of the handler of user, whose commands run as
// runAs, for the delivery of m into user's INBOX.
func checkRun(t *testing.T, dc *dovecot, r run, user string, runAs privsep.Account, m message) {
	t.Helper()
	if r.status != "ok" {
		t.Errorf("%s: command did not exit 0: %s", user, r.status)
	}
	if want := "exec[" + runAs.Name + "]"; r.proc != want {
		t.Errorf("%s: run logged by %q, want %q", user, r.proc, want)
	}
	if r.uid != strconv.Itoa(runAs.UID) {
		t.Errorf("%s: command ran as uid %q, want %d (%s)", user, r.uid, runAs.UID, runAs.Name)
	}
	if !slices.Equal(r.args, recordArgs) {
		t.Errorf("%s: command arguments %q, want %q", user, r.args, recordArgs)
	}
	if r.trigger != "event" || r.count != 1 {
		t.Errorf("%s: run trigger %q count %d, want event 1", user, r.trigger, r.count)
	}
	st := dc.status(t, user, "INBOX")
	want := map[string]string{
		"USER":             runAs.Name,
		"LOGNAME":          runAs.Name,
		"HOME":             runAs.Home,
		"PATH":             "/usr/bin:/bin:/usr/sbin:/sbin:/usr/local/bin:/usr/local/sbin",
		"IMSE_USER":        user,
		"IMSE_EVENT":       "MessageNew",
		"IMSE_TRIGGER":     "event",
		"IMSE_COUNT":       "1",
		"IMSE_FOLDER":      "INBOX",
		"IMSE_UID":         dc.uidOf(t, user, "INBOX", m.id),
		"IMSE_UIDVALIDITY": st["uidvalidity"],
		"IMSE_UNSEEN":      st["unseen"],
		"IMSE_SUBJECT":     m.subject,
		"IMSE_SUBJECT_RAW": m.subjRaw,
		"IMSE_FROM":        m.from,
		"IMSE_FROM_RAW":    m.fromRaw,
		"IMSE_REMOTE_IP":   "127.0.0.1",
	}
	for k, v := range want {
		got, ok := r.env[k]
		if !ok {
			t.Errorf("%s: %s not in the command's environment", user, k)
		} else if got != v {
			t.Errorf("%s: %s=%q, want %q", user, k, got, v)
		}
	}
	if p, err := strconv.Atoi(r.env["IMSE_REMOTE_PORT"]); err != nil || p <= 0 || p > 65535 {
		t.Errorf("%s: IMSE_REMOTE_PORT=%q, want a port", user, r.env["IMSE_REMOTE_PORT"])
	}
	if !strings.Contains(r.env["IMSE_SNIPPET"], m.snippet) {
		t.Errorf("%s: IMSE_SNIPPET=%q, want it to contain %q", user, r.env["IMSE_SNIPPET"], m.snippet)
	}
}

// mail is a Dovecot and an imserious pointed at each other, with a
// handler for alice and one for bob, and what was delivered so far.
type mail struct {
	d     *daemontest.Daemon
	dc    *dovecot
	runAs map[string]privsep.Account // the account each mail user's commands run as
	inbox map[string]int             // INBOX deliveries per user
	runs  map[string]int             // commands run per user
	kind  string                     // HTTP or HTTPS
	ca    *tlstest.CA                // the CA Dovecot trusts, over HTTPS
}

// newMail starts imserious with extra TOML (a [tls] table), then the
// release's Dovecot with its push driver pointed at it: over HTTPS
// trusting ca when ca is not nil, over HTTP otherwise.
func newMail(t *testing.T, r *release, extra string, ca *tlstest.CA) *mail {
	t.Helper()
	m := &mail{
		runAs: map[string]privsep.Account{alice: daemontest.Account(t, runAlice), bob: daemontest.Account(t, runBob)},
		inbox: map[string]int{},
		runs:  map[string]int{},
		kind:  "HTTP",
		ca:    ca,
	}
	if ca != nil {
		m.kind = "HTTPS"
	}
	cfg := daemonConf(t, "allow = [\"127.0.0.1\"]\n"+extra, handlerConf{alice, runAlice}, handlerConf{bob, runBob})
	m.d = daemontest.Start(t, cfg, daemontest.Options{Name: strings.ToLower(m.kind)})
	push := dovecotSettings(t, r, cfg)
	want := strings.ToLower(m.kind) + "://" + authURLInfo + "@" + m.d.Addr + endpoint
	if got := pushURL(t, r, push); got != r.urlIn(want) {
		t.Errorf("imseriousctl's %s URL is %s, want %s", r.version, got, r.urlIn(want))
	}
	if ca != nil && !caLine.MatchString(push) {
		t.Errorf("no ssl_client_ca_file in imseriousctl's output for HTTPS:\n%s", push)
	}
	m.dc = newDovecot(t, r, r.openDir(t), push, alice, bob, carol+":"+alice)
	m.dc.applyDoveadm(t, push, alice, bob)
	// carol has no handler, so no printed line; her deliveries measure
	// what a notification costs.
	m.dc.enablePush(t, carol)
	return m
}

var caLine = regexp.MustCompile(`(?m)^\s*ssl_client_ca_file = \S`)

// deliver delivers msg to user's INBOX with dovecot-lda and checks the
// run it causes.
func (m *mail) deliver(t *testing.T, user string, msg message) {
	t.Helper()
	from := m.d.Mark()
	m.dc.lda(t, m.dc.conf, user, "", msg.text())
	m.inbox[user]++
	m.runs[user]++
	checkRun(t, m.dc, nextRun(t, m.d, from, user), user, m.runAs[user], msg)
}

// lmtp delivers msg in one LMTP transaction to alice and bob: one
// notification each, and each handler gets its own run.
func (m *mail) lmtp(t *testing.T, msg message) {
	t.Helper()
	from := m.d.Mark()
	m.dc.lmtpDeliver(t, msg.text(), alice, bob)
	for _, u := range []string{alice, bob} {
		m.inbox[u]++
		m.runs[u]++
	}
	ar, br := nextRun(t, m.d, from, alice), nextRun(t, m.d, from, bob)
	checkRun(t, m.dc, ar, alice, m.runAs[alice], msg)
	checkRun(t, m.dc, br, bob, m.runAs[bob], msg)
	if ar.pid == br.pid {
		t.Errorf("both recipients share one run (pid %d)", ar.pid)
	}
}

// check checks what holds after all the deliveries: every INBOX delivery
// was notified once, the commands ran as often as the deliveries said,
// Dovecot logged no problem, and the password never reached imserious's
// log.
func (m *mail) check(t *testing.T) {
	t.Helper()
	for _, u := range []string{alice, bob} {
		if n := len(m.d.Since(0, accepted(u))); n != m.inbox[u] {
			t.Errorf("%s: %d notifications accepted, want %d (one per INBOX delivery)", u, n, m.inbox[u])
		}
		started := m.d.Since(0, func(l daemontest.Line) bool { return l.Str("msg") == "command started" && l.Str("user") == u })
		if len(started) != m.runs[u] {
			t.Errorf("%s: %d runs, want %d", u, len(started), m.runs[u])
		}
	}
	if p := m.dc.problems(t, m.dc.log); len(p) > 0 {
		t.Errorf("dovecot logged problems:\n%s", strings.Join(p, "\n"))
	}
	if strings.Contains(m.d.All(), authPass) {
		t.Errorf("the password reached imserious's log")
	}
}

// timing measures and prints (does not assert: the machine decides) the
// median time of a dovecot-lda delivery with imserious answering against
// the same with no push driver.
func (m *mail) timing(t *testing.T) {
	nopush, nopushLog := m.dc.variant(t, "nopush", "")
	const n = 20
	with, without := measure(t, m.dc, m.dc.conf, nopush, n)
	r := func(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }
	t.Logf("MEDIAN dovecot-lda delivery, %d each: %v with imserious answering over %s, %v with no push driver: %v for the notification",
		n, r(with), m.kind, r(without), r(with-without))
	// What of that is imserious's: the same request from a Go client on
	// a new connection each time, as each dovecot-lda makes one.
	t.Logf("MEDIAN the same notification from a Go client on a new connection, %d: %v", n, r(m.probe(t, n)))
	if p := m.dc.problems(t, m.dc.log); len(p) > 0 {
		t.Errorf("dovecot logged problems:\n%s", strings.Join(p, "\n"))
	}
	if p := m.dc.problems(t, nopushLog); len(p) > 0 {
		t.Errorf("dovecot (no push driver) logged problems:\n%s", strings.Join(p, "\n"))
	}
}

// probe sends n notifications for carol (who has no handler) as Dovecot
// does, each on a new connection, and returns the median round trip.
func (m *mail) probe(t *testing.T, n int) time.Duration {
	t.Helper()
	tr := &http.Transport{DisableKeepAlives: true}
	if m.ca != nil {
		tr.TLSClientConfig = &tls.Config{RootCAs: m.ca.Pool(), ServerName: "127.0.0.1"}
	}
	client := &http.Client{Timeout: waitLimit, Transport: tr}
	defer tr.CloseIdleConnections()
	url := strings.ToLower(m.kind) + "://" + m.d.Addr + endpoint
	body := fmt.Sprintf(`{"user":%q,"event":"messageNew","folder":"INBOX","imap-uidvalidity":1,"imap-uid":1,"subject":"probe","unseen":1}`, carol)
	var ds []time.Duration
	for range n {
		req, err := http.NewRequest("PUT", url, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
		req.SetBasicAuth(authUser, authPass)
		begin := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("probe: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		ds = append(ds, time.Since(begin))
		if resp.StatusCode != 200 {
			t.Fatalf("probe: status %d", resp.StatusCode)
		}
	}
	return median(ds)
}

// The messages of the suite, each with what its command should see.

func encodedMessage() message {
	m := newMessage("From: =?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?= <juergen@example.org>\n"+
		"Subject: =?UTF-8?B?R3LDvMOfZSBhdXMgTcO8bmNoZW4g4pyT?=\n",
		"Hello Alice,\n\nthe first   test body.\n")
	m.subject, m.subjRaw = "Grüße aus München ✓", "=?UTF-8?B?R3LDvMOfZSBhdXMgTcO8bmNoZW4g4pyT?="
	m.from, m.fromRaw = "Jürgen Müller <juergen@example.org>", "=?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?= <juergen@example.org>"
	m.snippet = "Hello Alice, the first test body."
	return m
}

func noSubjectMessage() message {
	m := newMessage("From: Bob Sender <bob.sender@example.org>\n", "No subject here.\n")
	m.from, m.fromRaw = "Bob Sender <bob.sender@example.org>", "Bob Sender <bob.sender@example.org>"
	m.snippet = "No subject here."
	return m
}

func foldedMessage() message {
	m := newMessage("From: cafe@example.org\nSubject: =?ISO-8859-1?Q?Caf=E9?=\n au lait\n", "Cream?\n")
	// Dovecot keeps the folding (a newline), which the daemon makes safe
	// as a space; the decoded value is unfolded.
	m.subject, m.subjRaw = "Café au lait", "=?ISO-8859-1?Q?Caf=E9?=  au lait"
	m.from, m.fromRaw = "cafe@example.org", "cafe@example.org"
	m.snippet = "Cream?"
	return m
}

func lmtpMessage() message {
	m := newMessage("From: =?UTF-8?Q?Z=C3=BCrich?= <zh@example.org>\nSubject: =?UTF-8?Q?LMTP_f=C3=BCr_zwei?=\n",
		"Two at once.\n")
	m.subject, m.subjRaw = "LMTP für zwei", "=?UTF-8?Q?LMTP_f=C3=BCr_zwei?="
	m.from, m.fromRaw = "Zürich <zh@example.org>", "=?UTF-8?Q?Z=C3=BCrich?= <zh@example.org>"
	m.snippet = "Two at once."
	return m
}

// TestDovecotOverHTTP delivers real mail through a private Dovecot whose
// OX push driver notifies imserious over plain HTTP with Basic auth, and
// checks every run the deliveries cause; then measures what the
// notification costs a delivery.
func TestDovecotOverHTTP(t *testing.T) { forEachDovecot(t, testOverHTTP) }

func testOverHTTP(t *testing.T, r *release) {
	m := newMail(t, r, "", nil)
	t.Run("RFC 2047 subject and from", func(t *testing.T) { m.deliver(t, alice, encodedMessage()) })
	t.Run("no subject", func(t *testing.T) { m.deliver(t, bob, noSubjectMessage()) })
	t.Run("folded ISO-8859-1 subject", func(t *testing.T) { m.deliver(t, alice, foldedMessage()) })
	t.Run("other folder, then LMTP to two recipients", func(t *testing.T) {
		from := m.d.Mark()
		other := newMessage("From: list@example.org\nSubject: not for INBOX\n", "Filed elsewhere.\n")
		m.dc.lda(t, m.dc.conf, alice, "Other", other.text())
		m.dc.uidOf(t, alice, "Other", other.id) // it was delivered, there
		// The LMTP delivery bounds the check below: had Dovecot notified
		// for Other, that notification would have been answered, and
		// logged, before this one.
		m.lmtp(t, lmtpMessage())
		if n := len(m.d.Since(from, accepted(alice))); n != 1 {
			t.Errorf("%d notifications for alice since the delivery into Other, want 1 (the LMTP one): Dovecot notified for another folder?", n)
		}
	})
	m.check(t)
	t.Run("delivery time", m.timing)
}

// measure delivers n mails to carol (who has no handler: nothing runs
// beside) under each configuration, alternately so that both see the same
// machine, and returns the median durations.
func measure(t *testing.T, dc *dovecot, withConf, withoutConf string, n int) (with, without time.Duration) {
	t.Helper()
	msg := newMessage("From: bench@example.org\nSubject: timing\n", "Timing run.\n").text()
	// One of each first, unmeasured: Dovecot creates the mailbox and its
	// indexes on the first delivery.
	dc.lda(t, withConf, carol, "", msg)
	dc.lda(t, withoutConf, carol, "", msg)
	var w, wo []time.Duration
	for range n {
		w = append(w, dc.lda(t, withConf, carol, "", msg))
		wo = append(wo, dc.lda(t, withoutConf, carol, "", msg))
	}
	return median(w), median(wo)
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// TestRejectedRequestsAreLogged points Dovecot at imserious the ways users
// get wrong, and checks that each failed notification leaves exactly one
// warn line naming the peer and the reason, and Dovecot saw the status.
func TestRejectedRequestsAreLogged(t *testing.T) { forEachDovecot(t, testRejected) }

func testRejected(t *testing.T, r *release) {
	daemontest.Account(t, runAlice)
	h := handlerConf{alice, runAlice}
	openConf := daemonConf(t, "allow = [\"127.0.0.1\"]\n", h)
	open := daemontest.Start(t, openConf, daemontest.Options{Name: "loopback"})
	// 127.0.0.2 only: Dovecot connects from 127.0.0.1. The marker request
	// below comes from 127.0.0.2.
	closed := daemontest.Start(t, daemonConf(t, "allow = [\"127.0.0.2\"]\n", h), daemontest.Options{Name: "closed"})
	push := dovecotSettings(t, r, openConf)
	dc := newDovecot(t, r, r.openDir(t), push, alice)
	dc.applyDoveadm(t, push, alice)

	cases := []struct {
		name   string
		d      *daemontest.Daemon
		src    string // where the marker request comes from
		url    string
		status int
		reason string // a word the reason must contain
	}{
		{"wrong password", open, "127.0.0.1", "http://push%40dove:wr%40ng%3Apass@" + open.Addr + endpoint, 401, "credentials"},
		{"wrong path", open, "127.0.0.1", "http://" + authURLInfo + "@" + open.Addr + "/notfy", 404, "endpoint"},
		// Refused at accept, before a byte is read: no status at all.
		{"peer outside allow", closed, "127.0.0.2", "http://" + authURLInfo + "@" + closed.Addr + endpoint, 0, "allow"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conf, log := dc.variant(t, fmt.Sprintf("reject%d", i), withURL(t, r, push, c.url))
			from := c.d.Mark()
			dc.lda(t, conf, alice, "", newMessage("From: x@example.org\nSubject: rejected\n", "Will not notify.\n").text())

			// Dovecot saw the status: it logs the failure. 401 and 404
			// are not retried; a connection closed at accept is, once
			// (both releases make the printed second attempt), and
			// imserious warns of the same peer and reason once.
			found := false
			for _, p := range dc.problems(t, log) {
				if strings.Contains(p, "push-notification") && (c.status == 0 || strings.Contains(p, strconv.Itoa(c.status))) {
					found = true
					t.Logf("dovecot logged: %s", p)
				}
			}
			if !found {
				t.Errorf("dovecot did not log a push-notification error with %d; its problems: %q", c.status, dc.problems(t, log))
			}

			// dovecot-lda has had its answer, so the line is written; a
			// request that passes, sent now, is logged after it: once its
			// line is in, every line of the failed notification is too.
			marker(t, c.d, c.src, i)
			warn := c.d.Since(from, func(l daemontest.Line) bool { return l.Str("level") == "WARN" })
			want := "request rejected"
			if c.status == 0 {
				want = "connection refused"
			}
			if len(warn) != 1 || warn[0].Str("msg") != want {
				t.Fatalf("warn lines %v, want one %q line", warn, want)
			}
			l := warn[0]
			if st, _ := l.Num("status"); st != c.status {
				t.Errorf("status %d, want %d: %v", st, c.status, l)
			}
			peer, err := netip.ParseAddrPort(l.Str("peer"))
			if err != nil || peer.Addr() != netip.MustParseAddr("127.0.0.1") {
				t.Errorf("peer %q, want 127.0.0.1:PORT (Dovecot's connection): %v", l.Str("peer"), l)
			}
			if !strings.Contains(l.Str("reason"), c.reason) {
				t.Errorf("reason %q does not say %q: %v", l.Str("reason"), c.reason, l)
			}
			if c.status != 0 && l.Str("method") != "PUT" {
				t.Errorf("method %q, want PUT: %v", l.Str("method"), l)
			}
		})
	}
	for _, d := range []*daemontest.Daemon{open, closed} {
		all := d.All()
		for _, secret := range []string{authPass, "wr@ng:pass", base64.StdEncoding.EncodeToString([]byte(authUser + ":wr@ng:pass"))} {
			if strings.Contains(all, secret) {
				t.Errorf("%s logged a password (%q)", d.Name, secret)
			}
		}
		if n := len(d.Since(0, func(l daemontest.Line) bool { return l.Str("msg") == "command started" })); n != 0 {
			t.Errorf("%s ran %d commands for rejected notifications", d.Name, n)
		}
	}
}

// marker sends a valid notification from src for a user without handlers
// and waits for the network process to log it (at debug level).
func marker(t *testing.T, d *daemontest.Daemon, src string, n int) {
	t.Helper()
	user := fmt.Sprintf("imse-e2e-marker-%d", n)
	client := &http.Client{Timeout: waitLimit, Transport: &http.Transport{DialContext: (&net.Dialer{
		LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}).DialContext}}
	defer client.CloseIdleConnections()
	body := fmt.Sprintf(`{"user":%q,"event":"messageNew","folder":"INBOX"}`, user)
	req, err := http.NewRequestWithContext(context.Background(), "PUT", "http://"+d.Addr+endpoint, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.SetBasicAuth(authUser, authPass)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("marker request: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("marker request from %s: status %d", src, resp.StatusCode)
	}
	// A user without any handler is an info line (once an hour); the
	// debug line is for a user whose handlers want another event.
	d.WaitFrom(t, 0, "marker "+user, func(l daemontest.Line) bool {
		m := l.Str("msg")
		return (m == "event matches no handler" || strings.HasPrefix(m, "event for a user without a handler")) && l.Str("user") == user
	})
}
