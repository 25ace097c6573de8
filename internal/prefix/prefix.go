// Package prefix is the one home of IP prefix matching: the allow list and
// the routes of the network process and the handlers' ip lists in the exec
// processes all compare peers with it, so that a peer is judged alike on
// both sides of the privilege boundary.
package prefix

import "net/netip"

// Normalize masks each prefix and rewrites IPv4-mapped IPv6 prefixes
// (::ffff:a.b.c.d/n, n >= 96) as IPv4, since peers are compared unmapped.
// It returns nil for an empty list.
func Normalize(ps []netip.Prefix) []netip.Prefix {
	if len(ps) == 0 {
		return nil
	}
	out := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		out = append(out, p.Masked())
	}
	return out
}

// Peer returns addr as prefixes are compared with it: IPv4-mapped IPv6 as
// IPv4, and without a zone (netip.Prefix.Contains is false for any address
// with a zone; the zone names the interface, not the host).
func Peer(addr netip.Addr) netip.Addr {
	return addr.Unmap().WithZone("")
}

// Contains reports whether any of ps (as Normalize returns them) contains
// addr, which is compared as Peer returns it. An invalid addr is in no
// prefix.
func Contains(ps []netip.Prefix, addr netip.Addr) bool {
	addr = Peer(addr)
	if !addr.IsValid() {
		return false
	}
	for _, p := range ps {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}
