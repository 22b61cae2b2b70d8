package service_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/src/manager"
	"github.com/canonical/github-runner-charm/src/manager/managertest"
	"github.com/canonical/github-runner-charm/src/metrics"
	"github.com/canonical/github-runner-charm/src/service"
)

// The cloud's note (LXD: slow starts on a dir pool) is in the report the
// status and check-runners read, as the cloud says it at the time: the
// cloud learns its pool at the first Prepare.
func TestReportCarriesTheCloudsNote(t *testing.T) {
	cloud, platform := managertest.NewCloud(), managertest.NewPlatform()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	note := ""
	srv := &service.Server{
		Engine:   manager.New(cloud, platform, manager.Settings{Identity: managertest.Identity, Scope: managertest.Scope, Target: 1}, log),
		Expected: 1, Interval: time.Hour, Metrics: metrics.New("github-runner", nil), Log: log,
		Note: func() string { return note },
	}
	client, _ := serve(t, srv)
	for _, want := range []string{"", "runner starts are slow: LXD storage pool \"default\" uses the dir driver"} {
		note = want
		report, err := client.Runners(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if report.Note != want {
			t.Errorf("report's note is %q, want %q", report.Note, want)
		}
	}
}
