package service

import (
	"context"
	"log/slog"

	"github.com/canonical/github-runner-charm/src/config"
	"github.com/canonical/github-runner-charm/src/runner"
	"github.com/canonical/github-runner-charm/src/scaleset"
)

// ScaleSetConfig is the unit's runner scale set of a config file whose
// github.scale-set is set: the same GitHub, path, credentials, group and
// labels as the classic runners' (RunnerLabels: a scale set's runners get
// no default labels of their own), and the unit's cap as its capacity.
func ScaleSetConfig(f *config.File, id runner.Identity, log *slog.Logger) scaleset.Config {
	c := scaleset.Config{
		APIURL: f.GitHub.APIURL, Path: f.GitHub.Path, Token: f.GitHub.Token, Group: f.GitHub.Group,
		Option: f.GitHub.ScaleSet, Labels: f.GitHub.RunnerLabels(), Identity: id, MaxRunners: f.MaxRunners, Logger: log,
	}
	if a := f.GitHub.App; a != nil {
		c.App = &scaleset.App{ID: a.ID, ClientID: a.ClientID, InstallationID: a.InstallationID, PrivateKey: a.PrivateKey}
	}
	return c
}

// listenForDemand runs the scale set's listener, feeding d, until ctx
// ends; the channel closes once the listener has closed its session.
func listenForDemand(ctx context.Context, set *scaleset.Set, d *demand) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		set.Listen(ctx, d, d)
	}()
	return done
}
