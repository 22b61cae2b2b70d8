package service

import (
	"context"
	"sync"
	"testing"

	"github.com/canonical/github-runner-charm/src/cloud"
	"github.com/canonical/github-runner-charm/src/manager"
	"github.com/canonical/github-runner-charm/src/manager/managertest"
)

// versionedCloud is the in-memory cloud with LXD's image: Prepare fetches
// the runner application and moves the image to its version, reporting a
// change once, to the first Prepare that sees the new version.
type versionedCloud struct {
	*managertest.Cloud
	mu      sync.Mutex
	version string
}

func (c *versionedCloud) Prepare(ctx context.Context, fetch cloud.FetchRunner) (bool, error) {
	_, version, err := fetch(ctx)
	if err != nil {
		return false, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	changed := c.version != "" && c.version != version
	c.version = version
	return changed, nil
}

func (c *versionedCloud) Teardown(context.Context) error { return nil }

// update-dependencies moves the image to a new runner version; the change
// is not the action's to swallow: the next cycle still replaces the idle
// runners on the old version, and only that one.
func TestUpdateDependenciesLeavesTheChangeToTheCycle(t *testing.T) {
	const n = 3
	b := newCostBed(t, n)
	c := &versionedCloud{Cloud: b.cloud}
	u := &updater{github: b.client, cacheDir: t.TempDir(), log: discardLog(), cloud: c}
	srv := &Server{Engine: b.engine(n), Expected: n, Prepare: u.refresh, UpdateDependencies: u.update, Log: discardLog()}
	if out, err := srv.cycle(manager.Reconcile); err != nil || out.RemovedTotal() != 0 {
		t.Fatalf("first cycle: %+v, %v; want nothing removed", out, err)
	}
	old := b.cloud.Names()

	if err := b.github.SetRunnerVersion("2.999.1"); err != nil {
		t.Fatal(err)
	}
	result, err := srv.UpdateDependencies(t.Context())
	if err != nil || !result.Updated || result.RunnerVersion != "2.999.1" {
		t.Fatalf("update-dependencies = %+v, %v; want updated to 2.999.1", result, err)
	}
	out, err := srv.cycle(manager.Reconcile)
	if err != nil {
		t.Fatal(err)
	}
	if out.RemovedTotal() != n {
		t.Errorf("the cycle after update-dependencies removed %d runners (%v), want the %d idle ones on the old version", out.RemovedTotal(), out.Removed, n)
	}
	for _, name := range b.cloud.Names() {
		for _, o := range old {
			if name == o {
				t.Errorf("runner %s of the old version is still there", name)
			}
		}
	}
	if out, err := srv.cycle(manager.Reconcile); err != nil || out.RemovedTotal() != 0 {
		t.Errorf("the cycle after that: removed %v, %v; want nothing: the change was consumed", out.Removed, err)
	}
}
