package openstack

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/groups"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/rules"
)

// egressRule is one allow rule of the runners' security group: all
// protocols to a prefix, or one TCP port (a tmate server's). Security
// groups only allow, so the denylist is the complement: egress to
// everything but the denied prefixes.
type egressRule struct {
	etherType rules.RuleEtherType
	prefix    string // "" is everything of the ether type
	protocol  string // "" is every protocol
	port      int    // with protocol: the one port; 0 with none
}

// egressRules are the rules runners need: everything out (Neutron's own
// default for a new group), less the denylist. No ingress: the manager
// never connects to a runner, the runner connects out to GitHub.
func egressRules(denylist []netip.Prefix) []egressRule {
	var deny4, deny6 []netip.Prefix
	for _, p := range denylist {
		if p.Addr().Is4() {
			deny4 = append(deny4, p.Masked())
		} else {
			deny6 = append(deny6, p.Masked())
		}
	}
	var out []egressRule
	for _, family := range []struct {
		etherType rules.RuleEtherType
		all       netip.Prefix
		deny      []netip.Prefix
	}{
		{rules.EtherType4, netip.MustParsePrefix("0.0.0.0/0"), deny4},
		{rules.EtherType6, netip.MustParsePrefix("::/0"), deny6},
	} {
		if len(family.deny) == 0 {
			out = append(out, egressRule{etherType: family.etherType})
			continue
		}
		for _, p := range exclude([]netip.Prefix{family.all}, family.deny) {
			out = append(out, egressRule{etherType: family.etherType, prefix: p.String()})
		}
	}
	return out
}

// exclude returns the prefixes that cover allowed but none of denied.
func exclude(allowed, denied []netip.Prefix) []netip.Prefix {
	for _, d := range denied {
		var next []netip.Prefix
		for _, a := range allowed {
			next = append(next, excludeOne(a, d)...)
		}
		allowed = next
	}
	slices.SortFunc(allowed, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return allowed
}

// excludeOne splits a into the largest prefixes that do not overlap d.
func excludeOne(a, d netip.Prefix) []netip.Prefix {
	switch {
	case !a.Overlaps(d):
		return []netip.Prefix{a}
	case d.Bits() <= a.Bits(): // d covers a
		return nil
	}
	// a strictly contains d: keep the half without d, split the other.
	low := netip.PrefixFrom(a.Addr(), a.Bits()+1)
	high := netip.PrefixFrom(nthAddr(a, a.Bits()), a.Bits()+1)
	if low.Contains(d.Addr()) {
		return append([]netip.Prefix{high}, excludeOne(low, d)...)
	}
	return append([]netip.Prefix{low}, excludeOne(high, d)...)
}

// nthAddr returns a's address with bit number bit (from the left) set.
func nthAddr(a netip.Prefix, bit int) netip.Addr {
	b := a.Addr().AsSlice()
	b[bit/8] |= 0x80 >> (bit % 8)
	addr, _ := netip.AddrFromSlice(b)
	return addr
}

// ensureSecurityGroup finds or creates the runners' security group and
// makes its egress rules the wanted ones; it returns the group's ID. It
// leaves ingress rules alone: an operator may add one to debug a runner.
func (c *Cloud) ensureSecurityGroup(ctx context.Context) (string, error) {
	name := c.cfg.SecurityGroup
	found, err := c.api.SecurityGroupsNamed(ctx, name)
	if err != nil {
		return "", fmt.Errorf("cannot look up security group %q: %w", name, err)
	}
	var group *groups.SecGroup
	switch len(found) {
	case 0:
		group, err = c.api.CreateSecurityGroup(ctx, name, c.securityGroupDescription())
		if err != nil {
			return "", fmt.Errorf("cannot create security group %q: %w", name, err)
		}
		c.log.Info("security group created", "security-group", name, "id", group.ID)
	case 1:
		group = &found[0]
		if !c.ownsSecurityGroup(*group) {
			// Its rules are not ours to rewrite, nor its runners ours to
			// open to what the denylist keeps them from.
			return "", fmt.Errorf("cannot use security group %q: it is not this unit's (its description is %q); delete or rename it", name, group.Description)
		}
	default:
		// Neutron does not keep names unique; only this unit makes this
		// name, so more than one means someone else made one too.
		return "", fmt.Errorf("cannot use security group %q: %d groups have that name; delete the ones the charm did not make", name, len(found))
	}
	existing, err := c.api.SecurityGroupRules(ctx, group.ID)
	if err != nil {
		return "", fmt.Errorf("cannot list rules of security group %q: %w", name, err)
	}
	want := append(egressRules(c.denylist), tmateRules(c.denylist, c.tmateAddrs(ctx))...)
	have := map[egressRule]bool{}
	var stale []rules.SecGroupRule
	for _, r := range existing {
		if r.Direction != string(rules.DirEgress) {
			continue
		}
		rule := egressRule{etherType: rules.RuleEtherType(r.EtherType), prefix: r.RemoteIPPrefix, protocol: r.Protocol, port: r.PortRangeMin}
		if isAll(rule.prefix) {
			rule.prefix = ""
		}
		wanted := r.PortRangeMin == r.PortRangeMax && r.RemoteGroupID == "" &&
			slices.Contains(want, rule) && !have[rule]
		if wanted {
			have[rule] = true
		} else {
			stale = append(stale, r)
		}
	}
	// New rules first, stale ones after: running runners never lose
	// their way out while the denylist changes.
	var errs []error
	for _, rule := range want {
		if have[rule] {
			continue
		}
		opts := rules.CreateOpts{Direction: rules.DirEgress, EtherType: rule.etherType, SecGroupID: group.ID, RemoteIPPrefix: rule.prefix,
			Protocol: rules.RuleProtocol(rule.protocol), PortRangeMin: rule.port, PortRangeMax: rule.port}
		if err := c.api.CreateSecurityGroupRule(ctx, opts); err != nil {
			errs = append(errs, fmt.Errorf("cannot add egress rule to %s to security group %q: %w", orAll(rule), name, err))
			continue
		}
		c.log.Info("security group rule added", "security-group", name, "ethertype", rule.etherType, "remote-ip-prefix", rule.prefix, "protocol", rule.protocol, "port", rule.port)
	}
	if len(errs) == 0 {
		for _, r := range stale {
			if err := c.api.DeleteSecurityGroupRule(ctx, r.ID); err != nil && !errors.Is(err, errNotFound) {
				errs = append(errs, fmt.Errorf("cannot delete egress rule %s of security group %q: %w", r.ID, name, err))
				continue
			}
			c.log.Info("security group rule deleted", "security-group", name, "ethertype", r.EtherType, "remote-ip-prefix", r.RemoteIPPrefix)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return "", err
	}
	return group.ID, nil
}

func isAll(prefix string) bool { return prefix == "0.0.0.0/0" || prefix == "::/0" }

func orAll(r egressRule) string {
	switch {
	case r.prefix == "":
		return strings.ToLower(string(r.etherType)) + " everywhere"
	case r.protocol != "":
		return fmt.Sprintf("%s %s port %d", r.prefix, r.protocol, r.port)
	}
	return r.prefix
}
