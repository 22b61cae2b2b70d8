package service

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/src/cloud"
	"github.com/canonical/github-runner-charm/src/manager"
	"github.com/canonical/github-runner-charm/tests/fakegithub"
)

// countingCloud is versionedCloud counting its Prepares.
type countingCloud struct {
	*versionedCloud
	prepares atomic.Int32
}

func (c *countingCloud) Prepare(ctx context.Context, fetch cloud.FetchRunner) (bool, error) {
	c.prepares.Add(1)
	return c.versionedCloud.Prepare(ctx, fetch)
}

// Cycles woken seconds apart (a finished runner, a change of demand) reuse
// the last Prepare: no GitHub downloads request and no checksum of the
// cached runner application (over a second for the real one on two cores)
// before their creates. One after refreshEvery prepares again and sees a
// new runner version. A cycle on the interval or for an action prepares
// whatever the last did: an operator's reconcile-runners sees an image
// API that fails now.
func TestCyclesSecondsApartPrepareOnce(t *testing.T) {
	const n = 2
	b := newCostBed(t, n)
	c := &countingCloud{versionedCloud: &versionedCloud{Cloud: b.cloud}}
	u := &updater{github: b.client, cacheDir: t.TempDir(), log: discardLog(), cloud: c}
	srv := &Server{Engine: b.engine(n), Expected: n, Prepare: u.refresh, PrepareWoken: u.refreshIfStale, Log: discardLog()}
	if _, err := srv.cycle(manager.Reconcile); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := srv.wokenCycle(); err != nil {
			t.Fatal(err)
		}
	}
	if got := c.prepares.Load(); got != 1 {
		t.Errorf("a cycle and two woken ones ran %d Prepares, want 1", got)
	}
	b.github.ResetCounts()
	if _, err := srv.wokenCycle(); err != nil {
		t.Fatal(err)
	}
	if got := b.github.Count(fakegithub.ListRepoRunnerDownloads); got != 0 {
		t.Errorf("a woken cycle right after another asked GitHub for the runner downloads %d times", got)
	}
	if _, err := srv.cycle(manager.Reconcile); err != nil {
		t.Fatal(err)
	}
	if got := c.prepares.Load(); got != 2 {
		t.Errorf("a cycle for an action right after others ran %d Prepares in all, want 2", got)
	}

	if err := b.github.SetRunnerVersion("2.999.1"); err != nil {
		t.Fatal(err)
	}
	old := b.cloud.Names()
	u.mu.Lock()
	u.prepared = time.Now().Add(-refreshEvery)
	u.mu.Unlock()
	out, err := srv.wokenCycle()
	if err != nil {
		t.Fatal(err)
	}
	if got := c.prepares.Load(); got != 3 {
		t.Errorf("a woken cycle refreshEvery after the last Prepare ran %d Prepares in all, want 3", got)
	}
	if out.RemovedTotal() != len(old) {
		t.Errorf("the new runner version replaced %d idle runners, want %d", out.RemovedTotal(), len(old))
	}
}
