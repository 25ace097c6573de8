package logging

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
)

// TestEffectiveLevelNote: directives for other targets are ignored with a
// note saying which and what level is used instead; what does not parse
// stays an error.
func TestEffectiveLevelNote(t *testing.T) {
	tests := []struct {
		name       string
		configured string
		debug      bool
		env        map[string]string
		want       slog.Level
		note       string
		err        string // substring; "" means success
	}{
		{"only others", "info", false, map[string]string{"IMSERIOUS_LOG": "hyper=debug"}, slog.LevelInfo,
			`IMSERIOUS_LOG: directives for other targets ignored (hyper=debug); using max_level "info"`, ""},
		{"only others, configured", "WARN", false, map[string]string{"IMSERIOUS_LOG": "hyper=debug,tower_http=trace"}, slog.LevelWarn,
			`IMSERIOUS_LOG: directives for other targets ignored (hyper=debug,tower_http=trace); using max_level "warn"`, ""},
		{"only others, default", "", false, map[string]string{"IMSERIOUS_LOG": "hyper=debug"}, slog.LevelInfo,
			`IMSERIOUS_LOG: directives for other targets ignored (hyper=debug); using max_level "info" (the default)`, ""},
		{"only others, -d", "info", true, map[string]string{"IMSERIOUS_LOG": "hyper=debug"}, slog.LevelDebug,
			`IMSERIOUS_LOG: directives for other targets ignored (hyper=debug); using -d (debug)`, ""},
		{"only others, -d with trace", "trace", true, map[string]string{"IMSERIOUS_LOG": "hyper"}, LevelTrace,
			`IMSERIOUS_LOG: directives for other targets ignored (hyper); using max_level "trace"`, ""},
		{"only others, alias", "info", false, map[string]string{"IMSERIOUSLOG": "h2=info"}, slog.LevelInfo,
			`IMSERIOUSLOG: directives for other targets ignored (h2=info); using max_level "info"`, ""},
		{"canonical read, alias not", "info", false, map[string]string{"IMSERIOUS_LOG": "hyper=debug", "IMSERIOUSLOG": "trace"}, slog.LevelInfo,
			`IMSERIOUS_LOG: directives for other targets ignored (hyper=debug); using max_level "info"`, ""},
		{"span without target", "info", false, map[string]string{"IMSERIOUS_LOG": "[request]=debug"}, slog.LevelInfo,
			`IMSERIOUS_LOG: directives for other targets ignored ([request]=debug); using max_level "info"`, ""},
		{"mix", "info", false, map[string]string{"IMSERIOUS_LOG": "hyper=trace,error"}, slog.LevelError,
			`IMSERIOUS_LOG: directives for other targets ignored (hyper=trace)`, ""},
		{"mix with ours", "", false, map[string]string{"IMSERIOUS_LOG": "imserious=debug, hyper=trace"}, slog.LevelDebug,
			`IMSERIOUS_LOG: directives for other targets ignored (hyper=trace)`, ""},
		{"nothing ignored", "", false, map[string]string{"IMSERIOUS_LOG": "warn,imserious::handler=trace"}, LevelTrace, "", ""},
		{"no variable", "warn", true, nil, slog.LevelDebug, "", ""},

		{"typo", "", false, map[string]string{"IMSERIOUS_LOG": "debgu"}, 0, "", `unknown log level "debgu" (did you mean "debug"?)`},
		{"typo warning", "", false, map[string]string{"IMSERIOUS_LOG": "warning"}, 0, "", `(did you mean "warn"?)`},
		{"typo information", "", false, map[string]string{"IMSERIOUS_LOG": "hyper=info,information"}, 0, "", `(did you mean "info"?)`},
		{"typo of", "", false, map[string]string{"IMSERIOUS_LOG": "of"}, 0, "", `(did you mean "off"?)`},
		{"bad level for us", "", false, map[string]string{"IMSERIOUS_LOG": "imserious=loud"}, 0, "", `unknown log level "loud"`},
		{"bad level for others", "", false, map[string]string{"IMSERIOUS_LOG": "hyper=loud"}, 0, "", `unknown log level "loud"`},
		{"not a target", "", false, map[string]string{"IMSERIOUS_LOG": "x=1=2"}, 0, "", `"x=1=2" is not a directive (want a level, or TARGET=LEVEL)`},
		{"not a target either", "", false, map[string]string{"IMSERIOUSLOG": "a b=debug"}, 0, "", `IMSERIOUSLOG="a b=debug": unknown log level: "a b=debug" is not a directive`},
		{"bad config", "loud", false, map[string]string{"IMSERIOUS_LOG": "hyper=debug"}, 0, "", "max_level"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, note, err := EffectiveLevelNote(tt.configured, tt.debug, func(k string) string { return tt.env[k] })
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || !errors.Is(err, ErrLevel) || note != "" {
					t.Errorf("got %v, %q, %v; want an error mentioning %q wrapping ErrLevel", got, note, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want || note != tt.note {
				t.Errorf("got %v, %q, %v\nwant %v, %q", got, note, err, tt.want, tt.note)
			}
			// EffectiveLevel is the same decision without the note.
			if l, err := EffectiveLevel(tt.configured, tt.debug, func(k string) string { return tt.env[k] }); err != nil || l != got {
				t.Errorf("EffectiveLevel = %v, %v; want %v", l, err, got)
			}
		})
	}
}

// TestNearLevelSparesTargets: names of crates the original's directives
// named are targets, not typos of a level.
func TestNearLevelSparesTargets(t *testing.T) {
	for _, target := range []string{"hyper", "h2", "tower", "tower_http", "tokio", "mio", "rustls", "tracing", "axum", "imserious"} {
		if near := nearLevel(target); near != "" {
			t.Errorf("nearLevel(%q) = %q, want none", target, near)
		}
	}
}
