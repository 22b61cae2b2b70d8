package lxd

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/src/runner"
)

// Teardown leaves nothing of the unit on the daemon, and everything of
// another unit of the application beside it: it refuses while a runner
// instance of the unit is left; then it deletes the unit's image builders,
// runner images and their aliases (one on the other unit's image too, but
// not that image) and its denylist ACL, taken off the bridge. A second
// Teardown has nothing left to do.
func TestTeardownLeavesNothingOfTheUnit(t *testing.T) {
	t.Parallel()
	requireLXD(t)
	prefix := testPrefix(t)
	srv := fakeGitHub(t)
	probe := newCloud(t, testConfig(prefix))
	// Registered before the bridge's clean-up, so it runs after it.
	t.Cleanup(func() {
		names, _ := probe.setup.client(context.Background()).GetNetworkACLNames()
		for _, name := range names {
			if strings.HasPrefix(name, prefix) {
				lxc(t, "network", "acl", "delete", name)
			}
		}
	})
	network, _ := throwawayBridge(t, probe.setup)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	tarball := runnerTarball(t, srv)
	fetch := func(context.Context) (string, string, error) { return tarball, srv.RunnerVersion(), nil }
	unit := func(n int) *Cloud {
		cfg := testConfig(prefix)
		cfg.Identity.Unit = n
		cfg.Network, cfg.Runner.Denylist = network, mustDenylist(t, "192.0.2.0/24")
		c := newCloud(t, cfg)
		if _, err := c.Prepare(ctx, fetch); err != nil {
			t.Fatal(err)
		}
		return c
	}
	ours, theirs := unit(0), unit(1)
	runnerName := ours.cfg.Identity.NewName()
	makeInstance(t, ours, runnerName, userConfig(ours.cfg.Identity.Meta(0, runner.Scope{})), false)
	for _, c := range []*Cloud{ours, theirs} {
		makeInstance(t, c, c.cfg.Identity.Prefix()+builderInfix+randomHex(4), c.ownerConfig(), false)
	}
	theirImage := theirs.image
	strayAlias := ours.imageAlias("9.9.9")
	if err := ours.d.SetAlias(ctx, strayAlias, theirImage); err != nil {
		t.Fatal(err)
	}

	if err := ours.Teardown(ctx); err == nil || !strings.Contains(err.Error(), "1 runner instances of the unit are left") {
		t.Errorf("Teardown with a runner left: %v, want it refused", err)
	}
	if !slices.Contains(networkACLs(t, ours, network), ours.denylistACL()) {
		t.Error("a refused Teardown took the denylist off")
	}
	if err := ours.Delete(ctx, runnerName); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := ours.Teardown(ctx); err != nil {
			t.Fatalf("Teardown %d: %v", i, err)
		}
	}

	instances, err := ours.d.Instances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	theirBuilders := 0
	for _, inst := range instances {
		if strings.HasPrefix(inst.Name, ours.cfg.Identity.Prefix()+"-") {
			t.Errorf("instance %s of the unit is left", inst.Name)
		}
		if theirs.isOwnBuilder(inst) {
			theirBuilders++
		}
	}
	// Its builder and its runner image's template (template.go).
	if theirBuilders != 2 {
		t.Errorf("the other unit has %d image builders, want its builder and its template", theirBuilders)
	}
	images, err := ours.d.Images(ctx)
	if err != nil {
		t.Fatal(err)
	}
	theirsLeft := false
	for _, image := range images {
		if ours.ownsImage(image) {
			t.Errorf("image %s of the unit is left", image.Fingerprint[:12])
		}
		theirsLeft = theirsLeft || image.Fingerprint == theirImage
	}
	if !theirsLeft {
		t.Error("the other unit's image was deleted")
	}
	aliases, err := ours.setup.imageAliases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range aliases {
		if strings.HasPrefix(a.Name, ours.imageAlias("")) {
			t.Errorf("alias %s of the unit is left", a.Name)
		}
	}
	if image, err := theirs.d.ImageByAlias(ctx, theirs.imageAlias(srv.RunnerVersion())); err != nil || image.Fingerprint != theirImage {
		t.Errorf("the other unit's alias: %v, %v; want it on its image", image, err)
	}
	if acl := aclNamed(t, ours, ours.denylistACL()); acl != nil {
		t.Errorf("the unit's ACL is left: %+v", acl)
	}
	if got := networkACLs(t, ours, network); !slices.Equal(got, []string{theirs.denylistACL()}) {
		t.Errorf("the bridge's ACLs after the unit's Teardown: %v, want the other unit's alone", got)
	}

	// The other unit's own Teardown leaves the bridge as it was.
	if err := theirs.Teardown(ctx); err != nil {
		t.Fatal(err)
	}
	if got := networkACLs(t, theirs, network); len(got) != 0 {
		t.Errorf("the bridge's ACLs after both Teardowns: %v", got)
	}
}
