package vmplayer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	lxd "github.com/canonical/lxd/client"
	"github.com/canonical/lxd/shared/api"
	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/imagedata"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"

	"github.com/canonical/github-runner-charm/src/cloud/boot"
	"github.com/canonical/github-runner-charm/tests/fakegithub"
	"github.com/canonical/github-runner-charm/tests/lxdtest"
	"github.com/canonical/github-runner-charm/tests/openstacktest"
)

// buildDir holds the build's files in the builder: not /tmp, which the builder's boot may
// still be cleaning or mounting over.
const buildDir = "/root/vmplayer-build"

// runnerImageInfix follows ContainerPrefix in the aliases of the cached runner images.
const runnerImageInfix = "runner-"

// lockPath serialises the image work of the test processes of one machine (go test runs
// packages in parallel): two builds of one recipe, or two "ubuntu-base" images, would clash.
const lockPath = "/tmp/github-runner-vmplayer.lock"

// prepareScript readies the Debian builder for install.sh: the fake runner application
// needs wget, which a minimal Debian may lack.
const prepareScript = `#!/bin/sh
set -eu
export DEBIAN_FRONTEND=noninteractive
# The builder's own first boot ends first: cloud-init and systemd-tmpfiles are done with it.
if command -v cloud-init >/dev/null 2>&1; then cloud-init status --wait >/dev/null 2>&1 || true; fi
if ! command -v wget >/dev/null 2>&1; then
	# The builder's network comes up with its boot: retry until the archive answers.
	for i in $(seq 30); do apt-get update -q && break; sleep 2; done
	apt-get install -q -y --no-install-recommends wget
	apt-get clean
	rm -rf /var/lib/apt/lists/*
fi
`

// finishScript leaves the image as a fresh cloud image: each instance gets its own machine
// ID (systemd-networkd's DHCP client ID comes from it) and runs cloud-init again.
const finishScript = `#!/bin/sh
set -eu
: >/etc/machine-id
rm -f /var/lib/dbus/machine-id
if command -v cloud-init >/dev/null 2>&1; then cloud-init clean --logs || true; fi
rm -rf /root/vmplayer-build
`

// RunnerImage makes openstacktest.ImageName playable: it builds, unless an image of the same
// recipe is cached, a runner image on the Debian test image (fakegithub's runner application
// of fakegithub.DefaultRunnerVersion, installed by boot.InstallScript, and boot.StartScript),
// sets LXDImageProperty on the Glance image to it, and returns its LXD alias.
func RunnerImage(t testing.TB) string {
	t.Helper()
	c := lxdtest.Connect(t)
	base := lxdtest.DebianImage(t)
	version := fakegithub.DefaultRunnerVersion
	tarball, err := fakegithub.RunnerTarball(version, "x64")
	if err != nil {
		t.Fatal(err)
	}
	baseImage, _, err := c.GetImageAlias(base)
	if err != nil {
		t.Fatalf("cannot find LXD image %s: %v", base, err)
	}
	sum := sha256.New()
	for _, part := range []string{baseImage.Target, version, string(tarball), boot.InstallScript, boot.StartScript, prepareScript, finishScript} {
		fmt.Fprintf(sum, "%d:%s", len(part), part)
	}
	recipe := hex.EncodeToString(sum.Sum(nil))
	alias := ContainerPrefix + runnerImageInfix + recipe[:16]

	unlock := lock(t)
	defer unlock()
	if _, _, err := c.GetImageAlias(alias); err != nil {
		start := time.Now()
		buildRunnerImage(t, c, base, alias, recipe, version, tarball)
		t.Logf("vmplayer: built runner image %s in %v", alias, time.Since(start).Round(time.Second))
		pruneRunnerImages(t, c, alias)
	}
	_, image := adminClients(t)
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	id := imageID(t, ctx, image, openstacktest.ImageName)
	if err := setProperty(ctx, image, id, alias); err != nil {
		t.Fatal(err)
	}
	return alias
}

