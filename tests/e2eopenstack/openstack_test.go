// Package e2eopenstack runs the packed charm against the real OpenStack test
// bed: the hook harness runs dispatch, Pebble runs the manager, the manager
// creates runner servers in Nova. The fake compute driver boots nothing:
// tests/vmplayer plays each runner server as an LXD container of the Debian
// image under real cloud-init, so the user-data the manager wrote starts the
// runner, which registers at the fake GitHub (on the LXD bridge), runs its
// job and powers off; the player then stops the server, as a guest's
// poweroff would.
package e2eopenstack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"gopkg.in/yaml.v3"

	"github.com/canonical/github-runner-charm/src/runner"
	"github.com/canonical/github-runner-charm/tests/fakegithub"
	"github.com/canonical/github-runner-charm/tests/harness"
	"github.com/canonical/github-runner-charm/tests/lxdtest"
	"github.com/canonical/github-runner-charm/tests/openstacktest"
	"github.com/canonical/github-runner-charm/tests/vmplayer"
)

func TestMain(m *testing.M) {
	os.Exit(harness.Main(m))
}

const (
	repo  = "canonical/runners"
	token = "ghp_OPENSTACK_E2E_TOKEN_0123456789"
)

// oneCloud keeps only cloud name from a clouds.yaml: the charm uses the
// first cloud, and a map's first entry is not a thing to rely on.
func oneCloud(t *testing.T, cloudsYAML []byte, name string) string {
	var doc struct {
		Clouds map[string]any `yaml:"clouds"`
	}
	if err := yaml.Unmarshal(cloudsYAML, &doc); err != nil {
		t.Fatal(err)
	}
	out, err := yaml.Marshal(map[string]any{"clouds": map[string]any{name: doc.Clouds[name]}})
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// osBed is a deployed unit whose runners are OpenStack servers.
type osBed struct {
	unit    *harness.Unit
	github  *fakegithub.Server
	compute *gophercloud.ServiceClient // direct, not through any test proxy
	network *gophercloud.ServiceClient
	prefix  string // "<app>-<model tag>-0-": this unit's runner names
	player  *vmplayer.Player
}

// startGitHub serves a fake GitHub until the test ends: the manager reaches
// its API on loopback (URL), the played runners its broker and downloads
// on the LXD bridge, as tests/stack does for LXD.
func startGitHub(t *testing.T) *fakegithub.Server {
	t.Helper()
	l, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	fake, err := fakegithub.New(fakegithub.Options{
		Tokens:       []fakegithub.Token{{Value: token, Scope: repo}},
		AdvertiseURL: fmt.Sprintf("http://%s:%d", lxdtest.BridgeIP(t, lxdtest.Connect(t)), port),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := fake.Start(fmt.Sprintf("0.0.0.0:%d", port)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fake.Close() })
	return fake
}

// startPlayer makes the bed's runner image playable and plays the servers
// of prefix until the test ends.
func startPlayer(t *testing.T, prefix string) *vmplayer.Player {
	t.Helper()
	vmplayer.RunnerImage(t)
	return vmplayer.Start(t, vmplayer.Options{Prefix: prefix})
}

// deployOnOpenStack deploys a unit keeping two runners on the test bed's
// cloud; charmCloudsYAML is what the charm is configured with, or "" for
// the bed's own cloud.
func deployOnOpenStack(t *testing.T, appPrefix string, charmCloudsYAML func(cloudsYAML []byte, cloudName string) string) *osBed {
	t.Helper()
	cloudsYAML, cloudName := openstacktest.Cloud(t)
	provider, eo := openstacktest.Connect(t, cloudsYAML, cloudName)
	compute, err := openstack.NewComputeV2(provider, eo)
	if err != nil {
		t.Fatal(err)
	}
	network, err := openstack.NewNetworkV2(provider, eo)
	if err != nil {
		t.Fatal(err)
	}
	fake := startGitHub(t)
	forCharm := oneCloud(t, cloudsYAML, cloudName)
	if charmCloudsYAML != nil {
		forCharm = charmCloudsYAML(cloudsYAML, cloudName)
	}

	var b [3]byte
	rand.Read(b[:])
	app := appPrefix + hex.EncodeToString(b[:])
	prefix := runner.Identity{Model: harness.DefaultModel, App: app, Unit: 0}.Prefix() + "-"
	openstacktest.CleanupServers(t, compute, prefix)
	player := startPlayer(t, prefix)
	u := harness.New(t, harness.Options{App: app, Leader: true})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("manager logs:\n%s", u.ServiceLogs())
		}
	})
	u.SetConfig(map[string]any{
		"path": repo, "token": token, "github-api-url": fake.URL(), "virtual-machines": 2,
		"openstack-clouds-yaml": forCharm,
		"openstack-flavor":      openstacktest.FlavorName, "openstack-network": openstacktest.NetworkName,
		"openstack-image": openstacktest.ImageName,
	})
	u.Deploy()
	return &osBed{unit: u, github: fake, compute: compute, network: network, prefix: prefix, player: player}
}

