package lxd

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"

	"github.com/canonical/lxd/shared/api"
)

// The unit's bridge. LXD 5.0 attaches network ACLs to networks only, not to
// an instance's NIC on a bridge, so a denylist on a bridge several units
// share would restrict the other units' runners too. Unless Config.Network
// names the runners' network, each unit's runners and image builders attach
// to a managed bridge of the unit's own, which carries the unit's denylist
// ACL alone. It is created before the first runner (see ready), carries the
// unit's identity in its user.* config, and goes with Teardown; a network of
// its name that is another's is never changed or deleted.

// bridgeDescription is the unit's bridge's description, followed by its
// owner.
const bridgeDescription = "Managed by the github-runner charm: the bridge of runners of "

// bridgeName is the unit's bridge for a prefix: "ghr" and 8 hex digits of
// the prefix's SHA-256, within Linux's 15 characters for an interface.
func bridgeName(prefix string) string {
	sum := sha256.Sum256([]byte(prefix))
	return "ghr" + hex.EncodeToString(sum[:4])
}

// ownBridge is the unit's bridge, or "" when Config.Network names the
// runners' network.
func (c *Cloud) ownBridge() string {
	if c.cfg.Network != "" {
		return ""
	}
	return bridgeName(c.cfg.Identity.Prefix())
}

// sharedNetwork is the default profile's NIC network, where the previous
// versions put runners and the unit's denylist, when the runners now have
// the unit's bridge; "" otherwise.
func (c *Cloud) sharedNetwork() string {
	own := c.ownBridge()
	if own == "" {
		return ""
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.profileNetwork == own {
		return ""
	}
	return c.profileNetwork
}

// ensureOwnBridge creates the unit's bridge unless it exists: NATed IPv4
// on a free /24 (LXD's ipv4.address=auto fails on some hosts, see
// initialise), no IPv6. The search for a free /24 starts at a candidate of
// the unit's prefix, so units that start together rarely pick one subnet.
// One of its name that is not the unit's is refused.
func (c *Cloud) ensureOwnBridge(ctx context.Context) error {
	name := c.ownBridge()
	if name == "" {
		return nil
	}
	sum := sha256.Sum256([]byte(c.cfg.Identity.Prefix()))
	put := api.NetworkPut{Description: bridgeDescription + c.ownerWords(), Config: c.ownerConfig()}
	cidr, err := c.setup.ensureBridge(ctx, name, "", binary.BigEndian.Uint32(sum[4:8]), put, c.ownNetwork)
	if err != nil {
		return fmt.Errorf("cannot make the unit's bridge: %w", err)
	}
	c.log.Debug("the unit's bridge is there", "network", name, "address", cidr)
	return nil
}

// ownNetwork says why a network of the unit's bridge's name is not the
// unit's: its metadata names another owner, or none.
func (c *Cloud) ownNetwork(n api.Network) error {
	switch owner := ownerOf(n.Config); {
	case owner == c.cfg.Identity.Owner():
		return nil
	case owner.Unit == "":
		return fmt.Errorf("network %q was not made by the charm for this unit (it has no owner); rename or delete it", n.Name)
	default:
		return fmt.Errorf("network %q belongs to unit %s of model %s, not to this unit", n.Name, owner.Unit, owner.Model)
	}
}

// onNetwork tells whether an instance has a NIC on network.
func onNetwork(inst api.Instance, network string) bool {
	devices := inst.ExpandedDevices
	if devices == nil {
		devices = inst.Devices
	}
	for _, dev := range devices {
		if dev["type"] == "nic" && (dev["network"] == network || dev["network"] == "" && dev["parent"] == network) {
			return true
		}
	}
	return false
}

// retireSharedACL takes the unit's denylist ACL off the shared network,
// where the previous version attached it, once no instance of the unit
// (runner of either naming, or image builder) is left there: until then
// the unit's runners of before the upgrade keep running, and keep their
// denylist, until they are replaced. The previous version's own ACL is
// judged first, while the unit's ACL still covers the shared network (see
// retireLegacyACL); when the unit's ACL is not there, it is judged against
// the unit's bridge (and so goes only if no network uses it). It tells
// whether nothing is left to do; a failure is a warning, and the next
// cycle tries again.
func (c *Cloud) retireSharedACL(ctx context.Context) (done bool) {
	shared, acl := c.sharedNetwork(), c.denylistACL()
	if shared == "" {
		return true
	}
	n, err := c.setup.network(ctx, shared)
	switch {
	case err != nil && !errors.Is(err, ErrNotFound):
		c.log.Warn("cannot read the shared network to take the unit's denylist off it", "network", shared, "error", err)
		return false
	case err != nil || !slices.Contains(splitList(n.Config["security.acls"]), acl):
		c.retireLegacyACL(ctx, c.runnerNetwork())
		return true
	}
	instances, err := c.d.Instances(ctx)
	if err != nil {
		c.log.Warn("cannot list instances to take the unit's denylist off the shared network", "network", shared, "error", err)
		return false
	}
	for _, inst := range instances {
		if (c.cfg.Identity.OwnsInstance(inst.Name, ownerOf(inst.Config)) || c.isOwnBuilder(inst)) && onNetwork(inst, shared) {
			c.log.Debug("keeping the unit's denylist on the shared network: a runner of the unit is still on it", "network", shared, "instance", inst.Name)
			return false
		}
	}
	c.retireLegacyACL(ctx, shared)
	if err := c.setup.takeOffACL(ctx, shared, acl); err != nil {
		c.log.Warn("cannot take the unit's denylist off the shared network", "network", shared, "acl", acl, "error", err)
		return false
	}
	c.log.Info("took the unit's denylist off the shared network: no runner of the unit is left on it", "network", shared, "acl", acl)
	return true
}

func (c *Cloud) setSharedDone(done bool) {
	c.mu.Lock()
	c.sharedDone = done
	c.mu.Unlock()
}

// maybeRetireSharedACL runs retireSharedACL until it is done (see Prepare).
func (c *Cloud) maybeRetireSharedACL(ctx context.Context) {
	c.mu.Lock()
	done := c.sharedDone
	c.mu.Unlock()
	if !done {
		c.setSharedDone(c.retireSharedACL(ctx))
	}
}

// deleteOwnBridge deletes the unit's bridge; one that is gone already or
// is not the unit's is not an error (the latter stays).
func (c *Cloud) deleteOwnBridge(ctx context.Context) error {
	name := c.ownBridge()
	if name == "" {
		return nil
	}
	n, err := c.setup.network(ctx, name)
	switch {
	case errors.Is(err, ErrNotFound):
		return nil
	case err != nil:
		return err
	case c.ownNetwork(*n) != nil:
		c.log.Warn("leaving a network of the unit's bridge's name alone: it is not this unit's", "network", name, "reason", c.ownNetwork(*n).Error())
		return nil
	}
	if err := c.setup.deleteNetwork(ctx, name); err != nil {
		return err
	}
	c.log.Info("deleted the unit's bridge", "network", name)
	return nil
}

func (d *lxdDaemon) network(ctx context.Context, name string) (*api.Network, error) {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	c := d.client(ctx)
	n, err := call(ctx, func() (*api.Network, error) {
		n, _, err := c.GetNetwork(name)
		return n, err
	})
	if err != nil {
		return nil, fmt.Errorf("cannot read network %q: %w", name, err)
	}
	return n, nil
}

func (d *lxdDaemon) deleteNetwork(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	c := d.client(ctx)
	_, err := call(ctx, func() (struct{}, error) { return struct{}{}, c.DeleteNetwork(name) })
	if err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("cannot delete network %q: %w", name, err)
	}
	return nil
}
