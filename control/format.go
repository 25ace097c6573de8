package control

import (
	"fmt"
	"strings"
	"time"
)

// Lines is the status as text, one line per handler then one per process,
// as imseriousctl status prints it and the daemon logs it on SIGINFO
// (SIGUSR1 on Linux). Times are RFC 3339, in now's location.
func (s *Status) Lines(now time.Time) []string {
	loc := now.Location()
	ts := func(t time.Time) string { return t.In(loc).Format(time.RFC3339) }
	var out []string
	for _, h := range s.Handlers {
		var b strings.Builder
		fmt.Fprintf(&b, "handler[%d] user %s event %s run_as %s: ", h.Handler, h.User, h.Event, h.RunAs)
		switch h.State {
		case "delayed":
			b.WriteString("delayed")
			if h.Due != nil {
				b.WriteString(" until " + ts(*h.Due))
			}
		case "deferred":
			b.WriteString("deferred by the limit")
			if h.Due != nil {
				b.WriteString(" until " + ts(*h.Due))
			}
		case "running":
			b.WriteString("running")
			if h.Since != nil {
				b.WriteString(" since " + ts(*h.Since))
			}
			if h.PID > 0 {
				fmt.Fprintf(&b, " pid %d", h.PID)
			}
		case "retrying":
			b.WriteString("retrying")
			if h.Due != nil {
				b.WriteString(" at " + ts(*h.Due))
			}
		case "unknown":
			b.WriteString("unknown (its exec process did not answer)")
		default:
			b.WriteString(h.State)
		}
		fmt.Fprintf(&b, ", %d pending", h.Pending)
		if r := h.LastRun; r != nil {
			fmt.Fprintf(&b, ", last run %s for %s", ts(r.Start), time.Duration(r.DurationMS)*time.Millisecond)
			switch {
			case r.Signal != "":
				b.WriteString(", killed by " + r.Signal)
			case r.ExitStatus != nil:
				fmt.Fprintf(&b, ", exit %d", *r.ExitStatus)
			default:
				b.WriteString(", not started")
			}
			b.WriteString(" (" + r.Trigger + ")")
		} else if !h.Unknown {
			b.WriteString(", never run")
		}
		if h.NextPeriodic != nil {
			b.WriteString(", next periodic " + ts(*h.NextPeriodic))
		}
		fmt.Fprintf(&b, ", %d runs, %d failures", h.Runs, h.Failures)
		out = append(out, b.String())
	}
	for _, p := range s.Processes {
		name := p.Role
		if p.Role == "exec" {
			name = "exec[" + p.Account + "]"
		}
		if p.PID == 0 {
			out = append(out, fmt.Sprintf("process %s: not running, %d restarts", name, p.Restarts))
			continue
		}
		out = append(out, fmt.Sprintf("process %s: pid %d, up %s, %d restarts", name, p.PID,
			time.Duration(p.UptimeS)*time.Second, p.Restarts))
	}
	return out
}
