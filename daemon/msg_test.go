package daemon

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/imserious/imserious/listener"
)

func TestEventMessageRoundTrip(t *testing.T) {
	for _, ap := range []string{"127.0.0.1:12525", "[::1]:1", "[2001:db8::7]:65535"} {
		remote := netip.MustParseAddrPort(ap)
		body := []byte(`{"user":"alice","event":"MessageNew"}` + "\n" + `trailing`)
		got, gotBody, err := decodeEvent(encodeEvent(remote, body))
		if err != nil || got != remote || !bytes.Equal(gotBody, body) {
			t.Errorf("%s: got %v %q %v", ap, got, gotBody, err)
		}
	}
}

func TestEventMessageRejects(t *testing.T) {
	for _, p := range []string{
		"",
		"no newline at all",
		"\n{}",
		"127.0.0.1\n{}",       // no port
		"localhost:80\n{}",    // a name, not an address
		"127.0.0.1:99999\n{}", // port out of range
		string(bytes.Repeat([]byte("1"), 100)) + "\n{}",
	} {
		if _, _, err := decodeEvent([]byte(p)); err == nil {
			t.Errorf("%q accepted", p)
		}
	}
}

func FuzzDecodeEvent(f *testing.F) {
	f.Add([]byte("127.0.0.1:1\n{}"))
	f.Add([]byte("[::1]:2\n"))
	f.Fuzz(func(t *testing.T, p []byte) {
		remote, body, err := decodeEvent(p)
		if err != nil {
			return
		}
		// Whatever is accepted re-encodes to the same bytes.
		if again := encodeEvent(remote, body); !bytes.Equal(again, p) {
			t.Fatalf("%q re-encodes as %q", p, again)
		}
	})
}

func TestConfigValidation(t *testing.T) {
	good := netConfig{Endpoint: "/notify", MaxConnections: 1, Timeout: 1, Execs: []string{"a"}}
	if err := good.validate(); err != nil {
		t.Fatal(err)
	}
	bad := []func(c *netConfig){
		func(c *netConfig) { c.Endpoint = "notify" },
		func(c *netConfig) { c.MaxConnections = 0 },
		func(c *netConfig) { c.Timeout = 0 },
		func(c *netConfig) { c.Routes = append(c.Routes, routeTo(1)) },
		func(c *netConfig) { c.Routes = append(c.Routes, routeTo(-1)) },
		func(c *netConfig) { c.Drop = &dropTo{} }, // uid 0
	}
	for i, mod := range bad {
		c := good
		mod(&c)
		if err := c.validate(); err == nil {
			t.Errorf("case %d accepted", i)
		}
	}
}

func routeTo(target int) listener.Route {
	return listener.Route{User: "a", Event: "MessageNew", Target: target}
}
