package manager_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/src/cloud"
	"github.com/canonical/github-runner-charm/src/manager"
	"github.com/canonical/github-runner-charm/src/runner"
)

// §5: after `juju refresh --switch` from Canonical's Python charm, its
// runners (named <app>-<unit>-<24 hex>, -<12 hex> or -{r,n}-<12 hex>,
// without this charm's metadata) are taken over on GitHub's word alone:
// idle ones go GitHub first, busy ones finish their job and then go, a
// restart in between forgets nothing, and nothing that may be another
// model's (its record not in this unit's scope) or another
// application's is touched.
func TestPythonCharmRunnersAreTakenOver(t *testing.T) {
	b := newBed(t, 1)
	old := b.clock().Add(-time.Hour)
	put := func(name string, busy bool) int64 {
		rid := b.platform.Add(name, true, busy)
		b.cloud.PutBare(cloud.Instance{Name: name, CreatedAt: old, Status: cloud.Running})
		return rid
	}
	idle := id.LegacyPrefix() + "-0123456789abcdef01234567" // MID
	busy := id.LegacyPrefix() + "-0123456789ab"             // NEW
	stopped := id.LegacyPrefix() + "-r-0123456789ab"        // NEW, reactive infix
	idleID := put(idle, false)
	put(busy, true)
	put(stopped, false)
	b.cloud.SetStatus(stopped, cloud.Stopped)
	// Another model's unit of the same name on the same cloud, registered
	// in another organisation: its record is not in this unit's scope.
	theirs := id.LegacyPrefix() + "-n-aaaaaaaaaaaa"
	b.cloud.PutBare(cloud.Instance{Name: theirs, CreatedAt: old, Status: cloud.Running})
	b.platform.SetScope(runner.NewScope("https://api.github.com", "another-org"))
	b.platform.Add(theirs, true, false)
	b.platform.SetScope(scope)
	// Another application's runner, listed in this unit's scope.
	otherApp := "other-0-0123456789abcdef01234567"
	b.cloud.PutBare(cloud.Instance{Name: otherApp, CreatedAt: old, Status: cloud.Running})
	b.platform.Add(otherApp, true, false)
	// A Python-named record without an instance here: maybe another
	// machine's, never removed on the list's word.
	recordOnly := id.LegacyPrefix() + "-bbbbbbbbbbbbbbbbbbbbbbbb"
	b.platform.Add(recordOnly, true, false)

	githubFirst := true
	b.platform.OnRemove = func(rid int64) {
		if rid == idleID {
			if _, ok := b.cloud.Get(idle); !ok {
				githubFirst = false
			}
		}
	}
	out := b.run(t, manager.Reconcile)
	if _, ok := b.cloud.Get(idle); ok {
		t.Error("the idle runner of the Python charm is still there")
	}
	if _, ok := b.platform.Get(idle); ok {
		t.Error("the idle runner of the Python charm is still registered at GitHub")
	}
	if !githubFirst {
		t.Error("the idle runner's instance went before its GitHub record")
	}
	if _, ok := b.cloud.Get(stopped); ok {
		t.Error("the stopped runner of the Python charm is still there")
	}
	if _, ok := b.platform.Get(stopped); ok {
		t.Error("the stopped runner of the Python charm is still registered at GitHub")
	}
	if out.Created != 1 {
		t.Errorf("created %d, want the unit's own runner beside the retiring ones", out.Created)
	}
	b.assertKept(t, busy)
	pythonViews := 0
	for _, v := range out.Views {
		if v.PythonCharm {
			pythonViews++
		}
	}
	if pythonViews != 3 {
		t.Errorf("%d views of the Python charm's runners, want 3 (idle, busy, stopped): %+v", pythonViews, out.Views)
	}

	// A flush of idle runners keeps the busy one too.
	b.run(t, manager.FlushIdle)
	b.assertKept(t, busy)

	// The job ends while the manager restarts: the ephemeral runner's
	// record goes, and its instance (an OpenStack server of the Python
	// charm stays up after its job) is known only from the claim.
	b.platform.Delete(busy)
	fresh := manager.New(b.cloud, b.platform, settings(1), slog.New(slog.NewTextHandler(io.Discard, nil))).WithClock(b.clock)
	if _, err := fresh.Run(context.Background(), manager.Reconcile); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.cloud.Get(busy); ok {
		t.Error("the Python charm's runner whose job ended is still there after a restart")
	}
	if ts, _ := b.platform.Tombstones(context.Background()); len(ts) != 0 {
		t.Errorf("tombstones left: %+v", ts)
	}

	b.advance(30 * time.Hour)
	fresh.Run(context.Background(), manager.Reconcile)
	fresh.Run(context.Background(), manager.FlushIdle)
	for _, name := range []string{theirs, otherApp} {
		if _, ok := b.cloud.Get(name); !ok {
			t.Errorf("instance %s, not this unit's, was deleted", name)
		}
		if _, ok := b.platform.Get(name); !ok {
			t.Errorf("record %s, not this unit's, was removed", name)
		}
	}
	if _, ok := b.platform.Get(recordOnly); !ok {
		t.Error("a Python-named record with no instance here was removed")
	}
	if b.platform.RemovedBusy != 0 {
		t.Error("a busy runner was removed at GitHub")
	}
}

// A Python charm's instance whose record GitHub lists under another
// runner id than its server records (OpenStack's runner_id) is not taken.
func TestPythonCharmClaimNeedsTheRecord(t *testing.T) {
	b := newBed(t, 0)
	name := id.LegacyPrefix() + "-0123456789abcdef01234567"
	rid := b.platform.Add(name, true, true)
	b.cloud.PutBare(cloud.Instance{Name: name, RunnerID: rid + 100, CreatedAt: b.clock().Add(-time.Hour), Status: cloud.Running})
	b.run(t, manager.Reconcile)
	if ts, _ := b.platform.Tombstones(context.Background()); len(ts) != 0 {
		t.Errorf("claimed on a record of another id: %+v", ts)
	}
	b.platform.Delete(name)
	b.run(t, manager.Reconcile)
	if _, ok := b.cloud.Get(name); !ok {
		t.Error("an instance never shown to be this unit's was deleted")
	}
}
