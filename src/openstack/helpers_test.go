package openstack

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	gh "github.com/google/go-github/v62/github"
	"github.com/gophercloud/gophercloud/v2"
	gcopenstack "github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/groups"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"

	"github.com/canonical/github-runner-charm/src/config"
	"github.com/canonical/github-runner-charm/src/runner"
	"github.com/canonical/github-runner-charm/tests/fakegithub"
	"github.com/canonical/github-runner-charm/tests/lxdtest"
	"github.com/canonical/github-runner-charm/tests/openstacktest"
	"github.com/canonical/github-runner-charm/tests/vmplayer"
)

const testRepo = "canonical/openstack-test"

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// bed is the loopback OpenStack as a test sees it: the project user's
// clients for checks, the admin's compute client (user-data, state
// resets), and the IDs of what setup.sh made.
type bed struct {
	cloudsYAML string
	cloudName  string
	compute    *gophercloud.ServiceClient
	network    *gophercloud.ServiceClient
	image      *gophercloud.ServiceClient
	admin      *gophercloud.ServiceClient
	fixtures   openstacktest.Fixtures
}

var (
	bedOnce   sync.Once
	sharedBed *bed
	bedErr    error
)

// requireBed returns the bed, or skips (fails in CI) when it is not there.
// The clients are shared by the package's tests: logging in once is
// seconds saved on two cores.
func requireBed(t testing.TB) *bed {
	t.Helper()
	cloudsYAML, cloudName := openstacktest.Cloud(t)
	adminYAML, adminName := openstacktest.AdminCloud(t)
	bedOnce.Do(func() {
		// Connect and LookupFixtures fail the test that calls them; the
		// tests after it then fail on sharedBed being nil.
		b := &bed{cloudsYAML: string(cloudsYAML), cloudName: cloudName}
		provider, eo := openstacktest.Connect(t, cloudsYAML, cloudName)
		b.fixtures = openstacktest.LookupFixtures(t, provider, eo)
		var err error
		if b.compute, err = gcopenstack.NewComputeV2(provider, eo); err != nil {
			bedErr = err
			return
		}
		b.compute.Microversion = openstacktest.ComputeMicroversion
		if b.network, err = gcopenstack.NewNetworkV2(provider, eo); err != nil {
			bedErr = err
			return
		}
		if b.image, err = gcopenstack.NewImageV2(provider, eo); err != nil {
			bedErr = err
			return
		}
		adminProvider, adminEO := openstacktest.Connect(t, adminYAML, adminName)
		if b.admin, err = gcopenstack.NewComputeV2(adminProvider, adminEO); err != nil {
			bedErr = err
			return
		}
		// 2.3 or later shows OS-EXT-SRV-ATTR:user_data, to admins.
		b.admin.Microversion = openstacktest.ComputeMicroversion
		sharedBed = b
	})
	if sharedBed == nil {
		t.Fatalf("cannot use the OpenStack bed: %v", bedErr)
	}
	return sharedBed
}

// testConfig is a Config of the bed's fixtures for a unique prefix.
// testModel is the model UUID of the tests' runner identities.
const testModel = "3c5b1f5c-8a51-4d5e-8e4b-6a0c2a9b7f10"

func testConfig(b *bed) Config {
	prefix := strings.TrimSuffix(openstacktest.UniqueName("ost-"), "-")
	return Config{
		Identity: runner.Identity{Model: testModel, App: prefix, Unit: 0},
		OpenStack: config.OpenStack{
			CloudsYAML: b.cloudsYAML, Cloud: b.cloudName,
			Flavor: openstacktest.FlavorName, Network: openstacktest.NetworkName, Image: openstacktest.ImageName,
		},
		Runner: config.RunnerImage{
			HTTPProxy: "http://proxy.example:3128", HTTPSProxy: "http://proxy.example:3128", NoProxy: "localhost,127.0.0.1",
			DockerhubMirror: "https://mirror.example:5000",
		},
	}
}

// newCloud connects a Cloud and, at the end of the test, deletes every
// server of its prefix and its security group, then checks that none of
// them is left.
func newCloud(t testing.TB, b *bed, cfg Config) *Cloud {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := newConnected(ctx, cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	// Servers go first (registered last): a group in use cannot be deleted.
	t.Cleanup(func() { checkNothingLeft(t, b, c.cfg) })
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := c.Teardown(ctx); err != nil {
			t.Errorf("cannot clean up: %v", err)
		}
	})
	openstacktest.CleanupServers(t, b.compute, cfg.Identity.Prefix()+"-")
	return c
}

// newConnected is New and the connection the cloud's first call makes.
func newConnected(ctx context.Context, cfg Config, log *slog.Logger) (*Cloud, error) {
	c, err := New(cfg, log)
	if err != nil {
		return nil, err
	}
	return c, c.connected(ctx)
}

