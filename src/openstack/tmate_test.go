package openstack

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/rules"

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

func TestTmateRules(t *testing.T) {
	for _, tc := range []struct {
		name     string
		denylist []string
		servers  []string
		want     []egressRule
	}{
		{name: "no denylist", servers: []string{"10.1.2.3:10022"}},
		{name: "a server outside the denylist", denylist: []string{"10.0.0.0/8"}, servers: []string{"192.0.2.9:22"}},
		{name: "servers inside it, one twice", denylist: []string{"192.168.0.0/16", "10.0.0.0/8"},
			servers: []string{"10.1.2.3:10022", "192.0.2.9:22", "10.1.2.3:10022", "10.1.2.3:22", "[::ffff:192.168.7.7]:10022"},
			want: []egressRule{
				{etherType: rules.EtherType4, prefix: "10.1.2.3/32", protocol: "tcp", port: 10022},
				{etherType: rules.EtherType4, prefix: "10.1.2.3/32", protocol: "tcp", port: 22},
				{etherType: rules.EtherType4, prefix: "192.168.7.7/32", protocol: "tcp", port: 10022},
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
			if got := tmateRules(denylist, servers); !slices.Equal(got, tc.want) {
				t.Fatalf("rules %+v, want %+v", got, tc.want)
			}
		})
	}
}

// The user-data writes the runner's tmate server into the environment file
// the start script sources, after the common variables, and a shell reads
// them back as they were.
func TestUserDataCarriesTheRunnersEnvironment(t *testing.T) {
	jit := base64.StdEncoding.EncodeToString([]byte(`{".runner":"secret settings"}`))
	env := tmateServer("10.1.2.3", 10022).Environment()
	encoded, err := userDataWith("app-0-0123456789ab", jit, "ubuntu", "/home/ubuntu/actions-runner", config.RunnerImage{HTTPProxy: "http://p:3128"}, env)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base64.StdEncoding.DecodeString(encoded)
	if err != nil {
		t.Fatal(err)
	}
	script := string(raw)
	start := strings.Index(script, "<<'GITHUB_RUNNER_ENVIRONMENT'\n")
	end := strings.Index(script, "\nGITHUB_RUNNER_ENVIRONMENT\n")
	if start < 0 || end < start {
		t.Fatalf("no environment here-document:\n%s", script)
	}
	file := script[start+len("<<'GITHUB_RUNNER_ENVIRONMENT'\n") : end+1]
	if !strings.Contains(file, "http_proxy='http://p:3128'\n") || strings.Index(file, "TMATE_") < strings.Index(file, "http_proxy") {
		t.Errorf("the common variables are not first:\n%s", file)
	}
	path := filepath.Join(t.TempDir(), "environment")
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "sh", "-c", `set -a; . "$0"; set +a; env`, path).Output()
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range env {
		if !slices.Contains(strings.Split(string(out), "\n"), k+"="+v) {
			t.Errorf("the environment file gives no %s=%s:\n%s", k, v, out)
		}
	}
	if encoded, err := userData("app-0-0123456789ab", jit, "ubuntu", "/x", config.RunnerImage{}); err != nil {
		t.Fatal(err)
	} else if raw, _ := base64.StdEncoding.DecodeString(encoded); strings.Contains(string(raw), "TMATE_") {
		t.Errorf("a runner without a tmate server has TMATE_ variables:\n%s", raw)
	}
}

// On the real OpenStack API: with the denylist covering a tmate server's
// address, Prepare adds an egress rule for the server's TCP port to the
// security group, keeps it across Prepares without duplicating it, and
// removes it when the server goes.
func TestSecurityGroupLetsRunnersReachTmateServers(t *testing.T) {
	t.Parallel()
	b := requireBed(t)
	cfg := testConfig(b)
	cfg.Runner.Denylist = mustDenylist(t, "10.0.0.0/8", "192.168.0.0/16")
	cfg.Runner.TmateServers = []config.TmateServer{tmateServer("10.1.2.3", 10022), tmateServer("192.0.2.9", 22), tmateServer("localhost", 10022)}
	c := newCloud(t, b, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	egress := func() (all int, tcp []string) {
		t.Helper()
		list, err := c.api.SecurityGroupRules(ctx, c.ready.securityGroupID)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range list {
			if r.Direction != string(rules.DirEgress) {
				continue
			}
			all++
			if r.Protocol != "" {
				tcp = append(tcp, fmt.Sprintf("%s %s %s %d-%d", r.EtherType, r.Protocol, r.RemoteIPPrefix, r.PortRangeMin, r.PortRangeMax))
			}
		}
		return all, tcp
	}
	for range 2 {
		mustPrepare(t, c)
		all, tcp := egress()
		if want := []string{"IPv4 tcp 10.1.2.3/32 10022-10022"}; !slices.Equal(tcp, want) {
			t.Errorf("port rules %v, want %v", tcp, want)
		}
		if want := len(egressRules(c.denylist)) + 1; all != want {
			t.Errorf("%d egress rules, want %d", all, want)
		}
	}

	c.cfg.Runner.TmateServers = nil
	mustPrepare(t, c)
	if all, tcp := egress(); len(tcp) != 0 || all != len(egressRules(c.denylist)) {
		t.Errorf("after the tmate server went: %d egress rules, port rules %v", all, tcp)
	}
}
