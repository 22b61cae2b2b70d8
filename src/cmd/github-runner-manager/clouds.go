package main

import (
	"context"
	"errors"
	"log/slog"

	"github.com/canonical/github-runner-charm/src/config"
	"github.com/canonical/github-runner-charm/src/service"
)

// openCloud opens the cloud the config names.
func openCloud(ctx context.Context, f *config.File, log *slog.Logger) (service.Cloud, error) {
	switch {
	case f.LXD != nil:
		return nil, errors.New("cannot run LXD runners: the LXD cloud is not in this build yet")
	default:
		return nil, errors.New("cannot run OpenStack runners: the OpenStack cloud is not in this build yet")
	}
}
