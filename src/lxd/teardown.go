package lxd

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/canonical/lxd/shared/api"
)

// Teardown removes what the unit made on the daemon besides its runners,
// for a unit that goes away: its image builders, its runner images and
// their aliases ("<prefix>-image-*"), its denylist ACL, taken off every
// network that uses it, and then its bridge (see ownBridge). Runners use
// the "default" profile, so there is no profile of the unit's; nor is what
// initialise added to a daemon nobody had set up (pool, bridge, the
// default profile's devices) the unit's alone. Another unit's or model's
// images, builders, ACL and bridge are never touched; an alias of the unit's name on an image the unit did not
// build goes, the image stays. It refuses while an instance of the unit
// is left (its runners may still use the image and the rules), and waits
// for an image build in progress to end, within ctx.
func (c *Cloud) Teardown(ctx context.Context) error {
	instances, err := c.Instances(ctx)
	if err != nil {
		return fmt.Errorf("cannot tear down: %w", err)
	}
	if len(instances) > 0 {
		return fmt.Errorf("cannot tear down: %d runner instances of the unit are left", len(instances))
	}
	if err := lockWithin(ctx, &c.imageMu); err != nil {
		return fmt.Errorf("cannot tear down: an image build is in progress: %w", err)
	}
	defer c.imageMu.Unlock()
	var errs []error
	errs = append(errs, c.deleteBuilders(ctx)...)
	errs = append(errs, c.deleteImages(ctx)...)
	if err := c.deleteACL(ctx); err != nil {
		errs = append(errs, err)
	} else if err := c.deleteOwnBridge(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cannot tear down: %w", err)
	}
	c.mu.Lock()
	c.image, c.alias, c.sharedDone = "", "", false
	c.mu.Unlock()
	c.initMu.Lock()
	c.initialised = false // a later Prepare applies the denylist again
	c.initMu.Unlock()
	c.log.Info("torn down: nothing of the unit is left on LXD")
	return nil
}

// lockWithin locks mu, or gives up when ctx ends.
func lockWithin(ctx context.Context, mu interface{ TryLock() bool }) error {
	for !mu.TryLock() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

func (c *Cloud) deleteBuilders(ctx context.Context) []error {
	all, err := c.d.Instances(ctx)
	if err != nil {
		return []error{fmt.Errorf("cannot list LXD instances: %w", err)}
	}
	var errs []error
	for _, inst := range all {
		if !c.isOwnBuilder(inst) {
			continue
		}
		if err := c.remove(ctx, inst.Name); err != nil {
			errs = append(errs, err)
			continue
		}
		c.log.Info("deleted an image builder", "builder", inst.Name)
	}
	return errs
}

// deleteImages deletes the images the unit built (and so their aliases),
// then any alias of the unit's name left on another's image.
func (c *Cloud) deleteImages(ctx context.Context) []error {
	images, err := c.d.Images(ctx)
	if err != nil {
		return []error{fmt.Errorf("cannot list LXD images: %w", err)}
	}
	var errs []error
	for _, image := range images {
		if !c.ownsImage(image) {
			continue
		}
		if err := c.d.DeleteImage(ctx, image.Fingerprint); err != nil {
			errs = append(errs, fmt.Errorf("cannot delete runner image %s: %w", image.Fingerprint, err))
			continue
		}
		c.log.Info("deleted a runner image", "fingerprint", image.Fingerprint, "version", image.Properties[propVersion])
	}
	aliases, err := c.setup.imageAliases(ctx)
	if err != nil {
		return append(errs, err)
	}
	for _, alias := range aliases {
		if !strings.HasPrefix(alias.Name, c.imageAlias("")) {
			continue
		}
		if err := c.setup.deleteImageAlias(ctx, alias.Name); err != nil {
			errs = append(errs, err)
			continue
		}
		c.log.Info("deleted a runner image alias on an image the unit did not build", "alias", alias.Name, "fingerprint", alias.Target)
	}
	return errs
}

// deleteACL takes the unit's denylist ACL off every network that uses it
// and deletes it; one that is not the unit's stays.
func (c *Cloud) deleteACL(ctx context.Context) error {
	name := c.denylistACL()
	acl, err := c.setup.networkACL(ctx, name)
	switch {
	case errors.Is(err, ErrNotFound):
		return nil
	case err != nil:
		return err
	case c.ownACL(*acl) != nil:
		c.log.Warn("leaving a network ACL of this unit's name alone: it is not this unit's", "acl", name, "reason", c.ownACL(*acl).Error())
		return nil
	}
	var networks []string
	for _, user := range acl.UsedBy {
		path, _, _ := strings.Cut(user, "?")
		if network, ok := strings.CutPrefix(path, "/1.0/networks/"); ok && !slices.Contains(networks, network) {
			networks = append(networks, network)
		}
	}
	if network := c.runnerNetwork(); network != "" && !slices.Contains(networks, network) {
		networks = append(networks, network)
	}
	for _, network := range networks {
		if err := c.setup.takeOffACL(ctx, network, name); err != nil && !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("cannot take the denylist off network %q: %w", network, err)
		}
	}
	if err := c.setup.deleteACL(ctx, name); err != nil {
		return err
	}
	c.log.Info("deleted the denylist ACL", "acl", name, "networks", strings.Join(networks, ","))
	return nil
}

func (d *lxdDaemon) imageAliases(ctx context.Context) ([]api.ImageAliasesEntry, error) {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	c := d.client(ctx)
	aliases, err := call(ctx, func() ([]api.ImageAliasesEntry, error) { return c.GetImageAliases() })
	if err != nil {
		return nil, fmt.Errorf("cannot list LXD image aliases: %w", err)
	}
	return aliases, nil
}

func (d *lxdDaemon) deleteImageAlias(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	c := d.client(ctx)
	_, err := call(ctx, func() (struct{}, error) { return struct{}{}, c.DeleteImageAlias(name) })
	if err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("cannot delete image alias %q: %w", name, err)
	}
	return nil
}
