// Package daemon wires the processes of spec §5 together: the privileged
// parent, the network process and the per-account exec processes, and the
// messages they exchange over their socketpairs.
package daemon

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/imserious/imserious/config"
	"github.com/imserious/imserious/listener"
	"github.com/imserious/imserious/privsep"
)

// Message types. Each channel accepts only the types listed for it; any
// other type ends the channel (and so the process).
const (
	// parent -> net
	msgNetConfig   uint32 = 1 // netConfig, JSON
	msgListener    uint32 = 2 // no payload, one fd: the bound socket
	msgExecChannel uint32 = 3 // execChannel, JSON, one fd: socketpair end to an exec process
	// parent -> exec
	msgExecConfig uint32 = 4 // execConfig, JSON
	msgNetChannel uint32 = 5 // no payload, one fd: socketpair end to the net process
	// parent -> any child
	msgStart    uint32 = 6 // no payload: configuration complete, drop and serve
	msgShutdown uint32 = 7 // shutdownMsg, JSON
	// child -> parent
	msgReady uint32 = 8 // no payload: privileges dropped, serving
	// net -> exec
	msgEvent uint32 = 9 // "ip:port\n" then the notification body, decoded again by exec
	// parent -> net, before msgStart and whenever the files change
	msgTLSPair uint32 = 10 // tlsreload.EncodePair: certificate chain and key PEM, parsed again by net
)

// logOptions travel to the children so every process logs alike.
type logOptions struct {
	Level     int    `json:"level"`
	Format    string `json:"format"`
	ANSI      bool   `json:"ansi"`
	Timestamp bool   `json:"timestamp"`
	Target    bool   `json:"target"`
	ShowLevel bool   `json:"show_level"`
}

// dropTo says which account a child drops to and where it is confined.
// Nil when the daemon was not started as root.
type dropTo struct {
	Account privsep.Account `json:"account"`
	Chroot  string          `json:"chroot"`
}

type netConfig struct {
	Log            logOptions       `json:"log"`
	Drop           *dropTo          `json:"drop"`
	Allow          []netip.Prefix   `json:"allow"`
	Endpoint       string           `json:"endpoint"`
	MaxConnections int              `json:"max_connections"`
	Timeout        time.Duration    `json:"timeout"`
	Auth           *listener.Auth   `json:"auth"`
	Routes         []listener.Route `json:"routes"`
	Execs          []string         `json:"execs"` // account name per exec channel, by target index
	TLS            bool             `json:"tls"`   // serve HTTPS only, with the pairs msgTLSPair brings
}

type execChannel struct {
	Target int `json:"target"`
}

type execConfig struct {
	Log      logOptions       `json:"log"`
	Account  privsep.Account  `json:"account"`
	Drop     bool             `json:"drop"`
	Handlers []config.Handler `json:"handlers"`
}

type shutdownMsg struct {
	Grace time.Duration `json:"grace"`
}

// validate re-checks what a child received: the parent is trusted, but a
// malformed message must fail loudly instead of half-configuring a child.
func (c *netConfig) validate() error {
	if c.Endpoint == "" || c.Endpoint[0] != '/' {
		return fmt.Errorf("net config: bad endpoint %q", c.Endpoint)
	}
	if c.MaxConnections < 1 || c.Timeout <= 0 {
		return fmt.Errorf("net config: bad limits")
	}
	for _, r := range c.Routes {
		if r.Target < 0 || r.Target >= len(c.Execs) {
			return fmt.Errorf("net config: route target %d out of range", r.Target)
		}
	}
	if c.Drop != nil && c.Drop.Account.UID == 0 {
		return fmt.Errorf("net config: refusing to run the network process as uid 0")
	}
	return nil
}

func (c *execConfig) validate() error {
	if c.Drop && c.Account.UID == 0 {
		return fmt.Errorf("exec config: refusing to run commands as uid 0")
	}
	for i := range c.Handlers {
		h := &c.Handlers[i]
		if h.Account.Name != c.Account.Name {
			return fmt.Errorf("exec config: handler %d belongs to %q, not %q", i, h.Account.Name, c.Account.Name)
		}
		if len(h.Command) == 0 || h.Path == "" || h.Path[0] != '/' {
			return fmt.Errorf("exec config: handler %d has no resolved command", i)
		}
	}
	return nil
}

// encodeEvent frames a notification for an exec process: the peer, a
// newline, then the body exactly as received.
func encodeEvent(remote netip.AddrPort, body []byte) []byte {
	b := make([]byte, 0, 48+len(body))
	b = remote.AppendTo(b)
	b = append(b, '\n')
	return append(b, body...)
}

func decodeEvent(p []byte) (netip.AddrPort, []byte, error) {
	for i, c := range p {
		if c == '\n' {
			ap, err := netip.ParseAddrPort(string(p[:i]))
			if err != nil {
				return netip.AddrPort{}, nil, fmt.Errorf("event message: bad peer: %w", err)
			}
			return ap, p[i+1:], nil
		}
		if i > 64 {
			break
		}
	}
	return netip.AddrPort{}, nil, fmt.Errorf("event message: no peer")
}
