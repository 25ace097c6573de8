// Package sdnotify tells a service manager how the daemon is doing, with
// the datagrams of systemd's sd_notify protocol (READY=1, RELOADING=1,
// STOPPING=1, STATUS=...), written by the daemon itself: no libsystemd.
//
// The manager names its socket in $NOTIFY_SOCKET, a path or, starting with
// "@", a Linux abstract name. Without the variable every call does nothing,
// so the daemon needs no flag to run under systemd or without it.
package sdnotify

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// EnvVar is the variable systemd sets for Type=notify services.
const EnvVar = "NOTIFY_SOCKET"

// Notifier sends states to the service manager. The nil *Notifier, which
// Open returns when there is none, accepts every call and sends nothing.
type Notifier struct {
	conn *net.UnixConn
}

// Open connects to the socket named in $NOTIFY_SOCKET and removes the
// variable from the environment, so nothing started later can pretend to be
// the daemon. It returns nil, nil when the variable is unset or empty.
func Open() (*Notifier, error) {
	name := os.Getenv(EnvVar)
	os.Unsetenv(EnvVar)
	if name == "" {
		return nil, nil
	}
	return Dial(name)
}

// Dial connects to the notification socket name: an absolute path, or an
// abstract name starting with "@".
func Dial(name string) (*Notifier, error) {
	if !strings.HasPrefix(name, "/") && !strings.HasPrefix(name, "@") {
		return nil, fmt.Errorf("%s=%q: neither an absolute path nor an abstract socket name", EnvVar, name)
	}
	// net maps a leading "@" to the abstract namespace on Linux.
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", EnvVar, err)
	}
	return &Notifier{conn: c}, nil
}

// Ready says the daemon serves: the socket is bound and every child ready.
func (n *Notifier) Ready(status string) error {
	return n.send("READY=1", status)
}

// Reloading says a reload has begun; Ready ends it. MONOTONIC_USEC is what
// Type=notify-reload asks for alongside RELOADING=1.
func (n *Notifier) Reloading() error {
	return n.send("RELOADING=1\nMONOTONIC_USEC="+strconv.FormatInt(monotonicUsec(), 10), "reloading")
}

// Stopping says the daemon is shutting down.
func (n *Notifier) Stopping() error {
	return n.send("STOPPING=1", "stopping")
}

// Status sets the one-line status systemctl status shows.
func (n *Notifier) Status(status string) error {
	return n.send("", status)
}

func (n *Notifier) send(state, status string) error {
	if n == nil {
		return nil
	}
	msg := state
	if status != "" {
		// One line: a newline would start another assignment.
		status = strings.Map(func(r rune) rune {
			if r < ' ' || r == 0x7f {
				return ' '
			}
			return r
		}, status)
		if msg != "" {
			msg += "\n"
		}
		msg += "STATUS=" + status
	}
	// A datagram socket does not block for long, but the manager may be
	// stuck: never let it stop the daemon.
	n.conn.SetWriteDeadline(time.Now().Add(time.Second))
	_, err := n.conn.Write([]byte(msg))
	if err != nil {
		return fmt.Errorf("%s: %w", EnvVar, err)
	}
	return nil
}

// Close closes the connection.
func (n *Notifier) Close() error {
	if n == nil {
		return nil
	}
	return n.conn.Close()
}
