package lxd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/canonical/lxd/shared/api"

	"github.com/canonical/github-runner-charm/src/runner"
)

// denylistACL is the name of this unit's network ACL: of its prefix, so
// another model's unit of the same name has an ACL of its own.
func (c *Cloud) denylistACL() string { return c.cfg.Identity.Prefix() + "-denylist" }

// legacyDenylistACL is the ACL the previous version made, named
// "<app>-<unit>-denylist" in every model (see retireLegacyACL).
func (c *Cloud) legacyDenylistACL() string { return c.cfg.Identity.LegacyPrefix() + "-denylist" }

// Descriptions of the denylist ACL: the previous version's, which named no
// one, and the prefix of this version's, which is followed by its owner.
const (
	legacyACLDescription = "Managed by the github-runner charm: the runners' denylist"
	aclDescription       = "Managed by the github-runner charm: the denylist of runners of "
)

// runnerNetwork is the bridge runners and image builders attach to:
// Config.Network, or else the unit's own bridge (see ownBridge).
func (c *Cloud) runnerNetwork() string {
	if c.cfg.Network != "" {
		return c.cfg.Network
	}
	return c.ownBridge()
}

// runnerNIC is the NIC device of runners and image builders, on the
// runners' network. It takes the name of the default profile's NIC, so
// that it replaces that NIC instead of adding one on the shared network.
func (c *Cloud) runnerNIC() map[string]map[string]string {
	c.mu.Lock()
	name := c.profileNIC
	c.mu.Unlock()
	if name == "" {
		name = "eth0"
	}
	return map[string]map[string]string{name: {"type": "nic", "name": "eth0", "network": c.runnerNetwork()}}
}

// applyDenylist makes the runners' bridge reject traffic from instances to
// every CIDR of the denylist, with an LXD network ACL on the bridge (so it
// holds for every instance on it, the image builder too, and changes apply
// to running instances at once). The bridge is the unit's own unless
// Config.Network names one, so the ACL restricts no other unit's runners;
// on the shared network, where the previous version attached it, it stays
// until no runner of the unit is left there (see retireSharedACL). LXD
// lets DHCP and DNS to the bridge through whatever the ACL says, so
// runners keep their addresses and name resolution even when the bridge's
// own address is denied. Other traffic
// is allowed. An empty denylist removes the ACL. The ACL carries the
// unit's identity in its user.* config, and an ACL of its name that names
// another owner is never changed. The previous version's ACL goes once that
// changes nothing (see retireLegacyACL).
func (c *Cloud) applyDenylist(ctx context.Context) error {
	if err := c.connected(ctx); err != nil {
		return fmt.Errorf("cannot apply the denylist: %w", err)
	}
	network, shared := c.runnerNetwork(), c.sharedNetwork()
	// The previous version's ACL is on the shared network if there is one.
	legacyNetwork := network
	if shared != "" {
		legacyNetwork = shared
	}
	acl := c.denylistACL()
	if len(c.denylist) == 0 {
		existing, err := c.setup.networkACL(ctx, acl)
		switch {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			return fmt.Errorf("cannot remove the denylist: %w", err)
		case c.ownACL(*existing) != nil:
			c.log.Warn("leaving a network ACL of this unit's name alone: it is not this unit's", "acl", acl, "reason", c.ownACL(*existing).Error())
		default:
			if shared != "" {
				if err := c.setup.takeOffACL(ctx, shared, acl); err != nil && !errors.Is(err, ErrNotFound) {
					return fmt.Errorf("cannot remove the denylist: %w", err)
				}
			}
			if err := c.setup.detachACL(ctx, network, acl); err != nil {
				return fmt.Errorf("cannot remove the denylist: %w", err)
			}
		}
		c.retireLegacyACL(ctx, legacyNetwork)
		c.setSharedDone(true)
		return nil
	}
	// The debug-ssh relation's tmate servers stay reachable (see denylistRules).
	tmate := tmateAddrs(ctx, c.cfg.Runner.TmateServers, net.DefaultResolver, c.log)
	rules := denylistRules(c.cfg.Runner.Denylist, tmate)
	put := api.NetworkACLPut{
		Description: aclDescription + c.ownerWords(),
		Egress:      rules,
		Ingress:     []api.NetworkACLRule{},
		Config:      c.ownerConfig(),
	}
	if err := c.setup.ensureACL(ctx, acl, put, c.ownACL); err != nil {
		return fmt.Errorf("cannot apply the denylist: %w", err)
	}
	if err := c.setup.attachACL(ctx, network, acl); err != nil {
		return fmt.Errorf("cannot apply the denylist: %w", err)
	}
	c.log.Info("denylist applied", "network", network, "acl", acl, "cidrs", strings.Join(c.denylist, ","), "tmate-servers", len(tmate))
	if shared == "" {
		c.retireLegacyACL(ctx, network)
		c.setSharedDone(true)
		return nil
	}
	c.setSharedDone(c.retireSharedACL(ctx))
	return nil
}

