package lxd

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/canonical/lxd/shared/api"

	"github.com/canonical/github-runner-charm/src/runner"
)

// throwawayBridge creates a bridge of its own for a test, so that rules on
// it never touch the shared lxdbr0, and deletes it at the end.
func throwawayBridge(t *testing.T, d *lxdDaemon) (name string, gateway netip.Addr) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	used, err := hostPrefixes()
	if err != nil {
		t.Fatal(err)
	}
	// From a random candidate: parallel test runs must not pick the same
	// subnet.
	var from [4]byte
	rand.Read(from[:])
	prefix, ok := pickSubnet(used, binary.BigEndian.Uint32(from[:]))
	if !ok {
		t.Fatal("no free subnet")
	}
	name = "lxdt" + randomHex(4)
	if _, err := d.ensureBridge(ctx, name, prefix.String(), 0, api.NetworkPut{}, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if out, err := lxc(t, "network", "delete", name); err != nil {
			t.Errorf("cannot delete bridge %s: %v %s", name, err, out)
		}
	})
	return name, prefix.Addr()
}

// serve answers "ok" on addr:port until the test ends.
func serve(t *testing.T, addr string) string {
	t.Helper()
	l, err := net.Listen("tcp", addr+":0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return "http://" + l.Addr().String() + "/"
}

// launchPlain starts a base-image container on network, for network tests
// that need no runner, and waits for its DHCP lease.
func launchPlain(t *testing.T, c *Cloud, name, network string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := c.d.CreateInstance(ctx, api.InstancesPost{
		Name: name, Source: api.InstanceSource{Type: "image", Alias: baseImage},
		InstancePut: api.InstancePut{Profiles: []string{"default"}, Devices: map[string]map[string]string{
			"eth0": {"type": "nic", "name": "eth0", "network": network},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.d.SetState(ctx, name, "start", false); err != nil {
		t.Fatal(err)
	}
	return waitIPv4(t, name, "")
}

func waitIPv4(t *testing.T, name, project string) string {
	t.Helper()
	args := []string{"exec", name, "--", "sh", "-c", "ip -4 -o addr show dev eth0 | sed -n 's/.* inet \\([0-9.]*\\).*/\\1/p'"}
	if project != "" {
		args = append([]string{"--project", project}, args...)
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if out, err := lxc(t, args...); err == nil && strings.TrimSpace(out) != "" {
			return strings.TrimSpace(out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s got no IPv4 address in 30 s", name)
	return ""
}

func fetch(t *testing.T, instance, url string) (string, error) {
	t.Helper()
	// No -T: busybox 1.35's wget crashes with it. A rejected connection
	// fails at once; the timeout is the backstop for a dropped one.
	return lxc(t, "exec", instance, "--", "timeout", "10", "wget", "-q", "-O", "-", url)
}

// The denylist: a host service on the runners' bridge address is reachable
// before and unreachable after its /32 is denied, while an allowed address
// still works, and DHCP and DNS keep working.
func TestDenylist(t *testing.T) {
	requireLXD(t)
	cfg := testConfig(testPrefix(t))
	probe := newCloud(t, cfg)
	network, gateway := throwawayBridge(t, probe.setup)
	denied := serve(t, gateway.String())
	allowed := serve(t, bridgeIP(t))

	cfg.Network = network
	cfg.Runner.Denylist = mustDenylist(t, gateway.String()+"/32", "192.0.2.0/24")
	c := newCloud(t, cfg)
	t.Cleanup(func() { lxc(t, "network", "acl", "delete", c.denylistACL()) })
	before := c.cfg.Identity.Prefix() + "-before"
	launchPlain(t, c, before, network)
	for _, url := range []string{denied, allowed} {
		if out, err := fetch(t, before, url); err != nil || out != "ok" {
			t.Fatalf("before the denylist, %s gives %q, %v", url, out, err)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.applyDenylist(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.applyDenylist(ctx); err != nil {
		t.Fatalf("applying the same denylist again: %v", err)
	}
	start := time.Now()
	if out, err := fetch(t, before, denied); err == nil {
		t.Errorf("denied %s still answers: %q", denied, out)
	} else if d := time.Since(start); d > 5*time.Second {
		t.Errorf("a denied connection took %v to fail; want it rejected at once", d)
	}
	if out, err := fetch(t, before, allowed); err != nil || out != "ok" {
		t.Errorf("allowed %s gives %q, %v", allowed, out, err)
	}
	// DHCP still works for a new instance, and DNS on the denied address.
	after := c.cfg.Identity.Prefix() + "-after"
	launchPlain(t, c, after, network)
	if out, err := lxc(t, "exec", after, "--", "nslookup", before, gateway.String()); err != nil || !strings.Contains(out, "Address") {
		t.Errorf("DNS on the bridge after the denylist: %v\n%s", err, out)
	}

	// An empty denylist removes the ACL, and the service answers again.
	cfg.Runner.Denylist = nil
	open := newCloud(t, cfg)
	if err := open.applyDenylist(ctx); err != nil {
		t.Fatal(err)
	}
	if out, err := fetch(t, before, denied); err != nil || out != "ok" {
		t.Errorf("after removing the denylist, %s gives %q, %v", denied, out, err)
	}
	if out, err := lxc(t, "network", "acl", "show", c.denylistACL()); err == nil {
		t.Errorf("ACL %s still exists:\n%s", c.denylistACL(), out)
	}
	if acls := strings.TrimSpace(mustLXC(t, "network", "get", network, "security.acls")); acls != "" {
		t.Errorf("bridge %s still has ACLs %q", network, acls)
	}
}

// initialise completes a daemon whose default profile has neither root
// disk nor NIC: a throwaway project with profiles of its own stands in for
// a fresh daemon, so the shared one is never torn down.
func TestInitialise(t *testing.T) {
	requireLXD(t)
	prefix := testPrefix(t)
	// Bridge names are at most 15 characters.
	short := "lxdt" + randomHex(4)
	project, pool, network := short, short+"p", short+"b"
	mustLXC(t, "project", "create", project, "-c", "features.profiles=true", "-c", "features.images=false")
	t.Cleanup(func() {
		lxc(t, "delete", "--force", "--project", project, prefix+"-init")
		lxc(t, "profile", "device", "remove", "default", "root", "--project", project)
		lxc(t, "profile", "device", "remove", "default", "eth0", "--project", project)
		for _, args := range [][]string{{"project", "delete", project}, {"network", "delete", network}, {"storage", "delete", pool}} {
			if out, err := lxc(t, args...); err != nil {
				t.Errorf("lxc %s: %v %s", strings.Join(args, " "), err, out)
			}
		}
	})
	if devices := mustLXC(t, "profile", "device", "list", "default", "--project", project); strings.TrimSpace(devices) != "" {
		t.Fatalf("new project's default profile has devices: %s", devices)
	}

	cfg := testConfig(prefix)
	cfg.Project, cfg.Pool, cfg.Network = project, pool, network
	c := newCloud(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := c.initialise(ctx); err != nil {
		t.Fatal(err)
	}
	profile := mustLXC(t, "profile", "device", "show", "default", "--project", project)
	for _, want := range []string{"pool: " + pool, "network: " + network, "path: /"} {
		if !strings.Contains(profile, want) {
			t.Errorf("default profile lacks %q:\n%s", want, profile)
		}
	}
	if driver := strings.TrimSpace(mustLXC(t, "storage", "get", pool, "source")); driver == "" {
		t.Errorf("pool %s has no source", pool)
	}
	cidr := strings.TrimSpace(mustLXC(t, "network", "get", network, "ipv4.address"))
	subnet, err := netip.ParsePrefix(cidr)
	if err != nil {
		t.Fatalf("bridge %s has address %q: %v", network, cidr, err)
	}
	if v6 := strings.TrimSpace(mustLXC(t, "network", "get", network, "ipv6.address")); v6 != "none" {
		t.Errorf("bridge %s has IPv6 %q, want none", network, v6)
	}

	// The profile now launches working containers.
	mustLXC(t, "launch", baseImage, prefix+"-init", "--project", project)
	ip := waitIPv4(t, prefix+"-init", project)
	if addr, err := netip.ParseAddr(ip); err != nil || !subnet.Contains(addr) {
		t.Errorf("container got %s, want an address in %s", ip, subnet)
	}

	// Done is done: a second initialise changes nothing.
	if err := c.initialise(ctx); err != nil {
		t.Fatal(err)
	}
	if again := mustLXC(t, "profile", "device", "show", "default", "--project", project); again != profile {
		t.Errorf("second initialise changed the profile:\n%s\nwas\n%s", again, profile)
	}
}

// Two units on one daemon, with different denylists: each unit's runners
// are on a bridge of the unit's own that carries the unit's denylist alone,
// so a unit's runner cannot reach what its unit denies but reaches what the
// other unit denies, and the host's address on the shared bridge (where the
// tests serve the fake GitHub) still. Tearing one unit down deletes its
// bridge and ACL and keeps the other's, which still holds.
func TestDenylistPerUnit(t *testing.T) {
	requireLXD(t)
	probe := newCloud(t, testConfig(testPrefix(t)))
	_, gateway1 := throwawayBridge(t, probe.setup)
	_, gateway2 := throwawayBridge(t, probe.setup)
	// Host addresses on bridges no runner is on: no other test's runner
	// meets the rules even if they landed on the shared bridge.
	service1, service2 := serve(t, gateway1.String()), serve(t, gateway2.String())
	shared := serve(t, bridgeIP(t))

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	type unit struct {
		c                 *Cloud
		instance          string
		denied, reachable string
	}
	var units []*unit
	for _, tc := range []struct{ deny, denied, reachable string }{
		{gateway1.String() + "/32", service1, service2},
		{gateway2.String() + "/32", service2, service1},
	} {
		cfg := testConfig(testPrefix(t))
		cfg.Runner.Denylist = mustDenylist(t, tc.deny)
		c := newCloud(t, cfg)
		if err := c.ready(ctx); err != nil {
			t.Fatal(err)
		}
		u := &unit{c: c, instance: c.cfg.Identity.Prefix() + "-plain", denied: tc.denied, reachable: tc.reachable}
		launchPlain(t, c, u.instance, c.runnerNetwork())
		units = append(units, u)
	}
	check := func(when string, u *unit) {
		t.Helper()
		if out, err := fetch(t, u.instance, u.denied); err == nil {
			t.Errorf("%s: %s reaches %s, which its unit denies: %q", when, u.instance, u.denied, out)
		}
		for _, url := range []string{u.reachable, shared} {
			if out, err := fetch(t, u.instance, url); err != nil || out != "ok" {
				t.Errorf("%s: %s cannot reach %s, which its unit does not deny: %q, %v", when, u.instance, url, out, err)
			}
		}
	}
	sharedNetwork := probe.profileNetwork
	for _, u := range units {
		check("two units", u)
		network := u.c.runnerNetwork()
		if network == sharedNetwork || len(network) > 15 {
			t.Errorf("unit %s's runners are on %q, want a bridge of the unit's own (at most 15 characters)", u.c.cfg.Identity.UnitName(), network)
		}
		config := map[string]string{}
		if err := json.Unmarshal([]byte(mustLXC(t, "query", "/1.0/networks/"+network+"?recursion=1")), &struct {
			Config *map[string]string `json:"config"`
		}{&config}); err != nil {
			t.Fatal(err)
		}
		for key, want := range map[string]string{
			"ipv4.nat": "true", "ipv6.address": "none", "security.acls": u.c.denylistACL(),
			"user." + runner.MetaModel: testModel, "user." + runner.MetaUnit: u.c.cfg.Identity.UnitName(),
		} {
			if config[key] != want {
				t.Errorf("bridge %s has %s=%q, want %q", network, key, config[key], want)
			}
		}
		if acls := mustLXC(t, "network", "get", sharedNetwork, "security.acls"); strings.Contains(acls, u.c.denylistACL()) {
			t.Errorf("the shared bridge %s has unit %s's ACL: %q", sharedNetwork, u.c.cfg.Identity.UnitName(), acls)
		}
	}

	gone, kept := units[0], units[1]
	if err := gone.c.remove(ctx, gone.instance); err != nil {
		t.Fatal(err)
	}
	if err := gone.c.Teardown(ctx); err != nil {
		t.Fatal(err)
	}
	if out, err := lxc(t, "network", "show", gone.c.runnerNetwork()); err == nil {
		t.Errorf("the torn-down unit's bridge %s is left:\n%s", gone.c.runnerNetwork(), out)
	}
	if out, err := lxc(t, "network", "acl", "show", gone.c.denylistACL()); err == nil {
		t.Errorf("the torn-down unit's ACL %s is left:\n%s", gone.c.denylistACL(), out)
	}
	if acls := strings.TrimSpace(mustLXC(t, "network", "get", kept.c.runnerNetwork(), "security.acls")); acls != kept.c.denylistACL() {
		t.Errorf("the other unit's bridge has ACLs %q after the teardown, want %q", acls, kept.c.denylistACL())
	}
	check("after the other unit's teardown", kept)
}
