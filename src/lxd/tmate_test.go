package lxd

import (
	"context"
	"net"
	"net/netip"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/canonical/lxd/shared/api"

	"github.com/canonical/github-runner-charm/src/cloud"
	"github.com/canonical/github-runner-charm/src/cloud/boot"
	"github.com/canonical/github-runner-charm/src/config"
)

// Real fingerprints, as ssh-keygen -l -E sha256 prints them.
const (
	testRSAFingerprint     = "SHA256:aZyJL5q5TD/FqtKgRRlXhZiJoRNASJw9IPhPLHHx/1A"
	testED25519Fingerprint = "SHA256:Q0cJAgy/QhMms3Z0VxDde1EGXvGAEt+dIa7kZqMUMDY"
)

func tmateServer(host string, port int) config.TmateServer {
	return config.TmateServer{Host: host, Port: port, RSAFingerprint: testRSAFingerprint, ED25519Fingerprint: testED25519Fingerprint}
}

// The denylist ACL's rules: the denied prefixes split around each tmate
// server inside them, whose address is rejected but for its servers' TCP
// ports; servers outside the denylist change nothing.
func TestDenylistRules(t *testing.T) {
	reject := func(dest, desc string) api.NetworkACLRule {
		return api.NetworkACLRule{Action: "reject", Destination: dest, State: "enabled", Description: desc}
	}
	const all = "github-runner denylist"
	hole := func(addr, protocol, ports string) api.NetworkACLRule {
		r := reject(addr, all+", but for the tmate server on "+addr)
		r.Protocol, r.DestinationPort = protocol, ports
		return r
	}
	for _, tc := range []struct {
		name     string
		denylist []string
		servers  []string
		want     []api.NetworkACLRule
	}{
		{name: "no servers", denylist: []string{"10.0.0.0/8", "192.168.1.7/32"},
			want: []api.NetworkACLRule{reject("10.0.0.0/8,192.168.1.7/32", all)}},
		{name: "a server outside the denylist", denylist: []string{"10.0.0.0/8"}, servers: []string{"192.0.2.9:10022"},
			want: []api.NetworkACLRule{reject("10.0.0.0/8", all)}},
		{name: "a server inside a denied /30", denylist: []string{"10.0.0.0/30", "172.16.0.0/12"}, servers: []string{"10.0.0.2:10022"},
			want: []api.NetworkACLRule{
				reject("10.0.0.0/31,10.0.0.3/32,172.16.0.0/12", all),
				hole("10.0.0.2/32", "tcp", "1-10021,10023-65535"),
				hole("10.0.0.2/32", "udp", ""),
				hole("10.0.0.2/32", "icmp4", ""),
			}},
		{name: "two servers on one denied address, and one on another", denylist: []string{"10.0.0.0/29"},
			servers: []string{"10.0.0.5:22", "10.0.0.5:10022", "10.0.0.1:1", "10.0.0.5:22"},
			want: []api.NetworkACLRule{
				reject("10.0.0.0/32,10.0.0.2/31,10.0.0.4/32,10.0.0.6/31", all),
				hole("10.0.0.1/32", "tcp", "2-65535"),
				hole("10.0.0.1/32", "udp", ""),
				hole("10.0.0.1/32", "icmp4", ""),
				hole("10.0.0.5/32", "tcp", "1-21,23-10021,10023-65535"),
				hole("10.0.0.5/32", "udp", ""),
				hole("10.0.0.5/32", "icmp4", ""),
			}},
		{name: "a server inside a denied /8", denylist: []string{"10.0.0.0/8"}, servers: []string{"10.1.2.3:10022"},
			want: nil /* checked by the addresses it covers */},
		{name: "the denylist is the server's address alone", denylist: []string{"10.0.0.2/32"}, servers: []string{"10.0.0.2:65535"},
			want: []api.NetworkACLRule{
				hole("10.0.0.2/32", "tcp", "1-65534"),
				hole("10.0.0.2/32", "udp", ""),
				hole("10.0.0.2/32", "icmp4", ""),
			}},
		{name: "an IPv4-mapped server address", denylist: []string{"10.0.0.0/31"}, servers: []string{"[::ffff:10.0.0.1]:10022"},
			want: []api.NetworkACLRule{
				reject("10.0.0.0/32", all),
				hole("10.0.0.1/32", "tcp", "1-10021,10023-65535"),
				hole("10.0.0.1/32", "udp", ""),
				hole("10.0.0.1/32", "icmp4", ""),
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var denylist []netip.Prefix
			for _, p := range tc.denylist {
				denylist = append(denylist, netip.MustParsePrefix(p))
			}
			var servers []netip.AddrPort
			for _, s := range tc.servers {
				servers = append(servers, netip.MustParseAddrPort(s))
			}
			got := denylistRules(denylist, servers)
			if tc.want == nil {
				tc.want = got
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("rules:\n%+v\nwant\n%+v", got, tc.want)
			}
			// Whatever the split, it rejects exactly the denylist but the
			// servers' addresses inside it: as many addresses, each one
			// denied, none a server's.
			var covered, want uint64
			for _, p := range denylist {
				want += 1 << (32 - p.Bits())
			}
			holes := map[netip.Addr]bool{}
			for _, s := range servers {
				if a := s.Addr().Unmap(); slices.ContainsFunc(denylist, func(p netip.Prefix) bool { return p.Contains(a) }) {
					holes[a] = true
				}
			}
			want -= uint64(len(holes))
			for _, r := range got {
				if r.Protocol != "" {
					if !holes[netip.MustParsePrefix(r.Destination).Addr()] {
						t.Errorf("a rule for %s, not a tmate server's denied address", r.Destination)
					}
					continue
				}
				for _, dest := range strings.Split(r.Destination, ",") {
					p := netip.MustParsePrefix(dest)
					covered += 1 << (32 - p.Bits())
					if !slices.ContainsFunc(denylist, func(d netip.Prefix) bool { return d.Contains(p.Addr()) && d.Bits() <= p.Bits() }) {
						t.Errorf("%s is rejected but not denied", dest)
					}
					for a := range holes {
						if p.Contains(a) {
							t.Errorf("%s rejects the tmate server %s", dest, a)
						}
					}
				}
			}
			if covered != want {
				t.Errorf("the rules reject %d addresses wholly, want %d", covered, want)
			}
		})
	}
}

