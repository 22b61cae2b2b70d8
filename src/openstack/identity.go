package openstack

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/groups"

	"github.com/canonical/github-runner-charm/src/runner"
)

// What the unit makes in the project carries its identity, and is changed
// or deleted only when that identity is the unit's own: runner servers
// (Nova metadata, as runner.Meta*) and the runners' security group (its
// name holds the unit's prefix, with the model's tag, and its description
// names unit and model). The previous version named its group
// "<app>-<unit>-runners", the same in every model: it may be another
// model's unit's, still on that version, and goes only once nothing uses
// it (see retireLegacySecurityGroup).

// ownerOf is who a server's metadata says it belongs to.
func ownerOf(metadata map[string]string) runner.Owner {
	return runner.Owner{Model: metadata[runner.MetaModel], Unit: metadata[runner.MetaUnit]}
}

// securityGroupOwner starts the description of the unit's security group.
func (c *Cloud) securityGroupOwner() string {
	return "Runners of " + c.cfg.Identity.UnitName() + " (model " + c.cfg.Identity.Model + ");"
}

func (c *Cloud) securityGroupDescription() string {
	return c.securityGroupOwner() + " managed by the github-runner charm, do not edit its egress rules."
}

// ownsSecurityGroup tells the unit's security group: one whose description
// names the unit and its model. Neutron keeps no other metadata on a group
// that every cloud offers.
func (c *Cloud) ownsSecurityGroup(g groups.SecGroup) bool {
	return strings.HasPrefix(g.Description, c.securityGroupOwner())
}

// legacySecurityGroup is the previous version's name and description of
// the unit's group; the description names the unit but no model.
func (c *Cloud) legacySecurityGroup() (name, description string) {
	return c.cfg.Identity.LegacyPrefix() + "-runners",
		"Runners of " + c.cfg.Identity.UnitName() + "; managed by the github-runner charm, do not edit its egress rules."
}

// legacySweepEvery spaces the look for the previous version's group once
// one was kept.
const legacySweepEvery = 30 * time.Minute

// maybeRetireLegacySecurityGroup runs retireLegacySecurityGroup at most
// every legacySweepEvery, until the group is gone. The caller holds
// prepareMu.
func (c *Cloud) maybeRetireLegacySecurityGroup(ctx context.Context) {
	if c.legacyDone || time.Now().Before(c.legacyNext) {
		return
	}
	c.legacyNext = time.Now().Add(legacySweepEvery)
	c.legacyDone = c.retireLegacySecurityGroup(ctx)
}

// retireLegacySecurityGroup deletes the previous version's security group
// of the unit's name once no server can be using it, and tells whether it
// is gone. It is kept while any server of the unit's legacy name shape is
// in the project, the unit's own retiring runners or another model's unit
// of the same name on the previous version, and Neutron itself refuses
// (409) while a port has it. A group of that name the charm did not make
// is never touched. Failures are warnings: they keep nothing from working.
func (c *Cloud) retireLegacySecurityGroup(ctx context.Context) (gone bool) {
	name, description := c.legacySecurityGroup()
	found, err := c.api.SecurityGroupsNamed(ctx, name)
	if err != nil {
		c.log.Warn("cannot look up the previous version's security group", "security-group", name, "error", err)
		return false
	}
	var ours []groups.SecGroup
	for _, g := range found {
		if g.Description == description {
			ours = append(ours, g)
		}
	}
	if len(ours) == 0 {
		return true
	}
	list, err := c.api.Servers(ctx, "^"+regexp.QuoteMeta(c.cfg.Identity.LegacyPrefix()+"-"))
	if err != nil {
		c.log.Warn("cannot list servers of the previous version", "error", err)
		return false
	}
	for _, srv := range list {
		if c.cfg.Identity.Generation(srv.Name) == runner.Legacy {
			c.log.Debug("keeping the previous version's security group: servers of that naming are in the project", "security-group", name, "server", srv.Name)
			return false
		}
	}
	gone = true
	for _, g := range ours {
		err := c.api.DeleteSecurityGroup(ctx, g.ID)
		switch {
		case err == nil, errors.Is(err, errNotFound):
			c.log.Info("deleted the previous version's security group", "security-group", name, "id", g.ID)
		case errors.Is(err, errConflict):
			c.log.Info("keeping the previous version's security group: a port still uses it", "security-group", name, "id", g.ID)
			gone = false
		default:
			c.log.Warn("cannot delete the previous version's security group", "security-group", name, "id", g.ID, "error", err)
			gone = false
		}
	}
	return gone
}