// ownACL says why an ACL of the unit's name is not the unit's to change:
// its metadata names another owner, or it has none and the charm did not
// make it (an operator's ACL that happens to have the name). One with no
// metadata that the charm made under this name is the unit's: the name
// carries the model's tag.
func (c *Cloud) ownACL(acl api.NetworkACL) error {
	switch owner := ownerOf(acl.Config); {
	case owner == c.cfg.Identity.Owner():
		return nil
	case owner == runner.Owner{} && strings.HasPrefix(acl.Description, "Managed by the github-runner charm"):
		return nil
	case owner == runner.Owner{}:
		return fmt.Errorf("network ACL %q was not made by the charm (%q); rename or delete it", acl.Name, acl.Description)
	default:
		return fmt.Errorf("network ACL %q belongs to unit %s of model %s, not to this unit", acl.Name, owner.Unit, owner.Model)
	}
}

// retireLegacyACL removes the previous version's ACL from the runners'
// network and deletes it, but only once that changes no instance's
// reachability: its name is the same in every model, so it may be another
// model's unit's of the same name, still on the previous version, whose
// runners share the bridge. It goes when no network uses it, or when the
// runners' network is its only one and every CIDR it rejects is rejected
// there by this unit's own ACL too. Otherwise it stays, and a warning says
// how to remove it by hand; it only ever denies more. Failures are
// warnings: the unit's own denylist is in place either way.
func (c *Cloud) retireLegacyACL(ctx context.Context, network string) {
	name := c.legacyDenylistACL()
	acl, err := c.setup.networkACL(ctx, name)
	switch {
	case errors.Is(err, ErrNotFound):
		return
	case err != nil:
		c.log.Warn("cannot look up the previous version's denylist ACL", "acl", name, "error", err)
		return
	case ownerOf(acl.Config) != runner.Owner{} || acl.Description != legacyACLDescription:
		return // not what the previous version made: not ours to judge
	}
	if reason := c.legacyACLInUse(*acl, network); reason != "" {
		c.log.Warn("keeping the previous version's denylist ACL: it may be another model's unit's; once no unit of the previous version uses it, take it off the network's security.acls and delete it",
			"acl", name, "network", network, "reason", reason)
		return
	}
	if err := c.setup.detachACL(ctx, network, name); err != nil {
		c.log.Warn("cannot remove the previous version's denylist ACL", "acl", name, "error", err)
		return
	}
	c.log.Info("removed the previous version's denylist ACL", "acl", name, "network", network)
}

// legacyACLInUse says why removing acl could change what an instance may
// reach, or "" if it could not (see retireLegacyACL).
func (c *Cloud) legacyACLInUse(acl api.NetworkACL, network string) string {
	for _, user := range acl.UsedBy {
		if usedBy, _, _ := strings.Cut(user, "?"); usedBy != "/1.0/networks/"+network {
			return "it is used by " + usedBy
		}
	}
	if len(acl.UsedBy) == 0 {
		return ""
	}
	if len(acl.Ingress) > 0 {
		return "it has ingress rules"
	}
	for _, rule := range acl.Egress {
		if rule.State == "disabled" {
			continue
		}
		if rule.Action != "reject" && rule.Action != "drop" {
			return "it has a rule that does not reject"
		}
		for _, dest := range splitList(rule.Destination) {
			if !c.denies(dest) {
				return "it rejects " + dest + ", which this unit's denylist does not"
			}
		}
		if rule.Destination == "" {
			return "it rejects everything"
		}
	}
	return ""
}

// denies tells whether the unit's own ACL rejects all of dest, a CIDR or
// an address.
func (c *Cloud) denies(dest string) bool {
	p, err := netip.ParsePrefix(dest)
	if err != nil {
		addr, err := netip.ParseAddr(dest)
		if err != nil {
			return false // a range, or something else this unit never writes
		}
		p = netip.PrefixFrom(addr, addr.BitLen())
	}
	for _, d := range c.denylist {
		ours, err := netip.ParsePrefix(d)
		if err == nil && ours.Bits() <= p.Bits() && ours.Contains(p.Masked().Addr()) {
			return true
		}
	}
	return false
}

