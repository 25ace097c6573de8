package main

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imserious/imserious/config"
	"github.com/imserious/imserious/event"
	"github.com/imserious/imserious/internal/dovecotsamples"
	"github.com/imserious/imserious/listener"
	"github.com/imserious/imserious/privsep"
)

// checkOutput runs check with args on testdata/check/imserious.toml and
// the body on stdin, and returns stdout with the invoking user's account
// (which commands run as when not root) shown as $USER, $HOME, ..., then
// stderr and the exit status.
func checkOutput(t *testing.T, body string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cfg := writeConfig(t, "check/imserious.toml")
	c, out, errOut := testCtl(body)
	code = invoke(c, append([]string{"-c", cfg, "check"}, args...)...)
	acct, err := privsep.Current()
	if err != nil {
		t.Fatal(err)
	}
	s := out.String()
	for _, r := range []struct{ from, to string }{
		{fmt.Sprintf("  run_as   %s (uid %d, gid %d)\n", acct.Name, acct.UID, acct.GID), "  run_as   $USER (uid $UID, gid $GID)\n"},
		{"    HOME=" + acct.Home + "\n", "    HOME=$HOME\n"},
		{"    LOGNAME=" + acct.Name + "\n", "    LOGNAME=$USER\n"},
		{"    SHELL=" + acct.Shell + "\n", "    SHELL=$SHELL\n"},
		{"    USER=" + acct.Name + "\n", "    USER=$USER\n"},
	} {
		s = strings.ReplaceAll(s, r.from, r.to)
	}
	return s, errOut.String(), code
}

// TestCheckSamples replays every body Dovecot 2.3.19.1 was seen to send.
func TestCheckSamples(t *testing.T) {
	var b strings.Builder
	for _, s := range dovecotsamples.Load(t) {
		stdout, stderr, code := checkOutput(t, string(s.Body), "-")
		if code != 0 || stderr != "" {
			t.Errorf("%s: exit %d, stderr %q; want 0 and nothing: Dovecot's own bodies are accepted", s.Case, code, stderr)
		}
		fmt.Fprintf(&b, "=== %s\n%s", s.Case, stdout)
	}
	golden(t, "check/samples.golden", b.String())
}

// TestCheckPeers: -i decides the ip lists and IMSE_REMOTE_*; IPv4-mapped
// peers are seen as IPv4, as the daemon sees them.
func TestCheckPeers(t *testing.T) {
	body := `{"user":"alice","event":"messageNew","folder":"INBOX","imap-uid":[3,4],"subject":"peers"}`
	var b strings.Builder
	for _, peer := range []string{"192.0.2.7:4711", "[::ffff:192.0.2.7]:4711", "2001:db8::1", "[2001:db8::1]:993", "127.0.0.2"} {
		stdout, stderr, code := checkOutput(t, body, "-i", peer, "-")
		if code != 0 || stderr != "" {
			t.Errorf("-i %s: exit %d, stderr %q", peer, code, stderr)
		}
		fmt.Fprintf(&b, "=== -i %s\n%s", peer, stdout)
	}
	golden(t, "check/peers.golden", b.String())
}

// TestCheckFileAndStdin: a file and standard input give the same report.
func TestCheckFileAndStdin(t *testing.T) {
	body := dovecotsamples.Load(t)[0].Body
	p := filepath.Join(t.TempDir(), "body.json")
	if err := os.WriteFile(p, body, 0o644); err != nil {
		t.Fatal(err)
	}
	fromFile, _, code1 := checkOutput(t, "", p)
	fromStdin, _, code2 := checkOutput(t, string(body), "-")
	if code1 != 0 || code2 != 0 {
		t.Fatalf("exit %d (file), %d (stdin)", code1, code2)
	}
	if want := strings.Replace(fromStdin, "standard input:", p+":", 1); fromFile != want {
		t.Errorf("file:\n%s\nstdin:\n%s", fromFile, fromStdin)
	}
	if !strings.Contains(fromFile, "IMSE_TRIGGER=event\n") || !strings.Contains(fromFile, "IMSE_COUNT=1\n") {
		t.Errorf("not the environment of an event run:\n%s", fromFile)
	}
}

// reason is what the daemon logs for a body event.Decode refuses, and the
// status it answers (as listener.decodeEvent decides it).
func reason(body string) (int, string) {
	_, err := event.Decode([]byte(body))
	var de *event.Error
	if !errors.As(err, &de) {
		return 0, ""
	}
	if de.Status == http.StatusUnprocessableEntity {
		return de.Status, de.Reason
	}
	return http.StatusBadRequest, de.Reason
}

