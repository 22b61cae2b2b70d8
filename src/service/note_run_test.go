package service

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/src/cloud"
	"github.com/canonical/github-runner-charm/src/config"
	"github.com/canonical/github-runner-charm/src/manager/managertest"
	"github.com/canonical/github-runner-charm/src/service/api"
	"github.com/canonical/github-runner-charm/tests/fakegithub"
)

// notedCloud is a cloud with a note, as LXD's on a dir pool.
type notedCloud struct {
	preparedCloud
	note string
}

func (c notedCloud) Note() string { return c.note }

// The service Run starts reports a cloud's note (cloud.Noter): what the
// status and check-runners show.
func TestRunReportsTheCloudsNote(t *testing.T) {
	fake := fakegithub.NewTest(t, fakegithub.Options{})
	f := &config.File{Unit: "github-runner/0", Model: managertest.Model, StateDir: t.TempDir(), Runners: 1,
		ReconcileInterval: time.Hour,
		GitHub:            config.GitHub{Path: "org", APIURL: fake.URL(), Token: fakegithub.DefaultToken, Labels: []string{"x64"}}}
	const note = `runner starts are slow: LXD storage pool "default" uses the dir driver`
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, f, func(*config.File, *slog.Logger) (cloud.Provider, error) {
			return notedCloud{preparedCloud{managertest.NewCloud()}, note}, nil
		}, discardLog())
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	client := api.NewClient(filepath.Join(f.StateDir, api.SocketName), 10*time.Second)
	waitUntil(t, "the cloud's note in the report", func() bool {
		r, err := client.Runners(ctx)
		return err == nil && r.Note == note
	})
}
