package e2eopenstack

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/imagedata"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"

	"github.com/canonical/github-runner-charm/src/runner"
	"github.com/canonical/github-runner-charm/tests/fakegithub"
	"github.com/canonical/github-runner-charm/tests/harness"
	"github.com/canonical/github-runner-charm/tests/openstacktest"
	"github.com/canonical/github-runner-charm/tests/vmplayer"
)

// The image relation drives which image runner servers boot from: none
// before the builder's first image (Blocked, then Waiting once related),
// its image then, and a new image replaces the idle runners at once while
// the busy one finishes its job on the old image. Runners register with
// config.sh's labels, the application, the flavor, the image's tags and the
// labels option; new tags are on the runners that replace the idle ones.
func TestImageRelationDrivesTheRunnersImage(t *testing.T) {
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
	fixtures := openstacktest.LookupFixtures(t, provider, eo)
	fake := startGitHub(t)
	var b [3]byte
	rand.Read(b[:])
	app := "osimg" + hex.EncodeToString(b[:])
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
		"path": repo, "token": token, "github-api-url": fake.URL(), "virtual-machines": 2, "labels": "e2e-extra",
		"openstack-clouds-yaml": oneCloud(t, cloudsYAML, cloudName),
		"openstack-flavor":      openstacktest.FlavorName, "openstack-network": openstacktest.NetworkName,
	})
	u.Deploy()
	if s := u.Status(); s.Status != "blocked" || !strings.Contains(s.Message, "provide an image: set openstack-image or relate to an image builder") {
		t.Fatalf("status with no image = %+v, want blocked asking for one", s)
	}

	t.Log("related, no image yet: Waiting, no server; the builder has the cloud's credentials")
	rel := u.Relate("image", "image-builder", nil, map[string]map[string]string{"image-builder/0": {}})
	if s := u.Status(); s.Status != "waiting" || !strings.Contains(s.Message, "waiting for the image builder's first image") {
		t.Errorf("status before the builder's image = %+v, want waiting for it", s)
	}
	if bag := u.LocalUnitData(rel); bag["auth_url"] == "" || bag["username"] == "" || bag["password"] == "" || bag["project_name"] == "" {
		t.Errorf("the unit's bag lacks the cloud's auth settings: keys %v", keysOf(bag))
	}
	if n := len(listServers(t, compute, prefix)); n != 0 {
		t.Errorf("%d servers without an image", n)
	}

	t.Log("the builder's first image: two runners boot from it")
	first := fixtures.ImageID
	u.SetRemoteUnitData(rel, "image-builder/0", map[string]string{"id": first, "tags": "noble,x64"})
	waitFor(t, 3*time.Minute, "2 ACTIVE runner servers of the first image, online", func() bool {
		u.Action("reconcile-runners", nil)
		return len(activeServers(t, compute, prefix)) == 2 && len(onlineOf(fake, prefix)) == 2
	})
	for name, image := range serverImages(t, compute, prefix) {
		if image != first {
			t.Errorf("server %s boots from %s, want the relation's %s", name, image, first)
		}
	}
	wantLabels := []string{"self-hosted", "linux", "x64", app, openstacktest.FlavorName, "noble", "e2e-extra"}
	records := fake.Runners(repo)
	for _, r := range records {
		if got := labelNames(r); !hasAll(got, wantLabels) {
			t.Errorf("runner %s has labels %v, want %v", r.Name, got, wantLabels)
		}
	}

	t.Log("one runner busy; the builder's new image (same tags) replaces the idle one at once")
	busy := records[0]
	busyID := serverIDs(t, compute, prefix)[busy.Name]
	job, err := fake.AssignJob(busy.ID, fakegithub.JobSpec{Command: heldJob})
	if err != nil {
		t.Fatal(err)
	}
	waitJobState(t, fake, job.ID, fakegithub.JobInProgress)
	second := uploadImage(t, glance, "osimg-e2e-"+hex.EncodeToString(b[:]), vmplayer.RunnerImage(t))
	if r := u.SetRemoteUnitData(rel, "image-builder/0", map[string]string{"id": second, "tags": "noble,x64"}); r.Code != 0 {
		t.Fatalf("image-relation-changed: exit %d: %s", r.Code, r.Stderr)
	}
	images := serverImages(t, compute, prefix)
	if _, ok := images[records[1].Name]; ok {
		t.Errorf("the idle runner's server %s outlived the new image", records[1].Name)
	}
	if images[busy.Name] != first {
		t.Errorf("the busy runner's server %s: image %q, want it kept on %s (servers %v)", busy.Name, images[busy.Name], first, images)
	}
	var fresh string // the idle runner of the new image
	waitFor(t, 3*time.Minute, "a runner of the new image beside the busy one, online", func() bool {
		u.Action("reconcile-runners", nil)
		images := serverImages(t, compute, prefix)
		for name, image := range images {
			if image == second {
				fresh = name
			}
		}
		return len(images) == 2 && images[busy.Name] == first && fresh != "" && len(activeServers(t, compute, prefix)) == 2 &&
			slices.Contains(onlineOf(fake, prefix), fresh)
	})
	if got := player.ReadFile(t, serverIDs(t, compute, prefix)[fresh], "/etc/github-runner/runner-version"); len(got) == 0 {
		t.Errorf("the new image's runner %s has no runner version file", fresh)
	}

	t.Log("new tags alone replace the idle runner too, as a labels change does; the new one carries them")
	if r := u.SetRemoteUnitData(rel, "image-builder/0", map[string]string{"id": second, "tags": "noble,x64,gpu-driver"}); r.Code != 0 {
		t.Fatalf("image-relation-changed: exit %d: %s", r.Code, r.Stderr)
	}
	if _, ok := serverImages(t, compute, prefix)[fresh]; ok {
		t.Errorf("the idle runner's server %s outlived the new tags", fresh)
	}
	waitFor(t, 2*time.Minute, "a runner with the new tag beside the busy one", func() bool {
		u.Action("reconcile-runners", nil)
		images := serverImages(t, compute, prefix)
		if len(images) != 2 || images[busy.Name] != first || len(activeServers(t, compute, prefix)) != 2 {
			return false
		}
		for _, r := range fake.Runners(repo) {
			if r.ID != busy.ID && slices.Contains(labelNames(r), "gpu-driver") && images[r.Name] == second {
				return true
			}
		}
		return false
	})
	if r, ok := fake.Runner(busy.ID); !ok || !r.Busy {
		t.Errorf("the busy runner while its job runs: %+v, found %v", r, ok)
	}

	t.Log("the job ends and its runner powers off: its server goes, replaced from the new image")
	player.Exec(t, busyID, "touch", releaseFile)
	if j := waitJob(t, fake, job.ID); j.ExitCode != 0 || !strings.Contains(j.Output, "released") {
		t.Errorf("the busy runner's job: %+v", j)
	}
	player.WaitStopped(t, busyID, 2*time.Minute)
	var last map[string]string
	defer func() {
		if t.Failed() {
			t.Logf("servers and images last seen: %v; runners %v; busy %s", last, runnersOf(fake, prefix), busy.Name)
		}
	}()
	waitFor(t, 2*time.Minute, "2 runners, all of the new image", func() bool {
		u.Action("reconcile-runners", nil)
		images := serverImages(t, compute, prefix)
		last = images
		if len(images) != 2 || len(activeServers(t, compute, prefix)) != 2 {
			return false
		}
		for _, image := range images {
			if image != second {
				return false
			}
		}
		return true
	})

	t.Log("the relation removed, no openstack-image: Blocked again, nothing new made")
	if r := u.Unrelate(rel); r.Code != 0 {
		t.Fatalf("image-relation-broken: exit %d: %s", r.Code, r.Stderr)
	}
	if s := u.Status(); s.Status != "blocked" || !strings.Contains(s.Message, "provide an image") {
		t.Errorf("status once the relation is gone = %+v, want blocked asking for an image", s)
	}
	u.Configure(map[string]any{"openstack-image": openstacktest.ImageName})
	bed := &osBed{unit: u, github: fake, compute: compute, prefix: prefix}
	if bed.network, err = openstack.NewNetworkV2(provider, eo); err != nil {
		t.Fatal(err)
	}
	bed.removeLeavesNothing(t)
}

