package lxd

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/src/cloud"
	"github.com/canonical/github-runner-charm/src/runner"
)

// The instances Canonical's Python charm left on the daemon (its names,
// none of this charm's metadata) are listed, as candidates for the engine
// to take on GitHub's word, and can be deleted; another application's of
// the same naming, or one with another owner's metadata, neither.
func TestPythonCharmInstancesAreListed(t *testing.T) {
	t.Parallel()
	requireLXD(t)
	app := testPrefix(t)
	c := newCloud(t, testConfig(app))
	id := c.cfg.Identity
	mid := id.LegacyPrefix() + "-" + randomHex(12)        // <app>-<unit>-<24 hex>
	infix := id.LegacyPrefix() + "-n-" + randomHex(6)     // <app>-<unit>-n-<12 hex>
	otherUnit := app + "-1-" + randomHex(12)              // unit 1's
	withOwner := id.LegacyPrefix() + "-r-" + randomHex(6) // a Python name with another model's metadata
	other := identityOf(app, otherModel)
	makeInstance(t, c, mid, nil, true)
	makeInstance(t, c, infix, nil, false)
	makeInstance(t, c, otherUnit, nil, false)
	makeInstance(t, c, withOwner, userConfig(other.Meta(7, runner.NewScope("https://api.github.com", testRepo))), false)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	instances, err := c.Instances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]cloud.Instance{}
	for _, inst := range instances {
		listed[inst.Name] = inst
	}
	for _, name := range []string{mid, infix} {
		inst, ok := listed[name]
		if !ok {
			t.Errorf("%s is not listed", name)
			continue
		}
		if inst.Owner != (runner.Owner{}) || inst.RunnerID != 0 || !inst.Scope.IsZero() || inst.CreatedAt.IsZero() {
			t.Errorf("%s listed as %+v", name, inst)
		}
	}
	if listed[mid].Status != cloud.Running {
		t.Errorf("the running one is %s", listed[mid].Status)
	}
	for _, name := range []string{otherUnit, withOwner} {
		if _, ok := listed[name]; ok {
			t.Errorf("%s, not this unit's, is listed", name)
		}
		if err := c.Delete(ctx, name); err != nil {
			t.Fatal(err)
		}
		if !exists(t, c, name) {
			t.Errorf("%s, not this unit's, was deleted", name)
		}
	}
	for _, name := range []string{mid, infix} {
		if err := c.Delete(ctx, name); err != nil {
			t.Fatal(err)
		}
		if exists(t, c, name) {
			t.Errorf("%s is still there after Delete", name)
		}
	}
	instances, _ = c.Instances(ctx)
	if slices.ContainsFunc(instances, func(i cloud.Instance) bool { return i.Name == mid || i.Name == infix }) {
		t.Error("deleted instances still listed")
	}
}
