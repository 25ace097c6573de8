// Package control is the protocol of imserious's control socket, between
// imseriousctl and the parent (spec §7). It is the operator's protocol, not
// the one between the daemon's own processes: a connection carries
// requests and their answers, each a frame of a 4-byte big-endian length
// and one JSON object, decoded strictly (unknown fields, trailing bytes and
// oversized frames are errors, and end the connection).
//
// The socket is the parent's, mode 0600, and the parent checks the peer's
// uid on every connection; nothing of the network process reaches it.
package control

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// Limits of the protocol.
const (
	// MaxRequest is the largest request frame: a verb and a user name.
	MaxRequest = 4 << 10
	// MaxResponse is the largest answer: a status of many handlers.
	MaxResponse = 64 << 20
	// ReadTimeout is how long the parent waits for a client's request.
	ReadTimeout = 5 * time.Second
)

// Verbs.
const (
	VerbStatus = "status"
	VerbReload = "reload"
	VerbRun    = "run"
)

// Request is what imseriousctl asks.
type Request struct {
	Verb  string `json:"verb"`
	User  string `json:"user,omitempty"`  // run
	Event string `json:"event,omitempty"` // run; "" for every event
}

// Response is the parent's answer. Error, when set, is why the request
// failed; Errors are the errors of a configuration a reload refused, one
// per line, each naming file, line and key.
type Response struct {
	OK     bool          `json:"ok"`
	Error  string        `json:"error,omitempty"`
	Errors []string      `json:"errors,omitempty"`
	Status *Status       `json:"status,omitempty"`
	Reload *ReloadResult `json:"reload,omitempty"`
	Run    *RunResult    `json:"run,omitempty"`
}

// Status is what status prints; its JSON is the documented schema of
// imseriousctl status -j.
type Status struct {
	Handlers  []HandlerStatus `json:"handlers"`
	Processes []Process       `json:"processes"`
}

// HandlerStatus is one handler (one line of status).
type HandlerStatus struct {
	Handler      int        `json:"handler"` // its number in the file, as in errors and logs
	Line         int        `json:"line"`
	User         string     `json:"user"`
	Event        string     `json:"event"`
	RunAs        string     `json:"run_as"`
	State        string     `json:"state"`         // idle, delayed, deferred, running, retrying
	Due          *time.Time `json:"due,omitempty"` // delayed, deferred, retrying
	Pending      int        `json:"pending"`
	PID          int        `json:"pid,omitempty"`   // running
	Since        *time.Time `json:"since,omitempty"` // running
	LastRun      *LastRun   `json:"last_run,omitempty"`
	NextPeriodic *time.Time `json:"next_periodic,omitempty"`
	Runs         int        `json:"runs"`
	Failures     int        `json:"failures"`
	// Unknown is set when the exec process of the handler's account did
	// not answer (stopped, restarting): only the configuration is known.
	Unknown bool `json:"unknown,omitempty"`
	// Pattern is set on the line of one active user of a wildcard
	// handler: the handler's user as written ("*@example.org"), User
	// being the user's own name and RunAs its account. The wildcard
	// handler's own line, before its users', has the pattern as User,
	// and Runs and Failures of all its users.
	Pattern string `json:"pattern,omitempty"`
}

// LastRun is how the handler's last run went.
type LastRun struct {
	Start      time.Time `json:"start"`
	DurationMS int64     `json:"duration_ms"`
	ExitStatus *int      `json:"exit_status,omitempty"` // nil when killed by a signal or not started
	Signal     string    `json:"signal,omitempty"`
	Trigger    string    `json:"trigger"`
}

// Process is one of the daemon's processes.
type Process struct {
	Role     string `json:"role"`              // parent, net, exec
	Account  string `json:"account,omitempty"` // exec: the run_as account
	PID      int    `json:"pid"`
	UptimeS  int64  `json:"uptime_s"`
	Restarts int    `json:"restarts"`
}

// ReloadResult counts what a reload changed, in handlers.
type ReloadResult struct {
	Added     int `json:"added"`
	Changed   int `json:"changed"`
	Removed   int `json:"removed"`
	Unchanged int `json:"unchanged"`
}

// RunResult says how many handlers a run request started.
type RunResult struct {
	Handlers int `json:"handlers"`
}

// ErrFrame is wrapped by every framing or decoding error.
var ErrFrame = errors.New("control: malformed frame")

// WriteFrame writes v as one frame.
func WriteFrame(w io.Writer, v any, max int) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if len(b) > max {
		return fmt.Errorf("control: frame of %d bytes is over %d", len(b), max)
	}
	buf := make([]byte, 4+len(b))
	binary.BigEndian.PutUint32(buf, uint32(len(b)))
	copy(buf[4:], b)
	_, err = w.Write(buf)
	return err
}

// ReadFrame reads one frame of at most max bytes into v, strictly: one
// JSON object of v's fields, nothing after it.
func ReadFrame(r io.Reader, v any, max int) error {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("%w: truncated length", ErrFrame)
		}
		return err // io.EOF: the peer is done
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || int64(n) > int64(max) {
		return fmt.Errorf("%w: length %d (at most %d)", ErrFrame, n, max)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return fmt.Errorf("%w: truncated body: %w", ErrFrame, err)
	}
	if b[0] != '{' {
		return fmt.Errorf("%w: not a JSON object", ErrFrame)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %w", ErrFrame, err)
	}
	if err := dec.Decode(new(json.RawMessage)); err != io.EOF {
		return fmt.Errorf("%w: data after the object", ErrFrame)
	}
	return nil
}

// Validate checks a decoded request.
func (r *Request) Validate() error {
	switch r.Verb {
	case VerbStatus, VerbReload:
		if r.User != "" || r.Event != "" {
			return fmt.Errorf("%s takes no user or event", r.Verb)
		}
	case VerbRun:
		if r.User == "" {
			return errors.New("run needs a user")
		}
	case "":
		return errors.New("no verb")
	default:
		return fmt.Errorf("unknown verb %q", r.Verb)
	}
	return nil
}
