package charm

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/canonical/github-runner-charm/src/service/api"
)

// drainManager is a manager whose drains fail a few times, then remove what
// is left, as a cloud that is briefly unreachable does.
type drainManager struct {
	Manager
	failures, drains int
	left             []api.RunnerInfo
	records          []api.RunnerInfo // busy runners' records, whose instances are gone: GitHub keeps them a while
}

func (m *drainManager) Drain(context.Context, bool) (api.FlushResult, error) {
	m.drains++
	if m.drains <= m.failures {
		return api.FlushResult{}, errors.New("cannot delete instance: LXD is restarting")
	}
	n := len(m.left)
	m.left = nil
	return api.FlushResult{Removed: n}, nil
}

func (m *drainManager) Runners(context.Context) (api.RunnersReport, error) {
	return api.RunnersReport{Runners: append(append([]api.RunnerInfo(nil), m.left...), m.records...)}, nil
}

// The teardown retries a failed drain instead of leaving runners behind
// the unit, and a busy runner's GitHub record (its instance gone) does not
// hold it up.
func TestDrainAllRetriesUntilNoInstanceIsLeft(t *testing.T) {
	m := &drainManager{failures: 2, left: []api.RunnerInfo{{Name: "a", State: "idle"}, {Name: "b", State: "busy"}}}
	c := &Charm{Tools: &Tools{}, Manager: m, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if err := c.drainAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if m.drains != 3 {
		t.Errorf("%d drains, want 3: two failed, then one that removed everything", m.drains)
	}
	m = &drainManager{left: []api.RunnerInfo{{Name: "d", State: "busy"}}, records: []api.RunnerInfo{{Name: "c", State: "runner-without-instance"}}}
	c.Manager = m
	if err := c.drainAll(context.Background()); err != nil || m.drains != 1 {
		t.Errorf("a busy record held up the teardown: %v, %d drains", err, m.drains)
	}
}