// checkNothingLeft fails the test if a server, port or security group of
// the prefix remains.
func checkNothingLeft(t testing.TB, b *bed, cfg Config) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	left := projectServers(t, ctx, b, cfg.Identity.Prefix()+"-")
	for _, srv := range left {
		t.Errorf("server %s (%s) of the test is left", srv.Name, srv.Status)
	}
	page, err := groups.List(b.network, groups.ListOpts{Name: cfg.SecurityGroup}).AllPages(ctx)
	if err != nil {
		t.Errorf("cannot list security groups: %v", err)
		return
	}
	if list, _ := groups.ExtractGroups(page); len(list) > 0 {
		t.Errorf("security group %s is left with %d rules", cfg.SecurityGroup, len(list[0].Rules))
	}
}

func projectServers(t testing.TB, ctx context.Context, b *bed, prefix string) []servers.Server {
	t.Helper()
	page, err := servers.List(b.compute, servers.ListOpts{Name: "^" + regexp.QuoteMeta(prefix)}).AllPages(ctx)
	if err != nil {
		t.Fatalf("cannot list servers: %v", err)
	}
	list, err := servers.ExtractServers(page)
	if err != nil {
		t.Fatalf("cannot list servers: %v", err)
	}
	return list
}

// serverNamed returns the project's server of that name, or nil.
func serverNamed(t testing.TB, b *bed, name string) *servers.Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, srv := range projectServers(t, ctx, b, name) {
		if srv.Name == name {
			return &srv
		}
	}
	return nil
}

// portsOf lists the ports of a server ID, gone or not.
func portsOf(t testing.TB, b *bed, serverID string) []ports.Port {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	page, err := ports.List(b.network, ports.ListOpts{DeviceID: serverID}).AllPages(ctx)
	if err != nil {
		t.Fatalf("cannot list ports: %v", err)
	}
	list, _ := ports.ExtractPorts(page)
	return list
}

// fakeGitHub serves a fake GitHub on loopback, for tests whose runners
// never come online (see playedGitHub for those that do).
func fakeGitHub(t testing.TB) *fakegithub.Server {
	t.Helper()
	return fakegithub.NewTest(t, fakegithub.Options{})
}

func githubClient(srv *fakegithub.Server) *gh.Client {
	client := gh.NewClient(nil).WithAuthToken(fakegithub.DefaultToken)
	client.BaseURL, _ = url.Parse(srv.URL() + "/")
	return client
}

// register registers a runner at the fake through GitHub's API, as the
// manager does, and returns its id and JIT config.
func register(t testing.TB, srv *fakegithub.Server, repo, name string) (int64, string) {
	t.Helper()
	owner, repoName, _ := strings.Cut(repo, "/")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	jit, _, err := githubClient(srv).Actions.GenerateRepoJITConfig(ctx, owner, repoName, &gh.GenerateJITConfigRequest{
		Name: name, RunnerGroupID: 1, Labels: []string{"self-hosted", "linux"},
	})
	if err != nil {
		t.Fatalf("cannot register runner %s: %v", name, err)
	}
	return jit.GetRunner().GetID(), jit.GetEncodedJITConfig()
}

// playedGitHub serves a fake GitHub for runners the VM player plays: the
// Cloud and the test reach its API on loopback (URL), the played runners
// its broker and downloads on the LXD bridge (AdvertiseURL), as
// tests/e2eopenstack does. It returns the bridge address too, which the
// runners' no_proxy must name.
func playedGitHub(t testing.TB) (*fakegithub.Server, string) {
	t.Helper()
	bridge := lxdtest.BridgeIP(t, lxdtest.Connect(t)).String()
	l, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	srv, err := fakegithub.New(fakegithub.Options{AdvertiseURL: fmt.Sprintf("http://%s:%d", bridge, port)})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(fmt.Sprintf("0.0.0.0:%d", port)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv, bridge
}

// startPlayer makes the bed's runner image playable and plays the servers
// of the Cloud's prefix as LXD containers of the Debian image under real
// cloud-init (tests/vmplayer) until the test ends.
func startPlayer(t testing.TB, cfg Config, interval time.Duration) *vmplayer.Player {
	t.Helper()
	vmplayer.RunnerImage(t)
	return vmplayer.Start(t, vmplayer.Options{Prefix: cfg.Identity.Prefix() + "-", Interval: interval})
}

// waitStatus polls Instances until the runner has the status.
func waitStatus(t testing.TB, c *Cloud, name string, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		instances, err := c.Instances(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		got := "absent"
		for _, inst := range instances {
			if inst.Name == name {
				got = string(inst.Status)
			}
		}
		if got == want {
			return
		}
		select {
		case <-deadline:
			t.Fatalf("runner %s is %s after %v, want %s", name, got, timeout, want)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// countingAPI counts the server creates a Cloud attempts.
type countingAPI struct {
	openstackAPI
	mu      sync.Mutex
	creates int
}

func (a *countingAPI) CreateServer(ctx context.Context, opts servers.CreateOpts) (*servers.Server, error) {
	a.mu.Lock()
	a.creates++
	a.mu.Unlock()
	return a.openstackAPI.CreateServer(ctx, opts)
}

func (a *countingAPI) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.creates
}

func newRunnerName(c *Cloud) string { return c.cfg.Identity.NewName() }

func mustPrepare(t testing.TB, c *Cloud) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := c.Prepare(ctx, nil); err != nil {
		t.Fatal(err)
	}
}
