package lxd

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	gh "github.com/google/go-github/v62/github"

	"github.com/canonical/github-runner-charm/src/config"
	"github.com/canonical/github-runner-charm/src/runner"
	"github.com/canonical/github-runner-charm/tests/fakegithub"
	"github.com/canonical/github-runner-charm/tests/lxdtest"
)

// baseImage is the busybox image tests/lxd/setup.sh imports.
const baseImage = lxdtest.BaseImageAlias

const testRepo = "canonical/lxd-test"

// requireLXD skips a test when no LXD daemon with the test base image
// answers, and fails it in CI (CI=true), where LXD must be there.
func requireLXD(t testing.TB) {
	t.Helper()
	lxdtest.Connect(t)
}

// testPrefix is a unique runner prefix for one test (lxdtest's, without
// its trailing "-"), whose instances lxdtest deletes at the end and then
// checks that none is left.
func testPrefix(t testing.TB) string {
	t.Helper()
	return strings.TrimSuffix(lxdtest.Prefix(t, lxdtest.Connect(t)), "-")
}

// lxc runs the lxc client, bounded.
func lxc(t testing.TB, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "lxc", args...).CombinedOutput()
	return string(out), err
}

func mustLXC(t testing.TB, args ...string) string {
	t.Helper()
	out, err := lxc(t, args...)
	if err != nil {
		t.Fatalf("lxc %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// bridgeIP is the address of the default profile's bridge, where the host
// serves the fake GitHub to containers.
func bridgeIP(t testing.TB) string {
	t.Helper()
	return lxdtest.BridgeIP(t, lxdtest.Connect(t)).String()
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// testModel is the model UUID of the tests' runner identities.
const testModel = "3c5b1f5c-8a51-4d5e-8e4b-6a0c2a9b7f10"

func testConfig(prefix string) Config {
	return Config{
		Identity: runner.Identity{Model: testModel, App: prefix, Unit: 0},
		LXD:      config.LXD{Type: Container, BaseImage: baseImage, CPU: 1, Memory: 256 << 20, Disk: 1 << 30},
	}
}

// newCloud makes and connects a Cloud and deletes, at the end of the test, every
// instance and image of its prefix.
func newCloud(t testing.TB, cfg Config) *Cloud {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.connected(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cleanupPrefix(t, c) })
	return c
}

// cleanupPrefix deletes what a test's prefix left: instances (runners and
// builders), images built by it, and its unit's bridge with its ACL.
func cleanupPrefix(t testing.TB, c *Cloud) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	instances, err := c.d.Instances(ctx)
	if err != nil {
		t.Errorf("cannot clean up: %v", err)
		return
	}
	for _, inst := range instances {
		if strings.HasPrefix(inst.Name, c.cfg.Identity.Prefix()+"-") {
			// remove, not Delete: builders and instances a test made
			// for another owner under the prefix go too.
			if err := c.remove(ctx, inst.Name); err != nil {
				t.Errorf("cannot clean up: %v", err)
			}
		}
	}
	images, err := c.d.Images(ctx)
	if err != nil {
		t.Errorf("cannot clean up: %v", err)
		return
	}
	for _, image := range images {
		if image.Properties[propBuiltBy] == c.cfg.Identity.Prefix() {
			if err := c.d.DeleteImage(ctx, image.Fingerprint); err != nil {
				t.Errorf("cannot clean up: %v", err)
			}
		}
	}
	if bridge := bridgeName(c.cfg.Identity.Prefix()); c.cfg.Network == "" {
		if n, err := c.setup.network(ctx, bridge); err == nil && c.ownNetwork(*n) == nil {
			for _, acl := range splitList(n.Config["security.acls"]) {
				if err := c.setup.takeOffACL(ctx, bridge, acl); err != nil {
					t.Errorf("cannot clean up: %v", err)
				}
			}
			if err := c.setup.deleteNetwork(ctx, bridge); err != nil {
				t.Errorf("cannot clean up: %v", err)
			}
		}
		if shared := c.sharedNetwork(); shared != "" {
			c.setup.takeOffACL(ctx, shared, c.denylistACL())
		}
		c.setup.deleteACL(ctx, c.denylistACL())
	}
}

// fakeGitHub serves a fake GitHub on the bridge, where containers reach it.
func fakeGitHub(t testing.TB) *fakegithub.Server {
	t.Helper()
	srv, err := fakegithub.New(fakegithub.Options{RunnerVersion: "2.999." + fmt.Sprint(time.Now().UnixNano()%1e6)})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(bridgeIP(t) + ":0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

// runnerTarball writes the fake's runner application where the GitHub
// client would have put it after verifying it.
func runnerTarball(t testing.TB, srv *fakegithub.Server) string {
	t.Helper()
	data, err := fakegithub.RunnerTarball(srv.RunnerVersion(), "x64")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), fakegithub.RunnerFilename(srv.RunnerVersion(), "x64"))
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// register registers a runner at the fake through GitHub's API, as the
// manager does, and returns its id and JIT config.
func register(t testing.TB, srv *fakegithub.Server, repo, name string) (int64, string) {
	t.Helper()
	client := gh.NewClient(nil).WithAuthToken(fakegithub.DefaultToken)
	client.BaseURL, _ = url.Parse(srv.URL() + "/")
	owner, repoName, _ := strings.Cut(repo, "/")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	jit, _, err := client.Actions.GenerateRepoJITConfig(ctx, owner, repoName, &gh.GenerateJITConfigRequest{
		Name: name, RunnerGroupID: 1, Labels: []string{"self-hosted", "linux"},
	})
	if err != nil {
		t.Fatalf("cannot register runner %s: %v", name, err)
	}
	return jit.GetRunner().GetID(), jit.GetEncodedJITConfig()
}
