package vmplayer_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/canonical/lxd/shared/api"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"

	"github.com/canonical/github-runner-charm/tests/openstacktest"
	"github.com/canonical/github-runner-charm/tests/vmplayer"
)

// A server whose user-data writes a file and powers off is played under cloud-init: the file
// is in its container, with the meta-data Nova gives a guest; the guest's poweroff stops the
// Nova server; deleting the server deletes the container.
func TestPlayerPlaysAServer(t *testing.T) {
	start := time.Now()
	cloudsYAML, cloudName := openstacktest.Cloud(t)
	provider, eo := openstacktest.Connect(t, cloudsYAML, cloudName)
	compute, err := openstack.NewComputeV2(provider, eo)
	if err != nil {
		t.Fatal(err)
	}
	fixtures := openstacktest.LookupFixtures(t, provider, eo)
	image := vmplayer.BaseImage(t)
	prefix := openstacktest.UniqueName("vmpt-")
	openstacktest.CleanupServers(t, compute, prefix)
	player := vmplayer.Start(t, vmplayer.Options{Prefix: prefix, Interval: time.Second})

	// cloud-init runs a "#!" user-data once, as root, late in the boot.
	userData := "#!/bin/sh\nset -e\nhostname >/root/played\necho 'played by cloud-init' >>/root/played\npoweroff\n"
	name := prefix + "guest"
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	srv, err := servers.Create(ctx, compute, servers.CreateOpts{
		Name: name, ImageRef: image, FlavorRef: fixtures.FlavorID,
		Networks: []servers.Network{{UUID: fixtures.NetworkID}}, UserData: []byte(userData),
	}, nil).Extract()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := openstacktest.WaitForServerStatus(ctx, compute, srv.ID, "ACTIVE", 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	container := player.WaitPlayed(t, srv.ID, time.Minute)
	if container != vmplayer.ContainerPrefix+srv.ID {
		t.Errorf("container %q, want %q", container, vmplayer.ContainerPrefix+srv.ID)
	}
	t.Logf("played as %s after %v", container, time.Since(start).Round(time.Second))

	player.WaitStopped(t, srv.ID, 3*time.Minute)
	if _, err := openstacktest.WaitForServerStatus(ctx, compute, srv.ID, "SHUTOFF", time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Logf("SHUTOFF after %v", time.Since(start).Round(time.Second))
	c := player.LXD()
	if state, _, err := c.GetInstanceState(container); err != nil || state.StatusCode != api.Stopped {
		t.Errorf("container after poweroff: %+v, %v", state, err)
	}
	got := string(player.ReadFile(t, srv.ID, "/root/played"))
	if want := name + "\nplayed by cloud-init\n"; got != want {
		t.Errorf("/root/played = %q, want %q (the server's name as hostname, from the meta-data)", got, want)
	}
	if !player.HasFile(t, srv.ID, "/var/lib/cloud/instances/"+srv.ID) {
		t.Errorf("cloud-init has no instance %s: the meta-data's instance-id is not the server's", srv.ID)
	}

	if err := servers.Delete(ctx, compute, srv.ID).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	player.WaitGone(t, srv.ID, 2*time.Minute)
	if _, _, err := c.GetInstance(container); !api.StatusErrorCheck(err, 404) {
		t.Errorf("container %s after its server was deleted: %v", container, err)
	}
	names, err := c.GetInstanceNames(api.InstanceTypeAny)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if strings.Contains(n, srv.ID) {
			t.Errorf("instance %s left", n)
		}
	}
	t.Logf("run time %v", time.Since(start).Round(time.Second))
}
