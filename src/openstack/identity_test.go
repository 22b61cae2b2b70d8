package openstack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/groups"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"

	"github.com/canonical/github-runner-charm/src/cloud"
	"github.com/canonical/github-runner-charm/src/runner"
	"github.com/canonical/github-runner-charm/tests/openstacktest"
)

// otherModel is the model of another deployment of the same application
// in the same project.
const otherModel = "9d1e7a40-0b6f-4c35-8a57-2f4f1c6a0b11"

func legacyName(id runner.Identity) string {
	b := make([]byte, 6)
	rand.Read(b)
	return id.LegacyPrefix() + "-" + hex.EncodeToString(b)
}

// makeServer boots a server as another deployment, or the previous
// version, would have: of name, with metadata, on no network (what is
// looked at here is Nova's record alone). It is deleted when the test ends
// with every server of the test's application.
func makeServer(t *testing.T, b *bed, name string, metadata map[string]string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv, err := servers.Create(ctx, b.compute, servers.CreateOpts{
		Name: name, FlavorRef: b.fixtures.FlavorID, ImageRef: b.fixtures.ImageID, Networks: "none", Metadata: metadata,
	}, nil).Extract()
	if err != nil {
		t.Fatalf("cannot create server %s: %v", name, err)
	}
	return srv.ID
}

// unitOf is a Cloud of the bed for unit 0 of app in model.
func unitOf(t *testing.T, b *bed, app, model string) *Cloud {
	t.Helper()
	cfg := testConfig(b)
	cfg.Identity = runner.Identity{Model: model, App: app, Unit: 0}
	return newCloud(t, b, cfg)
}

