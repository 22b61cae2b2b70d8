package e2eopenstack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"

	"github.com/canonical/github-runner-charm/src/cloud/boot"
	"github.com/canonical/github-runner-charm/src/runner"
	"github.com/canonical/github-runner-charm/tests/fakegithub"
	"github.com/canonical/github-runner-charm/tests/harness"
	"github.com/canonical/github-runner-charm/tests/openstacktest"
	"github.com/canonical/github-runner-charm/tests/vmplayer"
)

// TestOpenStackImageBuildThroughTheCharm: with openstack-base-image and no
// other image source, the packed charm builds the runner image in the
// loopback OpenStack. The builder's user-data runs for real (the VM player
// plays it under cloud-init in a Debian container): it downloads the fake
// GitHub's runner application, checks it, runs the image build's scripts
// and powers off; the snapshot is a Glance image of the unit's name,
// properties and tags; the builder is gone; runners boot from the image
// (played from the builder's published container) with the runner
// application, its version file and the tools in place, and come online.
// Then a runner tarball whose checksum is not GitHub's fails the next
// build: no builder is left, the status says why, and the runner keeps
// its image.
func TestOpenStackImageBuildThroughTheCharm(t *testing.T) {
	cloudsYAML, cloudName := openstacktest.Cloud(t)
	provider, eo := openstacktest.Connect(t, cloudsYAML, cloudName)
	compute, err := openstack.NewComputeV2(provider, eo)
	if err != nil {
		t.Fatal(err)
	}
	glance, err := openstack.NewImageV2(provider, eo)
	if err != nil {
		t.Fatal(err)
	}
	fake := startGitHub(t)
	var b [3]byte
	rand.Read(b[:])
	app := "osbld" + hex.EncodeToString(b[:])
	id := runner.Identity{Model: harness.DefaultModel, App: app, Unit: 0}
	prefix := id.Prefix()
	openstacktest.CleanupServers(t, compute, prefix+"-")
	t.Cleanup(func() { deleteImagesOf(t, glance, prefix) })
	baseID := vmplayer.BaseImage(t)
	player := vmplayer.Start(t, vmplayer.Options{Prefix: prefix + "-"})
	u := harness.New(t, harness.Options{App: app, Leader: true})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("manager logs:\n%s", u.ServiceLogs())
		}
	})
	u.SetConfig(map[string]any{
		"path": repo, "token": token, "github-api-url": fake.URL(), "virtual-machines": 1,
		"openstack-clouds-yaml": oneCloud(t, cloudsYAML, cloudName),
		"openstack-flavor":      openstacktest.FlavorName, "openstack-network": openstacktest.NetworkName,
		"openstack-base-image": vmplayer.BaseImageName,
	})
	start := time.Now()
	u.Deploy()

	t.Log("a builder server boots the base image; its user-data runs in the player's container")
	builderName := regexp.MustCompile("^" + regexp.QuoteMeta(prefix) + `-img-[0-9a-f]{8}$`)
	var builder servers.Server
	waitFor(t, 5*time.Minute, "the image builder server", func() bool {
		for _, srv := range listServers(t, compute, prefix+"-") {
			if builderName.MatchString(srv.Name) {
				builder = srv
				return true
			}
		}
		return false
	})
	if ref, _ := builder.Image["id"].(string); ref != baseID {
		t.Errorf("builder %s boots from %q, want the base image %s", builder.Name, ref, baseID)
	}
	player.WaitPlayed(t, builder.ID, 3*time.Minute)
	player.WaitStopped(t, builder.ID, 30*time.Minute)
	t.Logf("the builder powered off %v after deploy", time.Since(start).Round(time.Second))

	version := fake.RunnerVersion()
	name := prefix + "-image-" + version + "-x64"
	var built images.Image
	waitFor(t, 5*time.Minute, "the built image active in Glance", func() bool {
		list := imagesNamed(t, glance, name)
		if len(list) == 1 && list[0].Status == images.ImageStatusActive && len(list[0].Tags) > 0 {
			built = list[0]
			return true
		}
		return false
	})
	for key, want := range map[string]string{
		"github-runner.version": version, "github-runner.arch": "x64", "github-runner.built-by": prefix,
		runner.MetaModel: harness.DefaultModel, runner.MetaUnit: id.UnitName(),
	} {
		if got, _ := built.Properties[key].(string); got != want {
			t.Errorf("image property %s = %q, want %q", key, got, want)
		}
	}
	if got, _ := built.Properties["github-runner.recipe"].(string); !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(got) {
		t.Errorf("image property github-runner.recipe = %q, want a recipe hash", got)
	}
	// Glance keeps tags as a set: their order is its own.
	if tags := slices.Sorted(slices.Values(built.Tags)); strings.Join(tags, ",") != strings.Join(slices.Sorted(slices.Values([]string{version, "x64"})), ",") {
		t.Errorf("image tags = %v, want [%s x64]", built.Tags, version)
	}
	waitFor(t, 2*time.Minute, "the builder deleted", func() bool {
		for _, srv := range listServers(t, compute, prefix+"-") {
			if builderName.MatchString(srv.Name) {
				return false
			}
		}
		return true
	})

	t.Log("a runner boots from the built image and comes online")
	var runnerID string
	waitFor(t, 10*time.Minute, "a runner server of the built image, online", func() bool {
		u.Action("reconcile-runners", nil)
		for _, srv := range listServers(t, compute, prefix+"-") {
			ref, _ := srv.Image["id"].(string)
			if id.Generation(srv.Name) == runner.Current && ref == built.ID && srv.Status == "ACTIVE" && strings.Contains(strings.Join(onlineOf(fake, prefix+"-"), ","), srv.Name) {
				runnerID = srv.ID
				return true
			}
		}
		return false
	})
	// The runner's container is the builder's, published: what the build
	// left in it is what every runner has.
	player.WaitPlayed(t, runnerID, time.Minute)
	if got := strings.TrimSpace(string(player.ReadFile(t, runnerID, "/etc/github-runner/runner-version"))); got != version {
		t.Errorf("/etc/github-runner/runner-version = %q, want %q", got, version)
	}
	for _, path := range []string{boot.DefaultRunnerDir + "/run.sh", boot.StartScriptPath} {
		if !player.HasFile(t, runnerID, path) {
			t.Errorf("the built image has no %s", path)
		}
	}
	for _, tool := range []string{"git", "jq", "curl", "docker"} {
		if r := player.Exec(t, runnerID, "sh", "-c", "command -v "+tool); r.ExitCode != 0 {
			t.Errorf("the built image has no %s (tools.sh)", tool)
		}
	}
	if player.HasFile(t, runnerID, "/var/lib/github-runner-image-build") {
		t.Errorf("the build's scratch directory is left in the image")
	}

	t.Log("a new runner version whose checksum is not GitHub's: the build fails before any builder, the runner keeps its image")
	fake.SetChecksumMode(fakegithub.ChecksumWrong)
	if err := fake.SetRunnerVersion(bumped(t, version)); err != nil {
		t.Fatal(err)
	}
	r := u.Action("update-dependencies", nil)
	if r.Status == "completed" {
		t.Errorf("update-dependencies with a bad checksum: %+v, want it failed", r)
	}
	// The action answers alone; the cycle's failed Prepare is what the
	// unit's status tells.
	u.Action("reconcile-runners", nil)
	u.Hook("update-status")
	if s := u.Status(); !strings.Contains(s.Message, "checksum") {
		t.Errorf("status after the failed build = %+v, want the checksum failure named", s)
	}
	for _, srv := range listServers(t, compute, prefix+"-") {
		if builderName.MatchString(srv.Name) {
			t.Errorf("builder %s is left after the failed build", srv.Name)
		}
		if ref, _ := srv.Image["id"].(string); id.Generation(srv.Name) == runner.Current && ref != built.ID {
			t.Errorf("runner %s boots from %s, want the last good image %s", srv.Name, ref, built.ID)
		}
	}
	if list := imagesNamed(t, glance, name); len(list) != 1 {
		t.Errorf("the last good image %s: %d images of its name, want 1", name, len(list))
	}

	t.Log("remove: the unit's image, builders and runners go")
	for _, hook := range []string{"stop", "remove"} {
		if r := u.Hook(hook); r.Code != 0 {
			t.Errorf("%s hook: exit %d: %s", hook, r.Code, r.Stderr)
		}
	}
	if list := imagesNamed(t, glance, name); len(list) != 0 {
		t.Errorf("the unit's image %s is left after remove", name)
	}
}

