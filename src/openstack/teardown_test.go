package openstack

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/src/cloud"
)

// Teardown refuses while a server of the unit is left, and leaves the
// group its servers use as it was; once they are gone, it deletes the
// unit's group and leaves another unit's of the application alone. A
// second Teardown has nothing left to do.
func TestTeardownLeavesNothingOfTheUnit(t *testing.T) {
	t.Parallel()
	b := requireBed(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	ours := newCloud(t, b, testConfig(b))
	otherCfg := testConfig(b)
	otherCfg.Identity = ours.cfg.Identity
	otherCfg.Identity.Unit = 1
	theirs := newCloud(t, b, otherCfg)
	mustPrepare(t, ours)
	mustPrepare(t, theirs)

	name := newRunnerName(ours)
	if err := ours.Create(ctx, cloud.CreateRequest{Name: name, RunnerID: 7, JITConfig: "aml0"}); err != nil {
		t.Fatal(err)
	}
	if err := ours.Teardown(ctx); err == nil || !strings.Contains(err.Error(), "1 runner servers of the unit are left") {
		t.Errorf("Teardown with a server left: %v, want it refused", err)
	}
	if list := groupsNamed(t, b, ours.cfg.SecurityGroup); len(list) != 1 {
		t.Errorf("the unit's group after a refused Teardown: %+v, want it there", list)
	}
	if err := ours.Delete(ctx, name); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := ours.Teardown(ctx); err != nil {
			t.Fatalf("Teardown %d: %v", i, err)
		}
	}
	if list := groupsNamed(t, b, ours.cfg.SecurityGroup); len(list) != 0 {
		t.Errorf("the unit's group is left after its Teardown: %+v", list)
	}
	if list := groupsNamed(t, b, theirs.cfg.SecurityGroup); len(list) != 1 || len(list[0].Rules) != len(egressRules(theirs.denylist)) {
		t.Errorf("another unit's group after this unit's Teardown: %+v, want it as it was", list)
	}
	// What Create needs is gone with the group: a Prepare comes first.
	if err := ours.Create(ctx, cloud.CreateRequest{Name: newRunnerName(ours), RunnerID: 8, JITConfig: "aml0"}); err == nil {
		t.Error("Create after Teardown, before any Prepare, succeeded")
	}
}
