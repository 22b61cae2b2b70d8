package lxd

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/src/cloud"
	"github.com/canonical/github-runner-charm/src/cloud/boot"
	"github.com/canonical/github-runner-charm/src/runner"
	"github.com/canonical/github-runner-charm/tests/fakegithub"
)

// buildImage builds the runner image from the fake's tarball, after what
// Prepare does first (the unit's bridge, the denylist).
func buildImage(t *testing.T, c *Cloud, srv *fakegithub.Server) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := c.ready(ctx); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	alias, err := c.ensureImage(ctx, runnerTarball(t, srv), srv.RunnerVersion())
	if err != nil {
		t.Fatalf("cannot build runner image: %v", err)
	}
	t.Logf("runner image %s built in %v", alias, time.Since(start).Round(time.Millisecond))
	return alias
}

func waitStatus(t *testing.T, c *Cloud, name string, want cloud.Status, timeout time.Duration) cloud.Instance {
	t.Helper()
	deadline := time.After(timeout)
	for {
		instances, err := c.Instances(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var got cloud.Instance
		for _, inst := range instances {
			if inst.Name == name {
				got = inst
			}
		}
		if got.Status == want {
			return got
		}
		select {
		case <-deadline:
			out, _ := lxc(t, "exec", name, "--", "cat", "/var/log/github-runner.log", "/var/log/boot.log")
			t.Fatalf("instance %s is %q after %v, want %q; logs:\n%s", name, got.Status, timeout, want, out)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// The whole life of runners: image built from the fake's runner tarball,
// three runners created through the Cloud go online at the fake GitHub,
// one runs a job and its instance stops, deleting leaves nothing.
func TestRunnersLifecycle(t *testing.T) {
	requireLXD(t)
	srv := fakeGitHub(t)
	c := newCloud(t, testConfig(testPrefix(t)))
	// Each build is told to the manager's metrics (OnImageBuild), once.
	var builds []error
	c.OnImageBuild(func(d time.Duration, err error) { builds = append(builds, err) })
	alias := buildImage(t, c, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	// A second ensureImage of the same version reuses the image.
	fingerprint := c.image
	start := time.Now()
	if again, err := c.ensureImage(ctx, runnerTarball(t, srv), srv.RunnerVersion()); err != nil || again != alias || c.image != fingerprint {
		t.Fatalf("ensureImage again = %q, %v (fingerprint %s, was %s); want the same image", again, err, c.image, fingerprint)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("reusing the image took %v", d)
	}
	if len(builds) != 1 || builds[0] != nil {
		t.Errorf("image builds observed: %v, want one success (a reused image is no build)", builds)
	}

	type created struct {
		name string
		id   int64
		jit  string
	}
	var runners []created
	for range 3 {
		name := c.cfg.Identity.NewName()
		id, jit := register(t, srv, testRepo, name)
		runners = append(runners, created{name, id, jit})
	}
	scope := runner.NewScope(srv.URL(), testRepo)
	var wg sync.WaitGroup
	errs := make([]error, len(runners))
	for i, r := range runners {
		wg.Go(func() {
			errs[i] = c.Create(ctx, cloud.CreateRequest{Name: r.name, RunnerID: r.id, Scope: scope, JITConfig: r.jit})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if err := srv.WaitRunnersOnline(ctx, testRepo, 3); err != nil {
		for _, r := range runners {
			out, _ := lxc(t, "exec", r.name, "--", "cat", "/var/log/github-runner.log")
			t.Logf("%s:\n%s", r.name, out)
		}
		t.Fatal(err)
	}

	instances, err := c.Instances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(instances) != 3 {
		t.Fatalf("Instances = %+v, want the 3 runners", instances)
	}
	for _, inst := range instances {
		want := -1
		for i, r := range runners {
			if r.name == inst.Name {
				want = i
			}
		}
		if want < 0 || inst.RunnerID != runners[want].id || inst.Status != cloud.Running || time.Since(inst.CreatedAt) > 5*time.Minute {
			t.Errorf("instance %+v: want a running runner of id %d created just now", inst, runners[max(want, 0)].id)
		}
		// Whose it is and where it is registered, read back from LXD.
		if inst.Owner != c.cfg.Identity.Owner() || inst.Scope != scope {
			t.Errorf("instance %s: owner %+v, scope %+v; want %+v, %+v", inst.Name, inst.Owner, inst.Scope, c.cfg.Identity.Owner(), scope)
		}
	}

	// Limits and metadata are LXD config, for LXD to enforce and a fresh
	// manager to read.
	expanded := mustLXC(t, "config", "show", runners[0].name, "--expanded")
	for _, want := range []string{"limits.cpu: \"1\"", "limits.memory: \"268435456\"", "size: \"1073741824\"",
		"user.github-runner-unit: " + c.cfg.Identity.UnitName(), fmt.Sprintf("user.github-runner-id: \"%d\"", runners[0].id),
		"user.github-runner-model: " + c.cfg.Identity.Model, "user.github-runner-scope: " + scope.String()} {
		if !strings.Contains(expanded, want) {
			t.Errorf("instance config lacks %s:\n%s", want, expanded)
		}
	}

	// The JIT config is nowhere but in its file (and the runner's own).
	secretChecks(t, runners[0].name, runners[0].jit)

	job, err := srv.AssignJob(runners[1].id, fakegithub.JobSpec{Command: "echo hello from $RUNNER_NAME"})
	if err != nil {
		t.Fatal(err)
	}
	if job, err = srv.WaitJob(ctx, job.ID); err != nil || job.ExitCode != 0 || !strings.Contains(job.Output, "hello from "+runners[1].name) {
		t.Fatalf("job = %+v, %v; want it done by %s", job, err, runners[1].name)
	}
	if err := srv.WaitRunnerGone(ctx, runners[1].id); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, c, runners[1].name, cloud.Stopped, time.Minute)
	for _, other := range []string{runners[0].name, runners[2].name} {
		waitStatus(t, c, other, cloud.Running, time.Second)
	}

	for _, r := range runners {
		if err := c.Delete(ctx, r.name); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Delete(ctx, runners[0].name); err != nil {
		t.Errorf("deleting an instance already gone: %v", err)
	}
	assertNothingLeft(t, c, alias)
}

// secretChecks asserts that jit, once its runner is online, is in no file
// of the instance (the start script deleted it once read), nor in the
// instance's config, any process's argv or the log.
func secretChecks(t *testing.T, name, jit string) {
	t.Helper()
	for _, args := range [][]string{{"config", "show", name}, {"config", "show", name, "--expanded"}} {
		if out := mustLXC(t, args...); strings.Contains(out, jit) {
			t.Errorf("lxc %s shows the JIT config", strings.Join(args, " "))
		}
	}
	cmdlines := mustLXC(t, "exec", name, "--", "sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '")
	if strings.Contains(cmdlines, jit) || strings.Contains(cmdlines, jit[:40]) {
		t.Errorf("a process's argv holds the JIT config")
	}
	if !strings.Contains(cmdlines, "Runner.Listener") {
		t.Errorf("no runner process among:\n%s", cmdlines)
	}
	// The runner has read its config (it is online): the file is gone, and
	// its directory is root's alone.
	stat := strings.TrimSpace(mustLXC(t, "exec", name, "--", "stat", "-c", "%a %u %g", "/var/lib/github-runner"))
	if stat != "700 0 0" {
		t.Errorf("the JIT config's directory has mode/owner %q, want 700, root's", stat)
	}
	if out, err := lxc(t, "exec", name, "--", "test", "-e", boot.JITConfigPath); err == nil {
		t.Errorf("the JIT config file is still there while the runner runs %s", out)
	}
	if out := mustLXC(t, "exec", name, "--", "sh", "-c", "grep -rl -F '"+jit[:40]+"' /var/lib/github-runner /etc /tmp /root /home 2>/dev/null; true"); strings.TrimSpace(out) != "" {
		t.Errorf("the JIT config is in files of the instance:\n%s", out)
	}
	// Nor is it in the log.
	if out := mustLXC(t, "exec", name, "--", "cat", "/var/log/github-runner.log"); strings.Contains(out, jit) {
		t.Errorf("the start script's log holds the JIT config")
	}
}

// assertNothingLeft checks that no instance of the prefix remains and no
// image but the runner image.
func assertNothingLeft(t *testing.T, c *Cloud, runnerImage string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	instances, err := c.d.Instances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, inst := range instances {
		// The runner image's template stays with the image (template.go).
		if strings.HasPrefix(inst.Name, c.cfg.Identity.Prefix()) && inst.Name != c.templateName(c.image, c.rootPool()) {
			t.Errorf("instance %s (%s) is left", inst.Name, inst.Status)
		}
	}
	images, err := c.d.Images(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, image := range images {
		if image.Properties[propBuiltBy] != c.cfg.Identity.Prefix() {
			continue
		}
		aliases := []string{}
		for _, a := range image.Aliases {
			aliases = append(aliases, a.Name)
		}
		if len(aliases) != 1 || aliases[0] != runnerImage {
			t.Errorf("image %s %v is left besides the runner image %s", image.Fingerprint[:12], aliases, runnerImage)
		}
	}
}

// Proxies and the Docker Hub mirror reach the runner's environment, the
// instance's /etc/environment and Docker's daemon.json.
func TestProxiesAndMirror(t *testing.T) {
	requireLXD(t)
	srv := fakeGitHub(t)
	cfg := testConfig(testPrefix(t))
	cfg.Runner.HTTPProxy = "http://proxy.example:3128"
	cfg.Runner.HTTPSProxy = "http://proxy.example:3129"
	cfg.Runner.NoProxy = "localhost,127.0.0.1,10.0.0.0/8"
	cfg.Runner.DockerhubMirror = "https://mirror.example:5000"
	c := newCloud(t, cfg)
	buildImage(t, c, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	name := c.cfg.Identity.NewName()
	// Not a JIT config GitHub made: the runner fails at once, and the
	// instance powers off; the files are what this test is about.
	if err := c.Create(ctx, cloud.CreateRequest{Name: name, RunnerID: 7, JITConfig: "bm90LWEtcmVhbC1qaXQtY29uZmln"}); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, c, name, cloud.Stopped, time.Minute)
	pull := func(path string) string { return mustLXC(t, "file", "pull", name+path, "-") }

	environment := pull("/etc/environment")
	for _, want := range []string{
		"http_proxy='http://proxy.example:3128'", "HTTP_PROXY='http://proxy.example:3128'",
		"https_proxy='http://proxy.example:3129'", "no_proxy='localhost,127.0.0.1,10.0.0.0/8'",
		"DOCKERHUB_MIRROR='https://mirror.example:5000'",
	} {
		if !strings.Contains(environment, want) {
			t.Errorf("/etc/environment lacks %s:\n%s", want, environment)
		}
	}
	if daemonJSON := pull(boot.DockerConfig); !strings.Contains(daemonJSON, `"registry-mirrors": [`+"\n"+`    "https://mirror.example:5000"`) {
		t.Errorf("daemon.json = %s, want the mirror in registry-mirrors", daemonJSON)
	}
	// The runner process saw them: its log says what it tried.
	if log := pull("/var/log/github-runner.log"); !strings.Contains(log, "starting the runner") {
		t.Errorf("the runner never started:\n%s", log)
	}
}

// A failed create leaves nothing: not with an image LXD does not have,
// nor when a step after the instance exists fails.
func TestCreateFailureLeavesNothing(t *testing.T) {
	requireLXD(t)
	srv := fakeGitHub(t)
	c := newCloud(t, testConfig(testPrefix(t)))
	alias := buildImage(t, c, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	good := c.image
	c.useImage(strings.Repeat("0", 64))
	err := c.Create(ctx, cloud.CreateRequest{Name: c.cfg.Identity.NewName(), RunnerID: 1, JITConfig: "c2VjcmV0"})
	if !errors.Is(err, ErrImageNotFound) {
		t.Errorf("Create from a missing image: %v, want ErrImageNotFound", err)
	}
	c.useImage(good)

	// The JIT config's push fails after the instance exists.
	c.d = &failingDaemon{daemon: c.d, failPush: boot.JITConfigPath}
	err = c.Create(ctx, cloud.CreateRequest{Name: c.cfg.Identity.NewName(), RunnerID: 2, JITConfig: "c2VjcmV0LWppdA=="})
	if err == nil || !strings.Contains(err.Error(), "injected") {
		t.Errorf("Create with a failing push: %v, want the injected failure", err)
	}
	if err != nil && strings.Contains(err.Error(), "c2VjcmV0LWppdA==") {
		t.Errorf("the error holds the JIT config: %v", err)
	}
	c.d = c.setup

	// A bad base image fails the build and leaves no builder.
	bad := newCloud(t, Config{Identity: c.cfg.Identity, LXD: c.cfg.LXD})
	bad.cfg.LXD.BaseImage = "no-such-image-" + randomHex(3)
	var badBuilds []error
	bad.OnImageBuild(func(d time.Duration, err error) { badBuilds = append(badBuilds, err) })
	if _, err := bad.ensureImage(ctx, runnerTarball(t, srv), "9.9.9-bad"); !errors.Is(err, ErrImageNotFound) {
		t.Errorf("ensureImage from a missing base image: %v, want ErrImageNotFound", err)
	}
	if len(badBuilds) != 1 || !errors.Is(badBuilds[0], ErrImageNotFound) {
		t.Errorf("failed image builds observed: %v, want the one failure", badBuilds)
	}
	assertNothingLeft(t, c, alias)
}

// failingDaemon makes one step of Create fail.
type failingDaemon struct {
	daemon
	failPush string
}

func (f *failingDaemon) PushFile(ctx context.Context, instance string, file instanceFile) error {
	if file.Path == f.failPush {
		return fmt.Errorf("injected failure writing %s", file.Path)
	}
	return f.daemon.PushFile(ctx, instance, file)
}

// A newer runner version builds a new image; the old one goes.
func TestNewVersionReplacesImage(t *testing.T) {
	requireLXD(t)
	srv := fakeGitHub(t)
	c := newCloud(t, testConfig(testPrefix(t)))
	old := buildImage(t, c, srv)
	oldFingerprint := c.image
	if err := srv.SetRunnerVersion(srv.RunnerVersion() + "1"); err != nil {
		t.Fatal(err)
	}
	next := buildImage(t, c, srv)
	if next == old || c.image == oldFingerprint {
		t.Fatalf("new version gave image %s (%s), the old one was %s (%s)", next, c.image, old, oldFingerprint)
	}
	if out, err := lxc(t, "image", "show", old); err == nil {
		t.Errorf("old image %s still there:\n%s", old, out)
	}
	assertNothingLeft(t, c, next)
}
