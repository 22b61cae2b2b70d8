package main

import (
	"context"
	"errors"
	"log/slog"
	"sync"

	"github.com/canonical/github-runner-charm/src/config"
	"github.com/canonical/github-runner-charm/src/lxd"
	"github.com/canonical/github-runner-charm/src/service"
)

// openCloud opens the cloud the config names.
func openCloud(ctx context.Context, f *config.File, log *slog.Logger) (service.Cloud, error) {
	if f.LXD == nil {
		return nil, errors.New("cannot run OpenStack runners: the OpenStack cloud is not in this build yet")
	}
	c, err := lxd.New(ctx, lxd.Config{Prefix: f.Prefix, Unit: f.Unit, LXD: *f.LXD, Runner: f.Runner}, log)
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

func (c *lxdCloud) Prepare(ctx context.Context, tarballPath, version string) (bool, error) {
	alias, err := c.EnsureImage(ctx, tarballPath, version)
	if err != nil {
		return false, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	changed := c.alias != "" && c.alias != alias
	c.alias = alias
	return changed, nil
}
