package lxd

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/canonical/lxd/shared/api"

	"github.com/canonical/github-runner-charm/src/cloud"
	"github.com/canonical/github-runner-charm/src/runner"
)

// Models of the other deployments the identity tests put beside the
// unit's on the same daemon, with the same application name.
const (
	otherModel = "9d1e7a40-0b6f-4c35-8a57-2f4f1c6a0b11"
	thirdModel = "51c2b6de-3f0a-4e9c-b7d1-6f0e2c8a4d22"
)

// identityOf is the identity of unit 0 of app in model.
func identityOf(app, model string) runner.Identity {
	return runner.Identity{Model: model, App: app, Unit: 0}
}

// userConfig turns metadata into LXD user.* config.
func userConfig(meta map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range meta {
		out["user."+k] = v
	}
	return out
}

// makeInstance creates a base-image container named name with config (not
// started unless start), as another deployment, or the previous version,
// would have.
func makeInstance(t *testing.T, c *Cloud, name string, config map[string]string, start bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := c.d.CreateInstance(ctx, api.InstancesPost{
		Name: name, Type: api.InstanceTypeContainer, Source: api.InstanceSource{Type: "image", Alias: baseImage},
		InstancePut: api.InstancePut{Profiles: []string{"default"}, Config: config},
	})
	if err != nil {
		t.Fatalf("cannot create %s: %v", name, err)
	}
	if start {
		if err := c.d.SetState(ctx, name, "start", false); err != nil {
			t.Fatalf("cannot start %s: %v", name, err)
		}
	}
}

func exists(t *testing.T, c *Cloud, name string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := c.d.Instance(ctx, name)
	if err != nil && !strings.Contains(err.Error(), "not found") {
		t.Fatal(err)
	}
	return err == nil
}

func legacyName(id runner.Identity) string { return id.LegacyPrefix() + "-" + randomHex(6) }