func TestTmateAddrsResolvesNames(t *testing.T) {
	got := tmateAddrs(context.Background(), []config.TmateServer{
		tmateServer("10.0.0.1", 10022), tmateServer("localhost", 22), tmateServer("no-such-host.invalid", 22),
	}, net.DefaultResolver, testLogger(t))
	if len(got) < 2 || got[0] != netip.MustParseAddrPort("10.0.0.1:10022") {
		t.Fatalf("addresses %v", got)
	}
	for _, a := range got[1:] {
		if !a.Addr().IsLoopback() || a.Port() != 22 {
			t.Errorf("localhost:22 resolved to %v", a)
		}
	}
}

// Create writes the runner's own variables (its tmate server) into the
// environment file the start script sources, after the common ones.
func TestRunnerFilesCarryTheRunnersEnvironment(t *testing.T) {
	c := &Cloud{cfg: Config{Runner: config.RunnerImage{HTTPProxy: "http://p:3128"}}}
	env := tmateServer("10.0.0.1", 10022).Environment()
	files, err := c.runnerFiles(context.Background(), cloud.CreateRequest{Name: "r", JITConfig: "jit", Environment: env})
	if err != nil {
		t.Fatal(err)
	}
	if files[0].Path != boot.EnvironmentPath {
		t.Fatalf("first file %s", files[0].Path)
	}
	got := string(files[0].Content)
	for _, want := range []string{"http_proxy='http://p:3128'\n", "TMATE_SERVER_HOST='10.0.0.1'\n", "TMATE_SERVER_PORT='10022'\n",
		"TMATE_SERVER_RSA_FINGERPRINT='" + testRSAFingerprint + "'\n", "TMATE_SERVER_ED25519_FINGERPRINT='" + testED25519Fingerprint + "'\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("environment file lacks %q:\n%s", want, got)
		}
	}
	if last := files[len(files)-1]; last.Path != boot.JITConfigPath {
		t.Errorf("the JIT config is not last: %s", last.Path)
	}
}

// On real LXD: with the denylist covering a tmate server's address, a
// runner reaches the server's port, and still not another port of that
// address, nor an address the denylist covers besides.
func TestDenylistLetsRunnersReachTmateServers(t *testing.T) {
	requireLXD(t)
	cfg := testConfig(testPrefix(t))
	probe := newCloud(t, cfg)
	network, gateway := throwawayBridge(t, probe.setup)
	tmate := serve(t, gateway.String())
	other := serve(t, gateway.String())
	u, err := url.Parse(tmate)
	if err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.Atoi(u.Port())

	cfg.Network = network
	cfg.Runner.Denylist = mustDenylist(t, gateway.String()+"/24")
	cfg.Runner.TmateServers = []config.TmateServer{tmateServer(gateway.String(), port)}
	c := newCloud(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := c.applyDenylist(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.setup.detachACL(ctx, network, c.denylistACL()); err != nil {
			t.Errorf("cannot remove the ACL: %v", err)
		}
	})
	acl := mustLXC(t, "network", "acl", "show", c.denylistACL())
	if !strings.Contains(acl, "destination_port: 1-"+strconv.Itoa(port-1)+","+strconv.Itoa(port+1)+"-65535") {
		t.Errorf("the ACL does not reject the server's address but for its port:\n%s", acl)
	}
	instance := c.cfg.Identity.Prefix() + "-tmate"
	launchPlain(t, c, instance, network)
	if out, err := fetch(t, instance, tmate); err != nil || out != "ok" {
		t.Errorf("the tmate server %s gives %q, %v; want it reached through the denylist", tmate, out, err)
	}
	start := time.Now()
	if out, err := fetch(t, instance, other); err == nil {
		t.Errorf("%s, another port of the tmate server's denied address, answers: %q", other, out)
	} else if d := time.Since(start); d > 5*time.Second {
		t.Errorf("a denied connection took %v to fail; want it rejected at once", d)
	}
}
