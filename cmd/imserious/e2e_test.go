//go:build linux

package main

// End-to-end tests: the real binary, started as it is in production, on a
// free loopback port, spoken to over real HTTP. As root (always in CI) the
// privilege drop is tested for real; otherwise everything runs as the
// invoking user, as the daemon itself does.

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/imserious/imserious/internal/daemontest"
)

func TestMain(m *testing.M) {
	os.Exit(daemontest.Main(m))
}

const canary = "IMSERIOUS_TEST_CANARY"

func isRoot() bool { return os.Geteuid() == 0 }

// account returns the account commands run as: a test account as root
// (created when missing), the invoking user otherwise.
func account(t testing.TB, name string) (user string, uid int) {
	t.Helper()
	if !isRoot() {
		u := os.Getenv("USER")
		if u == "" {
			u = "nobody"
		}
		return u, os.Getuid()
	}
	a := daemontest.Account(t, name)
	return a.Name, a.UID
}

// start starts the daemon on the configuration and waits for it to listen.
func start(t *testing.T, cfgText string) *daemontest.Daemon {
	t.Helper()
	// The canary must never reach a command.
	return daemontest.Start(t, cfgText, daemontest.Options{Env: []string{canary + "=leaked"}})
}

func notifyURL(d *daemontest.Daemon) string { return "http://" + d.Addr + "/notify" }