func TestOpenStackRunnersThroughTheCharm(t *testing.T) {
	bed := deployOnOpenStack(t, "ose2e", nil)
	u, fake, compute, prefix := bed.unit, bed.github, bed.compute, bed.prefix

	t.Log("two runner servers boot their user-data, and their runners come online at GitHub")
	start := time.Now()
	waitFor(t, 3*time.Minute, "2 ACTIVE runner servers with their runners online", func() bool {
		u.Action("reconcile-runners", nil)
		return len(activeServers(t, compute, prefix)) == 2 && len(onlineOf(fake, prefix)) == 2
	})
	t.Logf("2 runners online after %v", time.Since(start).Round(time.Second))
	// One more cycle, so that the manager's last view (what check-runners
	// and the status report) is the one with both online.
	u.Action("reconcile-runners", nil)
	r := u.Action("check-runners", nil)
	if r.Status != "completed" || r.Results["online"] != "2" || len(strings.Split(r.Results["runners"].(string), ",")) != 2 {
		t.Errorf("check-runners: %+v", r)
	}
	u.Hook("update-status")
	if s := u.Status(); s.Status != "active" || !strings.Contains(s.Message, "2 runners: 2 idle, 0 busy") {
		t.Errorf("status with both runners online = %+v", s)
	}

	t.Log("a job runs in a runner, which then powers off: its server stops, the manager replaces it")
	start = time.Now()
	job, err := fake.AssignJobToAny(repo, []string{"self-hosted", "linux"}, fakegithub.JobSpec{Command: `echo "job ran in $RUNNER_NAME on $(hostname)"`})
	if err != nil {
		t.Fatal(err)
	}
	ids := serverIDs(t, compute, prefix)
	job = waitJob(t, fake, job.ID)
	if job.ExitCode != 0 || !strings.Contains(job.Output, "job ran in "+job.RunnerName+" on "+job.RunnerName) {
		t.Errorf("job: exit %d, output %q, want it run in %s", job.ExitCode, job.Output, job.RunnerName)
	}
	bed.player.WaitStopped(t, ids[job.RunnerName], 2*time.Minute)
	waitFor(t, 3*time.Minute, "the job's server to go and 2 runners online again", func() bool {
		u.Action("reconcile-runners", nil)
		_, left := allServers(t, compute, prefix)[job.RunnerName]
		return !left && len(activeServers(t, compute, prefix)) == 2 && len(onlineOf(fake, prefix)) == 2
	})
	bed.player.WaitGone(t, ids[job.RunnerName], time.Minute)
	t.Logf("job, poweroff and replacement took %v", time.Since(start).Round(time.Second))

	t.Log("flush-runners replaces the (idle) runners")
	before := activeServers(t, compute, prefix)
	if r := u.Action("flush-runners", nil); r.Status != "completed" || r.Results["removed"] != "2" {
		t.Errorf("flush-runners: %+v", r)
	}
	waitFor(t, 2*time.Minute, "2 new ACTIVE runner servers", func() bool {
		now := activeServers(t, compute, prefix)
		return len(now) == 2 && !overlaps(before, now)
	})

	t.Log("the manager killed while creating servers: Pebble restarts it, nothing leaks")
	flushed := make(chan harness.ActionResult, 1)
	registered := fake.Count(fakegithub.RepoJITConfig)
	go func() { flushed <- u.Action("flush-runners", nil) }()
	// A create registers its runner first, then waits seconds for Nova: a
	// new JIT config is the sign, where the server counts change only for
	// a moment (GitHub-first removal, then creates right after).
	waitFor(t, time.Minute, "the flush to start creating", func() bool { return fake.Count(fakegithub.RepoJITConfig) > registered })
	if pid := u.ManagerPID(); pid == 0 {
		t.Fatal("cannot find the manager process")
	} else if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-flushed
	waitFor(t, time.Minute, "Pebble to restart the manager", func() bool { return u.ManagerPID() != 0 })
	waitFor(t, 3*time.Minute, "exactly 2 servers matching 2 GitHub runners", func() bool {
		u.Action("reconcile-runners", nil)
		servers, runners := allServers(t, compute, prefix), runnersOf(fake, prefix)
		if len(servers) != 2 || len(runners) != 2 {
			return false
		}
		for _, name := range runners {
			if servers[name] != "ACTIVE" {
				return false
			}
		}
		return true
	})

	t.Log("a missing image blocks the unit, names the image, and creates nothing")
	registrations := fake.Count(fakegithub.RepoJITConfig)
	u.Action("flush-runners", nil)
	u.Configure(map[string]any{"openstack-image": "no-such-image"})
	u.Action("reconcile-runners", nil)
	u.Action("reconcile-runners", nil)
	u.Hook("update-status")
	if s := u.Status(); s.Status != "blocked" || !strings.Contains(s.Message, `"no-such-image"`) {
		t.Errorf("status with a missing image = %+v", s)
	}
	if n := fake.Count(fakegithub.RepoJITConfig) - registrations; n > 2 {
		t.Errorf("%d runners registered while the image is missing (the flush's replacements are the most allowed)", n)
	}

	t.Log("remove leaves no server, port, GitHub runner, security group or state of the unit")
	group := prefix + "runners"
	if n := securityGroups(t, bed.network, group); n != 1 {
		t.Fatalf("%d security groups %s while the unit runs, want 1", n, group)
	}
	u.Configure(map[string]any{"openstack-image": openstacktest.ImageName})
	bed.removeLeavesNothing(t)
}

