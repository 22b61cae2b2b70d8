package main

import (
	"context"
	"log/slog"
	"sync"

	"github.com/canonical/github-runner-charm/src/config"
	"github.com/canonical/github-runner-charm/src/lxd"
	"github.com/canonical/github-runner-charm/src/openstack"
	"github.com/canonical/github-runner-charm/src/runner"
	"github.com/canonical/github-runner-charm/src/service"
)

// openCloud opens the cloud the config names.
func openCloud(ctx context.Context, f *config.File, log *slog.Logger) (service.Cloud, error) {
	id, err := runner.ParseIdentity(f.Model, f.Unit)
	if err != nil {
		return nil, err
	}
	if f.OpenStack != nil {
		c, err := openstack.New(ctx, openstack.Config{Identity: id, OpenStack: *f.OpenStack, Runner: f.Runner}, log)
		if err != nil {
			return nil, err
		}
		return openstackCloud{c}, nil
	}
	c, err := lxd.New(ctx, lxd.Config{Identity: id, LXD: *f.LXD, Runner: f.Runner}, log)
	if err != nil {
		return nil, err
	}
	// A deb-installed daemon may be uninitialised; the denylist must hold
	// before the first runner starts.
	if err := c.Initialise(ctx); err != nil {
		return nil, err
	}
	if err := c.ApplyDenylist(ctx); err != nil {
		return nil, err
	}
	return &lxdCloud{Cloud: c}, nil
}

// lxdCloud builds the runner image in Prepare.
type lxdCloud struct {
	*lxd.Cloud
	mu    sync.Mutex
	alias string
}

func (c *lxdCloud) Prepare(ctx context.Context, fetch service.FetchRunner) (bool, error) {
	tarball, version, err := fetch(ctx)
	if err != nil {
		return false, err
	}
	alias, err := c.EnsureImage(ctx, tarball, version)
	if err != nil {
		return false, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	changed := c.alias != "" && c.alias != alias
	c.alias = alias
	return changed, nil
}

// openstackCloud checks image, flavor and network in Prepare; the runner
// application is already in the image.
type openstackCloud struct {
	*openstack.Cloud
}

func (c openstackCloud) Prepare(ctx context.Context, _ service.FetchRunner) (bool, error) {
	return c.Cloud.Prepare(ctx, "", "")
}
