package prefix

import (
	"net/netip"
	"testing"
)

func TestContains(t *testing.T) {
	ps := Normalize([]netip.Prefix{
		netip.MustParsePrefix("fe80::/10"),
		netip.MustParsePrefix("::ffff:10.0.0.0/104"),
		netip.MustParsePrefix("192.168.1.7/24"),
	})
	for _, c := range []struct {
		addr string
		want bool
	}{
		{"fe80::1%eth0", true}, // a zone names the interface, not the host
		{"fe80::1", true},
		{"10.1.2.3", true}, // the mapped prefix is compared as IPv4
		{"::ffff:10.1.2.3", true},
		{"192.168.1.200", true}, // the prefix was masked
		{"192.168.2.1", false},
		{"2001:db8::1", false},
	} {
		if got := Contains(ps, netip.MustParseAddr(c.addr)); got != c.want {
			t.Errorf("Contains(%s) = %v, want %v", c.addr, got, c.want)
		}
	}
	if Contains(ps, netip.Addr{}) {
		t.Error("an invalid address matched")
	}
	if Normalize(nil) != nil {
		t.Error("Normalize(nil) is not nil")
	}
}
