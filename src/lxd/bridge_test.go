package lxd

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/canonical/lxd/shared/api"

	"github.com/canonical/github-runner-charm/src/runner"
	"github.com/canonical/github-runner-charm/tests/lxdtest"
)

func TestBridgeName(t *testing.T) {
	for _, prefix := range []string{"a", "github-runner-0123456789abcdef0123456789-d067b0-12"} {
		name := bridgeName(prefix)
		if len(name) > 15 || !strings.HasPrefix(name, "ghr") || strings.Trim(name[3:], "0123456789abcdef") != "" {
			t.Errorf("bridgeName(%q) = %q, want ghr and hex digits, at most 15 characters", prefix, name)
		}
		if other := lxdtest.UnitBridge(prefix); other != name {
			t.Errorf("lxdtest.UnitBridge(%q) = %q, want bridgeName's %q", prefix, other, name)
		}
	}
	if bridgeName("a") == bridgeName("b") {
		t.Error("two prefixes have one bridge")
	}
}

// An upgrade: the previous version put the unit's runners and its denylist
// ACL on the shared network. The ACL stays there while a runner of the unit
// is left on it, and goes once none is; the unit's bridge carries it from
// the first ready on.
func TestDenylistLeavesTheSharedNetworkWithTheLastRunner(t *testing.T) {
	requireLXD(t)
	cfg := testConfig(testPrefix(t))
	cfg.Runner.Denylist = mustDenylist(t, "198.51.100.0/24") // TEST-NET-2: rejects nothing in use
	probe := newCloud(t, cfg)
	shared, _ := throwawayBridge(t, probe.setup)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// The previous version: its ACL on the shared network, a runner there.
	before := cfg
	before.Network = shared
	if err := newCloud(t, before).applyDenylist(ctx); err != nil {
		t.Fatal(err)
	}
	id := cfg.Identity
	old := id.NewName()
	err := probe.d.CreateInstance(ctx, api.InstancesPost{
		Name: old, Type: api.InstanceTypeContainer, Source: api.InstanceSource{Type: "image", Alias: baseImage},
		InstancePut: api.InstancePut{Profiles: []string{"default"}, Config: userConfig(id.Meta(7, runner.NewScope("https://api.github.com", testRepo))),
			Devices: map[string]map[string]string{"eth0": {"type": "nic", "name": "eth0", "network": shared}}},
	})
	if err != nil {
		t.Fatal(err)
	}

	c := newCloud(t, cfg)
	c.mu.Lock()
	c.profileNetwork, c.profileNIC = shared, "eth0" // the default profile's, as far as c knows
	c.mu.Unlock()
	if err := c.ensureOwnBridge(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.applyDenylist(ctx); err != nil {
		t.Fatal(err)
	}
	acls := func(network string) []string {
		return splitList(strings.TrimSpace(mustLXC(t, "network", "get", network, "security.acls")))
	}
	own := c.runnerNetwork()
	if got := acls(own); !slices.Equal(got, []string{c.denylistACL()}) {
		t.Errorf("the unit's bridge %s has ACLs %q, want the unit's", own, got)
	}
	if !slices.Contains(acls(shared), c.denylistACL()) {
		t.Errorf("the unit's ACL left the shared network while a runner of the unit is on it")
	}
	c.maybeRetireSharedACL(ctx)
	if !slices.Contains(acls(shared), c.denylistACL()) {
		t.Errorf("the unit's ACL left the shared network at a cycle while a runner of the unit is on it")
	}

	if err := c.Delete(ctx, old); err != nil {
		t.Fatal(err)
	}
	c.maybeRetireSharedACL(ctx)
	if got := acls(shared); slices.Contains(got, c.denylistACL()) {
		t.Errorf("the shared network keeps the unit's ACL once no runner of the unit is on it: %q", got)
	}
	if got := acls(own); !slices.Equal(got, []string{c.denylistACL()}) {
		t.Errorf("the unit's bridge %s has ACLs %q after the shared network's were retired, want the unit's", own, got)
	}
}

// A network of the unit's bridge's name that is another's is refused, and
// neither changed nor deleted.
func TestOwnBridgeOfAnotherIsRefused(t *testing.T) {
	requireLXD(t)
	cfg := testConfig(testPrefix(t))
	c := newCloud(t, cfg)
	name := bridgeName(cfg.Identity.Prefix())
	mustLXC(t, "network", "create", name, "ipv4.address=none", "ipv6.address=none",
		"user."+runner.MetaModel+"="+otherModel, "user."+runner.MetaUnit+"=x/0")
	t.Cleanup(func() { lxc(t, "network", "delete", name) })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.ready(ctx); err == nil || !strings.Contains(err.Error(), "belongs to unit x/0") {
		t.Errorf("ready over another's bridge: %v, want it refused", err)
	}
	if err := c.Teardown(ctx); err != nil {
		t.Fatal(err)
	}
	if unit := strings.TrimSpace(mustLXC(t, "network", "get", name, "user."+runner.MetaUnit)); unit != "x/0" {
		t.Errorf("another's bridge is changed or gone: its unit is %q", unit)
	}
}
