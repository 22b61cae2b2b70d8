package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/tests/harness"
	"github.com/canonical/github-runner-charm/tests/lxdtest"
	"github.com/canonical/github-runner-charm/tests/stack"
)

// A base-image that cannot be had (no local image has the alias, and it is
// no Ubuntu release the ubuntu: remote serves) blocks the unit, naming
// base-image and why, and no hook fails; once the operator names a base
// LXD has, the unit builds its image and its runners come online. (An
// unreachable image server is the same mark: see src/lxd's
// TestBaseImageThatCannotBeHad.)
func TestBaseImageThatCannotBeHadBlocks(t *testing.T) {
	b := stack.New(t, stack.Options{Name: "e2ebase", Token: token, Label: "e2e", Runners: 1,
		Config: map[string]any{"base-image": "no-such-base-image"}})
	b.Unit.Deploy()
	var s harness.Status
	stack.WaitFor(t, 3*time.Minute, "the unit is Blocked naming base-image", func() bool {
		if r := b.Unit.Hook("update-status"); r.Code != 0 {
			t.Fatalf("update-status failed: %s", r.Stderr)
		}
		s = b.Unit.Status()
		return s.Status == "blocked"
	})
	if !strings.Contains(s.Message, `base-image "no-such-base-image" cannot be used`) || !strings.Contains(s.Message, "no local image has that alias") {
		t.Errorf("status = %+v; want base-image named, with the reason", s)
	}
	if instances := b.Instances(); len(instances) != 0 {
		t.Errorf("instances without a base image: %v", instances)
	}

	if r := b.Unit.Configure(map[string]any{"base-image": lxdtest.BaseImageAlias}); r.Code != 0 {
		t.Fatalf("config-changed: %s", r.Stderr)
	}
	stack.WaitFor(t, 3*time.Minute, "the unit is no longer Blocked", func() bool {
		b.Unit.Hook("update-status")
		s = b.Unit.Status()
		return s.Status != "blocked"
	})
	b.Converge(1)
	b.Unit.Hook("update-status")
	if s := b.Unit.Status(); s != (harness.Status{Status: "active", Message: "1 runners: 1 idle, 0 busy"}) {
		t.Errorf("status once base-image is fixed = %+v", s)
	}
}