func (d *lxdDaemon) networkACL(ctx context.Context, name string) (*api.NetworkACL, error) {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	c := d.client(ctx)
	acl, err := call(ctx, func() (*api.NetworkACL, error) {
		acl, _, err := c.GetNetworkACL(name)
		return acl, err
	})
	if err != nil {
		return nil, fmt.Errorf("cannot read network ACL %q: %w", name, err)
	}
	return acl, nil
}

// ensureACL creates the ACL with put, or makes an existing one put, once
// mayChange accepts it.
func (d *lxdDaemon) ensureACL(ctx context.Context, name string, put api.NetworkACLPut, mayChange func(api.NetworkACL) error) error {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	c := d.client(ctx)
	_, err := call(ctx, func() (struct{}, error) {
		existing, etag, err := c.GetNetworkACL(name)
		if api.StatusErrorCheck(err, 404) {
			return struct{}{}, c.CreateNetworkACL(api.NetworkACLsPost{NetworkACLPost: api.NetworkACLPost{Name: name}, NetworkACLPut: put})
		}
		if err != nil {
			return struct{}{}, err
		}
		if err := mayChange(*existing); err != nil {
			return struct{}{}, err
		}
		return struct{}{}, c.UpdateNetworkACL(name, put, etag)
	})
	if err != nil {
		return fmt.Errorf("cannot write network ACL %q: %w", name, err)
	}
	return nil
}

// attachACL adds acl to the network's security.acls, and makes traffic no
// rule matches allowed: LXD rejects it by default once a bridge has ACLs.
func (d *lxdDaemon) attachACL(ctx context.Context, network, acl string) error {
	return d.updateNetwork(ctx, network, func(cfg map[string]string) bool {
		acls := splitList(cfg["security.acls"])
		changed := false
		if !slices.Contains(acls, acl) {
			cfg["security.acls"] = strings.Join(append(acls, acl), ",")
			changed = true
		}
		for _, key := range []string{"security.acls.default.egress.action", "security.acls.default.ingress.action"} {
			if cfg[key] == "" {
				cfg[key] = "allow"
				changed = true
			}
		}
		return changed
	})
}

// detachACL takes acl off the network and deletes it.
func (d *lxdDaemon) detachACL(ctx context.Context, network, acl string) error {
	if err := d.takeOffACL(ctx, network, acl); err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	return d.deleteACL(ctx, acl)
}

// takeOffACL removes acl from the network's security.acls, and the
// defaults attachACL set once no ACL is left.
func (d *lxdDaemon) takeOffACL(ctx context.Context, network, acl string) error {
	return d.updateNetwork(ctx, network, func(cfg map[string]string) bool {
		acls := splitList(cfg["security.acls"])
		if !slices.Contains(acls, acl) {
			return false
		}
		acls = slices.DeleteFunc(acls, func(a string) bool { return a == acl })
		if len(acls) == 0 {
			// The defaults were set with the ACL; without any ACL they
			// would mean nothing.
			delete(cfg, "security.acls")
			for _, key := range []string{"security.acls.default.egress.action", "security.acls.default.ingress.action"} {
				if cfg[key] == "allow" {
					delete(cfg, key)
				}
			}
		} else {
			cfg["security.acls"] = strings.Join(acls, ",")
		}
		return true
	})
}

// deleteACL deletes an ACL no network uses; one already gone is not an
// error.
func (d *lxdDaemon) deleteACL(ctx context.Context, acl string) error {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	c := d.client(ctx)
	_, err := call(ctx, func() (struct{}, error) { return struct{}{}, c.DeleteNetworkACL(acl) })
	if err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("cannot delete network ACL %q: %w", acl, err)
	}
	return nil
}

// updateNetwork changes a network's config with edit, if edit says so.
func (d *lxdDaemon) updateNetwork(ctx context.Context, name string, edit func(map[string]string) bool) error {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	c := d.client(ctx)
	_, err := call(ctx, func() (struct{}, error) {
		n, etag, err := c.GetNetwork(name)
		if err != nil {
			return struct{}{}, err
		}
		put := n.Writable()
		if put.Config == nil {
			put.Config = map[string]string{}
		}
		if !edit(put.Config) {
			return struct{}{}, nil
		}
		return struct{}{}, c.UpdateNetwork(name, put, etag)
	})
	if err != nil {
		return fmt.Errorf("cannot update network %q: %w", name, err)
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}
