//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imserious/imserious/internal/daemontest"
)

// syslogMsg is one datagram as the system logger got it.
type syslogMsg struct {
	pri  int
	raw  string
	line daemontest.Line // the JSON record after "imserious[pid]: "
}

var syslogFormat = regexp.MustCompile(`^<(\d+)>[A-Z][a-z]{2} [ 0-9]\d \d\d:\d\d:\d\d imserious\[(\d+)\]: (.*)$`)

// With [log] output = "syslog", every process's lines reach a real syslog
// socket (bound here) through the parent, the chrooted network process's
// and the exec process's too, with the configured facility, the ident
// imserious, the parent's pid and each line's severity; nothing goes to
// stdout.
func TestSyslogOutput(t *testing.T) {
	user, _ := account(t, "imse_alice")
	sock := filepath.Join(daemontest.PublicDir(t), "log")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	msgs := make(chan syslogMsg, 1000)
	go func() {
		buf := make([]byte, 16<<10)
		for {
			n, err := ln.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			m := syslogMsg{raw: string(buf[:n])}
			if sm := syslogFormat.FindStringSubmatch(m.raw); sm != nil {
				fmt.Sscan(sm[1], &m.pri)
				json.Unmarshal([]byte(sm[3]), &m.line)
			}
			msgs <- m
		}
	}()
	text := fmt.Sprintf("listen = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\nmax_level = \"debug\"\nlevel = true\n"+
		"output = \"syslog\"\nfacility = \"local3\"\nsyslog_socket = %q\n%s\n[[handler]]\nuser = %q\n"+
		"command = [\"/bin/sh\", \"-c\", \"echo out; echo err >&2\"]\n", sock, daemontest.PrivsepTOML(t), user)
	cmd := daemontest.Command(t, "-c", daemontest.WriteConfig(t, text))
	var stdout strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		<-exited
	}()

	var got []syslogMsg
	wait := func(what string, match func(syslogMsg) bool) syslogMsg {
		t.Helper()
		timeout := time.After(30 * time.Second)
		for _, m := range got {
			if match(m) {
				return m
			}
		}
		for {
			select {
			case m, ok := <-msgs:
				if !ok {
					t.Fatalf("syslog socket closed waiting for %s", what)
				}
				got = append(got, m)
				if match(m) {
					return m
				}
			case err := <-exited:
				t.Fatalf("daemon exited (%v) waiting for %s; stdout %q", err, what, stdout.String())
			case <-timeout:
				var raw []string
				for _, m := range got {
					raw = append(raw, m.raw)
				}
				t.Fatalf("no %s in syslog after 30s; got:\n%s", what, strings.Join(raw, "\n"))
			}
		}
	}
	listening := wait("listening", func(m syslogMsg) bool { return m.line.Str("msg") == "listening" })
	addr := listening.line.Str("addr")
	if resp := notify(t, "http://"+addr+"/notify", fmt.Sprintf(body1, user, 1), nil); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	// local3 is 19: PRI is 19*8 + severity.
	const local3 = 19 * 8
	for _, w := range []struct {
		what, proc, msg, stream string
		sev                     int
	}{
		{"the parent's info line", "parent", "listening", "", 6},
		{"the network process's info line", "net", "event accepted", "", 6},
		{"the network process's debug line", "net", "", "", 7},
		{"the command's stdout, logged at info", "exec[" + user + "]", "command output", "stdout", 6},
		{"the command's stderr, logged at warn", "exec[" + user + "]", "command output", "stderr", 4},
	} {
		m := wait(w.what, func(m syslogMsg) bool {
			return m.line.Str("proc") == w.proc && (w.msg == "" || m.line.Str("msg") == w.msg) &&
				(w.stream == "" || m.line.Str("stream") == w.stream) && m.pri == local3+w.sev
		})
		if pid := syslogFormat.FindStringSubmatch(m.raw)[2]; pid != fmt.Sprint(cmd.Process.Pid) {
			t.Errorf("%s: pid %s, want the parent's %d: %q", w.what, pid, cmd.Process.Pid, m.raw)
		}
	}
	for _, m := range got {
		if m.pri/8 != 19 || syslogFormat.FindStringSubmatch(m.raw) == nil {
			t.Errorf("datagram not in the local syslog format with facility local3: %q", m.raw)
		}
		if strings.HasPrefix(m.raw[strings.Index(m.raw, "]: ")+3:], "<") {
			t.Errorf("a severity prefix reached the log text: %q", m.raw)
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := <-exited; err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
	exited <- nil
	if stdout.Len() > 0 {
		t.Errorf("with output = \"syslog\" the daemon wrote to stdout: %q", stdout.String())
	}
}

// A syslog socket that is not there is a clear error at start, on
// stdout, and exit status 1.
func TestSyslogMissingSocket(t *testing.T) {
	user, _ := account(t, "imse_alice")
	sock := filepath.Join(t.TempDir(), "nolog")
	text := fmt.Sprintf("listen = \"127.0.0.1:0\"\n[log]\noutput = \"syslog\"\nsyslog_socket = %q\n%s\n[[handler]]\nuser = %q\ncommand = \"/bin/true\"\n",
		sock, daemontest.PrivsepTOML(t), user)
	out, err := daemontest.Command(t, "-c", daemontest.WriteConfig(t, text)).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("exit %v, want status 1; output %q", err, out)
	}
	if !strings.Contains(string(out), "cannot log to syslog") || !strings.Contains(string(out), sock) {
		t.Errorf("output %q does not say syslog at %s is missing", out, sock)
	}
}
