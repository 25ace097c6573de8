package config

import (
	"net/netip"
	"reflect"
	"testing"
	"time"
)

// originalREADME is the configuration example of the original IMSErious's
// README (Freaky/IMSErious at 85c8186, "Add an optional IP limit to
// handlers", its latest), copied verbatim, comments and alignment
// included: the drop-in promise of spec §2 is that it loads as it is.
const originalREADME = `listen = "10.0.0.1:12525"  # listen address, default 127.0.0.1:12525
allow = [ "10.0.0.2/32" ]  # allowed notification IP ranges, default all
endpoint = "/notify"       # path to API endpoint, default /notify
max_connections = 8        # connection limit, default 8
timeout = "5s"             # request timeout, default 5s

# optional Basic auth
[auth]
user = "foo"
pass = "bar"

# optional TLS
[tls]
cert = "/etc/ssl/foo.example.com.crt"
key = "/etc/ssl/foo.example.com.key"
periodic_reload = "1d" # optionally reload keys periodically, no default

# optional stdout logging
[log]
max_level = "info"    # One of error, warn, info (default), debug, trace
                      # May be overridden by setting IMSERIOUS_LOG env var
format = "compact"    # One of full (default), compact, pretty, json
ansi = false          # Format "pretty" with ANSI codes, default false
timestamp = false     # Display a timestamp, default false
target = false        # Display the log target, default false
level = false         # Display the log level, default false

[[handler]]
ip = [ "10.0.0.2/32" ] # allowed handler IP ranges, default all
user = "freaky"        # Username, required
event = "MessageNew"   # Event type, optional, default MessageNew
                       # Note this is currently the only type supported by Dovecot's OX driver
delay = "5s"           # Delay execution this long after initial event, optional, default none
limit_period = "30s"   # Rate limit executions over this interval, optional, default 30s
limit_burst = 1        # Allow this many executions per interval, optional, default 1
periodic = "300s"      # Execute unconditionally after this long, optional, default none
command = "/usr/local/bin/fdm -a eda -l fetch"
`

// originalHandler is the README's handler as it loads.
func originalHandler() Handler {
	return Handler{
		Line:        28,
		Number:      1,
		IP:          []netip.Prefix{netip.MustParsePrefix("10.0.0.2/32")},
		User:        "freaky",
		Event:       "MessageNew",
		Delay:       5 * time.Second,
		LimitPeriod: 30 * time.Second,
		LimitBurst:  1,
		Periodic:    300 * time.Second,
		Command:     []string{"/usr/local/bin/fdm", "-a", "eda", "-l", "fetch"},
		// Not the original's, defaults of ours.
		CommandTimeout: DefaultCommandTimeout,
		RetryBackoff:   DefaultRetryBackoff,
		MinUID:         DefaultMinUID,
	}
}

// TestOriginalExamples parses the original's documented configurations
// with Parse and checks every field. Only Parse: Resolve would look for
// /etc/ssl/foo.example.com.crt and an account "freaky", which a test
// machine does not have, so these examples are not expected to pass it.
func TestOriginalExamples(t *testing.T) {
	readme := &Config{
		File:               testFile,
		Listen:             "10.0.0.1:12525",
		Allow:              []netip.Prefix{netip.MustParsePrefix("10.0.0.2/32")},
		Endpoint:           "/notify",
		MaxConnections:     8,
		MaxOpenConnections: DefaultMaxOpenConnections,
		MaxOpenPerIP:       DefaultMaxOpenPerIP,
		Timeout:            5 * time.Second,
		Auth:               &Auth{User: "foo", Pass: "bar"},
		TLS:                &TLS{Cert: "/etc/ssl/foo.example.com.crt", Key: "/etc/ssl/foo.example.com.key", PeriodicReload: 24 * time.Hour},
		Log: Log{MaxLevel: "info", Format: "compact", ANSI: false, Timestamp: false, Target: false, Level: false,
			Output: "stdout", Facility: "daemon", FacilityCode: 3, SyslogSocket: DefaultSyslogSocket},
		Privsep:  Privsep{User: DefaultPrivsepUser, Chroot: DefaultChroot, ExecIdle: DefaultExecIdle, MaxExec: DefaultMaxExec},
		Handlers: []Handler{originalHandler()},
	}

	type testCase struct {
		name, src string
		want      *Config
	}
	cases := []testCase{{"README", originalREADME, readme}}

	// The spec's duration spellings (§2), the original's humantime ones
	// among them, each in a handler key that takes a duration.
	for _, d := range []struct {
		key, val string
		want     time.Duration
	}{
		{"delay", "250ms", 250 * time.Millisecond},
		{"delay", "5s", 5 * time.Second},
		{"limit_period", "30m", 30 * time.Minute},
		{"limit_period", "1h 30m", 90 * time.Minute},
		{"periodic", "1d", 24 * time.Hour},
		{"periodic", "2w", 14 * 24 * time.Hour},
		{"delay", "30 sec", 30 * time.Second},
		{"command_timeout", "5 seconds", 5 * time.Second},
		{"periodic", "2 days", 48 * time.Hour},
	} {
		h := Handler{Line: 1, Number: 1, User: "freaky", Event: "MessageNew", Command: []string{"true"},
			LimitPeriod: DefaultLimitPeriod, LimitBurst: DefaultLimitBurst, CommandTimeout: DefaultCommandTimeout, RetryBackoff: DefaultRetryBackoff, MinUID: DefaultMinUID}
		field := map[string]*time.Duration{"delay": &h.Delay, "limit_period": &h.LimitPeriod,
			"periodic": &h.Periodic, "command_timeout": &h.CommandTimeout}
		*field[d.key] = d.want
		want := &Config{File: testFile, Listen: DefaultListen, Endpoint: DefaultEndpoint,
			MaxConnections: DefaultMaxConnections, MaxOpenConnections: DefaultMaxOpenConnections,
			MaxOpenPerIP: DefaultMaxOpenPerIP, Timeout: DefaultTimeout, Log: defaultLog(),
			Privsep: Privsep{User: DefaultPrivsepUser, Chroot: DefaultChroot, ExecIdle: DefaultExecIdle, MaxExec: DefaultMaxExec}, Handlers: []Handler{h}}
		src := "[[handler]]\nuser = \"freaky\"\ncommand = \"true\"\n" + d.key + " = \"" + d.val + "\"\n"
		cases = append(cases, testCase{d.key + " = " + d.val, src, want})
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse(testFile, []byte(tc.src))
			if err != nil {
				t.Fatalf("the original's example does not load:\n%v", err)
			}
			if w := c.Warnings(); len(w) != 0 {
				t.Errorf("Warnings() = %q, want none", w)
			}
			c.src, c.parseWarnings, c.warnings = nil, nil, nil
			if !reflect.DeepEqual(c, tc.want) {
				t.Errorf("got  %+v\nwant %+v", c, tc.want)
				for i := range min(len(c.Handlers), len(tc.want.Handlers)) {
					if !reflect.DeepEqual(c.Handlers[i], tc.want.Handlers[i]) {
						t.Errorf("handler[%d]:\n got %+v\nwant %+v", i+1, c.Handlers[i], tc.want.Handlers[i])
					}
				}
				if !reflect.DeepEqual(c.TLS, tc.want.TLS) {
					t.Errorf("tls: got %+v, want %+v", c.TLS, tc.want.TLS)
				}
			}
		})
	}
}