// securityGroups counts the project's security groups named name.
func securityGroups(t *testing.T, network *gophercloud.ServiceClient, name string) int {
	t.Helper()
	return len(securityGroupIDs(t, network, name))
}

func allServers(t *testing.T, compute *gophercloud.ServiceClient, prefix string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, s := range listServers(t, compute, prefix) {
		out[s.Name] = s.Status
	}
	return out
}

// listServers lists the servers whose names start with prefix.
func listServers(t *testing.T, compute *gophercloud.ServiceClient, prefix string) []servers.Server {
	t.Helper()
	list, err := tryListServers(compute, prefix)
	if err != nil {
		t.Fatal(err)
	}
	return list
}

func tryListServers(compute *gophercloud.ServiceClient, prefix string) ([]servers.Server, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Nova's name filter is a regular expression.
	pages, err := servers.List(compute, servers.ListOpts{Name: "^" + prefix}).AllPages(ctx)
	if err != nil {
		return nil, err
	}
	list, err := servers.ExtractServers(pages)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(list, func(s servers.Server) bool { return !strings.HasPrefix(s.Name, prefix) }), nil
}

func activeServers(t *testing.T, compute *gophercloud.ServiceClient, prefix string) []string {
	var names []string
	for name, status := range allServers(t, compute, prefix) {
		if status == "ACTIVE" {
			names = append(names, name)
		}
	}
	return names
}

// onlineOf names the unit's runners GitHub shows online, in any scope.
func onlineOf(fake *fakegithub.Server, prefix string) []string {
	var names []string
	for _, r := range fake.Runners("") {
		if strings.HasPrefix(r.Name, prefix) && r.Status == "online" {
			names = append(names, r.Name)
		}
	}
	return names
}

// serverIDs maps the names of the servers of prefix to their IDs.
func serverIDs(t *testing.T, compute *gophercloud.ServiceClient, prefix string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, s := range listServers(t, compute, prefix) {
		out[s.Name] = s.ID
	}
	return out
}

// waitJob waits up to two minutes for a job to end, and returns it.
func waitJob(t *testing.T, fake *fakegithub.Server, id int64) fakegithub.Job {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	job, err := fake.WaitJob(ctx, id)
	if err != nil {
		t.Fatalf("job %d did not end: %v", id, err)
	}
	return job
}

func runnersOf(fake *fakegithub.Server, prefix string) []string {
	return runnersIn(fake, repo, prefix)
}

// runnersIn names the GitHub runners of scope whose names start with prefix.
func runnersIn(fake *fakegithub.Server, scope, prefix string) []string {
	var names []string
	for _, r := range fake.Runners(scope) {
		if strings.HasPrefix(r.Name, prefix) {
			names = append(names, r.Name)
		}
	}
	return names
}

func overlaps(a, b []string) bool {
	for _, x := range a {
		for _, y := range b {
			if x == y {
				return true
			}
		}
	}
	return false
}

func waitFor(t *testing.T, limit time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.After(limit)
	for !ok() {
		select {
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(2 * time.Second):
		}
	}
}