// buildRunnerImage runs a builder from base, installs the runner in it and publishes it.
func buildRunnerImage(t testing.TB, c lxd.InstanceServer, base, alias, recipe, version string, tarball []byte) {
	t.Helper()
	builder := ContainerPrefix + "build-" + recipe[:8]
	if err := lxdtest.DeleteInstance(c, builder); err != nil { // a killed build's
		t.Fatal(err)
	}
	defer func() {
		if err := lxdtest.DeleteInstance(c, builder); err != nil {
			t.Errorf("cannot delete the runner image builder: %v", err)
		}
	}()
	lxdtest.Create(t, c, builder, base, map[string]string{"security.nesting": "true"})
	lxdtest.Start(t, c, builder)
	lxdtest.WaitExec(t, c, builder, time.Minute)
	lxdtest.Exec(t, c, builder, "mkdir", "-p", buildDir)
	lxdtest.PushFile(t, c, builder, buildDir+"/runner.tar.gz", tarball, 0o600)
	lxdtest.PushFile(t, c, builder, boot.StartScriptPath, []byte(boot.StartScript), 0o755)
	steps := []struct {
		name, script string
		args         []string
	}{
		{"prepare", prepareScript, nil},
		{"install", boot.InstallScript, []string{buildDir + "/runner.tar.gz", version}},
		{"finish", finishScript, nil},
	}
	for _, step := range steps {
		path := buildDir + "/" + step.name
		lxdtest.PushFile(t, c, builder, path, []byte(step.script), 0o700)
		res := lxdtest.Exec(t, c, builder, append([]string{"/bin/sh", path}, step.args...)...)
		if res.ExitCode != 0 {
			t.Fatalf("cannot build the runner image: %s: exit status %d:\n%s%s", step.name, res.ExitCode, res.Stdout, res.Stderr)
		}
		lxdtest.Exec(t, c, builder, "rm", "-f", path)
	}
	op, err := c.UpdateInstanceState(builder, api.InstanceStatePut{Action: "stop", Force: true, Timeout: -1}, "")
	if err == nil {
		err = lxdtest.WaitOp(op)
	}
	if err != nil {
		t.Fatalf("cannot stop the runner image builder: %v", err)
	}
	op2, err := c.CreateImage(api.ImagesPost{
		Source: &api.ImagesPostSource{Type: "instance", Name: builder},
		ImagePut: api.ImagePut{Properties: map[string]string{
			"description":          "vmplayer runner image (fake runner " + version + ") on " + base,
			"github-runner.recipe": recipe,
		}},
		Aliases: []api.ImageAlias{{Name: alias}},
	}, nil)
	if err == nil {
		err = op2.Wait()
	}
	if err != nil {
		t.Fatalf("cannot publish the runner image: %v", err)
	}
}

// pruneRunnerImages deletes the cached runner images of other recipes than keep's: the
// checkout changed. Containers made of them do not need them any more.
func pruneRunnerImages(t testing.TB, c lxd.InstanceServer, keep string) {
	t.Helper()
	aliases, err := c.GetImageAliases()
	if err != nil {
		t.Logf("vmplayer: cannot list image aliases: %v", err)
		return
	}
	for _, a := range aliases {
		if a.Name == keep || !strings.HasPrefix(a.Name, ContainerPrefix+runnerImageInfix) {
			continue
		}
		op, err := c.DeleteImage(a.Target)
		if err == nil {
			err = lxdtest.WaitOp(op)
		}
		if err != nil {
			t.Logf("vmplayer: cannot delete old runner image %s: %v", a.Name, err)
		}
	}
}

// BaseImage makes sure the bed has the public Glance image BaseImageName, played as the
// Debian image, and returns its ID.
func BaseImage(t testing.TB) string {
	t.Helper()
	base := lxdtest.DebianImage(t)
	_, image := adminClients(t)
	unlock := lock(t)
	defer unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 2*requestTimeout)
	defer cancel()
	pages, err := images.List(image, images.ListOpts{Name: BaseImageName}).AllPages(ctx)
	if err != nil {
		t.Fatalf("cannot list images: %v", err)
	}
	list, err := images.ExtractImages(pages)
	if err != nil {
		t.Fatalf("cannot list images: %v", err)
	}
	var id string
	for _, img := range list {
		if img.Status == images.ImageStatusActive {
			id = img.ID
		} else if err := images.Delete(ctx, image, img.ID).ExtractErr(); err != nil { // a killed creation's
			t.Logf("vmplayer: cannot delete broken image %s: %v", img.ID, err)
		}
	}
	if id == "" {
		public := images.ImageVisibilityPublic
		img, err := images.Create(ctx, image, images.CreateOpts{
			Name: BaseImageName, DiskFormat: "raw", ContainerFormat: "bare", Visibility: &public,
			Properties: map[string]string{LXDImageProperty: base},
		}).Extract()
		if err != nil {
			t.Fatalf("cannot create image %s: %v", BaseImageName, err)
		}
		// Nova's fake driver never reads it; any bytes make it active.
		if err := imagedata.Upload(ctx, image, img.ID, bytes.NewReader(make([]byte, 64<<10))).ExtractErr(); err != nil {
			t.Fatalf("cannot upload image %s: %v", BaseImageName, err)
		}
		id = img.ID
	}
	if err := setProperty(ctx, image, id, base); err != nil {
		t.Fatal(err)
	}
	return id
}

// imageID finds an active Glance image by name.
func imageID(t testing.TB, ctx context.Context, image *gophercloud.ServiceClient, name string) string {
	t.Helper()
	pages, err := images.List(image, images.ListOpts{Name: name, Status: images.ImageStatusActive}).AllPages(ctx)
	if err != nil {
		t.Fatalf("cannot list images: %v", err)
	}
	list, err := images.ExtractImages(pages)
	if err != nil || len(list) == 0 {
		t.Fatalf("cannot find active image %q (%v; re-run %s)", name, err, openstacktest.SetupScript)
	}
	return list[0].ID
}

// lock takes lockPath's lock, for at most 10 minutes (a build), and returns its release.
func lock(t testing.TB) func() {
	t.Helper()
	f, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatalf("cannot open %s: %v", lockPath, err)
	}
	deadline := time.Now().Add(10 * time.Minute)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }
		}
		if time.Now().After(deadline) {
			f.Close()
			t.Fatalf("cannot lock %s: %v", lockPath, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