// serverImages maps each server of prefix to the ID of its image.
func serverImages(t *testing.T, compute *gophercloud.ServiceClient, prefix string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, s := range listServers(t, compute, prefix) {
		id, _ := s.Image["id"].(string)
		out[s.Name] = id
	}
	return out
}

// uploadImage uploads a small active image into the project, deleted at
// the end, as the image builder uploads its images, played from the LXD
// image lxdImage.
func uploadImage(t *testing.T, glance *gophercloud.ServiceClient, name, lxdImage string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Played from lxdImage (the project's member may set the property).
	image, err := images.Create(ctx, glance, images.CreateOpts{Name: name, ContainerFormat: "bare", DiskFormat: "raw",
		Properties: map[string]string{vmplayer.LXDImageProperty: lxdImage}}).Extract()
	if err != nil {
		t.Fatalf("cannot create image: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		images.Delete(ctx, glance, image.ID)
	})
	if err := imagedata.Upload(ctx, glance, image.ID, bytes.NewReader(make([]byte, 4096))).ExtractErr(); err != nil {
		t.Fatalf("cannot upload image: %v", err)
	}
	return image.ID
}

func labelNames(r fakegithub.Runner) []string {
	var names []string
	for _, l := range r.Labels {
		names = append(names, l.Name)
	}
	return names
}

// hasAll tells whether have holds every label of want, as GitHub matches
// them: case-insensitively.
func hasAll(have, want []string) bool {
	for _, w := range want {
		if !slices.ContainsFunc(have, func(h string) bool { return strings.EqualFold(h, w) }) {
			return false
		}
	}
	return true
}

func keysOf(m map[string]string) string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return fmt.Sprint(keys)
}
