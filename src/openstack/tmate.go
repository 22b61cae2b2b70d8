package openstack

import (
	"context"
	"net"
	"net/netip"
	"slices"

	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/rules"

	"github.com/canonical/github-runner-charm/src/config"
)

// tmateRules are the security group's rules that let runners reach the
// debug-ssh relation's tmate servers (their address and TCP port) even
// inside a denied prefix; servers outside the denylist are reached by
// the rules egressRules makes already.
func tmateRules(denylist []netip.Prefix, servers []netip.AddrPort) []egressRule {
	var out []egressRule
	for _, s := range servers {
		addr := s.Addr().Unmap()
		if !slices.ContainsFunc(denylist, func(p netip.Prefix) bool { return p.Masked().Contains(addr) }) {
			continue
		}
		etherType := rules.EtherType4
		if addr.Is6() {
			etherType = rules.EtherType6
		}
		rule := egressRule{etherType: etherType, prefix: netip.PrefixFrom(addr, addr.BitLen()).String(), protocol: string(rules.ProtocolTCP), port: int(s.Port())}
		if !slices.Contains(out, rule) {
			out = append(out, rule)
		}
	}
	return out
}

// tmateAddrs are the tmate servers' addresses and ports, host names
// resolved; one that does not resolve is left out with a warning.
func (c *Cloud) tmateAddrs(ctx context.Context) []netip.AddrPort {
	addrs, err := config.ResolveTmateServers(ctx, c.cfg.Runner.TmateServers, net.DefaultResolver)
	if err != nil {
		c.log.Warn("the security group makes no exception for a tmate server it cannot resolve", "error", err)
	}
	return addrs
}