// In one project, a unit lists exactly its own runner servers, of both
// namings, by name and metadata together: not a server named like its own
// whose metadata names another model or unit or is missing, not another
// model's unit of the same application. Its Delete leaves those alone; it
// reads its own servers' owner, runner id and scope back.
func TestInstancesOfOwnIdentityOnly(t *testing.T) {
	t.Parallel()
	b := requireBed(t)
	c := newCloud(t, b, testConfig(b))
	id := c.cfg.Identity
	openstacktest.CleanupServers(t, b.compute, id.App+"-")
	other := runner.Identity{Model: otherModel, App: id.App, Unit: 0}
	otherCloud := unitOf(t, b, id.App, otherModel)
	otherUnit := runner.Identity{Model: id.Model, App: id.App, Unit: 1}
	scope := runner.NewScope("https://api.github.com", testRepo)
	legacyMeta := func(unit string, runnerID int) map[string]string {
		return map[string]string{runner.MetaUnit: unit, runner.MetaRunnerID: fmt.Sprint(runnerID)}
	}
	cases := []struct {
		what     string
		name     string
		metadata map[string]string
		// listedBy are the units that list it: its owner, and for the
		// previous naming, which named no model, every model's unit of
		// that name (an ambiguity that version's metadata cannot resolve).
		listedBy []runner.Identity
		want     cloud.Instance // what they list (but name, time and status)
	}{
		{what: "ours", name: id.NewName(), metadata: id.Meta(41, scope), listedBy: []runner.Identity{id},
			want: cloud.Instance{RunnerID: 41, Owner: id.Owner(), Scope: scope}},
		{what: "our name, another model's metadata", name: id.NewName(), metadata: other.Meta(42, scope)},
		{what: "our name, another unit's metadata", name: id.NewName(), metadata: otherUnit.Meta(43, scope)},
		{what: "our name, no metadata", name: id.NewName()},
		{what: "our name, the previous version's metadata", name: id.NewName(), metadata: legacyMeta(id.UnitName(), 44)},
		{what: "another model's runner of the same application", name: other.NewName(), metadata: other.Meta(45, scope), listedBy: []runner.Identity{other},
			want: cloud.Instance{RunnerID: 45, Owner: other.Owner(), Scope: scope}},
		{what: "the previous version's runner", name: legacyName(id), metadata: legacyMeta(id.UnitName(), 46), listedBy: []runner.Identity{id, other},
			want: cloud.Instance{RunnerID: 46, Owner: runner.Owner{Unit: id.UnitName()}}},
		{what: "previous naming, another unit's metadata", name: legacyName(id), metadata: legacyMeta(otherUnit.UnitName(), 47)},
		{what: "previous naming, another model's current metadata", name: legacyName(id), metadata: other.Meta(48, scope)},
		// The Python charm's naming, which is the previous version's too:
		// listed for every model's unit of that name, as a candidate the
		// engine takes only on GitHub's word (manager.Join), with the
		// runner id the Python charm kept, if it did.
		{what: "previous naming, no metadata", name: legacyName(id), listedBy: []runner.Identity{id, other}},
		{what: "the Python charm's runner", name: id.LegacyPrefix() + "-" + strings.Repeat("ab", 12), metadata: map[string]string{"platform_name": "github", "runner_id": "49"},
			listedBy: []runner.Identity{id, other}, want: cloud.Instance{RunnerID: 49}},
	}
	var wg sync.WaitGroup
	for _, tc := range cases {
		wg.Go(func() { makeServer(t, b, tc.name, tc.metadata) })
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, lister := range []*Cloud{c, otherCloud} {
		instances, err := lister.Instances(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range cases {
			i := slices.IndexFunc(instances, func(inst cloud.Instance) bool { return inst.Name == tc.name })
			wantListed := slices.Contains(tc.listedBy, lister.cfg.Identity)
			switch {
			case wantListed && i < 0:
				t.Errorf("%s: %s does not list it", tc.what, lister.cfg.Identity.Prefix())
			case !wantListed && i >= 0:
				t.Errorf("%s: %s lists it: %+v", tc.what, lister.cfg.Identity.Prefix(), instances[i])
			case i >= 0:
				got := instances[i]
				got.Name, got.CreatedAt, got.Status = "", time.Time{}, ""
				if got != tc.want {
					t.Errorf("%s: listed as %+v, want %+v", tc.what, got, tc.want)
				}
			}
		}
	}

	for _, tc := range cases {
		if !slices.Contains(tc.listedBy, id) {
			if err := c.Delete(ctx, tc.name); err != nil {
				t.Errorf("%s: Delete: %v", tc.what, err)
			}
			if serverNamed(t, b, tc.name) == nil {
				t.Errorf("%s: deleted by a unit that does not own it", tc.what)
			}
		}
	}
	for _, tc := range cases {
		if slices.Contains(tc.listedBy, id) {
			if err := c.Delete(ctx, tc.name); err != nil {
				t.Fatal(err)
			}
			if serverNamed(t, b, tc.name) != nil {
				t.Errorf("%s: still there after Delete", tc.what)
			}
		}
	}
}

// A paused or suspended server (an admin's doing, or a compute host's
// maintenance) resumes with its job where it was: unresponsive while it
// is, running again after. The bed's fake virt driver takes both through
// Nova's real state machine.
func TestPausedAndSuspendedAreUnresponsive(t *testing.T) {
	t.Parallel()
	b := requireBed(t)
	c := newCloud(t, b, testConfig(b))
	mustPrepare(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	name := newRunnerName(c)
	if err := c.Create(ctx, cloud.CreateRequest{Name: name, RunnerID: 9, Scope: runner.NewScope("https://api.github.com", testRepo), JITConfig: "aml0"}); err != nil {
		t.Fatal(err)
	}
	id := serverNamed(t, b, name).ID
	waitStatus(t, c, name, string(cloud.Running), time.Minute)
	for _, tc := range []struct {
		action, undo func(context.Context) error
		nova         string
	}{
		{func(ctx context.Context) error { return servers.Pause(ctx, b.compute, id).ExtractErr() },
			func(ctx context.Context) error { return servers.Unpause(ctx, b.compute, id).ExtractErr() }, "PAUSED"},
		{func(ctx context.Context) error { return servers.Suspend(ctx, b.compute, id).ExtractErr() },
			func(ctx context.Context) error { return servers.Resume(ctx, b.compute, id).ExtractErr() }, "SUSPENDED"},
	} {
		if err := tc.action(ctx); err != nil {
			t.Fatalf("cannot make the server %s: %v", tc.nova, err)
		}
		if _, err := openstacktest.WaitForServerStatus(ctx, b.compute, id, tc.nova, time.Minute); err != nil {
			t.Fatal(err)
		}
		waitStatus(t, c, name, string(cloud.Unresponsive), 10*time.Second)
		if err := tc.undo(ctx); err != nil {
			t.Fatalf("cannot bring the server back from %s: %v", tc.nova, err)
		}
		if _, err := openstacktest.WaitForServerStatus(ctx, b.compute, id, "ACTIVE", time.Minute); err != nil {
			t.Fatal(err)
		}
		waitStatus(t, c, name, string(cloud.Running), 10*time.Second)
	}
}

func groupsNamed(t *testing.T, b *bed, name string) []groups.SecGroup {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	page, err := groups.List(b.network, groups.ListOpts{Name: name}).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	list, err := groups.ExtractGroups(page)
	if err != nil {
		t.Fatal(err)
	}
	return list
}

// makeGroup creates a security group, deleted when the test ends if it is
// still there.
func makeGroup(t *testing.T, b *bed, name, description string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	g, err := groups.Create(ctx, b.network, groups.CreateOpts{Name: name, Description: description}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		groups.Delete(ctx, b.network, g.ID)
	})
	return g.ID
}

// The runners' security group is the unit's own: named by its prefix and
// described with its unit and model, so another model's unit of the
// application has its own beside it, untouched by the unit's Prepare and
// Teardown, and a group of the unit's name described as another's is
// refused, not rewritten. The previous version's group, named
// "<app>-<unit>-runners" in every model, goes once nothing uses it: no
// server of that naming in the project, no port (Neutron's 409).
func TestSecurityGroupIdentity(t *testing.T) {
	t.Parallel()
	b := requireBed(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	t.Run("two models", func(t *testing.T) {
		ours := newCloud(t, b, testConfig(b))
		theirs := unitOf(t, b, ours.cfg.Identity.App, otherModel)
		theirs.denylist = mustDenylist(t, "10.0.0.0/8")
		mustPrepare(t, theirs)
		mustPrepare(t, ours)
		if ours.cfg.SecurityGroup == theirs.cfg.SecurityGroup || ours.ready.securityGroupID == theirs.ready.securityGroupID {
			t.Fatalf("both units use security group %s", ours.cfg.SecurityGroup)
		}
		for _, c := range []*Cloud{ours, theirs} {
			list := groupsNamed(t, b, c.cfg.SecurityGroup)
			if len(list) != 1 || !strings.Contains(list[0].Description, c.cfg.Identity.UnitName()+" (model "+c.cfg.Identity.Model+")") {
				t.Errorf("security group of %s (model %s): %+v, want one that names them", c.cfg.Identity.UnitName(), c.cfg.Identity.Model, list)
			}
		}
		if err := ours.Teardown(ctx); err != nil {
			t.Fatal(err)
		}
		list := groupsNamed(t, b, theirs.cfg.SecurityGroup)
		if len(list) != 1 || len(list[0].Rules) != len(egressRules(theirs.denylist)) {
			t.Errorf("the other model's group after this unit's Teardown: %+v", list)
		}
	})

	t.Run("another's group of the unit's name", func(t *testing.T) {
		c := newCloud(t, b, testConfig(b))
		foreign := makeGroup(t, b, c.cfg.SecurityGroup, "Runners of x/0 (model "+otherModel+"); managed by the github-runner charm, do not edit its egress rules.")
		if _, err := c.Prepare(ctx, nil); err == nil || !strings.Contains(err.Error(), "not this unit's") {
			t.Errorf("Prepare with another's group of the unit's name: %v, want it refused", err)
		}
		if err := c.Teardown(ctx); err != nil {
			t.Fatal(err)
		}
		list := groupsNamed(t, b, c.cfg.SecurityGroup)
		if len(list) != 1 || list[0].ID != foreign || len(list[0].Rules) != 2 { // Neutron's default egress rules
			t.Errorf("another's group after Prepare and Teardown: %+v", list)
		}
		// Out of the way of newCloud's check that nothing is left.
		if err := c.api.DeleteSecurityGroup(ctx, foreign); err != nil {
			t.Fatal(err)
		}
	})

	for _, tc := range []struct {
		what   string
		legacy bool // described as the previous version described it
		// inUse makes something use the group and returns how to stop.
		inUse func(t *testing.T, c *Cloud, groupID string) func()
		kept  bool // after Prepare, and still after inUse's stop
	}{
		{what: "unused", legacy: true},
		{what: "a port uses it", legacy: true, inUse: func(t *testing.T, c *Cloud, groupID string) func() {
			port, err := ports.Create(ctx, b.network, ports.CreateOpts{NetworkID: b.fixtures.NetworkID, SecurityGroups: &[]string{groupID}}).Extract()
			if err != nil {
				t.Fatal(err)
			}
			return func() {
				if err := ports.Delete(ctx, b.network, port.ID).ExtractErr(); err != nil {
					t.Fatal(err)
				}
			}
		}},
		{what: "a server of the previous naming is in the project", legacy: true, inUse: func(t *testing.T, c *Cloud, _ string) func() {
			name := legacyName(c.cfg.Identity)
			makeServer(t, b, name, map[string]string{runner.MetaUnit: c.cfg.Identity.UnitName()})
			return func() {
				if err := c.Delete(ctx, name); err != nil {
					t.Fatal(err)
				}
			}
		}},
		{what: "not the charm's", legacy: false, kept: true},
	} {
		t.Run("previous version's, "+tc.what, func(t *testing.T) {
			c := newCloud(t, b, testConfig(b))
			openstacktest.CleanupServers(t, b.compute, c.cfg.Identity.App+"-")
			name, description := c.legacySecurityGroup()
			if !tc.legacy {
				description = "an operator's group"
			}
			groupID := makeGroup(t, b, name, description)
			stop := func() {}
			if tc.inUse != nil {
				stop = tc.inUse(t, c, groupID)
			}
			mustPrepare(t, c)
			kept := len(groupsNamed(t, b, name)) > 0
			if want := tc.kept || tc.inUse != nil; kept != want {
				t.Fatalf("after Prepare: kept = %v, want %v", kept, want)
			}
			if tc.inUse == nil {
				return
			}
			stop()
			if gone := c.retireLegacySecurityGroup(ctx); !gone || len(groupsNamed(t, b, name)) > 0 {
				t.Errorf("once nothing uses it: gone = %v, groups %+v", gone, groupsNamed(t, b, name))
			}
		})
	}
}
