package exec

import (
	"slices"
	"strings"
	"testing"

	"github.com/imserious/imserious/config"
	"github.com/imserious/imserious/event"
	"github.com/imserious/imserious/privsep"
)

func TestBaseEnv(t *testing.T) {
	h := &config.Handler{
		Account: privsep.Account{Name: "alice", Home: "/home/alice", Shell: "/bin/ksh"},
	}
	want := []string{
		"HOME=/home/alice", "LOGNAME=alice", "PATH=" + config.CommandPath,
		"SHELL=/bin/ksh", "USER=alice",
	}
	if got := BaseEnv(h); !slices.Equal(got, want) {
		t.Errorf("BaseEnv = %q, want %q", got, want)
	}

	h.Env = map[string]string{"PATH": "/opt/bin", "DISPLAY": ":0", "HOME": "/srv/alice", "BAD=NAME": "x", "": "y"}
	want = []string{
		"DISPLAY=:0", "HOME=/srv/alice", "LOGNAME=alice", "PATH=/opt/bin",
		"SHELL=/bin/ksh", "USER=alice",
	}
	if got := BaseEnv(h); !slices.Equal(got, want) {
		t.Errorf("BaseEnv with env = %q, want %q", got, want)
	}

	h = &config.Handler{Account: privsep.Account{Name: "bob"}}
	got := strings.Join(BaseEnv(h), " ")
	if !strings.Contains(got, "HOME=/ ") || !strings.Contains(got, "SHELL=/bin/sh") {
		t.Errorf("BaseEnv for empty home and shell = %q, want HOME=/ and SHELL=/bin/sh", got)
	}
}

func TestJobEnvIMSEWins(t *testing.T) {
	h := &config.Handler{
		User:    "alice",
		Event:   "MessageNew",
		Account: privsep.Account{Name: "alice", Home: "/home/alice", Shell: "/bin/sh"},
		Env: map[string]string{
			"IMSE_SUBJECT": "static", "IMSE_FOLDER": "static", "IMSE_TRIGGER": "static",
			"IMSE_COUNT": "99", "KEEP": "yes",
		},
	}
	subject := "real"
	ev := event.Event{User: "alice", Event: "MessageNew", Subject: &subject}
	env := eventEnv(BaseEnv(h), &ev, 2, peer)
	m := envOf(Job{Env: env})
	for k, v := range map[string]string{
		"IMSE_SUBJECT": "real", "IMSE_TRIGGER": "event", "IMSE_COUNT": "2", "KEEP": "yes",
		"IMSE_REMOTE_IP": "127.0.0.1", "IMSE_REMOTE_PORT": "40000",
	} {
		if m[k] != v {
			t.Errorf("%s=%q, want %q", k, m[k], v)
		}
	}
	if v, ok := m["IMSE_FOLDER"]; ok {
		t.Errorf("IMSE_FOLDER=%q from the handler's env leaked into a run without a folder", v)
	}
	if !slices.IsSorted(env) {
		t.Errorf("env not sorted: %q", env)
	}
	seen := map[string]bool{}
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if seen[k] {
			t.Errorf("%s appears twice in %q", k, env)
		}
		seen[k] = true
	}

	m = envOf(Job{Env: periodicEnv(BaseEnv(h), h.User, h.Event)})
	if m["IMSE_TRIGGER"] != "periodic" || m["IMSE_USER"] != "alice" || m["KEEP"] != "yes" {
		t.Errorf("periodic env %v", m)
	}
	for _, k := range []string{"IMSE_COUNT", "IMSE_SUBJECT", "IMSE_FOLDER"} {
		if _, ok := m[k]; ok {
			t.Errorf("periodic env has %s", k)
		}
	}
}