func notify(t *testing.T, url, body string, mod func(*http.Request)) *http.Response {
	t.Helper()
	req, err := http.NewRequest("PUT", url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	if mod != nil {
		mod(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

const body1 = `{"user":"%s","event":"messageNew","folder":"INBOX","imap-uidvalidity":1795613200,"imap-uid":%d,"from":"=?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?= <juergen@example.org>","subject":"=?UTF-8?B?R3LDvMOfZSBhdXMgTcO8bmNoZW4g4pyT?=","snippet":"hi","unseen":3}`

// output returns the lines handler h's commands wrote to stdout, as the
// exec process logged them. h counts from 0 in file order; logs name a
// handler by its number in the file, as configuration errors do (h+1).
func output(d *daemontest.Daemon, h int) []string {
	var out []string
	for _, m := range d.Since(0, func(m daemontest.Line) bool {
		return m["msg"] == "command output" && m["handler"] == float64(h+1) && m["stream"] == "stdout"
	}) {
		out = append(out, m["line"].(string))
	}
	return out
}

func TestCommandEnvironmentAndPrivileges(t *testing.T) {
	user, uid := account(t, "imse_alice")
	// Three handlers for one event, each a plain program (no shell, which
	// opens descriptors of its own): what they print reaches the log.
	cfg := fmt.Sprintf("listen = \"127.0.0.1:0\"\n%s%s", daemontest.LogTOML, daemontest.PrivsepTOML(t))
	for _, cmd := range []string{`["/usr/bin/env"]`, `["/bin/ls", "-l", "/proc/self/fd"]`, `"id"`} {
		cfg += fmt.Sprintf("[[handler]]\nuser = %q\ncommand = %s\nenv = { DISPLAY = \":0\" }\n", user, cmd)
	}
	d := start(t, cfg)

	// The processes and their ids, while the daemon runs.
	kids := d.Children()
	netp, ok := kids["net"]
	if !ok {
		t.Fatalf("no net child among %v", kids)
	}
	execp, ok := kids["exec:"+user]
	if !ok {
		t.Fatalf("no exec:%s child among %v", user, kids)
	}
	if isRoot() {
		_, netUID := account(t, "_imserious")
		for _, id := range netp.UID {
			if id != netUID {
				t.Errorf("net uids %v, want all %d", netp.UID, netUID)
			}
		}
		if len(netp.Groups) > 1 {
			t.Errorf("net has supplementary groups %v", netp.Groups)
		}
		root, err := os.Readlink(fmt.Sprintf("/proc/%d/root", netp.Pid))
		if err != nil || root == "/" {
			t.Errorf("net process root is %q (%v), want its chroot", root, err)
		}
		for _, id := range execp.UID {
			if id != uid {
				t.Errorf("exec uids %v, want all %d", execp.UID, uid)
			}
		}
	}

	resp := notify(t, notifyURL(d), fmt.Sprintf(body1, user, 7), nil)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	for h := 0; h < 3; h++ {
		d.WaitFor(fmt.Sprintf("exit of handler %d's command", h), func(m daemontest.Line) bool {
			return m["msg"] == "command exited" && m["handler"] == float64(h+1)
		})
	}

	// Descriptors: 0-2, and the one ls opened to read the directory.
	var fds []string
	for _, line := range output(d, 1) {
		f := strings.Fields(line)
		if len(f) < 9 || f[len(f)-2] != "->" {
			continue
		}
		if fd := f[len(f)-3]; !strings.HasPrefix(f[len(f)-1], "/proc/") {
			fds = append(fds, fd)
		}
	}
	if !slices.Equal(fds, []string{"0", "1", "2"}) {
		t.Errorf("command has fds %v, want exactly 0 1 2:\n%s", fds, strings.Join(output(d, 1), "\n"))
	}
	if id := strings.Join(output(d, 2), ""); !strings.HasPrefix(id, fmt.Sprintf("uid=%d(", uid)) {
		t.Errorf("command runs as %q, want uid %d", id, uid)
	}

	env := map[string]string{}
	for _, line := range output(d, 0) {
		k, v, _ := strings.Cut(line, "=")
		env[k] = v
	}
	if _, leaked := env[canary]; leaked {
		t.Errorf("daemon environment leaked into the command: %s", canary)
	}
	want := []string{"DISPLAY", "HOME", "IMSE_COUNT", "IMSE_EVENT", "IMSE_FOLDER", "IMSE_FROM", "IMSE_FROM_RAW",
		"IMSE_REMOTE_IP", "IMSE_REMOTE_PORT", "IMSE_SNIPPET", "IMSE_SUBJECT", "IMSE_SUBJECT_RAW", "IMSE_TRIGGER",
		"IMSE_UID", "IMSE_UIDVALIDITY", "IMSE_UNSEEN", "IMSE_USER", "LOGNAME", "PATH", "SHELL", "USER"}
	got := slices.Sorted(maps.Keys(env))
	if !slices.Equal(got, want) {
		t.Errorf("command environment names\n got %v\nwant %v", got, want)
	}
	for k, v := range map[string]string{
		"IMSE_USER": user, "IMSE_EVENT": "MessageNew", "IMSE_TRIGGER": "event", "IMSE_COUNT": "1",
		"IMSE_UID": "7", "IMSE_UIDVALIDITY": "1795613200", "IMSE_UNSEEN": "3", "IMSE_FOLDER": "INBOX",
		"IMSE_FROM": "Jürgen Müller <juergen@example.org>", "IMSE_SUBJECT": "Grüße aus München ✓",
		"IMSE_REMOTE_IP": "127.0.0.1", "DISPLAY": ":0", "USER": user, "LOGNAME": user,
		"PATH": "/usr/bin:/bin:/usr/sbin:/sbin:/usr/local/bin:/usr/local/sbin",
	} {
		if env[k] != v {
			t.Errorf("%s=%q, want %q", k, env[k], v)
		}
	}

	if code := d.Stop(); code != 0 {
		t.Errorf("exit status %d after SIGTERM, want 0", code)
	}
	for role, pi := range kids {
		if _, alive := daemontest.ReadProc(pi.Pid); alive {
			t.Errorf("child %s (pid %d) still exists after the daemon exited", role, pi.Pid)
		}
	}
}

func TestHTTPAnswers(t *testing.T) {
	user, _ := account(t, "imse_alice")
	cfg := fmt.Sprintf("listen = \"127.0.0.1:0\"\nallow = [\"127.0.0.1\"]\n%s%s\n[auth]\nuser = \"dove\"\npass = \"s3cr:et\"\n[[handler]]\nuser = %q\ncommand = \"/bin/true\"\n",
		daemontest.LogTOML, daemontest.PrivsepTOML(t), user)
	d := start(t, cfg)
	good := fmt.Sprintf(body1, user, 1)
	auth := func(r *http.Request) { r.SetBasicAuth("dove", "s3cr:et") }
	cases := []struct {
		name   string
		url    string
		body   string
		mod    func(*http.Request)
		status int
	}{
		{"valid", notifyURL(d), good, auth, 200},
		{"valid with query", notifyURL(d) + "?x=1", good, auth, 200},
		{"no credentials", notifyURL(d), good, nil, 401},
		{"wrong password", notifyURL(d), good, func(r *http.Request) { r.SetBasicAuth("dove", "nope") }, 401},
		{"wrong path, no credentials", "http://" + d.Addr + "/other", good, nil, 401},
		{"wrong path", "http://" + d.Addr + "/other", good, auth, 404},
		{"GET", notifyURL(d), good, func(r *http.Request) { auth(r); r.Method = "GET" }, 405},
		{"POST", notifyURL(d), good, func(r *http.Request) { auth(r); r.Method = "POST" }, 200},
		{"text/plain", notifyURL(d), good, func(r *http.Request) { auth(r); r.Header.Set("Content-Type", "text/plain") }, 415},
		{"+json", notifyURL(d), good, func(r *http.Request) { auth(r); r.Header.Set("Content-Type", "application/vnd.x+json") }, 200},
		{"too big", notifyURL(d), `{"user":"` + strings.Repeat("a", 70<<10) + `"}`, auth, 413},
		{"not JSON", notifyURL(d), `{"user":`, auth, 400},
		{"no user", notifyURL(d), `{"event":"MessageNew"}`, auth, 422},
		{"unknown event", notifyURL(d), `{"user":"x","event":"MessageNope"}`, auth, 422},
		{"uid wrong type", notifyURL(d), `{"user":"x","event":"MessageNew","imap-uid":"7"}`, auth, 422},
		{"no handler", notifyURL(d), `{"user":"nobody-here","event":"MessageNew"}`, auth, 200},
	}
	for _, c := range cases {
		resp := notify(t, c.url, c.body, c.mod)
		if resp.StatusCode != c.status {
			t.Errorf("%s: status %d, want %d", c.name, resp.StatusCode, c.status)
		}
		if c.status == 401 && resp.Header.Get("WWW-Authenticate") != `Basic realm="imserious"` {
			t.Errorf("%s: WWW-Authenticate %q", c.name, resp.Header.Get("WWW-Authenticate"))
		}
		if c.status == 405 && resp.Header.Get("Allow") != "PUT, POST" {
			t.Errorf("%s: Allow %q", c.name, resp.Header.Get("Allow"))
		}
	}

	// A peer outside allow: connect from 127.0.0.2 (all of 127/8 is lo).
	client := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{
		LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}).DialContext}}
	req, _ := http.NewRequest("PUT", notifyURL(d), strings.NewReader(good))
	req.Header.Set("Content-Type", "application/json")
	auth(req)
	// Refused at accept: the connection is closed before anything is read.
	if resp, err := client.Do(req); err == nil {
		resp.Body.Close()
		t.Errorf("peer outside allow: answered %d, want the connection closed", resp.StatusCode)
	}

	// Rejections are logged at warn with the peer, never with the password.
	d.WaitFor("warn line for the refused 127.0.0.2", func(m daemontest.Line) bool {
		s := fmt.Sprint(m)
		return m["level"] == "WARN" && strings.Contains(s, "127.0.0.2") && strings.Contains(s, "peer not in allow list")
	})
	all := d.All()
	if strings.Contains(all, "s3cr:et") || strings.Contains(all, "bm9wZQ") {
		t.Errorf("a password reached the log")
	}
	if code := d.Stop(); code != 0 {
		t.Errorf("exit status %d, want 0", code)
	}
}

// startOneHandler starts the daemon with one handler and returns it with
// its children, which must be the network process and one exec process.
func startOneHandler(t *testing.T) (*daemontest.Daemon, map[string]daemontest.Proc) {
	t.Helper()
	user, _ := account(t, "imse_alice")
	cfg := fmt.Sprintf("listen = \"127.0.0.1:0\"\n%s%s\n[[handler]]\nuser = %q\ncommand = \"/bin/true\"\n", daemontest.LogTOML, daemontest.PrivsepTOML(t), user)
	d := start(t, cfg)
	kids := d.Children()
	if len(kids) != 2 {
		t.Fatalf("children %v, want net and one exec", kids)
	}
	return d, kids
}

func TestCheckFlag(t *testing.T) {
	user, _ := account(t, "imse_alice")
	good := daemontest.WriteConfig(t, fmt.Sprintf("%s[[handler]]\nuser = %q\ncommand = \"/bin/true\"\n", daemontest.PrivsepTOML(t), user))
	var stderr bytes.Buffer
	cmd := daemontest.Command(t, "-n", good)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil || !strings.Contains(stderr.String(), "configuration OK") {
		t.Errorf("-n on a good file: %v, %q", err, stderr.String())
	}
	bad := daemontest.WriteConfig(t, "listen = \"127.0.0.1:1\"\nlimitperod = 3\n[[handler]]\nuser = \"x\"\ncommand = \"'unbalanced\"\n")
	stderr.Reset()
	cmd = daemontest.Command(t, "-n", bad)
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Errorf("-n on a bad file: %v, want exit status 1", err)
	}
	msg := stderr.String()
	for _, want := range []string{bad + ":2", "limitperod", bad + ":5"} {
		if !strings.Contains(msg, want) {
			t.Errorf("-n output lacks %q:\n%s", want, msg)
		}
	}
}

func TestVersion(t *testing.T) {
	out, err := daemontest.Command(t, "-V").Output()
	if err != nil || !strings.HasPrefix(string(out), "imserious ") {
		t.Errorf("-V: %q, %v", out, err)
	}
}