func TestCheckRefused(t *testing.T) {
	big := `{"user":"alice","event":"MessageNew","snippet":"` + strings.Repeat("x", listener.MaxBody) + `"}`
	bigFile := filepath.Join(t.TempDir(), "big.json")
	if err := os.WriteFile(bigFile, []byte(big), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		body string
		args []string
		want string // stderr, exactly
	}{
		{"not JSON", "user=alice", []string{"-"}, ""},
		{"two values", `{"user":"alice","event":"MessageNew"} {}`, []string{"-"}, ""},
		{"no event", `{"user":"alice"}`, []string{"-"}, "imseriousctl: refused: the daemon answers 422 Unprocessable Entity: \"event\" is missing\n"},
		{"unknown event", `{"user":"alice","event":"MessageNow"}`, []string{"-"}, ""},
		{"uid not a number", `{"user":"alice","event":"MessageNew","imap-uid":"3"}`, []string{"-"}, ""},
		{"control character in user", `{"user":"al\u0001ice","event":"MessageNew"}`, []string{"-"}, ""},
		{"too big on stdin", big, []string{"-"}, "imseriousctl: refused: the daemon answers 413 Request Entity Too Large: chunked body over 64 KiB\n"},
		{"too big in a file", "", []string{bigFile}, fmt.Sprintf("imseriousctl: refused: the daemon answers 413 Request Entity Too Large: body of %d bytes is over 64 KiB\n", len(big))},
		{"peer outside allow", `{"user":"alice","event":"MessageNew"}`, []string{"-i", "10.0.0.1:25", "-"},
			"imseriousctl: refused: the daemon closes the connection unanswered: peer 10.0.0.1 not in allow list\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			want := c.want
			if want == "" {
				st, r := reason(c.body)
				if st == 0 {
					t.Fatalf("event.Decode accepts %q", c.body)
				}
				want = fmt.Sprintf("imseriousctl: refused: the daemon answers %d %s: %s\n", st, http.StatusText(st), r)
			}
			stdout, stderr, code := checkOutput(t, c.body, c.args...)
			if code != 1 || stdout != "" || stderr != want {
				t.Errorf("exit %d, stdout %q, stderr %q; want 1, nothing, %q", code, stdout, stderr, want)
			}
		})
	}
}

func TestCheckNoHandler(t *testing.T) {
	stdout, stderr, code := checkOutput(t, `{"user":"carol","event":"MessageNew"}`, "-")
	if code != 0 || stderr != "" || !strings.Contains(stdout, "No handler runs for user \"carol\" and event MessageNew. Nothing was run.\n") {
		t.Errorf("exit %d, stderr %q, stdout\n%s", code, stderr, stdout)
	}
	if strings.Contains(stdout, "handler[") {
		t.Errorf("handlers of other users listed:\n%s", stdout)
	}
}

// TestCheckEnvTooLarge: a run the exec process would refuse to start is
// reported, with status 1.
func TestCheckEnvTooLarge(t *testing.T) {
	cfg := writeConfigText(t, fmt.Sprintf("[[handler]]\nuser = \"alice\"\ncommand = \"true\"\nenv = { BIG = %q }\n", strings.Repeat("x", 130<<10)))
	c, stdout, stderr := testCtl(`{"user":"alice","event":"MessageNew"}`)
	code := invoke(c, "-c", cfg, "check", "-")
	if code != 1 || !strings.Contains(stdout.String(), "  would not start: variable BIG is ") ||
		stderr.String() != "imseriousctl: handler[1] would not start: environment too large\n" {
		t.Errorf("exit %d, stdout\n%s\nstderr %q", code, stdout, stderr)
	}
}

// TestCheckResolveFailure: without the accounts there is no environment
// to show; the errors come as -n prints them.
func TestCheckResolveFailure(t *testing.T) {
	cfg := writeConfigText(t, "[[handler]]\nuser = \"alice\"\ncommand = \"/nonexistent/program\"\n")
	conf, err := config.Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rerr := conf.Resolve(false)
	if rerr == nil {
		t.Fatal("Resolve accepts a missing command")
	}
	c, stdout, stderr := testCtl(`{"user":"alice","event":"MessageNew"}`)
	if code := invoke(c, "-c", cfg, "check", "-"); code != 1 || stdout.Len() > 0 || stderr.String() != rerr.Error()+"\n" {
		t.Errorf("exit %d, stdout %q, stderr\n%s\nwant 1, nothing and\n%s", code, stdout, stderr, rerr)
	}
}

// TestCheckPassEnv: pass_env variables are shown with the values of
// imseriousctl's own environment, and said to be so.
func TestCheckPassEnv(t *testing.T) {
	t.Setenv("IMSERIOUSCTL_TEST_DISPLAY", ":7")
	cfg := writeConfigText(t, "[[handler]]\nuser = \"alice\"\ncommand = \"/bin/echo\"\npass_env = [\"IMSERIOUSCTL_TEST_DISPLAY\", \"IMSERIOUSCTL_TEST_UNSET\"]\n")
	c, stdout, stderr := testCtl(`{"user":"alice","event":"MessageNew"}`)
	if code := invoke(c, "-c", cfg, "check", "-"); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	out := stdout.String()
	for _, want := range []string{
		"    IMSERIOUSCTL_TEST_DISPLAY=:7\n",
		"  pass_env IMSERIOUSCTL_TEST_DISPLAY, IMSERIOUSCTL_TEST_UNSET (the values of imseriousctl's environment; the daemon passes those of its own)\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
	if strings.Contains(out, "IMSERIOUSCTL_TEST_UNSET=") {
		t.Errorf("an unset variable is passed:\n%s", out)
	}
}
