package lxd

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/canonical/lxd/shared/api"

	"github.com/canonical/github-runner-charm/src/config"
)

// tmateAddrs are the tmate servers' addresses and ports, host names
// resolved; one that does not resolve is left out with a warning.
func tmateAddrs(ctx context.Context, servers []config.TmateServer, resolver *net.Resolver, log *slog.Logger) []netip.AddrPort {
	addrs, err := config.ResolveTmateServers(ctx, servers, resolver)
	if err != nil {
		log.Warn("the denylist makes no exception for a tmate server it cannot resolve", "error", err)
	}
	return addrs
}

// denylistRules are the denylist ACL's egress rules: reject every denied
// prefix, except that runners reach the tmate servers (their address and
// port, TCP) even inside a denied prefix. LXD orders an ACL's rules by
// action (drop, reject, allow), so an allow rule could not open a hole in
// a reject; instead the denied prefixes are split around each server
// address inside them, and each such address gets rejects of its own for
// every TCP port but the servers', for UDP and for ICMP. (Other IP
// protocols to such an address are not rejected: LXD's rules name only
// these.) Servers outside the denylist need no rule.
func denylistRules(denylist []netip.Prefix, servers []netip.AddrPort) []api.NetworkACLRule {
	ports := map[netip.Addr][]int{}
	var holes []netip.Prefix
	for _, s := range servers {
		addr := s.Addr().Unmap()
		if !slices.ContainsFunc(denylist, func(p netip.Prefix) bool { return p.Contains(addr) }) {
			continue
		}
		if _, ok := ports[addr]; !ok {
			holes = append(holes, netip.PrefixFrom(addr, addr.BitLen()))
		}
		ports[addr] = append(ports[addr], int(s.Port()))
	}
	denied := make([]netip.Prefix, len(denylist))
	for i, p := range denylist {
		denied[i] = p.Masked()
	}
	var rules []api.NetworkACLRule
	rest := excludePrefixes(denied, holes)
	slices.SortFunc(rest, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	if len(rest) > 0 {
		rules = append(rules, api.NetworkACLRule{
			Action:      "reject", // not drop: a denied connection fails at once instead of hanging
			Destination: joinPrefixes(rest),
			State:       "enabled",
			Description: "github-runner denylist",
		})
	}
	slices.SortFunc(holes, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	for _, hole := range holes {
		addr := hole.Addr()
		desc := "github-runner denylist, but for the tmate server on " + hole.String()
		if others := otherPorts(ports[addr]); others != "" {
			rules = append(rules, api.NetworkACLRule{Action: "reject", Destination: hole.String(), Protocol: "tcp", DestinationPort: others, State: "enabled", Description: desc})
		}
		icmp := "icmp4"
		if addr.Is6() {
			icmp = "icmp6"
		}
		rules = append(rules,
			api.NetworkACLRule{Action: "reject", Destination: hole.String(), Protocol: "udp", State: "enabled", Description: desc},
			api.NetworkACLRule{Action: "reject", Destination: hole.String(), Protocol: icmp, State: "enabled", Description: desc})
	}
	return rules
}

// otherPorts is every TCP port but ports, as LXD's destination_port
// ranges ("1-10021,10023-65535"); "" when none is left.
func otherPorts(ports []int) string {
	slices.Sort(ports)
	ports = slices.Compact(ports)
	var ranges []string
	from := 1
	for _, p := range append(ports, 65536) {
		switch {
		case p == from+1:
			ranges = append(ranges, strconv.Itoa(from))
		case p > from+1:
			ranges = append(ranges, fmt.Sprintf("%d-%d", from, p-1))
		}
		from = p + 1
	}
	return strings.Join(ranges, ",")
}

// excludePrefixes is what of prefixes is outside every hole, in the
// largest prefixes that cover it.
func excludePrefixes(prefixes, holes []netip.Prefix) []netip.Prefix {
	for _, h := range holes {
		var next []netip.Prefix
		for _, p := range prefixes {
			next = append(next, splitAround(p, h)...)
		}
		prefixes = next
	}
	return prefixes
}

// splitAround splits p into the largest prefixes that do not overlap h.
func splitAround(p, h netip.Prefix) []netip.Prefix {
	switch {
	case !p.Overlaps(h):
		return []netip.Prefix{p}
	case h.Bits() <= p.Bits(): // h covers p
		return nil
	}
	low := netip.PrefixFrom(p.Addr(), p.Bits()+1)
	b := p.Addr().AsSlice()
	b[p.Bits()/8] |= 0x80 >> (p.Bits() % 8)
	highAddr, _ := netip.AddrFromSlice(b)
	high := netip.PrefixFrom(highAddr, p.Bits()+1)
	if low.Contains(h.Addr()) {
		return append([]netip.Prefix{high}, splitAround(low, h)...)
	}
	return append([]netip.Prefix{low}, splitAround(high, h)...)
}

func joinPrefixes(prefixes []netip.Prefix) string {
	texts := make([]string, len(prefixes))
	for i, p := range prefixes {
		texts[i] = p.String()
	}
	return strings.Join(texts, ",")
}
