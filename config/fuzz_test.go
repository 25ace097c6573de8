package config

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// FuzzParse: any input gives either a valid configuration or Errors that
// each say something; never a panic, never both, never neither.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.toml")
	for _, p := range files {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{
		"", h, locateSrc,
		"handler = [{ user = \"a\", command = [\"x\"] }]",
		"[[handler]]\nuser=\"u\"\ncommand=\"a 'b\"\nlimitperiod=\"1m\"\nlimit_period=\"2m\"",
		"listen = \"0.0.0.0:1\"\n[log]\nmaxlevel = 1\n[tls]\ncert=\"c\"",
		"allow = [\"::ffff:1.2.3.4/100\", \"fe80::1%x\"]\n[privsep]\nchroot=\"x\"",
		"[log]\noutput=\"syslog\"\nfacility=\"local0\"\nsyslog_socket=\"/dev/log\"\n[[handler]]\nuser=\"u\"\ncommand=\"x\"\npass_env=[\"DISPLAY\",\"imse_x\"]\nenv={DISPLAY=\"1\"}",
		"[[handler]]\nuser=\"a\"\nuser=\"b\"\n[log]\n[log]",
		"[privsep]\nexec_idle=\"1m\"\nmax_exec=2\n[[handler]]\nuser=\"*@x\"\nrun_as=\"%n\"\nmin_uid=5\ncommand=\"~/.h a\"",
		"[[handler]]\nuser=\"[a-\"\nrun_as=\"%q%\"\nperiodic=\"1h\"\nrun_at_start=true\ncommand=\"~/../x\"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.toml", data)
		if err != nil {
			var es Errors
			if c != nil || !errors.As(err, &es) || len(es) == 0 {
				t.Fatalf("bad failure: %v, %v", c, err)
			}
			for _, e := range es {
				if e.Msg == "" || e.File != "fuzz.toml" {
					t.Fatalf("bad error %#v", e)
				}
			}
			return
		}
		// What the rest of the daemon relies on.
		if c.Timeout <= 0 || c.MaxConnections < 1 || !strings.HasPrefix(c.Endpoint, "/") ||
			c.MaxOpenPerIP < 1 || c.MaxOpenPerIP > c.MaxOpenConnections ||
			!filepath.IsAbs(c.Privsep.Chroot) || c.Privsep.User == "" ||
			!slices.Contains(LogOutputs, c.Log.Output) || SyslogFacilities[c.Log.Facility] != c.Log.FacilityCode ||
			!filepath.IsAbs(c.Log.SyslogSocket) ||
			c.Privsep.ExecIdle <= 0 || c.Privsep.MaxExec < 1 || c.Privsep.MaxExec > MaxExecLimit {
			t.Fatalf("invalid config accepted: %+v", c)
		}
		for _, h := range c.Handlers {
			if h.User == "" || len(h.Command) == 0 || h.Command[0] == "" || h.LimitBurst < 1 ||
				h.LimitPeriod <= 0 || h.CommandTimeout <= 0 || h.Delay < 0 || h.Periodic < 0 || (h.Env != nil && len(h.Env) == 0) {
				t.Fatalf("invalid handler accepted: %+v", h)
			}
			// The wildcard rules every process relies on.
			if h.Pattern != IsUserPattern(h.User) || h.Pattern && !ValidUserPattern(h.User) ||
				h.Dynamic != (h.Pattern && HasRunAsVars(h.RunAs)) || h.MinUID < 1 ||
				h.Pattern && (h.Periodic != 0 || h.RunAtStart) {
				t.Fatalf("invalid wildcard handler accepted: %+v", h)
			}
			if HasRunAsVars(h.RunAs) {
				if name, err := ExpandRunAs(h.RunAs, "alice@example.org"); err != nil || !ValidAccountName(name) {
					t.Fatalf("invalid run_as accepted: %q", h.RunAs)
				}
			}
			if _, ok := HomeRelative(h.Command[0]); strings.HasPrefix(h.Command[0], HomeCommandPrefix) && !ok {
				t.Fatalf("invalid ~/ program accepted: %q", h.Command[0])
			}
			for k := range h.Env {
				if strings.HasPrefix(k, "IMSE_") || !validEnvName(k) {
					t.Fatalf("invalid env name accepted: %q", k)
				}
			}
			seen := map[string]bool{}
			for _, k := range h.PassEnv {
				_, inEnv := h.Env[k]
				if !validEnvName(k) || k == "PATH" || strings.HasPrefix(strings.ToUpper(k), "IMSE_") || seen[k] || inEnv {
					t.Fatalf("invalid pass_env accepted: %q in %q", k, h.PassEnv)
				}
				seen[k] = true
			}
		}
	})
}
