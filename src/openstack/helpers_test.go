package openstack

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gh "github.com/google/go-github/v62/github"
	"github.com/gophercloud/gophercloud/v2"
	gcopenstack "github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/groups"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"

	"github.com/canonical/github-runner-charm/src/cloud/boot"
	"github.com/canonical/github-runner-charm/src/config"
	"github.com/canonical/github-runner-charm/src/runner"
	"github.com/canonical/github-runner-charm/tests/fakegithub"
	"github.com/canonical/github-runner-charm/tests/openstacktest"
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

// fakeGitHub serves a fake GitHub on loopback, where the helper that
// plays the VM runs the runner application.
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

// vm plays a runner server, which the fake virt driver does not boot: it
// reads the server's user-data through the API, as an admin (nobody else
// may), checks it, takes the JIT config out of it and runs the fake's
// runner application with it the way the start script does; when the
// runner exits after its job, it stops the server through the API, as the
// start script's poweroff would.
type vm struct {
	serverID string
	userData string
	output   bytes.Buffer
	done     chan error
}

var jitHereDoc = regexp.MustCompile(`(?m)^\s*cat >` + regexp.QuoteMeta(boot.JITConfigPath) + ` <<'` + jitDelimiter + `'\n([^\n]*)\n` + jitDelimiter + `$`)

func playVM(t testing.TB, b *bed, srv *fakegithub.Server, name string) *vm {
	t.Helper()
	v, err := startVM(t, b, srv, name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// startVM is playVM for any goroutine: it returns its error.
func startVM(t testing.TB, b *bed, srv *fakegithub.Server, name string) (*vm, error) {
	boot, err := readBoot(b, name)
	if err != nil {
		return nil, err
	}
	dir, err := installRunner(t, srv)
	if err != nil {
		return nil, err
	}
	return boot.run(t, b, dir)
}

// vmBoot is what a played VM boots with: its server and its user-data.
type vmBoot struct {
	serverID, userData, jit string
}

// readBoot reads the server's user-data through the API, as an admin, as
// a VM reads its config drive, and takes the JIT config out of it.
func readBoot(b *bed, name string) (*vmBoot, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	page, err := servers.List(b.compute, servers.ListOpts{Name: "^" + regexp.QuoteMeta(name) + "$"}).AllPages(ctx)
	if err != nil {
		return nil, fmt.Errorf("cannot list servers: %w", err)
	}
	list, _ := servers.ExtractServers(page)
	if len(list) != 1 {
		return nil, fmt.Errorf("found %d servers %s to play, want 1", len(list), name)
	}
	asAdmin, err := servers.Get(ctx, b.admin, list[0].ID).Extract()
	if err != nil {
		return nil, fmt.Errorf("cannot get server %s as admin: %w", name, err)
	}
	if asAdmin.Userdata == nil {
		return nil, fmt.Errorf("server %s has no user-data", name)
	}
	script, err := base64.StdEncoding.DecodeString(*asAdmin.Userdata)
	if err != nil {
		return nil, fmt.Errorf("user-data of %s is not base64: %w", name, err)
	}
	m := jitHereDoc.FindStringSubmatch(string(script))
	if m == nil {
		return nil, fmt.Errorf("user-data of %s carries no JIT config:\n%s", name, script)
	}
	return &vmBoot{serverID: asAdmin.ID, userData: string(script), jit: m[1]}, nil
}

// run starts the runner application unpacked in dir with the JIT config,
// the way the start script does.
func (boot *vmBoot) run(t testing.TB, b *bed, dir string) (*vm, error) {
	v := &vm{serverID: boot.serverID, userData: boot.userData, done: make(chan error, 1)}
	// As the start script does: the JIT config in the environment.
	cmd := exec.Command("sh", filepath.Join(dir, "run.sh"))
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "RUNNER_ALLOW_RUNASROOT=1", "ACTIONS_RUNNER_INPUT_JITCONFIG=" + boot.jit}
	cmd.Stdout, cmd.Stderr = &v.output, &v.output
	// The listener's long poll is a child of its own: the whole group
	// goes when the test ends, and nothing holds the output pipe open.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		err := cmd.Wait()
		if err == nil {
			// The start script powers off; the API's stop is the same to Nova.
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			err = servers.Stop(ctx, b.compute, boot.serverID).ExtractErr()
		}
		v.done <- err
	}()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-v.done
	})
	return v, nil
}

var (
	tarballMu sync.Mutex
	tarballs  = map[*fakegithub.Server][]byte{}
)

// installRunner downloads the fake's runner application, once per fake,
// checks it and unpacks it into a fresh directory, as the image builder
// does into /home/ubuntu/actions-runner.
func installRunner(t testing.TB, srv *fakegithub.Server) (string, error) {
	tarballMu.Lock()
	data, ok := tarballs[srv]
	if !ok {
		var err error
		if data, err = downloadRunner(srv); err != nil {
			tarballMu.Unlock()
			return "", err
		}
		tarballs[srv] = data
	}
	tarballMu.Unlock()
	dir := t.TempDir()
	archive := filepath.Join(t.TempDir(), "actions-runner.tar.gz")
	if err := os.WriteFile(archive, data, 0o600); err != nil {
		return "", err
	}
	if out, err := exec.Command("tar", "-xzf", archive, "-C", dir).CombinedOutput(); err != nil {
		return "", fmt.Errorf("cannot unpack the runner: %v\n%s", err, out)
	}
	return dir, nil
}

func downloadRunner(srv *fakegithub.Server) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	owner, repo, _ := strings.Cut(testRepo, "/")
	apps, _, err := githubClient(srv).Actions.ListRunnerApplicationDownloads(ctx, owner, repo)
	if err != nil {
		return nil, fmt.Errorf("cannot list runner downloads: %w", err)
	}
	for _, app := range apps {
		if app.GetOS() != "linux" || app.GetArchitecture() != "x64" {
			continue
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, app.GetDownloadURL(), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, fmt.Errorf("cannot download the runner: %w", err)
		}
		defer resp.Body.Close()
		data, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("cannot download the runner: %v %s", err, resp.Status)
		}
		sum := sha256.Sum256(data)
		if hex.EncodeToString(sum[:]) != app.GetSHA256Checksum() {
			return nil, errors.New("the runner download does not match its checksum")
		}
		return data, nil
	}
	return nil, errors.New("the fake offers no linux x64 runner")
}

// wait waits for the played runner to end and its server to be stopped.
func (v *vm) wait(t testing.TB, timeout time.Duration) {
	t.Helper()
	select {
	case err := <-v.done:
		v.done <- err // for the cleanup
		if err != nil {
			t.Fatalf("runner of server %s: %v; output:\n%s", v.serverID, err, v.output.String())
		}
	case <-time.After(timeout):
		t.Fatalf("runner of server %s did not end within %v; output:\n%s", v.serverID, timeout, v.output.String())
	}
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
