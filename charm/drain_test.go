package charm

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/src/service/api"
)

// drainManager is a manager whose drains fail a few times, then remove what
// they remove (idle runners, busy ones too when asked), as a cloud that is
// briefly unreachable does; stuck ones are never removed.
type drainManager struct {
	Manager
	failures, drains int
	left             []api.RunnerInfo
	stuck            bool
}

func (m *drainManager) Drain(_ context.Context, busy bool) (api.FlushResult, error) {
	m.drains++
	if m.drains <= m.failures {
		return api.FlushResult{}, errors.New("cannot delete instance: LXD is restarting")
	}
	var kept []api.RunnerInfo
	for _, r := range m.left {
		if m.stuck || (r.State == "busy" && !busy) || r.State == "runner-without-instance" {
			kept = append(kept, r)
		}
	}
	removed := len(m.left) - len(kept)
	m.left = kept
	return api.FlushResult{Removed: removed}, nil
}

func (m *drainManager) Runners(context.Context) (api.RunnersReport, error) {
	return api.RunnersReport{Runners: append([]api.RunnerInfo(nil), m.left...)}, nil
}

// A drain is retried until the manager shows none of what it removes left,
// or its bound passes; a busy runner's GitHub record (its instance gone)
// does not hold it up, nor does a busy runner an idle drain leaves.
func TestDrainRetriesUntilNothingItRemovesIsLeft(t *testing.T) {
	limit, retry := drainLimit, drainRetry
	drainLimit, drainRetry = 300*time.Millisecond, 10*time.Millisecond
	t.Cleanup(func() { drainLimit, drainRetry = limit, retry })
	idle, busy := api.RunnerInfo{Name: "a", State: "idle"}, api.RunnerInfo{Name: "b", State: "busy"}
	record := api.RunnerInfo{Name: "c", State: "runner-without-instance"}
	tests := []struct {
		name    string
		manager *drainManager
		busyToo bool
		drains  int
		err     string
	}{
		{"failing cloud", &drainManager{failures: 2, left: []api.RunnerInfo{idle, busy}}, true, 3, ""},
		{"busy record", &drainManager{left: []api.RunnerInfo{busy, record}}, true, 1, ""},
		{"idle drain keeps busy", &drainManager{left: []api.RunnerInfo{idle, busy}}, false, 1, ""},
		{"instances stay", &drainManager{stuck: true, left: []api.RunnerInfo{idle, busy}}, true, 0, "cannot remove this unit's runners within 300ms: 2 instances left"},
		{"drain keeps failing", &drainManager{failures: 1 << 30, left: []api.RunnerInfo{idle}}, false, 0, "cannot remove idle runners within 300ms: cannot delete instance: LXD is restarting"},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			c := &Charm{Tools: &Tools{}, Manager: test.manager, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			what := unitRunners
			if !test.busyToo {
				what = "idle runners"
			}
			err := c.drain(context.Background(), test.busyToo, what)
			switch {
			case test.err == "" && err != nil:
				t.Fatal(err)
			case test.err != "" && (err == nil || err.Error() != test.err):
				t.Fatalf("error %v, want %q", err, test.err)
			case test.drains != 0 && test.manager.drains != test.drains:
				t.Errorf("%d drains, want %d", test.manager.drains, test.drains)
			case test.err != "" && test.manager.drains < 2:
				t.Errorf("%d drains before giving up, want retries", test.manager.drains)
			}
		})
	}
}
