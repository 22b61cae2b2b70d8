package main

import (
	"log/slog"

	"github.com/canonical/github-runner-charm/src/cloud"
	"github.com/canonical/github-runner-charm/src/config"
	"github.com/canonical/github-runner-charm/src/lxd"
	"github.com/canonical/github-runner-charm/src/openstack"
	"github.com/canonical/github-runner-charm/src/runner"
)

// openCloud picks the cloud the config names. It does not connect: each
// cloud connects on its first call, and again after a failed connection.
func openCloud(f *config.File, log *slog.Logger) (cloud.Provider, error) {
	id, err := runner.ParseIdentity(f.Model, f.Unit)
	if err != nil {
		return nil, err
	}
	if f.OpenStack != nil {
		return openstack.New(openstack.Config{Identity: id, OpenStack: *f.OpenStack, Runner: f.Runner}, log)
	}
	return lxd.New(lxd.Config{Identity: id, LXD: *f.LXD, Runner: f.Runner}, log)
}