// bumped is version with its patch number one higher.
func bumped(t *testing.T, version string) string {
	parts := strings.Split(version, ".")
	n, err := strconv.Atoi(parts[len(parts)-1])
	if len(parts) != 3 || err != nil {
		t.Fatalf("runner version %q is not x.y.z", version)
	}
	parts[2] = strconv.Itoa(n + 1)
	return strings.Join(parts, ".")
}

func imagesNamed(t *testing.T, glance *gophercloud.ServiceClient, name string) []images.Image {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pages, err := images.List(glance, images.ListOpts{Name: name}).AllPages(ctx)
	if err != nil {
		t.Fatalf("cannot list images: %v", err)
	}
	list, err := images.ExtractImages(pages)
	if err != nil {
		t.Fatalf("cannot list images: %v", err)
	}
	return list
}

// deleteImagesOf deletes the images the unit of prefix built, should the
// test end before remove did.
func deleteImagesOf(t *testing.T, glance *gophercloud.ServiceClient, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pages, err := images.List(glance, images.ListOpts{}).AllPages(ctx)
	if err != nil {
		t.Logf("cannot list images to clean up: %v", err)
		return
	}
	list, _ := images.ExtractImages(pages)
	for _, img := range list {
		if strings.HasPrefix(img.Name, prefix+"-image-") {
			if err := images.Delete(ctx, glance, img.ID).ExtractErr(); err != nil {
				t.Logf("cannot delete image %s: %v", img.Name, err)
			}
		}
	}
}
