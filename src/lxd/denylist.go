package lxd

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/canonical/lxd/shared/api"
)

// denylistACL is the name of this unit's network ACL.
func (c *Cloud) denylistACL() string { return c.cfg.Identity.Prefix() + "-denylist" }

// runnerNetwork is the bridge runners attach to.
func (c *Cloud) runnerNetwork() string {
	if c.cfg.Network != "" {
		return c.cfg.Network
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.profileNetwork
}

// ApplyDenylist makes the runners' bridge reject traffic from instances to
// every CIDR of the denylist, with an LXD network ACL on the bridge (so it
// holds for every instance on it, the image builder too, and changes apply
// to running instances at once). LXD lets DHCP and DNS to the bridge
// through whatever the ACL says, so runners keep their addresses and name
// resolution even when the bridge's own address is denied. Other traffic
// is allowed. An empty denylist removes the ACL.
func (c *Cloud) ApplyDenylist(ctx context.Context) error {
	network := c.runnerNetwork()
	if network == "" {
		c.discover(ctx)
		if network = c.runnerNetwork(); network == "" {
			return errors.New("cannot apply the denylist: runners have no network (initialise LXD first)")
		}
	}
	acl := c.denylistACL()
	if len(c.denylist) == 0 {
		if err := c.setup.detachACL(ctx, network, acl); err != nil {
			return fmt.Errorf("cannot remove the denylist: %w", err)
		}
		return nil
	}
	rules := []api.NetworkACLRule{{
		Action:      "reject", // not drop: a denied connection fails at once instead of hanging
		Destination: strings.Join(c.denylist, ","),
		State:       "enabled",
		Description: "github-runner denylist",
	}}
	if err := c.setup.ensureACL(ctx, acl, rules); err != nil {
		return fmt.Errorf("cannot apply the denylist: %w", err)
	}
	if err := c.setup.attachACL(ctx, network, acl); err != nil {
		return fmt.Errorf("cannot apply the denylist: %w", err)
	}
	c.log.Info("denylist applied", "network", network, "acl", acl, "cidrs", strings.Join(c.denylist, ","))
	return nil
}

func (d *lxdDaemon) ensureACL(ctx context.Context, name string, egress []api.NetworkACLRule) error {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	c := d.client(ctx)
	put := api.NetworkACLPut{Description: "Managed by the github-runner charm: the runners' denylist", Egress: egress, Ingress: []api.NetworkACLRule{}}
	_, err := call(ctx, func() (struct{}, error) {
		_, etag, err := c.GetNetworkACL(name)
		if api.StatusErrorCheck(err, 404) {
			return struct{}{}, c.CreateNetworkACL(api.NetworkACLsPost{NetworkACLPost: api.NetworkACLPost{Name: name}, NetworkACLPut: put})
		}
		if err != nil {
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
	err := d.updateNetwork(ctx, network, func(cfg map[string]string) bool {
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
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	c := d.client(ctx)
	_, err = call(ctx, func() (struct{}, error) { return struct{}{}, c.DeleteNetworkACL(acl) })
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