// On one daemon, a unit lists exactly its own runners, of both namings, by
// name and metadata together: not an instance named like its own whose
// metadata names another model or unit or is missing, not another model's
// unit of the same application. Nothing it does deletes any of those; it
// reads its own runners' owner, runner id and scope back.
func TestInstancesOfOwnIdentityOnly(t *testing.T) {
	t.Parallel()
	requireLXD(t)
	app := testPrefix(t)
	c := newCloud(t, testConfig(app))
	id := c.cfg.Identity
	other := identityOf(app, otherModel)
	otherCloud := newCloud(t, Config{Identity: other, LXD: c.cfg.LXD})
	otherUnit := runner.Identity{Model: id.Model, App: app, Unit: 1}
	scope := runner.NewScope("https://api.github.com", testRepo)
	legacyMeta := func(unit string, runnerID int) map[string]string {
		return map[string]string{"user." + runner.MetaUnit: unit, "user." + runner.MetaRunnerID: fmt.Sprint(runnerID)}
	}

	cases := []struct {
		what   string
		name   string
		config map[string]string
		// listedBy are the units that list it: its owner, and for the
		// previous naming, which named no model, every model's unit of
		// that name (an ambiguity the metadata of that version cannot
		// resolve, and the engine's GitHub checks must).
		listedBy []runner.Identity
		want     cloud.Instance // what they list (but name, time and status)
	}{
		{what: "ours", name: id.NewName(), config: userConfig(id.Meta(41, scope)), listedBy: []runner.Identity{id},
			want: cloud.Instance{RunnerID: 41, Owner: id.Owner(), Scope: scope}},
		{what: "our name, another model's metadata", name: id.NewName(), config: userConfig(other.Meta(42, scope))},
		{what: "our name, another unit's metadata", name: id.NewName(), config: userConfig(otherUnit.Meta(43, scope))},
		{what: "our name, no metadata", name: id.NewName()},
		{what: "our name, the previous version's metadata", name: id.NewName(), config: legacyMeta(id.UnitName(), 44)},
		{what: "another model's runner of the same application", name: other.NewName(), config: userConfig(other.Meta(45, scope)), listedBy: []runner.Identity{other},
			want: cloud.Instance{RunnerID: 45, Owner: other.Owner(), Scope: scope}},
		{what: "the previous version's runner", name: legacyName(id), config: legacyMeta(id.UnitName(), 46), listedBy: []runner.Identity{id, other},
			want: cloud.Instance{RunnerID: 46, Owner: runner.Owner{Unit: id.UnitName()}}},
		{what: "previous naming, another unit's metadata", name: legacyName(id), config: legacyMeta(otherUnit.UnitName(), 47)},
		{what: "previous naming, another model's current metadata", name: legacyName(id), config: userConfig(other.Meta(48, scope))},
		// The Python charm's naming, which is the previous version's too:
		// listed for every model's unit of that name, as a candidate the
		// engine takes only on GitHub's word (manager.Join).
		{what: "previous naming, no metadata", name: legacyName(id), listedBy: []runner.Identity{id, other}},
	}
	for _, tc := range cases {
		makeInstance(t, c, tc.name, tc.config, false)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
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

	// Nothing of the unit deletes what it does not list: not Delete by
	// name, nor the builder and image clean-ups.
	for _, tc := range cases {
		if !slices.Contains(tc.listedBy, id) {
			if err := c.Delete(ctx, tc.name); err != nil {
				t.Errorf("%s: Delete: %v", tc.what, err)
			}
		}
	}
	c.imageMu.Lock()
	c.deleteStaleBuilders(ctx)
	c.sweepLegacy(ctx, time.Now().Add(24*time.Hour))
	c.imageMu.Unlock()
	for _, tc := range cases {
		if !exists(t, c, tc.name) {
			t.Errorf("%s: deleted by a unit that does not own it", tc.what)
		}
	}
	// Its own go, of both namings.
	for _, tc := range cases {
		if slices.Contains(tc.listedBy, id) {
			if err := c.Delete(ctx, tc.name); err != nil {
				t.Fatal(err)
			}
			if exists(t, c, tc.name) {
				t.Errorf("%s: still there after Delete", tc.what)
			}
		}
	}
}

// A frozen container (LXD freezes them for snapshots) is unresponsive, not
// stopped: its job goes on when it thaws, and it is running again then.
func TestFrozenIsUnresponsive(t *testing.T) {
	t.Parallel()
	requireLXD(t)
	c := newCloud(t, testConfig(testPrefix(t)))
	name := c.cfg.Identity.NewName()
	makeInstance(t, c, name, userConfig(c.cfg.Identity.Meta(7, runner.NewScope("https://api.github.com", testRepo))), true)
	waitStatus(t, c, name, cloud.Running, 30*time.Second)
	mustLXC(t, "pause", name)
	t.Cleanup(func() { lxc(t, "start", name) }) // a frozen container cannot be stopped
	waitStatus(t, c, name, cloud.Unresponsive, 30*time.Second)
	mustLXC(t, "start", name) // thaws it
	waitStatus(t, c, name, cloud.Running, 30*time.Second)
}

// Each unit on a daemon has a runner image, alias and prune of its own:
// units of one application in three models, two of one recipe and one of
// another, never rebuild each other's image, never run from one another
// has, and a unit moving to a new runner version deletes only its own old
// image.
func TestImagesOfOwnIdentityOnly(t *testing.T) {
	requireLXD(t)
	srv := fakeGitHub(t)
	app := testPrefix(t)
	// Another recipe: the same base image under another alias.
	otherBase := app + "-base"
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	a := newCloud(t, testConfig(app))
	base, err := a.d.ImageByAlias(ctx, baseImage)
	if err != nil {
		t.Fatal(err)
	}
	mustLXC(t, "image", "alias", "create", otherBase, base.Fingerprint)
	b := newCloud(t, Config{Identity: identityOf(app, otherModel), LXD: a.cfg.LXD})
	cfg := Config{Identity: identityOf(app, thirdModel), LXD: a.cfg.LXD}
	cfg.LXD.BaseImage = otherBase
	c := newCloud(t, cfg)
	units := []*Cloud{a, b, c}

	aliases := map[string]bool{}
	images := map[string]bool{}
	for _, u := range units {
		aliases[buildImage(t, u, srv)] = true
		images[u.image] = true
	}
	if len(aliases) != 3 || len(images) != 3 {
		t.Errorf("three units built aliases %v and images %v, want three of each", aliases, images)
	}
	for _, u := range units {
		before := u.image
		if _, err := u.ensureImage(ctx, runnerTarball(t, srv), srv.RunnerVersion()); err != nil {
			t.Fatal(err)
		}
		if u.image != before {
			t.Errorf("%s rebuilt its image after the others built theirs", u.cfg.Identity.Prefix())
		}
		image, err := u.d.ImageByAlias(ctx, u.imageAlias(srv.RunnerVersion()))
		if err != nil {
			t.Errorf("%s's alias: %v", u.cfg.Identity.Prefix(), err)
		} else if image.Fingerprint != before || !u.ownsImage(*image) {
			t.Errorf("%s's alias points at %.12s (built by %s), want its own image %.12s", u.cfg.Identity.Prefix(), image.Fingerprint, image.Properties[propBuiltBy], before)
		}
	}

	old, oldVersion := a.image, srv.RunnerVersion()
	if err := srv.SetRunnerVersion(oldVersion + "1"); err != nil {
		t.Fatal(err)
	}
	buildImage(t, a, srv)
	for _, u := range units {
		_, err := u.d.ImageByAlias(ctx, u.imageAlias(oldVersion))
		if gone := err != nil; gone != (u == a) {
			t.Errorf("after %s moved on: %s's image of the old version gone = %v (%v)", a.cfg.Identity.Prefix(), u.cfg.Identity.Prefix(), gone, err)
		}
	}
	if out, err := lxc(t, "image", "show", old); err == nil {
		t.Errorf("the image %s moved on from is still there:\n%s", old, out)
	}
}

// A killed manager's builder goes at the next build, but only the unit's
// own: not one named like the unit's whose metadata is another's or none;
// the previous version's builders go only once old enough to be dead.
func TestStaleBuildersOfOwnIdentityOnly(t *testing.T) {
	t.Parallel()
	requireLXD(t)
	app := testPrefix(t)
	c := newCloud(t, testConfig(app))
	id := c.cfg.Identity
	other := identityOf(app, otherModel)
	builder := func(prefix string) string { return prefix + builderInfix + randomHex(4) }
	meta := func(id runner.Identity) map[string]string {
		return map[string]string{"user." + runner.MetaModel: id.Model, "user." + runner.MetaUnit: id.UnitName()}
	}
	oldLegacy, youngLegacy := builder(id.LegacyPrefix()), builder(id.LegacyPrefix())
	makeInstance(t, c, oldLegacy, nil, false)
	time.Sleep(2 * time.Second) // LXD's creation times are the age
	cases := []struct {
		what    string
		name    string
		config  map[string]string
		deleted bool
	}{
		{"ours", builder(id.Prefix()), meta(id), true},
		{"our name, another model's metadata", builder(id.Prefix()), meta(other), false},
		{"our name, no metadata", builder(id.Prefix()), nil, false},
		{"another model's", builder(other.Prefix()), meta(other), false},
		{"the previous version's, old", oldLegacy, nil, true},
		{"the previous version's, young", youngLegacy, nil, false},
		{"previous naming, another model's metadata", builder(id.LegacyPrefix()), meta(other), false},
	}
	for _, tc := range cases {
		if tc.name != oldLegacy {
			makeInstance(t, c, tc.name, tc.config, false)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	young, err := c.d.Instance(ctx, youngLegacy)
	if err != nil {
		t.Fatal(err)
	}
	c.imageMu.Lock()
	c.deleteStaleBuilders(ctx)
	// "Now" is just short of the young one's age limit.
	done := c.sweepLegacy(ctx, young.CreatedAt.Add(legacyBuilderAge-time.Second))
	c.imageMu.Unlock()
	if done {
		t.Error("sweep done while a young builder of the previous version is left")
	}
	for _, tc := range cases {
		if gone := !exists(t, c, tc.name); gone != tc.deleted {
			t.Errorf("%s: deleted = %v, want %v", tc.what, gone, tc.deleted)
		}
	}
}

// instancesOf is a view of the shared daemon that lists only the instances
// of one test's prefix, so that the previous version's runners of other
// tests, which keep legacy images by design, do not decide this one's.
type instancesOf struct {
	daemon
	prefix string
}

func (v instancesOf) Instances(ctx context.Context) ([]api.Instance, error) {
	all, err := v.daemon.Instances(ctx)
	return slices.DeleteFunc(all, func(inst api.Instance) bool { return !strings.HasPrefix(inst.Name, v.prefix) }), err
}

// The image the previous version built under the unit's legacy prefix was
// shared, by its alias, with every unit of that version on the daemon: it
// is kept while any runner of that version is there, whatever its
// application, and deleted once none is. Other units' images stay.
func TestLegacyImageRetiresWithTheLastOldRunner(t *testing.T) {
	t.Parallel()
	requireLXD(t)
	app := testPrefix(t)
	c := newCloud(t, testConfig(app))
	c.d = instancesOf{daemon: c.d, prefix: app}
	id := c.cfg.Identity
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	publish := func(what string, properties map[string]string) string {
		t.Helper()
		src := app + "-src-" + randomHex(3)
		makeInstance(t, c, src, nil, false)
		fingerprint, err := c.d.Publish(ctx, src, properties)
		if err != nil {
			t.Fatalf("cannot publish %s: %v", what, err)
		}
		// Named with the test's prefix, for lxdtest's clean-up.
		if err := c.d.SetAlias(ctx, app+"-"+what, fingerprint); err != nil {
			t.Fatal(err)
		}
		if err := c.remove(ctx, src); err != nil {
			t.Fatal(err)
		}
		return fingerprint
	}
	legacy := publish("legacy", map[string]string{propBuiltBy: id.LegacyPrefix(), propVersion: "2.300.0"})
	otherUnit := publish("other-unit", map[string]string{propBuiltBy: runner.Identity{App: app, Unit: 1}.LegacyPrefix(), propVersion: "2.300.0"})
	other := identityOf(app, otherModel)
	otherModels := publish("other-model", map[string]string{propBuiltBy: other.Prefix(), propModel: other.Model, propUnit: other.UnitName()})

	// A runner of the previous version, of another application even.
	oldRunner := app + "-x-0-" + randomHex(6)
	makeInstance(t, c, oldRunner, map[string]string{"user." + runner.MetaUnit: "x/0", "user." + runner.MetaRunnerID: "5"}, false)
	hasImage := func(fingerprint string) bool {
		_, _, err := c.setup.client(ctx).GetImage(fingerprint)
		return err == nil
	}
	c.imageMu.Lock()
	done := c.sweepLegacy(ctx, time.Now())
	c.imageMu.Unlock()
	if done || !hasImage(legacy) {
		t.Errorf("with a runner of the previous version on the daemon: sweep done %v, legacy image kept %v; want kept", done, hasImage(legacy))
	}

	if err := c.remove(ctx, oldRunner); err != nil {
		t.Fatal(err)
	}
	c.imageMu.Lock()
	done = c.sweepLegacy(ctx, time.Now())
	c.imageMu.Unlock()
	if !done || hasImage(legacy) {
		t.Errorf("with no runner of the previous version left: sweep done %v, legacy image kept %v; want it deleted", done, hasImage(legacy))
	}
	for what, fingerprint := range map[string]string{"another unit's legacy image": otherUnit, "another model's image": otherModels} {
		if !hasImage(fingerprint) {
			t.Errorf("%s was deleted", what)
		}
	}
}

// aclNamed reads a network ACL, nil if there is none.
func aclNamed(t *testing.T, c *Cloud, name string) *api.NetworkACL {
	t.Helper()
	acl, _, err := c.setup.client(context.Background()).GetNetworkACL(name)
	if api.StatusErrorCheck(err, 404) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return acl
}

func networkACLs(t *testing.T, c *Cloud, network string) []string {
	t.Helper()
	n, _, err := c.setup.client(context.Background()).GetNetwork(network)
	if err != nil {
		t.Fatal(err)
	}
	return splitList(n.Config["security.acls"])
}

// The denylist ACL is the unit's own: named by its prefix, its metadata
// naming unit and model, so another model's unit of the application has
// its own beside it, untouched, and an ACL of the unit's name that names
// another owner is refused. The previous version's ACL, named
// "<app>-<unit>-denylist" in every model, goes only once that changes
// nothing any instance on the bridge may reach.
func TestDenylistACLIdentity(t *testing.T) {
	t.Parallel()
	requireLXD(t)
	prefix := testPrefix(t)
	probe := newCloud(t, testConfig(prefix))
	// Registered before the bridge's clean-up, so it runs after it: an
	// ACL a network uses cannot be deleted.
	t.Cleanup(func() {
		names, err := probe.setup.client(context.Background()).GetNetworkACLNames()
		if err != nil {
			t.Error(err)
		}
		for _, name := range names {
			if strings.HasPrefix(name, prefix) {
				if out, err := lxc(t, "network", "acl", "delete", name); err != nil {
					t.Errorf("cannot delete ACL %s: %v %s", name, err, out)
				}
			}
		}
	})
	network, _ := throwawayBridge(t, probe.setup)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	unit := func(app string, denylist ...string) *Cloud {
		cfg := testConfig(app)
		cfg.Network, cfg.Runner.Denylist = network, mustDenylist(t, denylist...)
		return newCloud(t, cfg)
	}
	legacyACL := func(c *Cloud, description string, attach bool, reject ...string) string {
		t.Helper()
		name := c.legacyDenylistACL()
		var egress []api.NetworkACLRule
		for _, cidr := range reject {
			egress = append(egress, api.NetworkACLRule{Action: "reject", Destination: cidr, State: "enabled", Description: "github-runner denylist"})
		}
		err := c.setup.client(ctx).CreateNetworkACL(api.NetworkACLsPost{NetworkACLPost: api.NetworkACLPost{Name: name},
			NetworkACLPut: api.NetworkACLPut{Description: description, Egress: egress}})
		if err != nil {
			t.Fatal(err)
		}
		if attach {
			if err := c.setup.attachACL(ctx, network, name); err != nil {
				t.Fatal(err)
			}
		}
		return name
	}

	for i, tc := range []struct {
		what        string
		denylist    []string
		description string
		attached    bool
		rejects     []string
		kept        bool
	}{
		{"covered by the unit's own", []string{"192.0.2.0/24", "198.51.100.7/32"}, legacyACLDescription, true, []string{"192.0.2.0/25", "198.51.100.7"}, false},
		{"rejecting more than the unit's own", []string{"192.0.2.0/24"}, legacyACLDescription, true, []string{"198.51.100.0/24"}, true},
		{"on no network", []string{"192.0.2.0/24"}, legacyACLDescription, false, []string{"198.51.100.0/24"}, false},
		{"not the charm's", []string{"192.0.2.0/24"}, "an operator's ACL", false, nil, true},
		{"empty, the unit's denylist empty", nil, legacyACLDescription, true, nil, false},
		{"rejecting, the unit's denylist empty", nil, legacyACLDescription, true, []string{"198.51.100.0/24"}, true},
	} {
		c := unit(fmt.Sprintf("%s-%c", prefix, 'a'+i), tc.denylist...)
		name := legacyACL(c, tc.description, tc.attached, tc.rejects...)
		if err := c.applyDenylist(ctx); err != nil {
			t.Fatalf("%s: %v", tc.what, err)
		}
		acl := aclNamed(t, c, name)
		if kept := acl != nil; kept != tc.kept {
			t.Errorf("previous version's ACL %s: kept = %v, want %v", tc.what, kept, tc.kept)
		}
		if attached := slices.Contains(networkACLs(t, c, network), name); attached != (tc.kept && tc.attached) {
			t.Errorf("previous version's ACL %s: attached = %v, want %v", tc.what, attached, tc.kept && tc.attached)
		}
		if acl != nil && len(acl.Egress) != len(tc.rejects) {
			t.Errorf("previous version's ACL %s: rules changed to %+v", tc.what, acl.Egress)
		}
	}

	// Two models' units of one application, each with its own ACL.
	ours := unit(prefix, "192.0.2.0/24")
	theirsCfg := ours.cfg
	theirsCfg.Identity.Model, theirsCfg.Runner.Denylist = otherModel, mustDenylist(t, "203.0.113.0/24")
	theirs := newCloud(t, theirsCfg)
	for _, c := range []*Cloud{theirs, ours} {
		if err := c.applyDenylist(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if ours.denylistACL() == theirs.denylistACL() {
		t.Fatalf("both units use ACL %s", ours.denylistACL())
	}
	for _, c := range []*Cloud{ours, theirs} {
		acl := aclNamed(t, c, c.denylistACL())
		if acl == nil || ownerOf(acl.Config) != c.cfg.Identity.Owner() || !strings.Contains(acl.Description, c.cfg.Identity.Model) ||
			len(acl.Egress) != 1 || acl.Egress[0].Destination != c.cfg.Runner.Denylist[0].String() {
			t.Errorf("ACL of %s: %+v, want its denylist and identity", c.cfg.Identity.UnitName(), acl)
		}
	}
	ours.denylist = nil
	if err := ours.applyDenylist(ctx); err != nil {
		t.Fatal(err)
	}
	if got := networkACLs(t, ours, network); slices.Contains(got, ours.denylistACL()) || !slices.Contains(got, theirs.denylistACL()) {
		t.Errorf("after the unit's denylist went, the bridge has ACLs %v; want the other model's alone", got)
	}
	if acl := aclNamed(t, theirs, theirs.denylistACL()); acl == nil || acl.Egress[0].Destination != "203.0.113.0/24" {
		t.Errorf("the other model's ACL is now %+v", acl)
	}

	// An ACL of the unit's name that names another owner is not the unit's
	// to write: the denylist fails, loudly, and the ACL stays as it was.
	clash := unit(prefix+"-z", "192.0.2.0/24")
	err := clash.setup.client(ctx).CreateNetworkACL(api.NetworkACLsPost{NetworkACLPost: api.NetworkACLPost{Name: clash.denylistACL()},
		NetworkACLPut: api.NetworkACLPut{Description: "someone else's", Config: map[string]string{"user." + runner.MetaModel: otherModel, "user." + runner.MetaUnit: "x/0"}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := clash.applyDenylist(ctx); err == nil || !strings.Contains(err.Error(), "belongs to unit x/0") {
		t.Errorf("applyDenylist over another's ACL: %v, want it refused", err)
	}
	if acl := aclNamed(t, clash, clash.denylistACL()); acl == nil || len(acl.Egress) != 0 || slices.Contains(networkACLs(t, clash, network), acl.Name) {
		t.Errorf("another's ACL of the unit's name was changed: %+v", acl)
	}
}
