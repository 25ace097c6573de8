package sandbox

import (
	"strings"
	"testing"
)

func TestCheckExec(t *testing.T) {
	for _, tc := range []struct {
		name     string
		commands []string
		home     string
		want     string
	}{
		{"absolute", []string{"/bin/true", "/usr/sbin/sendmail"}, "/home/alice", ""},
		{"no home", []string{"/bin/true"}, "", ""},
		{"no commands", nil, "/home/alice", ""},
		{"relative command", []string{"bin/true"}, "/", `command "bin/true"`},
		{"empty command", []string{""}, "/", `command ""`},
		{"relative home", []string{"/bin/true"}, "home/alice", `home "home/alice"`},
		{"unclean home", []string{"/bin/true"}, "/home/alice/", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkExec(tc.commands, tc.home)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("checkExec: %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("checkExec: %v, want an error naming %s", err, tc.want)
			}
		})
	}
}
